import ArgumentParser
import Foundation
import Logging

/// `kvserver`: an etcd v3 member. Flags, defaults and `ETCD_*` environment variables are etcd's, so that a script
/// written for etcd starts it unchanged.
@main
struct KVServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kvserver",
        abstract: "A Raft-replicated key-value store that speaks etcd's v3 API.")

    @Option(help: "Human-readable name for this member.")
    var name: String = "default"
    @Option(name: .customLong("data-dir"), help: "Path to the data directory (default: <name>.etcd).")
    var dataDir: String?
    @Option(name: .customLong("listen-client-urls"), help: "List of URLs to listen on for client traffic.")
    var listenClientURLs: String = "http://localhost:2379"
    @Option(name: .customLong("advertise-client-urls"), help: "List of this member's client URLs to advertise to the public.")
    var advertiseClientURLs: String = "http://localhost:2379"
    @Option(name: .customLong("listen-peer-urls"), help: "List of URLs to listen on for peer traffic.")
    var listenPeerURLs: String = "http://localhost:2380"
    @Option(name: .customLong("initial-advertise-peer-urls"), help: "List of this member's peer URLs to advertise to the rest of the cluster.")
    var initialAdvertisePeerURLs: String = "http://localhost:2380"
    @Option(name: .customLong("initial-cluster"), help: "Initial cluster configuration for bootstrapping (default: <name>=<initial-advertise-peer-urls>).")
    var initialCluster: String?
    @Option(name: .customLong("initial-cluster-state"), help: "Initial cluster state ('new' or 'existing').")
    var initialClusterState: String = "new"
    @Option(name: .customLong("initial-cluster-token"), help: "Initial cluster token for the etcd cluster during bootstrap.")
    var initialClusterToken: String = "etcd-cluster"
    @Option(name: .customLong("heartbeat-interval"), help: "Time (in milliseconds) of a heartbeat interval.")
    var heartbeatIntervalMilliseconds: Int = 100
    @Option(name: .customLong("election-timeout"), help: "Time (in milliseconds) for an election to timeout.")
    var electionTimeoutMilliseconds: Int = 1000
    @Option(name: .customLong("snapshot-count"), help: "Number of committed transactions to trigger a snapshot to disk.")
    var snapshotCount: UInt64 = 100_000
    @Option(name: .customLong("quota-backend-bytes"), help: "Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).")
    var quotaBackendBytes: Int64 = 0
    @Option(name: .customLong("max-request-bytes"), help: "Maximum client request size in bytes the server will accept.")
    var maxRequestBytes: Int = 1_572_864
    @Option(name: .customLong("max-txn-ops"), help: "Maximum number of operations permitted in a transaction.")
    var maxTxnOps: Int = 128
    @Option(name: .customLong("auto-compaction-mode"), help: "Interpret 'auto-compaction-retention' one of: periodic|revision.")
    var autoCompactionMode: String = "periodic"
    @Option(name: .customLong("auto-compaction-retention"), help: "Auto compaction retention for mvcc key value store. 0 means disable auto compaction.")
    var autoCompactionRetention: String = "0"
    @Option(name: .customLong("cert-file"), help: "Path to the client server TLS cert file.")
    var certFile: String = ""
    @Option(name: .customLong("key-file"), help: "Path to the client server TLS key file.")
    var keyFile: String = ""
    @Option(name: .customLong("trusted-ca-file"), help: "Path to the client server TLS trusted CA cert file.")
    var trustedCAFile: String = ""
    @Flag(name: .customLong("client-cert-auth"), help: "Enable client cert authentication.")
    var clientCertAuth: Bool = false
    @Option(name: .customLong("peer-cert-file"), help: "Path to the peer server TLS cert file.")
    var peerCertFile: String = ""
    @Option(name: .customLong("peer-key-file"), help: "Path to the peer server TLS key file.")
    var peerKeyFile: String = ""
    @Option(name: .customLong("peer-trusted-ca-file"), help: "Path to the peer server TLS trusted CA file.")
    var peerTrustedCAFile: String = ""
    @Flag(name: .customLong("peer-client-cert-auth"), help: "Enable peer client cert authentication.")
    var peerClientCertAuth: Bool = false
    @Option(name: .customLong("auth-token"), help: "Specify auth token specific options (only 'simple' is supported).")
    var authToken: String = "simple"
    @Option(name: .customLong("auth-token-ttl"), help: "The lifetime in seconds of the auth token.")
    var authTokenTTLSeconds: Int = 300
    @Option(name: .customLong("bcrypt-cost"), help: "Specify the cost / strength of password hashing (scrypt with 2^(cost+4) rounds).")
    var bcryptCost: Int = 10
    @Option(name: .customLong("log-level"), help: "Configures log level. Only supports debug, info, warn, error, panic, or fatal.")
    var logLevel: String = "info"
    // Accepted for compatibility with scripts written for etcd; logs always go to standard error.
    @Option(name: .customLong("logger"), help: "Accepted for compatibility (logs go to standard error).")
    var logger: String = "zap"
    @Option(name: .customLong("log-outputs"), help: "Accepted for compatibility: only 'stderr' (the default) is supported.")
    var logOutputs: String = "stderr"
    @Flag(name: .customLong("enable-pprof"), help: "Accepted for compatibility; there is no pprof endpoint.")
    var enablePprof: Bool = false

    /// Every option above by its etcd name, for `ETCD_*` variables and Go-style single-dash flags.
    static let optionNames: [String] = [
        "name", "data-dir", "listen-client-urls", "advertise-client-urls", "listen-peer-urls",
        "initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state", "initial-cluster-token",
        "heartbeat-interval", "election-timeout", "snapshot-count", "quota-backend-bytes", "max-request-bytes",
        "max-txn-ops", "auto-compaction-mode", "auto-compaction-retention", "log-level", "logger", "log-outputs",
        "auth-token", "auth-token-ttl", "bcrypt-cost", "cert-file", "key-file", "trusted-ca-file", "peer-cert-file",
        "peer-key-file", "peer-trusted-ca-file",
    ]
    static let flagNames: [String] = ["enable-pprof", "client-cert-auth", "peer-client-cert-auth"]

    static func main() async {
        let arguments = EtcdArguments.normalize(Array(CommandLine.arguments.dropFirst()),
                                                environment: ProcessInfo.processInfo.environment,
                                                options: optionNames, flags: flagNames)
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }

    func run() async throws {
        let configuration: ServerConfiguration
        do {
            configuration = try ServerConfiguration(self)
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data("kvserver: \(error)\n".utf8))
            throw ExitCode(1)
        }
        let logger = Logger(label: "kvserver") { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = configuration.logLevel
            return handler
        }
        try await ServerRuntime(configuration: configuration, logger: logger).run()
    }
}

/// Go's flag syntax and etcd's environment variables, turned into what the argument parser reads.
enum EtcdArguments {
    /// Rewrites `-flag` as `--flag`, `--bool-flag=true|false` as present or absent, and appends `ETCD_<FLAG>`
    /// environment values for options not given on the command line (flags win over the environment, as in etcd).
    static func normalize(_ arguments: [String], environment: [String: String], options: [String],
                          flags: [String]) -> [String] {
        var result: [String] = []
        var given = Set<String>()
        for argument in arguments {
            var argument = argument
            if argument.hasPrefix("-") && !argument.hasPrefix("--") && argument.count > 2 {
                argument = "-" + argument
            }
            guard argument.hasPrefix("--") else {
                result.append(argument)
                continue
            }
            let body = argument.dropFirst(2)
            let name = String(body.split(separator: "=", maxSplits: 1).first ?? "")
            given.insert(name)
            if flags.contains(name), let equals = body.firstIndex(of: "=") {
                if ["true", "1", "t", "T", "TRUE", "True"].contains(body[body.index(after: equals)...]) {
                    result.append("--" + name)
                }
                continue
            }
            result.append(argument)
        }
        for name in options where !given.contains(name) {
            if let value = environment[environmentName(name)] { result.append("--\(name)=\(value)") }
        }
        for name in flags where !given.contains(name) {
            if let value = environment[environmentName(name)], ["true", "1"].contains(value.lowercased()) {
                result.append("--" + name)
            }
        }
        return result
    }

    static func environmentName(_ option: String) -> String {
        "ETCD_" + option.uppercased().replacingOccurrences(of: "-", with: "_")
    }
}
