import ClusterObjects
import Foundation
import RaftKV
import Testing

/// The same registry scenarios through `RemoteBackend` (etcd's gRPC API) against real `kvserver` processes, then
/// the real etcdctl reading what the registry wrote. One test, so one cluster for the whole run: three members
/// (OBJECT_TESTS_MEMBERS=1 runs against one member instead).
@Suite(.serialized) struct RemoteRegistryTests {
    @Test func registryOverGRPCAndEtcdctlSeesKubernetesKeys() async throws {
        let size = Int(ProcessInfo.processInfo.environment["OBJECT_TESTS_MEMBERS"] ?? "") ?? 3
        let server = try KVServerProcess(size: size)
        try server.start()
        defer { server.stop() }
        // The last member: with three, likely a follower, so writes take the forwarding path.
        let backend = try RemoteBackend(endpoint: server.members[size - 1].endpoint)
        do {
            try await waitUntilServing(backend, server: server)
            let objects = ObjectStore(backend: backend)
            try await RegistryScenarios.createGetUpdateDelete(objects)
            try await RegistryScenarios.namespacesMustExist(objects)
            try await RegistryScenarios.finalizers(objects)
            try await RegistryScenarios.unknownFieldsSurvive(objects)
            try await RegistryScenarios.concurrentUpdates(objects)
            try await RegistryScenarios.selectors(objects)
            try await RegistryScenarios.paginationWithConcurrentWriter(objects, count: 2000)
            try await RegistryScenarios.eventsUseLeases(objects)
            try await RegistryScenarios.encryptionRoundTripAndRotation(backend)
            try await RegistryScenarios.everyType(objects)
            try await RegistryScenarios.watchEvents(objects)
            try await RegistryScenarios.continueAfterCompaction(objects)
            try checkEtcdctl(server)
        } catch {
            await backend.close()
            Issue.record("log of \(server.members[0].name):\n\(server.log(0).suffix(4000))")
            throw error
        }
        await backend.close()
    }

    func waitUntilServing(_ backend: RemoteBackend, server: KVServerProcess) async throws {
        var lastError: (any Error)?
        for _ in 0..<300 {
            do {
                _ = try await backend.currentRevision()
                return
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        throw KVServerProcess.MissingTool(description: "kvserver did not serve within 30 s: \(String(describing: lastError))\n\(server.log(0).suffix(3000))")
    }

    /// What an operator sees with `ETCDCTL_API=3 etcdctl get --prefix /registry/`: kube-apiserver's keys, JSON
    /// values without resourceVersion, and secrets as ciphertext.
    func checkEtcdctl(_ server: KVServerProcess) throws {
        guard KVServerProcess.etcdctlPath() != nil else {
            Issue.record("the real etcdctl is not installed (apt-get install etcd-client); .ci/run installs it")
            return
        }
        let keys = try server.etcdctl(["get", "--prefix", "/registry/", "--keys-only"])
        #expect(keys.status == 0, "\(keys.stderr)")
        let keyLines = Set(String(decoding: keys.stdout, as: UTF8.self).split(separator: "\n").map(String.init))
        for expected in ["/registry/namespaces/crud", "/registry/minions/node-1", "/registry/pods/pages/pod-00001",
                         "/registry/replicasets/types/web", "/registry/secrets/vault/db", "/registry/serviceaccounts/types/default",
                         "/registry/roles/types/pod-reader", "/registry/rolebindings/types/read-pods",
                         "/registry/clusterroles/system:node-reader", "/registry/clusterrolebindings/nodes",
                         "/registry/leases/kube-node-lease/node-1", "/registry/events/events/web-0.1"] {
            #expect(keyLines.contains(expected), "etcdctl does not list \(expected)")
        }
        #expect(!keyLines.contains("/registry/pods/crud/web-0"))  // deleted

        // Simple format: key line, value line.
        let node = try server.etcdctl(["get", "/registry/minions/node-1"])
        let nodeLines = String(decoding: node.stdout, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(nodeLines.first == "/registry/minions/node-1")
        #expect(nodeLines.count > 1 && nodeLines[1].hasPrefix("{\"kind\":\"Node\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"node-1\",\"uid\":"))
        #expect(nodeLines.count > 1 && nodeLines[1].contains("\"status\":{\"allocatable\":") == false)
        #expect(nodeLines.count > 1 && nodeLines[1].contains("\"capacity\":{\"cpu\":\"4\",\"memory\":\"8Gi\"}"))
        #expect(nodeLines.count > 1 && !nodeLines[1].contains("resourceVersion"))

        let pod = try server.etcdctl(["get", "/registry/pods/unknown/legacy", "--print-value-only"])
        let podJSON = try JSONValue(parsing: Array(pod.stdout))
        #expect(podJSON["spec"]?["futureField"] != nil && podJSON["metadata"]?["managedFields"] != nil)

        let secret = try server.etcdctl(["get", "/registry/secrets/vault/db", "--print-value-only"])
        #expect(secret.stdout.starts(with: Data("k8s:enc:aesgcm:v1:key2:".utf8)))
        #expect(!String(decoding: secret.stdout, as: UTF8.self).contains("hunter2"))

        let json = try server.etcdctl(["get", "/registry/namespaces/crud", "-w", "json"])
        let parsed = try JSONSerialization.jsonObject(with: json.stdout) as? [String: Any]
        let kvs = parsed?["kvs"] as? [[String: Any]]
        let value = (kvs?.first?["value"] as? String).flatMap { Data(base64Encoded: $0) }
        #expect(value.map { String(decoding: $0, as: UTF8.self).hasPrefix("{\"kind\":\"Namespace\",\"apiVersion\":\"v1\"") } ?? false)
    }
}
