#if DEBUG
import Foundation
import Testing
@testable import RaftKV

/// Proves the simulator has teeth: with a known bug switched on, some seed within a bounded search must report a
/// violation. A simulator that passes a buggy core checks nothing.
@Suite struct InjectedBugTests {
    /// Searches seeds from 1 for the first run that reports a violation with `bug` injected.
    static func firstCatchingSeed(_ bug: InjectedBug, maxSeeds: UInt64, adjust: (inout SimulationOptions) -> Void = { _ in }) throws -> (UInt64, String)? {
        for seed in 1...maxSeeds {
            var options = SimulationOptions.random(seed: seed)
            options.injectedBugs = [bug]
            adjust(&options)
            let simulator = try Simulator(options: options)
            try simulator.run()
            if let first = simulator.violations.first { return (seed, first) }
        }
        return nil
    }

    // commitPreviousTermByCounting needs the precise interleaving of Raft's Figure 8, which random schedules
    // almost never produce; ScenarioTests replays that interleaving instead.
    @Test(arguments: [InjectedBug.voteWithoutLogCheck, .keepConflictingSuffix, .acknowledgeBeforePersist])
    func simulatorCatches(_ bug: InjectedBug) throws {
        let found = try Self.firstCatchingSeed(bug, maxSeeds: 300)
        if let (seed, violation) = found {
            print("injected bug \(bug.rawValue): caught at seed \(seed): \(violation)")
        }
        #expect(found != nil, "the simulator did not catch \(bug.rawValue) in 300 seeds")
    }
}
#endif
