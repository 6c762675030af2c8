import Foundation
import XCTest

/// `check perf` and `check datascale` are benchmarks: a short run (shortened through the variables that only our
/// etcdctl reads) is checked for etcdctl's output shape, the rate limit and the clean-up, never for speed; their
/// refusals are compared with the real etcdctl's.
final class EtcdctlCheckTests: SharedServerTestCase {
    static func matches(_ line: String, _ pattern: String) -> Bool {
        line.range(of: "^" + pattern + "$", options: .regularExpression) != nil
    }

    func testPerfShortRun() throws {
        let server = try requireServer()
        let run = try server.run(real: false, ["check", "perf", "--prefix=/perf-test/", "--auto-compact", "--auto-defrag"],
                                 env: ["CHECK_PERF_DURATION": "2s"])
        XCTAssertEqual(run.stderr, "")
        var lines = run.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 8, run.stdout)
        guard lines.count == 8 else { return }
        XCTAssertTrue(Self.matches(lines[0], #"Compacting with revision \d+"#), lines[0])
        XCTAssertEqual(lines[1], lines[0].replacingOccurrences(of: "Compacting", with: "Compacted"))
        XCTAssertEqual(lines[2], "Defragmenting \"\(server.endpoint)\"")
        XCTAssertEqual(lines[3], "Defragmented \"\(server.endpoint)\"")
        lines.removeFirst(4)
        XCTAssertTrue(Self.matches(lines[0], #"(PASS: Throughput is|FAIL: Throughput too low:) \d+ writes/s"#), lines[0])
        XCTAssertTrue(Self.matches(lines[1], #"(PASS: Slowest request took|Slowest request took too long:) \d+\.\d{6}s"#), lines[1])
        XCTAssertTrue(Self.matches(lines[2], #"(PASS: Stddev is|Stddev too high:) \d+\.\d{6}s"#), lines[2])
        let passed = lines[0...2].allSatisfy { $0.hasPrefix("PASS") }
        XCTAssertEqual(lines[3], passed ? "PASS" : "FAIL")
        XCTAssertEqual(run.status, passed ? 0 : 1)
        // The load "s" is 150 puts/s: never more (etcdctl prints int(rate)+1).
        let throughput = Int(lines[0].split(separator: " ").dropLast().last ?? "") ?? 0
        XCTAssertGreaterThan(throughput, 1)
        XCTAssertLessThanOrEqual(throughput, 152)
        // The keys are gone, and compacted away.
        XCTAssertEqual(try server.realEtcdctl(["get", "--prefix", "/perf-test/", "--keys-only"]).stdout, "")
        let compacted = Int64(lines.isEmpty ? "" : String(run.stdout.split(separator: " ")[3].prefix { $0.isNumber })) ?? 0
        let old = try server.realEtcdctl(["get", "--rev=\(compacted - 1)", "x"])
        XCTAssertTrue(old.stderr.contains("required revision has been compacted"), old.stderr)
    }

    func testDatascaleShortRun() throws {
        let server = try requireServer()
        let run = try server.run(real: false, ["check", "datascale", "--prefix=/datascale-test/"],
                                 env: ["CHECK_DATASCALE_COUNT": "200"])
        XCTAssertEqual(run.status, 0, run.stdout + run.stderr)
        XCTAssertEqual(run.stderr, "")
        let lines = run.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "Start data scale check for work load [200 key-value pairs, 1024 bytes per key-value, 50 concurrent clients].")
        XCTAssertEqual(lines.count, 2, run.stdout)
        XCTAssertTrue(Self.matches(lines.last ?? "", #"PASS: Approximate system memory used : -?\d+\.\d\d MB\."#), run.stdout)
        XCTAssertEqual(try server.realEtcdctl(["get", "--prefix", "/datascale-test/", "--keys-only"]).stdout, "")
    }

    func testRefusalsAsEtcdctl() throws {
        let server = try requireServer()
        try server.realEtcdctl(["put", "/busy/x", "1"])
        for args in [["check", "perf", "--prefix=/busy/"], ["check", "perf", "--load=huge"], ["check", "perf", "-h"],
                     ["check", "datascale", "--prefix=/busy/"], ["check", "datascale", "--load=huge"], ["check", "datascale", "-h"],
                     ["check"]] {
            let a = try server.run(real: true, args), b = try server.run(real: false, args)
            XCTAssertEqual(a.status, b.status, "\(args)")
            XCTAssertEqual(a.stdout, b.stdout, "\(args)")
            XCTAssertEqual(a.stderr, b.stderr, "\(args)")
        }
    }
}
