import Foundation

// Types of the named API groups: apps, rbac.authorization.k8s.io, coordination.k8s.io.

// MARK: - ReplicaSet (apps/v1)

public struct ReplicaSet: KubeObject {
    public static let apiVersion = "apps/v1"
    public static let kind = "ReplicaSet"
    public static let storage = ResourceKind.replicaSets
    public static let resourceName = "replicasets"
    public static let hasStatusSubresource = true
    public static let selectableFields = ["status.replicas"]

    public var apiVersion: String = ReplicaSet.apiVersion
    public var kind: String = ReplicaSet.kind
    public var metadata: ObjectMeta
    public var spec: ReplicaSetSpec
    public var status: ReplicaSetStatus?

    public init(metadata: ObjectMeta, spec: ReplicaSetSpec, status: ReplicaSetStatus? = nil) {
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    public func selectableField(_ name: String) -> String? {
        name == "status.replicas" ? String(status?.replicas ?? 0) : nil
    }

    /// apps/v1 defaults `replicas` to 1.
    public mutating func normalizeForStorage() {
        if spec.replicas == nil { spec.replicas = 1 }
    }
}

public struct ReplicaSetSpec: Codable, Sendable, Hashable {
    public var replicas: Int32?
    public var minReadySeconds: Int32?
    public var selector: LabelSelector?
    public var template: PodTemplateSpec?

    public init(replicas: Int32? = nil, selector: LabelSelector?, template: PodTemplateSpec?, minReadySeconds: Int32? = nil) {
        self.replicas = replicas
        self.selector = selector
        self.template = template
        self.minReadySeconds = minReadySeconds
    }
}

public struct ReplicaSetStatus: Codable, Sendable, Hashable {
    public var replicas: Int32
    public var fullyLabeledReplicas: Int32?
    public var readyReplicas: Int32?
    public var availableReplicas: Int32?
    public var observedGeneration: Int64?

    public init(replicas: Int32, readyReplicas: Int32? = nil, availableReplicas: Int32? = nil,
                observedGeneration: Int64? = nil) {
        self.replicas = replicas
        self.readyReplicas = readyReplicas
        self.availableReplicas = availableReplicas
        self.observedGeneration = observedGeneration
    }
}

// MARK: - RBAC (rbac.authorization.k8s.io/v1)

public struct PolicyRule: Codable, Sendable, Hashable {
    public var verbs: [String]
    public var apiGroups: [String]?
    public var resources: [String]?
    public var resourceNames: [String]?
    public var nonResourceURLs: [String]?

    public init(verbs: [String], apiGroups: [String]? = nil, resources: [String]? = nil,
                resourceNames: [String]? = nil, nonResourceURLs: [String]? = nil) {
        self.verbs = verbs
        self.apiGroups = apiGroups
        self.resources = resources
        self.resourceNames = resourceNames
        self.nonResourceURLs = nonResourceURLs
    }

    // Go's `verbs` has no omitempty: an empty list is written as null, and null reads back as empty.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        verbs = try container.decodeIfPresent([String].self, forKey: .verbs) ?? []
        apiGroups = try container.decodeIfPresent([String].self, forKey: .apiGroups)
        resources = try container.decodeIfPresent([String].self, forKey: .resources)
        resourceNames = try container.decodeIfPresent([String].self, forKey: .resourceNames)
        nonResourceURLs = try container.decodeIfPresent([String].self, forKey: .nonResourceURLs)
    }
}

public struct Role: KubeObject {
    public static let apiVersion = "rbac.authorization.k8s.io/v1"
    public static let kind = "Role"
    public static let storage = ResourceKind.roles
    public static let resourceName = "roles"

    public var apiVersion: String = Role.apiVersion
    public var kind: String = Role.kind
    public var metadata: ObjectMeta
    public var rules: [PolicyRule]?

    public init(metadata: ObjectMeta, rules: [PolicyRule]? = nil) {
        self.metadata = metadata
        self.rules = rules
    }
}

public struct ClusterRole: KubeObject {
    public static let apiVersion = "rbac.authorization.k8s.io/v1"
    public static let kind = "ClusterRole"
    public static let storage = ResourceKind.clusterRoles
    public static let resourceName = "clusterroles"

    public var apiVersion: String = ClusterRole.apiVersion
    public var kind: String = ClusterRole.kind
    public var metadata: ObjectMeta
    public var rules: [PolicyRule]?
    public var aggregationRule: AggregationRule?

    public init(metadata: ObjectMeta, rules: [PolicyRule]? = nil, aggregationRule: AggregationRule? = nil) {
        self.metadata = metadata
        self.rules = rules
        self.aggregationRule = aggregationRule
    }
}

public struct AggregationRule: Codable, Sendable, Hashable {
    public var clusterRoleSelectors: [LabelSelector]?
    public init(clusterRoleSelectors: [LabelSelector]? = nil) { self.clusterRoleSelectors = clusterRoleSelectors }
}

public struct Subject: Codable, Sendable, Hashable {
    /// `User`, `Group` or `ServiceAccount`.
    public var kind: String
    public var apiGroup: String?
    public var name: String
    public var namespace: String?

    public init(kind: String, name: String, namespace: String? = nil, apiGroup: String? = nil) {
        self.kind = kind
        self.name = name
        self.namespace = namespace
        self.apiGroup = apiGroup
    }
}

public struct RoleRef: Codable, Sendable, Hashable {
    public var apiGroup: String
    public var kind: String
    public var name: String

    public init(kind: String, name: String, apiGroup: String = "rbac.authorization.k8s.io") {
        self.apiGroup = apiGroup
        self.kind = kind
        self.name = name
    }
}

public struct RoleBinding: KubeObject {
    public static let apiVersion = "rbac.authorization.k8s.io/v1"
    public static let kind = "RoleBinding"
    public static let storage = ResourceKind.roleBindings
    public static let resourceName = "rolebindings"

    public var apiVersion: String = RoleBinding.apiVersion
    public var kind: String = RoleBinding.kind
    public var metadata: ObjectMeta
    public var subjects: [Subject]?
    public var roleRef: RoleRef

    public init(metadata: ObjectMeta, subjects: [Subject]? = nil, roleRef: RoleRef) {
        self.metadata = metadata
        self.subjects = subjects
        self.roleRef = roleRef
    }
}

public struct ClusterRoleBinding: KubeObject {
    public static let apiVersion = "rbac.authorization.k8s.io/v1"
    public static let kind = "ClusterRoleBinding"
    public static let storage = ResourceKind.clusterRoleBindings
    public static let resourceName = "clusterrolebindings"

    public var apiVersion: String = ClusterRoleBinding.apiVersion
    public var kind: String = ClusterRoleBinding.kind
    public var metadata: ObjectMeta
    public var subjects: [Subject]?
    public var roleRef: RoleRef

    public init(metadata: ObjectMeta, subjects: [Subject]? = nil, roleRef: RoleRef) {
        self.metadata = metadata
        self.subjects = subjects
        self.roleRef = roleRef
    }
}

// MARK: - Lease (coordination.k8s.io/v1)

/// Node heartbeats (namespace `kube-node-lease`, one per node) and leader election locks.
public struct Lease: KubeObject {
    public static let apiVersion = "coordination.k8s.io/v1"
    public static let kind = "Lease"
    public static let storage = ResourceKind.leases
    public static let resourceName = "leases"

    public var apiVersion: String = Lease.apiVersion
    public var kind: String = Lease.kind
    public var metadata: ObjectMeta
    public var spec: LeaseSpec?

    public init(metadata: ObjectMeta, spec: LeaseSpec? = nil) {
        self.metadata = metadata
        self.spec = spec
    }
}

public struct LeaseSpec: Codable, Sendable, Hashable {
    public var holderIdentity: String?
    public var leaseDurationSeconds: Int32?
    /// `metav1.MicroTime`: RFC 3339 with microseconds (`2024-05-01T12:00:00.000000Z`).
    public var acquireTime: String?
    public var renewTime: String?
    public var leaseTransitions: Int32?

    public init(holderIdentity: String? = nil, leaseDurationSeconds: Int32? = nil, acquireTime: String? = nil,
                renewTime: String? = nil, leaseTransitions: Int32? = nil) {
        self.holderIdentity = holderIdentity
        self.leaseDurationSeconds = leaseDurationSeconds
        self.acquireTime = acquireTime
        self.renewTime = renewTime
        self.leaseTransitions = leaseTransitions
    }
}
