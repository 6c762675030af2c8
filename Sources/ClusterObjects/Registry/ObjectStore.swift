import Foundation
import RaftKV
import Synchronization

/// The typed keyspace: one backend, the key layout, encryption at rest and the clock, shared by a
/// ``Registry`` per object type.
///
/// ```swift
/// let objects = ObjectStore(backend: EmbeddedBackend(store: store))
/// try await objects.namespaces.create(Namespace(metadata: ObjectMeta(name: "default")))
/// let pod = try await objects.pods.create(Pod(metadata: ObjectMeta(name: "web-0", namespace: "default"),
///                                             spec: PodSpec(containers: [Container(name: "web", image: "nginx")])))
/// ```
public final class ObjectStore: Sendable {
    public let backend: any RegistryBackend
    public let keys: RegistryKeys
    public let encryption: EncryptionConfiguration
    /// The time written into creationTimestamp and deletionTimestamp.
    public let clock: @Sendable () -> Date
    /// Event lifetime (kube-apiserver's `--event-ttl`, one hour by default): events are written with a lease.
    public let eventTTLSeconds: Int64
    let leaseReuse: LeaseReuse

    public init(backend: any RegistryBackend, keys: RegistryKeys = RegistryKeys(),
                encryption: EncryptionConfiguration = .identity, eventTTLSeconds: Int64 = 3600,
                clock: @escaping @Sendable () -> Date = { Date() }) {
        self.backend = backend
        self.keys = keys
        self.encryption = encryption
        self.eventTTLSeconds = eventTTLSeconds
        self.clock = clock
        leaseReuse = LeaseReuse()
    }

    /// The registry of one type. Events get the store's TTL.
    public func registry<Object: KubeObject>(_ type: Object.Type) -> Registry<Object> {
        Registry(store: self, ttlSeconds: ObjectIdentifier(type) == ObjectIdentifier(Event.self) ? eventTTLSeconds : nil)
    }

    public var namespaces: Registry<Namespace> { registry(Namespace.self) }
    public var nodes: Registry<Node> { registry(Node.self) }
    public var pods: Registry<Pod> { registry(Pod.self) }
    public var replicaSets: Registry<ReplicaSet> { registry(ReplicaSet.self) }
    public var secrets: Registry<Secret> { registry(Secret.self) }
    public var serviceAccounts: Registry<ServiceAccount> { registry(ServiceAccount.self) }
    public var roles: Registry<Role> { registry(Role.self) }
    public var clusterRoles: Registry<ClusterRole> { registry(ClusterRole.self) }
    public var roleBindings: Registry<RoleBinding> { registry(RoleBinding.self) }
    public var clusterRoleBindings: Registry<ClusterRoleBinding> { registry(ClusterRoleBinding.self) }
    public var leases: Registry<Lease> { registry(Lease.self) }
    public var events: Registry<Event> { registry(Event.self) }

    /// kube-apiserver's NamespaceLifecycle admission: namespaced objects are created only in a namespace that
    /// exists and is not being deleted.
    func checkNamespace<Object: KubeObject>(for object: Object) async throws {
        guard Object.storage.isNamespaced, let namespace = object.metadata.namespace, !namespace.isEmpty else { return }
        let namespaceObject: Namespace
        do {
            namespaceObject = try await namespaces.get(namespace)
        } catch let error as ObjectError where error.isNotFound {
            throw ObjectError.notFound(Namespace.qualifiedResource, namespace)
        }
        if namespaceObject.metadata.deletionTimestamp != nil || namespaceObject.status?.phase == "Terminating" {
            throw ObjectError.forbidden("\(Object.qualifiedResource) \"\(object.name)\" is forbidden: unable to create new content in namespace \(namespace) because it is being terminated")
        }
    }
}

/// kube-apiserver's etcd lease manager: objects with a TTL share a lease while it outlives them, so a burst of
/// events costs one LeaseGrant, not one per event. A lease is granted for the TTL plus a reuse window (5% of the
/// TTL, at most 60 s), and reused while it still outlives a new object's TTL.
final class LeaseReuse: Sendable {
    private struct Current {
        var id: LeaseID
        var expires: ContinuousClock.Instant
    }

    private let current = Mutex<Current?>(nil)

    func lease(ttlSeconds: Int64, backend: any RegistryBackend) async throws -> LeaseID {
        let now = ContinuousClock.now
        if let reusable = current.withLock({ $0 }), reusable.expires > now + .seconds(ttlSeconds) {
            return reusable.id
        }
        let reuse = min(ttlSeconds / 20, 60)
        let id = try await backend.grantLease(ttlSeconds: ttlSeconds + reuse)
        current.withLock { $0 = Current(id: id, expires: now + .seconds(ttlSeconds + reuse)) }
        return id
    }
}
