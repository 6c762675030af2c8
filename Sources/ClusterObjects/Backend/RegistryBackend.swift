import RaftKV

/// The few etcd operations the registry needs, in RaftKV's request and response types (which mirror etcd's
/// protobuf messages). Two implementations: ``EmbeddedBackend`` over an in-process `KVStore`, and
/// ``RemoteBackend`` over etcd's gRPC API (a `kvserver` cluster, or etcd itself).
///
/// Errors: store refusals are `KVError` values (the registry turns `compacted` into 410 Gone, for instance),
/// whichever implementation raised them.
public protocol RegistryBackend: Sendable {
    /// etcd's Range (linearizable).
    func range(_ request: RangeRequest) async throws -> RangeResponse
    /// etcd's Txn: the registry's writes are all `mod_revision` compares with a put, delete or range.
    func txn(_ request: TxnRequest) async throws -> TxnResponse
    /// Opens a watch stream with one watcher. Its first response is `created` (or `canceled` with a reason, or
    /// with `compactRevision` when `startRevision` is compacted).
    func watch(_ request: WatchCreateRequest) async throws -> any BackendWatch
    /// etcd's LeaseGrant; returns the lease ID.
    func grantLease(ttlSeconds: Int64) async throws -> LeaseID
    /// etcd's Compact (what kube-apiserver runs every five minutes); tests use it to expire history.
    func compact(revision: Revision) async throws
    /// Releases connections; the backend is unusable afterwards.
    func close() async
}

/// One watcher's responses, in order. Read it from one task at a time.
public protocol BackendWatch: Sendable {
    /// The next response, nil once the stream ended (closed, or the watcher was canceled and reported so).
    func next() async throws -> WatchResponse?
    /// Asks for a progress response (no events, a header revision no later event undercuts).
    func requestProgress() async
    func close()
}

extension RegistryBackend {
    /// The store's current revision (a one-key range's header).
    public func currentRevision() async throws -> Revision {
        try await range(RangeRequest(key: Array("/registry/".utf8), limit: 1, countOnly: true)).revision
    }
}
