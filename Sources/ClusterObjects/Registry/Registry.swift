import Foundation
import RaftKV

/// What a list returns: the items, the revision they were read at, and where to continue.
public struct ObjectList<Object: KubeObject>: Sendable {
    public var items: [Object]
    /// The store revision the whole list (every page of it) is consistent at.
    public var resourceVersion: String
    /// Pass to the next ``ListOptions/continueToken`` to read the next page; nil on the last page.
    public var continueToken: String?
    /// How many more objects the following pages hold (only without selectors, as Kubernetes).
    public var remainingItemCount: Int64?
}

public struct ListOptions: Sendable {
    /// `app=web,tier!=db,env in (a,b),env notin (c),gpu,!spot`.
    public var labelSelector: String?
    /// `metadata.name=x`, `spec.nodeName=`, `status.phase!=Running`, … (the type's supported labels).
    public var fieldSelector: String?
    /// At most this many items per page (0 = all).
    public var limit: Int64
    /// A token from the previous page.
    public var continueToken: String?
    /// nil or "0": the latest state; "N": the state at revision N (410 Gone when compacted).
    public var resourceVersion: String?

    public init(labelSelector: String? = nil, fieldSelector: String? = nil, limit: Int64 = 0,
                continueToken: String? = nil, resourceVersion: String? = nil) {
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
        self.limit = limit
        self.continueToken = continueToken
        self.resourceVersion = resourceVersion
    }
}

/// Conditions a delete or update requires of the stored object (`metav1.Preconditions`).
public struct Preconditions: Sendable, Hashable {
    public var uid: String?
    public var resourceVersion: String?

    public init(uid: String? = nil, resourceVersion: String? = nil) {
        self.uid = uid
        self.resourceVersion = resourceVersion
    }
}

/// The typed API of one resource, as kube-apiserver's generic registry over its etcd3 storage: every write is
/// one etcd transaction guarded by `mod_revision`, and resourceVersion *is* the key's mod_revision.
///
/// - create: `Txn(mod_revision(k) == 0) then Put` — AlreadyExists otherwise.
/// - update: `Txn(mod_revision(k) == rv) then Put` — Conflict otherwise, with Kubernetes' message.
/// - guaranteedUpdate: read, apply a closure, write as update; on a lost race read again and retry (bounded).
/// - delete: `Txn(mod_revision(k) == read rv) then Delete`, after checking uid/resourceVersion preconditions.
/// - list: paged Range at one revision with Kubernetes' continue tokens; watch: etcd watch from rv+1.
public struct Registry<Object: KubeObject>: Sendable {
    public let store: ObjectStore
    /// Objects are written with a lease of this TTL (Events).
    public var ttlSeconds: Int64?
    /// How many read-modify-write rounds guaranteedUpdate (and delete) try before giving up with Conflict.
    public var maxAttempts = 16

    init(store: ObjectStore, ttlSeconds: Int64?) {
        self.store = store
        self.ttlSeconds = ttlSeconds
    }

    var backend: any RegistryBackend { store.backend }
    var transformer: ValueTransformer { store.encryption.transformer(for: Object.storage) }

    /// The etcd key of an object.
    public func key(_ name: String, namespace: String?) -> String {
        store.keys.key(Object.storage, namespace: Object.storage.isNamespaced ? namespace : nil, name: name)
    }

    // MARK: - Create

    /// Validates, fills uid, creationTimestamp and generation, and writes the object if its key is free.
    public func create(_ object: Object) async throws -> Object {
        var object = object
        if object.metadata.resourceVersion.map({ !$0.isEmpty && $0 != "0" }) ?? false {
            throw ObjectError.badRequest("resourceVersion should not be set on objects to be created")
        }
        if (object.metadata.name ?? "").isEmpty, let prefix = object.metadata.generateName, !prefix.isEmpty {
            object.metadata.name = Self.generateName(prefix)
        }
        object.apiVersion = Object.apiVersion
        object.kind = Object.kind
        object.normalizeForStorage()
        object.metadata.uid = UUID().uuidString.lowercased()
        object.metadata.creationTimestamp = KubeTime.format(store.clock())
        object.metadata.generation = 1
        object.metadata.deletionTimestamp = nil
        object.metadata.deletionGracePeriodSeconds = nil
        object.metadata.resourceVersion = nil
        try validate(object)
        try await store.checkNamespace(for: object)

        let key = Array(key(object.name, namespace: object.namespace).utf8)
        let value = try encode(object, key: key, preserving: nil)
        let lease = try await leaseForWrite()
        let response = try await kvCall {
            try await backend.txn(TxnRequest(
                compare: [Compare(key: key, target: .modRevision(0), result: .equal)],
                success: [.put(PutRequest(key: key, value: value, lease: lease))]))
        }
        guard response.succeeded else { throw ObjectError.alreadyExists(Object.qualifiedResource, object.name) }
        object.metadata.resourceVersion = String(response.revision)
        return object
    }

    /// `names.SimpleNameGenerator`: the prefix and five random characters that avoid vowels and look-alikes.
    static func generateName(_ prefix: String) -> String {
        let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
        let base = prefix.count > 58 ? String(prefix.prefix(58)) : prefix
        return base + String((0..<5).map { _ in alphabet.randomElement()! })
    }

    // MARK: - Get

    public func get(_ name: String, namespace: String? = nil) async throws -> Object {
        guard let found = try await read(name, namespace: namespace) else {
            throw ObjectError.notFound(Object.qualifiedResource, name)
        }
        return found.1
    }

    /// The stored key-value, the object decoded from it, and whether it was written with an older key.
    func read(_ name: String, namespace: String?) async throws -> (KeyValue, Object, Bool)? {
        guard !name.isEmpty else { throw ObjectError.badRequest("resource name may not be empty") }
        let key = Array(key(name, namespace: namespace).utf8)
        let response = try await kvCall { try await backend.range(RangeRequest(key: key)) }
        guard let kv = response.kvs.first else { return nil }
        let (object, stale) = try decode(kv)
        return (kv, object, stale)
    }

    // MARK: - Update

    /// Writes `object` if the stored one still has `object.metadata.resourceVersion`; Conflict otherwise.
    /// Without a resourceVersion the update is unconditional (retried against whatever is stored).
    /// uid, creationTimestamp and deletionTimestamp are kept from the stored object; generation is bumped
    /// when anything but metadata and status changed. An update that changes nothing writes nothing. For types
    /// with a status subresource the stored status is kept (see ``updateStatus(_:)``).
    public func update(_ object: Object) async throws -> Object {
        try await update(object, part: .main)
    }

    /// Kubernetes' status subresource (`PUT …/status`): writes `object.status` over the stored object, keeping
    /// everything else as stored, with the same optimistic concurrency as ``update(_:)``.
    public func updateStatus(_ object: Object) async throws -> Object {
        try await update(object, part: .status)
    }

    /// Reads the object, lets `transform` change it, and writes it back guarded by the revision read; when
    /// another writer got there first, reads again and re-applies `transform` (at most ``maxAttempts`` times).
    /// This is the heart of every controller's read-modify-write: no update is lost. For types with a status
    /// subresource, changes `transform` makes to the status are not written (see ``guaranteedUpdateStatus``).
    public func guaranteedUpdate(_ name: String, namespace: String? = nil, preconditions: Preconditions = Preconditions(),
                                 _ transform: (inout Object) throws -> Void) async throws -> Object {
        try await guaranteedUpdate(name, namespace: namespace, preconditions: preconditions, part: .main, transform)
    }

    /// ``guaranteedUpdate(_:namespace:preconditions:_:)`` of the status subresource: only the status `transform`
    /// sets is written (what a kubelet or a controller's status loop does).
    public func guaranteedUpdateStatus(_ name: String, namespace: String? = nil,
                                       preconditions: Preconditions = Preconditions(),
                                       _ transform: (inout Object) throws -> Void) async throws -> Object {
        try await guaranteedUpdate(name, namespace: namespace, preconditions: preconditions, part: .status, transform)
    }

    /// Which part of an object an update writes.
    enum UpdatedPart {
        /// Everything but the status, for types with a status subresource; everything otherwise.
        case main
        /// Only the status.
        case status
    }

    private func update(_ object: Object, part: UpdatedPart) async throws -> Object {
        try Self.checkSubresource(part)
        let name = object.name
        guard let expected = object.metadata.resourceVersion, !expected.isEmpty else {
            return try await guaranteedUpdate(name, namespace: object.namespace, part: part) { current in
                var replacement = object
                replacement.metadata.resourceVersion = current.metadata.resourceVersion
                current = replacement
            }
        }
        guard let expectedRevision = Int64(expected) else {
            throw ObjectError.badRequest("invalid resource version: \(expected)")
        }
        guard let found = try await read(name, namespace: object.namespace) else {
            throw ObjectError.notFound(Object.qualifiedResource, name)
        }
        let (kv, current, stale) = found
        guard kv.modRevision == expectedRevision,
              let written = try await commit(object, over: kv, current: current, part: part, forceWrite: stale) else {
            throw ObjectError.conflict(Object.qualifiedResource, name)
        }
        return written
    }

    private func guaranteedUpdate(_ name: String, namespace: String?, preconditions: Preconditions = Preconditions(),
                                  part: UpdatedPart, _ transform: (inout Object) throws -> Void) async throws -> Object {
        try Self.checkSubresource(part)
        for _ in 0..<maxAttempts {
            guard let found = try await read(name, namespace: namespace) else {
                throw ObjectError.notFound(Object.qualifiedResource, name)
            }
            let (kv, current, stale) = found
            try check(preconditions, on: current)
            var updated = current
            try transform(&updated)
            updated.metadata.resourceVersion = current.metadata.resourceVersion
            if let written = try await commit(updated, over: kv, current: current, part: part, forceWrite: stale) {
                return written
            }
        }
        throw ObjectError.conflict(Object.qualifiedResource, name)
    }

    private static func checkSubresource(_ part: UpdatedPart) throws {
        if part == .status && !Object.hasStatusSubresource {
            throw ObjectError.notFound(Object.qualifiedResource + "/status", "")
        }
    }

    /// The object an update of `part` writes: the proposed one with the stored status (main), or the stored one
    /// with the proposed status (status). Done on the JSON form, which every type has.
    static func combine(_ proposed: Object, over current: Object, part: UpdatedPart) throws -> Object {
        guard Object.hasStatusSubresource else { return proposed }
        let proposedJSON = try JSONValue(encoding: proposed)
        let currentJSON = try JSONValue(encoding: current)
        var combined: JSONValue
        switch part {
        case .main:
            combined = proposedJSON
            combined["status"] = currentJSON["status"]
        case .status:
            combined = currentJSON
            combined["status"] = proposedJSON["status"]
            combined["metadata"]?["resourceVersion"] = proposedJSON["metadata"]?["resourceVersion"]
        }
        return try combined.decode(as: Object.self)
    }

    /// Writes `proposed` over the stored `kv` (decoded as `current`) if the key is still at kv's revision.
    /// Returns nil when it is not (the caller reports Conflict or retries).
    func commit(_ proposed: Object, over kv: KeyValue, current: Object, part: UpdatedPart = .main,
                forceWrite: Bool = false) async throws -> Object? {
        var object = try Self.combine(proposed, over: current, part: part)
        let name = current.name
        if object.name != name || (Object.storage.isNamespaced && object.namespace != current.namespace) {
            throw ObjectError.badRequest("the name of the object (\(object.name)) does not match the name on the URL (\(name))")
        }
        if let uid = object.metadata.uid, !uid.isEmpty, uid != current.metadata.uid {
            throw ObjectError.invalid(Object.qualifiedKind, name, [.invalid("metadata.uid", uid, "field is immutable")])
        }
        object.apiVersion = Object.apiVersion
        object.kind = Object.kind
        object.normalizeForStorage()
        object.metadata.uid = current.metadata.uid
        object.metadata.creationTimestamp = current.metadata.creationTimestamp
        object.metadata.deletionTimestamp = current.metadata.deletionTimestamp
        object.metadata.deletionGracePeriodSeconds = current.metadata.deletionGracePeriodSeconds
        object.metadata.generation = current.metadata.generation
        if try Self.specDiffers(object, current) {
            object.metadata.generation = (current.metadata.generation ?? 0) + 1
        }
        try validate(object)

        // A terminating object whose last finalizer was removed is deleted (as the API server does).
        if object.metadata.deletionTimestamp != nil && (object.metadata.finalizers ?? []).isEmpty {
            let response = try await kvCall {
                try await backend.txn(TxnRequest(
                    compare: [Compare(key: kv.key, target: .modRevision(kv.modRevision), result: .equal)],
                    success: [.deleteRange(DeleteRangeRequest(key: kv.key))]))
            }
            guard response.succeeded else { return nil }
            object.metadata.resourceVersion = String(response.revision)
            return object
        }

        let plain = try plaintext(of: object, kv: kv)
        // Nothing changed: no write, no new revision, no watch event (GuaranteedUpdate's short cut) — unless
        // the stored bytes used an older encryption key and should be rewritten.
        if !forceWrite, try transformer.fromStorage(kv.value, key: kv.key).plaintext == plain {
            object.metadata.resourceVersion = String(kv.modRevision)
            return object
        }
        let value = try transformer.toStorage(plain, key: kv.key)
        let lease = try await leaseForWrite()
        let response = try await kvCall {
            try await backend.txn(TxnRequest(
                compare: [Compare(key: kv.key, target: .modRevision(kv.modRevision), result: .equal)],
                success: [.put(PutRequest(key: kv.key, value: value, lease: lease))]))
        }
        guard response.succeeded else { return nil }
        object.metadata.resourceVersion = String(response.revision)
        return object
    }

    /// True when anything outside metadata and status differs (what Kubernetes' strategies compare to bump
    /// metadata.generation).
    static func specDiffers(_ a: Object, _ b: Object) throws -> Bool {
        func spec(_ object: Object) throws -> JSONValue {
            var json = try JSONValue(encoding: object)
            json["metadata"] = nil
            json["status"] = nil
            return json
        }
        return try spec(a) != spec(b)
    }

    // MARK: - Delete

    /// Deletes the object if `preconditions` hold, returning it (its resourceVersion is the deletion's revision).
    /// An object with finalizers is only marked: deletionTimestamp is set and it stays until the last finalizer
    /// is removed by an update.
    @discardableResult
    public func delete(_ name: String, namespace: String? = nil, preconditions: Preconditions = Preconditions()) async throws -> Object {
        for _ in 0..<maxAttempts {
            guard let found = try await read(name, namespace: namespace) else {
                throw ObjectError.notFound(Object.qualifiedResource, name)
            }
            let (kv, current, _) = found
            try check(preconditions, on: current)
            if !(current.metadata.finalizers ?? []).isEmpty {
                if current.metadata.deletionTimestamp != nil { return current }
                var marked = current
                marked.metadata.deletionTimestamp = KubeTime.format(store.clock())
                marked.metadata.deletionGracePeriodSeconds = 0
                marked.metadata.generation = (current.metadata.generation ?? 0) + 1
                let value = try encode(marked, key: kv.key, preserving: kv)
                let response = try await kvCall {
                    try await backend.txn(TxnRequest(
                        compare: [Compare(key: kv.key, target: .modRevision(kv.modRevision), result: .equal)],
                        success: [.put(PutRequest(key: kv.key, value: value, lease: kv.lease))]))
                }
                if response.succeeded {
                    marked.metadata.resourceVersion = String(response.revision)
                    return marked
                }
                continue
            }
            let response = try await kvCall {
                try await backend.txn(TxnRequest(
                    compare: [Compare(key: kv.key, target: .modRevision(kv.modRevision), result: .equal)],
                    success: [.deleteRange(DeleteRangeRequest(key: kv.key))]))
            }
            if response.succeeded {
                var deleted = current
                deleted.metadata.resourceVersion = String(response.revision)
                return deleted
            }
        }
        throw ObjectError.conflict(Object.qualifiedResource, name)
    }

    func check(_ preconditions: Preconditions, on object: Object) throws {
        if let uid = preconditions.uid, uid != (object.metadata.uid ?? "") {
            throw ObjectError.conflict(Object.qualifiedResource, object.name,
                                       "Precondition failed: UID in precondition: \(uid), UID in object meta: \(object.metadata.uid ?? "")")
        }
        if let version = preconditions.resourceVersion, version != (object.metadata.resourceVersion ?? "") {
            throw ObjectError.conflict(Object.qualifiedResource, object.name,
                                       "Precondition failed: ResourceVersion in precondition: \(version), ResourceVersion in object meta: \(object.metadata.resourceVersion ?? "")")
        }
    }

    // MARK: - Rotation

    /// Rewrites every object whose stored form is stale (written with an older encryption key, or in plaintext
    /// where a key is now configured) — the storage migration that completes a key rotation. Returns how many
    /// objects were rewritten.
    @discardableResult
    public func rewriteStale(namespace: String? = nil) async throws -> Int {
        let prefix = Array(store.keys.listPrefix(Object.storage, namespace: namespace).utf8)
        let response = try await kvCall {
            try await backend.range(RangeRequest(key: prefix, rangeEnd: KeyRange.prefixEnd(prefix)))
        }
        var rewritten = 0
        for kv in response.kvs {
            let (object, stale) = try decode(kv)
            guard stale else { continue }
            _ = try await guaranteedUpdate(object.name, namespace: object.namespace) { _ in }
            rewritten += 1
        }
        return rewritten
    }

    // MARK: - Encoding

    func validate(_ object: Object) throws {
        let errors = ObjectValidation.validate(object)
        if !errors.isEmpty { throw ObjectError.invalid(Object.qualifiedKind, object.name, errors) }
    }

    /// The JSON Kubernetes would store (no resourceVersion), with the unknown fields of `existing` merged in.
    func plaintext(of object: Object, kv existing: KeyValue?) throws -> [UInt8] {
        var json = try JSONValue(encoding: object)
        if let existing {
            let stored = try JSONValue(parsing: transformer.fromStorage(existing.value, key: existing.key).plaintext)
            let known = try JSONValue(encoding: try stored.decode(as: Object.self))
            json = json.merging(unknown: JSONValue.unknownParts(of: stored, roundTrip: known))
        }
        json["metadata"]?["resourceVersion"] = nil
        // Go's json.Encoder ends each value with a newline; kube-apiserver's stored values do too.
        return json.serialized() + [UInt8(ascii: "\n")]
    }

    func encode(_ object: Object, key: [UInt8], preserving existing: KeyValue?) throws -> [UInt8] {
        try transformer.toStorage(plaintext(of: object, kv: existing), key: key)
    }

    /// The object stored in `kv`, with resourceVersion = its mod_revision; `stale` as the transformer says.
    func decode(_ kv: KeyValue) throws -> (Object, Bool) {
        let (plaintext, stale) = try transformer.fromStorage(kv.value, key: kv.key)
        var object: Object
        do {
            object = try JSONDecoder().decode(Object.self, from: Data(plaintext))
        } catch {
            throw ObjectError.internalError("unable to decode \(String(decoding: kv.key, as: UTF8.self)): \(error)")
        }
        object.metadata.resourceVersion = String(kv.modRevision)
        return (object, stale)
    }

    func leaseForWrite() async throws -> LeaseID {
        guard let ttlSeconds else { return 0 }
        return try await store.leaseReuse.lease(ttlSeconds: ttlSeconds, backend: backend)
    }

    /// Runs a backend call, turning the store's refusals into API errors where Kubernetes has one.
    func kvCall<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as KVError {
            switch error {
            case .timeout, .noLeader, .leaderChanged:
                throw ObjectError(reason: .timeout, code: 504, message: "Timeout: request did not complete within requested timeout - \(error)")
            case .requestTooLarge:
                throw ObjectError(reason: .badRequest, code: 413, message: "Request entity too large: limit is 3145728")
            default:
                throw error
            }
        }
    }
}
