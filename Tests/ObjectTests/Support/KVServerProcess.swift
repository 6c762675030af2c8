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

    static func etcdctlPath() -> String? {
        BuiltProducts.realEtcdctl
    }

    init(size: Int, binary: URL? = nil) throws {
        guard let binary = binary ?? BuiltProducts.url(of: "kvserver"),
              FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw MissingTool(description: "kvserver is not built beside the test runner (swift build builds it)")
        }
        self.binary = binary
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
            let arguments = KVServerFlags.member(
                name: member.name, dataDirectory: root.appendingPathComponent("\(member.name).etcd"),
                clientURL: member.clientURL, peerURL: member.peerURL, token: token, initialCluster: initialCluster)
            members[index].process = try ChildProcess.start(
                binary, arguments + KVServerFlags.quickElections + ["--log-level", "warn"],
                log: root.appendingPathComponent("\(member.name).log"))
        }
    }

    func stop() {
        for index in members.indices {
            members[index].process.map(ChildProcess.kill)
            members[index].process = nil
        }
    }

    func log(_ index: Int) -> String {
        (try? String(contentsOf: root.appendingPathComponent("\(members[index].name).log"), encoding: .utf8)) ?? ""
    }

    /// Runs the real etcdctl (API v3), bounded in time; returns (status, stdout bytes, stderr).
    func etcdctl(_ arguments: [String], timeout: TimeInterval = 30) throws -> (status: Int32, stdout: Data, stderr: String) {
        guard let path = Self.etcdctlPath() else { throw MissingTool(description: "the real etcdctl is not installed (apt-get install etcd-client)") }
        let output = try ChildProcess.run(path, ["--endpoints=\(endpoints)"] + arguments,
                                          environment: ProcessInfo.processInfo.environment.merging(["ETCDCTL_API": "3"]) { $1 },
                                          timeout: timeout)
        return (output.status, output.stdout, output.stderrText)
    }
}
