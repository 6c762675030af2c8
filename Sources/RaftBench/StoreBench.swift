import Foundation
import Logging
import RaftKV

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
