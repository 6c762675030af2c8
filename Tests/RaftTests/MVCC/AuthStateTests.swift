import Foundation
import Testing
@testable import RaftKV

/// etcd's auth rules as a pure value (AuthState) and as applied by the MVCC store: errors of every change, the
/// auth revision, permission coverage of keys and ranges, checks at apply time, and persistence.
@Suite struct AuthStateTests {
    private func state(_ commands: [AuthCommand]) throws -> AuthState {
        var state = AuthState()
        for (offset, command) in commands.enumerated() { _ = try state.apply(command, index: LogIndex(offset + 1)) }
        return state
    }

    private func expectAuthError(_ expected: AuthError, _ body: () throws -> Void,
                                 sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            try body()
            Issue.record("expected \(expected)", sourceLocation: sourceLocation)
        } catch let error as AuthError {
            #expect(error == expected, sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func enablingNeedsARootUserWithTheRootRole() throws {
        var empty = AuthState()
        expectAuthError(.rootUserNotExist) { _ = try empty.apply(.enable, index: 1) }
        var rootless = try state([.userAdd(name: "root", passwordHash: [1], noPassword: false)])
        expectAuthError(.rootRoleNotExist) { _ = try rootless.apply(.enable, index: 2) }
        var ready = try state([.userAdd(name: "root", passwordHash: [1], noPassword: false),
                               .userGrantRole(user: "root", role: "root")])
        let before = ready.revision
        _ = try ready.apply(.enable, index: 3)
        #expect(ready.isEnabled)
        #expect(ready.revision == before, "enabling does not bump the auth revision (etcd)")
        // Root is protected while auth is on.
        expectAuthError(.invalidAuthManagement) { _ = try ready.apply(.userDelete(name: "root"), index: 4) }
        expectAuthError(.invalidAuthManagement) { _ = try ready.apply(.userRevokeRole(user: "root", role: "root"), index: 4) }
        expectAuthError(.invalidAuthManagement) { _ = try ready.apply(.roleDelete(name: "root"), index: 4) }
        let effect = try ready.apply(.disable, index: 5)
        #expect(effect.invalidatesAllTokens)
        #expect(ready.revision == before + 1)
    }

    @Test func changesFailWithEtcdsErrors() throws {
        var auth = try state([.userAdd(name: "u", passwordHash: [1], noPassword: false), .roleAdd(name: "r")])
        expectAuthError(.userEmpty) { _ = try auth.apply(.userAdd(name: "", passwordHash: [], noPassword: false), index: 9) }
        expectAuthError(.userAlreadyExist) { _ = try auth.apply(.userAdd(name: "u", passwordHash: [], noPassword: false), index: 9) }
        expectAuthError(.userNotFound) { _ = try auth.apply(.userDelete(name: "x"), index: 9) }
        expectAuthError(.userNotFound) { _ = try auth.apply(.userGrantRole(user: "x", role: "r"), index: 9) }
        expectAuthError(.roleNotFound) { _ = try auth.apply(.userGrantRole(user: "u", role: "x"), index: 9) }
        expectAuthError(.roleNotGranted) { _ = try auth.apply(.userRevokeRole(user: "u", role: "r"), index: 9) }
        expectAuthError(.roleEmpty) { _ = try auth.apply(.roleAdd(name: ""), index: 9) }
        expectAuthError(.roleAlreadyExist) { _ = try auth.apply(.roleAdd(name: "r"), index: 9) }
        expectAuthError(.permissionNotGranted) { _ = try auth.apply(.roleRevokePermission(role: "r", key: b("k"), rangeEnd: []), index: 9) }
        expectAuthError(.authNotEnabled) { _ = try auth.apply(.authenticate(user: "u", tokenPrefix: "p"), index: 9) }
        // Granting a held role changes nothing, not even the revision.
        _ = try auth.apply(.userGrantRole(user: "u", role: "r"), index: 10)
        let revision = auth.revision
        _ = try auth.apply(.userGrantRole(user: "u", role: "r"), index: 11)
        #expect(auth.revision == revision)
        // Deleting a role takes it away from its users.
        _ = try auth.apply(.roleDelete(name: "r"), index: 12)
        #expect(auth.users["u"]?.roles == [])
    }

    @Test func tokensNameTheirEntryAndPasswordChangesRevokeThem() throws {
        var auth = try state([.userAdd(name: "root", passwordHash: [1], noPassword: false),
                              .userGrantRole(user: "root", role: "root"), .enable])
        let issued = try auth.apply(.authenticate(user: "root", tokenPrefix: "abc"), index: 42)
        #expect(issued.token == "abc.42" && issued.tokenUser == "root")
        #expect(SimpleTokens.index(of: issued.token) == 42)
        expectAuthError(.authFailed) { _ = try auth.apply(.authenticate(user: "nobody", tokenPrefix: "abc"), index: 43) }
        let changed = try auth.apply(.userChangePassword(name: "root", passwordHash: [2]), index: 44)
        #expect(changed.invalidatedUser == "root")
    }

    /// A user with `permissions` in one role, auth on, and the identity to check with.
    private func limited(_ permissions: [KeyPermission]) throws -> (AuthState, AuthIdentity) {
        var commands: [AuthCommand] = [.userAdd(name: "root", passwordHash: [1], noPassword: false),
                                       .userGrantRole(user: "root", role: "root"),
                                       .userAdd(name: "u", passwordHash: [1], noPassword: false), .roleAdd(name: "r")]
        commands += permissions.map { .roleGrantPermission(role: "r", permission: $0) }
        commands += [.userGrantRole(user: "u", role: "r"), .enable]
        let auth = try state(commands)
        return (auth, AuthIdentity(user: "u", authRevision: auth.revision))
    }

    @Test func rangesAreCoveredByTheUnionOfPermissions() throws {
        let (auth, user) = try limited([
            KeyPermission(key: b("a"), rangeEnd: b("c"), type: .read),
            KeyPermission(key: b("c"), rangeEnd: b("e"), type: .readWrite),
            KeyPermission(key: b("k"), type: .write),
            KeyPermission(key: b("x"), rangeEnd: [0], type: .read),
        ])
        func allowed(_ needed: PermissionType, _ key: String, _ end: [UInt8] = []) -> Bool {
            (try? auth.check(needed, key: b(key), rangeEnd: end, identity: user)) != nil
        }
        #expect(allowed(.read, "a") && allowed(.read, "b\u{ff}") && allowed(.read, "d"))
        #expect(allowed(.read, "a", b("e")), "two adjacent grants cover their union")
        #expect(!allowed(.read, "a", b("e\0")), "one key past the union")
        #expect(!allowed(.write, "a", b("d")), "write covers only [c, e)")
        #expect(allowed(.write, "c", b("e")))
        #expect(allowed(.write, "k") && !allowed(.write, "k\0") && !allowed(.read, "k"))
        #expect(!allowed(.write, "k", b("l")), "a single-key grant does not cover a range")
        #expect(allowed(.read, "x", [0]) && allowed(.read, "zzz", [0]), "\\0 means no upper bound")
        #expect(!allowed(.read, "w", [0]))
        #expect(!allowed(.read, "e"))
        // Who is asking matters as much as what.
        #expect((try? auth.check(.read, key: b("a"), identity: .anonymous)) == nil)
        expectAuthError(.userEmpty) { try auth.check(.read, key: b("a"), identity: .anonymous) }
        expectAuthError(.oldRevision) {
            try auth.check(.read, key: b("a"), identity: AuthIdentity(user: "u", authRevision: user.authRevision - 1))
        }
        expectAuthError(.permissionDenied) {
            try auth.check(.read, key: b("a"), identity: AuthIdentity(user: "ghost", authRevision: user.authRevision))
        }
        try auth.check(.write, key: b("anything"), rangeEnd: [0], identity: AuthIdentity(user: "root", authRevision: auth.revision))
        expectAuthError(.permissionDenied) { try auth.checkAdmin(user) }
    }

    @Test func theStoreChecksClientCommandsWhenTheyAreAppliedAndKeepsTheStateAcrossReopens() throws {
        let scratch = try MVCCScratch()
        var store: MVCCStore? = try scratch.open()
        let setup: [AuthCommand] = [
            .userAdd(name: "root", passwordHash: [9, 9], noPassword: false), .userGrantRole(user: "root", role: "root"),
            .userAdd(name: "u", passwordHash: [1], noPassword: false), .roleAdd(name: "r"),
            .roleGrantPermission(role: "r", permission: KeyPermission(key: b("/u/"), rangeEnd: b("/u0"), type: .readWrite)),
            .userGrantRole(user: "u", role: "r"), .enable,
        ]
        for command in setup { try store!.run(.auth(command)).get() }
        let user = AuthIdentity(user: "u", authRevision: store!.authState.revision)
        func put(_ key: String, as identity: AuthIdentity) throws -> Result<KVResponse, KVError> {
            try store!.run(.authorized(identity, .put(PutRequest(key: b(key), value: b("v")))))
        }
        #expect(throws: Never.self) { try put("/u/a", as: user).get() }
        #expect(try put("/other", as: user) == .failure(.auth(.permissionDenied)))
        #expect(try put("/u/a", as: .anonymous) == .failure(.auth(.userEmpty)))
        // An admin change only root may make; the refused one leaves no trace.
        #expect(try store!.run(.authorized(user, .auth(.roleAdd(name: "x")))) == .failure(.auth(.permissionDenied)))
        #expect(store!.authState.roles["x"] == nil)
        // Any change bumps the revision: a request checked before it fails as stale rather than being judged anew.
        try store!.run(.authorized(AuthIdentity(user: "root", authRevision: user.authRevision), .auth(.roleAdd(name: "x")))).get()
        #expect(try put("/u/b", as: user) == .failure(.auth(.oldRevision)))
        // A transaction's compares count as reads.
        let fresh = AuthIdentity(user: "u", authRevision: store!.authState.revision)
        let txn = TxnRequest(compare: [Compare(key: b("/secret"), target: .version(0), result: .equal)],
                             success: [.put(PutRequest(key: b("/u/c"), value: b("v")))])
        #expect(try store!.run(.authorized(fresh, .txn(txn))) == .failure(.auth(.permissionDenied)))
        // Untagged commands come from the embedding program and the server itself: trusted.
        #expect(throws: Never.self) { try store!.run(.put(PutRequest(key: b("/other"), value: b("v")))).get() }

        let saved = store!.authState
        store = nil
        let reopened = try scratch.open()
        #expect(reopened.authState == saved)
        #expect(reopened.authState.users["root"]?.passwordHash == [9, 9])
        #expect(reopened.authState.roles["r"]?.permissions == [KeyPermission(key: b("/u/"), rangeEnd: b("/u0"), type: .readWrite)])
    }

    @Test func tokensExpireWithoutUseAndTheTableIsBounded() {
        let clock = ManualLeaseClock()
        var configuration = SimpleTokens.Configuration()
        configuration.ttl = .seconds(10)
        configuration.capacity = 3
        let tokens = SimpleTokens(clock: clock, configuration: configuration)
        tokens.assign("a.1", to: "alice")
        clock.advance(by: .seconds(9))
        #expect(tokens.user(for: "a.1") == "alice", "use renews the token")
        clock.advance(by: .seconds(9))
        #expect(tokens.user(for: "a.1") == "alice")
        clock.advance(by: .seconds(11))
        #expect(tokens.user(for: "a.1") == nil, "expired after the TTL without use")
        for index in 2...6 { tokens.assign("t.\(index)", to: "u\(index)") }
        #expect(tokens.count == 3)
        #expect(tokens.user(for: "t.6") == "u6", "the newest survive")
        tokens.follow(AuthChangeResponse(revision: 1, authRevision: 2, invalidatedUser: "u6"))
        #expect(tokens.user(for: "t.6") == nil)
        tokens.follow(AuthChangeResponse(revision: 1, authRevision: 3, invalidatesAllTokens: true))
        #expect(tokens.count == 0)
        #expect(SimpleTokens.index(of: "abc") == nil && SimpleTokens.index(of: ".5") == nil)
        #expect(SimpleTokens.makePrefix().count == 16)
    }
}
