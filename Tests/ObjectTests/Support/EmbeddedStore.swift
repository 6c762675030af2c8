import ClusterObjects
import Foundation
import RaftKV
import Testing

/// A single-member `KVStore` in a temporary directory with its `run()` task, and an `ObjectStore` over it.
/// (Copied in spirit from Tests/RaftTests/Store/StoreTestSupport.swift: fast timings, quiet logs.)
final class EmbeddedObjects: @unchecked Sendable {
    let directory: URL
    let store: KVStore
    let task: Task<Void, any Error>
    let backend: EmbeddedBackend

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("objects-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var configuration = KVStore.Configuration()
        configuration.tickInterval = .milliseconds(5)
        configuration.electionTimeoutTicks = 30
        configuration.heartbeatTicks = 1
        configuration.requestTimeout = .seconds(5)
        configuration.leaseTickInterval = .milliseconds(10)
        configuration.logger.logLevel = .critical
        store = try KVStore.open(directory: directory, configuration: configuration)
        let store = self.store
        task = Task { try await store.run() }
        backend = EmbeddedBackend(store: store)
    }

    func objects(encryption: EncryptionConfiguration = .identity, eventTTLSeconds: Int64 = 3600) -> ObjectStore {
        ObjectStore(backend: backend, encryption: encryption, eventTTLSeconds: eventTTLSeconds)
    }

    func close() async {
        await store.close()
        _ = await task.result
        try? FileManager.default.removeItem(at: directory)
    }

    /// Runs `body` with a fresh store, closing it however `body` ends.
    static func with(_ body: (EmbeddedObjects) async throws -> Void) async throws {
        let embedded = try EmbeddedObjects()
        do {
            try await body(embedded)
        } catch {
            await embedded.close()
            throw error
        }
        await embedded.close()
    }
}

/// Expects `body` to throw an ObjectError with exactly `message` (and, if given, `code`).
func expectObjectError(_ message: String, code: Int? = nil, sourceLocation: SourceLocation = #_sourceLocation,
                       _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("expected \"\(message)\", but it succeeded", sourceLocation: sourceLocation)
    } catch let error as ObjectError {
        #expect(error.message == message, sourceLocation: sourceLocation)
        if let code { #expect(error.code == code, sourceLocation: sourceLocation) }
    } catch {
        Issue.record("expected \"\(message)\", got \(error)", sourceLocation: sourceLocation)
    }
}

func u8(_ text: String) -> [UInt8] { Array(text.utf8) }

/// A pod with one container.
func makePod(_ name: String, namespace: String, labels: [String: String]? = nil, nodeName: String? = nil) -> Pod {
    Pod(metadata: ObjectMeta(name: name, namespace: namespace, labels: labels),
        spec: PodSpec(containers: [Container(name: "app", image: "registry.k8s.io/pause:3.9")], nodeName: nodeName))
}

func makeNamespace(_ name: String) -> Namespace { Namespace(metadata: ObjectMeta(name: name)) }
