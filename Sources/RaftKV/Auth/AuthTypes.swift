/// What a role may do on a key or a range (etcd's `authpb.Permission.Type`; raw values are etcd's).
public enum PermissionType: UInt8, Sendable, Hashable, CaseIterable {
    case read = 0
    case write = 1
    case readWrite = 2

    func allows(_ needed: PermissionType) -> Bool {
        self == .readWrite || self == needed
    }
}

/// A role's permission on one key (`rangeEnd` empty), a range `[key, rangeEnd)`, or every key from `key` on
/// (`rangeEnd` = `"\0"`), as etcd's `authpb.Permission`.
public struct KeyPermission: Sendable, Hashable {
    public var key: [UInt8]
    public var rangeEnd: [UInt8]
    public var type: PermissionType

    public init(key: [UInt8], rangeEnd: [UInt8] = [], type: PermissionType) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.type = type
    }
}

/// A user of etcd's v3 auth. The password is only ever held as a salted hash made by the server (RaftKV treats
/// it as opaque bytes); `noPassword` users can only be authenticated by other means (TLS common name).
public struct AuthUser: Sendable, Hashable {
    public var name: String
    public var passwordHash: [UInt8]
    public var noPassword: Bool
    /// Sorted, without duplicates (etcd keeps them sorted and binary-searches them).
    public var roles: [String]

    public init(name: String, passwordHash: [UInt8] = [], noPassword: Bool = false, roles: [String] = []) {
        self.name = name
        self.passwordHash = passwordHash
        self.noPassword = noPassword
        self.roles = Array(Set(roles)).sorted()
    }

    public var hasRootRole: Bool { roles.contains(AuthState.rootRole) }
}

/// A role: a set of key permissions, sorted by key as etcd keeps them.
public struct AuthRole: Sendable, Hashable {
    public var name: String
    public var permissions: [KeyPermission]

    public init(name: String, permissions: [KeyPermission] = []) {
        self.name = name
        self.permissions = permissions
    }
}

/// Who is making a request, as the server authenticated it, and the auth revision at which it did.
///
/// A request proposed with an identity is checked against the auth state *when it is applied*, as etcd's auth
/// applier does: if users, roles or permissions changed since the server looked (a newer auth revision), it fails
/// with ``AuthError/oldRevision`` rather than being judged by rules the server never saw.
public struct AuthIdentity: Sendable, Hashable {
    /// Empty for a client that presented no credentials.
    public var user: String
    /// The auth revision the credentials were checked at; 0 for no credentials.
    public var authRevision: UInt64

    public init(user: String, authRevision: UInt64) {
        self.user = user
        self.authRevision = authRevision
    }

    /// A client without credentials.
    public static let anonymous = AuthIdentity(user: "", authRevision: 0)

    /// The identity of the client request the current task serves. The server binds it around each request; the
    /// store proposes commands made under it as ``KVCommand/authorized(_:_:)`` and checks its local reads against
    /// it. Nil (the default, and what embedding programs and the server's own tasks run with) means a trusted
    /// in-process caller: nothing is checked.
    @TaskLocal public static var current: AuthIdentity?
}

/// A change to the auth state, applied through the log (etcd's `InternalRaftRequest` auth members).
public enum AuthCommand: Sendable, Hashable {
    case enable
    case disable
    /// `passwordHash` is made by the proposing server: the log never holds a password in clear.
    case userAdd(name: String, passwordHash: [UInt8], noPassword: Bool)
    case userDelete(name: String)
    case userChangePassword(name: String, passwordHash: [UInt8])
    case userGrantRole(user: String, role: String)
    case userRevokeRole(user: String, role: String)
    case roleAdd(name: String)
    case roleDelete(name: String)
    case roleGrantPermission(role: String, permission: KeyPermission)
    case roleRevokePermission(role: String, key: [UInt8], rangeEnd: [UInt8])
    /// Issues the simple token `"<tokenPrefix>.<entry index>"` to `user` on every member. The password was checked
    /// by the proposing server, as etcd does, so it is not in the log either.
    case authenticate(user: String, tokenPrefix: String)

    /// Everything but `authenticate` changes users, roles or the switch, and needs the root role once auth is on.
    var needsAdmin: Bool {
        if case .authenticate = self { return false }
        return true
    }
}

/// What applying an ``AuthCommand`` did, for the proposer and for the member's token table.
public struct AuthChangeResponse: Sendable, Hashable {
    /// The store's revision (auth changes do not move it), for the response header.
    public var revision: Revision
    /// The auth revision after the change.
    public var authRevision: UInt64
    /// Set by `authenticate`: the token issued and its user.
    public var token: String
    public var tokenUser: String
    /// Set when the user's tokens stop being valid (deleted, or its password changed).
    public var invalidatedUser: String
    /// Set by `disable`: every token stops being valid.
    public var invalidatesAllTokens: Bool

    public init(revision: Revision, authRevision: UInt64, token: String = "", tokenUser: String = "",
                invalidatedUser: String = "", invalidatesAllTokens: Bool = false) {
        self.revision = revision
        self.authRevision = authRevision
        self.token = token
        self.tokenUser = tokenUser
        self.invalidatedUser = invalidatedUser
        self.invalidatesAllTokens = invalidatesAllTokens
    }
}

/// etcd's auth errors, with its exact messages and gRPC codes (`rpctypes`).
public enum AuthError: UInt8, Error, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case rootUserNotExist = 1
    case rootRoleNotExist
    case userAlreadyExist
    case userEmpty
    case userNotFound
    case roleAlreadyExist
    case roleNotFound
    case roleEmpty
    case authFailed
    case permissionDenied
    case roleNotGranted
    case permissionNotGranted
    case authNotEnabled
    case invalidAuthToken
    case invalidAuthManagement
    case oldRevision

    public var description: String {
        switch self {
        case .rootUserNotExist: return "etcdserver: root user does not exist"
        case .rootRoleNotExist: return "etcdserver: root user does not have root role"
        case .userAlreadyExist: return "etcdserver: user name already exists"
        case .userEmpty: return "etcdserver: user name is empty"
        case .userNotFound: return "etcdserver: user name not found"
        case .roleAlreadyExist: return "etcdserver: role name already exists"
        case .roleNotFound: return "etcdserver: role name not found"
        case .roleEmpty: return "etcdserver: role name is empty"
        case .authFailed: return "etcdserver: authentication failed, invalid user ID or password"
        case .permissionDenied: return "etcdserver: permission denied"
        case .roleNotGranted: return "etcdserver: role is not granted to the user"
        case .permissionNotGranted: return "etcdserver: permission is not granted to the role"
        case .authNotEnabled: return "etcdserver: authentication is not enabled"
        case .invalidAuthToken: return "etcdserver: invalid auth token"
        case .invalidAuthManagement: return "etcdserver: invalid auth management"
        case .oldRevision: return "etcdserver: revision of auth store is old"
        }
    }

    public var code: KVStatusCode {
        switch self {
        case .rootUserNotExist, .rootRoleNotExist, .userAlreadyExist, .userNotFound, .roleAlreadyExist,
             .roleNotFound, .roleNotGranted, .permissionNotGranted, .authNotEnabled:
            return .failedPrecondition
        case .userEmpty, .roleEmpty, .authFailed, .invalidAuthManagement, .oldRevision: return .invalidArgument
        case .permissionDenied: return .permissionDenied
        case .invalidAuthToken: return .unauthenticated
        }
    }
}
