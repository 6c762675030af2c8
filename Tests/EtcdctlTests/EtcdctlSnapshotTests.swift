import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `snapshot status` and `snapshot restore` on kvserver's snapshots (its state database and a SHA-256, not a bbolt
/// file): the figures come from our format, the argument, file and hash errors are compared with the real
/// etcdctl's (which checks the hash before it opens the database), and a restored three-member cluster serves the
/// snapshot's keys at its revision.
final class EtcdctlSnapshotTests: SharedServerTestCase {
    /// simple: `hash, revision, total keys, total size`.
    func status(_ server: Server, _ path: String) throws -> (hash: String, revision: Int64, keys: Int, size: String) {
        let output = try server.run(real: false, ["snapshot", "status", path], withEndpoints: false)
        XCTAssertEqual(output.status, 0, output.stderr)
        let fields = output.stdout.trimmingCharacters(in: .newlines).components(separatedBy: ", ")
        guard fields.count == 4, let revision = Int64(fields[1]), let keys = Int(fields[2]) else {
            XCTFail("status: \(output.stdout)")
            throw CancellationError()
        }
        return (fields[0], revision, keys, fields[3])
    }

    /// On a terminal `snapshot save` draws a progress bar on stderr; through a pipe (scripts) it prints etcdctl's
    /// output only, as the other tests compare.
    func testSaveDrawsAProgressBarOnlyOnATerminal() throws {
        let server = try requireServer()
        try server.realEtcdctl(["put", "progress/key", String(repeating: "v", count: 4_000)])
        let piped = server.root.appendingPathComponent("piped.db").path
        let plain = try server.run(real: false, ["snapshot", "save", piped])
        XCTAssertEqual(plain.status, 0)
        XCTAssertFalse(plain.stderr.contains("Downloading"), plain.stderr)
        let onTerminal = server.root.appendingPathComponent("terminal.db").path
        // util-linux's script(1) gives the command a pseudo-terminal and copies what it draws to our pipe.
        let command = [Server.ourEtcdctl!.path, "--endpoints=\(server.endpoint)", "snapshot", "save", onTerminal].joined(separator: " ")
        let drawn = try Server.run("/usr/bin/script", ["-qec", command, "/dev/null"],
                                   environment: ProcessInfo.processInfo.environment.merging(["ETCDCTL_API": "3"]) { $1 },
                                   stdin: nil, timeout: 20, keepStdinOpen: false)
        XCTAssertEqual(drawn.status, 0, drawn.stdout + drawn.stderr)
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: onTerminal)[.size] as? Int)
        let full = "Downloading snapshot [" + String(repeating: "#", count: 40) + "]"
        XCTAssertTrue(drawn.stdout.contains(full), drawn.stdout)
        let mebibytes = String(format: "%.1f MiB", Double(size) / 1_048_576)
        XCTAssertTrue(drawn.stdout.contains("\(mebibytes) / \(mebibytes)"), "\(size) bytes: \(drawn.stdout)")
        XCTAssertTrue(drawn.stdout.contains("Snapshot saved at \(onTerminal)"), drawn.stdout)
    }

    func testStatus() throws {
        let server = try requireServer()
        for (index, value) in ["1", "2", "3", "4", "4b"].enumerated() {
            try server.realEtcdctl(["put", "st/\(index % 4)", value])
        }
        let first = server.root.appendingPathComponent("status1.db").path
        XCTAssertEqual(try server.run(real: false, ["snapshot", "save", first]).status, 0)
        let before = try status(server, first)
        XCTAssertEqual(before.revision, try server.currentRevision())
        // Each new key adds two rows: its revision in the history and its latest version.
        for index in 0..<3 { try server.realEtcdctl(["put", "st/new\(index)", "v"]) }
        let second = server.root.appendingPathComponent("status2.db").path
        XCTAssertEqual(try server.run(real: false, ["snapshot", "save", second]).status, 0)
        let after = try status(server, second)
        XCTAssertEqual(after.revision, before.revision + 3)
        XCTAssertEqual(after.keys, before.keys + 6)
        XCTAssertNotEqual(after.hash, before.hash)
        // The same figures in every format.
        let hash = UInt32(after.hash, radix: 16)!
        let json = try server.run(real: false, ["-w", "json", "snapshot", "status", second], withEndpoints: false)
        XCTAssertTrue(json.stdout.hasPrefix("{\"hash\":\(hash),\"revision\":\(after.revision),\"totalKey\":\(after.keys),\"totalSize\":"), json.stdout)
        let fields = try server.run(real: false, ["-w", "fields", "snapshot", "status", second], withEndpoints: false)
        XCTAssertTrue(fields.stdout.hasPrefix("\"Hash\" : \(hash)\n\"Revision\" : \(after.revision)\n\"Keys\" : \(after.keys)\n\"Size\" : "), fields.stdout)
        let table = try server.run(real: false, ["-w", "table", "snapshot", "status", second], withEndpoints: false)
        // etcdctl prints the hash with %x, so it has no leading zeros, and tablewriter centres the header over it.
        let gap = max(0, after.hash.count - 4), header = String(repeating: " ", count: 1 + gap / 2) + "HASH"
            + String(repeating: " ", count: 1 + gap - gap / 2)
        XCTAssertTrue(table.stdout.contains("|\(header)| REVISION | TOTAL KEYS | TOTAL SIZE |"), table.stdout)
        XCTAssertTrue(table.stdout.contains("| \(after.hash) |"), table.stdout)
        // Arguments and missing files fail as with etcdctl.
        for args in [["snapshot", "status"], ["snapshot", "status", "/no/such/snapshot.db"], ["snapshot", "status", "-h"],
                     ["-w", "protobuf", "snapshot", "status", "/no/such/snapshot.db"]] {
            let a = try server.run(real: true, args, withEndpoints: false), b = try server.run(real: false, args, withEndpoints: false)
            XCTAssertEqual(a.status, b.status, "\(args)")
            XCTAssertEqual(a.stdout, b.stdout, "\(args)")
            XCTAssertEqual(a.stderr, b.stderr, "\(args)")
        }
    }

    /// zap's epoch timestamps vary.
    static func normaliseLog(_ text: String) -> String {
        text.replacingOccurrences(of: #""ts":[0-9.e+]+"#, with: #""ts":TS"#, options: .regularExpression)
    }

    func testRestoreErrorsAsEtcdctl() throws {
        let server = try requireServer()
        try server.realEtcdctl(["put", "re/a", "1"])
        let snapshot = server.root.appendingPathComponent("errors.db").path
        XCTAssertEqual(try server.run(real: false, ["snapshot", "save", snapshot]).status, 0)
        var data = try Data(contentsOf: URL(fileURLWithPath: snapshot))
        let corrupt = server.root.appendingPathComponent("corrupt.db").path
        data[100] ^= 0xFF
        try data.write(to: URL(fileURLWithPath: corrupt))
        let unhashed = server.root.appendingPathComponent("unhashed.db").path
        try data.dropLast(32).write(to: URL(fileURLWithPath: unhashed))
        let dir = server.root.appendingPathComponent("restore-errors").path
        try FileManager.default.createDirectory(atPath: dir + "/exists", withIntermediateDirectories: true)
        let cases: [[String]] = [
            ["snapshot", "restore"],
            ["snapshot", "restore", snapshot, "--data-dir", dir + "/exists"],
            ["snapshot", "restore", snapshot, "--data-dir", dir + "/x", "--name", "nobody"],
            ["snapshot", "restore", snapshot, "--data-dir", dir + "/x", "--name", "m1", "--initial-cluster", "m1=http://127.0.0.1:1"],
            ["snapshot", "restore", snapshot, "--data-dir", dir + "/x", "--initial-cluster", "default=http://localhost:2380,b=http://localhost:2380"],
            ["snapshot", "restore", "/no/such/file", "--data-dir", dir + "/x"],
            // Copied, then refused: the directory stays (one per run).
            ["snapshot", "restore", corrupt, "--data-dir", dir + "/c{RUN}"],
            ["snapshot", "restore", unhashed, "--data-dir", dir + "/u{RUN}"],
            ["snapshot", "restore", "-h"],
        ]
        for args in cases {
            var outputs: [Server.Output] = []
            for run in ["real", "ours"] {
                var output = try server.run(real: run == "real", args.map { $0.replacingOccurrences(of: "{RUN}", with: run) },
                                            withEndpoints: false)
                output.stderr = Self.normaliseLog(output.stderr.replacingOccurrences(of: run, with: "RUN"))
                outputs.append(output)
            }
            XCTAssertEqual(outputs[0].status, outputs[1].status, "\(args)")
            XCTAssertEqual(outputs[0].stdout, outputs[1].stdout, "\(args)")
            XCTAssertEqual(outputs[0].stderr, outputs[1].stderr, "\(args)")
            if args.contains(corrupt) { XCTAssertTrue(outputs[1].stderr.contains("Error: expected sha256 ["), outputs[1].stderr) }
            if args.contains(unhashed) { XCTAssertTrue(outputs[1].stderr.contains("Error: snapshot missing hash"), outputs[1].stderr) }
        }
    }

    /// Restore into three data directories, start a new cluster from them: the snapshot's keys at its revision,
    /// the new membership, and writes that go on from the snapshot's revision.
    func testRestoreStartsNewCluster() throws {
        let server = try requireServer()
        try server.realEtcdctl(["put", "rs/a", "1"])
        try server.realEtcdctl(["put", "rs/b", "2"])
        try server.realEtcdctl(["put", "rs/a", "3"])
        let snapshot = server.root.appendingPathComponent("restore.db").path
        XCTAssertEqual(try server.run(real: false, ["snapshot", "save", snapshot]).status, 0)
        let revision = try server.currentRevision()
        try server.realEtcdctl(["put", "rs/after", "not in the snapshot"])

        let ports = try LoopbackPorts.free(count: 6)
        let names = ["r1", "r2", "r3"]
        let peerURLs = (0..<3).map { "http://127.0.0.1:\(ports[3 + $0])" }
        let clientURLs = (0..<3).map { "http://127.0.0.1:\(ports[$0])" }
        let initialCluster = zip(names, peerURLs).map { "\($0)=\($1)" }.joined(separator: ",")
        let root = server.root.appendingPathComponent("restored")
        for index in 0..<3 {
            let restore = try server.run(real: false, [
                "snapshot", "restore", snapshot, "--data-dir", root.appendingPathComponent(names[index]).path,
                "--name", names[index], "--initial-cluster", initialCluster, "--initial-cluster-token", "restored-token",
                "--initial-advertise-peer-urls", peerURLs[index],
            ], withEndpoints: false)
            XCTAssertEqual(restore.status, 0, restore.stderr)
            XCTAssertEqual(restore.stdout, "")
            XCTAssertTrue(restore.stderr.contains("\"msg\":\"restored snapshot\""), restore.stderr)
        }
        var processes: [Process] = []
        defer { processes.forEach(ChildProcess.kill) }
        let kvserver = try XCTUnwrap(Server.product("kvserver"))
        for index in 0..<3 {
            let arguments = KVServerFlags.member(
                name: names[index], dataDirectory: root.appendingPathComponent(names[index]), clientURL: clientURLs[index],
                peerURL: peerURLs[index], token: "restored-token", initialCluster: initialCluster)
            processes.append(try ChildProcess.start(kvserver, arguments + KVServerFlags.quickElections,
                                                    log: root.appendingPathComponent("\(names[index]).log")))
        }
        let endpoints = "--endpoints=" + clientURLs.joined(separator: ",")
        let deadline = Date().addingTimeInterval(20)
        var healthy = false
        while !healthy && Date() < deadline {
            let health = try Server.run(Server.realEtcdctlPath, [endpoints, "--command-timeout=2s", "endpoint", "health"],
                                        environment: ["ETCDCTL_API": "3"], stdin: nil, timeout: 5, keepStdinOpen: false)
            healthy = health.status == 0
            if !healthy { usleep(200_000) }
        }
        XCTAssertTrue(healthy, "the restored cluster never became healthy")
        func etcdctl(_ args: [String]) throws -> Server.Output {
            try Server.run(Server.realEtcdctlPath, [endpoints] + args, environment: ["ETCDCTL_API": "3"], stdin: nil,
                           timeout: 10, keepStdinOpen: false)
        }
        XCTAssertEqual(try etcdctl(["get", "--prefix", "rs/"]).stdout, "rs/a\n3\nrs/b\n2\n")
        let json = try etcdctl(["-w", "json", "get", "rs/a"]).stdout
        XCTAssertEqual(EtcdctlComparisonTests.headerRevision(json), revision, json)
        XCTAssertTrue(json.contains("\"version\":2"), json)
        let members = try etcdctl(["member", "list"]).stdout
        for (name, url) in zip(names, peerURLs) {
            XCTAssertTrue(members.contains(", \(name), \(url), "), members)
        }
        XCTAssertEqual(members.split(separator: "\n").count, 3, members)
        let put = try etcdctl(["-w", "json", "put", "rs/c", "4"])
        XCTAssertEqual(EtcdctlComparisonTests.headerRevision(put.stdout), revision + 1, put.stdout + put.stderr)
        // Every member holds the data.
        for url in clientURLs {
            let one = try Server.run(Server.realEtcdctlPath, ["--endpoints=\(url)", "get", "--consistency=s", "--prefix", "rs/"],
                                     environment: ["ETCDCTL_API": "3"], stdin: nil, timeout: 10, keepStdinOpen: false)
            XCTAssertTrue(one.stdout.hasPrefix("rs/a\n3\nrs/b\n2\n"), "\(url): \(one.stdout)")
        }
    }
}
