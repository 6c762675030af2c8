import ClusterObjects
import Foundation
import RaftKV
import Testing

// The example of docs/cluster-objects.md, compiled and run here; the test also checks the page shows it verbatim.
// example-begin
/// Opens an embedded store, creates a namespace and a pod, updates the pod from a stale copy (Conflict) and with
/// guaranteedUpdate, lists and watches pods, and closes the store.
func clusterObjectsExample(directory: URL) async throws -> [String] {
    let store = try KVStore.open(directory: directory)
    let running = Task { try await store.run() }
    // The same code runs against a kvserver cluster (or etcd) with: try RemoteBackend(endpoint: "127.0.0.1:2379")
    let objects = ObjectStore(backend: EmbeddedBackend(store: store))

    _ = try await objects.namespaces.create(Namespace(metadata: ObjectMeta(name: "default")))
    let pod = try await objects.pods.create(Pod(
        metadata: ObjectMeta(name: "web-0", namespace: "default", labels: ["app": "web"]),
        spec: PodSpec(containers: [Container(name: "web", image: "nginx:1.27")])))

    // Watch from the pod's resourceVersion: everything after it, in order.
    let watch = try await objects.pods.watch(namespace: "default",
                                             WatchOptions(resourceVersion: pod.metadata.resourceVersion))

    // A scheduler binds the pod; a stale copy then loses with Kubernetes' Conflict.
    let bound = try await objects.pods.guaranteedUpdate("web-0", namespace: "default") { pod in
        pod.spec.nodeName = "node-1"
    }
    var conflict = ""
    do {
        var stale = pod
        stale.status = PodStatus(phase: "Running")
        _ = try await objects.pods.updateStatus(stale)  // the kubelet's write, from a stale read
    } catch let error as ObjectError {
        conflict = error.message  // Operation cannot be fulfilled on pods "web-0": the object has been modified; …
    }

    let onNode1 = try await objects.pods.list(namespace: "default",
                                              ListOptions(labelSelector: "app=web", fieldSelector: "spec.nodeName=node-1"))
    let event = try await watch.next()  // MODIFIED, at bound's resourceVersion
    watch.close()

    await store.close()
    _ = await running.result
    return ["\(bound.metadata.generation!)", onNode1.items.map(\.name).joined(), event!.type,
            "\(event!.resourceVersion == bound.metadata.resourceVersion!)", conflict]
}
// example-end

@Suite struct ObjectsExampleTests {
    @Test func exampleRunsAndTheDocsShowIt() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("objects-example-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try await clusterObjectsExample(directory: directory)
        #expect(result == ["2", "web-0", "MODIFIED", "true",
                           "Operation cannot be fulfilled on pods \"web-0\": the object has been modified; please apply your changes to the latest version and try again"])

        let source = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let begin = try #require(source.range(of: "// example-begin\n"))
        let end = try #require(source.range(of: "// example-end"))
        let example = String(source[begin.upperBound..<end.lowerBound])
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/cluster-objects.md")
        let page = try String(contentsOf: docs, encoding: .utf8)
        #expect(page.contains("```swift\nimport ClusterObjects\nimport Foundation\nimport RaftKV\n\n" + example + "```"))
    }
}
