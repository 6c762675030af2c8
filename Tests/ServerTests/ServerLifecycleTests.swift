import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A single kvserver process: its HTTP endpoints, graceful shutdown and restart.
final class ServerLifecycleTests: XCTestCase {
    func testHTTPEndpointsShareTheClientPortWithGRPC() throws {
        let cluster = try TestCluster(size: 1)
        try cluster.startAll()
        try cluster.waitHealthy()
        let url = cluster.members[0].clientURL
        XCTAssertEqual(try cluster.etcdctl(["put", "k", "v"]).stdout, "OK\n")
        let health = try TestCluster.run("/usr/bin/curl", ["-s", "-w", " %{http_code}", "\(url)/health"], timeout: 10)
        XCTAssertEqual(health.stdout, "{\"health\":\"true\",\"reason\":\"\"} 200")
        let version = try TestCluster.run("/usr/bin/curl", ["-s", "\(url)/version"], timeout: 10)
        XCTAssertEqual(version.stdout, "{\"etcdserver\":\"3.5.13\",\"etcdcluster\":\"3.5.0\"}")
        let metrics = try TestCluster.run("/usr/bin/curl", ["-s", "\(url)/metrics"], timeout: 10).stdout
        for line in ["etcd_server_has_leader 1", "etcd_server_leader_changes_seen_total 1",
                     "etcd_server_health_success 1"] {
            XCTAssertTrue(metrics.contains(line), "missing \(line) in:\n\(metrics.prefix(3000))")
        }
        for name in ["etcd_server_proposals_committed_total", "etcd_disk_wal_fsync_duration_seconds_bucket",
                     "etcd_disk_backend_commit_duration_seconds_count", "etcd_mvcc_db_total_size_in_bytes",
                     "process_resident_memory_bytes"] {
            XCTAssertTrue(metrics.contains("\n\(name)"), "missing \(name)")
        }
        let missing = try TestCluster.run("/usr/bin/curl", ["-s", "-w", "%{http_code}", "\(url)/nope"], timeout: 10)
        XCTAssertEqual(missing.stdout, "404 page not found\n404")
    }

    /// Regression: a member whose peer port was taken logged "serving", then sat there with its servers gone and
    /// every client connection refused, instead of exiting.
    func testAMemberThatCannotBindItsPeerPortExitsWithTheError() throws {
        let cluster = try TestCluster(size: 1)
        let occupant = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(occupant, 0)
        defer { close(occupant) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(cluster.members[0].peerPort).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(occupant, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(bound, 0, "could not take the peer port for the test")
        XCTAssertEqual(listen(occupant, 1), 0)

        try cluster.start(0)
        let process = try XCTUnwrap(cluster.members[0].process)
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        XCTAssertFalse(process.isRunning, "kvserver kept running without its peer port:\n\(cluster.log(0))")
        guard !process.isRunning else { return }
        process.waitUntilExit()
        cluster.members[0].process = nil
        XCTAssertNotEqual(process.terminationStatus, 0, cluster.log(0))
        XCTAssertTrue(cluster.log(0).contains("ddress already in use"), cluster.log(0))
    }

    func testSIGTERMStopsCleanlyAndARestartKeepsEverything() throws {
        let cluster = try TestCluster(size: 1)
        try cluster.startAll()
        try cluster.waitHealthy()
        for index in 0..<50 {
            XCTAssertEqual(try cluster.etcdctl(["put", "/k/\(index)", "v\(index)"]).stdout, "OK\n")
        }
        let process = try XCTUnwrap(cluster.members[0].process)
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        XCTAssertFalse(process.isRunning, "kvserver did not stop within 10 s of SIGTERM")
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, cluster.log(0))
        cluster.members[0].process = nil
        XCTAssertTrue(cluster.log(0).contains("received signal 15"), cluster.log(0))

        try cluster.start(0)
        try cluster.waitHealthy()
        let count = try cluster.etcdctl(["get", "--prefix", "/k/", "--keys-only"]).stdout
            .split(separator: "\n").count
        XCTAssertEqual(count, 50)
        XCTAssertEqual(try cluster.etcdctl(["get", "/k/49", "--print-value-only"]).stdout, "v49\n")
    }
}
