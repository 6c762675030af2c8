import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import RaftKV
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A damaged or failing disk under a real kvserver: a corrupt database file is refused at start with an error
/// naming it; a storage write that fails (an injected I/O error, a full tmpfs) stops the member, which never goes on
/// acknowledging writes.
final class DiskFaultTests: XCTestCase {
    enum Damage: String { case garbage, truncated }

    /// The Raft log and the state database, each overwritten with random bytes or truncated to a third, after a
    /// clean stop with 200 keys written.
    func testCorruptDatabaseFileIsRefusedAtStartNamingTheFile() async throws {
        let cases: [(file: String, damage: Damage)] = [
            ("member/raft/raft.db", .garbage), ("member/raft/raft.db", .truncated),
            ("member/kv.db", .garbage), ("member/kv.db", .truncated),
        ]
        var random = SystemRandomNumberGenerator()
        for (file, damage) in cases {
            let cluster = try TestCluster(size: 1)
            try cluster.startAll()
            try cluster.waitHealthy()
            let written = try await Self.putMany(port: cluster.members[0].clientPort, count: 200, valueBytes: 1_024)
            XCTAssertEqual(written, 200, "\(file) \(damage): puts before the damage")
            cluster.kill(0, signal: SIGTERM)
            let path = cluster.dataDirectory(0).appendingPathComponent(file).path
            // Everything into the database file itself: damage to pages that the write-ahead log holds newer copies
            // of would go unread, and so unnoticed, as it should.
            try SQLiteDatabase(path: path, create: false).execute("PRAGMA wal_checkpoint(TRUNCATE)")
            let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            XCTAssertGreaterThan(size, 4_096, "\(file) holds more than its header")
            switch damage {
            case .garbage:
                let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &random) }
                try Data(bytes).write(to: URL(fileURLWithPath: path))
            case .truncated:
                XCTAssertEqual(truncate(path, off_t(size / 3)), 0)
            }
            let logStart = cluster.log(0).utf8.count
            try cluster.start(0)
            let status = cluster.waitForExit(0, timeout: 20)
            let log = String(cluster.log(0).utf8.dropFirst(logStart)) ?? ""
            print("\(file) \(damage) (\(size) bytes): exit status \(status.map(String.init) ?? "none, still running"); "
                + "log: \(log.split(separator: "\n").suffix(2).joined(separator: " | "))")
            XCTAssertNotNil(status, "\(file) \(damage): kvserver started on a damaged file (log: \(log.suffix(2_000)))")
            XCTAssertNotEqual(status, 0, "\(file) \(damage): kvserver exited 0 on a damaged file")
            XCTAssertTrue(log.contains(path), "\(file) \(damage): the error does not name \(path): \(log.suffix(2_000))")
        }
    }

    /// An injected I/O error (`KVSERVER_FAILPOINTS=point:40=error`) in the log's synced write and in the state's apply
    /// transaction: the member exits non-zero with the error in its log; once restarted without the fault, every
    /// acknowledged write is there.
    ///
    /// Regression: the Raft node stopped on the error, but the process lived on without it, answering every write
    /// with a timeout (the server's task group rethrew the store's error only once its body returned, and the body
    /// waited for a signal).
    func testStorageWriteErrorExitsTheProcessInsteadOfLeavingItWithoutARaftNode() async throws {
        for point in ["log-before-fsync", "apply-before-commit"] {
            let cluster = try TestCluster(size: 1)
            cluster.memberEnvironment[0] = ["KVSERVER_FAILPOINTS": "\(point):40=error"]
            try cluster.startAll()
            try cluster.waitHealthy()
            let port = cluster.members[0].clientPort
            var acknowledged: [String] = []
            var failedAfterwards = 0
            for index in 0..<300 {
                let key = "/disk/\(index)"
                if try await Self.put(port: port, key: key, value: "v\(index)") { acknowledged.append(key) } else {
                    failedAfterwards += 1
                }
                if cluster.members[0].process?.isRunning != true || failedAfterwards >= 20 { break }
            }
            let status = cluster.waitForExit(0, timeout: 10)
            if status == nil { cluster.kill(0) }
            let log = cluster.log(0)
            print("\(point)=error: \(acknowledged.count) puts acknowledged, then the member "
                + "\(status.map { "exited with status \($0)" } ?? "kept running"); log: "
                + "\(log.split(separator: "\n").filter { $0.contains("injected") }.prefix(2).joined(separator: " | "))")
            XCTAssertNotNil(status, "\(point)=error: the member kept running after a failed storage write")
            XCTAssertNotEqual(status, 0, "\(point)=error: the member exited 0 after a failed storage write")
            XCTAssertTrue(log.contains("failure point \(point) (pass 40): injected I/O error"),
                          "\(point)=error: the error is not in the log: \(log.suffix(2_000))")
            // Restarted without the fault: nothing acknowledged is missing.
            cluster.memberEnvironment[0] = nil
            try cluster.start(0)
            try cluster.waitHealthy()
            for key in acknowledged {
                let value = try await Self.get(port: port, key: key)
                XCTAssertNotNil(value, "\(point)=error: acknowledged put of \(key) lost")
            }
        }
    }

    /// A real full disk: the member's data directory on a 24 MiB tmpfs, filled with 64 KiB puts. The member must
    /// stop (or refuse every later write) with an error saying the disk is full; the writes it acknowledged are
    /// readable after it restarts on a disk with room. Needs root and a working `mount`; skipped otherwise.
    func testFullDiskStopsTheMember() async throws {
        guard getuid() == 0 else { throw XCTSkip("a tmpfs needs root (running as uid \(getuid()))") }
        let cluster = try TestCluster(size: 1)
        let directory = cluster.dataDirectory(0)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let mount = try TestCluster.run("/bin/mount", ["-t", "tmpfs", "-o", "size=24m", "tmpfs", directory.path], timeout: 10)
        guard mount.status == 0 else {
            print("testFullDiskStopsTheMember skipped: mount failed: \(mount.stderr)")
            throw XCTSkip("mount -t tmpfs failed: \(mount.stderr)")
        }
        var mounted = true
        defer {
            cluster.kill(0)
            if mounted { _ = try? TestCluster.run("/bin/umount", ["-l", directory.path], timeout: 10) }
        }
        try cluster.startAll()
        try cluster.waitHealthy()
        let port = cluster.members[0].clientPort
        var acknowledged: [String] = []
        var firstFailure: Int?
        var acknowledgedAfterFailure: [String] = []
        for index in 0..<1_000 {
            let key = "/full/\(index)"
            let value = String(repeating: Character(UnicodeScalar(UInt8(97 + index % 26))), count: 64 << 10)
            let ok = try await Self.put(port: port, key: key, value: value)
            if ok {
                acknowledged.append(key)
                if firstFailure != nil { acknowledgedAfterFailure.append(key) }
            } else if firstFailure == nil {
                firstFailure = index
            }
            if cluster.members[0].process?.isRunning != true { break }
            if let firstFailure, index - firstFailure >= 20 { break }
        }
        let status = cluster.waitForExit(0, timeout: 10)
        let log = cluster.log(0)
        let diskLines = log.split(separator: "\n").filter { $0.lowercased().contains("full") || $0.contains("space") }
        print("full tmpfs: \(acknowledged.count) puts of 64 KiB acknowledged, first failure at put \(firstFailure.map(String.init) ?? "none"), "
            + "\(acknowledgedAfterFailure.count) acknowledged after it; member "
            + "\(status.map { "exited with status \($0)" } ?? "still running"); log: \(diskLines.prefix(2).joined(separator: " | "))")
        XCTAssertNotNil(firstFailure, "24 MiB of tmpfs never filled up")
        XCTAssertTrue(status != nil || acknowledgedAfterFailure.isEmpty,
                      "the member went on acknowledging writes after one failed on a full disk: \(acknowledgedAfterFailure.prefix(5))")
        if let status { XCTAssertNotEqual(status, 0, "the member exited 0 on a full disk") }
        XCTAssertFalse(diskLines.isEmpty, "no error about the full disk in the log: \(log.suffix(2_000))")

        // Room again: move the data off the tmpfs, restart, and read back what was acknowledged.
        cluster.kill(0)
        let copy = cluster.root.appendingPathComponent("copied.etcd")
        try FileManager.default.copyItem(at: directory, to: copy)
        XCTAssertEqual(try TestCluster.run("/bin/umount", [directory.path], timeout: 10).status, 0)
        mounted = false
        try FileManager.default.removeItem(at: directory)
        try FileManager.default.moveItem(at: copy, to: directory)
        try cluster.start(0)
        try cluster.waitHealthy()
        var missing: [String] = []
        for key in acknowledged where try await Self.get(port: port, key: key) == nil { missing.append(key) }
        XCTAssertEqual(missing, [], "acknowledged puts lost after the disk filled up")
    }

    // MARK: Calls

    static func withClient<T: Sendable>(port: Int, _ body: @Sendable @escaping (EtcdClient) async throws -> T) async throws -> T {
        let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port),
                                                       transportSecurity: .plaintext)
        let client = GRPCClient(transport: transport)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await client.runConnections() }
            defer { client.beginGracefulShutdown() }
            return try await body(client)
        }
    }

    static func put(port: Int, key: String, value: String) async throws -> Bool {
        try await withClient(port: port) { client in
            var request = Etcdserverpb_PutRequest()
            request.key = Data(key.utf8)
            request.value = Data(value.utf8)
            var options = CallOptions.defaults
            options.timeout = .seconds(3)
            return (try? await Etcdserverpb_KV.Client(wrapping: client).put(request, options: options)) != nil
        }
    }

    static func get(port: Int, key: String) async throws -> String? {
        try await withClient(port: port) { client in
            var request = Etcdserverpb_RangeRequest()
            request.key = Data(key.utf8)
            var options = CallOptions.defaults
            options.timeout = .seconds(3)
            for _ in 0..<10 {
                if let response = try? await Etcdserverpb_KV.Client(wrapping: client).range(request, options: options) {
                    return response.kvs.first.map { String(decoding: $0.value, as: UTF8.self) }
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
            return nil
        }
    }

    static func putMany(port: Int, count: Int, valueBytes: Int) async throws -> Int {
        try await withClient(port: port) { client in
            var options = CallOptions.defaults
            options.timeout = .seconds(3)
            var done = 0
            for index in 0..<count {
                var request = Etcdserverpb_PutRequest()
                request.key = Data("/disk/\(index)".utf8)
                request.value = Data(repeating: UInt8(65 + index % 26), count: valueBytes)
                if (try? await Etcdserverpb_KV.Client(wrapping: client).put(request, options: options)) != nil { done += 1 }
            }
            return done
        }
    }
}
