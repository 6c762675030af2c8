/// etcd's v3 auth in the state database: users and roles in their own tables, the switch and the auth revision in
/// `meta`, all written in the apply transaction of the entry that changed them (so a snapshot carries them and a
/// restart finds them). ``authState`` is the in-memory copy every check reads.
extension MVCCStore {
    static let authSchema = """
        CREATE TABLE IF NOT EXISTS auth_user (name TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS auth_role (name TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;
        INSERT OR IGNORE INTO meta (name, value) VALUES ('auth_enabled', 0), ('auth_revision', 1);
        """

    func loadAuthState() throws -> AuthState {
        var users: [AuthUser] = []
        try withStatement("SELECT name, record FROM auth_user") { statement in
            while try statement.step() {
                users.append(try Self.decodeUser(name: statement.string(0), statement.bytes(1)))
            }
        }
        var roles: [AuthRole] = []
        try withStatement("SELECT name, record FROM auth_role") { statement in
            while try statement.step() {
                roles.append(try Self.decodeRole(name: statement.string(0), statement.bytes(1)))
            }
        }
        let revision = try meta("auth_revision")
        guard revision >= 1 else { throw MVCCStoreError.corruptAuthRecord("auth revision \(revision)") }
        return AuthState(isEnabled: try meta("auth_enabled") != 0, revision: UInt64(revision), users: users, roles: roles)
    }

    // MARK: Apply

    /// Applies an auth change; a refused one throws ``KVError/auth(_:)`` and changes nothing.
    func applyAuth(_ command: AuthCommand, index: LogIndex) throws -> AuthChangeResponse {
        var next = authState
        let effect: AuthState.Effect
        do throws(AuthError) {
            effect = try next.apply(command, index: index)
        } catch {
            throw KVError.auth(error)
        }
        try persistAuthChanges(from: authState, to: next)
        authState = next
        return AuthChangeResponse(revision: currentRevision, authRevision: next.revision, token: effect.token,
                                  tokenUser: effect.tokenUser, invalidatedUser: effect.invalidatedUser,
                                  invalidatesAllTokens: effect.invalidatesAllTokens)
    }

    private func persistAuthChanges(from old: AuthState, to new: AuthState) throws {
        try persistChangedRecords(old.users, new.users, table: "auth_user", encode: Self.encode)
        try persistChangedRecords(old.roles, new.roles, table: "auth_role", encode: Self.encode)
        if old.isEnabled != new.isEnabled { try setMeta("auth_enabled", new.isEnabled ? 1 : 0) }
        if old.revision != new.revision { try setMeta("auth_revision", Int64(new.revision)) }
    }

    /// Writes the records that differ between `old` and `new` into `table` (name, record), deleting removed ones.
    private func persistChangedRecords<Record: Equatable>(_ old: [String: Record], _ new: [String: Record], table: String,
                                                         encode: (Record) -> [UInt8]) throws {
        for name in Set(old.keys).union(new.keys) where old[name] != new[name] {
            if let record = new[name] {
                try withStatement("INSERT OR REPLACE INTO \(table) (name, record) VALUES (?1, ?2)") { statement in
                    try statement.bind(1, name).bind(2, encode(record)).run()
                }
            } else {
                try withStatement("DELETE FROM \(table) WHERE name = ?1") { try $0.bind(1, name).run() }
            }
        }
    }

    /// etcd's auth applier: with auth on, `command` (a client's) must be allowed to `identity` by the auth state
    /// as it is now, at apply time; throws ``KVError/auth(_:)`` otherwise.
    func authorize(_ command: KVCommand, identity: AuthIdentity) throws {
        guard authState.isEnabled else { return }
        do {
            switch command {
            case .range(let request):
                try authState.check(.read, key: request.key, rangeEnd: request.rangeEnd, identity: identity)
            case .put(let request):
                try checkPut(request, identity: identity)
                try checkLeaseKeys(request.lease, identity: identity)
            case .deleteRange(let request):
                try checkDelete(request, identity: identity)
            case .txn(let request):
                try checkTxn(request, identity: identity)
            case .compact, .leaseGrant:
                // etcd lets anyone compact and grant; here it takes a known user (docs/security.md).
                try authState.checkSignedIn(identity)
            case .leaseRevoke(let id):
                try authState.checkSignedIn(identity)
                try checkLeaseKeys(id, identity: identity)
            case .auth(let change):
                if change.needsAdmin { try authState.checkAdmin(identity) }
            case .alarm, .leaseCheckpoint, .publishMember, .setMemberPeerURLs, .forgetMember:
                try authState.checkAdmin(identity)
            case .authorized:
                preconditionFailure("authorized commands do not nest (the codec refuses them)")
            }
        } catch let error as AuthError {
            throw KVError.auth(error)
        }
    }

    private func checkPut(_ request: PutRequest, identity: AuthIdentity) throws(AuthError) {
        try authState.check(.write, key: request.key, identity: identity)
        if request.prevKv { try authState.check(.read, key: request.key, identity: identity) }
    }

    private func checkDelete(_ request: DeleteRangeRequest, identity: AuthIdentity) throws(AuthError) {
        try authState.check(.write, key: request.key, rangeEnd: request.rangeEnd, identity: identity)
        if request.prevKv { try authState.check(.read, key: request.key, rangeEnd: request.rangeEnd, identity: identity) }
    }

    /// Every key a transaction compares or touches, in both branches, nested transactions included.
    func checkTxn(_ request: TxnRequest, identity: AuthIdentity) throws(AuthError) {
        for compare in request.compare {
            try authState.check(.read, key: compare.key, rangeEnd: compare.rangeEnd, identity: identity)
        }
        for op in request.success + request.failure {
            switch op {
            case .range(let inner): try authState.check(.read, key: inner.key, rangeEnd: inner.rangeEnd, identity: identity)
            case .put(let inner): try checkPut(inner, identity: identity)
            case .deleteRange(let inner): try checkDelete(inner, identity: identity)
            case .txn(let inner): try checkTxn(inner, identity: identity)
            }
        }
    }

    /// etcd's `checkLeasePuts`: using or revoking a lease needs write permission on every key attached to it.
    private func checkLeaseKeys(_ id: LeaseID, identity: AuthIdentity) throws {
        guard id != 0 else { return }
        for key in try attachedKeys(id) {
            try authState.check(.write, key: key, identity: identity)
        }
    }

    // MARK: Records

    static func encode(_ user: AuthUser) -> [UInt8] {
        var writer = BinaryWriter()
        writer.blob(user.passwordHash)
        writer.bool(user.noPassword)
        writer.unsigned(UInt64(user.roles.count))
        for role in user.roles { writer.blob(Array(role.utf8)) }
        return writer.bytes
    }

    static func decodeUser(name: String, _ bytes: [UInt8]) throws -> AuthUser {
        do throws(BinaryDecodingError) {
            var reader = BinaryReader(bytes)
            let passwordHash = try reader.blob()
            let noPassword = try reader.bool()
            let count = try reader.count(minimumBytesEach: 1)
            var roles: [String] = []
            for _ in 0..<count { roles.append(String(decoding: try reader.blob(), as: UTF8.self)) }
            try reader.expectEnd()
            return AuthUser(name: name, passwordHash: passwordHash, noPassword: noPassword, roles: roles)
        } catch {
            throw MVCCStoreError.corruptAuthRecord("user \(name): \(error)")
        }
    }

    static func encode(_ role: AuthRole) -> [UInt8] {
        var writer = BinaryWriter()
        writer.unsigned(UInt64(role.permissions.count))
        for permission in role.permissions {
            writer.blob(permission.key)
            writer.blob(permission.rangeEnd)
            writer.byte(permission.type.rawValue)
        }
        return writer.bytes
    }

    static func decodeRole(name: String, _ bytes: [UInt8]) throws -> AuthRole {
        do throws(BinaryDecodingError) {
            var reader = BinaryReader(bytes)
            let count = try reader.count(minimumBytesEach: 3)
            var permissions: [KeyPermission] = []
            for _ in 0..<count {
                let key = try reader.blob()
                let rangeEnd = try reader.blob()
                let raw = try reader.byte()
                guard let type = PermissionType(rawValue: raw) else { throw reader.failure("permission type \(raw)") }
                permissions.append(KeyPermission(key: key, rangeEnd: rangeEnd, type: type))
            }
            try reader.expectEnd()
            return AuthRole(name: name, permissions: permissions)
        } catch {
            throw MVCCStoreError.corruptAuthRecord("role \(name): \(error)")
        }
    }
}
