import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import RaftKV
import Synchronization

/// The registry over etcd's v3 gRPC API: `kvserver` members (followers forward writes to the leader) or etcd.
///
/// Given several endpoints, calls go to one member at a time and move on to the next when it cannot be reached
/// (a connection failure, not an error the member answered), as etcd's clientv3 balancer does; one HTTP/2
/// connection per member carries every call, and each watch is its own Watch RPC on the current member's
/// connection. With TLS (`https://` endpoints) the server is checked against the given CA, and a client
/// certificate is presented when given; with credentials, the backend signs in (`Authenticate`) and sends the token
/// with every call, signing in again when a member answers that the token is no longer valid.
///
/// Errors the server sends with etcd's messages come back as the matching `KVError` (so compaction is recognised
/// as on the embedded store); transport failures are thrown as gRPC's `RPCError`. A write that failed over may have
/// been applied by the member that went away: the registry's compare-and-swap writes then fail visibly (already
/// exists, conflict) rather than apply twice.
public final class RemoteBackend: RegistryBackend {
    /// How to reach the members.
    public struct Options: Sendable {
        /// Per-call deadline for unary calls (kvserver itself answers within its 7 s request timeout).
        public var timeout: Duration = .seconds(15)
        /// The CA that signed the members' certificates (etcdctl's `--cacert`); required for `https://` endpoints.
        public var trustedCAFile: String?
        /// A client certificate and key (etcdctl's `--cert`/`--key`), for members that check clients.
        public var certificateFile: String?
        public var keyFile: String?
        /// etcd v3 auth credentials (etcdctl's `--user name:password`).
        public var user: String?
        public var password: String?

        public init() {}
    }

    /// One member: its client, created with the backend and connected lazily by gRPC.
    struct Member {
        let endpoint: String
        let client: GRPCClient<HTTP2ClientTransport.Posix>
        let kv: Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>
        let watch: Etcdserverpb_Watch.Client<HTTP2ClientTransport.Posix>
        let lease: Etcdserverpb_Lease.Client<HTTP2ClientTransport.Posix>
        let auth: Etcdserverpb_Auth.Client<HTTP2ClientTransport.Posix>
    }

    private let members: [Member]
    private let connections: Task<Void, Never>
    private let current = Mutex(0)
    private let token = Mutex<String?>(nil)
    public let options: Options
    public var timeout: Duration { options.timeout }

    /// Connects to members written as etcd's clients write them: `127.0.0.1:2379`, `http://…` or `https://…`.
    public init(endpoints: [String], options: Options = Options()) throws {
        guard !endpoints.isEmpty else { throw ObjectError.badRequest("no endpoints") }
        if options.user != nil && options.password == nil {
            throw ObjectError.badRequest("a user needs a password")
        }
        self.options = options
        members = try endpoints.map { try Self.member($0, options: options) }
        connections = Task { [members] in
            await withDiscardingTaskGroup { group in
                for member in members { group.addTask { try? await member.client.runConnections() } }
            }
        }
    }

    /// Connects to one member at `host:port`.
    public convenience init(host: String, port: Int, timeout: Duration = .seconds(15)) throws {
        var options = Options()
        options.timeout = timeout
        try self.init(endpoints: ["\(host):\(port)"], options: options)
    }

    /// Connects to one member written as etcd's clients write it: `127.0.0.1:2379` or `http://127.0.0.1:2379`.
    public convenience init(endpoint: String) throws {
        try self.init(endpoints: [endpoint])
    }

    private static func member(_ endpoint: String, options: Options) throws -> Member {
        var text = Substring(endpoint)
        var secure = false
        if text.hasPrefix("http://") { text = text.dropFirst("http://".count) }
        if text.hasPrefix("https://") {
            text = text.dropFirst("https://".count)
            secure = true
        }
        let parts = text.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]), !parts[0].isEmpty else {
            throw ObjectError.badRequest("endpoint \(endpoint) is not host:port")
        }
        let host = parts[0] == "localhost" ? "127.0.0.1" : String(parts[0])
        let security: HTTP2ClientTransport.Posix.TransportSecurity
        if secure {
            guard let ca = options.trustedCAFile else {
                throw ObjectError.badRequest("endpoint \(endpoint) is https: the members' CA (trustedCAFile) is needed")
            }
            var chain: [TLSConfig.CertificateSource] = []
            var key: TLSConfig.PrivateKeySource?
            if let certificate = options.certificateFile, let keyFile = options.keyFile {
                chain = [.file(path: certificate, format: .pem)]
                key = .file(path: keyFile, format: .pem)
            }
            // Members are named by the CA that signed them, not by host (endpoints are often bare IP addresses).
            security = .tls(HTTP2ClientTransport.Posix.TransportSecurity.TLS(
                certificateChain: chain, privateKey: key, serverCertificateVerification: .noHostnameVerification,
                trustRoots: .certificates([.file(path: ca, format: .pem)])))
        } else {
            security = .plaintext
        }
        let target: any ResolvableTarget = host.split(separator: ".").count == 4 && host.allSatisfy({ $0.isNumber || $0 == "." })
            ? .ipv4(address: host, port: port) : .dns(host: host, port: port)
        let transport = try HTTP2ClientTransport.Posix(
            target: target, transportSecurity: security,
            config: .defaults { config in
                // gRPC's default reconnect backoff grows to minutes; a restarted member is back in a second.
                config.backoff = .init(initial: .milliseconds(50), max: .seconds(1), multiplier: 2, jitter: 0.2)
            })
        let client = GRPCClient(transport: transport)
        return Member(endpoint: endpoint, client: client, kv: Etcdserverpb_KV.Client(wrapping: client),
                      watch: Etcdserverpb_Watch.Client(wrapping: client), lease: Etcdserverpb_Lease.Client(wrapping: client),
                      auth: Etcdserverpb_Auth.Client(wrapping: client))
    }

    public func close() async {
        for member in members { member.client.beginGracefulShutdown() }
        await connections.value
    }

    /// The endpoint calls go to now.
    public var currentEndpoint: String { members[current.withLock { $0 }].endpoint }

    private var callOptions: CallOptions {
        var options = CallOptions.defaults
        options.timeout = self.options.timeout
        return options
    }

    /// Runs `call` on the current member with the auth token, moving to the next member on connection failures
    /// (each member tried once per call) and signing in again once if the token was refused.
    private func withMember<Response: Sendable>(
        _ call: (Member, Metadata, CallOptions) async throws -> Response
    ) async throws -> Response {
        var signedInAgain = false
        var attempts = 0
        while true {
            let index = current.withLock { $0 }
            let member = members[index]
            do {
                let metadata = try await authMetadata(member)
                return try await call(member, metadata, callOptions)
            } catch let error as RPCError where Self.isConnectionFailure(error) && attempts + 1 < members.count {
                attempts += 1
                current.withLock { if $0 == index { $0 = (index + 1) % members.count } }
            } catch let error as RPCError where error.code == .unauthenticated && options.user != nil && !signedInAgain {
                signedInAgain = true
                token.withLock { $0 = nil }
            } catch {
                throw ProtoConversion.error(error)
            }
        }
    }

    /// A failure to reach the member, as opposed to an answer from it (etcd's errors all start "etcdserver:").
    static func isConnectionFailure(_ error: RPCError) -> Bool {
        error.code == .unavailable && !error.message.hasPrefix("etcdserver:")
    }

    /// The token metadata, signing in first when there are credentials and no token yet.
    private func authMetadata(_ member: Member) async throws -> Metadata {
        guard let user = options.user, let password = options.password else { return [:] }
        if let token = token.withLock({ $0 }) { return ["token": .string(token)] }
        var request = Etcdserverpb_AuthenticateRequest()
        request.name = user
        request.password = password
        let issued = try await member.auth.authenticate(request, options: callOptions).token
        token.withLock { $0 = issued }
        return ["token": .string(issued)]
    }

    public func range(_ request: RangeRequest) async throws -> RangeResponse {
        let message = ProtoConversion.range(request)
        return try await withMember { member, metadata, options in
            ProtoConversion.range(try await member.kv.range(message, metadata: metadata, options: options))
        }
    }

    public func txn(_ request: TxnRequest) async throws -> TxnResponse {
        let message = ProtoConversion.txn(request)
        return try await withMember { member, metadata, options in
            ProtoConversion.txn(try await member.kv.txn(message, metadata: metadata, options: options))
        }
    }

    public func grantLease(ttlSeconds: Int64) async throws -> LeaseID {
        var message = Etcdserverpb_LeaseGrantRequest()
        message.ttl = ttlSeconds
        let response = try await withMember { member, metadata, options in
            try await member.lease.leaseGrant(message, metadata: metadata, options: options)
        }
        if !response.error.isEmpty { throw ObjectError.internalError(response.error) }
        return response.id
    }

    public func compact(revision: Revision) async throws {
        var message = Etcdserverpb_CompactionRequest()
        message.revision = revision
        message.physical = true
        _ = try await withMember { member, metadata, options in
            try await member.kv.compact(message, metadata: metadata, options: options)
        }
    }

    public func watch(_ request: WatchCreateRequest) async throws -> any BackendWatch {
        let member = members[current.withLock { $0 }]
        let metadata = try await authMetadata(member)
        return RemoteWatch(client: member.watch, metadata: metadata, create: ProtoConversion.watchCreate(request))
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

    init(client: Etcdserverpb_Watch.Client<HTTP2ClientTransport.Posix>, metadata: Metadata,
         create: Etcdserverpb_WatchCreateRequest) {
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
                try await client.watch(metadata: metadata, requestProducer: { writer in
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
                              .tooManyRequests, .notLeader(leader: 0)] + AuthError.allCases.map { KVError.auth($0) }
        return Dictionary(all.map { ($0.description, $0) }, uniquingKeysWith: { first, _ in first })
    }()

    static func error(_ error: any Error) -> any Error {
        if let rpc = error as? RPCError, let known = knownErrors[rpc.message] { return known }
        return error
    }
}
