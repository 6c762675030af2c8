import Foundation
import Testing
@testable import RaftKV

/// Runs seeded simulations. `RAFT_SIM_SEEDS=N` runs N seeds (default 500); `RAFT_SIM_SEED=S` replays one;
/// `RAFT_SIM_FIRST_SEED=F` shifts the range, so a soak can cover new ground.
@Suite struct SimulationTests {
    static func environment(_ name: String) -> UInt64? {
        ProcessInfo.processInfo.environment[name].flatMap { UInt64($0) }
    }

    static func replayCommand(_ seed: UInt64) -> String {
        "RAFT_SIM_SEED=\(seed) swift test --filter SimulationTests"
    }

    @Test func seededRunsKeepEveryInvariant() throws {
        let seeds: [UInt64]
        if let one = Self.environment("RAFT_SIM_SEED") {
            seeds = [one]
        } else {
            let first = Self.environment("RAFT_SIM_FIRST_SEED") ?? 1
            let count = Self.environment("RAFT_SIM_SEEDS") ?? 500
            seeds = Array(first..<(first + count))
        }
        var failures: [String] = []
        var proposals = 0, acknowledged = 0, faults = 0, snapshots = 0, membershipChanges = 0
        for seed in seeds {
            let options = SimulationOptions.random(seed: seed)
            let simulator = try Simulator(options: options)
            try simulator.run()
            proposals += simulator.proposalCounter
            acknowledged += simulator.acknowledged.count
            faults += simulator.faultsInjected
            snapshots += simulator.snapshotsInstalled
            membershipChanges += simulator.membershipChangesApplied
            if !simulator.violations.isEmpty {
                failures.append("\(options)\n  " + simulator.violations.joined(separator: "\n  ") + "\n  replay: \(Self.replayCommand(seed))")
            }
        }
        print("raft simulation: \(seeds.count) seeds, \(proposals) proposals, \(acknowledged) acknowledged, \(faults) faults, \(snapshots) snapshots installed, \(membershipChanges) membership changes, \(failures.count) with violations")
        #expect(failures.isEmpty, "\(failures.count) seeds violated an invariant:\n\(failures.prefix(5).joined(separator: "\n"))")
        #expect(acknowledged > 0, "the simulation never committed anything: it checks nothing")
        if seeds.count >= 100 {
            // A schedule that never exercises snapshots or membership changes would not test them.
            #expect(snapshots > 0 && membershipChanges > 0, "snapshots \(snapshots), membership changes \(membershipChanges)")
        }
    }
}
