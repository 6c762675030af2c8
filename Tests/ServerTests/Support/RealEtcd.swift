import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Real etcd processes (Debian's etcd-server, `/usr/bin/etcd`) on loopback, started with the flags ``TestCluster``
/// gives `kvserver`, so that the same etcdctl commands can be run against both and their outputs compared.
final class RealEtcd {
    let root: URL
    var members: [TestCluster.Member]
    let token: String
    /// The same short timings as ``TestCluster``'s.
    var extraFlags = ["--heartbeat-interval", "50", "--election-timeout", "500"]

    static func etcdPath() throws -> String {
        for candidate in ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        throw TestCluster.MissingTool(description: "the real etcd is not installed (apt-get install etcd-server)")
    }

    /// `size` members named infra1… on free loopback ports; `token` defaults to a fresh one (pass a
    /// ``TestCluster``'s token to start both systems with the same one).
    init(size: Int, token: String? = nil) throws {
        _ = try Self.etcdPath()
        root = FileManager.default.temporaryDirectory
            .appendingPathComponent("real-etcd-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let ports = try LoopbackPorts.free(count: size * 2)
        members = (0..<size).map { index in
            TestCluster.Member(name: "infra\(index + 1)", clientPort: ports[2 * index], peerPort: ports[2 * index + 1])
        }
        self.token = token ?? "test-\(UUID().uuidString.prefix(6))"
    }

    deinit {
        stopAll()
        if ProcessInfo.processInfo.environment["KVSERVER_TEST_KEEP"] == nil {
            try? FileManager.default.removeItem(at: root)
        }
    }

    var initialCluster: String { members.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",") }
    var endpoints: String { members.map(\.endpoint).joined(separator: ",") }

    func dataDirectory(_ index: Int) -> URL { root.appendingPathComponent("\(members[index].name).etcd") }
    func logFile(_ index: Int) -> URL { root.appendingPathComponent("\(members[index].name).log") }

    func startAll() throws {
        for index in members.indices { try start(index) }
    }

    func start(_ index: Int) throws {
        let member = members[index]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.etcdPath())
        process.arguments = [
            "--name", member.name, "--data-dir", dataDirectory(index).path,
            "--listen-client-urls", member.clientURL, "--advertise-client-urls", member.clientURL,
            "--listen-peer-urls", member.peerURL, "--initial-advertise-peer-urls", member.peerURL,
            "--initial-cluster-token", token, "--initial-cluster", initialCluster,
            "--initial-cluster-state", "new",
        ] + extraFlags
        // Debian's etcd reads ETCD_* variables too: start it from a clean slate of those.
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ETCD") }
        _ = FileManager.default.createFile(atPath: logFile(index).path, contents: nil)
        let log = try FileHandle(forWritingTo: logFile(index))
        process.standardOutput = log
        process.standardError = log
        try process.run()
        members[index].process = process
    }

    func stopAll() {
        for index in members.indices {
            guard let process = members[index].process else { continue }
            if process.isRunning {
                Glibc.kill(process.processIdentifier, SIGKILL)
            }
            process.waitUntilExit()
            members[index].process = nil
        }
    }

    func log(_ index: Int) -> String {
        (try? String(contentsOf: logFile(index), encoding: .utf8)) ?? ""
    }

    /// The real etcdctl (API v3) against `endpoints` (default: every member), with a bounded run time.
    @discardableResult
    func etcdctl(_ arguments: [String], endpoints: String? = nil, stdin: String? = nil,
                 timeout: TimeInterval = 20) throws -> TestCluster.Output {
        try TestCluster.run(try TestCluster.etcdctlPath(), ["--endpoints=\(endpoints ?? self.endpoints)"] + arguments,
                            environment: ["ETCDCTL_API": "3"], stdin: stdin, timeout: timeout)
    }

    /// Waits (bounded) until `etcdctl endpoint health` succeeds on every member.
    func waitHealthy(timeout: TimeInterval = 30, file: StaticString = #filePath, line: UInt = #line) throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last = TestCluster.Output(status: -1, stdout: "", stderr: "")
        while Date() < deadline {
            last = try etcdctl(["endpoint", "health", "--command-timeout=2s"], timeout: 10)
            if last.status == 0 { return }
            usleep(200_000)
        }
        XCTFail("real etcd not healthy within \(timeout) s: \(last.stdout)\(last.stderr)\n--- log (in \(root.path)):\n\(log(0).prefix(6000))",
                file: file, line: line)
        throw TestCluster.MissingTool(description: "real etcd not healthy")
    }
}
