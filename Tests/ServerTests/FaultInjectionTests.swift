import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import HistoryCheck
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Concurrent clients and watchers on a real 3-member cluster while members are killed (-9) and restarted, or
/// frozen (SIGSTOP) and thawed, on a seeded schedule. Afterwards: the history is linearizable, the watch streams
/// are ordered, complete and correct, and every member has the same HashKV at the same revision.
///
/// `FAULT_SEED=S` replays one schedule (`FAULT_SEED=3,7` several); `FAULT_SOAK=N` runs N schedules from seed 1 (default: the fixed seeds in
/// `defaultSeeds`); `FAULT_SECONDS=T` changes the workload time (default 8), `FAULT_CLIENTS=C` the number of
/// concurrent clients (default 4).
///
/// `FAULT_STALE_READS=1` is the negative control: reads become serializable (served from a member's local state,
/// which lags after a pause or a restart), and the run must find a linearizability violation in some schedule.
final class FaultInjectionTests: XCTestCase {
    static let environment = ProcessInfo.processInfo.environment
    static let defaultSeeds: [UInt64] = [1, 2]

    static func replay(_ seed: UInt64) -> String {
        "FAULT_SEED=\(seed) swift test --filter ServerTests.FaultInjectionTests"
    }

    func testLinearizableUnderCrashesAndPauses() async throws {
        let seeds: [UInt64]
        if let listed = Self.environment["FAULT_SEED"]?.split(separator: ",").compactMap({ UInt64($0) }),
           !listed.isEmpty {
            seeds = listed
        } else if let soak = Self.environment["FAULT_SOAK"].flatMap(UInt64.init), soak > 0 {
            seeds = Array(1...soak)
        } else {
            seeds = Self.defaultSeeds
        }
        let seconds = Self.environment["FAULT_SECONDS"].flatMap(Int.init) ?? 8
        let staleReads = Self.environment["FAULT_STALE_READS"] == "1"
        var totals = FaultRun.Figures()
        for seed in seeds {
            var run = FaultRun(seed: seed, workloadMilliseconds: seconds * 1_000)
            run.serializableReads = staleReads
            run.clientCount = Self.environment["FAULT_CLIENTS"].flatMap(Int.init) ?? run.clientCount
            let figures = try await run.run()
            totals.add(figures)
        }
        print("fault injection\(staleReads ? " (serializable reads)" : ""): \(seeds.count) schedules: \(totals)")
        if staleReads {
            XCTAssertGreaterThan(totals.violations, 0, "serializable reads under faults were never caught as stale")
        }
    }
}

/// One schedule: a fresh cluster, the workload and the faults, then the checks.
struct FaultRun {
    var seed: UInt64
    var workloadMilliseconds: Int
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

        mutating func add(_ other: Figures) {
            operations += other.operations
            acknowledgedWrites += other.acknowledgedWrites
            unknownOutcomes += other.unknownOutcomes
            watchEvents += other.watchEvents
            faults += other.faults
            violations += other.violations
        }

        var description: String {
            "\(operations) operations checked (\(acknowledgedWrites) acknowledged writes, \(unknownOutcomes) unknown "
                + "outcomes), \(watchEvents) watch events checked, \(faults) faults injected, \(violations) violations"
        }
    }

    func run(file: StaticString = #filePath, line: UInt = #line) async throws -> Figures {
        let replay = FaultInjectionTests.replay(seed)
        let cluster = try TestCluster(size: 3)
        try cluster.startAll()
        try cluster.waitHealthy()
        let control = ClusterControl(cluster)
        let schedule = FaultSchedule(seed: seed, durationMilliseconds: workloadMilliseconds, members: 3)
        print("fault run seed=\(seed) (replay: \(replay)); data in \(cluster.root.path)\n  schedule: \(schedule)")

        let recorder = HistoryRecorder()
        let stop = WatchStop()
        let transports = try cluster.members.map {
            try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: $0.clientPort),
                                           transportSecurity: .plaintext)
        }
        let clients = transports.map { GRPCClient(transport: $0) }
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
            for client in clients { group.addTask { try await client.runConnections() } }
            defer {
                // On an early exit too: watchers end, then connections close.
                stop.set(target: 0, hardDeadline: 0)
                for client in clients { client.beginGracefulShutdown() }
            }

            async let allKeysWatch = watchers[0].run(clients: clients, stop: stop)
            async let singleKeyWatch = watchers[1].run(clients: clients, stop: stop)
            let start = monotonicNanoseconds()
            let deadline = start + UInt64(workloadMilliseconds) * 1_000_000
            async let faults = control.inject(schedule, startedAt: start, clients: clients)
            await withTaskGroup(of: Void.self) { workers in
                for client in workload {
                    workers.addTask { await client.run(clients: clients, recorder: recorder, until: deadline) }
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
        print("  faults: \(faultLog.joined(separator: "; "))")

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

    init(_ cluster: TestCluster) { self.cluster = cluster }

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
            }
        }
        return log
    }

    /// Resumes every paused member and restarts every killed one.
    func healAll() {
        lock.withLock {
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
