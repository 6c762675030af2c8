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
    /// Short timings keep elections quick in tests (etcd's rule: election ≥ 5 heartbeats).
    var extraFlags = ["--heartbeat-interval", "50", "--election-timeout", "500"]

    /// `swift test` builds `kvserver` beside the test bundle (the build products directory).
    static var kvserver: URL {
        let bundle = Bundle(for: TestCluster.self).bundleURL
        let candidates = [bundle.deletingLastPathComponent(), bundle, URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
        for directory in candidates {
            let binary = directory.appendingPathComponent("kvserver")
            if FileManager.default.isExecutableFile(atPath: binary.path) { return binary }
        }
        return candidates[0].appendingPathComponent("kvserver")
    }

    struct MissingTool: Error, CustomStringConvertible {
        var description: String
    }

    static func etcdctlPath() throws -> String {
        for candidate in ["/usr/bin/etcdctl", "/usr/local/bin/etcdctl"]
        where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        throw MissingTool(description: "the real etcdctl is not installed (apt-get install etcd-client); .ci/run installs it")
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
        guard FileManager.default.isExecutableFile(atPath: Self.kvserver.path) else {
            throw MissingTool(description: "kvserver is not built at \(Self.kvserver.path) (swift build builds it)")
        }
    }

    deinit {
        for member in members { member.process.map(Self.terminate) }
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
        let process = Process()
        process.executableURL = Self.kvserver
        process.arguments = [
            "--name", member.name, "--data-dir", dataDirectory(index).path,
            "--listen-client-urls", member.clientURL, "--advertise-client-urls", member.clientURL,
            "--listen-peer-urls", member.peerURL, "--initial-advertise-peer-urls", member.advertisedPeerURL,
            "--initial-cluster-token", token, "--initial-cluster", initialCluster ?? self.initialCluster,
            "--initial-cluster-state", state,
        ] + extraFlags
        if !FileManager.default.fileExists(atPath: logFile(index).path) {
            FileManager.default.createFile(atPath: logFile(index).path, contents: nil)
        }
        let log = try FileHandle(forWritingTo: logFile(index))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        if let environment = memberEnvironment[index] {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        try process.run()
        members[index].process = process
        peerNetwork?.setProcess(index, process.processIdentifier)
    }

    func kill(_ index: Int, signal: Int32 = SIGKILL) {
        guard let process = members[index].process else { return }
        Glibc.kill(process.processIdentifier, signal)
        if Self.reap(process, timeout: 30) == nil { Glibc.kill(process.processIdentifier, SIGKILL) }
        members[index].process = nil
        peerNetwork?.setProcess(index, nil)
    }

    /// Waits (bounded) for a member's process to exit on its own; returns its exit status, nil if it still runs
    /// (then it is left running).
    func waitForExit(_ index: Int, timeout: TimeInterval) -> Int32? {
        guard let process = members[index].process else { return nil }
        guard let status = Self.reap(process, timeout: timeout) else { return nil }
        members[index].process = nil
        peerNetwork?.setProcess(index, nil)
        return status
    }

    /// Waits (bounded) until `process` has exited and returns its exit status (the signal's number when a signal
    /// ended it, as Foundation reports it), or nil if it still runs at the deadline. Foundation's Process has been seen
    /// to miss a child's exit (a kvserver that crashed stayed a zombie, `isRunning` stayed true and `waitUntilExit`
    /// never returned, hanging the whole test run), so a zombie child is reaped here directly.
    static func reap(_ process: Process, timeout: TimeInterval) -> Int32? {
        let pid = process.processIdentifier
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if !process.isRunning {
                process.waitUntilExit()
                return process.terminationStatus
            }
            let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
            // The state follows the parenthesised command name.
            if let close = stat.lastIndex(of: ")"), stat[close...].dropFirst(2).first == "Z" {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    return status & 0x7f == 0 ? (status >> 8) & 0xff : status & 0x7f
                }
            }
            usleep(10_000)
        } while Date() < deadline
        return nil
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

    private static func terminate(_ process: Process) {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        _ = reap(process, timeout: 30)
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

    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                    stdin: String? = nil, timeout: TimeInterval) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try? input.fileHandleForWriting.close()
        // Read both pipes while the process runs, so a large output cannot block it.
        let group = DispatchGroup()
        let collected = CollectedOutput()
        DispatchQueue.global().async(group: group) { collected.stdout = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { collected.stderr = err.fileHandleForReading.readDataToEndOfFile() }
        var status = reap(process, timeout: timeout)
        if status == nil {
            Glibc.kill(process.processIdentifier, SIGKILL)
            status = reap(process, timeout: 30)
        }
        group.wait()
        return Output(status: status ?? -1, stdout: String(decoding: collected.stdout, as: UTF8.self),
                      stderr: String(decoding: collected.stderr, as: UTF8.self))
    }

    private final class CollectedOutput: @unchecked Sendable {
        var stdout = Data()
        var stderr = Data()
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
