import Foundation
import TestSupport
import Synchronization
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Real `kvserver` processes on loopback, driven by the real `etcdctl` (Debian's etcd-client, installed by .ci/run).
final class TestCluster {
    struct Member {
        var name: String
        var clientPort: Int
        var peerPort: Int
        /// The port peers are told to use: a ``PeerNetwork`` proxy's when the cluster has one, else `peerPort`.
        var advertisedPeerPort: Int?
        var process: Process?
        /// "https" when the cluster runs with TLS.
        var scheme = "http"
        var clientURL: String { "\(scheme)://127.0.0.1:\(clientPort)" }
        var peerURL: String { "\(scheme)://127.0.0.1:\(peerPort)" }
        var advertisedPeerURL: String { "\(scheme)://127.0.0.1:\(advertisedPeerPort ?? peerPort)" }
        var endpoint: String { scheme == "https" ? clientURL : "127.0.0.1:\(clientPort)" }
    }

    let root: URL
    var members: [Member]
    let token: String
    var extraFlags = KVServerFlags.quickElections
    /// `swift test` builds `kvserver` beside the test runner.
    let kvserver: URL

    struct MissingTool: Error, CustomStringConvertible {
        var description: String
    }

    static func etcdctlPath() throws -> String {
        guard let path = BuiltProducts.realEtcdctl else {
            throw MissingTool(description: "the real etcdctl is not installed (apt-get install etcd-client); .ci/run installs it")
        }
        return path
    }

    /// With `tls`, every member serves https on both its client and peer URLs and checks client certificates;
    /// ``etcdctl(_:endpoints:stdin:timeout:)`` presents `tlsClient`'s certificate.
    let tls: TLSMaterial?
    var tlsClient = "root"
    /// Proxies on the peer links (``init(size:tls:proxiedPeers:)``), told which process each member is.
    private(set) var peerNetwork: PeerNetwork?
    /// Environment variables for the next ``start(_:state:initialCluster:)`` of a member (e.g. failure points).
    var memberEnvironment: [Int: [String: String]] = [:]

    /// - Parameter proxiedPeers: members advertise the port of a fault-injecting proxy (``peerNetwork``) that
    ///   forwards to their real peer port, so tests can partition, delay and cut peer links.
    init(size: Int, tls: TLSMaterial? = nil, proxiedPeers: Bool = false) throws {
        self.tls = tls
        root = FileManager.default.temporaryDirectory
            .appendingPathComponent("kvserver-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let ports = try LoopbackPorts.free(count: size * 2)
        members = (0..<size).map { index in
            Member(name: "infra\(index + 1)", clientPort: ports[2 * index], peerPort: ports[2 * index + 1],
                   scheme: tls == nil ? "http" : "https")
        }
        if proxiedPeers {
            let proxyPorts = try LoopbackPorts.free(count: size)
            for index in members.indices { members[index].advertisedPeerPort = proxyPorts[index] }
            peerNetwork = try PeerNetwork(proxyPorts: proxyPorts, peerPorts: members.map(\.peerPort))
        }
        if let tls {
            extraFlags += ["--cert-file", tls.path("server.crt"), "--key-file", tls.path("server.key"),
                           "--trusted-ca-file", tls.path("ca.crt"), "--client-cert-auth",
                           "--peer-cert-file", tls.path("server.crt"), "--peer-key-file", tls.path("server.key"),
                           "--peer-trusted-ca-file", tls.path("ca.crt"), "--peer-client-cert-auth"]
        }
        token = "test-\(UUID().uuidString.prefix(6))"
        guard let kvserver = BuiltProducts.url(of: "kvserver") else {
            throw MissingTool(description: "kvserver is not built beside the test runner (swift build builds it)")
        }
        self.kvserver = kvserver
    }

    deinit {
        for member in members { member.process.map(ChildProcess.kill) }
        peerNetwork?.stop()
        // KVSERVER_TEST_KEEP=1 keeps data and logs for a look after a failure.
        if ProcessInfo.processInfo.environment["KVSERVER_TEST_KEEP"] == nil {
            try? FileManager.default.removeItem(at: root)
        }
    }

    var initialCluster: String { members.map { "\($0.name)=\($0.advertisedPeerURL)" }.joined(separator: ",") }
    var endpoints: String { members.map(\.endpoint).joined(separator: ",") }

    func dataDirectory(_ index: Int) -> URL { root.appendingPathComponent("\(members[index].name).etcd") }
    func logFile(_ index: Int) -> URL { root.appendingPathComponent("\(members[index].name).log") }

    func startAll() throws {
        for index in members.indices { try start(index) }
    }

    func start(_ index: Int, state: String = "new", initialCluster: String? = nil) throws {
        let member = members[index]
        let arguments = KVServerFlags.member(
            name: member.name, dataDirectory: dataDirectory(index), clientURL: member.clientURL, peerURL: member.peerURL,
            advertisedPeerURL: member.advertisedPeerURL, token: token,
            initialCluster: initialCluster ?? self.initialCluster, state: state) + extraFlags
        let process = try ChildProcess.start(kvserver, arguments, environment: memberEnvironment[index] ?? [:],
                                             log: logFile(index))
        members[index].process = process
        peerNetwork?.setProcess(index, process.processIdentifier)
    }

    func kill(_ index: Int, signal: Int32 = SIGKILL) {
        guard let process = members[index].process else { return }
        Glibc.kill(process.processIdentifier, signal)
        if ChildProcess.reap(process, timeout: 30) == nil { Glibc.kill(process.processIdentifier, SIGKILL) }
        members[index].process = nil
        peerNetwork?.setProcess(index, nil)
    }

    /// Waits (bounded) for a member's process to exit on its own; returns its exit status, nil if it still runs
    /// (then it is left running).
    func waitForExit(_ index: Int, timeout: TimeInterval) -> Int32? {
        guard let process = members[index].process else { return nil }
        guard let status = ChildProcess.reap(process, timeout: timeout) else { return nil }
        members[index].process = nil
        peerNetwork?.setProcess(index, nil)
        return status
    }

    /// Freezes a member (SIGSTOP): its sockets stay open but it answers nothing, as a process stuck in a long GC
    /// pause or a VM freeze would.
    func pause(_ index: Int) {
        guard let process = members[index].process else { return }
        Glibc.kill(process.processIdentifier, SIGSTOP)
    }

    /// Lets a paused member run again (SIGCONT); harmless on a running one.
    func resume(_ index: Int) {
        guard let process = members[index].process else { return }
        Glibc.kill(process.processIdentifier, SIGCONT)
    }

    /// The log of a member, for failure messages.
    func log(_ index: Int) -> String {
        (try? String(contentsOf: logFile(index), encoding: .utf8)) ?? ""
    }

    // MARK: etcdctl

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs the real etcdctl (API v3) against `endpoints` (default: every member), with a bounded run time.
    @discardableResult
    func etcdctl(_ arguments: [String], endpoints: String? = nil, stdin: String? = nil,
                 timeout: TimeInterval = 20) throws -> Output {
        let security = tls.map { tls in
            ["--cacert", tls.path("ca.crt"), "--cert", tls.path("\(tlsClient).crt"), "--key", tls.path("\(tlsClient).key")]
        } ?? []
        return try Self.run(try Self.etcdctlPath(), ["--endpoints=\(endpoints ?? self.endpoints)"] + security + arguments,
                     environment: ["ETCDCTL_API": "3"], stdin: stdin, timeout: timeout)
    }

    /// Runs a tool to completion (killed after `timeout`); `environment` is added to this process's.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                    stdin: String? = nil, timeout: TimeInterval) throws -> Output {
        let output = try ChildProcess.run(executable, arguments,
                                          environment: ProcessInfo.processInfo.environment.merging(environment) { $1 },
                                          stdin: stdin, timeout: timeout)
        return Output(status: output.status, stdout: output.stdoutText, stderr: output.stderrText)
    }

    /// Waits (bounded) until `etcdctl endpoint health` succeeds on every running member.
    func waitHealthy(timeout: TimeInterval = 30, file: StaticString = #filePath, line: UInt = #line) throws {
        let running = members.filter { $0.process != nil }.map(\.endpoint).joined(separator: ",")
        let deadline = Date().addingTimeInterval(timeout)
        var last = Output(status: -1, stdout: "", stderr: "")
        while Date() < deadline {
            last = try etcdctl(["endpoint", "health", "--command-timeout=2s"], endpoints: running, timeout: 10)
            if last.status == 0 { return }
            usleep(200_000)
        }
        XCTFail("cluster not healthy within \(timeout) s: \(last.stdout)\(last.stderr)\n--- log of \(members[0].name) (in \(root.path)):\n\(log(0).prefix(6000))",
                file: file, line: line)
        throw MissingTool(description: "cluster not healthy")
    }
}
