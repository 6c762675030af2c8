import Foundation
import XCTest

/// A token the server forgets mid-run (`--auth-token-ttl 1`, and a `txn` that signs in, then waits for its input
/// longer than that): clientv3's retry interceptor logs the refusal, signs in again and retries once. Ours must do
/// the same, with the same output.
final class EtcdctlTokenTests: SharedServerTestCase {
    override class var serverArguments: [String] { ["--auth-token-ttl", "1"] }

    override class func prepare(_ server: Server) throws {
        try server.realEtcdctl(["user", "add", "root:rootpw"])
        try server.realEtcdctl(["auth", "enable"])
    }

    func testExpiredTokenIsRenewed() throws {
        let server = try requireServer()
        var outputs: [Server.Output] = []
        for (real, key) in [(true, "tk/real"), (false, "tk/ours")] {
            let txn = try Background.etcdctl(real: real, server: server, ["--user=root:rootpw", "txn"], keepStdin: true)
            // Signed in at start; the token expires while the input has not come.
            usleep(2_500_000)
            txn.write("\nput \(key) 1\n\n\n")
            txn.closeInput()
            let status = txn.waitForExit() ?? -9
            let output = EtcdctlComparisonTests.normalise(Server.Output(status: status, stdout: txn.stdout, stderr: txn.stderr),
                                                          base: Int64.max, lease: 0)
            outputs.append(output)
            XCTAssertEqual(try server.realEtcdctl(["--user=root:rootpw", "get", key]).stdout, "\(key)\n1\n")
        }
        XCTAssertEqual(outputs[0].status, 0, outputs[0].stderr)
        XCTAssertEqual(outputs[0].stdout, "SUCCESS\n\nOK\n")
        XCTAssertEqual(outputs[0].stderr.components(separatedBy: "etcdserver: invalid auth token").count, 2, outputs[0].stderr)
        XCTAssertEqual(outputs[0].status, outputs[1].status)
        XCTAssertEqual(outputs[0].stdout, outputs[1].stdout)
        XCTAssertEqual(outputs[0].stderr, outputs[1].stderr)
    }

    /// tablewriter wraps cells longer than 30 characters at spaces (and the column is then 30 wide): the error
    /// cell of a refused sign-in in `endpoint health -w table`, in every format for good measure.
    func testTableWrapsLongCells() throws {
        let server = try requireServer()
        for format in ["table", "simple", "json", "fields"] {
            let args = ["--user=root:wrong", "-w", format, "endpoint", "health"]
            let a = EtcdctlComparisonTests.normalise(try server.run(real: true, args), base: Int64.max, lease: 0)
            let b = EtcdctlComparisonTests.normalise(try server.run(real: false, args), base: Int64.max, lease: 0)
            XCTAssertEqual(a.status, b.status, format)
            XCTAssertEqual(a.stdout, b.stdout, format)
            XCTAssertEqual(a.stderr, b.stderr, format)
            if format == "table" {
                XCTAssertTrue(b.stdout.contains("|                 |        |      |     failed, invalid user ID or |\n"), b.stdout)
            }
        }
    }
}
