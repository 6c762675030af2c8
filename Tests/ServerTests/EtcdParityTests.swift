import Foundation
import XCTest

/// One script of etcdctl 3.4 commands run against a single-member real etcd (Debian's etcd-server 3.4.23) and a
/// single-member kvserver started with the same name, token, flags and URL shapes: their standard output, standard
/// error and exit codes must be the same byte for byte, once what is inherently variable is replaced by
/// placeholders (see ``System/normalise(_:table:)``).
///
/// Each step is compared on its own, so one failure names the command and shows both transcripts.
final class EtcdParityTests: XCTestCase {
    /// One etcdctl invocation. `<LEASE-n>` in an argument stands for the n-th lease granted on each system.
    struct Step {
        var arguments: [String]
        var stdin: String? = nil
        /// Commands that do not end by themselves (watch) are killed at this limit; what they printed by then is
        /// compared (both exit with status 9, SIGKILL).
        var timeout: TimeInterval = 20

        init(_ arguments: String..., stdin: String? = nil, timeout: TimeInterval = 20) {
            self.arguments = arguments
            self.stdin = stdin
            self.timeout = timeout
        }

        var label: String {
            let shown = arguments.map { $0.isEmpty ? "''" : $0 }.joined(separator: " ")
            guard let stdin else { return "etcdctl \(shown)" }
            let input = stdin.count > 80 ? String(stdin.prefix(80)) + "…" : stdin
            return "etcdctl \(shown) <<< \(input.debugDescription)"
        }

        var isTable: Bool { arguments.contains("table") }
    }

    /// The script. Both systems start empty at revision 1 and see the same writes in the same order, so revisions,
    /// versions and create/mod revisions must agree exactly.
    static let script: [Step] = [
        // Puts and every kind of get.
        Step("put", "/p/a", "1"),
        Step("put", "/p/b", "2"),
        Step("put", "/p/c", "3"),
        Step("put", "/q/x", "10"),
        Step("get", "/p/a"),
        Step("get", "/p/a", "-w", "json"),
        Step("get", "/p/a", "-w", "fields"),
        Step("get", "--prefix", "/p/"),
        Step("get", "--prefix", "/p/", "-w", "json"),
        Step("get", "--from-key", "/p/b"),
        Step("get", "--prefix", "/p/", "--limit=2"),
        Step("get", "--prefix", "/p/", "--limit=2", "-w", "fields"),
        Step("get", "/p/a", "/p/c"),
        Step("get", "/nothing"),
        Step("get", "/nothing", "-w", "json"),
        Step("put", "/p/a", "1b"),
        Step("get", "--prefix", "/", "--sort-by=MODIFY", "--order=DESCEND"),
        Step("get", "--prefix", "/p/", "--sort-by=VALUE", "--order=DESCEND", "-w", "json"),
        Step("get", "--prefix", "/p/", "--keys-only"),
        Step("get", "--prefix", "/p/", "--keys-only", "-w", "json"),
        Step("get", "--prefix", "/p/", "--print-value-only"),
        Step("get", "/p/a", "--rev=2"),
        Step("get", "--prefix", "/p/", "--rev=3", "-w", "json"),
        Step("get", "/p/a", "--consistency=s"),
        // put --prev-kv, --ignore-value (a key that exists, and one that does not).
        Step("put", "/p/a", "1c", "--prev-kv"),
        Step("put", "/p/a", "1d", "--prev-kv", "-w", "json"),
        Step("put", "/p/b", "--ignore-value"),
        Step("get", "/p/b", "-w", "json"),
        Step("put", "/nokey", "--ignore-value"),
        // del --prev-kv, --prefix.
        Step("del", "/p/c", "--prev-kv"),
        Step("del", "/nothing"),
        Step("put", "/d/1", "x"),
        Step("put", "/d/2", "y"),
        Step("del", "--prefix", "/d/"),
        Step("del", "--prefix", "/d/", "--prev-kv"),
        // txn from standard input: compares on value, version, mod and create revisions; both branches.
        Step("txn", stdin: """
            value("/p/a") = "1d"
            version("/p/b") = "2"
            mod("/p/a") = "8"
            create("/p/b") = "3"

            put /t/ok yes
            get /p/a
            del /q/x

            put /t/no no


            """),
        Step("txn", stdin: """
            value("/p/a") = "nope"
            version("/p/b") > "1"

            put /t/ok again

            put /t/no no
            get --prefix /t/


            """),
        Step("txn", "-w", "json", stdin: """
            create("/zz") = "0"
            mod("/p/b") < "100"

            put /t/j j
            get /t/ok
            del /t/no

            put /t/never x


            """),
        Step("txn", "-w", "json", stdin: """
            value("/p/b") != "2"

            put /t/never x

            get /t/j


            """),
        // More operations than --max-txn-ops (128), and a compare etcdctl cannot parse.
        Step("txn", stdin: "\n" + (0..<129).map { "put /op/\($0) v" }.joined(separator: "\n") + "\n\n\n"),
        Step("txn", stdin: "bogus\n\n"),
        // The empty key.
        Step("put", "", "v"),
        Step("get", ""),
        Step("del", ""),
        // A revision in the future.
        Step("get", "/p/a", "--rev=1000"),
        Step("get", "/p/a", "--rev=1000", "-w", "json"),
        // Watch from revision 1 prints the whole history, then waits: killed at its time limit.
        Step("watch", "--rev=1", "--prefix", "/", timeout: 4),
        Step("watch", "--rev=1", "--prefix", "/p/", "--prev-kv", timeout: 4),
        Step("watch", "--rev=1", "--prefix", "/t/", "-w", "json", timeout: 4),
        // Compaction, then reads and watches below it.
        Step("compaction", "9"),
        Step("get", "/p/a", "--rev=3"),
        Step("get", "/p/a", "--rev=9"),
        Step("compaction", "9"),
        Step("compaction", "1000"),
        Step("watch", "--rev=2", "--prefix", "/p/", timeout: 4),
        Step("watch", "--rev=2", "--prefix", "/p/", "-w", "json", timeout: 4),
        // Leases (their IDs are placeholders).
        Step("lease", "grant", "300"),
        Step("put", "/l/k", "v", "--lease=<LEASE-1>"),
        Step("lease", "timetolive", "<LEASE-1>"),
        Step("lease", "timetolive", "<LEASE-1>", "--keys"),
        Step("lease", "timetolive", "<LEASE-1>", "--keys", "-w", "json"),
        Step("lease", "list"),
        Step("lease", "keep-alive", "--once", "<LEASE-1>"),
        Step("get", "/l/k", "-w", "json"),
        Step("lease", "revoke", "<LEASE-1>"),
        Step("lease", "timetolive", "<LEASE-1>"),
        Step("get", "/l/k"),
        Step("lease", "list"),
        Step("put", "/l/k", "v", "--lease=1234"),
        Step("lease", "revoke", "1234"),
        Step("lease", "timetolive", "1234"),
        Step("lease", "keep-alive", "--once", "1234"),
        // Cluster and maintenance.
        Step("member", "list"),
        Step("member", "list", "-w", "table"),
        Step("member", "list", "-w", "json"),
        Step("endpoint", "status"),
        Step("endpoint", "status", "-w", "table"),
        Step("endpoint", "status", "-w", "json"),
        Step("endpoint", "health"),
        // Simple output only: etcd 3.4 answers Alarm without a header, 3.5 (which kvserver follows) with one, so
        // `-w json` differs by design.
        Step("alarm", "list"),
        // The final state.
        Step("get", "--from-key", "", "-w", "json"),
    ] + authScript

    /// etcd's v3 auth, from the first user to disabling it again: users, roles, permissions on a key, a range and a
    /// prefix, what a limited user may and may not do, root's protections, password changes.
    static let authScript: [Step] = [
        Step("user", "add", "root:rootpw"),
        Step("user", "add", "alice:alicepw"),
        Step("user", "add", "alice:again"),
        Step("role", "add", "reader"),
        Step("role", "add", "reader"),
        Step("role", "grant-permission", "reader", "read", "/p/", "--prefix"),
        Step("role", "grant-permission", "reader", "readwrite", "/t/a", "/t/z"),
        Step("role", "grant-permission", "reader", "write", "/w"),
        Step("role", "get", "reader"),
        Step("role", "get", "nosuchrole"),
        Step("user", "grant-role", "alice", "reader"),
        Step("user", "grant-role", "alice", "nosuchrole"),
        Step("user", "grant-role", "nobody", "reader"),
        Step("user", "get", "alice"),
        Step("user", "get", "alice", "--detail"),
        Step("user", "list"),
        Step("role", "list"),
        // root exists but lacks the root role: etcdctl creates and grants it, then enables.
        Step("auth", "enable"),
        Step("get", "/p/a"),
        Step("--user", "root:wrong", "get", "/p/a"),
        Step("--user", "nobody:pw", "get", "/p/a"),
        Step("--user", "root:rootpw", "get", "--prefix", "/p/"),
        Step("--user", "alice:alicepw", "get", "--prefix", "/p/"),
        Step("--user", "alice:alicepw", "get", "--prefix", "/"),
        Step("--user", "alice:alicepw", "get", "--from-key", "/p/"),
        Step("--user", "alice:alicepw", "put", "/p/new", "x"),
        Step("--user", "alice:alicepw", "put", "/t/b", "x"),
        Step("--user", "alice:alicepw", "put", "/t/z", "x"),
        Step("--user", "alice:alicepw", "del", "/t/a", "/t/y"),
        Step("--user", "alice:alicepw", "put", "/w", "x"),
        Step("--user", "alice:alicepw", "get", "/w"),
        Step("--user", "alice:alicepw", "put", "/w", "y", "--prev-kv"),
        Step("--user", "alice:alicepw", "txn", stdin: "value(\"/p/a\") = \"1d\"\n\nput /t/c c\n\nget /q/x\n\n"),
        Step("--user", "alice:alicepw", "txn", stdin: "value(\"/p/a\") = \"1d\"\n\nput /t/c c\n\nput /t/d d\n\n"),
        Step("--user", "alice:alicepw", "watch", "/q/x", timeout: 4),
        Step("--user", "alice:alicepw", "user", "list"),
        Step("--user", "alice:alicepw", "role", "list"),
        Step("--user", "alice:alicepw", "user", "get", "alice"),
        Step("--user", "alice:alicepw", "user", "get", "root"),
        Step("--user", "alice:alicepw", "role", "get", "reader"),
        Step("--user", "alice:alicepw", "role", "get", "root"),
        Step("--user", "alice:alicepw", "user", "add", "mallory:pw"),
        Step("--user", "alice:alicepw", "member", "list"),
        Step("--user", "alice:alicepw", "endpoint", "status"),
        // Maintenance calls that need root answer etcd 3.4's raw "auth: permission denied" (Unknown) there and
        // etcd's mapped error here (documented in docs/security.md): AuthTests check them.
        Step("--user", "root:rootpw", "user", "revoke-role", "root", "root"),
        Step("--user", "root:rootpw", "user", "delete", "root"),
        Step("--user", "root:rootpw", "role", "delete", "root"),
        Step("--user", "root:rootpw", "role", "revoke-permission", "reader", "/w"),
        Step("--user", "root:rootpw", "role", "revoke-permission", "reader", "/w"),
        Step("--user", "root:rootpw", "role", "get", "reader"),
        Step("--user", "root:rootpw", "user", "passwd", "alice", "--interactive=false", stdin: "newpw\n"),
        Step("--user", "alice:alicepw", "get", "/p/a"),
        Step("--user", "alice:newpw", "get", "/p/a"),
        Step("--user", "root:rootpw", "user", "revoke-role", "alice", "reader"),
        Step("--user", "root:rootpw", "user", "revoke-role", "alice", "reader"),
        Step("--user", "alice:newpw", "get", "/p/a"),
        Step("--user", "root:rootpw", "role", "delete", "reader"),
        Step("--user", "root:rootpw", "user", "delete", "alice"),
        Step("--user", "root:rootpw", "user", "list"),
        Step("--user", "root:rootpw", "auth", "disable"),
        Step("get", "/p/a"),
        Step("auth", "disable"),
    ]

    func testSameOutputsAsRealEtcd() throws {
        guard (try? RealEtcd.etcdPath()) != nil else {
            throw TestCluster.MissingTool(description: "the real etcd is not installed (apt-get install etcd-server); .ci/run installs it")
        }
        let cluster = try TestCluster(size: 1)
        let etcd = try RealEtcd(size: 1, token: cluster.token)
        try etcd.startAll()
        try cluster.startAll()
        try etcd.waitHealthy()
        try cluster.waitHealthy()

        let real = try System(label: "etcd", member: etcd.members[0], version: "3.4.23") { step, arguments in
            try etcd.etcdctl(arguments, stdin: step.stdin, timeout: step.timeout)
        }
        // Documented difference: kvserver reports 3.5.13 (Kubernetes needs ≥ 3.5.13 for watch progress requests).
        let ours = try System(label: "kvserver", member: cluster.members[0], version: "3.5.13") { step, arguments in
            try cluster.etcdctl(arguments, stdin: step.stdin, timeout: step.timeout)
        }

        // ETCD_PARITY_DUMP=<directory> writes both normalised transcripts there, for a diff by hand.
        let dump = ProcessInfo.processInfo.environment["ETCD_PARITY_DUMP"].map { URL(fileURLWithPath: $0) }
        var transcripts = (etcd: "", kvserver: "")
        var failed: [String] = []
        for step in Self.script {
            let expected = try real.execute(step)
            let actual = try ours.execute(step)
            transcripts.etcd += "=== \(step.label)\n\(expected)\n"
            transcripts.kvserver += "=== \(step.label)\n\(actual)\n"
            if expected != actual { failed.append(step.label) }
            XCTAssertEqual(actual, expected, "\(step.label): kvserver (first) differs from real etcd (second)")
        }
        if let dump {
            try FileManager.default.createDirectory(at: dump, withIntermediateDirectories: true)
            try transcripts.etcd.write(to: dump.appendingPathComponent("etcd.txt"), atomically: true, encoding: .utf8)
            try transcripts.kvserver.write(to: dump.appendingPathComponent("kvserver.txt"), atomically: true,
                                           encoding: .utf8)
        }
        print("etcd parity: \(Self.script.count - failed.count) of \(Self.script.count) steps equal"
            + (failed.isEmpty ? "" : "; differing: \n  " + failed.joined(separator: "\n  ")))
    }

    /// One system under comparison and what is inherently variable in its answers.
    final class System {
        let label: String
        let member: TestCluster.Member
        let version: String
        let run: (Step, [String]) throws -> TestCluster.Output
        let clusterID: UInt64
        let memberID: UInt64
        /// Leases in the order this system granted them (`<LEASE-1>`, …).
        private(set) var leases: [UInt64] = []

        init(label: String, member: TestCluster.Member, version: String,
             run: @escaping (Step, [String]) throws -> TestCluster.Output) throws {
            self.label = label
            self.member = member
            self.version = version
            self.run = run
            // Both IDs are computed from the peer URLs and the token, so they differ with the ports: read them.
            let status = try run(Step("endpoint", "status", "-w", "json"), ["endpoint", "status", "-w", "json"])
            guard let cluster = Self.number(after: "\"cluster_id\":", in: status.stdout),
                  let member = Self.number(after: "\"member_id\":", in: status.stdout) else {
                throw TestCluster.MissingTool(description: "\(label): no IDs in \(status.stdout) \(status.stderr)")
            }
            clusterID = cluster
            memberID = member
        }

        /// Runs `step` and answers its normalised transcript: exit status, standard output, standard error.
        func execute(_ step: Step) throws -> String {
            let arguments = step.arguments.map { argument in
                var argument = argument
                for (index, lease) in leases.enumerated() {
                    argument = argument.replacingOccurrences(of: "<LEASE-\(index + 1)>", with: Self.leaseHex(lease))
                }
                return argument
            }
            let output = try run(step, arguments)
            for match in output.stdout.matches(of: /lease ([0-9a-f]{16}) granted with TTL/) {
                if let id = UInt64(match.output.1, radix: 16), !leases.contains(id) { leases.append(id) }
            }
            return """
                exit \(output.status)
                --- stdout
                \(normalise(output.stdout, table: step.isTable))
                --- stderr
                \(normalise(output.stderr, table: step.isTable))
                """
        }

        static func leaseHex(_ id: UInt64) -> String {
            let hex = String(id, radix: 16)
            return String(repeating: "0", count: max(0, 16 - hex.count)) + hex
        }

        static func number(after marker: String, in text: String) -> UInt64? {
            guard let range = text.range(of: marker) else { return nil }
            return UInt64(text[range.upperBound...].prefix(while: \.isNumber))
        }

        /// Replaces what legitimately differs between the two systems (and between two runs of either):
        /// - member, cluster and lease IDs (decimal and hex) by `<MEMBER-ID>`, `<CLUSTER-ID>`, `<LEASE-n>`;
        /// - the client and peer ports by `<CLIENT-PORT>`, `<PEER-PORT>`;
        /// - the server version (etcd 3.4.23, kvserver 3.5.13: documented) by `<VERSION>`;
        /// - non-zero raft terms, database sizes, remaining lease TTLs, `took = …` durations, the timestamps and
        ///   client UUIDs of etcdctl's JSON log lines on standard error (the lines are kept: they show gRPC codes);
        /// - in tables, the widths of columns (runs of spaces and dashes), which follow the lengths of the above.
        /// Raft indexes and revisions are not normalised: both systems see the same requests.
        func normalise(_ text: String, table: Bool) -> String {
            var text = text
            var replacements: [(String, String)] = [
                (String(clusterID), "<CLUSTER-ID>"), (String(memberID), "<MEMBER-ID>"),
            ]
            for (index, lease) in leases.enumerated() {
                replacements.append((String(lease), "<LEASE-\(index + 1)>"))
                replacements.append((Self.leaseHex(lease), "<LEASE-\(index + 1)>"))
            }
            // Hex IDs after decimal ones, so that a decimal ID is never cut by a hex one made of digits only.
            replacements += [
                (String(clusterID, radix: 16), "<CLUSTER-ID>"), (String(memberID, radix: 16), "<MEMBER-ID>"),
                ("127.0.0.1:\(member.clientPort)", "127.0.0.1:<CLIENT-PORT>"),
                ("127.0.0.1:\(member.peerPort)", "127.0.0.1:<PEER-PORT>"),
                (version, "<VERSION>"),
            ]
            for (from, to) in replacements {
                text = text.replacingOccurrences(of: from, with: to)
            }
            text = text.replacing(/"ts":"[^"]*"/, with: "\"ts\":\"<TS>\"")
            text = text.replacing(/client-[0-9a-f-]{36}/, with: "client-<UUID>")
            text = text.replacing(/took = [0-9.]+[a-zµ]*s/, with: "took = <DURATION>")
            text = text.replacing(/"raft_term":[1-9][0-9]*/, with: "\"raft_term\":<TERM>")
            text = text.replacing(/"raftTerm":[1-9][0-9]*/, with: "\"raftTerm\":<TERM>")
            // How many log entries a system spends on its own bookkeeping (etcd: cluster version, publish) is its own.
            text = text.replacing(/"raftIndex":[0-9]+/, with: "\"raftIndex\":<RAFT-INDEX>")
            text = text.replacing(/"raftAppliedIndex":[0-9]+/, with: "\"raftAppliedIndex\":<RAFT-INDEX>")
            text = text.replacing(/"RaftTerm" : [1-9][0-9]*/, with: "\"RaftTerm\" : <TERM>")
            text = text.replacing(/"dbSize":[0-9]+/, with: "\"dbSize\":<DB-SIZE>")
            text = text.replacing(/"dbSizeInUse":[0-9]+/, with: "\"dbSizeInUse\":<DB-SIZE>")
            text = text.replacing(/\b[0-9]+(\.[0-9]+)? (B|kB|MB|GB)\b/, with: "<DB-SIZE>")
            text = text.replacing(/remaining\(-?[0-9]+s\)/, with: "remaining(<TTL>s)")
            text = text.replacing(/"ttl":[0-9]+/, with: "\"ttl\":<TTL>")
            text = text.split(separator: "\n", omittingEmptySubsequences: false)
                .map { Self.normaliseStatusRow(String($0)) }.joined(separator: "\n")
            if table {
                text = text.replacing(/-{2,}/, with: "-").replacing(/[ ]{2,}/, with: " ")
            }
            return text
        }

        /// `endpoint status` rows (simple: comma-separated; table: `|`-separated) carry the raft term in their
        /// 7th column and the raft index and applied index in the next two.
        static func normaliseStatusRow(_ line: String) -> String {
            if line.hasPrefix("127.0.0.1:<CLIENT-PORT>, ") {
                var cells = line.components(separatedBy: ", ")
                if cells.count >= 10 { (cells[6], cells[7], cells[8]) = ("<TERM>", "<RAFT-INDEX>", "<RAFT-INDEX>") }
                return cells.joined(separator: ", ")
            }
            if line.hasPrefix("| 127.0.0.1:<CLIENT-PORT> ") {
                var cells = line.components(separatedBy: "|")
                // cells[0] is the empty text before the first bar.
                if cells.count >= 11 { (cells[7], cells[8], cells[9]) = (" <TERM> ", " <RAFT-INDEX> ", " <RAFT-INDEX> ") }
                return cells.joined(separator: "|")
            }
            return line
        }
    }
}
