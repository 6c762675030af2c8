import Foundation
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Real `kvserver` members on free loopback ports (what Tests/ServerTests/Support/TestCluster.swift does, cut down
/// to what the object tests need). Killed when stopped or deinitialized; data and logs in a temporary directory.
final class KVServerProcess: @unchecked Sendable {
    struct Member {
        var name: String
        var clientPort: Int
        var peerPort: Int
        var process: Process?
        var clientURL: String { "http://127.0.0.1:\(clientPort)" }
        var peerURL: String { "http://127.0.0.1:\(peerPort)" }
        var endpoint: String { "127.0.0.1:\(clientPort)" }
    }

    struct MissingTool: Error, CustomStringConvertible { var description: String }

    let root: URL
    var members: [Member]
    let binary: URL

    /// `swift build` puts `kvserver` beside the test bundle (the build products directory).
    static var kvserver: URL {
        let bundle = Bundle(for: KVServerProcess.self).bundleURL
        let candidates = [bundle.deletingLastPathComponent(), bundle,
                          URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
        for directory in candidates {
            let binary = directory.appendingPathComponent("kvserver")
            if FileManager.default.isExecutableFile(atPath: binary.path) { return binary }
        }
        return candidates[0].appendingPathComponent("kvserver")
    }

    static func etcdctlPath() -> String? {
        ["/usr/bin/etcdctl", "/usr/local/bin/etcdctl"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    init(size: Int, binary: URL? = nil) throws {
        self.binary = binary ?? Self.kvserver
        guard FileManager.default.isExecutableFile(atPath: self.binary.path) else {
            throw MissingTool(description: "kvserver is not built at \(self.binary.path) (swift build builds it)")
        }
        root = FileManager.default.temporaryDirectory.appendingPathComponent("objects-kvserver-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let ports = try LoopbackPorts.free(count: size * 2)
        members = (0..<size).map { Member(name: "infra\($0 + 1)", clientPort: ports[2 * $0], peerPort: ports[2 * $0 + 1]) }
    }

    deinit {
        stop()
        if ProcessInfo.processInfo.environment["KVSERVER_TEST_KEEP"] == nil { try? FileManager.default.removeItem(at: root) }
    }

    var endpoints: String { members.map(\.endpoint).joined(separator: ",") }

    func start() throws {
        let token = "objects-\(UUID().uuidString.prefix(6))"
        let initialCluster = members.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",")
        for index in members.indices {
            let member = members[index]
            let process = Process()
            process.executableURL = binary
            process.arguments = [
                "--name", member.name, "--data-dir", root.appendingPathComponent("\(member.name).etcd").path,
                "--listen-client-urls", member.clientURL, "--advertise-client-urls", member.clientURL,
                "--listen-peer-urls", member.peerURL, "--initial-advertise-peer-urls", member.peerURL,
                "--initial-cluster-token", token, "--initial-cluster", initialCluster,
                "--initial-cluster-state", "new", "--heartbeat-interval", "50", "--election-timeout", "500",
                "--log-level", "warn",
            ]
            let logURL = root.appendingPathComponent("\(member.name).log")
            FileManager.default.createFile(atPath: logURL.path, contents: nil)
            let log = try FileHandle(forWritingTo: logURL)
            process.standardOutput = log
            process.standardError = log
            try process.run()
            members[index].process = process
        }
    }

    func stop() {
        for index in members.indices {
            guard let process = members[index].process else { continue }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
            members[index].process = nil
        }
    }

    func log(_ index: Int) -> String {
        (try? String(contentsOf: root.appendingPathComponent("\(members[index].name).log"), encoding: .utf8)) ?? ""
    }

    /// Runs the real etcdctl (API v3), bounded in time; returns (status, stdout bytes, stderr).
    func etcdctl(_ arguments: [String], timeout: TimeInterval = 30) throws -> (status: Int32, stdout: Data, stderr: String) {
        guard let path = Self.etcdctlPath() else { throw MissingTool(description: "the real etcdctl is not installed (apt-get install etcd-client)") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["--endpoints=\(endpoints)"] + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(["ETCDCTL_API": "3"]) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let collected = Collected()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { collected.stdout = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { collected.stderr = err.fileHandleForReading.readDataToEndOfFile() }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        group.wait()
        return (process.terminationStatus, collected.stdout, String(decoding: collected.stderr, as: UTF8.self))
    }

    private final class Collected: @unchecked Sendable {
        var stdout = Data()
        var stderr = Data()
    }
}
