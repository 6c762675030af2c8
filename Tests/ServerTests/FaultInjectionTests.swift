import EtcdAPI
import Foundation
import TestSupport
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import HistoryCheck
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Concurrent clients and watchers on a real 3-member cluster while members are killed (-9) and restarted, or
/// frozen (SIGSTOP) and thawed; while peer links are partitioned (both ways or one way), delayed and cut
/// (``PeerNetwork``); while the clients' own links are cut mid-request, stalled and delayed; while the
/// leadership moves, members are removed and re-added empty, and a lagging member catches up by snapshot; or while a
/// member dies at a named failure point (`KVSERVER_FAILPOINTS`). Afterwards: the history is linearizable, the watch
/// streams are ordered, complete and correct, and every member has the same HashKV at the same revision.
///
/// One test per fault mix (see docs/reliability.md); the environment variables apply to each.
///
/// `FAULT_MEMBERS=N` runs the schedules on N members (default 3; the five-member test's 5).
///
/// `FAULT_SEED=S` replays one schedule (`FAULT_SEED=3,7` several); `FAULT_SOAK=N` runs N schedules from seed 1 (default: the fixed seeds in
/// `defaultSeeds`); `FAULT_SECONDS=T` changes the workload time (default 8), `FAULT_CLIENTS=C` the number of
/// concurrent clients (default 4).
///
/// `FAULT_FAILPOINT=name` runs one failure point of ``testCrashAtEachFailurePoint()``.
///
/// `FAULT_STALE_READS=1` is the negative control: reads become serializable (served from a member's local state,
/// which lags after a pause or a restart), and the run must find a linearizability violation in some schedule.
final class FaultInjectionTests: XCTestCase {
    static let environment = ProcessInfo.processInfo.environment
    static let defaultSeeds: [UInt64] = [1, 2]
    /// 15 brings the one-way partitions of a member and of a leader–follower pair that 1 and 3 lack.
    static let networkSeeds: [UInt64] = [1, 3, 15]
    static let membershipSeeds: [UInt64] = [1]
    static let clientLinkSeeds: [UInt64] = [1]

    static func replay(_ seed: UInt64, _ mix: FaultSchedule.Mix = .processes, members: Int = 3) -> String {
        (members == 3 ? "" : "FAULT_MEMBERS=\(members) ")
            + "FAULT_SEED=\(seed) swift test --filter ServerTests.FaultInjectionTests/\(testName(mix))"
    }

    static func testName(_ mix: FaultSchedule.Mix) -> String {
        switch mix {
        case .processes: "testLinearizableUnderCrashesAndPauses"
        case .network: "testLinearizableUnderNetworkFaults"
        case .membership: "testLinearizableUnderMembershipAndLeadershipChanges"
        case .clientLinks: "testLinearizableUnderClientLinkFaults"
        }
    }

    /// The seeds to run: `FAULT_SEED`, else 1...`FAULT_SOAK`, else `defaults`.
    static func seeds(defaults: [UInt64]) -> [UInt64] {
        if let listed = environment["FAULT_SEED"]?.split(separator: ",").compactMap({ UInt64($0) }), !listed.isEmpty {
            return listed
        }
        if let soak = environment["FAULT_SOAK"].flatMap(UInt64.init), soak > 0 { return Array(1...soak) }
        return defaults
    }

    func testLinearizableUnderCrashesAndPauses() async throws {
        try await runSchedules(.processes, defaultSeeds: Self.defaultSeeds)
    }

    /// The same faults on five members: a quorum is three, so a commit waits for two followers out of four.
    func testLinearizableUnderCrashesAndPausesWithFiveMembers() async throws {
        try await runSchedules(.processes, defaultSeeds: [5], members: 5)
    }

    /// Partitions (refused or stalled links, one member or one leader–follower pair), delays and connections cut
    /// mid-stream on the peer links, through ``PeerNetwork``'s proxies; some kills.
    func testLinearizableUnderNetworkFaults() async throws {
        try await runSchedules(.network, defaultSeeds: Self.networkSeeds)
    }

    /// The workload's clients and watchers reach the members through proxies that cut connections after they carried
    /// a request (answers held back: the request may apply, the client sees a lost connection), stall and delay
    /// them. Cut requests must be recorded as unknown outcomes, cut watches resume where they were.
    func testLinearizableUnderClientLinkFaults() async throws {
        try await runSchedules(.clientLinks, defaultSeeds: Self.clientLinkSeeds)
    }

    /// MoveLeader, MemberRemove + MemberAdd of an emptied member, a paused follower caught up by snapshot; some
    /// kills.
    func testLinearizableUnderMembershipAndLeadershipChanges() async throws {
        try await runSchedules(.membership, defaultSeeds: Self.membershipSeeds)
    }

    /// Each failure point (`KVSERVER_FAILPOINTS`, Sources/RaftKV/Node/FailPoints.swift) kills one member under
    /// load (the leader, when the transfer to it is in time, for the log and apply points; a follower made to lag
    /// past the leader's snapshot for the snapshot-install points); it restarts, and the usual checks must hold:
    /// no acknowledged write lost, none applied twice (HashKV equal, history linearizable). `FAULT_FAILPOINT=name`
    /// runs one.
    func testCrashAtEachFailurePoint() async throws {
        let points: [(name: String, hit: Int, viaSnapshot: Bool)] = [
            ("log-before-fsync", 80, false), ("log-after-fsync", 80, false),
            ("apply-before-commit", 60, false), ("apply-after-commit", 60, false),
            ("snapshot-install-before-record", 1, true), ("snapshot-install-before-restore", 1, true),
        ]
        let chosen = Self.environment["FAULT_FAILPOINT"].map { name in points.filter { $0.name == name } } ?? points
        XCTAssertFalse(chosen.isEmpty, "FAULT_FAILPOINT names no known point")
        let seconds = Self.environment["FAULT_SECONDS"].flatMap(Int.init) ?? 6
        var totals = FaultRun.Figures()
        for (offset, point) in chosen.enumerated() {
            var run = FaultRun(seed: UInt64(offset + 1), workloadMilliseconds: seconds * 1_000)
            run.failPoint = (point.name, point.hit, point.viaSnapshot ? 2 : 1, point.viaSnapshot)
            totals.add(try await run.run())
        }
        print("failure points: \(chosen.count) crashes: \(totals)")
    }

    /// The default seeds of each schedule test draw every fault kind of their mix, so CI exercises them all.
    func testDefaultSchedulesCoverEveryFaultKind() {
        func kinds(_ mix: FaultSchedule.Mix, _ seeds: [UInt64]) -> Set<String> {
            Set(seeds.flatMap { seed in
                FaultSchedule(seed: seed, durationMilliseconds: 8_000, members: 3, mix: mix).faults.map(\.fault.kind)
            })
        }
        XCTAssertEqual(kinds(.network, Self.networkSeeds),
                       ["isolate", "partition", "oneWayLeaderToFollower", "oneWayFromMember", "delay", "cut", "kill"])
        XCTAssertEqual(kinds(.clientLinks, Self.clientLinkSeeds),
                       ["cutClientRequests", "stallClientLinks", "delayClientLinks"])
        XCTAssertEqual(kinds(.membership, Self.membershipSeeds).intersection(["moveLeader", "removeAndReAdd", "snapshotCatchUp"]),
                       ["moveLeader", "removeAndReAdd", "snapshotCatchUp"])
        for seed in UInt64(1)...12 {
            print("seed \(seed): network \(kinds(.network, [seed]).sorted()), client links \(kinds(.clientLinks, [seed]).sorted()), "
                + "membership \(kinds(.membership, [seed]).sorted())")
        }
    }

    /// The proxies do cut a member off: the leader, isolated, is replaced; healed, all agree on one leader again.
    func testIsolatedLeaderIsReplacedAndRejoinsThroughThePeerProxies() async throws {
        let cluster = try TestCluster(size: 3, proxiedPeers: true)
        try cluster.startAll()
        try cluster.waitHealthy()
        let ports = cluster.members.map(\.clientPort)
        func leaders() async -> [UInt64?] {
            var result: [UInt64?] = []
            for port in ports {
                let status = try? await DiskFaultTests.withClient(port: port) { client in
                    var options = CallOptions.defaults
                    options.timeout = .seconds(1)
                    return try? await Etcdserverpb_Maintenance.Client(wrapping: client).status(Etcdserverpb_StatusRequest(), options: options)
                }
                result.append(status.flatMap { $0 }.map { ($0.header.memberID, $0.leader) }.map { $0.1 })
            }
            return result
        }
        func memberIDs() async -> [UInt64?] {
            var result: [UInt64?] = []
            for port in ports {
                let status = try? await DiskFaultTests.withClient(port: port) { client in
                    try? await Etcdserverpb_Maintenance.Client(wrapping: client).status(Etcdserverpb_StatusRequest())
                }
                result.append(status.flatMap { $0 }?.header.memberID)
            }
            return result
        }
        let ids = await memberIDs()
        guard let oldLeader = await leaders().compactMap({ $0 }).first(where: { $0 != 0 }),
              let leaderIndex = ids.firstIndex(of: oldLeader) else { return XCTFail("no leader") }
        let network = try XCTUnwrap(cluster.peerNetwork)
        network.isolate(leaderIndex, from: cluster.members.indices.filter { $0 != leaderIndex }, mode: .refuse)
        var replaced = false
        for _ in 0..<50 where !replaced {
            try await Task.sleep(for: .milliseconds(200))
            let seen = await leaders()
            replaced = seen.indices.contains { $0 != leaderIndex && seen[$0] != nil && seen[$0] != 0 && seen[$0] != oldLeader }
        }
        XCTAssertTrue(replaced, "the other members never elected a new leader while the leader was isolated")
        network.heal()
        var agreed = false
        for _ in 0..<50 where !agreed {
            try await Task.sleep(for: .milliseconds(200))
            let seen = await leaders()
            agreed = !seen.contains(nil) && Set(seen).count == 1 && seen[0] != 0
        }
        XCTAssertTrue(agreed, "after healing, the members do not agree on one leader")
        print("peer proxies: \(network.statistics)")
        try cluster.waitHealthy()
    }

    /// A one-way partition has teeth: a leader that cannot send to anyone (it still receives) is replaced by the
    /// others, and follows the new leader; refused, then stalled; under the usual workload, whose history must stay
    /// linearizable (a leader that cannot reach a quorum must not answer reads or acknowledge writes). The byte
    /// counts must show nothing crossed the blocked links and something came the other way (each fault fails its
    /// run otherwise).
    func testLeaderThatCannotSendIsReplacedThroughAOneWayPartition() async throws {
        let replay = "swift test --filter ServerTests.FaultInjectionTests/testLeaderThatCannotSendIsReplacedThroughAOneWayPartition"
        var run = FaultRun(seed: 1, workloadMilliseconds: 9_000)
        run.mix = .network
        run.fixedSchedule = (FaultSchedule(faults: [
            (1_000, .oneWay(.fromMember(nil), mode: .refuse, milliseconds: 3_000)),
            (5_000, .oneWay(.fromMember(nil), mode: .stall, milliseconds: 3_000)),
        ]), replay)
        let figures = try await run.run()
        XCTAssertEqual(figures.mutedLeaders, 2, "replay: \(replay): a one-way partition did not find the leader")
        XCTAssertEqual(figures.mutedLeadersReplaced, figures.mutedLeaders,
                       "replay: \(replay): a leader that could not send was not replaced (and followed by it) within 3 s")
        print("one-way partitions of the leader: \(figures)")
    }

    /// A request whose connection is cut after it reached the member may have been applied: it must be recorded as
    /// an unknown outcome, never as failed. Each put goes through a client-link proxy that holds the answer back
    /// and cuts the connection 300 ms later; each must end in an error (recorded unknown) and be visible to a
    /// direct read afterwards. The checker must accept that history, and reject the same one with the cut puts
    /// recorded as failed: that is the mistake this test guards against.
    func testCutClientRequestIsUnknownThoughItWasApplied() async throws {
        let cluster = try TestCluster(size: 1)
        try cluster.startAll()
        try cluster.waitHealthy()
        let links = try PeerNetwork(proxyPorts: try LoopbackPorts.free(count: 1),
                                    targetPorts: [cluster.members[0].clientPort], fixedOrigin: PeerNetwork.clientOrigin,
                                    label: "client")
        defer { links.stop() }
        let recorder = HistoryRecorder()
        let keys = (0..<5).map { "/cut/k\($0)" }
        let outcomes = try await Self.withClient(port: links.listenPorts[0]) { client in
            var outcomes: [(Outcome, UInt64)] = []
            for (index, key) in keys.enumerated() {
                // Hold the answer long enough for the put to be applied on a loaded machine; the deadline is far
                // beyond, so the error is the cut, not a timeout.
                links.armRequestCuts(probability: 1, holdMilliseconds: 300...300)
                let invoked = monotonicNanoseconds()
                let outcome = await KVCalls.perform(.put(key: key, value: "v\(index)"), previousValue: false, on: client,
                                                    timeout: .seconds(5))
                let completed = monotonicNanoseconds()
                recorder.record(client: 0, .put(key: key, value: "v\(index)"), invokedAt: invoked, completedAt: completed,
                                outcome)
                outcomes.append((outcome, (completed - invoked) / 1_000_000))
                // The client has to see the cut connection close before the next put, or that put fails at once on
                // it without being sent.
                links.heal()
                try await Task.sleep(for: .milliseconds(200))
            }
            return outcomes
        }
        links.heal()
        print("cut puts: \(outcomes.map { "\($0.0 == .unknown ? "unknown" : "\($0.0)") after \($0.1) ms" }), \(links.statistics)")
        for (outcome, milliseconds) in outcomes {
            XCTAssertEqual(outcome, .unknown, "a put whose connection was cut did not end in an error")
            XCTAssertLessThan(milliseconds, 4_000, "the put ended by its deadline, not by the cut")
        }
        let (_, unanswered) = try await Self.withClient(port: cluster.members[0].clientPort) { client in
            await FaultRun.finalReads(keys: keys, clients: [client], recorder: recorder)
        }
        XCTAssertEqual(unanswered, [])
        let history = recorder.snapshot
        let applied = history.operations.filter { operation in
            guard case .put(let key, let value) = operation.call, operation.outcome == .unknown else { return false }
            return history.operations.contains {
                if case .ok(.get(let read, _, _)) = $0.outcome { return $0.call.key == key && read == value }
                return false
            }
        }
        XCTAssertEqual(applied.count, keys.count, "the cut puts were not all applied (the answer was held 300 ms): "
            + "\(history.operations)")
        let report = LinearizabilityChecker().check(history)
        XCTAssertEqual(report.verdict, .linearizable, "\(report)")
        let asFailed = History(history.operations.map { operation in
            var operation = operation
            if operation.outcome == .unknown { operation.outcome = .failed }
            return operation
        })
        let wrong = LinearizabilityChecker().check(asFailed)
        XCTAssertEqual(wrong.verdict, .violation, "recording cut writes as failed went unnoticed by the checker")
    }

    static func withClient<T: Sendable>(port: Int, _ body: @Sendable @escaping (EtcdClient) async throws -> T) async throws -> T {
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext,
            config: .defaults { $0.backoff = .init(initial: .milliseconds(50), max: .milliseconds(500), multiplier: 1.6, jitter: 0.2) })
        let client = GRPCClient(transport: transport)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await client.runConnections() }
            defer { client.beginGracefulShutdown() }
            return try await body(client)
        }
    }

    private func runSchedules(_ mix: FaultSchedule.Mix, defaultSeeds: [UInt64], members: Int = 3) async throws {
        let seeds = Self.seeds(defaults: defaultSeeds)
        let seconds = Self.environment["FAULT_SECONDS"].flatMap(Int.init) ?? 8
        let staleReads = Self.environment["FAULT_STALE_READS"] == "1"
        var totals = FaultRun.Figures()
        for seed in seeds {
            var run = FaultRun(seed: seed, workloadMilliseconds: seconds * 1_000)
            run.mix = mix
            run.memberCount = Self.environment["FAULT_MEMBERS"].flatMap(Int.init) ?? members
            run.serializableReads = staleReads
            run.clientCount = Self.environment["FAULT_CLIENTS"].flatMap(Int.init) ?? run.clientCount
            let figures = try await run.run()
            totals.add(figures)
        }
        print("fault injection (\(mix))\(staleReads ? " (serializable reads)" : ""): \(seeds.count) schedules: \(totals)")
        if staleReads {
            XCTAssertGreaterThan(totals.violations, 0, "serializable reads under faults were never caught as stale")
        }
    }
}

/// One schedule: a fresh cluster, the workload and the faults, then the checks.
struct FaultRun {
    var seed: UInt64
    var workloadMilliseconds: Int
    var mix = FaultSchedule.Mix.processes
    var memberCount = 3
    /// Instead of a seeded schedule: `member` runs with `KVSERVER_FAILPOINTS=name:hit` and must die there (after
    /// being made to lag past a snapshot, for the snapshot points); it is then restarted disarmed.
    var failPoint: (name: String, hit: Int, member: Int, viaSnapshot: Bool)?
    /// Instead of a seeded schedule (a focused test), with the command that replays it.
    var fixedSchedule: (schedule: FaultSchedule, replay: String)?
    var clientCount = 4
    /// The negative control: violations are expected and counted, not failures.
    var serializableReads = false
    var keys = (0..<5).map { "/fault/k\($0)" }

    struct Figures: CustomStringConvertible {
        var operations = 0
        var acknowledgedWrites = 0
        var unknownOutcomes = 0
        var watchEvents = 0
        var faults = 0
        var violations = 0
        /// Leaders cut off from sending by a one-way partition, and those replaced (and followed) while it lasted.
        var mutedLeaders = 0
        var mutedLeadersReplaced = 0

        mutating func add(_ other: Figures) {
            operations += other.operations
            acknowledgedWrites += other.acknowledgedWrites
            unknownOutcomes += other.unknownOutcomes
            watchEvents += other.watchEvents
            faults += other.faults
            violations += other.violations
            mutedLeaders += other.mutedLeaders
            mutedLeadersReplaced += other.mutedLeadersReplaced
        }

        var description: String {
            "\(operations) operations checked (\(acknowledgedWrites) acknowledged writes, \(unknownOutcomes) unknown "
                + "outcomes), \(watchEvents) watch events checked, \(faults) faults injected, \(violations) violations"
        }
    }

    func run(file: StaticString = #filePath, line: UInt = #line) async throws -> Figures {
        let replay = failPoint.map { "FAULT_FAILPOINT=\($0.name) swift test --filter ServerTests.FaultInjectionTests/testCrashAtEachFailurePoint" }
            ?? fixedSchedule?.replay ?? FaultInjectionTests.replay(seed, mix, members: memberCount)
        let cluster = try TestCluster(size: memberCount, proxiedPeers: mix != .processes || failPoint != nil)
        // The workload and the watchers reach the members through these; the fault task, the final reads and HashKV
        // go direct, so that a stalled client link does not hide who leads or what the members hold.
        let clientNetwork = mix == .clientLinks
            ? try PeerNetwork(proxyPorts: try LoopbackPorts.free(count: memberCount),
                              targetPorts: cluster.members.map(\.clientPort), fixedOrigin: PeerNetwork.clientOrigin,
                              label: "client")
            : nil
        defer { clientNetwork?.stop() }
        // Small enough that the snapshot catch-up fault makes the leader snapshot and compact its log.
        if mix == .membership || failPoint != nil { cluster.extraFlags += ["--snapshot-count", "100"] }
        if let failPoint {
            cluster.memberEnvironment[failPoint.member] = ["KVSERVER_FAILPOINTS": "\(failPoint.name):\(failPoint.hit)"]
        }
        try cluster.startAll()
        try cluster.waitHealthy()
        let control = ClusterControl(cluster, clientNetwork: clientNetwork)
        let schedule: FaultSchedule
        if let fixedSchedule {
            schedule = fixedSchedule.schedule
        } else if let failPoint {
            let crash = FaultSchedule.Fault.awaitFailPointCrash(member: failPoint.member, point: failPoint.name,
                                                                viaSnapshot: failPoint.viaSnapshot)
            // The log and apply points: the armed member leads when it dies (when the transfer is in time).
            schedule = FaultSchedule(faults: failPoint.viaSnapshot ? [(500, crash)]
                                        : [(200, .moveLeaderTo(member: failPoint.member)), (400, crash)])
        } else {
            schedule = FaultSchedule(seed: seed, durationMilliseconds: workloadMilliseconds, members: memberCount, mix: mix)
        }
        print("fault run seed=\(seed) (replay: \(replay)); data in \(cluster.root.path)\n  schedule: \(schedule)")

        let recorder = HistoryRecorder()
        let stop = WatchStop()
        let transports = try cluster.members.map {
            try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: $0.clientPort),
                                           transportSecurity: .plaintext)
        }
        let clients = transports.map { GRPCClient(transport: $0) }
        let proxiedTransports = try clientNetwork.map { network in
            try network.listenPorts.map { port in
                // A cut connection is re-established at once, as etcd's clients do, not after gRPC's default
                // backoff of 1 s growing to 2 min, which would leave a member's clients idle for the rest of the run.
                try HTTP2ClientTransport.Posix(
                    target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext,
                    config: .defaults {
                        $0.backoff = .init(initial: .milliseconds(50), max: .milliseconds(500), multiplier: 1.6,
                                           jitter: 0.2)
                    })
            }
        } ?? []
        let proxiedClients = proxiedTransports.map { GRPCClient(transport: $0) }
        let workloadClients = proxiedClients.isEmpty ? clients : proxiedClients
        let watchers = [
            Watcher(name: "all keys, prev_kv", keys: .prefix("/fault/"), previousValues: true, seed: seed &+ 101),
            Watcher(name: "k0", keys: .key(keys[0]), previousValues: false, seed: seed &+ 202),
        ]
        let keys = self.keys
        let serializableReads = self.serializableReads
        let workload = (0..<clientCount).map {
            WorkloadClient(id: $0, seed: seed, keys: keys, timeout: .seconds(1), serializableReads: serializableReads)
        }
        let workloadMilliseconds = self.workloadMilliseconds

        let (watches, faultLog, hashes) = try await withThrowingTaskGroup(of: Void.self) { group in
            for client in clients + proxiedClients { group.addTask { try await client.runConnections() } }
            defer {
                // On an early exit too: watchers end, then connections close.
                stop.set(target: 0, hardDeadline: 0)
                for client in clients + proxiedClients { client.beginGracefulShutdown() }
            }

            async let allKeysWatch = watchers[0].run(clients: workloadClients, stop: stop)
            async let singleKeyWatch = watchers[1].run(clients: workloadClients, stop: stop)
            let start = monotonicNanoseconds()
            let deadline = start + UInt64(workloadMilliseconds) * 1_000_000
            async let faults = control.inject(schedule, startedAt: start, clients: clients)
            await withTaskGroup(of: Void.self) { workers in
                for client in workload {
                    workers.addTask { await client.run(clients: workloadClients, recorder: recorder, until: deadline) }
                }
            }
            let faultLog = await faults
            control.healAll()
            try cluster.waitHealthy()

            // Final reads: an acknowledged write missing here is lost. They join the history, so the checker decides.
            let (finalRevision, unanswered) = await Self.finalReads(keys: keys, clients: clients, recorder: recorder)
            // Without a final read of a key, a lost write of it could go unnoticed.
            XCTAssertEqual(unanswered, [], "seed=\(seed): no final read answered for these keys", file: file, line: line)
            stop.set(target: finalRevision, hardDeadline: monotonicNanoseconds() + 15_000_000_000)
            let watches = [await allKeysWatch, await singleKeyWatch]
            let hashes = await Self.hashes(at: finalRevision, clients: clients)
            return (watches, faultLog, hashes)
        }

        let history = recorder.snapshot
        var figures = Figures()
        figures.operations = history.operations.count
        figures.acknowledgedWrites = history.operations.filter { $0.acknowledgedWriteRevision != nil }.count
        figures.unknownOutcomes = history.operations.filter { $0.outcome == .unknown }.count
        figures.faults = faultLog.count
        figures.mutedLeaders = control.mutedLeaders
        figures.mutedLeadersReplaced = control.mutedLeadersReplaced
        print("  faults: \(faultLog.joined(separator: "; "))")
        if let network = cluster.peerNetwork { print("  peer network: \(network.statistics)") }
        if let clientNetwork { print("  client links: \(clientNetwork.statistics)") }
        if control.oneWayPartitions > 0 {
            print("  one-way partitions \(control.oneWayPartitions); leaders cut off from sending \(control.mutedLeaders), "
                + "replaced while cut off \(control.mutedLeadersReplaced)")
        }
        let failedSteps = faultLog.filter { $0.contains("FAILED") }
        XCTAssertEqual(failedSteps, [], "seed=\(seed) replay: \(replay): fault steps failed", file: file, line: line)
        print("  leader transfers \(control.leaderTransfers), members re-added \(control.membersReAdded), "
            + "snapshot catch-ups \(control.snapshotCatchUps) (snapshot installed in \(control.snapshotsInstalled))")
        if failPoint != nil {
            XCTAssertEqual(control.failPointCrashes, 1, "replay: \(replay): the member did not die at its failure point",
                           file: file, line: line)
        }
        XCTAssertEqual(control.snapshotsInstalled, control.snapshotCatchUps,
                       "seed=\(seed) replay: \(replay): a member paused past the leader's snapshot caught up without installing one",
                       file: file, line: line)

        // A violated history makes the search explore widely before it gives up: keep a failing run short.
        let report = LinearizabilityChecker(stepBudgetPerKey: 300_000).check(history)
        print("  linearizability: \(report.verdict), \(report.operationsChecked) operations on \(report.keysChecked) keys, "
            + "\(report.searchSteps) search steps")
        if report.verdict == .violation { figures.violations += report.problems.count }
        if serializableReads {
            if report.verdict == .violation { print("  (expected) stale reads caught:\n\(report.problems.prefix(2).joined(separator: "\n"))") }
        } else {
            XCTAssertEqual(report.verdict, .linearizable, "seed=\(seed) replay: \(replay)\n\(report)", file: file, line: line)
        }

        let watchReport = WatchChecker().check(watches, against: history)
        figures.watchEvents = watchReport.eventsChecked
        figures.violations += watchReport.problems.count
        print("  watches: \(watchReport.isValid ? "valid" : "VIOLATION"), \(watchReport.eventsChecked) events, "
            + "segments \(watches.map { "\($0.name): \($0.segments.count)" })")
        XCTAssertTrue(watchReport.isValid, "seed=\(seed) replay: \(replay)\n\(watchReport)", file: file, line: line)

        let finalRevision = hashes.revision
        XCTAssertGreaterThan(figures.acknowledgedWrites, 0, "seed=\(seed): no write succeeded at all", file: file, line: line)
        for watch in watches {
            let covered = watch.segments.flatMap(\.responses).last?.last?.revision ?? 0
            let promised = watch.segments.compactMap(\.progressRevision).max() ?? 0
            let lastWrite = history.operations.compactMap { operation in
                operation.acknowledgedWriteRevision.flatMap { watch.keys.contains(operation.call.key) ? $0 : nil }
            }.max() ?? 0
            XCTAssertGreaterThanOrEqual(max(covered, promised), lastWrite,
                                        "seed=\(seed): watch \(watch.name) never caught up with the last acknowledged write",
                                        file: file, line: line)
        }
        let distinct = Set(hashes.byMember.compactMap { $0 })
        print("  HashKV at revision \(finalRevision): \(hashes.byMember.map { $0.map(String.init) ?? "no answer" })")
        XCTAssertFalse(hashes.byMember.contains(nil), "seed=\(seed): a member did not answer HashKV at revision "
            + "\(finalRevision)", file: file, line: line)
        XCTAssertEqual(distinct.count, 1, "seed=\(seed) replay: \(replay): members disagree on HashKV at revision "
            + "\(finalRevision): \(hashes.byMember)", file: file, line: line)
        if distinct.count > 1 { figures.violations += 1 }
        return figures
    }

    /// A linearizable read of every key, retried until each is answered (bounded), recorded in the history.
    /// Returns the highest revision they were served at, and the keys no read answered.
    static func finalReads(keys: [String], clients: [EtcdClient], recorder: HistoryRecorder) async
        -> (revision: Revision, unanswered: [String]) {
        var highest: Revision = 0
        var unanswered: [String] = []
        for key in keys {
            unanswered.append(key)
            for attempt in 0..<50 {
                let invoked = monotonicNanoseconds()
                let outcome = await KVCalls.perform(.get(key: key), previousValue: false,
                                                    on: clients[attempt % clients.count], timeout: .seconds(2))
                recorder.record(client: 99, .get(key: key), invokedAt: invoked, completedAt: monotonicNanoseconds(),
                                outcome)
                if case .ok(let reply) = outcome {
                    highest = max(highest, reply.revision)
                    unanswered.removeLast()
                    break
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        return (highest, unanswered)
    }

    /// Each member's HashKV at `revision`, retried while the member has not applied that far (bounded).
    static func hashes(at revision: Revision, clients: [EtcdClient]) async -> (revision: Revision, byMember: [UInt32?]) {
        var byMember: [UInt32?] = []
        for client in clients {
            var hash: UInt32?
            var options = CallOptions.defaults
            options.timeout = .seconds(2)
            for _ in 0..<50 where hash == nil {
                var request = Etcdserverpb_HashKVRequest()
                request.revision = revision
                hash = try? await Etcdserverpb_Maintenance.Client(wrapping: client).hashKV(request, options: options).hash
                if hash == nil { try? await Task.sleep(for: .milliseconds(200)) }
            }
            byMember.append(hash)
        }
        return (revision, byMember)
    }
}

/// The cluster as the fault task sees it: kills, restarts, pauses and resumes members, one fault at a time.
final class ClusterControl: @unchecked Sendable {
    private let lock = NSLock()
    private let cluster: TestCluster
    private var paused: Set<Int> = []
    private var killed: Set<Int> = []
    /// Proxies between the workload's clients and the members (the client-link mix only).
    private let clientNetwork: PeerNetwork?

    init(_ cluster: TestCluster, clientNetwork: PeerNetwork? = nil) {
        self.cluster = cluster
        self.clientNetwork = clientNetwork
    }

    /// Applies `schedule`, healing each fault before the next; returns what was done, for the report.
    func inject(_ schedule: FaultSchedule, startedAt start: UInt64, clients: [EtcdClient]) async -> [String] {
        var log: [String] = []
        for (at, fault) in schedule.faults {
            let due = start + UInt64(at) * 1_000_000
            let now = monotonicNanoseconds()
            if due > now { try? await Task.sleep(for: .nanoseconds(Int64(due - now))) }
            switch fault {
            case .kill(let member, let down):
                let target = await resolve(member, clients: clients)
                lock.withLock { cluster.kill(target.index); killed.insert(target.index) }
                try? await Task.sleep(for: .milliseconds(down))
                let restarted = lock.withLock { () -> Bool in
                    killed.remove(target.index)
                    return (try? cluster.start(target.index)) != nil
                }
                log.append("at \(at) ms kill -9 \(target.name), restarted after \(down) ms\(restarted ? "" : " (restart FAILED)")")
            case .pause(let member, let pausedFor):
                let target = await resolve(member, clients: clients)
                lock.withLock { cluster.pause(target.index); paused.insert(target.index) }
                try? await Task.sleep(for: .milliseconds(pausedFor))
                lock.withLock { cluster.resume(target.index); paused.remove(target.index) }
                log.append("at \(at) ms SIGSTOP \(target.name) for \(pausedFor) ms")
            case .killAll(let down):
                let members = lock.withLock { () -> Range<Int> in
                    let all = cluster.members.indices
                    for index in all { cluster.kill(index); killed.insert(index) }
                    return all
                }
                try? await Task.sleep(for: .milliseconds(down))
                let failed = lock.withLock { () -> [Int] in
                    members.filter { index in
                        killed.remove(index)
                        return (try? cluster.start(index)) == nil
                    }
                }
                log.append("at \(at) ms kill -9 every member, restarted after \(down) ms"
                    + (failed.isEmpty ? "" : " (restart FAILED for \(failed))"))
            case .isolate(let member, let mode, let length):
                let target = await resolve(member, clients: clients)
                let others = cluster.members.indices.filter { $0 != target.index }
                network.isolate(target.index, from: others, mode: mode)
                try? await Task.sleep(for: .milliseconds(length))
                network.heal()
                log.append("at \(at) ms isolated \(target.name) (\(mode)) for \(length) ms")
            case .partitionFromLeader(let offset, let mode, let length):
                let leader = await resolve(nil, clients: clients)
                let other = (leader.index + offset) % cluster.members.count
                network.partition([.init(from: leader.index, to: other), .init(from: other, to: leader.index)], mode: mode)
                try? await Task.sleep(for: .milliseconds(length))
                network.heal()
                log.append("at \(at) ms partitioned \(leader.name) from member \(other) (\(mode)) for \(length) ms")
            case .oneWay(let direction, let mode, let length):
                log.append("at \(at) ms " + (await oneWay(direction, mode: mode, milliseconds: length, clients: clients)))
            case .cutClientRequests(let hold, let length):
                let links = clientLinks
                let before = links.requestsCut
                links.armRequestCuts(probability: 0.5, holdMilliseconds: 0...hold)
                try? await Task.sleep(for: .milliseconds(length))
                links.heal()
                log.append("at \(at) ms cut \(links.requestsCut - before) client connections after they carried a request "
                    + "(answers held 0–\(hold) ms) during \(length) ms")
            case .stallClientLinks(let member, let length):
                let target = await resolve(member, clients: clients)
                clientLinks.partition([.init(from: PeerNetwork.clientOrigin, to: target.index),
                                       .init(from: target.index, to: PeerNetwork.clientOrigin)], mode: .stall)
                try? await Task.sleep(for: .milliseconds(length))
                clientLinks.heal()
                log.append("at \(at) ms stalled \(target.name)'s client links for \(length) ms")
            case .delayClientLinks(let member, let delay, let length):
                let target = await resolve(member, clients: clients)
                clientLinks.delay([.init(from: PeerNetwork.clientOrigin, to: target.index),
                                   .init(from: target.index, to: PeerNetwork.clientOrigin)], milliseconds: delay)
                try? await Task.sleep(for: .milliseconds(length))
                clientLinks.heal()
                log.append("at \(at) ms delayed \(target.name)'s client links by \(delay) ms for \(length) ms")
            case .delay(let member, let delay, let length):
                let target = await resolve(member, clients: clients)
                let links = cluster.members.indices.filter { $0 != target.index }.flatMap {
                    [PeerNetwork.Link(from: target.index, to: $0), PeerNetwork.Link(from: $0, to: target.index)]
                }
                network.delay(Set(links), milliseconds: delay)
                try? await Task.sleep(for: .milliseconds(length))
                network.heal()
                log.append("at \(at) ms delayed \(target.name)'s peer links by \(delay) ms for \(length) ms")
            case .cutConnections(let times, let interval):
                for _ in 0..<times {
                    network.cutAll()
                    try? await Task.sleep(for: .milliseconds(interval))
                }
                log.append("at \(at) ms cut every peer connection \(times) times, \(interval) ms apart")
            case .moveLeader(let offset):
                log.append("at \(at) ms " + (await moveLeader(offset: offset, clients: clients)))
            case .removeAndReAdd(let member):
                let target = await resolve(member, clients: clients)
                log.append("at \(at) ms " + (await removeAndReAdd(target, clients: clients)))
            case .snapshotCatchUp(let offset):
                log.append("at \(at) ms " + (await snapshotCatchUp(offset: offset, clients: clients)))
            case .moveLeaderTo(let member):
                log.append("at \(at) ms " + (await moveLeader(offset: 0, to: member, clients: clients)))
            case .awaitFailPointCrash(let member, let point, let viaSnapshot):
                if viaSnapshot {
                    log.append("at \(at) ms " + (await snapshotCatchUp(offset: 0, member: member, expectCrash: true,
                                                                       clients: clients)))
                }
                log.append(await awaitCrash(member, at: point))
            }
        }
        return log
    }

    private var network: PeerNetwork {
        guard let network = cluster.peerNetwork else { preconditionFailure("network faults need a proxied cluster") }
        return network
    }

    private var clientLinks: PeerNetwork {
        guard let clientNetwork else { preconditionFailure("client-link faults need client-link proxies") }
        return clientNetwork
    }

    /// One-way partitions applied; leaders among their cut-off senders, and those the others replaced while it
    /// lasted (the replaced leader also naming the new one: it still receives).
    private(set) var oneWayPartitions = 0
    private(set) var mutedLeaders = 0
    private(set) var mutedLeadersReplaced = 0

    /// Applies a one-way partition for `milliseconds` and checks, from the proxies' byte counts, that nothing moved
    /// on the blocked connections while something did the other way. When a leader cannot send to anyone, it also
    /// watches (Status of every member) for the others to elect a new leader and the old one to follow it.
    private func oneWay(_ direction: FaultSchedule.OneWay, mode: PeerNetwork.PartitionMode, milliseconds: Int,
                        clients: [EtcdClient]) async -> String {
        let members = Array(cluster.members.indices)
        let known = await statuses(clients)
        let leaderID = known.first(where: { $0.leader != 0 })?.leader
        let leaderIndex = known.first(where: { $0.id == leaderID })?.index
        let sender: Int
        let links: Set<PeerNetwork.Link>
        let what: String
        switch direction {
        case .leaderToFollower(let offset):
            sender = leaderIndex ?? 0
            let follower = (sender + offset) % members.count
            links = [.init(from: sender, to: follower)]
            what = "\(leaderIndex == nil ? "member 0 (no leader known)" : "the leader (member \(sender))") cannot send to member \(follower)"
        case .fromMember(let member):
            sender = member ?? leaderIndex ?? 0
            links = Set(members.filter { $0 != sender }.map { .init(from: sender, to: $0) })
            what = "\(member == nil ? "the leader (member \(sender))" : "member \(sender)")\(member != nil && sender == leaderIndex ? ", the leader," : "") cannot send to any member"
        }
        let reverse = Set(links.map { PeerNetwork.Link(from: $0.to, to: $0.from) })
        let muteLeader: Bool
        if case .fromMember = direction, sender == leaderIndex { muteLeader = true } else { muteLeader = false }
        let started = monotonicNanoseconds()
        network.blockSending(links, mode: mode)
        // Bytes already past the check when the block began may still land; count from a little later.
        try? await Task.sleep(for: .milliseconds(100))
        let before = network.deliveredBytes
        var replacedAfter: UInt64?
        let end = started + UInt64(milliseconds) * 1_000_000
        while monotonicNanoseconds() < end {
            try? await Task.sleep(for: .milliseconds(150))
            guard muteLeader, replacedAfter == nil, let leaderID else { continue }
            let now = await statuses(clients)
            // Every member names one new leader, the old one included: it cannot send, but it hears the new term.
            let named = Set(now.map(\.leader))
            if now.count == members.count, named.count == 1, let new = named.first, new != 0, new != leaderID {
                replacedAfter = (monotonicNanoseconds() - started) / 1_000_000
            }
        }
        let after = network.deliveredBytes
        network.heal()
        func moved(_ set: Set<PeerNetwork.Link>) -> Int { set.reduce(0) { $0 + (after[$1] ?? 0) - (before[$1] ?? 0) } }
        let leaked = moved(links), flowed = moved(reverse)
        lock.withLock {
            oneWayPartitions += 1
            if muteLeader { mutedLeaders += 1 }
            if replacedAfter != nil { mutedLeadersReplaced += 1 }
        }
        return "one-way partition: \(what) (\(mode)) for \(milliseconds) ms: \(leaked) bytes crossed the blocked links"
            + (leaked > 0 ? " (FAILED: the partition leaked)" : "") + ", \(flowed) the other way"
            // The others' votes and the new leader's appends reach a muted leader, so silence means the reverse
            // direction was blocked too.
            + (muteLeader && flowed == 0 ? " (FAILED: nothing came the other way)" : "")
            + (!muteLeader ? "" : replacedAfter.map { "; every member followed a new leader after \($0) ms" }
                ?? "; the leader was not replaced while it lasted")
    }

    /// Leader transfers that succeeded; snapshot catch-ups run and those that ended with the member installing a
    /// snapshot (read by the run's checks).
    private(set) var leaderTransfers = 0
    private(set) var snapshotCatchUps = 0
    private(set) var snapshotsInstalled = 0
    private(set) var membersReAdded = 0

    private static func options(_ timeout: Duration) -> CallOptions {
        var options = CallOptions.defaults
        options.timeout = timeout
        return options
    }

    /// Each answering member's (index, member ID, leader ID), by Status.
    private func statuses(_ clients: [EtcdClient]) async -> [(index: Int, id: UInt64, leader: UInt64)] {
        var result: [(Int, UInt64, UInt64)] = []
        for (index, client) in clients.enumerated() {
            guard let status = try? await Etcdserverpb_Maintenance.Client(wrapping: client)
                .status(Etcdserverpb_StatusRequest(), options: Self.options(.milliseconds(500))) else { continue }
            result.append((index, status.header.memberID, status.leader))
        }
        return result
    }

    /// Moves the leadership `offset` places on, or to `member`.
    private func moveLeader(offset: Int, to member: Int? = nil, clients: [EtcdClient]) async -> String {
        let known = await statuses(clients)
        guard let leaderID = known.first(where: { $0.leader != 0 })?.leader,
              let leader = known.first(where: { $0.id == leaderID }) else { return "move leader skipped: no leader known" }
        let targetIndex = member ?? (leader.index + offset) % clients.count
        if targetIndex == leader.index { return "member \(targetIndex) is already the leader" }
        guard let target = known.first(where: { $0.index == targetIndex }) else {
            return "move leader skipped: member \(targetIndex) did not answer Status"
        }
        var request = Etcdserverpb_MoveLeaderRequest()
        request.targetID = target.id
        do {
            _ = try await Etcdserverpb_Maintenance.Client(wrapping: clients[leader.index])
                .moveLeader(request, options: Self.options(.seconds(5)))
            lock.withLock { leaderTransfers += 1 }
            return "moved the leader from member \(leader.index) to member \(targetIndex)"
        } catch {
            return "move leader from member \(leader.index) to member \(targetIndex) refused: \(error)"
        }
    }

    /// MemberRemove, wipe, MemberAdd, start with `--initial-cluster-state existing`. Every step is bounded; a step
    /// that does not succeed is reported with "FAILED", which fails the run.
    private func removeAndReAdd(_ target: (index: Int, name: String), clients: [EtcdClient]) async -> String {
        let others = clients.indices.filter { $0 != target.index }
        let (name, peerURL) = lock.withLock { (cluster.members[target.index].name, cluster.members[target.index].advertisedPeerURL) }
        func memberID() async -> UInt64? {
            for attempt in 0..<20 {
                let client = Etcdserverpb_Cluster.Client(wrapping: clients[others[attempt % others.count]])
                if let list = try? await client.memberList(Etcdserverpb_MemberListRequest(), options: Self.options(.seconds(2))) {
                    return list.members.first(where: { $0.peerUrls.contains(peerURL) })?.id
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
            return nil
        }
        guard let oldID = await memberID() else { return "remove \(target.name) FAILED: no member list" }
        var removed = false
        for attempt in 0..<20 where !removed {
            var request = Etcdserverpb_MemberRemoveRequest()
            request.id = oldID
            do {
                _ = try await Etcdserverpb_Cluster.Client(wrapping: clients[others[attempt % others.count]])
                    .memberRemove(request, options: Self.options(.seconds(3)))
                removed = true
            } catch {
                // An earlier attempt may have been applied though its answer was lost.
                if "\(error)".contains("member not found") { removed = true } else {
                    try? await Task.sleep(for: .milliseconds(300))
                }
            }
        }
        guard removed else { return "remove \(target.name) FAILED" }
        // A removed member stops by itself (a leader once it applies its removal, a follower when a peer refuses
        // it), as etcd's does.
        var exitedAlone = false
        for _ in 0..<100 {
            if lock.withLock({ cluster.members[target.index].process?.isRunning != true }) { exitedAlone = true; break }
            try? await Task.sleep(for: .milliseconds(100))
        }
        lock.withLock {
            cluster.kill(target.index)
            paused.remove(target.index)
            try? FileManager.default.removeItem(at: cluster.dataDirectory(target.index))
        }
        var added: Etcdserverpb_MemberAddResponse?
        for attempt in 0..<20 where added == nil {
            var request = Etcdserverpb_MemberAddRequest()
            request.peerUrls = [peerURL]
            added = try? await Etcdserverpb_Cluster.Client(wrapping: clients[others[attempt % others.count]])
                .memberAdd(request, options: Self.options(.seconds(3)))
            if added == nil {
                // An earlier attempt may have been applied though its answer was lost.
                if await memberID() != nil, let list = try? await Etcdserverpb_Cluster.Client(wrapping: clients[others[0]])
                    .memberList(Etcdserverpb_MemberListRequest(), options: Self.options(.seconds(2))),
                   let mine = list.members.first(where: { $0.peerUrls.contains(peerURL) }) {
                    var response = Etcdserverpb_MemberAddResponse()
                    response.member = mine
                    response.members = list.members
                    added = response
                } else {
                    try? await Task.sleep(for: .milliseconds(300))
                }
            }
        }
        guard let added else { return "removed \(target.name), re-add FAILED" }
        // Every other member must list it before it starts: it fetches the membership from one of them, and one that
        // has not applied the MemberAdd yet makes it stop ("not in cluster"), as etcd's would.
        for _ in 0..<25 {
            var listed = 0
            for other in others {
                let list = try? await Etcdserverpb_Cluster.Client(wrapping: clients[other])
                    .memberList(Etcdserverpb_MemberListRequest(), options: Self.options(.seconds(1)))
                if list?.members.contains(where: { $0.id == added.member.id }) == true { listed += 1 }
            }
            if listed == others.count { break }
            try? await Task.sleep(for: .milliseconds(200))
        }
        let initialCluster = added.members.compactMap { member -> String? in
            let memberName = member.id == added.member.id ? name : member.name
            guard !memberName.isEmpty, !member.peerUrls.isEmpty else { return nil }
            return member.peerUrls.map { "\(memberName)=\($0)" }.joined(separator: ",")
        }.joined(separator: ",")
        let started = lock.withLock {
            (try? cluster.start(target.index, state: "existing", initialCluster: initialCluster)) != nil
        }
        // Joined (it knows a leader) before the next fault: a fault that cut it off while it fetches the cluster's
        // membership from its peers would make it give up, as etcd's does.
        var joined = false
        for _ in 0..<75 where started && !joined {
            try? await Task.sleep(for: .milliseconds(200))
            if lock.withLock({ cluster.members[target.index].process?.isRunning != true }) { break }
            let status = try? await Etcdserverpb_Maintenance.Client(wrapping: clients[target.index])
                .status(Etcdserverpb_StatusRequest(), options: Self.options(.milliseconds(500)))
            joined = (status?.leader ?? 0) != 0
        }
        if joined { lock.withLock { membersReAdded += 1 } }
        return "removed \(target.name) (ID \(String(oldID, radix: 16))\(exitedAlone ? ", it stopped by itself" : ", it did not stop within 10 s: FAILED")), "
            + "re-added empty as \(String(added.member.id, radix: 16))"
            + (!started ? " (start FAILED)" : joined ? ", joined" : " (did not join within 15 s: FAILED)")
    }

    /// Pauses a follower and cuts its peer links, writes until the leader must have snapshotted and compacted its log past it (failed
    /// compare-and-put transactions: large log entries that leave the state as it was, since a snapshot waits
    /// until the log since the last one is as large as the state), resumes it, and waits for it to log that it
    /// installed a snapshot.
    /// - Parameter member: the follower to pause (when the leader, the leadership moves away first); nil: the one
    ///   `offset` places after the leader. With `expectCrash` (it is armed to die installing the snapshot) it is not
    ///   waited for.
    private func snapshotCatchUp(offset: Int, member: Int? = nil, expectCrash: Bool = false,
                                 clients: [EtcdClient]) async -> String {
        var known = await statuses(clients)
        if let member, known.contains(where: { $0.index == member && $0.id == $0.leader }) {
            _ = await moveLeader(offset: 0, to: (member + 1) % clients.count, clients: clients)
            try? await Task.sleep(for: .milliseconds(500))
            known = await statuses(clients)
        }
        guard let leaderID = known.first(where: { $0.leader != 0 })?.leader,
              let leader = known.first(where: { $0.id == leaderID }) else { return "snapshot catch-up skipped: no leader known" }
        let target = member ?? (leader.index + offset) % clients.count
        guard target != leader.index else { return "snapshot catch-up skipped: member \(target) is still the leader" }
        let marker = "installed snapshot at"
        let before = lock.withLock { cluster.log(target).components(separatedBy: marker).count }
        // Cut off first, then frozen: appends already in its socket buffers would otherwise catch it up.
        let others = clients.indices.filter { $0 != target }
        network.isolate(target, from: others, mode: .refuse)
        try? await Task.sleep(for: .milliseconds(100))
        lock.withLock { cluster.pause(target); paused.insert(target) }
        let stateBytes = (try? await Etcdserverpb_Maintenance.Client(wrapping: clients[leader.index])
            .status(Etcdserverpb_StatusRequest(), options: Self.options(.seconds(1))).dbSizeInUse) ?? 1 << 20
        // One at a time, so that each is one append to the follower: the leader sends at most 256 (its inflight
        // window) to a follower that does not answer, and those wait in its queue to be delivered on resume. 420
        // entries leave the follower behind the leader's log, which after a snapshot keeps 50 entries
        // (--snapshot-count 100 / 2).
        let entries = 420
        let valueBytes = min(512 << 10, max(4 << 10, Int(Double(stateBytes) * 1.5) / entries))
        let leaderClient = clients[leader.index]
        let written = await withTaskGroup(of: Int.self) { group in
            for worker in 0..<1 {
                group.addTask {
                    var done = 0
                    for _ in 0..<entries {
                        var compare = Etcdserverpb_Compare()
                        compare.key = Data("/snap/filler".utf8)
                        compare.target = .value
                        compare.result = .equal
                        compare.value = Data("never".utf8)
                        var put = Etcdserverpb_PutRequest()
                        put.key = Data("/snap/filler".utf8)
                        put.value = Data(repeating: UInt8(65 + worker), count: valueBytes)
                        var operation = Etcdserverpb_RequestOp()
                        operation.requestPut = put
                        var request = Etcdserverpb_TxnRequest()
                        request.compare = [compare]
                        request.success = [operation]
                        if (try? await Etcdserverpb_KV.Client(wrapping: leaderClient)
                            .txn(request, options: Self.options(.seconds(3)))) != nil { done += 1 }
                    }
                    return done
                }
            }
            return await group.reduce(0, +)
        }
        // The leader snapshots in the background.
        try? await Task.sleep(for: .milliseconds(500))
        network.heal()
        lock.withLock { cluster.resume(target); paused.remove(target) }
        if expectCrash {
            return "paused member \(target), wrote \(written) of \(entries) transactions, resumed"
        }
        var installed = false
        for _ in 0..<50 where !installed {
            try? await Task.sleep(for: .milliseconds(200))
            installed = lock.withLock { cluster.log(target).components(separatedBy: marker).count } > before
        }
        lock.withLock {
            snapshotCatchUps += 1
            if installed { snapshotsInstalled += 1 }
        }
        return "paused member \(target), wrote \(written) of \(entries) transactions of \(valueBytes) bytes "
            + "(state \(stateBytes) bytes), resumed: \(installed ? "it installed a snapshot" : "NO snapshot installed")"
    }

    /// Members that stopped at their armed failure point (exit status 86, the point named in their log).
    private(set) var failPointCrashes = 0

    /// Waits (bounded) for `member` to die at failure point `point`, then restarts it disarmed.
    private func awaitCrash(_ member: Int, at point: String) async -> String {
        let started = monotonicNanoseconds()
        var status: Int32?
        for _ in 0..<150 where status == nil {
            try? await Task.sleep(for: .milliseconds(100))
            status = lock.withLock { cluster.members[member].process?.isRunning == false ? cluster.waitForExit(member, timeout: 1) : nil }
        }
        let waited = (monotonicNanoseconds() - started) / 1_000_000
        guard let status else { return "member \(member) never reached failure point \(point) in \(waited) ms: FAILED" }
        let named = lock.withLock { cluster.log(member).contains("failure point \(point) reached") }
        let restarted = lock.withLock { () -> Bool in
            cluster.memberEnvironment[member] = nil
            return (try? cluster.start(member)) != nil
        }
        let expected = status == 86 && named
        if expected { lock.withLock { failPointCrashes += 1 } }
        return "member \(member) died at failure point \(point) after \(waited) ms of waiting (exit status \(status)"
            + "\(named ? "" : ", point NOT named in its log")\(status == 86 ? "" : ": unexpected, FAILED")), "
            + (restarted ? "restarted" : "restart FAILED")
    }

    /// Resumes every paused member and restarts every killed one.
    func healAll() {
        clientNetwork?.heal()
        lock.withLock {
            cluster.peerNetwork?.heal()
            for index in paused { cluster.resume(index) }
            for index in killed { try? cluster.start(index) }
            paused = []
            killed = []
        }
    }

    /// The member a fault targets: the given one, or the current leader (asked of the members by Status; a random
    /// member when no leader is known).
    private func resolve(_ member: Int?, clients: [EtcdClient]) async -> (index: Int, name: String) {
        if let member { return (member, "member \(member)") }
        var options = CallOptions.defaults
        options.timeout = .milliseconds(500)
        var memberIDs: [UInt64: Int] = [:]
        var leader: UInt64 = 0
        for (index, client) in clients.enumerated() {
            guard let status = try? await Etcdserverpb_Maintenance.Client(wrapping: client)
                .status(Etcdserverpb_StatusRequest(), options: options) else { continue }
            memberIDs[status.header.memberID] = index
            if status.leader != 0 { leader = status.leader }
        }
        if let index = memberIDs[leader] { return (index, "leader (member \(index))") }
        // Member 0 keeps the schedule the same for a replay when no leader is known.
        return (0, "member 0 (no leader known)")
    }
}
