import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import XCTest

/// etcd's v3 auth on a real three-member cluster, through the real etcdctl 3.4 and the gRPC API: changes made
/// through a follower, tokens used on another member, what a user limited to some keys may do, root-only calls,
/// forged and stale tokens, and auth state surviving a restart. (EtcdParityTests compares the etcdctl output of
/// the same commands with real etcd's.)
final class AuthTests: XCTestCase {
    private var cluster: TestCluster!

    override func setUpWithError() throws {
        cluster = try TestCluster(size: 3)
        // The cheapest password hashing etcd allows: these tests sign in often.
        cluster.extraFlags += ["--bcrypt-cost", "4"]
        try cluster.startAll()
        try cluster.waitHealthy()
    }

    override func tearDown() {
        cluster = nil
    }

    /// etcdctl on one member (`index`), as `user` ("name:password") when given.
    @discardableResult
    private func etcdctl(_ arguments: String..., on index: Int = 0, as user: String? = nil,
                         stdin: String? = nil) throws -> TestCluster.Output {
        let credentials = user.map { ["--user", $0] } ?? []
        return try cluster.etcdctl(credentials + arguments, endpoints: cluster.members[index].endpoint, stdin: stdin)
    }

    private func assertSucceeds(_ output: TestCluster.Output, _ what: String,
                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(output.status, 0, "\(what): \(output.stdout)\(output.stderr)", file: file, line: line)
    }

    private func assertFails(_ output: TestCluster.Output, with message: String, _ what: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotEqual(output.status, 0, "\(what) should fail: \(output.stdout)", file: file, line: line)
        XCTAssertTrue(output.stderr.contains("Error: \(message)"), "\(what): \(output.stderr)", file: file, line: line)
    }

    /// Enables auth with root and a user `alice` limited to reading `/app/` and writing `[/app/w, /app/x)`.
    private func setUpUsers(via index: Int) throws {
        assertSucceeds(try etcdctl("user", "add", "root:rootpw", on: index), "add root")
        assertSucceeds(try etcdctl("user", "add", "alice:alicepw", on: index), "add alice")
        assertSucceeds(try etcdctl("role", "add", "app", on: index), "add role")
        assertSucceeds(try etcdctl("role", "grant-permission", "app", "read", "/app/", "--prefix", on: index), "grant read")
        assertSucceeds(try etcdctl("role", "grant-permission", "app", "write", "/app/w", "/app/x", on: index), "grant write")
        assertSucceeds(try etcdctl("user", "grant-role", "alice", "app", on: index), "grant role")
        assertSucceeds(try etcdctl("auth", "enable", on: index), "enable")
    }

    func testAUserLimitedToAPrefixIsDeniedOutsideItOnEveryMember() throws {
        // Every change goes through a follower-or-leader member 1; every check is made on all three members.
        try setUpUsers(via: 1)
        assertSucceeds(try etcdctl("put", "/app/w1", "v", on: 2, as: "alice:alicepw"), "write inside the write range")
        for index in 0..<3 {
            let read = try etcdctl("get", "--prefix", "/app/", on: index, as: "alice:alicepw")
            assertSucceeds(read, "read the prefix on member \(index)")
            XCTAssertEqual(read.stdout, "/app/w1\nv\n")
            assertFails(try etcdctl("get", "/other", on: index, as: "alice:alicepw"), with: "etcdserver: permission denied",
                        "read outside the prefix on member \(index)")
            assertFails(try etcdctl("put", "/app/r", "v", on: index, as: "alice:alicepw"),
                        with: "etcdserver: permission denied", "write outside the write range on member \(index)")
            // A range end beyond the granted one is not covered, even though its start is.
            assertFails(try etcdctl("del", "/app/w", "/app/y", on: index, as: "alice:alicepw"),
                        with: "etcdserver: permission denied", "delete past the write range on member \(index)")
            assertFails(try etcdctl("get", "/app/w1", on: index), with: "etcdserver: user name is empty",
                        "no credentials on member \(index)")
            assertFails(try etcdctl("get", "/app/w1", on: index, as: "alice:wrong"),
                        with: "etcdserver: authentication failed, invalid user ID or password", "wrong password")
        }
        // A transaction is checked on every key it compares or touches, in both branches.
        let txn = "value(\"/secret\") = \"x\"\n\nput /app/w2 a\n\nput /app/w3 b\n\n"
        assertFails(try etcdctl("txn", on: 0, as: "alice:alicepw", stdin: txn), with: "etcdserver: permission denied",
                    "compare outside the read prefix")
        let allowed = "value(\"/app/w1\") = \"v\"\n\nput /app/w2 a\n\nget /app/w1\n\n"
        assertSucceeds(try etcdctl("txn", on: 0, as: "alice:alicepw", stdin: allowed), "transaction inside the grants")
        // Root-only calls.
        for arguments in [["user", "list"], ["role", "add", "x"], ["member", "add", "m4", "--peer-urls=http://127.0.0.1:1"],
                          ["auth", "disable"]] {
            let output = try cluster.etcdctl(["--user", "alice:alicepw"] + arguments, endpoints: cluster.members[2].endpoint)
            assertFails(output, with: "etcdserver: permission denied", arguments.joined(separator: " "))
        }
        for arguments in [["endpoint", "hashkv"], ["defrag"]] {
            let output = try cluster.etcdctl(["--user", "alice:alicepw"] + arguments, endpoints: cluster.members[0].endpoint)
            XCTAssertNotEqual(output.status, 0, arguments.joined(separator: " "))
            XCTAssertTrue(output.stderr.contains("code = PermissionDenied desc = etcdserver: permission denied"),
                          "\(arguments): \(output.stderr)")
        }
        assertSucceeds(try cluster.etcdctl(["--user", "root:rootpw", "endpoint", "hashkv", "--cluster"]), "root hashkv")

        // Leases: a signed-in user may grant and list; the keys of a lease are shown only to who may read them all.
        let grant = try etcdctl("lease", "grant", "600", on: 1, as: "root:rootpw")
        assertSucceeds(grant, "grant")
        let lease = try XCTUnwrap(grant.stdout.split(separator: " ").dropFirst().first.map(String.init))
        assertSucceeds(try etcdctl("put", "/secret/leased", "v", "--lease=\(lease)", on: 1, as: "root:rootpw"), "leased key")
        assertSucceeds(try etcdctl("lease", "timetolive", lease, "--keys", on: 0, as: "root:rootpw"), "root sees the keys")
        assertFails(try etcdctl("lease", "timetolive", lease, "--keys", on: 0, as: "alice:alicepw"),
                    with: "etcdserver: permission denied", "alice may not see a lease holding /secret/leased")
        assertFails(try etcdctl("lease", "revoke", lease, on: 0, as: "alice:alicepw"),
                    with: "failed to revoke lease (etcdserver: permission denied)", "nor revoke it")
        assertSucceeds(try etcdctl("lease", "list", on: 2, as: "alice:alicepw"), "alice lists leases")
        assertFails(try etcdctl("lease", "list", on: 2), with: "etcdserver: user name is empty", "anonymous lease list")
    }

    func testPermissionChangesApplyAtOnceAndPasswordChangesEndOldTokens() async throws {
        try setUpUsers(via: 0)
        let port = cluster.members[2].clientPort
        let token = try await authenticate(user: "alice", password: "alicepw", port: port)
        try await put("/app/w5", "1", token: token, port: port)
        // Revoking the write permission is seen by the next request, with the same token.
        assertSucceeds(try etcdctl("role", "revoke-permission", "app", "/app/w", "/app/x", on: 1, as: "root:rootpw"),
                       "revoke write")
        try await assertRPCError(code: .permissionDenied, message: "etcdserver: permission denied") {
            try await self.put("/app/w5", "2", token: token, port: port)
        }
        // A new password ends the tokens issued with the old one, on every member.
        assertSucceeds(try etcdctl("user", "passwd", "alice", "--interactive=false", on: 0, as: "root:rootpw",
                                   stdin: "newpw\n"), "change password")
        try await assertRPCError(code: .unauthenticated, message: "etcdserver: invalid auth token") {
            _ = try await self.get("/app/w5", token: token, port: port)
        }
        let fresh = try await authenticate(user: "alice", password: "newpw", port: port)
        let value = try await get("/app/w5", token: fresh, port: port)
        XCTAssertEqual(value, "1")
    }

    func testForgedAndUnknownTokensAreRefused() async throws {
        try setUpUsers(via: 0)
        let port = cluster.members[0].clientPort
        for forged in ["not-a-token", "abcdefghijklmnop.1", "abcdefghijklmnop.x", ""] {
            try await assertRPCError(code: .unauthenticated, message: "etcdserver: invalid auth token") {
                _ = try await self.get("/app/a", token: forged, port: port)
            }
        }
        // A token names the log entry that issued it: one from the future is not waited for forever.
        try await assertRPCError(code: .unauthenticated, message: "etcdserver: invalid auth token") {
            _ = try await self.get("/app/a", token: "abcdefghijklmnop.999999999", port: port)
        }
        try await assertRPCError(code: .invalidArgument, message: "etcdserver: authentication failed, invalid user ID or password") {
            _ = try await self.authenticate(user: "nobody", password: "x", port: port)
        }
    }

    func testAuthStateSurvivesRestartsButTokensDoNot() async throws {
        try setUpUsers(via: 0)
        let port = cluster.members[1].clientPort
        let token = try await authenticate(user: "alice", password: "alicepw", port: port)
        for index in 0..<3 { cluster.kill(index, signal: SIGTERM) }
        try cluster.startAll()
        let deadline = Date().addingTimeInterval(30)
        var health = TestCluster.Output(status: -1, stdout: "", stderr: "")
        while Date() < deadline {
            health = try cluster.etcdctl(["--user", "root:rootpw", "endpoint", "health", "--command-timeout=2s"], timeout: 10)
            if health.status == 0 { break }
            usleep(200_000)
        }
        XCTAssertEqual(health.status, 0, "cluster healthy again as root: \(health.stdout)\(health.stderr)")
        // Tokens live in memory, as etcd's simple tokens: clients sign in again.
        try await assertRPCError(code: .unauthenticated, message: "etcdserver: invalid auth token") {
            _ = try await self.get("/app/a", token: token, port: port)
        }
        assertFails(try etcdctl("get", "/other", on: 2, as: "alice:alicepw"), with: "etcdserver: permission denied",
                    "the limits survive the restart")
        // etcdctl 3.4 has no `auth status`: ask over gRPC.
        let enabled = try await withClient(port: cluster.members[2].clientPort) { client in
            try await Etcdserverpb_Auth.Client(wrapping: client).authStatus(Etcdserverpb_AuthStatusRequest())
        }
        XCTAssertTrue(enabled.enabled)
        XCTAssertGreaterThan(enabled.authRevision, 1)
    }

    // MARK: gRPC helpers

    private func withClient<T: Sendable>(
        port: Int, _ body: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
    ) async throws -> T {
        let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port),
                                                       transportSecurity: .plaintext)
        return try await withGRPCClient(transport: transport) { client in try await body(client) }
    }

    private func authenticate(user: String, password: String, port: Int) async throws -> String {
        try await withClient(port: port) { client in
            var request = Etcdserverpb_AuthenticateRequest()
            request.name = user
            request.password = password
            return try await Etcdserverpb_Auth.Client(wrapping: client).authenticate(request).token
        }
    }

    private func put(_ key: String, _ value: String, token: String, port: Int) async throws {
        try await withClient(port: port) { client in
            var request = Etcdserverpb_PutRequest()
            request.key = Data(key.utf8)
            request.value = Data(value.utf8)
            _ = try await Etcdserverpb_KV.Client(wrapping: client).put(request, metadata: ["token": .string(token)])
        }
    }

    private func get(_ key: String, token: String, port: Int) async throws -> String? {
        try await withClient(port: port) { client in
            var request = Etcdserverpb_RangeRequest()
            request.key = Data(key.utf8)
            let response = try await Etcdserverpb_KV.Client(wrapping: client).range(request, metadata: ["token": .string(token)])
            return response.kvs.first.map { String(decoding: $0.value, as: UTF8.self) }
        }
    }

    private func assertRPCError(code: RPCError.Code, message: String, file: StaticString = #filePath, line: UInt = #line,
                                _ body: () async throws -> Void) async throws {
        do {
            try await body()
            XCTFail("expected \(code) \(message)", file: file, line: line)
        } catch let error as RPCError {
            XCTAssertEqual(error.code, code, "\(error)", file: file, line: line)
            XCTAssertEqual(error.message, message, file: file, line: line)
        }
    }
}
