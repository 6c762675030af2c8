import Testing
@testable import ClusterObjects

@Suite struct RegistryKeysTests {
    let keys = RegistryKeys()

    @Test func namespacedAndClusterScopedKeysMatchKubeAPIServer() {
        #expect(keys.key(.pods, namespace: "default", name: "web-0") == "/registry/pods/default/web-0")
        #expect(keys.key(.secrets, namespace: "kube-system", name: "token") == "/registry/secrets/kube-system/token")
        #expect(keys.key(.namespaces, namespace: nil, name: "default") == "/registry/namespaces/default")
        #expect(keys.key(.clusterRoles, namespace: nil, name: "admin") == "/registry/clusterroles/admin")
        #expect(keys.key(.leases, namespace: "kube-node-lease", name: "node-1") == "/registry/leases/kube-node-lease/node-1")
    }

    @Test func storageQuirks() {
        #expect(keys.key(.nodes, namespace: nil, name: "node-1") == "/registry/minions/node-1")
        #expect(keys.key(.services, namespace: "default", name: "kubernetes") == "/registry/services/specs/default/kubernetes")
    }

    @Test func listPrefixesEndInASlashSoNamespacesDoNotOverlap() {
        #expect(keys.listPrefix(.pods) == "/registry/pods/")
        #expect(keys.listPrefix(.pods, namespace: "a") == "/registry/pods/a/")
        #expect(!keys.key(.pods, namespace: "ab", name: "x").hasPrefix(keys.listPrefix(.pods, namespace: "a")))
        #expect(RegistryKeys(prefix: "/custom").listPrefix(.nodes) == "/custom/minions/")
    }
}
