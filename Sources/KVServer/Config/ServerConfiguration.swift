import Foundation
import Logging
import RaftKV

/// The validated settings of one member, from ``KVServerCommand``'s flags.
struct ServerConfiguration: Sendable {
    enum ClusterState: String, Sendable { case new, existing }

    enum AutoCompaction: Sendable, Equatable {
        case disabled
        /// Keep about this much history (etcd's periodic mode).
        case periodic(Duration)
        /// Keep this many revisions (etcd's revision mode).
        case revision(Int64)
    }

    var name: String
    var dataDirectory: URL
    var listenClientURLs: [EndpointURL]
    var advertiseClientURLs: [String]
    var listenPeerURLs: [EndpointURL]
    var advertisePeerURLs: [String]
    /// Names with their peer URLs, in flag order.
    var initialCluster: [(name: String, peerURLs: [String])]
    var clusterState: ClusterState
    var clusterToken: String
    var heartbeatInterval: Duration
    var electionTimeoutTicks: Int
    var snapshotCount: UInt64
    var quotaBackendBytes: Int64
    var maxRequestBytes: Int
    var maxTxnOps: Int
    var autoCompaction: AutoCompaction
    var logLevel: Logger.Level
    var authTokenTTL: Duration
    /// TLS on https client URLs; with `clientCertificateAuth`, a verified certificate's common name is a user.
    var clientTLS: TLSFiles?
    /// TLS between members, on https peer URLs (served and dialled).
    var peerTLS: TLSFiles?
    var passwordHashing: PasswordHashing

    /// etcd's `DefaultQuotaBytes` (2 GiB), used when the flag is 0.
    static let defaultQuotaBytes: Int64 = 2 * 1024 * 1024 * 1024
    /// etcd's ceiling on `--quota-backend-bytes` (8 GiB is "suggested", larger only warns there).
    static let maxQuotaBytes: Int64 = 8 * 1024 * 1024 * 1024 * 1024

    init(_ flags: KVServerCommand) throws {
        name = flags.name
        dataDirectory = URL(fileURLWithPath: flags.dataDir ?? "\(flags.name).etcd")
        listenClientURLs = try EndpointURL.list(flags.listenClientURLs)
        advertiseClientURLs = try EndpointURL.list(flags.advertiseClientURLs).map(\.description)
        listenPeerURLs = try EndpointURL.list(flags.listenPeerURLs)
        advertisePeerURLs = try EndpointURL.list(flags.initialAdvertisePeerURLs).map(\.description)
        clientTLS = try TLSFiles.from(certificate: flags.certFile, key: flags.keyFile, trustedCA: flags.trustedCAFile,
                                      clientCertificateAuth: flags.clientCertAuth, prefix: "")
        peerTLS = try TLSFiles.from(certificate: flags.peerCertFile, key: flags.peerKeyFile,
                                    trustedCA: flags.peerTrustedCAFile, clientCertificateAuth: flags.peerClientCertAuth,
                                    prefix: "peer-")
        // etcd's wording (embed.Config.Validate).
        for url in listenClientURLs where url.scheme == "https" && clientTLS == nil {
            throw ConfigurationError("TLS key/cert (--cert-file, --key-file) must be provided for client url \(url) with HTTPS scheme")
        }
        for url in listenPeerURLs where url.scheme == "https" && peerTLS == nil {
            throw ConfigurationError("TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url \(url) with HTTPS scheme")
        }
        initialCluster = try Self.parseInitialCluster(flags.initialCluster ?? "\(flags.name)=\(flags.initialAdvertisePeerURLs)")
        guard let state = ClusterState(rawValue: flags.initialClusterState) else {
            throw ConfigurationError("invalid value \"\(flags.initialClusterState)\" for flag -initial-cluster-state: valid values are \"new\" or \"existing\"")
        }
        clusterState = state
        clusterToken = flags.initialClusterToken
        guard flags.heartbeatIntervalMilliseconds > 0 else {
            throw ConfigurationError("--heartbeat-interval must be positive")
        }
        // etcd's rule: the election timeout is at least 5 heartbeats.
        guard flags.electionTimeoutMilliseconds >= 5 * flags.heartbeatIntervalMilliseconds else {
            throw ConfigurationError("--election-timeout[\(flags.electionTimeoutMilliseconds)ms] should be at least as 5 times as --heartbeat-interval[\(flags.heartbeatIntervalMilliseconds)ms]")
        }
        guard flags.electionTimeoutMilliseconds <= 50_000 else {
            throw ConfigurationError("--election-timeout[\(flags.electionTimeoutMilliseconds)ms] is too long, and should be set less than 50000ms")
        }
        heartbeatInterval = .milliseconds(flags.heartbeatIntervalMilliseconds)
        electionTimeoutTicks = flags.electionTimeoutMilliseconds / flags.heartbeatIntervalMilliseconds
        guard flags.snapshotCount > 0 else { throw ConfigurationError("--snapshot-count must be positive") }
        snapshotCount = flags.snapshotCount
        guard flags.quotaBackendBytes >= 0 else { throw ConfigurationError("--quota-backend-bytes must not be negative") }
        quotaBackendBytes = flags.quotaBackendBytes == 0 ? Self.defaultQuotaBytes : flags.quotaBackendBytes
        guard flags.maxRequestBytes > 0 else { throw ConfigurationError("--max-request-bytes must be positive") }
        maxRequestBytes = flags.maxRequestBytes
        guard flags.maxTxnOps > 0 else { throw ConfigurationError("--max-txn-ops must be positive") }
        maxTxnOps = flags.maxTxnOps
        autoCompaction = try Self.parseAutoCompaction(mode: flags.autoCompactionMode,
                                                      retention: flags.autoCompactionRetention)
        // etcd's token options: "simple" (the default) or "jwt,<options>", which is not implemented here.
        guard flags.authToken.split(separator: ",").first == "simple" else {
            throw ConfigurationError("--auth-token \"\(flags.authToken)\" is not supported: only simple tokens are")
        }
        guard flags.authTokenTTLSeconds > 0 else { throw ConfigurationError("--auth-token-ttl must be positive") }
        authTokenTTL = .seconds(flags.authTokenTTLSeconds)
        // etcd falls back to the default on an out-of-range cost; so do we.
        passwordHashing = PasswordHashing(bcryptCost: (4...31).contains(flags.bcryptCost) ? flags.bcryptCost : 10)
        switch flags.logLevel {
        case "debug": logLevel = .debug
        case "info": logLevel = .info
        case "warn": logLevel = .warning
        case "error": logLevel = .error
        case "panic", "fatal": logLevel = .critical
        default: throw ConfigurationError("unknown log level \"\(flags.logLevel)\"")
        }
        guard initialCluster.contains(where: { $0.name == name }) || clusterState == .existing else {
            throw ConfigurationError("couldn't find local name \"\(name)\" in the initial cluster configuration")
        }
        if let own = initialCluster.first(where: { $0.name == name }), Set(own.peerURLs) != Set(advertisePeerURLs) {
            throw ConfigurationError("--initial-cluster has \(name)=\(own.peerURLs.joined(separator: ",")) but missing from --initial-advertise-peer-urls=\(advertisePeerURLs.joined(separator: ","))")
        }
    }

    /// `name1=url1,name2=url2,name1=url3`: a name may appear several times, one URL each.
    static func parseInitialCluster(_ text: String) throws -> [(name: String, peerURLs: [String])] {
        var order: [String] = []
        var urls: [String: [String]] = [:]
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2, !pair[0].isEmpty else {
                throw ConfigurationError("invalid --initial-cluster entry \"\(part)\": expected name=URL")
            }
            let url = try EndpointURL(parsing: pair[1].trimmingCharacters(in: .whitespaces)).description
            if urls[pair[0]] == nil { order.append(pair[0]) }
            urls[pair[0], default: []].append(url)
        }
        guard !order.isEmpty else { throw ConfigurationError("--initial-cluster is empty") }
        let all = urls.values.flatMap { $0 }
        if Set(all).count != all.count { throw ConfigurationError("--initial-cluster has duplicate URLs") }
        return order.map { ($0, urls[$0]!) }
    }

    /// etcd's rules: periodic retention is a duration (`1h`, `30m`) or a bare number of hours; revision retention is
    /// a revision count.
    static func parseAutoCompaction(mode: String, retention: String) throws -> AutoCompaction {
        switch mode {
        case "periodic":
            if let hours = Double(retention) {
                return hours <= 0 ? .disabled : .periodic(.milliseconds(Int64(hours * 3_600_000)))
            }
            guard let duration = parseGoDuration(retention) else {
                throw ConfigurationError("invalid --auto-compaction-retention \"\(retention)\"")
            }
            return duration <= .zero ? .disabled : .periodic(duration)
        case "revision":
            guard let revisions = Int64(retention), revisions >= 0 else {
                throw ConfigurationError("invalid --auto-compaction-retention \"\(retention)\" for revision mode")
            }
            return revisions == 0 ? .disabled : .revision(revisions)
        default:
            throw ConfigurationError("unknown auto-compaction-mode \"\(mode)\"")
        }
    }

    /// Go's `time.ParseDuration` for the units etcd users write (h, m, s, ms), possibly combined (`1h30m`).
    static func parseGoDuration(_ text: String) -> Duration? {
        var total = Duration.zero
        var number = ""
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        while let character = rest.first {
            if character.isNumber || character == "." {
                number.append(character)
                rest = rest.dropFirst()
                continue
            }
            guard let value = Double(number) else { return nil }
            number = ""
            let unit: Double
            if rest.hasPrefix("ms") { unit = 0.001; rest = rest.dropFirst(2) }
            else if rest.hasPrefix("h") { unit = 3600; rest = rest.dropFirst() }
            else if rest.hasPrefix("m") { unit = 60; rest = rest.dropFirst() }
            else if rest.hasPrefix("s") { unit = 1; rest = rest.dropFirst() }
            else { return nil }
            total += .milliseconds(Int64(value * unit * 1000))
        }
        return number.isEmpty ? total : nil
    }

    /// The store's tunables from these flags.
    var storeConfiguration: KVStore.Configuration {
        var configuration = KVStore.Configuration()
        configuration.tickInterval = heartbeatInterval
        configuration.electionTimeoutTicks = electionTimeoutTicks
        configuration.heartbeatTicks = 1
        configuration.snapshotEveryEntries = snapshotCount
        configuration.snapshotRetainEntries = min(5_000, max(1, snapshotCount / 2))
        configuration.maxTxnOps = maxTxnOps
        configuration.maxRequestBytes = maxRequestBytes
        configuration.quotaBackendBytes = quotaBackendBytes
        configuration.authTokenTTL = authTokenTTL
        return configuration
    }
}
