import GRPCCore
import RaftKV

/// Errors of the API layer that are not the store's, with etcd's messages and codes (rpctypes/error.go).
enum APIError: Error, Sendable, Hashable, CustomStringConvertible {
    case invalidArgument(String)
    case memberNotFound
    case memberExists
    case peerURLExists
    case memberNotLearner
    case learnerNotReady
    case badLeaderTransferee
    case notLeader
    case noLeader
    case unimplemented(String)

    var description: String {
        switch self {
        case .invalidArgument(let message): return message
        case .memberNotFound: return "etcdserver: member not found"
        case .memberExists: return "etcdserver: member ID already exist"
        case .peerURLExists: return "etcdserver: Peer URLs already exists"
        case .memberNotLearner: return "etcdserver: can only promote a learner member"
        case .learnerNotReady: return "etcdserver: can only promote a learner member which is in sync with leader"
        case .badLeaderTransferee: return "etcdserver: bad leader transferee"
        case .notLeader: return "etcdserver: not leader"
        case .noLeader: return "etcdserver: no leader"
        case .unimplemented(let what): return "unknown method \(what)"
        }
    }

    var code: RPCError.Code {
        switch self {
        case .invalidArgument: return .invalidArgument
        case .memberNotFound: return .notFound
        case .memberExists, .peerURLExists, .memberNotLearner, .learnerNotReady, .badLeaderTransferee, .notLeader:
            return .failedPrecondition
        case .noLeader: return .unavailable
        case .unimplemented: return .unimplemented
        }
    }
}

extension RPCError {
    /// The gRPC status etcd answers for `error`. Errors that are neither the store's nor the API layer's (a
    /// failing disk, a bug) become `Unknown` with their description, as Go's gRPC does for plain errors.
    init(mapping error: any Error) {
        switch error {
        case let rpc as RPCError:
            // Only code and message: an error relayed from a peer carries that peer's trailers, which must not be
            // sent on as this server's (reserved HTTP/2 fields there make the client drop the connection).
            self.init(code: rpc.code, message: rpc.message)
        case let kv as KVError:
            self.init(code: Self.code(kv.code), message: kv.description)
        case let api as APIError:
            self.init(code: api.code, message: api.description)
        case let node as RaftNodeError:
            let kv = KVStore.kvError(node)
            self.init(code: Self.code(kv.code), message: kv.description)
        case is CancellationError:
            self.init(code: .cancelled, message: "context canceled")
        default:
            self.init(code: .unknown, message: String(describing: error))
        }
    }

    private static func code(_ code: KVStatusCode) -> RPCError.Code {
        switch code {
        case .invalidArgument: return .invalidArgument
        case .notFound: return .notFound
        case .failedPrecondition: return .failedPrecondition
        case .resourceExhausted: return .resourceExhausted
        case .outOfRange: return .outOfRange
        case .unavailable: return .unavailable
        case .dataLoss: return .dataLoss
        case .internal: return .internalError
        case .permissionDenied: return .permissionDenied
        case .unauthenticated: return .unauthenticated
        }
    }
}

/// Runs a handler body, answering its errors as etcd would.
func answering<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch {
        throw RPCError(mapping: error)
    }
}
