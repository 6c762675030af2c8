import ClusterObjects
import Foundation
import RaftKV
import Testing

/// Figures for docs/cluster-objects.md. Skipped unless OBJECTS_BENCH=1 (they take a minute and load the machine):
///
///     OBJECTS_BENCH=1 OBJECT_TESTS_MEMBERS=3 swift test --filter ObjectBenchmarkTests
///
/// Pods are created and updated by `OBJECTS_BENCH_CLIENTS` concurrent tasks (default 32) through one
/// `RemoteBackend` connection to a kvserver cluster (OBJECT_TESTS_MEMBERS members, default 3); then 10,000 pods
/// are listed in pages of 500. `OBJECTS_BENCH_KVSERVER` runs another kvserver binary (a release build).
@Suite(.serialized) struct ObjectBenchmarkTests {
    static var enabled: Bool { ProcessInfo.processInfo.environment["OBJECTS_BENCH"] == "1" }

    @Test(.enabled(if: ObjectBenchmarkTests.enabled)) func podCreatesUpdatesAndPagedLists() async throws {
        let environment = ProcessInfo.processInfo.environment
        let size = Int(environment["OBJECT_TESTS_MEMBERS"] ?? "") ?? 3
        let clients = Int(environment["OBJECTS_BENCH_CLIENTS"] ?? "") ?? 32
        let count = Int(environment["OBJECTS_BENCH_PODS"] ?? "") ?? 10_000
        let server = try KVServerProcess(size: size, binary: environment["OBJECTS_BENCH_KVSERVER"].map { URL(fileURLWithPath: $0) })
        try server.start()
        defer { server.stop() }
        let backend = try RemoteBackend(endpoint: server.members[0].endpoint)
        defer { Task { await backend.close() } }
        for _ in 0..<300 {
            if (try? await backend.currentRevision()) != nil { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let objects = ObjectStore(backend: backend)
        _ = try await objects.namespaces.create(makeNamespace("bench"))
        let pods = objects.pods
        let clock = ContinuousClock()

        let createTime = try await clock.measure {
            try await RegistryScenarios.createPods(pods, namespace: "bench", count: count, concurrency: clients)
        }
        let updateTime = try await clock.measure {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<clients {
                    group.addTask {
                        for index in stride(from: worker, to: count, by: clients) {
                            _ = try await pods.guaranteedUpdateStatus(String(format: "pod-%05d", index), namespace: "bench") {
                                $0.status = PodStatus(phase: "Running", podIP: "10.0.\(index / 256).\(index % 256)")
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        var listed = 0
        var pages = 0
        let listTime = try await clock.measure {
            let all = try await pods.listAll(namespace: "bench", pageSize: 500)
            listed = all.items.count
            pages = (listed + 499) / 500
        }
        #expect(listed == count)
        func seconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        }
        print("""
        [objects-bench] members=\(size) clients=\(clients) pods=\(count) kvserver=\(server.binary.path)
        [objects-bench] creates: \(String(format: "%.1f", seconds(createTime))) s, \(String(format: "%.0f", Double(count) / seconds(createTime)))/s
        [objects-bench] updates (guaranteedUpdate: range + txn): \(String(format: "%.1f", seconds(updateTime))) s, \(String(format: "%.0f", Double(count) / seconds(updateTime)))/s
        [objects-bench] list \(listed) pods in \(pages) pages of 500: \(String(format: "%.2f", seconds(listTime))) s, \(String(format: "%.0f", seconds(listTime) * 1000 / Double(pages))) ms/page
        """)
    }
}
