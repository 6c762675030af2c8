import RaftKV

/// The registry over an in-process `KVStore` (whose `run()` the caller runs).
public struct EmbeddedBackend: RegistryBackend {
    public let store: KVStore

    public init(store: KVStore) { self.store = store }

    public func range(_ request: RangeRequest) async throws -> RangeResponse {
        try await store.range(request)
    }

    public func txn(_ request: TxnRequest) async throws -> TxnResponse {
        try await store.txn(request)
    }

    public func watch(_ request: WatchCreateRequest) async throws -> any BackendWatch {
        let stream = store.watch()
        // The created (or refused) response is also queued on the stream: the reader sees it first.
        await stream.create(request)
        return EmbeddedWatch(stream: stream)
    }

    public func grantLease(ttlSeconds: Int64) async throws -> LeaseID {
        try await store.grant(ttlSeconds: ttlSeconds).id
    }

    public func compact(revision: Revision) async throws {
        try await store.compact(revision: revision)
    }

    /// The store belongs to the caller, who closes it.
    public func close() async {}
}

struct EmbeddedWatch: BackendWatch {
    let stream: WatchStream

    func next() async throws -> WatchResponse? {
        guard let response = await stream.next() else { return nil }
        return response
    }

    func requestProgress() async { await stream.requestProgress() }

    func close() { stream.close() }
}
