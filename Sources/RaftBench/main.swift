import ArgumentParser
import Foundation
import Logging
import RaftKV
import Synchronization

/// Raft and SQLite log throughput on this machine. Not a test: it prints figures for docs/raft.md.
@main
struct RaftBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raftbench",
        abstract: "Measure SQLite log append throughput and in-process three-node Raft throughput."
    )

    @Option(help: "Seconds to run each log-append case.")
    var seconds: Double = 3

    @Option(help: "Bytes of each entry's payload.")
    var entryBytes: Int = 256

    @Option(help: "Proposals for the cluster case.")
    var proposals: Int = 5_000

    @Option(help: "Concurrent proposers for the cluster case.")
    var clients: Int = 64

    @Option(help: "Where to put the temporary data directories.")
    var directory: String = FileManager.default.temporaryDirectory.path

    @Flag(help: "Run only the embedded-store benchmark (puts through KVStore, range latency, size).")
    var store = false

    @Option(help: "Keys the embedded-store benchmark writes (256-byte values unless --entry-bytes says otherwise).")
    var storeKeys: Int = 100_000

    @Flag(help: "Run only the watch fan-out benchmark (watchers on one prefix, puts under it, delivery latency).")
    var watch = false

    @Option(help: "Watchers of the watch benchmark, all on one prefix.")
    var watchers: Int = 10_000

    @Option(help: "Watch streams the watchers are spread over (one reading task per stream).")
    var watchStreams: Int = 100

    @Option(help: "Puts under the watched prefix.")
    var watchPuts: Int = 1_000

    @Option(help: "Concurrent writers of the watch benchmark.")
    var watchWriters: Int = 4

    func run() async throws {
        let root = URL(fileURLWithPath: directory).appendingPathComponent("raftbench-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        if watch {
            try await WatchBench(watchers: watchers, streams: watchStreams, puts: watchPuts, writers: watchWriters,
                                 valueBytes: entryBytes, directory: root.appendingPathComponent("watch")).run()
            return
        }
        if store {
            try await StoreBench(keys: storeKeys, valueBytes: entryBytes, clients: clients,
                                 directory: root.appendingPathComponent("store")).run()
            return
        }
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB; entries of \(entryBytes) bytes")
        print("SQLite log append (WAL, synchronous=FULL, one transaction and one fsync per batch):")
        print("  batch   entries/s   fsyncs/s")
        for batch in [1, 16, 256] {
            let (entriesPerSecond, syncsPerSecond) = try appendThroughput(batch: batch, in: root.appendingPathComponent("append-\(batch)"))
            print(String(format: "  %5d  %10.0f  %9.0f", batch, entriesPerSecond, syncsPerSecond))
        }
        for (label, count) in [("1 client", 1), ("\(clients) clients", clients)] {
            let rate = try await clusterThroughput(clients: count, total: count == 1 ? min(proposals, 1_000) : proposals,
                                                   in: root.appendingPathComponent("cluster-\(count)"))
            print(String(format: "three-node in-process cluster (SQLite logs, %@): %.0f proposals/s", label, rate))
        }
    }

    func appendThroughput(batch: Int, in directory: URL) throws -> (Double, Double) {
        let storage = try SQLiteLogStorage(directory: directory)
        let payload = [UInt8](repeating: 0xab, count: entryBytes)
        var index: LogIndex = 0
        var syncs = 0
        let start = ContinuousClock.now
        let deadline = start + .seconds(seconds)
        while ContinuousClock.now < deadline {
            let entries = (0..<batch).map { offset in Entry(term: 1, index: index + LogIndex(offset) + 1, data: payload) }
            index += LogIndex(batch)
            try storage.save(hardState: HardState(term: 1, vote: 1, commit: index), entries: entries, sync: true)
            syncs += 1
        }
        let elapsed = (ContinuousClock.now - start).seconds
        return (Double(index) / elapsed, Double(syncs) / elapsed)
    }

    func clusterThroughput(clients: Int, total: Int, in directory: URL) async throws -> Double {
        let transport = LocalTransport()
        var nodes: [RaftNode] = []
        var tasks: [Task<Void, any Error>] = []
        let members = Membership(voters: [1, 2, 3])
        for id: NodeID in 1...3 {
            var configuration = RaftConfiguration(id: id)
            configuration.electionTimeoutTicks = 10
            var options = RaftNodeOptions()
            options.tickInterval = .milliseconds(100)
            let node = try RaftNode(configuration: configuration,
                                    storage: try SQLiteLogStorage(directory: directory.appendingPathComponent("\(id)")),
                                    stateMachine: CountingStateMachine(), transport: transport, bootstrap: members, options: options,
                                    logger: quietLogger)
            transport.register(node)
            nodes.append(node)
            tasks.append(Task { try await node.run() })
        }
        defer { tasks.forEach { $0.cancel() } }
        var found: RaftNode?
        while found == nil {
            try await Task.sleep(for: .milliseconds(50))
            for node in nodes where await node.status.role == .leader { found = node }
        }
        let leader = found!
        let payload = [UInt8](repeating: 0xcd, count: entryBytes)
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<clients {
                group.addTask {
                    for _ in stride(from: client, to: total, by: clients) { _ = try await leader.propose(payload) }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = (ContinuousClock.now - start).seconds
        for node in nodes { await node.stop() }
        return Double(total) / elapsed
    }
}

let quietLogger: Logger = {
    var logger = Logger(label: "raftbench")
    logger.logLevel = .warning
    return logger
}()

/// Counts applied entries; snapshots are the count.
final class CountingStateMachine: StateMachine, Sendable {
    private let applied = Atomic<LogIndex>(0)

    var appliedIndex: LogIndex { applied.load(ordering: .acquiring) }

    func apply(_ entries: [Entry]) throws -> [ApplyResult] {
        applied.store(entries.last!.index, ordering: .releasing)
        return entries.map { _ in [] }
    }

    func writeSnapshot(to file: URL) throws { try Data("\(appliedIndex)".utf8).write(to: file) }

    func restore(from file: URL, index: LogIndex) throws { applied.store(index, ordering: .releasing) }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Opens a single-member store in `directory`, runs `body` while the store runs, then closes it.
func withRunningStore(in directory: URL, _ body: (KVStore) async throws -> Void) async throws {
    var configuration = KVStore.Configuration()
    configuration.logger = quietLogger
    let store = try KVStore.open(directory: directory, configuration: configuration)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await store.run() }
        try await body(store)
        await store.close()
        try await group.waitForAll()
    }
}

/// The embedded single-member store: apply throughput, range latency, database size and memory.
struct StoreBench {
    var keys: Int
    var valueBytes: Int
    var clients: Int
    var directory: URL

    func run() async throws {
        try await withRunningStore(in: directory) { try await measure($0) }
    }

    static func key(_ index: Int) -> [UInt8] { Array(String(format: "/bench/%08d", index).utf8) }

    private func measure(_ store: KVStore) async throws {
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB; single-member KVStore, \(valueBytes)-byte values, \(keys) keys")
        let value = [UInt8](repeating: 0x5a, count: valueBytes)
        // Wait for the single member's election.
        try await store.put(Array("/warmup".utf8), value)

        let sequential = min(2_000, keys)
        var start = ContinuousClock.now
        for index in 0..<sequential { try await store.put(Self.key(index), value) }
        var elapsed = (ContinuousClock.now - start).seconds
        print(String(format: "put, 1 client:        %8.0f puts/s (%d puts)", Double(sequential) / elapsed, sequential))

        let remaining = keys - sequential
        start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<clients {
                group.addTask {
                    for index in stride(from: sequential + client, to: keys, by: clients) {
                        try await store.put(Self.key(index), value)
                    }
                }
            }
            try await group.waitForAll()
        }
        elapsed = (ContinuousClock.now - start).seconds
        print(String(format: "put, %d clients:      %8.0f puts/s (%d puts in %.1f s)", clients, Double(remaining) / elapsed, remaining, elapsed))

        var random = SeededRandom(seed: 1)
        for consistency in [ReadConsistency.serializable, .linearizable] {
            var latencies: [Duration] = []
            for _ in 0..<2_000 {
                let key = Self.key(Int.random(in: 0..<keys, using: &random))
                let begin = ContinuousClock.now
                guard try await store.get(key, consistency: consistency) != nil else { fatalError("lost \(key)") }
                latencies.append(ContinuousClock.now - begin)
            }
            print("get one key (\(consistency)): \(Self.summary(latencies))")
        }
        if keys >= 13_000 {
            for consistency in [ReadConsistency.serializable, .linearizable] {
                var latencies: [Duration] = []
                for _ in 0..<200 {
                    let begin = ContinuousClock.now
                    let response = try await store.prefix(Array("/bench/00012".utf8), consistency: consistency)
                    guard response.kvs.count == 1_000 else { fatalError("prefix returned \(response.kvs.count)") }
                    latencies.append(ContinuousClock.now - begin)
                }
                print("range of a 1000-key prefix (\(consistency)): \(Self.summary(latencies))")
            }
        }
        let status = try await store.status()
        print(String(format: "kv.db: %.1f MiB (%.1f MiB in use); raft log dir: %.1f MiB; RSS: %.1f MiB; revision %lld",
                     Double(status.dbSizeBytes) / 1_048_576, Double(status.dbSizeInUseBytes) / 1_048_576,
                     Double(Self.directorySize(directory.appendingPathComponent("member/raft"))) / 1_048_576,
                     Double(Self.residentBytes()) / 1_048_576, status.revision))
    }

    static func summary(_ latencies: [Duration]) -> String {
        let sorted = latencies.sorted()
        func ms(_ duration: Duration) -> String { String(format: "%.3f ms", duration.seconds * 1000) }
        return "p50 \(ms(sorted[sorted.count / 2])), p99 \(ms(sorted[sorted.count * 99 / 100])), max \(ms(sorted.last!))"
    }

    static func directorySize(_ url: URL) -> Int64 {
        guard let enumerator = FileManager.default.enumerator(at: url, includingPropertiesForKeys: [.fileSizeKey]) else { return 0 }
        var total: Int64 = 0
        for case let file as URL in enumerator {
            total += Int64((try? file.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0)
        }
        return total
    }

    /// VmRSS from /proc (Linux); 0 elsewhere.
    static func residentBytes() -> Int64 {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kilobytes = line.split(separator: " ").dropFirst().first.flatMap { Int64($0) } ?? 0
            return kilobytes * 1024
        }
        return 0
    }
}


/// Watch fan-out on the embedded single-member store: `watchers` watchers on one prefix, spread over `streams`
/// streams (one reading task each), then `puts` puts under the prefix from `writers` concurrent writers.
struct WatchBench {
    var watchers: Int
    var streams: Int
    var puts: Int
    var writers: Int
    var valueBytes: Int
    var directory: URL

    func run() async throws {
        try await withRunningStore(in: directory) { try await measure($0) }
    }

    /// Puts `count` keys `prefix%08d` from `writers` writers; returns (seconds, put start and acknowledgement by revision).
    private func write(_ store: KVStore, prefix: String, count: Int, value: [UInt8])
        async throws -> (Double, [Revision: (ContinuousClock.Instant, ContinuousClock.Instant)]) {
        let start = ContinuousClock.now
        let times = try await withThrowingTaskGroup(of: [(Revision, ContinuousClock.Instant, ContinuousClock.Instant)].self) { group in
            for writer in 0..<writers {
                group.addTask {
                    var local: [(Revision, ContinuousClock.Instant, ContinuousClock.Instant)] = []
                    for index in stride(from: writer, to: count, by: writers) {
                        let begin = ContinuousClock.now
                        let response = try await store.put(Array(String(format: "\(prefix)%08d", index).utf8), value)
                        local.append((response.revision, begin, ContinuousClock.now))
                    }
                    return local
                }
            }
            var all: [Revision: (ContinuousClock.Instant, ContinuousClock.Instant)] = [:]
            for try await local in group { for (revision, begin, ack) in local { all[revision] = (begin, ack) } }
            return all
        }
        return ((ContinuousClock.now - start).seconds, times)
    }

    private struct StreamResult: Sendable {
        var events = 0
        var problems: [String] = []
        /// (revision, arrival) for every event of the stream's first watcher.
        var samples: [(Revision, ContinuousClock.Instant)] = []
        var lastArrival: ContinuousClock.Instant?
    }

    private func measure(_ store: KVStore) async throws {
        let perStream = (watchers + streams - 1) / streams
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB; single-member KVStore, \(valueBytes)-byte values; \(watchers) watchers over \(streams) streams on one prefix, \(puts) puts from \(writers) writers")
        let value = [UInt8](repeating: 0x5a, count: valueBytes)
        try await store.put(Array("/warmup".utf8), value)

        // Baseline: the same writes with no watcher at all.
        let (baseSeconds, _) = try await write(store, prefix: "/base/", count: puts, value: value)
        print(String(format: "put, %d writers, no watchers:   %8.0f puts/s (%d puts)", writers, Double(puts) / baseSeconds, puts))

        let prefix = Array("/watch/".utf8)
        let expectedPerStream = (0..<streams).map { stream in
            max(0, min(perStream, watchers - stream * perStream)) * puts
        }
        let expected = watchers * puts
        let delivered = DeliveredCounter()
        let handles = (0..<streams).map { _ in store.watch() }
        let createStart = ContinuousClock.now
        let createdCount = DeliveredCounter()

        try await withThrowingTaskGroup(of: StreamResult.self) { group in
            // Readers first: create waits while too many "created" answers are unread.
            for (index, stream) in handles.enumerated() {
                let want = expectedPerStream[index]
                let watcherCount = want / max(puts, 1)
                group.addTask {
                    var result = StreamResult()
                    var sampledID: Int64?
                    var created = 0
                    while result.events < want || created < watcherCount {
                        guard let response = await stream.next() else { break }
                        let now = ContinuousClock.now
                        if response.created {
                            if response.canceled { result.problems.append("create refused: \(response.cancelReason)") }
                            created += 1
                            createdCount.add(1)
                            if sampledID == nil { sampledID = response.watchID }
                            continue
                        }
                        if response.canceled {
                            result.problems.append("watcher \(response.watchID) canceled: \(response.cancelReason) (compact \(response.compactRevision))")
                            continue
                        }
                        result.events += response.events.count
                        delivered.add(response.events.count)
                        result.lastArrival = now
                        if response.watchID == sampledID {
                            for event in response.events { result.samples.append((event.kv.modRevision, now)) }
                        }
                    }
                    return result
                }
            }
            for (index, stream) in handles.enumerated() {
                let count = expectedPerStream[index] / max(puts, 1)
                for _ in 0..<count {
                    await stream.create(WatchCreateRequest(key: prefix, rangeEnd: KeyRange.prefixEnd(prefix)))
                }
            }
            while createdCount.value < watchers { try await Task.sleep(for: .milliseconds(5)) }
            let createSeconds = (ContinuousClock.now - createStart).seconds
            print(String(format: "create %d watchers:              %.2f s (%.0f watchers/s); hub: %d watchers, %d streams; RSS %.1f MiB",
                         watchers, createSeconds, Double(watchers) / createSeconds, store.watchHub.watcherCount,
                         store.watchHub.streamCount, Double(StoreBench.residentBytes()) / 1_048_576))

            let writeStart = ContinuousClock.now
            let (writeSeconds, acks) = try await write(store, prefix: "/watch/", count: puts, value: value)
            print(String(format: "put, %d writers, %d watchers: %8.0f puts/s (%d puts)", writers, watchers, Double(puts) / writeSeconds, puts))

            // Wait for delivery to finish, or stall for 30 s.
            var last = delivered.value
            var lastChange = ContinuousClock.now
            while delivered.value < expected {
                try await Task.sleep(for: .milliseconds(10))
                let now = delivered.value
                if now != last { last = now; lastChange = ContinuousClock.now }
                if ContinuousClock.now - lastChange > .seconds(30) { break }
            }
            let stalled = delivered.value < expected
            if stalled { handles.forEach { $0.close() } }

            var results: [StreamResult] = []
            for try await result in group { results.append(result) }
            handles.forEach { $0.close() }

            let total = results.reduce(0) { $0 + $1.events }
            let lastArrival = results.compactMap(\.lastArrival).max() ?? writeStart
            let deliverySeconds = (lastArrival - writeStart).seconds
            if total != expected {
                print("!!!!! MISMATCH: delivered \(total) events, expected \(watchers) × \(puts) = \(expected)\(stalled ? " (delivery stalled for 30 s)" : "") !!!!!")
            } else {
                print("events delivered:                \(total) = \(watchers) × \(puts) (as expected)")
            }
            let problems = results.flatMap(\.problems)
            if !problems.isEmpty {
                print("!!!!! \(problems.count) watcher problems, first: \(problems.prefix(3).joined(separator: "; ")) !!!!!")
            }
            print(String(format: "delivery: %.2f s from first put to last event; %.0f events/s", deliverySeconds, Double(total) / deliverySeconds))

            var fromAck: [Duration] = []
            var fromPut: [Duration] = []
            var beforeAck = 0
            for result in results {
                for (revision, arrival) in result.samples {
                    guard let (begin, ack) = acks[revision] else { continue }
                    fromPut.append(arrival - begin)
                    if arrival < ack { beforeAck += 1 }
                    fromAck.append(arrival - ack)
                }
            }
            if !fromAck.isEmpty {
                print("delivery latency, event read by the watcher's reader minus put acknowledged (\(fromAck.count) samples, first watcher of each stream; \(beforeAck) arrived before the ack, negative): \(StoreBench.summary(fromAck))")
                print("delivery latency, put issued → event read (same samples): \(StoreBench.summary(fromPut))")
            }
        }
        let status = try await store.status()
        print(String(format: "RSS after: %.1f MiB; revision %lld", Double(StoreBench.residentBytes()) / 1_048_576, status.revision))
    }
}

final class DeliveredCounter: Sendable {
    private let count = Atomic<Int>(0)
    func add(_ amount: Int) { count.add(amount, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
