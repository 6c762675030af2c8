/// etcd's v3 auth state — the switch, users, roles and the auth revision — as a value: applying a command and
/// checking a permission are pure functions of it, so every member decides alike.
///
/// The auth revision starts at 1 and grows with every change that can alter a decision (etcd's `authRevision`);
/// enabling does not bump it (as etcd), disabling does.
public struct AuthState: Sendable, Hashable {
    public static let rootUser = "root"
    public static let rootRole = "root"

    public internal(set) var isEnabled = false
    public internal(set) var revision: UInt64 = 1
    public internal(set) var users: [String: AuthUser] = [:]
    public internal(set) var roles: [String: AuthRole] = [:]

    public init() {}

    init(isEnabled: Bool, revision: UInt64, users: [AuthUser], roles: [AuthRole]) {
        self.isEnabled = isEnabled
        self.revision = revision
        self.users = Dictionary(users.map { ($0.name, $0) }, uniquingKeysWith: { _, last in last })
        self.roles = Dictionary(roles.map { ($0.name, $0) }, uniquingKeysWith: { _, last in last })
    }

    // MARK: Changes

    /// What a command did beyond the new state: tokens to issue or revoke.
    struct Effect: Hashable {
        var token = ""
        var tokenUser = ""
        var invalidatedUser = ""
        var invalidatesAllTokens = false
    }

    /// Applies `command` (entry `index`, which names the token `authenticate` issues); throws etcd's error and
    /// leaves the state alone when the command is refused.
    mutating func apply(_ command: AuthCommand, index: LogIndex) throws(AuthError) -> Effect {
        var effect = Effect()
        switch command {
        case .enable:
            guard !isEnabled else { return effect }
            guard let root = users[Self.rootUser] else { throw .rootUserNotExist }
            guard root.hasRootRole else { throw .rootRoleNotExist }
            isEnabled = true
            return effect

        case .disable:
            guard isEnabled else { return effect }
            isEnabled = false
            effect.invalidatesAllTokens = true

        case .userAdd(let name, let passwordHash, let noPassword):
            guard !name.isEmpty else { throw .userEmpty }
            guard users[name] == nil else { throw .userAlreadyExist }
            users[name] = AuthUser(name: name, passwordHash: noPassword ? [] : passwordHash, noPassword: noPassword)

        case .userDelete(let name):
            if isEnabled && name == Self.rootUser { throw .invalidAuthManagement }
            guard users.removeValue(forKey: name) != nil else { throw .userNotFound }
            effect.invalidatedUser = name

        case .userChangePassword(let name, let passwordHash):
            guard users[name] != nil else { throw .userNotFound }
            users[name]!.passwordHash = passwordHash
            effect.invalidatedUser = name

        case .userGrantRole(let name, let role):
            guard var user = users[name] else { throw .userNotFound }
            // The root role needs no definition: granting it is how root becomes root.
            guard role == Self.rootRole || roles[role] != nil else { throw .roleNotFound }
            guard !user.roles.contains(role) else { return effect }
            user.roles = (user.roles + [role]).sorted()
            users[name] = user

        case .userRevokeRole(let name, let role):
            if isEnabled && name == Self.rootUser && role == Self.rootRole { throw .invalidAuthManagement }
            guard var user = users[name] else { throw .userNotFound }
            guard let position = user.roles.firstIndex(of: role) else { throw .roleNotGranted }
            user.roles.remove(at: position)
            users[name] = user

        case .roleAdd(let name):
            guard !name.isEmpty else { throw .roleEmpty }
            guard roles[name] == nil else { throw .roleAlreadyExist }
            roles[name] = AuthRole(name: name)

        case .roleDelete(let name):
            if isEnabled && name == Self.rootRole { throw .invalidAuthManagement }
            guard roles.removeValue(forKey: name) != nil else { throw .roleNotFound }
            for (userName, user) in users where user.roles.contains(name) {
                users[userName]!.roles.removeAll { $0 == name }
            }

        case .roleGrantPermission(let name, let permission):
            guard var role = roles[name] else { throw .roleNotFound }
            if let existing = role.permissions.firstIndex(where: {
                $0.key == permission.key && $0.rangeEnd == permission.rangeEnd
            }) {
                role.permissions[existing].type = permission.type
            } else {
                role.permissions.append(permission)
                role.permissions.sort { $0.key.lexicographicallyPrecedes($1.key) }
            }
            roles[name] = role

        case .roleRevokePermission(let name, let key, let rangeEnd):
            guard var role = roles[name] else { throw .roleNotFound }
            let before = role.permissions.count
            role.permissions.removeAll { $0.key == key && $0.rangeEnd == rangeEnd }
            guard role.permissions.count < before else { throw .permissionNotGranted }
            roles[name] = role

        case .authenticate(let name, let tokenPrefix):
            guard isEnabled else { throw .authNotEnabled }
            guard users[name] != nil else { throw .authFailed }
            effect.token = "\(tokenPrefix).\(index)"
            effect.tokenUser = name
            return effect
        }
        revision += 1
        return effect
    }

    // MARK: Checks

    /// etcd's `IsAdminPermitted`: with auth on, only users holding the root role.
    public func checkAdmin(_ identity: AuthIdentity) throws(AuthError) {
        guard isEnabled else { return }
        guard !identity.user.isEmpty else { throw .userEmpty }
        guard let user = users[identity.user] else { throw .userNotFound }
        guard user.hasRootRole else { throw .permissionDenied }
    }

    /// With auth on, a known user signed in at the current auth revision (for calls that need no key permission:
    /// lease grants and keep-alives, compaction).
    public func checkSignedIn(_ identity: AuthIdentity) throws(AuthError) {
        guard isEnabled else { return }
        guard !identity.user.isEmpty, identity.authRevision != 0 else { throw .userEmpty }
        guard identity.authRevision >= revision else { throw .oldRevision }
        guard users[identity.user] != nil else { throw .userNotFound }
    }

    /// etcd's `isOpPermitted` for reading (`.read`) or writing (`.write`) `key` — or `[key, rangeEnd)` when
    /// `rangeEnd` is not empty (`"\0"`: every key from `key` on): the user's roles together must cover all of it.
    public func check(_ needed: PermissionType, key: [UInt8], rangeEnd: [UInt8] = [],
                      identity: AuthIdentity) throws(AuthError) {
        precondition(needed != .readWrite, "a request needs read or write; check both separately")
        guard isEnabled else { return }
        guard identity.authRevision != 0 else { throw .userEmpty }
        guard identity.authRevision >= revision else { throw .oldRevision }
        guard let user = users[identity.user] else { throw .permissionDenied }
        if user.hasRootRole { return }
        let granted = user.roles.compactMap { roles[$0] }.flatMap(\.permissions).filter { $0.type.allows(needed) }
        guard Self.covers(granted, key: key, rangeEnd: rangeEnd) else { throw .permissionDenied }
    }

    /// Whether the union of `permissions` covers the key or range asked for. An empty range end means the single
    /// key; `"\0"` means no upper bound, in a permission as in a request (etcd's affine intervals).
    static func covers(_ permissions: [KeyPermission], key: [UInt8], rangeEnd: [UInt8]) -> Bool {
        let intervals = permissions.map { interval(key: $0.key, rangeEnd: $0.rangeEnd) }
        if rangeEnd.isEmpty {
            return intervals.contains { $0.contains(key) }
        }
        let wanted = interval(key: key, rangeEnd: rangeEnd)
        // An empty range (end ≤ start) asks for no more than its start, as a point.
        if let end = wanted.end, !key.lexicographicallyPrecedes(end) {
            return intervals.contains { $0.contains(key) }
        }
        return sweep(intervals, from: key, to: wanted.end)
    }

    /// `[start, end)`; `end` nil = unbounded.
    private struct Interval {
        var start: [UInt8]
        var end: [UInt8]?

        func contains(_ key: [UInt8]) -> Bool {
            !key.lexicographicallyPrecedes(start) && (end.map { key.lexicographicallyPrecedes($0) } ?? true)
        }
    }

    private static func interval(key: [UInt8], rangeEnd: [UInt8]) -> Interval {
        if rangeEnd.isEmpty { return Interval(start: key, end: key + [0]) }  // exactly `key`
        if rangeEnd == [0] { return Interval(start: key, end: nil) }
        return Interval(start: key, end: rangeEnd)
    }

    /// Walks from `from` towards `to` (nil = unbounded), each step jumping to the farthest end of the intervals
    /// that contain the current point; covered when it gets past `to`.
    private static func sweep(_ intervals: [Interval], from: [UInt8], to: [UInt8]?) -> Bool {
        var cursor = from
        // Each step strictly advances the cursor to some interval's end, so it runs at most once per interval.
        for _ in 0...intervals.count {
            let containing = intervals.filter { $0.contains(cursor) }
            if containing.contains(where: { $0.end == nil }) { return true }
            guard let farthest = containing.compactMap(\.end).max(by: { $0.lexicographicallyPrecedes($1) }) else {
                return false
            }
            if let to, !farthest.lexicographicallyPrecedes(to) { return true }
            cursor = farthest
        }
        return false
    }
}
