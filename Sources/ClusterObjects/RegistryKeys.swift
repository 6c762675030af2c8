/// Where kube-apiserver keeps each resource in etcd (with `--etcd-prefix=/registry`), quirks included, so that
/// `etcdctl get --prefix /registry/...` shows what a Kubernetes operator expects.
public struct ResourceKind: Sendable, Hashable {
    /// The segment after the prefix: usually the plural resource name, but not always (nodes are "minions").
    public var storageName: String
    public var isNamespaced: Bool

    public init(storageName: String, isNamespaced: Bool) {
        self.storageName = storageName
        self.isNamespaced = isNamespaced
    }

    public static let namespaces = ResourceKind(storageName: "namespaces", isNamespaced: false)
    /// Nodes keep their pre-1.0 name in storage.
    public static let nodes = ResourceKind(storageName: "minions", isNamespaced: false)
    public static let pods = ResourceKind(storageName: "pods", isNamespaced: true)
    /// ReplicaSets are stored under their API group's resource name.
    public static let replicaSets = ResourceKind(storageName: "replicasets", isNamespaced: true)
    public static let secrets = ResourceKind(storageName: "secrets", isNamespaced: true)
    public static let serviceAccounts = ResourceKind(storageName: "serviceaccounts", isNamespaced: true)
    /// Services live one level deeper, beside their endpoints' historical layout.
    public static let services = ResourceKind(storageName: "services/specs", isNamespaced: true)
    public static let roles = ResourceKind(storageName: "roles", isNamespaced: true)
    public static let roleBindings = ResourceKind(storageName: "rolebindings", isNamespaced: true)
    public static let clusterRoles = ResourceKind(storageName: "clusterroles", isNamespaced: false)
    public static let clusterRoleBindings = ResourceKind(storageName: "clusterrolebindings", isNamespaced: false)
    /// Node heartbeats are coordination.k8s.io Leases in the `kube-node-lease` namespace.
    public static let leases = ResourceKind(storageName: "leases", isNamespaced: true)
    public static let events = ResourceKind(storageName: "events", isNamespaced: true)
}

/// Builds etcd keys the way kube-apiserver's storage layer does.
public struct RegistryKeys: Sendable {
    public var prefix: String

    public init(prefix: String = "/registry") {
        precondition(prefix.hasPrefix("/") && !prefix.hasSuffix("/"), "the prefix is an absolute path without a trailing slash")
        self.prefix = prefix
    }

    /// The key of one object: `<prefix>/<resource>/<namespace>/<name>` or, cluster-scoped, `<prefix>/<resource>/<name>`.
    public func key(_ kind: ResourceKind, namespace: String?, name: String) -> String {
        precondition(!name.isEmpty, "an object key needs a name")
        if kind.isNamespaced {
            guard let namespace, !namespace.isEmpty else { preconditionFailure("\(kind.storageName) are namespaced") }
            return "\(prefix)/\(kind.storageName)/\(namespace)/\(name)"
        }
        precondition(namespace == nil || namespace!.isEmpty, "\(kind.storageName) are cluster-scoped")
        return "\(prefix)/\(kind.storageName)/\(name)"
    }

    /// The prefix a list covers: every object of `kind`, or those of one namespace. It ends in "/" so that
    /// namespace "a" does not also match namespace "ab".
    public func listPrefix(_ kind: ResourceKind, namespace: String? = nil) -> String {
        if let namespace, !namespace.isEmpty {
            precondition(kind.isNamespaced, "\(kind.storageName) are cluster-scoped")
            return "\(prefix)/\(kind.storageName)/\(namespace)/"
        }
        return "\(prefix)/\(kind.storageName)/"
    }
}
