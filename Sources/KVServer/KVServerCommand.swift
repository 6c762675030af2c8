import ArgumentParser
import Crypto
import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import RaftKV

@main
struct KVServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kvserver")

    func run() async throws {
        FileHandle.standardError.write(Data("kvserver: the gRPC server is not built yet\n".utf8))
        throw ExitCode(2)
    }
}
