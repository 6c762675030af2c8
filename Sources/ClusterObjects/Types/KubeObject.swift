/// A Kubernetes object type the registry stores: its API identity, where it lives in etcd, and the hooks the
/// registry calls (field selectors, validation, defaulting before storage).
public protocol KubeObject: Codable, Sendable, Hashable {
    /// `v1`, `apps/v1`, `rbac.authorization.k8s.io/v1`, …
    static var apiVersion: String { get }
    static var kind: String { get }
    /// Where objects of this type are stored (`/registry/<storageName>/…`).
    static var storage: ResourceKind { get }
    /// The plural resource name of the API (nodes, not their storage name "minions"); errors name it.
    static var resourceName: String { get }
    /// Field selector labels beyond `metadata.name` and `metadata.namespace` (as the API's field label conversion).
    static var selectableFields: [String] { get }
    /// True for types with a `status` subresource (Pod, Node, Namespace, ReplicaSet): updates of the object keep
    /// the stored status, and only ``Registry/updateStatus(_:)`` changes it — as kube-apiserver's strategies do,
    /// so that a controller writing spec and a kubelet writing status never undo each other's work.
    static var hasStatusSubresource: Bool { get }

    var apiVersion: String { get set }
    var kind: String { get set }
    var metadata: ObjectMeta { get set }

    /// The value of a field selector label from ``selectableFields`` ("" when unset, as Kubernetes).
    func selectableField(_ name: String) -> String?
    /// Type-specific validation (ObjectMeta is checked by the registry). Errors name the field as Kubernetes.
    func validate() -> [FieldError]
    /// Kubernetes' PrepareForCreate/Update normalization before storing (a Secret folds `stringData` into `data`).
    mutating func normalizeForStorage()
}

extension KubeObject {
    public static var selectableFields: [String] { [] }
    public static var hasStatusSubresource: Bool { false }
    public func selectableField(_ name: String) -> String? { nil }
    public func validate() -> [FieldError] { [] }
    public mutating func normalizeForStorage() {}

    /// The API group ("" for the core group).
    public static var group: String {
        guard let slash = apiVersion.firstIndex(of: "/") else { return "" }
        return String(apiVersion[..<slash])
    }

    /// `pods`, `replicasets.apps`: how Kubernetes names the resource in NotFound, AlreadyExists and Conflict.
    public static var qualifiedResource: String { group.isEmpty ? resourceName : "\(resourceName).\(group)" }
    /// `Pod`, `ReplicaSet.apps`: how Kubernetes names the kind in Invalid errors.
    public static var qualifiedKind: String { group.isEmpty ? kind : "\(kind).\(group)" }

    public var name: String { metadata.name ?? "" }
    public var namespace: String? { metadata.namespace }
    public var resourceVersion: String? { metadata.resourceVersion }

    /// The value for any supported field selector label.
    func fieldValue(_ label: String) -> String? {
        switch label {
        case "metadata.name": return metadata.name ?? ""
        case "metadata.namespace": return metadata.namespace ?? ""
        default: return Self.selectableFields.contains(label) ? (selectableField(label) ?? "") : nil
        }
    }
}
