import ArgumentParser
import Foundation
import Logging
import RaftKV

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

    func run() async throws {
        let root = URL(fileURLWithPath: directory).appendingPathComponent("raftbench-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
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
final class CountingStateMachine: StateMachine, @unchecked Sendable {
    private(set) var appliedIndex: LogIndex = 0

    func apply(_ entries: [Entry]) throws -> [ApplyResult] {
        appliedIndex = entries.last!.index
        return entries.map { _ in [] }
    }

    func writeSnapshot(to file: URL) throws { try Data("\(appliedIndex)".utf8).write(to: file) }

    func restore(from file: URL, index: LogIndex) throws { appliedIndex = index }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}


/// The embedded single-member store: apply throughput, range latency, database size and memory.
struct StoreBench {
    var keys: Int
    var valueBytes: Int
    var clients: Int
    var directory: URL

    func run() async throws {
        var configuration = KVStore.Configuration()
        configuration.logger = quietLogger
        let store = try KVStore.open(directory: directory, configuration: configuration)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await store.run() }
            try await measure(store)
            await store.close()
            try await group.waitForAll()
        }
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
        print(String(format: "put, %d clients:      %8.0f puts/s (%d puts)", clients, Double(remaining) / elapsed, remaining))

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
