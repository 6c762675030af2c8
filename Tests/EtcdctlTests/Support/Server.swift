import Foundation
import TestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// One real `kvserver` on free loopback ports, and runners for the real etcdctl and ours (both built or installed
/// beside the test bundle). Adapted from Tests/ServerTests/Support/TestCluster.swift.
final class Server {
    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
        var stdoutData = Data()
    }

    let root: URL
    let clientPort: Int
    let peerPort: Int
    /// The client URL's scheme prefix ("https://" when the server speaks TLS to clients, else none).
    var scheme = ""
    private var process: Process?
    /// How the server was started, so that ``resume()`` starts it again on the same data directory.
    private var launch: (executable: URL, arguments: [String], healthArguments: [String])?

    var dataDirectory: URL { root.appendingPathComponent("infra1.etcd") }

    var endpoint: String { "\(scheme)127.0.0.1:\(clientPort)" }
    static let realEtcdctlPath = "/usr/bin/etcdctl"

    /// A product built by `swift build` beside the test bundle.
    static func product(_ name: String) -> URL? {
        let bundle = Bundle(for: Server.self).bundleURL
        let candidates = [bundle.deletingLastPathComponent(), bundle, URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
        for directory in candidates {
            let binary = directory.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: binary.path) { return binary }
        }
        return nil
    }

    static var ourEtcdctl: URL? { product("etcdctl") }

    private init(root: URL, clientPort: Int, peerPort: Int) {
        self.root = root
        self.clientPort = clientPort
        self.peerPort = peerPort
    }

    /// Starts a kvserver; `extraArguments` are added to its command line, `tls` makes its client URL https with
    /// those files (`--cert-file --key-file --trusted-ca-file --client-cert-auth`), and `healthArguments` are what
    /// the real etcdctl needs to see it healthy (TLS flags, a user).
    static func start(extraArguments: [String] = [], tls: (cert: String, key: String, ca: String)? = nil,
                      healthArguments: [String] = []) throws -> Server? {
        guard let kvserver = product("kvserver"), ourEtcdctl != nil,
              FileManager.default.isExecutableFile(atPath: realEtcdctlPath) else { return nil }
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("etcdctl-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let ports = try LoopbackPorts.free(count: 2)
        let server = Server(root: root, clientPort: ports[0], peerPort: ports[1])
        let clientURL = "\(tls == nil ? "http" : "https")://127.0.0.1:\(ports[0])", peerURL = "http://127.0.0.1:\(ports[1])"
        if tls != nil { server.scheme = "https://" }
        let process = Process()
        process.executableURL = kvserver
        process.arguments = [
            "--name", "infra1", "--data-dir", root.appendingPathComponent("infra1.etcd").path,
            "--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
            "--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
            "--initial-cluster-token", "etcdctl-test", "--initial-cluster", "infra1=\(peerURL)",
            "--initial-cluster-state", "new", "--heartbeat-interval", "50", "--election-timeout", "500",
        ] + extraArguments
        if let tls {
            process.arguments! += ["--cert-file", tls.cert, "--key-file", tls.key, "--trusted-ca-file", tls.ca, "--client-cert-auth"]
        }
        server.launch = (kvserver, process.arguments!, healthArguments)
        if try server.resume() { return server }
        server.stop()
        return nil
    }

    /// Starts the server (again) on its data directory and waits until it is healthy; false when it is not.
    func resume() throws -> Bool {
        guard let launch, process == nil else { return process != nil }
        let process = Process()
        process.executableURL = launch.executable
        process.arguments = launch.arguments
        let logPath = root.appendingPathComponent("kvserver.log").path
        if !FileManager.default.fileExists(atPath: logPath) { FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        self.process = process
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let health = try? realEtcdctl(launch.healthArguments + ["endpoint", "health", "--command-timeout=2s"]), health.status == 0 {
                return true
            }
            usleep(200_000)
        }
        return false
    }

    /// Kills the server and keeps its data directory, for commands that work on it offline.
    func pause() {
        if let process, process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        process = nil
    }

    func stop() {
        pause()
        if ProcessInfo.processInfo.environment["KVSERVER_TEST_KEEP"] == nil {
            try? FileManager.default.removeItem(at: root)
        }
    }

    deinit { stop() }

    @discardableResult
    func realEtcdctl(_ args: [String]) throws -> Output {
        try run(real: true, args)
    }

    func currentRevision() throws -> Int64 {
        let output = try realEtcdctl(["-w", "json", "get", "x"])
        guard let range = output.stdout.range(of: "\"revision\":") else { return 0 }
        return Int64(output.stdout[range.upperBound...].prefix { $0.isNumber }) ?? 0
    }

    /// Runs etcdctl (the real one or ours) with `--endpoints` of the server first.
    func run(real: Bool, _ args: [String], stdin: String? = nil, env: [String: String] = [:],
             withEndpoints: Bool = true, timeout: TimeInterval = 20, keepStdinOpen: Bool = false) throws -> Output {
        let executable = real ? Self.realEtcdctlPath : Self.ourEtcdctl!.path
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ETCDCTL_") }
        environment["ETCDCTL_API"] = "3"
        environment.merge(env) { $1 }
        return try Self.run(executable, (withEndpoints ? ["--endpoints=\(endpoint)"] : []) + args, environment: environment,
                            stdin: stdin, timeout: timeout, keepStdinOpen: keepStdinOpen)
    }

    static func run(_ executable: String, _ arguments: [String], environment: [String: String], stdin: String?,
                    timeout: TimeInterval, keepStdinOpen: Bool) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        let out = Pipe(), err = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        if !keepStdinOpen { try? input.fileHandleForWriting.close() }
        let group = DispatchGroup()
        let collected = Collected()
        DispatchQueue.global().async(group: group) { collected.stdout = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { collected.stderr = err.fileHandleForReading.readDataToEndOfFile() }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        var killed = false
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            killed = true
        }
        process.waitUntilExit()
        try? input.fileHandleForWriting.close()
        group.wait()
        return Output(status: killed ? -9 : process.terminationStatus,
                      stdout: String(decoding: collected.stdout, as: UTF8.self),
                      stderr: String(decoding: collected.stderr, as: UTF8.self), stdoutData: collected.stdout)
    }

    private final class Collected: @unchecked Sendable {
        var stdout = Data()
        var stderr = Data()
    }
}
