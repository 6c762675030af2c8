/// etcd's v3 auth on the embedded store: changes go through the log (checked at apply time against the identity
/// bound in ``AuthIdentity/current``), reads are checked against the auth state as applied here.
///
/// Password hashing and checking belong to the caller (the server): the store only ever sees hashes.
extension KVStore {
    /// Users, roles and the switch as this member has applied them.
    public var authState: AuthState { stateMachine.withStore { $0.authState } }

    /// Proposes an auth change and returns what it did.
    @discardableResult
    public func changeAuth(_ command: AuthCommand) async throws -> AuthChangeResponse {
        guard case .auth(let response) = try await propose(.auth(command)) else {
            throw KVError.malformedCommand("unexpected response kind")
        }
        return response
    }

    /// etcd's `Authenticate`: checks the password with `passwordMatches` against the user's record as of a
    /// linearizable read, then issues a token through the log. Retried (a few times) when users or roles changed
    /// between the check and the token, so a token is never issued on a password that was just replaced.
    public func authenticate(user: String, passwordMatches: (AuthUser) -> Bool) async throws -> AuthChangeResponse {
        try await linearizableBarrier()
        for _ in 0..<5 {
            let state = authState
            guard state.isEnabled else { throw KVError.auth(.authNotEnabled) }
            guard let record = state.users[user], !record.noPassword, passwordMatches(record) else {
                throw KVError.auth(.authFailed)
            }
            let issued = try await changeAuth(.authenticate(user: user, tokenPrefix: SimpleTokens.makePrefix()))
            if issued.authRevision == state.revision { return issued }
        }
        throw KVError.auth(.oldRevision)
    }

    /// The identity `token` stands for. A token issued by an entry this member has not applied yet is waited for
    /// (up to the request timeout), as etcd's simple-token check does; unknown or expired tokens are refused.
    public func identity(forToken token: String) async throws -> AuthIdentity {
        guard let index = SimpleTokens.index(of: token) else { throw KVError.auth(.invalidAuthToken) }
        do {
            try await waitUntilApplied(index: index)
        } catch KVError.timeout {
            throw KVError.auth(.invalidAuthToken)
        }
        guard let user = authTokens.user(for: token) else { throw KVError.auth(.invalidAuthToken) }
        return AuthIdentity(user: user, authRevision: authState.revision)
    }

    /// The identity of a client authenticated by other means (a verified TLS certificate's common name), as etcd
    /// takes it: whoever the name says, at the current auth revision.
    public func identity(forUser user: String) -> AuthIdentity {
        AuthIdentity(user: user, authRevision: authState.revision)
    }

    /// etcd's `IsAdminPermitted` for the calling request (``AuthIdentity/current``; nil = trusted, allowed).
    public func checkAdmin() throws {
        guard let identity = AuthIdentity.current else { return }
        do throws(AuthError) { try authState.checkAdmin(identity) } catch { throw KVError.auth(error) }
    }

    /// A signed-in user for the calling request (lease keep-alives and listings).
    public func checkSignedIn() throws {
        guard let identity = AuthIdentity.current else { return }
        do throws(AuthError) { try authState.checkSignedIn(identity) } catch { throw KVError.auth(error) }
    }

    /// Read permission on `key` (or `[key, rangeEnd)`) for the calling request, as a watch needs at creation.
    public func checkRead(key: [UInt8], rangeEnd: [UInt8]) throws {
        guard let identity = AuthIdentity.current else { return }
        try stateMachine.withStore { try $0.checkRead(key: key, rangeEnd: rangeEnd, identity: identity) }
    }

    /// etcd's `UserGet`: root may read anyone, others themselves.
    public func authUser(_ name: String) async throws -> AuthUser {
        try await linearizableBarrier()
        let state = authState
        try checkAdmin(or: AuthIdentity.current?.user == name, state: state)
        guard let user = state.users[name] else { throw KVError.auth(.userNotFound) }
        return user
    }

    /// etcd's `RoleGet`: root may read any role, others the roles they hold.
    public func authRole(_ name: String) async throws -> AuthRole {
        try await linearizableBarrier()
        let state = authState
        let holdsRole = AuthIdentity.current.flatMap { state.users[$0.user] }?.roles.contains(name) ?? false
        try checkAdmin(or: holdsRole, state: state)
        guard let role = state.roles[name] else { throw KVError.auth(.roleNotFound) }
        return role
    }

    /// etcd's `UserList` (root only), sorted by name.
    public func authUsers() async throws -> [AuthUser] {
        try await linearizableBarrier()
        let state = authState
        try checkAdmin(or: false, state: state)
        return state.users.values.sorted { $0.name < $1.name }
    }

    /// etcd's `RoleList` (root only), sorted by name.
    public func authRoles() async throws -> [AuthRole] {
        try await linearizableBarrier()
        let state = authState
        try checkAdmin(or: false, state: state)
        return state.roles.values.sorted { $0.name < $1.name }
    }

    private func checkAdmin(or allowed: Bool, state: AuthState) throws {
        guard let identity = AuthIdentity.current else { return }
        do throws(AuthError) {
            try state.checkAdmin(identity)
        } catch {
            if !allowed { throw KVError.auth(error) }
        }
    }
}

extension MVCCStore {
    /// Read permission on a key or range for `identity`, mapped to etcd's errors.
    public func checkRead(key: [UInt8], rangeEnd: [UInt8], identity: AuthIdentity) throws {
        do throws(AuthError) {
            try authState.check(.read, key: key, rangeEnd: rangeEnd, identity: identity)
        } catch {
            throw KVError.auth(error)
        }
    }

    /// Permission for a read-only transaction served locally: every compare and every range it holds.
    func checkReadOnlyTxn(_ request: TxnRequest, identity: AuthIdentity) throws {
        do throws(AuthError) { try checkTxn(request, identity: identity) } catch { throw KVError.auth(error) }
    }
}
