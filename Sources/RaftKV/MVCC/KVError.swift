/// The gRPC status code an error maps to, so the RPC layer can answer exactly as etcd does.
public enum KVStatusCode: Int, Sendable, Hashable {
    case invalidArgument = 3
    case notFound = 5
    case permissionDenied = 7
    case failedPrecondition = 9
    case resourceExhausted = 8
    case outOfRange = 11
    case unavailable = 14
    case dataLoss = 15
    case `internal` = 13
    case unauthenticated = 16
}

/// A request the store refused. `description` is etcd's exact message, which clients match on.
public enum KVError: Error, Sendable, Hashable, CustomStringConvertible {
    case compacted
    case futureRevision
    case noSpace
    case tooManyOperations
    case emptyKey
    case keyNotFound
    case valueProvided
    case leaseProvided
    case duplicateKey
    case leaseNotFound
    case leaseExists
    case leaseTTLTooLarge
    case requestTooLarge
    /// A log entry whose bytes are not a command this version understands.
    case malformedCommand(String)
    /// Refused by etcd's v3 auth (a bad change to users and roles, or a request the user may not make).
    case auth(AuthError)
    // Cluster conditions, raised above the store (by the embedded API) rather than by applying.
    /// No leader is known (an election is under way or this member is cut off).
    case noLeader
    /// This member is not the leader; `leader` is the one it knows (0 = none). Requests only the leader serves
    /// (lease keep-alive and time-to-live) fail with it so that the server layer can forward them.
    case notLeader(leader: NodeID)
    /// The proposal was overtaken by a new leader's log before it committed; retrying is safe.
    case leaderChanged
    /// No answer within the request timeout; the request may or may not have been applied.
    case timeout
    /// The member stopped (shut down, removed from the cluster, or failed to persist).
    case stopped
    /// Too many proposals are waiting to commit.
    case tooManyRequests

    public var description: String {
        switch self {
        case .compacted: return "etcdserver: mvcc: required revision has been compacted"
        case .futureRevision: return "etcdserver: mvcc: required revision is a future revision"
        case .noSpace: return "etcdserver: mvcc: database space exceeded"
        case .tooManyOperations: return "etcdserver: too many operations in txn request"
        case .emptyKey: return "etcdserver: key is not provided"
        case .keyNotFound: return "etcdserver: key not found"
        case .valueProvided: return "etcdserver: value is provided"
        case .leaseProvided: return "etcdserver: lease is provided"
        case .duplicateKey: return "etcdserver: duplicate key given in txn request"
        case .leaseNotFound: return "etcdserver: requested lease not found"
        case .leaseExists: return "etcdserver: lease already exists"
        case .leaseTTLTooLarge: return "etcdserver: too large lease TTL"
        case .requestTooLarge: return "etcdserver: request is too large"
        case .malformedCommand(let why): return "etcdserver: malformed command: \(why)"
        case .auth(let error): return error.description
        case .noLeader: return "etcdserver: no leader"
        case .notLeader: return "etcdserver: not leader"
        case .leaderChanged: return "etcdserver: leader changed"
        case .timeout: return "etcdserver: request timed out"
        case .stopped: return "etcdserver: server stopped"
        case .tooManyRequests: return "etcdserver: too many requests"
        }
    }

    public var code: KVStatusCode {
        switch self {
        case .compacted, .futureRevision, .leaseTTLTooLarge: return .outOfRange
        case .noSpace: return .resourceExhausted
        case .tooManyOperations, .emptyKey, .keyNotFound, .valueProvided, .leaseProvided, .duplicateKey,
             .requestTooLarge:
            return .invalidArgument
        case .leaseNotFound: return .notFound
        case .leaseExists: return .failedPrecondition
        case .malformedCommand: return .internal
        case .auth(let error): return error.code
        case .noLeader, .leaderChanged, .timeout, .stopped: return .unavailable
        case .tooManyRequests: return .resourceExhausted
        case .notLeader: return .failedPrecondition
        }
    }
}
