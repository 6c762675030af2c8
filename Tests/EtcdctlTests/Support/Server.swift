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

    /// A product built by `swift build` beside the test runner.
    static func product(_ name: String) -> URL? {
        BuiltProducts.url(of: name)
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
        var arguments = KVServerFlags.member(
            name: "infra1", dataDirectory: server.dataDirectory, clientURL: clientURL, peerURL: peerURL,
            token: "etcdctl-test", initialCluster: "infra1=\(peerURL)") + KVServerFlags.quickElections + extraArguments
        if let tls {
            arguments += ["--cert-file", tls.cert, "--key-file", tls.key, "--trusted-ca-file", tls.ca, "--client-cert-auth"]
        }
        server.launch = (kvserver, arguments, healthArguments)
        if try server.resume() { return server }
        server.stop()
        return nil
    }

    /// Starts the server (again) on its data directory and waits until it is healthy; false when it is not.
    func resume() throws -> Bool {
        guard let launch, process == nil else { return process != nil }
        process = try ChildProcess.start(launch.executable, launch.arguments, log: root.appendingPathComponent("kvserver.log"))
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
        process.map(ChildProcess.kill)
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
        let output = try ChildProcess.run(executable, arguments, environment: environment, stdin: stdin,
                                          timeout: timeout, keepStdinOpen: keepStdinOpen)
        return Output(status: output.status, stdout: output.stdoutText, stderr: output.stderrText,
                      stdoutData: output.stdout)
    }
}
