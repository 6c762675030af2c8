import ClusterObjects
import Foundation
import RaftKV
import Testing

/// The registry scenarios over an embedded single-member store (one store per test).
@Suite struct EmbeddedRegistryTests {
    @Test func createGetUpdateDelete() async throws {
        try await EmbeddedObjects.with { try await RegistryScenarios.createGetUpdateDelete($0.objects()) }
    }

    @Test func namespacesMustExist() async throws {
        try await EmbeddedObjects.with { try await RegistryScenarios.namespacesMustExist($0.objects()) }
    }

    @Test func finalizers() async throws {
        try await EmbeddedObjects.with { try await RegistryScenarios.finalizers($0.objects()) }
    }

    @Test func unknownFieldsSurviveReadModifyWrite() async throws {
        try await EmbeddedObjects.with { try await RegistryScenarios.unknownFieldsSurvive($0.objects()) }
    }

    @Test func concurrentUpdatesLoseNothing() async throws {
        try await EmbeddedObjects.with { try await RegistryScenarios.concurrentUpdates($0.objects()) }
    }

    @Test func labelAndFieldSelectors() async throws {
        try await EmbeddedObjects.with { try await RegistryScenarios.selectors($0.objects()) }
    }

    @Test func paginationOverThousandsWithAConcurrentWriter() async throws {
        try await EmbeddedObjects.with { try await RegistryScenarios.paginationWithConcurrentWriter($0.objects(), count: 3000) }
    }

    @Test func watchEventsResumeAndGone() async throws {
        try await EmbeddedObjects.with { try await RegistryScenarios.watchEvents($0.objects()) }
    }

    @Test func continueTokenAfterCompaction() async throws {
        try await EmbeddedObjects.with { try await RegistryScenarios.continueAfterCompaction($0.objects()) }
    }

    @Test func eventsShareALease() async throws {
        try await EmbeddedObjects.with { try await RegistryScenarios.eventsUseLeases($0.objects()) }
    }

    @Test func encryptionRoundTripAndRotation() async throws {
        try await EmbeddedObjects.with { try await RegistryScenarios.encryptionRoundTripAndRotation($0.backend) }
    }

    @Test func everyTypeRoundTrips() async throws {
        try await EmbeddedObjects.with { try await RegistryScenarios.everyType($0.objects()) }
    }

    /// Events expire with their lease (TTL 1 s here; kube-apiserver's default is an hour).
    @Test func eventsExpire() async throws {
        try await EmbeddedObjects.with { embedded in
            let objects = embedded.objects(eventTTLSeconds: 1)
            _ = try await objects.namespaces.create(makeNamespace("default"))
            _ = try await objects.events.create(ClusterObjects.Event(metadata: ObjectMeta(name: "e1", namespace: "default"),
                                                                     involvedObject: ObjectReference(kind: "Node", name: "node-1"),
                                                                     reason: "Starting"))
            #expect(try await objects.events.list(namespace: "default").items.count == 1)
            var gone = false
            for _ in 0..<500 where !gone {
                try await Task.sleep(for: .milliseconds(20))
                gone = try await objects.events.list(namespace: "default").items.isEmpty
            }
            #expect(gone)
        }
    }
}
