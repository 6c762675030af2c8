import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import RaftKV
import Synchronization

/// The registry over etcd's v3 gRPC API: a `kvserver` member (followers forward writes to the leader) or etcd.
///
/// One HTTP/2 connection carries every call; each watch is its own bidirectional Watch RPC on it. Errors the
/// server sends with etcd's messages come back as the matching `KVError` (so compaction is recognised as on
/// the embedded store); transport failures are thrown as gRPC's `RPCError`.
public final class RemoteBackend: RegistryBackend {
    let client: GRPCClient<HTTP2ClientTransport.Posix>
    let kv: Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>
    let watchClient: Etcdserverpb_Watch.Client<HTTP2ClientTransport.Posix>
    let lease: Etcdserverpb_Lease.Client<HTTP2ClientTransport.Posix>
    private let connections: Task<Void, Never>
    /// Per-call deadline for unary calls (kvserver itself answers within its 7 s request timeout).
    public let timeout: Duration

    /// Connects to `host:port` (the connection is made lazily, on the first call, and re-made if it drops).
    public init(host: String, port: Int, timeout: Duration = .seconds(15)) throws {
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: host, port: port),
            transportSecurity: .plaintext,
            config: .defaults { config in
                // gRPC's default reconnect backoff grows to minutes; a restarted member is back in a second.
                config.backoff = .init(initial: .milliseconds(50), max: .seconds(1), multiplier: 2, jitter: 0.2)
            })
        let client = GRPCClient(transport: transport)
        self.client = client
        self.timeout = timeout
        kv = Etcdserverpb_KV.Client(wrapping: client)
        watchClient = Etcdserverpb_Watch.Client(wrapping: client)
        lease = Etcdserverpb_Lease.Client(wrapping: client)
        connections = Task { try? await client.runConnections() }
    }

    /// Connects to an endpoint written as etcd's clients write it: `127.0.0.1:2379` or `http://127.0.0.1:2379`.
    public convenience init(endpoint: String) throws {
        var text = endpoint
        if text.hasPrefix("http://") { text.removeFirst("http://".count) }
        let parts = text.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else {
            throw ObjectError.badRequest("endpoint \(endpoint) is not host:port")
        }
        try self.init(host: parts[0] == "localhost" ? "127.0.0.1" : String(parts[0]), port: port)
    }

    public func close() async {
        client.beginGracefulShutdown()
        await connections.value
    }

    private var options: CallOptions {
        var options = CallOptions.defaults
        options.timeout = timeout
        return options
    }

    public func range(_ request: RangeRequest) async throws -> RangeResponse {
        let message = ProtoConversion.range(request)
        do {
            return ProtoConversion.range(try await kv.range(message, options: options))
        } catch {
            throw ProtoConversion.error(error)
        }
    }

    public func txn(_ request: TxnRequest) async throws -> TxnResponse {
        let message = ProtoConversion.txn(request)
        do {
            return ProtoConversion.txn(try await kv.txn(message, options: options))
        } catch {
            throw ProtoConversion.error(error)
        }
    }

    public func grantLease(ttlSeconds: Int64) async throws -> LeaseID {
        var message = Etcdserverpb_LeaseGrantRequest()
        message.ttl = ttlSeconds
        do {
            let response = try await lease.leaseGrant(message, options: options)
            if !response.error.isEmpty { throw ObjectError.internalError(response.error) }
            return response.id
        } catch {
            throw ProtoConversion.error(error)
        }
    }

    public func compact(revision: Revision) async throws {
        var message = Etcdserverpb_CompactionRequest()
        message.revision = revision
        message.physical = true
        do {
            _ = try await kv.compact(message, options: options)
        } catch {
            throw ProtoConversion.error(error)
        }
    }

    public func watch(_ request: WatchCreateRequest) async throws -> any BackendWatch {
        RemoteWatch(client: watchClient, create: ProtoConversion.watchCreate(request))
    }
}

/// One Watch RPC with one watcher. Requests (progress) go through an AsyncStream into the RPC's writer;
/// responses come out through another.
final class RemoteWatch: BackendWatch, @unchecked Sendable {
    private let requests: AsyncStream<Etcdserverpb_WatchRequest>.Continuation
    private let responses: AsyncThrowingStream<WatchResponse, any Error>
    // Only the single reader touches the iterator (BackendWatch is read from one task at a time).
    private var iterator: AsyncThrowingStream<WatchResponse, any Error>.AsyncIterator
    private let task: Task<Void, Never>

    init(client: Etcdserverpb_Watch.Client<HTTP2ClientTransport.Posix>, create: Etcdserverpb_WatchCreateRequest) {
        let (requestStream, requests) = AsyncStream<Etcdserverpb_WatchRequest>.makeStream()
        let (responses, output) = AsyncThrowingStream<WatchResponse, any Error>.makeStream()
        self.requests = requests
        self.responses = responses
        iterator = responses.makeAsyncIterator()
        var first = Etcdserverpb_WatchRequest()
        first.createRequest = create
        requests.yield(first)
        task = Task {
            do {
                try await client.watch(requestProducer: { writer in
                    for await request in requestStream { try await writer.write(request) }
                }, onResponse: { response in
                    for try await message in response.messages {
                        output.yield(ProtoConversion.watchResponse(message))
                    }
                })
                output.finish()
            } catch {
                output.finish(throwing: Task.isCancelled ? CancellationError() : ProtoConversion.error(error))
            }
        }
    }

    deinit {
        requests.finish()
        task.cancel()
    }

    func next() async throws -> WatchResponse? {
        do {
            return try await iterator.next()
        } catch is CancellationError {
            return nil
        }
    }

    func requestProgress() async {
        var request = Etcdserverpb_WatchRequest()
        request.progressRequest = Etcdserverpb_WatchProgressRequest()
        requests.yield(request)
    }

    func close() {
        requests.finish()
        task.cancel()
    }
}

/// RaftKV's request/response types ⇄ etcd's protobuf messages.
enum ProtoConversion {
    static func range(_ request: RangeRequest) -> Etcdserverpb_RangeRequest {
        var message = Etcdserverpb_RangeRequest()
        message.key = Data(request.key)
        message.rangeEnd = Data(request.rangeEnd)
        message.limit = request.limit
        message.revision = request.revision
        message.keysOnly = request.keysOnly
        message.countOnly = request.countOnly
        return message
    }

    static func range(_ message: Etcdserverpb_RangeResponse) -> RangeResponse {
        RangeResponse(revision: message.header.revision, kvs: message.kvs.map(keyValue), more: message.more,
                      count: message.count)
    }

    static func keyValue(_ message: Mvccpb_KeyValue) -> KeyValue {
        KeyValue(key: Array(message.key), createRevision: message.createRevision, modRevision: message.modRevision,
                 version: message.version, value: Array(message.value), lease: message.lease)
    }

    static func txn(_ request: TxnRequest) -> Etcdserverpb_TxnRequest {
        var message = Etcdserverpb_TxnRequest()
        message.compare = request.compare.map(compare)
        message.success = request.success.map(requestOp)
        message.failure = request.failure.map(requestOp)
        return message
    }

    static func compare(_ compare: Compare) -> Etcdserverpb_Compare {
        var message = Etcdserverpb_Compare()
        message.key = Data(compare.key)
        message.rangeEnd = Data(compare.rangeEnd)
        switch compare.result {
        case .equal: message.result = .equal
        case .greater: message.result = .greater
        case .less: message.result = .less
        case .notEqual: message.result = .notEqual
        }
        switch compare.target {
        case .version(let value): message.target = .version; message.version = value
        case .createRevision(let value): message.target = .create; message.createRevision = value
        case .modRevision(let value): message.target = .mod; message.modRevision = value
        case .value(let value): message.target = .value; message.value = Data(value)
        case .lease(let value): message.target = .lease; message.lease = value
        }
        return message
    }

    static func requestOp(_ op: RequestOp) -> Etcdserverpb_RequestOp {
        var message = Etcdserverpb_RequestOp()
        switch op {
        case .range(let request): message.requestRange = range(request)
        case .put(let request):
            var put = Etcdserverpb_PutRequest()
            put.key = Data(request.key)
            put.value = Data(request.value)
            put.lease = request.lease
            put.prevKv = request.prevKv
            put.ignoreValue = request.ignoreValue
            put.ignoreLease = request.ignoreLease
            message.requestPut = put
        case .deleteRange(let request):
            var delete = Etcdserverpb_DeleteRangeRequest()
            delete.key = Data(request.key)
            delete.rangeEnd = Data(request.rangeEnd)
            delete.prevKv = request.prevKv
            message.requestDeleteRange = delete
        case .txn(let request): message.requestTxn = txn(request)
        }
        return message
    }

    static func txn(_ message: Etcdserverpb_TxnResponse) -> TxnResponse {
        let revision = message.header.revision
        return TxnResponse(revision: revision, succeeded: message.succeeded, responses: message.responses.compactMap { op in
            switch op.response {
            case .responseRange(let response)?:
                return .range(range(response))
            case .responsePut(let response)?:
                return .put(PutResponse(revision: response.header.revision,
                                        prevKv: response.hasPrevKv ? keyValue(response.prevKv) : nil))
            case .responseDeleteRange(let response)?:
                return .deleteRange(DeleteRangeResponse(revision: response.header.revision, deleted: response.deleted,
                                                        prevKvs: response.prevKvs.map(keyValue)))
            case .responseTxn(let response)?:
                return .txn(txn(response))
            case nil:
                return nil
            }
        })
    }

    static func watchCreate(_ request: WatchCreateRequest) -> Etcdserverpb_WatchCreateRequest {
        var message = Etcdserverpb_WatchCreateRequest()
        message.key = Data(request.key)
        message.rangeEnd = Data(request.rangeEnd)
        message.startRevision = request.startRevision
        message.progressNotify = request.progressNotify
        message.prevKv = request.prevKv
        message.watchID = request.watchID
        message.fragment = request.fragment
        message.filters = request.filters.map { $0 == .noPut ? .noput : .nodelete }
        return message
    }

    static func watchResponse(_ message: Etcdserverpb_WatchResponse) -> WatchResponse {
        WatchResponse(headerRevision: message.header.revision, watchID: message.watchID, created: message.created,
                      canceled: message.canceled, cancelReason: message.cancelReason,
                      compactRevision: message.compactRevision, fragment: message.fragment,
                      events: message.events.map { event in
                          RaftKV.Event(kind: event.type == .delete ? .delete : .put, kv: keyValue(event.kv),
                                       prevKv: event.hasPrevKv ? keyValue(event.prevKv) : nil)
                      })
    }

    /// etcd's errors by message (`rpctypes`), so the registry sees the same `KVError` as with the embedded store.
    static let knownErrors: [String: KVError] = {
        let all: [KVError] = [.compacted, .futureRevision, .noSpace, .tooManyOperations, .emptyKey, .keyNotFound,
                              .valueProvided, .leaseProvided, .duplicateKey, .leaseNotFound, .leaseExists,
                              .leaseTTLTooLarge, .requestTooLarge, .noLeader, .leaderChanged, .timeout, .stopped,
                              .tooManyRequests, .notLeader(leader: 0)]
        return Dictionary(all.map { ($0.description, $0) }, uniquingKeysWith: { first, _ in first })
    }()

    static func error(_ error: any Error) -> any Error {
        if let rpc = error as? RPCError, let known = knownErrors[rpc.message] { return known }
        return error
    }
}
