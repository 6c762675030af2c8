import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `defrag --data-dir` on a kvserver data directory (its SQLite state database, where etcd has bbolt's
/// member/snap/db): it waits while a server has the directory open, as etcd 3.4's does, then rebuilds the database
/// without its free pages, and the server serves the same keys from the smaller file.
final class EtcdctlDefragDataDirTests: XCTestCase {
    func dbSize(_ server: Server) throws -> Int64 {
        let output = try server.realEtcdctl(["-w", "json", "endpoint", "status"])
        guard let range = output.stdout.range(of: "\"dbSize\":") else {
            XCTFail("status: \(output.stdout) \(output.stderr)")
            throw CancellationError()
        }
        return Int64(output.stdout[range.upperBound...].prefix { $0.isNumber }) ?? 0
    }

    func testWaitsForTheServerThenDefragments() throws {
        guard let server = try Server.start() else {
            return XCTFail("needs kvserver, our etcdctl and /usr/bin/etcdctl")
        }
        defer { server.stop() }
        // Free pages to give back: large values, deleted and compacted away.
        let big = String(repeating: "x", count: 50_000)
        for index in 0..<40 { try server.realEtcdctl(["put", "junk/\(index)", big]) }
        try server.realEtcdctl(["del", "--prefix", "junk/"])
        try server.realEtcdctl(["put", "keep/a", "1"])
        try server.realEtcdctl(["put", "keep/b", "2"])
        let revision = try server.currentRevision()
        XCTAssertEqual(try server.realEtcdctl(["compaction", "--physical", String(revision)]).status, 0)
        let before = try dbSize(server)

        let defrag = try Background(Server.ourEtcdctl!.path, ["defrag", "--data-dir", server.dataDirectory.path],
                                    environment: ["ETCDCTL_API": "3"])
        let waiting = "waiting for etcd to close and release its lock on \""
            + server.dataDirectory.appendingPathComponent("member/kv.db").path
            + "\". To defrag a running etcd instance, omit --data-dir.\n"
        let deadline = Date().addingTimeInterval(10)
        while defrag.stderr.isEmpty && Date() < deadline { usleep(50_000) }
        XCTAssertEqual(defrag.stderr, waiting)
        usleep(500_000)
        XCTAssertTrue(defrag.isRunning, "defrag must wait while the server has the database")

        server.pause()
        XCTAssertEqual(defrag.waitForExit(timeout: 30), 0, defrag.stderr)
        // etcd 3.4 prints nothing once the offline defragmentation is done.
        XCTAssertEqual(defrag.stdout, "")
        XCTAssertEqual(defrag.stderr, waiting)

        XCTAssertTrue(try server.resume(), "kvserver did not restart on the defragmented directory")
        let get = try server.realEtcdctl(["get", "--prefix", "keep/"])
        XCTAssertEqual(get.stdout, "keep/a\n1\nkeep/b\n2\n")
        XCTAssertEqual(try server.currentRevision(), revision)
        let after = try dbSize(server)
        XCTAssertLessThan(after, before / 4, "defragmented \(before) -> \(after) bytes")
    }

    /// A directory that is not there: etcd's backend panics (exit 2) after capnslog's critical line. Ours prints
    /// the same two lines (our database's path in them) without Go's goroutine dump.
    func testMissingDirectoryFailsAsEtcdctl() throws {
        guard let etcdctl = Server.ourEtcdctl, FileManager.default.isExecutableFile(atPath: Server.realEtcdctlPath) else {
            return XCTFail("needs our etcdctl and /usr/bin/etcdctl")
        }
        let missing = FileManager.default.temporaryDirectory.appendingPathComponent("no-such-dir-\(UUID().uuidString.prefix(8))").path
        for dir in [missing, "relative/\(UUID().uuidString.prefix(8))"] {
            let args = ["defrag", "--data-dir", dir]
            let real = try Server.run(Server.realEtcdctlPath, args, environment: ["ETCDCTL_API": "3"], stdin: nil, timeout: 20, keepStdinOpen: false)
            let ours = try Server.run(etcdctl.path, args, environment: ["ETCDCTL_API": "3"], stdin: nil, timeout: 20, keepStdinOpen: false)
            XCTAssertEqual(ours.status, real.status)
            XCTAssertEqual(ours.status, 2)
            XCTAssertEqual(ours.stdout, real.stdout)
            func normalised(_ text: String) -> String {
                text.replacingOccurrences(of: "member/snap/db", with: "member/kv.db")
                    .replacingOccurrences(of: #"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} "#, with: "TS ", options: .regularExpression)
            }
            let expected = normalised(real.stderr).components(separatedBy: "goroutine ").first ?? ""
            XCTAssertEqual(normalised(ours.stderr), expected)
            XCTAssertTrue(ours.stderr.contains("cannot open database at \(dir)/member/kv.db (open \(dir)/member/kv.db: no such file or directory)\n"), ours.stderr)
        }
    }
}
