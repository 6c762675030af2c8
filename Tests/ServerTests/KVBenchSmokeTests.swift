import Foundation
import TestSupport
import XCTest

/// kvbench (the benchmark tool bench/compare.sh runs) against one real kvserver: its JSON parses and its counts
/// match what it was asked to do and what the server holds.
final class KVBenchSmokeTests: XCTestCase {
    /// The fields of kvbench's `--json` report the test relies on (decoding them checks the format).
    struct Report: Decodable {
        struct Latency: Decodable {
            var average: Double
            var p50: Double
            var p99: Double
            var max: Double
        }

        var workload: String
        var total: Int
        var successes: Int
        var errors: Int
        var durationSeconds: Double
        var throughputPerSecond: Double
        var latencyMilliseconds: Latency
        var errorMessages: [String: Int]
        var timedOut: Bool
        var rangeCount: Int64?
    }

    private func kvbench(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> Report {
        // `swift test` builds every product, so kvbench sits beside kvserver.
        guard let kvbench = BuiltProducts.url(of: "kvbench") else {
            throw TestCluster.MissingTool(description: "kvbench is not built beside the test runner (swift build builds it)")
        }
        let output = try TestCluster.run(kvbench.path, arguments + ["--json", "--timeout", "30"], timeout: 45)
        XCTAssertEqual(output.status, 0, "kvbench \(arguments) failed: \(output.stderr)", file: file, line: line)
        do {
            return try JSONDecoder().decode(Report.self, from: Data(output.stdout.utf8))
        } catch {
            XCTFail("kvbench \(arguments) printed no report: \(error)\n\(output.stdout)\(output.stderr)", file: file, line: line)
            throw error
        }
    }

    func testPutThenRangeCountsMatch() throws {
        let cluster = try TestCluster(size: 1)
        try cluster.startAll()
        try cluster.waitHealthy()
        let endpoints = cluster.endpoints

        // 200 distinct keys under smoke/, over two connections.
        let put = try kvbench(["put", "--endpoints", endpoints, "--total", "200", "--clients", "4", "--conns", "2",
                               "--sequential-keys", "--key-space-size", "200", "--key-prefix", "smoke/",
                               "--key-size", "16", "--val-size", "64"])
        XCTAssertEqual(put.workload, "put")
        XCTAssertEqual(put.total, 200)
        XCTAssertEqual(put.successes, 200, "errors: \(put.errorMessages)")
        XCTAssertEqual(put.errors, 0)
        XCTAssertFalse(put.timedOut)
        XCTAssertGreaterThan(put.throughputPerSecond, 0)
        XCTAssertGreaterThan(put.latencyMilliseconds.p50, 0)
        XCTAssertLessThanOrEqual(put.latencyMilliseconds.p50, put.latencyMilliseconds.max)

        // The real etcdctl agrees that exactly those keys exist (its JSON count is of the whole range, past --limit).
        let count = try cluster.etcdctl(["get", "--prefix", "smoke/", "--limit=1", "-w", "json"])
        XCTAssertEqual(count.status, 0, count.stderr)
        let counted = try JSONSerialization.jsonObject(with: Data(count.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(counted?["count"] as? Int, 200)

        let linearizable = try kvbench(["range", "smoke/", "--prefix", "--count-only", "--endpoints", endpoints,
                                        "--total", "50", "--clients", "2"])
        XCTAssertEqual(linearizable.successes, 50, "errors: \(linearizable.errorMessages)")
        XCTAssertEqual(linearizable.errors, 0)
        XCTAssertEqual(linearizable.rangeCount, 200)

        // The count is of the whole range even when the response is limited (etcd's RangeResponse.count).
        let serializable = try kvbench(["range", "smoke/", "--prefix", "--consistency", "s", "--limit", "10",
                                        "--keys-only", "--endpoints", endpoints, "--total", "20"])
        XCTAssertEqual(serializable.successes, 20, "errors: \(serializable.errorMessages)")
        XCTAssertEqual(serializable.rangeCount, 200)
    }

    func testUnreachableServerCountsErrors() throws {
        // A port nothing listens on: every request must fail and be counted, within the request timeout.
        let port = try LoopbackPorts.free(count: 1)[0]
        let kvbench = try XCTUnwrap(BuiltProducts.url(of: "kvbench"), "swift build builds kvbench")
        let output = try TestCluster.run(kvbench.path, ["put", "--endpoints", "127.0.0.1:\(port)", "--total", "3",
                                                        "--request-timeout", "1", "--json"], timeout: 30)
        XCTAssertEqual(output.status, 0, output.stderr)
        let report = try JSONDecoder().decode(Report.self, from: Data(output.stdout.utf8))
        XCTAssertEqual(report.successes, 0)
        XCTAssertEqual(report.errors, 3)
        XCTAssertFalse(report.errorMessages.isEmpty)
    }
}
