import Foundation
import XCTest

/// The real etcdctl 3.4 against a real three-member kvserver cluster on loopback.
final class EtcdctlClusterTests: XCTestCase {
    private func ok(_ output: TestCluster.Output, file: StaticString = #filePath, line: UInt = #line) -> String {
        XCTAssertEqual(output.status, 0, "etcdctl failed: \(output.stderr)", file: file, line: line)
        return output.stdout
    }

    func testKeyValueCommands() throws {
        let cluster = try TestCluster(size: 3)
        try cluster.startAll()
        try cluster.waitHealthy()
        // Writes through every member: followers forward to the leader.
        for (index, member) in cluster.members.enumerated() {
            XCTAssertEqual(ok(try cluster.etcdctl(["put", "/k/\(index)", "v\(index)"], endpoints: member.endpoint)), "OK\n")
        }
        for member in cluster.members {
            XCTAssertEqual(ok(try cluster.etcdctl(["get", "--prefix", "/k/"], endpoints: member.endpoint)),
                           "/k/0\nv0\n/k/1\nv1\n/k/2\nv2\n")
            // Serializable reads on a member that forwarded its write see it too.
            XCTAssertEqual(ok(try cluster.etcdctl(["get", "/k/0", "--consistency=s"], endpoints: member.endpoint)),
                           "/k/0\nv0\n")
        }
        XCTAssertEqual(ok(try cluster.etcdctl(["get", "--prefix", "/k/", "--limit=2", "--keys-only"])), "/k/0\n\n/k/1\n\n")
        XCTAssertEqual(ok(try cluster.etcdctl(["get", "--prefix", "/k/", "--sort-by=KEY", "--order=DESCEND",
                                               "--print-value-only"])), "v2\nv1\nv0\n")
        XCTAssertTrue(ok(try cluster.etcdctl(["get", "--prefix", "/k/", "-w", "fields"])).contains("\"Count\" : 3"))

        // -w json: protobuf JSON with base64 keys and the header of the cluster.
        let json = ok(try cluster.etcdctl(["get", "/k/1", "-w", "json"]))
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let kvs = try XCTUnwrap(object["kvs"] as? [[String: Any]])
        XCTAssertEqual(kvs.first?["key"] as? String, Data("/k/1".utf8).base64EncodedString())
        let header = try XCTUnwrap(object["header"] as? [String: Any])
        XCTAssertNotNil(header["cluster_id"])
        XCTAssertNotNil(header["raft_term"])

        // --rev reads history.
        let putRevision = try XCTUnwrap(kvs.first?["mod_revision"] as? Int)
        XCTAssertEqual(ok(try cluster.etcdctl(["put", "/k/1", "changed"])), "OK\n")
        XCTAssertEqual(ok(try cluster.etcdctl(["get", "/k/1", "--rev=\(putRevision)", "--print-value-only"])), "v1\n")

        // del --prev-kv, del --prefix.
        XCTAssertEqual(ok(try cluster.etcdctl(["del", "/k/1", "--prev-kv"])), "1\n/k/1\nchanged\n")
        XCTAssertEqual(ok(try cluster.etcdctl(["del", "--prefix", "/k/"])), "2\n")

        // txn from stdin, both branches.
        let txn = "mod(\"/t\") = \"0\"\n\nput /t created\nget /t\n\nget /t\n\n"
        XCTAssertEqual(ok(try cluster.etcdctl(["txn"], stdin: txn)), "SUCCESS\n\nOK\n\n/t\ncreated\n")
        XCTAssertEqual(ok(try cluster.etcdctl(["txn"], stdin: txn)), "FAILURE\n\n/t\ncreated\n")

        // compaction, then reads below it fail with etcd's message.
        let current = try XCTUnwrap((try JSONSerialization.jsonObject(
            with: Data(ok(try cluster.etcdctl(["get", "/t", "-w", "json"])).utf8)) as? [String: Any])?["header"]
            as? [String: Any])["revision"] as? Int
        XCTAssertEqual(ok(try cluster.etcdctl(["compaction", "\(current!)"])), "compacted revision \(current!)\n")
        let compacted = try cluster.etcdctl(["get", "/t", "--rev=1"])
        XCTAssertNotEqual(compacted.status, 0)
        XCTAssertTrue(compacted.stderr.contains("etcdserver: mvcc: required revision has been compacted"), compacted.stderr)
    }

    func testWatchLeaseAndMaintenanceCommands() throws {
        let cluster = try TestCluster(size: 3)
        try cluster.startAll()
        try cluster.waitHealthy()

        // watch with a concurrent writer on another member, and a watch replaying history with --rev.
        XCTAssertEqual(ok(try cluster.etcdctl(["put", "/w/a", "1"])), "OK\n")
        let first = try XCTUnwrap((try JSONSerialization.jsonObject(
            with: Data(ok(try cluster.etcdctl(["get", "/w/a", "-w", "json"])).utf8)) as? [String: Any])?["kvs"]
            as? [[String: Any]])[0]["mod_revision"] as? Int
        let etcdctl = try TestCluster.etcdctlPath()
        let writerEndpoint = cluster.members[2].endpoint
        let writer = Thread {
            usleep(700_000)
            _ = try? TestCluster.run(etcdctl, ["--endpoints=\(writerEndpoint)", "put", "/w/b", "2"],
                                     environment: ["ETCDCTL_API": "3"], timeout: 10)
        }
        writer.start()
        // The watch ends when etcdctl is killed at its time limit; what it printed by then is checked.
        let live = try cluster.etcdctl(["watch", "--prefix", "/w/"], endpoints: cluster.members[1].endpoint, timeout: 3)
        XCTAssertEqual(live.stdout, "PUT\n/w/b\n2\n")
        let history = try cluster.etcdctl(["watch", "--prefix", "/w/", "--rev=\(first!)"], timeout: 2)
        XCTAssertEqual(history.stdout, "PUT\n/w/a\n1\nPUT\n/w/b\n2\n")

        // Leases: grant, attach, keep-alive once, time-to-live with keys, list, revoke deletes the key.
        let grant = ok(try cluster.etcdctl(["lease", "grant", "60"], endpoints: cluster.members[1].endpoint))
        let leaseID = try XCTUnwrap(grant.split(separator: " ").dropFirst().first.map(String.init))
        XCTAssertEqual(grant, "lease \(leaseID) granted with TTL(60s)\n")
        XCTAssertEqual(ok(try cluster.etcdctl(["put", "/l", "x", "--lease=\(leaseID)"])), "OK\n")
        XCTAssertEqual(ok(try cluster.etcdctl(["lease", "keep-alive", "--once", leaseID],
                                              endpoints: cluster.members[2].endpoint)),
                       "lease \(leaseID) keepalived with TTL(60)\n")
        let ttl = ok(try cluster.etcdctl(["lease", "timetolive", leaseID, "--keys"]))
        XCTAssertTrue(ttl.hasPrefix("lease \(leaseID) granted with TTL(60s), remaining("), ttl)
        XCTAssertTrue(ttl.hasSuffix("attached keys([/l])\n"), ttl)
        XCTAssertEqual(ok(try cluster.etcdctl(["lease", "list"])), "found 1 leases\n\(leaseID)\n")
        XCTAssertEqual(ok(try cluster.etcdctl(["lease", "revoke", leaseID])), "lease \(leaseID) revoked\n")
        XCTAssertEqual(ok(try cluster.etcdctl(["get", "/l"])), "")
        let unknown = try cluster.etcdctl(["lease", "revoke", "1234"])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("etcdserver: requested lease not found"), unknown.stderr)

        // Members, endpoints, maintenance.
        let members = ok(try cluster.etcdctl(["member", "list"]))
        for member in cluster.members {
            XCTAssertTrue(members.contains(", started, \(member.name), \(member.peerURL), \(member.clientURL), false"),
                          members)
        }
        // etcdctl 3.4 prints health lines on standard error.
        let healthOutput = try cluster.etcdctl(["endpoint", "health", "--cluster"])
        XCTAssertEqual(healthOutput.status, 0, healthOutput.stderr)
        for member in cluster.members {
            XCTAssertTrue(healthOutput.stderr.contains("\(member.clientURL) is healthy: successfully committed proposal"),
                          healthOutput.stderr)
        }
        let status = ok(try cluster.etcdctl(["endpoint", "status", "-w", "json"]))
        let statuses = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [[String: Any]])
        XCTAssertEqual(statuses.count, 3)
        let leaders = Set(statuses.compactMap { ($0["Status"] as? [String: Any])?["leader"] as? UInt64 })
        XCTAssertEqual(leaders.count, 1, status)
        XCTAssertEqual((statuses[0]["Status"] as? [String: Any])?["version"] as? String, "3.5.13")
        XCTAssertEqual(ok(try cluster.etcdctl(["alarm", "list"])), "")
        XCTAssertTrue(ok(try cluster.etcdctl(["defrag"], endpoints: cluster.members[0].endpoint))
            .hasPrefix("Finished defragmenting etcd member[\(cluster.members[0].endpoint)]"))
        let snapshot = cluster.root.appendingPathComponent("backup.db").path
        let saved = try cluster.etcdctl(["snapshot", "save", snapshot], endpoints: cluster.members[0].endpoint)
        XCTAssertEqual(saved.status, 0, saved.stderr)
        XCTAssertTrue(saved.stdout.contains("Snapshot saved at \(snapshot)"), saved.stdout)
        XCTAssertGreaterThan((try FileManager.default.attributesOfItem(atPath: snapshot)[.size] as? Int) ?? 0, 0)

        // move-leader to a follower (etcdctl finds the leader among the endpoints).
        let leaderID = try XCTUnwrap(leaders.first)
        let follower = try XCTUnwrap(statuses.compactMap { entry -> UInt64? in
            guard let header = (entry["Status"] as? [String: Any])?["header"] as? [String: Any],
                  let id = header["member_id"] as? UInt64, id != leaderID else { return nil }
            return id
        }.first)
        let moved = ok(try cluster.etcdctl(["move-leader", String(follower, radix: 16)]))
        XCTAssertTrue(moved.contains("Leadership transferred from \(String(leaderID, radix: 16)) to \(String(follower, radix: 16))"), moved)
    }

    func testKillingTheLeaderKeepsTheClusterWritable() throws {
        let cluster = try TestCluster(size: 3)
        try cluster.startAll()
        try cluster.waitHealthy()
        for index in 0..<20 { _ = ok(try cluster.etcdctl(["put", "/before/\(index)", "\(index)"])) }
        let leader = try leaderIndex(cluster)
        cluster.kill(leader)
        let survivors = cluster.members.indices.filter { $0 != leader }.map { cluster.members[$0].endpoint }
            .joined(separator: ",")
        // A new leader within a few election timeouts: the write succeeds (etcdctl retries within its timeout).
        var written = TestCluster.Output(status: -1, stdout: "", stderr: "")
        for _ in 0..<40 {
            written = try cluster.etcdctl(["put", "/after", "x", "--command-timeout=2s"], endpoints: survivors)
            if written.status == 0 { break }
            usleep(100_000)
        }
        XCTAssertEqual(written.stdout, "OK\n", written.stderr)
        // The killed member restarts and catches up; every member reports the same hash.
        try cluster.start(leader)
        try cluster.waitHealthy()
        XCTAssertEqual(ok(try cluster.etcdctl(["get", "/after", "--consistency=s", "--print-value-only"],
                                              endpoints: cluster.members[leader].endpoint)), "x\n")
        var hashes: Set<String> = []
        for _ in 0..<50 {
            let output = ok(try cluster.etcdctl(["endpoint", "hashkv", "-w", "json"]))
            let entries = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]])
            hashes = Set(entries.map { entry in
                let hash = entry["HashKV"] as? [String: Any]
                return "\(hash?["hash"] ?? "-")@\((hash?["header"] as? [String: Any])?["revision"] ?? "-")"
            })
            if hashes.count == 1 { break }
            usleep(100_000)
        }
        XCTAssertEqual(hashes.count, 1, "members disagree: \(hashes)")
    }

    func testBadInputGetsEtcdsErrors() throws {
        let cluster = try TestCluster(size: 1)
        try cluster.startAll()
        try cluster.waitHealthy()
        let large = String(repeating: "x", count: 1_600_000)
        let tooLarge = try cluster.etcdctl(["put", "/big"], stdin: large)
        XCTAssertNotEqual(tooLarge.status, 0)
        XCTAssertTrue(tooLarge.stderr.contains("etcdserver: request is too large"), tooLarge.stderr)

        let manyOps = (0..<129).map { "put /op/\($0) v" }.joined(separator: "\n")
        let txn = try cluster.etcdctl(["txn"], stdin: "\n" + manyOps + "\n\n\n")
        XCTAssertNotEqual(txn.status, 0)
        XCTAssertTrue(txn.stderr.contains("etcdserver: too many operations in txn request"), txn.stderr)

        let lease = try cluster.etcdctl(["put", "/k", "v", "--lease=1234"])
        XCTAssertNotEqual(lease.status, 0)
        XCTAssertTrue(lease.stderr.contains("etcdserver: requested lease not found"), lease.stderr)

        let empty = try cluster.etcdctl(["put", "", "v"])
        XCTAssertNotEqual(empty.status, 0)
        XCTAssertTrue(empty.stderr.contains("etcdserver: key is not provided") || empty.stderr.contains("put command needs"),
                      empty.stderr)

        // The server still serves after all of that.
        XCTAssertEqual(ok(try cluster.etcdctl(["put", "/still", "here"])), "OK\n")
    }

    private func leaderIndex(_ cluster: TestCluster) throws -> Int {
        let output = ok(try cluster.etcdctl(["endpoint", "status", "-w", "json"]))
        let entries = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]])
        for entry in entries {
            guard let status = entry["Status"] as? [String: Any], let header = status["header"] as? [String: Any],
                  let endpoint = entry["Endpoint"] as? String else { continue }
            if let leader = status["leader"] as? UInt64, leader == header["member_id"] as? UInt64,
               let index = cluster.members.firstIndex(where: { $0.endpoint == endpoint }) {
                return index
            }
        }
        throw TestCluster.MissingTool(description: "no leader found in \(output)")
    }
}
