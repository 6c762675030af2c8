import EtcdAPI
import Foundation
import GRPCCore
import XCTest

/// Growing and shrinking a running cluster with the real etcdctl, as an operator would.
final class MembershipTests: XCTestCase {
    /// etcdctl's watch asks for a leader (clientv3's WithRequireLeader): when its member loses the quorum, the
    /// stream fails with "etcdserver: no leader" after three election timeouts instead of waiting forever.
    func testWatchRequiringALeaderFailsWhenItsMemberLosesTheQuorum() throws {
        let cluster = try TestCluster(size: 3)
        try cluster.startAll()
        try cluster.waitHealthy()
        let etcdctl = try TestCluster.etcdctlPath()
        let endpoint = cluster.members[0].endpoint
        let result = LockedOutput()
        let watcher = Thread {
            result.value = try? TestCluster.run(etcdctl, ["--endpoints=\(endpoint)", "watch", "/quorum"],
                                                environment: ["ETCDCTL_API": "3"], timeout: 20)
        }
        watcher.start()
        usleep(1_000_000)
        cluster.kill(1)
        cluster.kill(2)
        let deadline = Date().addingTimeInterval(25)
        while result.value == nil && Date() < deadline { usleep(100_000) }
        let output = try XCTUnwrap(result.value, "etcdctl watch did not end")
        XCTAssertTrue(output.stderr.contains("etcdserver: no leader"), "\(output.stdout)\n\(output.stderr)")
    }

    private final class LockedOutput: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: TestCluster.Output?
        var value: TestCluster.Output? {
            get { lock.withLock { stored } }
            set { lock.withLock { stored = newValue } }
        }
    }

    func testAddLearnerPromoteAndRemoveAMember() throws {
        let cluster = try TestCluster(size: 4)
        let founders = [0, 1, 2]
        let foundingCluster = founders.map { "\(cluster.members[$0].name)=\(cluster.members[$0].peerURL)" }
            .joined(separator: ",")
        for index in founders { try cluster.start(index, initialCluster: foundingCluster) }
        let foundersEndpoints = founders.map { cluster.members[$0].endpoint }.joined(separator: ",")
        try cluster.waitHealthy()
        XCTAssertEqual(try cluster.etcdctl(["put", "/before", "1"], endpoints: foundersEndpoints).stdout, "OK\n")

        // member add prints the environment the new member starts with, as etcdctl does.
        let newcomer = cluster.members[3]
        let added = try cluster.etcdctl(["member", "add", newcomer.name, "--learner", "--peer-urls=\(newcomer.peerURL)"],
                                        endpoints: foundersEndpoints)
        XCTAssertEqual(added.status, 0, added.stderr)
        XCTAssertTrue(added.stdout.contains("ETCD_NAME=\"\(newcomer.name)\""), added.stdout)
        XCTAssertTrue(added.stdout.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""), added.stdout)
        let initialCluster = try XCTUnwrap(added.stdout.split(separator: "\n")
            .first { $0.hasPrefix("ETCD_INITIAL_CLUSTER=") }?.dropFirst("ETCD_INITIAL_CLUSTER=\"".count).dropLast())
        XCTAssertTrue(initialCluster.contains("\(newcomer.name)=\(newcomer.peerURL)"), String(initialCluster))
        // A member that did not handle the addition lists the newcomer once it has applied it.
        let unstartedLine = ", unstarted, , \(newcomer.peerURL), , true"
        var unstarted = ""
        for _ in 0..<50 {
            unstarted = try cluster.etcdctl(["member", "list"], endpoints: foundersEndpoints).stdout
            if unstarted.contains(unstartedLine) { break }
            usleep(50_000)
        }
        XCTAssertTrue(unstarted.contains(unstartedLine), unstarted)

        // The new member joins with the printed settings and catches up.
        try cluster.start(3, state: "existing", initialCluster: String(initialCluster))
        var caughtUp = ""
        for _ in 0..<100 {
            caughtUp = try cluster.etcdctl(["get", "/before", "--consistency=s", "--print-value-only"],
                                           endpoints: newcomer.endpoint, timeout: 5).stdout
            if caughtUp == "1\n" { break }
            usleep(100_000)
        }
        XCTAssertEqual(caughtUp, "1\n", "the learner did not catch up:\n\(cluster.log(3).prefix(4000))")

        // It publishes its name and client URLs once it runs.
        var memberLine: Substring?
        for _ in 0..<50 {
            memberLine = try cluster.etcdctl(["member", "list"]).stdout.split(separator: "\n")
                .first { $0.contains(", \(newcomer.name), ") }
            if memberLine != nil { break }
            usleep(100_000)
        }
        let memberID = try XCTUnwrap(memberLine?.split(separator: ",").first.map(String.init))
        let promoted = try cluster.etcdctl(["member", "promote", memberID])
        XCTAssertEqual(promoted.status, 0, promoted.stderr)
        // etcdctl prints member IDs with %16x: padded with spaces to 16 characters.
        let paddedID = String(repeating: " ", count: max(0, 16 - memberID.count)) + memberID
        XCTAssertTrue(promoted.stdout.contains("Member \(paddedID) promoted in cluster"), promoted.stdout)
        // Every member shows the promotion once it has applied it.
        let promotedLine = "\(memberID), started, \(newcomer.name), \(newcomer.peerURL), \(newcomer.clientURL), false"
        var listed = ""
        for _ in 0..<50 {
            listed = try cluster.etcdctl(["member", "list"]).stdout
            if listed.contains(promotedLine) { break }
            usleep(50_000)
        }
        XCTAssertTrue(listed.contains(promotedLine), listed)
        XCTAssertEqual(try cluster.etcdctl(["put", "/after", "2"], endpoints: newcomer.endpoint).stdout, "OK\n")

        // Removing it: the cluster carries on without it, and it is refused as a peer.
        let removed = try cluster.etcdctl(["member", "remove", memberID], endpoints: foundersEndpoints)
        XCTAssertEqual(removed.status, 0, "\(removed.stderr)\nrunning: \(cluster.members.map { $0.process?.isRunning ?? false })")
        XCTAssertTrue(removed.stdout.contains("Member \(paddedID) removed from cluster"), removed.stdout)
        var afterRemoval = ""
        for _ in 0..<50 {
            afterRemoval = try cluster.etcdctl(["member", "list"], endpoints: foundersEndpoints).stdout
            if !afterRemoval.contains(newcomer.name) { break }
            usleep(50_000)
        }
        XCTAssertFalse(afterRemoval.contains(newcomer.name), afterRemoval)
        XCTAssertEqual(try cluster.etcdctl(["put", "/without", "3"], endpoints: foundersEndpoints).stdout, "OK\n")

        // The removed member hears it from its former peers and stops, as etcd's does.
        let removedProcess = try XCTUnwrap(cluster.members[3].process)
        let deadline = Date().addingTimeInterval(15)
        while removedProcess.isRunning && Date() < deadline { usleep(50_000) }
        XCTAssertFalse(removedProcess.isRunning, "the removed member still runs:\n\(cluster.log(3).suffix(2000))")
        XCTAssertTrue(cluster.log(3).contains("the member has been permanently removed from the cluster"))

        let unknown = try cluster.etcdctl(["member", "remove", memberID], endpoints: foundersEndpoints)
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("etcdserver: member not found"), unknown.stderr)
        let notLearner = try cluster.etcdctl(["member", "promote",
                                              try XCTUnwrap(listed.split(separator: ",").first.map(String.init))],
                                             endpoints: foundersEndpoints)
        XCTAssertNotEqual(notLearner.status, 0)
    }

    /// Regression: a member that applies its own removal (the leader always does: it commits the change) stopped its
    /// Raft node, but the process lived on without it: nothing told the server, and no peer ever refused it, since
    /// a stopped node sends nothing. It must stop, as a removed follower does.
    func testRemovedLeaderStopsInsteadOfLingeringWithoutItsRaftNode() async throws {
        let cluster = try TestCluster(size: 3)
        try cluster.startAll()
        try cluster.waitHealthy()
        var ids: [UInt64] = []
        var leader: UInt64 = 0
        for member in cluster.members {
            let status = try await DiskFaultTests.withClient(port: member.clientPort) { client in
                try await Etcdserverpb_Maintenance.Client(wrapping: client).status(Etcdserverpb_StatusRequest())
            }
            ids.append(status.header.memberID)
            if status.leader != 0 { leader = status.leader }
        }
        let leaderIndex = try XCTUnwrap(ids.firstIndex(of: leader), "no leader among \(ids)")
        let other = (leaderIndex + 1) % 3
        var removal = Etcdserverpb_MemberRemoveRequest()
        removal.id = leader
        let request = removal
        _ = try await DiskFaultTests.withClient(port: cluster.members[other].clientPort) { client in
            try await Etcdserverpb_Cluster.Client(wrapping: client).memberRemove(request)
        }
        let removedProcess = try XCTUnwrap(cluster.members[leaderIndex].process)
        let deadline = Date().addingTimeInterval(15)
        while removedProcess.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        XCTAssertFalse(removedProcess.isRunning, "the removed leader still runs:\n\(cluster.log(leaderIndex).suffix(2000))")
        XCTAssertTrue(cluster.log(leaderIndex).contains("removed from the cluster"), String(cluster.log(leaderIndex).suffix(2000)))
        // It stopped on its own, not by a crash on the way out (once: "Deinited NIOAsyncWriter without calling
        // finish()" in the gRPC transport while its tasks were cancelled).
        if !removedProcess.isRunning {
            XCTAssertEqual(removedProcess.terminationReason, .exit, String(cluster.log(leaderIndex).suffix(2000)))
            XCTAssertTrue(cluster.log(leaderIndex).contains("[KVServer] stopped"), String(cluster.log(leaderIndex).suffix(2000)))
        }
        // The other two carry on, once they have elected a leader.
        var carriedOn = false
        for _ in 0..<20 where !carriedOn {
            carriedOn = try await DiskFaultTests.put(port: cluster.members[other].clientPort, key: "/after-removal", value: "1")
            if !carriedOn { try await Task.sleep(for: .milliseconds(300)) }
        }
        XCTAssertTrue(carriedOn, "the remaining two members do not accept a put")
    }
}
