import Foundation
import XCTest
@testable import KVServer

/// Flags, environment variables and IDs as etcd has them.
final class ServerConfigurationTests: XCTestCase {
    /// Real etcd 3.4.23, started with `--initial-advertise-peer-urls http://127.0.0.1:12380` and the default token,
    /// reported member ID ddd67b312462fd7b and cluster ID 12101053776118486841.
    func testMemberAndClusterIDsAreEtcds() {
        let member = MemberIdentity.memberID(peerURLs: ["http://127.0.0.1:12380"], clusterToken: "etcd-cluster")
        XCTAssertEqual(member, 0xddd6_7b31_2462_fd7b)
        XCTAssertEqual(MemberIdentity.clusterID(memberIDs: [member]), 12_101_053_776_118_486_841)
    }

    func testGoStyleFlagsAndEnvironment() throws {
        let arguments = EtcdArguments.normalize(
            ["-name", "infra1", "--enable-pprof=true", "--logger=zap", "--data-dir=/tmp/x"],
            environment: ["ETCD_NAME": "ignored", "ETCD_INITIAL_CLUSTER_STATE": "existing", "ETCD_ENABLE_PPROF": "false"],
            options: KVServerCommand.optionNames, flags: KVServerCommand.flagNames)
        XCTAssertEqual(arguments, ["--name", "infra1", "--enable-pprof", "--logger=zap", "--data-dir=/tmp/x",
                                   "--initial-cluster-state=existing"])
        let command = try KVServerCommand.parse(arguments)
        XCTAssertEqual(command.name, "infra1")
        XCTAssertEqual(command.initialClusterState, "existing")
        XCTAssertTrue(command.enablePprof)
    }

    func testDefaultsAreEtcds() throws {
        let configuration = try ServerConfiguration(try KVServerCommand.parse([]))
        XCTAssertEqual(configuration.name, "default")
        XCTAssertEqual(configuration.dataDirectory.lastPathComponent, "default.etcd")
        XCTAssertEqual(configuration.listenClientURLs.map(\.description), ["http://localhost:2379"])
        XCTAssertEqual(configuration.listenPeerURLs.map(\.description), ["http://localhost:2380"])
        XCTAssertEqual(configuration.initialCluster.map(\.name), ["default"])
        XCTAssertEqual(configuration.electionTimeoutTicks, 10)
        XCTAssertEqual(configuration.maxTxnOps, 128)
        XCTAssertEqual(configuration.quotaBackendBytes, 2 * 1024 * 1024 * 1024)
        XCTAssertEqual(configuration.autoCompaction, .disabled)
    }

    func testBadFlagsAreRefusedWithEtcdsWording() throws {
        func refusal(_ arguments: [String]) -> String {
            do {
                _ = try ServerConfiguration(try KVServerCommand.parse(arguments))
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(refusal(["--initial-cluster-state", "old"]).contains("valid values are \"new\" or \"existing\""))
        XCTAssertTrue(refusal(["--heartbeat-interval", "300"]).contains("should be at least as 5 times as --heartbeat-interval"))
        XCTAssertTrue(refusal(["--listen-client-urls", "127.0.0.1:2379"]).contains("URL"))
        XCTAssertTrue(refusal(["--name", "a", "--initial-cluster", "b=http://127.0.0.1:2380"])
            .contains("couldn't find local name \"a\""))
        XCTAssertTrue(refusal(["--auto-compaction-mode", "weekly"]).contains("unknown auto-compaction-mode"))
    }

    func testAutoCompactionRetention() throws {
        XCTAssertEqual(try ServerConfiguration.parseAutoCompaction(mode: "periodic", retention: "1"), .periodic(.seconds(3600)))
        XCTAssertEqual(try ServerConfiguration.parseAutoCompaction(mode: "periodic", retention: "1h30m"), .periodic(.seconds(5400)))
        XCTAssertEqual(try ServerConfiguration.parseAutoCompaction(mode: "periodic", retention: "0"), .disabled)
        XCTAssertEqual(try ServerConfiguration.parseAutoCompaction(mode: "revision", retention: "1000"), .revision(1000))
        XCTAssertThrowsError(try ServerConfiguration.parseAutoCompaction(mode: "revision", retention: "1h"))
    }
}
