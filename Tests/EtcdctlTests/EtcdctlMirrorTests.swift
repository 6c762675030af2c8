import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `make-mirror` between two single-member kvservers: ours and the real etcdctl mirror the same source prefix to
/// two destination prefixes at once, and both copies must come out the same, each source revision applied in one
/// destination txn.
final class EtcdctlMirrorTests: XCTestCase {
    nonisolated(unsafe) static var servers: [Server] = []
    nonisolated(unsafe) static var startFailure: String?

    override class func setUp() {
        super.setUp()
        do {
            for _ in 0..<2 {
                guard let server = try Server.start() else { break }
                servers.append(server)
            }
        } catch {
            startFailure = "\(error)"
        }
    }

    override class func tearDown() {
        servers.forEach { $0.stop() }
        servers = []
        super.tearDown()
    }

    func requireServers() throws -> (Server, Server) {
        guard Self.servers.count == 2 else {
            XCTFail("no servers: \(Self.startFailure ?? "unknown") (needs kvserver and /usr/bin/etcdctl)")
            throw CancellationError()
        }
        return (Self.servers[0], Self.servers[1])
    }

    func waitUntil(timeout: TimeInterval = 10, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return true }
            usleep(50_000)
        }
        return false
    }

    func testMirrorsBaseThenUpdates() throws {
        let (source, destination) = try requireServers()
        for step in [["put", "mm/a", "1"], ["put", "mm/b", "2"], ["put", "mm/b", "2b"], ["put", "elsewhere", "x"]] {
            try source.realEtcdctl(step)
        }
        let real = try Background.etcdctl(real: true, server: source,
                                          ["make-mirror", "--prefix", "mm/", "--dest-prefix", "real/", destination.endpoint])
        let ours = try Background.etcdctl(real: false, server: source,
                                          ["make-mirror", "--prefix", "mm/", "--dest-prefix", "ours/", destination.endpoint],
                                          env: ["MAKE_MIRROR_REPORT_INTERVAL": "200ms"])
        let rootCopy = try Background.etcdctl(real: false, server: source,
                                              ["make-mirror", "--prefix", "mm/", "--no-dest-prefix", destination.endpoint])
        func copy(_ prefix: String) throws -> String {
            try destination.realEtcdctl(["get", "--prefix", prefix]).stdout
                .replacingOccurrences(of: prefix, with: "P/")
        }
        let base = "P/a\n1\nP/b\n2b\n"
        XCTAssertTrue(try waitUntil { try copy("real/") == base && copy("ours/") == base }, "base: \((try? copy("ours/")) ?? "")")
        // The running count of mirrored changes, printed at each report.
        XCTAssertTrue(ours.waitForOutput { $0.hasSuffix("\n2\n") || $0 == "2\n" }, ours.stdout + ours.stderr)

        try source.realEtcdctl(["put", "mm/c", "3"])
        try source.realEtcdctl(["del", "mm/a"])
        let txn = try source.run(real: true, ["txn"], stdin: "\nput mm/d 4\nput mm/e 5\n\n\n")
        XCTAssertEqual(txn.stdout, "SUCCESS\n\nOK\n\nOK\n")
        try source.realEtcdctl(["put", "elsewhere2", "not mirrored"])
        let updated = "P/b\n2b\nP/c\n3\nP/d\n4\nP/e\n5\n"
        XCTAssertTrue(try waitUntil { try copy("real/") == updated && copy("ours/") == updated }, "updates: \((try? copy("ours/")) ?? "")")
        XCTAssertTrue(try waitUntil { try destination.realEtcdctl(["get", "e"]).stdout == "e\n5\n" }, "no-dest-prefix")
        XCTAssertEqual(try destination.realEtcdctl(["get", "a"]).stdout, "")
        XCTAssertEqual(try destination.realEtcdctl(["get", "--prefix", "elsewhere"]).stdout, "")
        XCTAssertTrue(ours.waitForOutput { $0.hasSuffix("\n6\n") }, ours.stdout + ours.stderr)
        // One source revision, one destination txn: d and e share a revision in both copies.
        for prefix in ["real/", "ours/"] {
            let d = try destination.realEtcdctl(["-w", "json", "get", prefix + "d"]).stdout
            let e = try destination.realEtcdctl(["-w", "json", "get", prefix + "e"]).stdout
            XCTAssertEqual(Self.modRevision(d), Self.modRevision(e), prefix)
            XCTAssertNotNil(Self.modRevision(d))
        }
        for mirror in [real, ours, rootCopy] {
            XCTAssertTrue(mirror.isRunning, mirror.stderr)
            XCTAssertEqual(mirror.stderr, "")
            mirror.signal(SIGKILL)
            _ = mirror.waitForExit()
        }
        XCTAssertEqual(real.stdout, "", "etcdctl reports every 30 s only")
    }

    static func modRevision(_ json: String) -> Int64? {
        guard let range = json.range(of: "\"mod_revision\":") else { return nil }
        return Int64(json[range.upperBound...].prefix { $0.isNumber })
    }

    func testArgumentErrorsAsEtcdctl() throws {
        let (source, destination) = try requireServers()
        for args in [["make-mirror"], ["make-mirror", "a", "b"],
                     ["make-mirror", "--dest-prefix", "x/", "--no-dest-prefix", destination.endpoint],
                     ["make-mirror", "--dest-cert", "/no/such/cert", "--dest-key", "/no/such/key", destination.endpoint],
                     ["make-mirror", "--dest-cert", "/no/such/cert", destination.endpoint],
                     ["make-mirror", "-h"]] {
            let a = try source.run(real: true, args), b = try source.run(real: false, args)
            XCTAssertEqual(a.status, b.status, "\(args)")
            XCTAssertEqual(a.stdout, b.stdout, "\(args)")
            XCTAssertEqual(a.stderr, b.stderr, "\(args)")
        }
    }
}
