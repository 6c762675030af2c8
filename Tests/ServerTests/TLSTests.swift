import ClusterObjects
import Foundation
import TestSupport
import RaftKV
import XCTest

/// TLS on client and peer URLs with etcd's flags, driven by the real etcdctl 3.4: a three-member cluster that
/// speaks only https between members and to clients, checks client certificates, refuses plaintext and untrusted
/// certificates, and — with auth on — takes a certificate's common name as the user, as etcd does.
final class TLSTests: XCTestCase {
    private var cluster: TestCluster!
    private var material: TLSMaterial!

    override func setUpWithError() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kvserver-tls-\(UUID().uuidString.prefix(8))")
        material = try TLSMaterial.make(in: directory, clients: ["root", "alice"])
        cluster = try TestCluster(size: 3, tls: material)
        cluster.extraFlags += ["--bcrypt-cost", "4"]
        try cluster.startAll()
        try cluster.waitHealthy()
    }

    override func tearDown() {
        cluster = nil
        if let material { try? FileManager.default.removeItem(at: material.directory) }
    }

    func testAClusterOverHTTPSServesTrustedClientsOnlyAndNamesUsersByCertificate() throws {
        // Replication over https peers: a write through one member is read on the others.
        XCTAssertEqual(try cluster.etcdctl(["put", "/k", "v"], endpoints: cluster.members[0].endpoint).status, 0)
        for member in cluster.members {
            let read = try cluster.etcdctl(["get", "/k", "--consistency=s"], endpoints: member.endpoint)
            XCTAssertEqual(read.stdout, "/k\nv\n", "\(member.name): \(read.stderr)")
        }
        let members = try cluster.etcdctl(["member", "list"])
        XCTAssertEqual(members.stdout.components(separatedBy: "https://127.0.0.1:").count - 1, 6, members.stdout)

        // Refused: a plaintext client, a client without a certificate, one whose certificate another CA signed.
        let endpoint = cluster.members[1].endpoint
        let plain = try TestCluster.run(try TestCluster.etcdctlPath(),
                                        ["--endpoints=http://127.0.0.1:\(cluster.members[1].clientPort)",
                                         "--dial-timeout=2s", "--command-timeout=3s", "get", "/k"], timeout: 20)
        XCTAssertNotEqual(plain.status, 0, "plaintext on a TLS port: \(plain.stdout)")
        let anonymous = try TestCluster.run(try TestCluster.etcdctlPath(),
                                            ["--endpoints=\(endpoint)", "--cacert", material.path("ca.crt"),
                                             "--dial-timeout=2s", "--command-timeout=3s", "get", "/k"], timeout: 20)
        XCTAssertNotEqual(anonymous.status, 0, "no client certificate: \(anonymous.stdout)")
        cluster.tlsClient = "stranger"
        let stranger = try cluster.etcdctl(["get", "/k", "--dial-timeout=2s", "--command-timeout=3s"], endpoints: endpoint)
        XCTAssertNotEqual(stranger.status, 0, "a certificate from another CA: \(stranger.stdout)")
        XCTAssertFalse(stranger.stdout.contains("/k"))

        // With auth on, the certificate's common name is the user: no password needed, limits apply.
        cluster.tlsClient = "root"
        for arguments in [["user", "add", "root:rootpw"], ["user", "add", "alice:alicepw"], ["role", "add", "app"],
                          ["role", "grant-permission", "app", "readwrite", "/app/", "--prefix"],
                          ["user", "grant-role", "alice", "app"], ["auth", "enable"]] {
            let output = try cluster.etcdctl(arguments, endpoints: endpoint)
            XCTAssertEqual(output.status, 0, "\(arguments): \(output.stderr)")
        }
        XCTAssertEqual(try cluster.etcdctl(["get", "/k"], endpoints: endpoint).stdout, "/k\nv\n", "root by certificate")
        cluster.tlsClient = "alice"
        XCTAssertEqual(try cluster.etcdctl(["put", "/app/x", "1"], endpoints: endpoint).status, 0, "alice in her prefix")
        let denied = try cluster.etcdctl(["get", "/k"], endpoints: endpoint)
        XCTAssertNotEqual(denied.status, 0)
        XCTAssertTrue(denied.stderr.contains("Error: etcdserver: permission denied"), denied.stderr)
        // A token still wins over the certificate, as in etcd.
        let asRoot = try cluster.etcdctl(["--user", "root:rootpw", "get", "/k"], endpoints: endpoint)
        XCTAssertEqual(asRoot.stdout, "/k\nv\n", asRoot.stderr)
    }

    func testHealthIsServedOverHTTPSToo() throws {
        let curl = try TestCluster.run("/usr/bin/curl", ["-s", "--http1.1", "--cacert", material.path("ca.crt"),
                                                         "--cert", material.path("root.crt"), "--key", material.path("root.key"),
                                                         "\(cluster.members[0].clientURL)/health"], timeout: 10)
        XCTAssertEqual(curl.stdout, #"{"health":"true","reason":""}"#, curl.stderr)
    }

    /// The object layer's remote backend against this cluster: https with a client certificate, signed in as a user
    /// limited to /registry/, failing over when the member it uses dies, and signing in again when its token is
    /// revoked.
    func testRemoteObjectStoreOverTLSWithAuthFailsOverAndSignsInAgain() async throws {
        for arguments in [["user", "add", "root:rootpw"], ["user", "add", "apiserver:secret"], ["role", "add", "registry"],
                          ["role", "grant-permission", "registry", "readwrite", "/registry/", "--prefix"],
                          ["user", "grant-role", "apiserver", "registry"], ["auth", "enable"]] {
            let output = try cluster.etcdctl(arguments)
            XCTAssertEqual(output.status, 0, "\(arguments): \(output.stderr)")
        }
        var options = RemoteBackend.Options()
        options.trustedCAFile = material.path("ca.crt")
        options.certificateFile = material.path("alice.crt")
        options.keyFile = material.path("alice.key")
        options.user = "apiserver"
        options.password = "secret"
        options.timeout = .seconds(10)
        let backend = try RemoteBackend(endpoints: cluster.members.map(\.clientURL), options: options)
        let objects = ObjectStore(backend: backend)
        func pod(_ name: String) -> Pod {
            Pod(metadata: ObjectMeta(name: name, namespace: "tls"),
                spec: PodSpec(containers: [Container(name: "app", image: "nginx")]))
        }
        do {
            _ = try await objects.namespaces.create(Namespace(metadata: ObjectMeta(name: "tls")))
            for index in 0..<5 { _ = try await objects.pods.create(pod("before-\(index)")) }

            // The user may not write outside /registry/.
            do {
                _ = try await backend.txn(TxnRequest(success: [.put(PutRequest(key: Array("/elsewhere".utf8)))]))
                XCTFail("a write outside /registry/ succeeded")
            } catch let error as KVError {
                XCTAssertEqual(error, .auth(.permissionDenied))
            }

            // The member in use dies: the next calls go to another one.
            let used = try XCTUnwrap(cluster.members.firstIndex { $0.clientURL == backend.currentEndpoint })
            cluster.kill(used)
            for index in 0..<5 { _ = try await objects.pods.create(pod("after-\(index)")) }
            XCTAssertNotEqual(backend.currentEndpoint, cluster.members[used].clientURL)

            // A password change revokes the token; the backend signs in again (same password set back here).
            cluster.tlsClient = "root"
            let alive = cluster.members.indices.first { $0 != used }!
            for password in ["changed", "secret"] {
                let output = try cluster.etcdctl(["user", "passwd", "apiserver", "--interactive=false"],
                                                 endpoints: cluster.members[alive].endpoint, stdin: password + "\n")
                XCTAssertEqual(output.status, 0, output.stderr)
            }
            let pods = try await objects.pods.list(namespace: "tls")
            XCTAssertEqual(Set(pods.items.compactMap(\.metadata.name)),
                           Set((0..<5).flatMap { ["before-\($0)", "after-\($0)"] }))
        } catch {
            await backend.close()
            throw error
        }
        await backend.close()
    }
}
