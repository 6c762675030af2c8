import Foundation

// Core (v1) types. Fields follow Kubernetes' JSON names; optional fields are omitted when nil (Go's omitempty).
// Only what a small control plane needs is modelled: anything else in stored JSON is preserved by the registry.

// MARK: - Namespace

public struct Namespace: KubeObject {
    public static let apiVersion = "v1"
    public static let kind = "Namespace"
    public static let storage = ResourceKind.namespaces
    public static let resourceName = "namespaces"
    public static let hasStatusSubresource = true
    public static let selectableFields = ["status.phase"]

    public var apiVersion: String = Namespace.apiVersion
    public var kind: String = Namespace.kind
    public var metadata: ObjectMeta
    public var spec: NamespaceSpec?
    public var status: NamespaceStatus?

    public init(metadata: ObjectMeta, spec: NamespaceSpec? = nil, status: NamespaceStatus? = nil) {
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    public func selectableField(_ name: String) -> String? { name == "status.phase" ? status?.phase : nil }
}

public struct NamespaceSpec: Codable, Sendable, Hashable {
    public var finalizers: [String]?
    public init(finalizers: [String]? = nil) { self.finalizers = finalizers }
}

public struct NamespaceStatus: Codable, Sendable, Hashable {
    /// `Active` or `Terminating`.
    public var phase: String?
    public init(phase: String? = nil) { self.phase = phase }
}

// MARK: - Node

public struct Node: KubeObject {
    public static let apiVersion = "v1"
    public static let kind = "Node"
    public static let storage = ResourceKind.nodes
    public static let resourceName = "nodes"
    public static let hasStatusSubresource = true
    public static let selectableFields = ["spec.unschedulable"]

    public var apiVersion: String = Node.apiVersion
    public var kind: String = Node.kind
    public var metadata: ObjectMeta
    public var spec: NodeSpec?
    public var status: NodeStatus?

    public init(metadata: ObjectMeta, spec: NodeSpec? = nil, status: NodeStatus? = nil) {
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    public func selectableField(_ name: String) -> String? {
        name == "spec.unschedulable" ? String(spec?.unschedulable ?? false) : nil
    }

    /// True when the node's Ready condition is "True".
    public var isReady: Bool { status?.conditions?.first { $0.type == "Ready" }?.status == "True" }
}

public struct NodeSpec: Codable, Sendable, Hashable {
    public var podCIDR: String?
    public var providerID: String?
    public var unschedulable: Bool?
    public var taints: [Taint]?

    public init(podCIDR: String? = nil, providerID: String? = nil, unschedulable: Bool? = nil, taints: [Taint]? = nil) {
        self.podCIDR = podCIDR
        self.providerID = providerID
        self.unschedulable = unschedulable
        self.taints = taints
    }
}

public struct Taint: Codable, Sendable, Hashable {
    public var key: String
    public var value: String?
    /// `NoSchedule`, `PreferNoSchedule`, `NoExecute`.
    public var effect: String
    public var timeAdded: String?

    public init(key: String, value: String? = nil, effect: String, timeAdded: String? = nil) {
        self.key = key
        self.value = value
        self.effect = effect
        self.timeAdded = timeAdded
    }
}

public struct NodeStatus: Codable, Sendable, Hashable {
    public var capacity: [String: Quantity]?
    public var allocatable: [String: Quantity]?
    public var conditions: [NodeCondition]?
    public var addresses: [NodeAddress]?

    public init(capacity: [String: Quantity]? = nil, allocatable: [String: Quantity]? = nil,
                conditions: [NodeCondition]? = nil, addresses: [NodeAddress]? = nil) {
        self.capacity = capacity
        self.allocatable = allocatable
        self.conditions = conditions
        self.addresses = addresses
    }
}

public struct NodeCondition: Codable, Sendable, Hashable {
    /// `Ready`, `MemoryPressure`, `DiskPressure`, `PIDPressure`, `NetworkUnavailable`.
    public var type: String
    /// `True`, `False`, `Unknown`.
    public var status: String
    public var lastHeartbeatTime: String?
    public var lastTransitionTime: String?
    public var reason: String?
    public var message: String?

    public init(type: String, status: String, lastHeartbeatTime: String? = nil, lastTransitionTime: String? = nil,
                reason: String? = nil, message: String? = nil) {
        self.type = type
        self.status = status
        self.lastHeartbeatTime = lastHeartbeatTime
        self.lastTransitionTime = lastTransitionTime
        self.reason = reason
        self.message = message
    }
}

public struct NodeAddress: Codable, Sendable, Hashable {
    public var type: String
    public var address: String
    public init(type: String, address: String) {
        self.type = type
        self.address = address
    }
}

// MARK: - Pod

public struct Pod: KubeObject {
    public static let apiVersion = "v1"
    public static let kind = "Pod"
    public static let storage = ResourceKind.pods
    public static let resourceName = "pods"
    public static let hasStatusSubresource = true
    public static let selectableFields = ["spec.nodeName", "spec.schedulerName", "spec.serviceAccountName",
                                          "spec.restartPolicy", "status.phase", "status.podIP"]

    public var apiVersion: String = Pod.apiVersion
    public var kind: String = Pod.kind
    public var metadata: ObjectMeta
    public var spec: PodSpec
    public var status: PodStatus?

    public init(metadata: ObjectMeta, spec: PodSpec, status: PodStatus? = nil) {
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    public func selectableField(_ name: String) -> String? {
        switch name {
        case "spec.nodeName": return spec.nodeName
        case "spec.schedulerName": return spec.schedulerName
        case "spec.serviceAccountName": return spec.serviceAccountName
        case "spec.restartPolicy": return spec.restartPolicy
        case "status.phase": return status?.phase
        case "status.podIP": return status?.podIP
        default: return nil
        }
    }
}

public struct PodSpec: Codable, Sendable, Hashable {
    public var containers: [Container]
    public var initContainers: [Container]?
    public var restartPolicy: String?
    public var terminationGracePeriodSeconds: Int64?
    public var nodeSelector: [String: String]?
    public var serviceAccountName: String?
    /// Set by the scheduler (through a binding) once the pod is placed.
    public var nodeName: String?
    public var affinity: Affinity?
    public var tolerations: [Toleration]?
    public var schedulerName: String?
    public var priority: Int32?

    public init(containers: [Container], nodeName: String? = nil, nodeSelector: [String: String]? = nil,
                affinity: Affinity? = nil, tolerations: [Toleration]? = nil, restartPolicy: String? = nil,
                serviceAccountName: String? = nil, schedulerName: String? = nil) {
        self.containers = containers
        self.nodeName = nodeName
        self.nodeSelector = nodeSelector
        self.affinity = affinity
        self.tolerations = tolerations
        self.restartPolicy = restartPolicy
        self.serviceAccountName = serviceAccountName
        self.schedulerName = schedulerName
    }
}

public struct Container: Codable, Sendable, Hashable {
    public var name: String
    public var image: String?
    public var command: [String]?
    public var args: [String]?
    public var env: [EnvVar]?
    public var ports: [ContainerPort]?
    public var resources: ResourceRequirements?
    public var imagePullPolicy: String?

    public init(name: String, image: String?, command: [String]? = nil, args: [String]? = nil, env: [EnvVar]? = nil,
                ports: [ContainerPort]? = nil, resources: ResourceRequirements? = nil) {
        self.name = name
        self.image = image
        self.command = command
        self.args = args
        self.env = env
        self.ports = ports
        self.resources = resources
    }
}

public struct EnvVar: Codable, Sendable, Hashable {
    public var name: String
    public var value: String?
    public init(name: String, value: String? = nil) {
        self.name = name
        self.value = value
    }
}

public struct ContainerPort: Codable, Sendable, Hashable {
    public var name: String?
    public var containerPort: Int32
    public var `protocol`: String?
    public init(name: String? = nil, containerPort: Int32, protocol: String? = nil) {
        self.name = name
        self.containerPort = containerPort
        self.protocol = `protocol`
    }
}

public struct ResourceRequirements: Codable, Sendable, Hashable {
    public var requests: [String: Quantity]?
    public var limits: [String: Quantity]?
    public init(requests: [String: Quantity]? = nil, limits: [String: Quantity]? = nil) {
        self.requests = requests
        self.limits = limits
    }
}

public struct Affinity: Codable, Sendable, Hashable {
    public var nodeAffinity: NodeAffinity?
    public init(nodeAffinity: NodeAffinity? = nil) { self.nodeAffinity = nodeAffinity }
}

public struct NodeAffinity: Codable, Sendable, Hashable {
    public var requiredDuringSchedulingIgnoredDuringExecution: NodeSelector?
    public var preferredDuringSchedulingIgnoredDuringExecution: [PreferredSchedulingTerm]?
    public init(required: NodeSelector? = nil, preferred: [PreferredSchedulingTerm]? = nil) {
        requiredDuringSchedulingIgnoredDuringExecution = required
        preferredDuringSchedulingIgnoredDuringExecution = preferred
    }
}

/// Terms are ORed; the requirements of one term are ANDed.
public struct NodeSelector: Codable, Sendable, Hashable {
    public var nodeSelectorTerms: [NodeSelectorTerm]
    public init(nodeSelectorTerms: [NodeSelectorTerm]) { self.nodeSelectorTerms = nodeSelectorTerms }
}

public struct NodeSelectorTerm: Codable, Sendable, Hashable {
    public var matchExpressions: [NodeSelectorRequirement]?
    public var matchFields: [NodeSelectorRequirement]?
    public init(matchExpressions: [NodeSelectorRequirement]? = nil, matchFields: [NodeSelectorRequirement]? = nil) {
        self.matchExpressions = matchExpressions
        self.matchFields = matchFields
    }
}

public struct NodeSelectorRequirement: Codable, Sendable, Hashable {
    public var key: String
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`.
    public var `operator`: String
    public var values: [String]?
    public init(key: String, operator: String, values: [String]? = nil) {
        self.key = key
        self.operator = `operator`
        self.values = values
    }
}

public struct PreferredSchedulingTerm: Codable, Sendable, Hashable {
    public var weight: Int32
    public var preference: NodeSelectorTerm
    public init(weight: Int32, preference: NodeSelectorTerm) {
        self.weight = weight
        self.preference = preference
    }
}

public struct Toleration: Codable, Sendable, Hashable {
    public var key: String?
    /// `Exists` or `Equal` (the default).
    public var `operator`: String?
    public var value: String?
    public var effect: String?
    public var tolerationSeconds: Int64?
    public init(key: String? = nil, operator: String? = nil, value: String? = nil, effect: String? = nil,
                tolerationSeconds: Int64? = nil) {
        self.key = key
        self.operator = `operator`
        self.value = value
        self.effect = effect
        self.tolerationSeconds = tolerationSeconds
    }
}

public struct PodStatus: Codable, Sendable, Hashable {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    public var phase: String?
    public var conditions: [PodCondition]?
    public var message: String?
    public var reason: String?
    public var hostIP: String?
    public var podIP: String?
    public var startTime: String?

    public init(phase: String? = nil, conditions: [PodCondition]? = nil, hostIP: String? = nil, podIP: String? = nil,
                startTime: String? = nil) {
        self.phase = phase
        self.conditions = conditions
        self.hostIP = hostIP
        self.podIP = podIP
        self.startTime = startTime
    }
}

public struct PodCondition: Codable, Sendable, Hashable {
    /// `PodScheduled`, `Initialized`, `ContainersReady`, `Ready`.
    public var type: String
    public var status: String
    public var lastProbeTime: String?
    public var lastTransitionTime: String?
    public var reason: String?
    public var message: String?
    public init(type: String, status: String, lastTransitionTime: String? = nil, reason: String? = nil,
                message: String? = nil) {
        self.type = type
        self.status = status
        self.lastTransitionTime = lastTransitionTime
        self.reason = reason
        self.message = message
    }
}

/// `PodTemplateSpec`, as embedded in ReplicaSets.
public struct PodTemplateSpec: Codable, Sendable, Hashable {
    public var metadata: ObjectMeta?
    public var spec: PodSpec?
    public init(metadata: ObjectMeta? = nil, spec: PodSpec? = nil) {
        self.metadata = metadata
        self.spec = spec
    }
}

// MARK: - Secret

public struct Secret: KubeObject {
    public static let apiVersion = "v1"
    public static let kind = "Secret"
    public static let storage = ResourceKind.secrets
    public static let resourceName = "secrets"
    public static let selectableFields = ["type"]

    public var apiVersion: String = Secret.apiVersion
    public var kind: String = Secret.kind
    public var metadata: ObjectMeta
    /// Values as bytes; base64 in JSON (JSONEncoder's default for Data, as Go's []byte).
    public var data: [String: Data]?
    /// Write-only convenience: merged into `data` before storing, never stored (as Kubernetes).
    public var stringData: [String: String]?
    /// `Opaque` when unset.
    public var type: String?
    public var immutable: Bool?

    public init(metadata: ObjectMeta, data: [String: Data]? = nil, stringData: [String: String]? = nil,
                type: String? = nil, immutable: Bool? = nil) {
        self.metadata = metadata
        self.data = data
        self.stringData = stringData
        self.type = type
        self.immutable = immutable
    }

    public func selectableField(_ name: String) -> String? { name == "type" ? type : nil }

    public mutating func normalizeForStorage() {
        if type == nil { type = "Opaque" }
        guard let stringData else { return }
        var merged = data ?? [:]
        for (key, value) in stringData { merged[key] = Data(value.utf8) }
        data = merged
        self.stringData = nil
    }
}

// MARK: - ServiceAccount

public struct ServiceAccount: KubeObject {
    public static let apiVersion = "v1"
    public static let kind = "ServiceAccount"
    public static let storage = ResourceKind.serviceAccounts
    public static let resourceName = "serviceaccounts"

    public var apiVersion: String = ServiceAccount.apiVersion
    public var kind: String = ServiceAccount.kind
    public var metadata: ObjectMeta
    public var secrets: [ObjectReference]?
    public var imagePullSecrets: [LocalObjectReference]?
    public var automountServiceAccountToken: Bool?

    public init(metadata: ObjectMeta, secrets: [ObjectReference]? = nil, automountServiceAccountToken: Bool? = nil) {
        self.metadata = metadata
        self.secrets = secrets
        self.automountServiceAccountToken = automountServiceAccountToken
    }
}

public struct ObjectReference: Codable, Sendable, Hashable {
    public var kind: String?
    public var namespace: String?
    public var name: String?
    public var uid: String?
    public var apiVersion: String?
    public var resourceVersion: String?
    public var fieldPath: String?

    public init(kind: String? = nil, namespace: String? = nil, name: String? = nil, uid: String? = nil,
                apiVersion: String? = nil, resourceVersion: String? = nil, fieldPath: String? = nil) {
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.apiVersion = apiVersion
        self.resourceVersion = resourceVersion
        self.fieldPath = fieldPath
    }
}

public struct LocalObjectReference: Codable, Sendable, Hashable {
    public var name: String
    public init(name: String) { self.name = name }
}

// MARK: - Event (core/v1)

public struct Event: KubeObject {
    public static let apiVersion = "v1"
    public static let kind = "Event"
    public static let storage = ResourceKind.events
    public static let resourceName = "events"
    public static let selectableFields = ["involvedObject.kind", "involvedObject.name", "involvedObject.namespace",
                                          "involvedObject.uid", "reason", "type", "source"]

    public var apiVersion: String = Event.apiVersion
    public var kind: String = Event.kind
    public var metadata: ObjectMeta
    public var involvedObject: ObjectReference
    public var reason: String?
    public var message: String?
    public var source: EventSource?
    public var firstTimestamp: String?
    public var lastTimestamp: String?
    public var count: Int32?
    /// `Normal` or `Warning`.
    public var type: String?
    public var reportingComponent: String?
    public var reportingInstance: String?

    public init(metadata: ObjectMeta, involvedObject: ObjectReference, reason: String? = nil, message: String? = nil,
                type: String? = nil, source: EventSource? = nil, count: Int32? = nil,
                firstTimestamp: String? = nil, lastTimestamp: String? = nil) {
        self.metadata = metadata
        self.involvedObject = involvedObject
        self.reason = reason
        self.message = message
        self.type = type
        self.source = source
        self.count = count
        self.firstTimestamp = firstTimestamp
        self.lastTimestamp = lastTimestamp
    }

    public func selectableField(_ name: String) -> String? {
        switch name {
        case "involvedObject.kind": return involvedObject.kind
        case "involvedObject.name": return involvedObject.name
        case "involvedObject.namespace": return involvedObject.namespace
        case "involvedObject.uid": return involvedObject.uid
        case "reason": return reason
        case "type": return type
        case "source": return source?.component
        default: return nil
        }
    }
}

public struct EventSource: Codable, Sendable, Hashable {
    public var component: String?
    public var host: String?
    public init(component: String? = nil, host: String? = nil) {
        self.component = component
        self.host = host
    }
}
