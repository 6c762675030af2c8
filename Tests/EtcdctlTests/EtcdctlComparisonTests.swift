import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Our etcdctl and the real one (Debian's etcd-client 3.4) against ONE kvserver, with the same arguments, stdin
/// and environment: stdout, stderr and the exit code must be equal byte for byte, after normalising only what is
/// inherently variable (timestamps, client UUIDs, "took" durations, lease IDs and TTLs, and revisions made by the
/// case itself, which differ by a constant between the two runs).
final class EtcdctlComparisonTests: SharedServerTestCase {
    struct Case {
        var name: String
        var args: [String]
        var stdin: String? = nil
        var env: [String: String] = [:]
        /// Commands (real etcdctl, arguments) run before each of the two runs, to give both the same state.
        var setup: [[String]] = []
        /// Adds `--endpoints` of the server (false for cases that give their own).
        var endpoints = true
        var grantsLease = false
        /// The command grants a lease itself: its ID is random.
        var newLease = false
    }

    // MARK: the cases

    static let kvCases: [Case] = {
        var cases: [Case] = []
        let data: [[String]] = [["del", "--prefix", "c/"], ["put", "c/a", "1"], ["put", "c/b", "22"], ["put", "c/c", "333"], ["put", "c/b", "2b"],
                                ["put", "c/d", "with space"], ["put", "c/\u{e9}", "\u{e9}t\u{e9}"]]
        for format in ["simple", "json", "fields", "table", "protobuf"] {
            // Protobuf output is binary; the lease grant's bytes hold its random ID.
            let w = ["-w", format]
            cases += [
                Case(name: "get one \(format)", args: w + ["get", "c/a"], setup: data),
                Case(name: "get missing \(format)", args: w + ["get", "nope"]),
                Case(name: "get prefix \(format)", args: w + ["get", "--prefix", "c/"], setup: data),
                Case(name: "get range \(format)", args: w + ["get", "c/a", "c/c"], setup: data),
                Case(name: "get from-key \(format)", args: w + ["get", "--from-key", "zz/c"],
                     setup: [["del", "--prefix", "zz/"], ["put", "zz/a", "1"], ["put", "zz/c", "3"], ["put", "zz/d", "4"]]),
                Case(name: "get limit \(format)", args: w + ["get", "--prefix", "--limit=2", "c/"], setup: data),
                Case(name: "get sort \(format)", args: w + ["get", "--prefix", "--sort-by=VALUE", "--order=DESCEND", "c/"], setup: data),
                Case(name: "get keys-only \(format)", args: w + ["get", "--prefix", "--keys-only", "c/"], setup: data),
                Case(name: "get serializable \(format)", args: w + ["get", "--consistency=s", "c/b"], setup: data),
                Case(name: "get hex \(format)", args: w + ["--hex", "get", "--prefix", "c/"], setup: data),
                Case(name: "get value-only \(format)", args: w + ["get", "--print-value-only", "--prefix", "c/"], setup: data),
                Case(name: "get rev \(format)", args: w + ["get", "--rev=1", "c/a"]),
                Case(name: "put \(format)", args: w + ["put", "p/x", "v1"], setup: [["del", "p/x"]]),
                Case(name: "put prev-kv \(format)", args: w + ["put", "--prev-kv", "p/x", "v2"], setup: [["del", "p/x"], ["put", "p/x", "v1"]]),
                Case(name: "put stdin \(format)", args: w + ["put", "p/x"], stdin: "from\nstdin", setup: [["del", "p/x"]]),
                Case(name: "put ignore-value \(format)", args: w + ["put", "--ignore-value", "p/x"], setup: [["del", "p/x"], ["put", "p/x", "v1"]]),
                Case(name: "put ignore-value missing \(format)", args: w + ["put", "--ignore-value", "p/none"]),
                Case(name: "del \(format)", args: w + ["del", "c/a"], setup: data),
                Case(name: "del prefix prev-kv \(format)", args: w + ["del", "--prefix", "--prev-kv", "c/"], setup: data),
                Case(name: "del from-key \(format)", args: w + ["del", "--from-key", "zz/c"],
                     setup: [["del", "--prefix", "zz/"], ["put", "zz/a", "1"], ["put", "zz/c", "3"], ["put", "zz/d", "4"]]),
                Case(name: "del range \(format)", args: w + ["del", "c/a", "c/c"], setup: data),
                Case(name: "txn success \(format)", args: w + ["txn"],
                     stdin: "value(\"c/a\") = \"1\"\nmod(\"c/b\") > \"0\"\n\nput t/x \"quoted value\"\nget c/a\ndel c/c\n\nget c/b\n\n", setup: data),
                Case(name: "txn failure \(format)", args: w + ["txn"],
                     stdin: "version(\"c/a\") = \"7\"\n\nput t/x 1\n\nget --prefix c/\nput 't/y' 2\n\n", setup: data),
                Case(name: "txn interactive \(format)", args: w + ["txn", "-i"],
                     stdin: "create(\"c/a\") != \"0\"\n\nget c/a\n\n\n", setup: data),
                Case(name: "lease grant \(format)", args: w + ["lease", "grant", "100"], newLease: true),
                Case(name: "lease timetolive \(format)", args: w + ["lease", "timetolive", "{LEASE}", "--keys"],
                     setup: [["put", "--lease={LEASE}", "l/a", "1"]], grantsLease: true),
                Case(name: "lease keep-alive once \(format)", args: w + ["lease", "keep-alive", "--once", "{LEASE}"], grantsLease: true),
                Case(name: "lease revoke \(format)", args: w + ["lease", "revoke", "{LEASE}"], grantsLease: true),
                Case(name: "lease revoke missing \(format)", args: w + ["lease", "revoke", "123"]),
                Case(name: "member list \(format)", args: w + ["member", "list"]),
                Case(name: "endpoint status \(format)", args: w + ["endpoint", "status"]),
                Case(name: "endpoint hashkv \(format)", args: w + ["endpoint", "hashkv"]),
                Case(name: "endpoint health \(format)", args: w + ["endpoint", "health"]),
                Case(name: "endpoint status cluster \(format)", args: w + ["endpoint", "status", "--cluster"]),
                Case(name: "alarm list \(format)", args: w + ["alarm", "list"]),
            ]
        }
        // Protobuf output is binary (revision varints cannot be normalised): compared byte for byte where nothing
        // in it depends on the case's own writes.
        return cases.filter { !$0.args.contains("protobuf") || ($0.setup.isEmpty && !$0.grantsLease && !$0.newLease) }
    }()

    static let otherCases: [Case] = [
        Case(name: "version", args: ["version"]),
        Case(name: "help", args: ["--help"]),
        Case(name: "help get", args: ["get", "-h"]),
        Case(name: "help command", args: ["help", "put"]),
        Case(name: "group without subcommand", args: ["lease"]),
        Case(name: "member group help", args: ["member", "--help"]),
        Case(name: "endpoint group help", args: ["endpoint", "status", "-h"]),
        Case(name: "unknown command", args: ["frob"]),
        Case(name: "unknown command suggestion", args: ["gte", "x"]),
        Case(name: "ambiguous prefix", args: ["m"]),
        Case(name: "prefix matching", args: ["ge", "c/a"]),
        Case(name: "unknown flag", args: ["get", "--bogus", "x"]),
        // cobra takes an unknown flag's next word for its value while it looks for the command.
        Case(name: "unknown flag before the command", args: ["--bogus", "get", "c/a"]),
        Case(name: "unknown flag last before the command", args: ["-w", "json", "--bogus", "get"]),
        Case(name: "unknown shorthand", args: ["get", "-x", "y"]),
        Case(name: "flag needs argument", args: ["get", "x", "--rev"]),
        Case(name: "bad int flag", args: ["get", "x", "--rev=abc"]),
        Case(name: "bad bool flag", args: ["get", "x", "--prefix=maybe"]),
        Case(name: "bad duration", args: ["--command-timeout=soon", "get", "x"]),
        Case(name: "bad output format", args: ["-w", "xml", "get", "x"]),
        Case(name: "get missing argument", args: ["get"]),
        Case(name: "get prefix and from-key", args: ["get", "--prefix", "--from-key", "a"]),
        Case(name: "get too many", args: ["get", "--prefix", "a", "b"]),
        Case(name: "get bad consistency", args: ["get", "--consistency=x", "a"]),
        Case(name: "get bad order", args: ["get", "--order=up", "a"]),
        Case(name: "get bad sort", args: ["get", "--sort-by=size", "a"]),
        Case(name: "get value-only json", args: ["-w", "json", "get", "--print-value-only", "a"]),
        Case(name: "get future rev", args: ["get", "--rev=99999999", "a"]),
        Case(name: "put missing argument", args: ["put"]),
        Case(name: "put no value", args: ["put", "k"], stdin: ""),
        Case(name: "put bad lease", args: ["put", "--lease=xyz", "k", "v"]),
        Case(name: "put unknown lease", args: ["put", "--lease=abc", "k", "v"]),
        Case(name: "put ignore-value with value", args: ["put", "--ignore-value", "k", "v"]),
        Case(name: "put dash value", args: ["put", "p/dash", "--", "-v"], setup: [["del", "p/dash"]]),
        Case(name: "del missing argument", args: ["del"]),
        Case(name: "del too many", args: ["del", "a", "b", "c"]),
        Case(name: "txn argument", args: ["txn", "x"]),
        Case(name: "txn eof", args: ["txn"], stdin: "mod(\"a\") > \"0\"\n"),
        Case(name: "txn bad compare", args: ["txn"], stdin: "bogus\n\n\n"),
        Case(name: "txn bad compare target", args: ["txn"], stdin: "size(\"a\") = \"1\"\n\n\n"),
        Case(name: "txn bad compare value", args: ["txn"], stdin: "mod(\"a\") = \"x\"\n\n\n"),
        Case(name: "txn bad request", args: ["txn"], stdin: "\nfrob a\n\n"),
        Case(name: "txn duplicate key", args: ["txn"], stdin: "\nput d/a 1\ndel d/a\n\n"),
        Case(name: "compaction missing", args: ["compaction"]),
        Case(name: "compaction bad", args: ["compaction", "x"]),
        Case(name: "compaction future", args: ["compaction", "99999999"]),
        Case(name: "lease grant missing", args: ["lease", "grant"]),
        Case(name: "lease grant bad", args: ["lease", "grant", "ten"]),
        Case(name: "lease revoke bad", args: ["lease", "revoke", "zz"]),
        Case(name: "lease timetolive missing", args: ["lease", "timetolive"]),
        Case(name: "lease timetolive expired", args: ["lease", "timetolive", "1234"]),
        Case(name: "lease keep-alive missing", args: ["lease", "keep-alive"]),
        Case(name: "member add missing", args: ["member", "add"]),
        Case(name: "member add no urls", args: ["member", "add", "infra9"]),
        Case(name: "member add too many", args: ["member", "add", "infra9", "http://127.0.0.1:1"]),
        Case(name: "member remove missing", args: ["member", "remove"]),
        Case(name: "member remove bad", args: ["member", "remove", "xyz"]),
        Case(name: "member remove unknown", args: ["member", "remove", "1234"]),
        Case(name: "member update no urls", args: ["member", "update", "1234"]),
        Case(name: "member promote unknown", args: ["member", "promote", "1234"]),
        Case(name: "move-leader missing", args: ["move-leader"]),
        Case(name: "move-leader bad", args: ["move-leader", "xyz"]),
        Case(name: "alarm list args", args: ["alarm", "list", "x"]),
        Case(name: "alarm disarm", args: ["alarm", "disarm"]),
        Case(name: "snapshot save missing", args: ["snapshot", "save"]),
        Case(name: "watch no args", args: ["watch"]),
        Case(name: "watch separator without command", args: ["watch", "a", "--"]),
        Case(name: "watch prefix and range", args: ["watch", "--prefix", "a", "b"]),
        Case(name: "watch env conflict", args: ["watch", "a"], env: ["ETCDCTL_WATCH_KEY": "b"]),
        Case(name: "watch env range only", args: ["watch"], env: ["ETCDCTL_WATCH_RANGE_END": "b"]),
        Case(name: "env endpoints", args: ["get", "c/a"], env: ["ETCDCTL_ENDPOINTS": "{ENDPOINT}"], endpoints: false),
        Case(name: "env write-out", args: ["get", "c/a"], env: ["ETCDCTL_WRITE_OUT": "fields"]),
        Case(name: "env unknown", args: ["get", "c/a"], env: ["ETCDCTL_FROB": "1"]),
        Case(name: "env conflict", args: ["get", "c/a"], env: ["ETCDCTL_ENDPOINTS": "{ENDPOINT}"]),
        Case(name: "failover", args: ["--endpoints=127.0.0.1:1,{ENDPOINT}", "put", "f/a", "1"], setup: [["del", "f/a"]], endpoints: false),
        Case(name: "unreachable", args: ["--endpoints=127.0.0.1:1", "--command-timeout=1s", "get", "a"], endpoints: false),
        Case(name: "unreachable health", args: ["--endpoints=127.0.0.1:1", "--command-timeout=1s", "endpoint", "health"], endpoints: false),
        Case(name: "unreachable status", args: ["--endpoints=127.0.0.1:1", "--command-timeout=1s", "endpoint", "status"], endpoints: false),
        Case(name: "api version", args: ["version"], env: ["ETCDCTL_API": "2x"]),
    ]

    func testKVAndClusterCommandsInAllFormats() throws {
        try runCases(Self.kvCases)
    }

    func testHelpErrorsAndEnvironment() throws {
        try runCases(Self.otherCases)
    }

    /// `get --count-only` is etcdctl 3.5's (the real one here is 3.4): checked against 3.5's documented behaviour.
    func testCountOnly() throws {
        let server = try requireServer()
        for step in [["put", "co/a", "1"], ["put", "co/b", "2"]] { try server.realEtcdctl(step) }
        let fields = try server.run(real: false, ["-w", "fields", "get", "--prefix", "--count-only", "co/"])
        XCTAssertEqual(fields.status, 0, fields.stderr)
        XCTAssertTrue(fields.stdout.hasSuffix("\"More\" : false\n\"Count\" : 2\n"), fields.stdout)
        XCTAssertFalse(fields.stdout.contains("\"Key\""), fields.stdout)
        let simple = try server.run(real: false, ["get", "--prefix", "--count-only", "co/"])
        XCTAssertEqual(simple.status, 128)
        XCTAssertEqual(simple.stderr, "Error: --count-only is only for `--write-out=fields`\n")
        let both = try server.run(real: false, ["get", "--keys-only", "--count-only", "co/"])
        XCTAssertEqual(both.status, 128)
        // Hidden from the usage text, which stays 3.4's.
        let help = try server.run(real: false, ["get", "-h"])
        XCTAssertFalse(help.stdout.contains("count-only"))
    }

    func testCompactionAndDefrag() throws {
        let server = try requireServer()
        // Compaction moves the server's state forward for good: compare against revisions made just before.
        for physical in [false, true] {
            let real = try server.realEtcdctl(["-w", "json", "put", "cmp/a", "1"])
            let revision = try XCTUnwrap(Self.headerRevision(real.stdout))
            let args = ["compaction"] + (physical ? ["--physical"] : []) + [String(revision)]
            let a = try server.run(real: true, args)
            _ = try server.realEtcdctl(["put", "cmp/a", "2"])
            let b = try server.run(real: false, ["compaction"] + (physical ? ["--physical"] : []) + [String(revision + 1)])
            XCTAssertEqual(a.status, b.status)
            XCTAssertEqual(a.stdout.replacingOccurrences(of: String(revision), with: "R"),
                           b.stdout.replacingOccurrences(of: String(revision + 1), with: "R"))
            XCTAssertEqual(a.stderr, b.stderr)
        }
        // Compacted revision: the same error from both.
        try compare(Case(name: "get compacted", args: ["get", "--rev=1", "cmp/a"]), server: server)
        try compare(Case(name: "compaction compacted", args: ["compaction", "1"]), server: server)
        try compare(Case(name: "defrag", args: ["defrag"]), server: server)
        try compare(Case(name: "defrag cluster", args: ["defrag", "--cluster"]), server: server)
    }

    func testWatch() throws {
        let server = try requireServer()
        for format in ["simple", "json", "fields"] {
            for flags in [[String](), ["--prev-kv"], ["--prefix"]] {
                // A watch from a past revision replays the same events for both.
                _ = try server.realEtcdctl(["put", "w/a", "1"])
                let start = try XCTUnwrap(Self.headerRevision(try server.realEtcdctl(["-w", "json", "put", "w/a", "2"]).stdout))
                _ = try server.realEtcdctl(["del", "w/a"])
                _ = try server.realEtcdctl(["put", "w/ab", "3"])
                let args = ["-w", format, "watch", "--rev=\(start)"] + flags + [flags.contains("--prefix") ? "w/" : "w/a"]
                let a = try server.run(real: true, args, timeout: 1.5)
                let b = try server.run(real: false, args, timeout: 1.5)
                XCTAssertEqual(a.stdout, b.stdout, "watch \(args)")
                XCTAssertFalse(a.stdout.isEmpty, "watch \(args)")
            }
        }
        // Exec per event with ETCD_WATCH_* variables.
        _ = try server.realEtcdctl(["put", "w/x", "1"])
        let start = try XCTUnwrap(Self.headerRevision(try server.realEtcdctl(["-w", "json", "put", "w/x", "two words"]).stdout))
        _ = try server.realEtcdctl(["del", "w/x"])
        let args = ["watch", "--rev=\(start)", "w/x", "--", "sh", "-c", "echo \"$ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE $ETCD_WATCH_REVISION\""]
        let a = try server.run(real: true, args, timeout: 1.5)
        let b = try server.run(real: false, args, timeout: 1.5)
        XCTAssertEqual(a.stdout, b.stdout)
        XCTAssertTrue(a.stdout.contains("\"DELETE\" \"w/x\" \"\""), a.stdout)
        // Interactive: two watches on one stream.
        let interactive = ["watch", "-i"]
        let input = "watch --rev=\(start) w/x\nfrob\n"
        let c = try server.run(real: true, interactive, stdin: input, timeout: 1.5, keepStdinOpen: true)
        let d = try server.run(real: false, interactive, stdin: input, timeout: 1.5, keepStdinOpen: true)
        XCTAssertEqual(c.stdout, d.stdout)
        XCTAssertEqual(c.stderr, d.stderr)
    }

    func testSnapshotSave() throws {
        let server = try requireServer()
        let path = server.root.appendingPathComponent("snap.db").path
        let ours = try server.run(real: false, ["snapshot", "save", path])
        XCTAssertEqual(ours.status, 0, ours.stderr)
        XCTAssertEqual(ours.stdout, "Snapshot saved at \(path)\n")
        XCTAssertGreaterThan((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0, 0)
        let missing = try server.run(real: false, ["snapshot", "save"])
        let realMissing = try server.run(real: true, ["snapshot", "save"])
        XCTAssertEqual(missing.stderr, realMissing.stderr)
        XCTAssertEqual(missing.status, realMissing.status)
    }

    func testMemberAddUpdateRemove() throws {
        let server = try requireServer()
        // Both add a learner (unstarted), then the member is removed again; IDs are random: normalised.
        for real in [true, false] {
            let add = try server.run(real: real, ["member", "add", "infra9", "--learner", "--peer-urls=http://127.0.0.1:1"])
            XCTAssertEqual(add.status, 0, add.stderr)
            let id = try XCTUnwrap(add.stdout.split(separator: " ").dropFirst().first.map(String.init))
            let update = try server.run(real: real, ["member", "update", id, "--peer-urls=http://127.0.0.1:2"])
            let list = try server.run(real: real, ["-w", "table", "member", "list"])
            let remove = try server.run(real: real, ["member", "remove", id])
            let text = Self.sortingMembers([add, update, list, remove].map { "\($0.status)\n\($0.stdout)\($0.stderr)" }.joined()
                .replacingOccurrences(of: id, with: "ID"))
            if real { realMemberText = text } else { XCTAssertEqual(realMemberText, text) }
        }
    }

    private var realMemberText = ""

    /// Members come in ID order and the added member's ID is random, so the two runs may list it before or after
    /// infra1: compare the ETCD_INITIAL_CLUSTER entries and the table's member rows as sets.
    static func sortingMembers(_ text: String) -> String {
        var lines = text.components(separatedBy: "\n")
        for index in lines.indices where lines[index].hasPrefix("ETCD_INITIAL_CLUSTER=\"") {
            let inner = lines[index].dropFirst("ETCD_INITIAL_CLUSTER=\"".count).dropLast()
            lines[index] = "ETCD_INITIAL_CLUSTER=\"" + inner.split(separator: ",").sorted().joined(separator: ",") + "\""
        }
        let rows = lines.indices.filter { lines[$0].hasPrefix("| ") && !lines[$0].contains("IS LEARNER") }
        let sortedRows = rows.map { lines[$0] }.sorted()
        for (index, row) in zip(rows, sortedRows) { lines[index] = row }
        return lines.joined(separator: "\n")
    }

    // MARK: running

    func runCases(_ cases: [Case]) throws {
        let server = try requireServer()
        for testCase in cases {
            try compare(testCase, server: server)
        }
    }

    func compare(_ testCase: Case, server: Server) throws {
        var results: [Server.Output] = []
        for real in [true, false] {
            var substitutions: [String: String] = ["{ENDPOINT}": server.endpoint]
            var leaseID: Int64 = 0
            if testCase.grantsLease {
                let grant = try server.realEtcdctl(["-w", "json", "lease", "grant", "1000"])
                leaseID = try XCTUnwrap(Self.jsonInt(grant.stdout, "ID"), grant.stdout + grant.stderr)
                substitutions["{LEASE}"] = String(leaseID, radix: 16)
            }
            func substitute(_ s: String) -> String {
                substitutions.reduce(s) { $0.replacingOccurrences(of: $1.key, with: $1.value) }
            }
            let base = try server.currentRevision()
            for step in testCase.setup.map({ $0.map(substitute) }) {
                // A delete of nothing makes no revision: make sure there is something to delete, so that both runs
                // move the revision alike.
                if step.first == "del", let key = step.last {
                    _ = try server.realEtcdctl(["put", step.contains("--prefix") ? key + "_" : key, "x"])
                }
                _ = try server.realEtcdctl(step)
            }
            var output = try server.run(real: real, testCase.args.map(substitute), stdin: testCase.stdin,
                                        env: testCase.env.mapValues(substitute), withEndpoints: testCase.endpoints)
            output = Self.normalise(output, base: base, lease: leaseID)
            if testCase.newLease {
                for (pattern, replacement) in [(#"lease [0-9a-f]{16} "#, "lease ID "), (#""ID":\d+"#, #""ID":ID"#),
                                               (#""ID" : \d+"#, #""ID" : ID"#)] {
                    output.stdout = output.stdout.replacingOccurrences(of: pattern, with: replacement, options: .regularExpression)
                }
            }
            if testCase.args.contains("health") && testCase.args.contains("table") {
                // The "took" column's width varies with the duration.
                output.stdout = output.stdout.replacingOccurrences(of: "-+", with: "-", options: .regularExpression)
                    .replacingOccurrences(of: " +", with: " ", options: .regularExpression)
            }
            results.append(output)
        }
        let (a, b) = (results[0], results[1])
        XCTAssertEqual(a.status, b.status, "\(testCase.name): exit code (real stderr: \(a.stderr))")
        if testCase.args.contains("protobuf") {
            XCTAssertEqual(a.stdoutData, b.stdoutData, "\(testCase.name): stdout bytes")
        } else {
            XCTAssertEqual(a.stdout, b.stdout, "\(testCase.name): stdout")
        }
        XCTAssertEqual(a.stderr, b.stderr, "\(testCase.name): stderr")
    }

    static func normalise(_ output: Server.Output, base: Int64, lease: Int64) -> Server.Output {
        func fix(_ text: String) -> String {
            var s = text
            let replacements: [(String, String)] = [
                (#""ts":"[^"]*""#, #""ts":"TS""#),
                (#"client-[0-9a-f-]{36}"#, "client-UUID"),
                (#"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} "#, "TIME "),
                (#"took = [0-9.]+[µnm]?s"#, "took = TOOK"),
                (#""took":"[^"]*""#, #""took":"TOOK""#),
                (#""Took" : [0-9.]+[µnm]?s"#, #""Took" : TOOK"#),
                (#"\| +[0-9.]+[µnm]?s \|"#, "| TOOK |"),
                (#"remaining\(\d+s\)"#, "remaining(Ns)"),
                (#""ttl":\d+"#, #""ttl":N"#),
                (#""TTL" : 9\d\d"#, #""TTL" : N"#),
                (#""TTL":9\d\d"#, #""TTL":N"#),
                (#"TTL\(9\d\d\)"#, "TTL(N)"),
                (#"TTL\(9\d\ds\)"#, "TTL(Ns)"),
            ]
            for (pattern, replacement) in replacements {
                s = s.replacingOccurrences(of: pattern, with: replacement, options: .regularExpression)
                if pattern.hasPrefix("^") {
                    let regex = try! NSRegularExpression(pattern: pattern, options: .anchorsMatchLines)
                    s = regex.stringByReplacingMatches(in: s, range: NSRange(s.startIndex..., in: s), withTemplate: replacement)
                }
            }
            if lease != 0 {
                s = s.replacingOccurrences(of: String(format: "%016llx", lease), with: "LEASE")
                s = s.replacingOccurrences(of: String(lease), with: "LEASE")
            }
            // Revisions made by the case (above the base) differ by a constant between the two runs.
            let patterns = [#"("(?:revision|create_revision|mod_revision|raftIndex|raftAppliedIndex)":)(\d+)"#,
                            #"("(?:Revision|CreateRevision|ModRevision|PrevCreateRevision|PrevModRevision|RaftIndex|RaftAppliedIndex)" : )(\d+)"#]
            for pattern in patterns {
                let regex = try! NSRegularExpression(pattern: pattern)
                let ns = s as NSString
                var result = ""
                var last = 0
                for match in regex.matches(in: s, range: NSRange(location: 0, length: ns.length)) {
                    let numberRange = match.range(at: 2)
                    result += ns.substring(with: NSRange(location: last, length: numberRange.location - last))
                    let value = Int64(ns.substring(with: numberRange)) ?? 0
                    result += value > base ? "R+\(value - base)" : String(value)
                    last = numberRange.location + numberRange.length
                }
                result += ns.substring(from: last)
                s = result
            }
            return s
        }
        var o = output
        o.stdout = fix(o.stdout)
        o.stderr = fix(o.stderr)
        return o
    }

    static func headerRevision(_ json: String) -> Int64? { jsonInt(json, "revision") }

    static func jsonInt(_ json: String, _ key: String) -> Int64? {
        guard let range = json.range(of: "\"\(key)\":") else { return nil }
        return Int64(json[range.upperBound...].prefix { $0.isNumber || $0 == "-" })
    }
}
