import Foundation
import Prometheus

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The metrics `kvserver` serves on `/metrics`, under etcd's names, types and help texts so that dashboards
/// and alerts written for etcd work unchanged.
///
/// Each server owns its registry rather than bootstrapping the global `MetricsSystem`: several servers (and
/// several tests) in one process must not share counters, and the global system can be bootstrapped only once.
final class ServerMetrics: Sendable {
    /// etcd's latency buckets for disk operations: 1 ms doubling up to 8.192 s (`ExponentialBuckets(0.001, 2, 14)`).
    static let diskDurationBuckets: [Double] = (0..<14).map { 0.001 * Double(1 << $0) }

    let registry: PrometheusCollectorRegistry
    private let reportsProcess: Bool

    private let hasLeader: Gauge
    private let isLeader: Gauge
    private let leaderChanges: Counter
    private let proposalsCommitted: Gauge
    private let proposalsApplied: Gauge
    private let proposalsPending: Gauge
    private let proposalsFailed: Counter
    private let walFsync: ValueHistogram
    private let backendCommit: ValueHistogram
    private let dbTotalSize: Gauge
    private let dbTotalSizeInUse: Gauge
    private let healthSuccess: Counter
    private let healthFailures: Counter

    /// - Parameters:
    ///   - serverVersion: reported as etcd does, in `etcd_server_version{server_version="…"} 1`.
    ///   - reportsProcess: whether `render()` appends the `process_*` metrics read from `/proc/self`; tests
    ///     that compare whole outputs turn it off.
    init(serverVersion: String = "3.5.13", reportsProcess: Bool = true) {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        self.reportsProcess = reportsProcess

        func gauge(_ name: String, _ help: String) -> Gauge {
            registry.makeGauge(descriptor: Self.descriptor(name, help))
        }
        func counter(_ name: String, _ help: String) -> Counter {
            registry.makeCounter(descriptor: Self.descriptor(name, help))
        }
        func histogram(_ name: String, _ help: String) -> ValueHistogram {
            registry.makeValueHistogram(descriptor: Self.descriptor(name, help), buckets: Self.diskDurationBuckets)
        }

        hasLeader = gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.")
        isLeader = gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.")
        leaderChanges = counter("etcd_server_leader_changes_seen_total", "The number of leader changes seen.")
        // Gauges although named `_total`, as etcd has them: they are set from the Raft indexes, not counted.
        proposalsCommitted = gauge(
            "etcd_server_proposals_committed_total", "The total number of consensus proposals committed.")
        proposalsApplied = gauge(
            "etcd_server_proposals_applied_total", "The total number of consensus proposals applied.")
        proposalsPending = gauge(
            "etcd_server_proposals_pending", "The current number of pending proposals to commit.")
        proposalsFailed = counter(
            "etcd_server_proposals_failed_total", "The total number of failed proposals seen.")
        walFsync = histogram(
            "etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.")
        backendCommit = histogram(
            "etcd_disk_backend_commit_duration_seconds", "The latency distributions of commit called by backend.")
        dbTotalSize = gauge(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.")
        dbTotalSizeInUse = gauge(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.")
        healthSuccess = counter("etcd_server_health_success", "The total number of successful health checks")
        healthFailures = counter("etcd_server_health_failures", "The total number of failed health checks")

        registry.makeGauge(
            descriptor: Self.descriptor(
                "etcd_server_version",
                "Which version is running. 1 for 'server_version' label with current version."),
            labels: [("server_version", serverVersion)]
        ).set(to: 1)
    }

    private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    // MARK: Updates

    func setLeader(hasLeader: Bool, isLeader: Bool) {
        self.hasLeader.set(to: hasLeader ? 1 : 0)
        self.isLeader.set(to: isLeader ? 1 : 0)
    }

    func recordLeaderChange() {
        leaderChanges.increment()
    }

    /// `committed` and `applied` are Raft log indexes, `pending` the proposals waiting to commit.
    func setProposals(committed: UInt64, applied: UInt64, pending: Int) {
        proposalsCommitted.set(to: Double(committed))
        proposalsApplied.set(to: Double(applied))
        proposalsPending.set(to: Double(pending))
    }

    func recordProposalFailed() {
        proposalsFailed.increment()
    }

    /// The duration of one durable write of the Raft log (etcd's WAL fsync).
    func observeWALFsync(seconds: Double) {
        walFsync.record(seconds)
    }

    /// The duration of one commit of the state machine's storage (etcd's bbolt commit).
    func observeBackendCommit(seconds: Double) {
        backendCommit.record(seconds)
    }

    func setDatabaseSize(total: Int64, inUse: Int64) {
        dbTotalSize.set(to: Double(total))
        dbTotalSizeInUse.set(to: Double(inUse))
    }

    /// A message to a peer that could not be sent. `peer` is the member ID in etcd's hexadecimal form, which
    /// etcd uses as the `To` label; the series for a peer appears with its first failure, as with etcd.
    func recordPeerSendFailure(to peer: String) {
        registry.makeCounter(
            descriptor: Self.descriptor(
                "etcd_network_peer_sent_failures_total", "The total number of send failures from peers."),
            labels: [("To", peer)]
        ).increment()
    }

    /// Counts `/health` answers as etcd does; the health closure given to the listener calls it.
    func recordHealthCheck(healthy: Bool) {
        (healthy ? healthSuccess : healthFailures).increment()
    }

    // MARK: Exposition

    /// The Prometheus text format (version 0.0.4) of every metric, process metrics read at this moment.
    func render() -> String {
        var text = registry.emitToString()
        if reportsProcess, let process = ProcessStats.current() {
            text += process.prometheusText()
        }
        return Self.sortedByFamily(text)
    }

    /// The registry emits families in hash order; sorting them as Prometheus' Go client does gives the same
    /// output for the same values, so scrapes can be diffed against each other and against etcd's.
    static func sortedByFamily(_ text: String) -> String {
        var families: [(name: Substring, lines: [Substring])] = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# HELP ") || families.isEmpty
                || (line.hasPrefix("# TYPE ") && !families[families.count - 1].lines.last!.hasPrefix("# HELP "))
            {
                let name = line.split(separator: " ", maxSplits: 3).dropFirst(2).first ?? line
                families.append((name, []))
            }
            families[families.count - 1].lines.append(line)
        }
        return families.sorted { $0.name < $1.name }
            .map { $0.lines.joined(separator: "\n") + "\n" }
            .joined()
    }
}

/// What Prometheus' Go client reports as `process_*`, read from `/proc/self` at scrape time so that the values
/// are current without a background sampler.
struct ProcessStats: Equatable {
    var cpuSeconds: Double
    var residentMemoryBytes: Int
    var virtualMemoryBytes: Int
    var openFDs: Int
    var maxFDs: Int
    var startTimeSeconds: Double

    static func current() -> ProcessStats? {
        #if os(Linux)
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let systemStat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")
        else { return nil }
        var limit = rlimit()
        let maxFDs = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 ? Int(clamping: limit.rlim_cur) : 0
        return parse(
            stat: stat, systemStat: systemStat, openFDs: fds.count, maxFDs: maxFDs,
            clockTicksPerSecond: Int(sysconf(Int32(_SC_CLK_TCK))), pageSize: Int(sysconf(Int32(_SC_PAGESIZE))))
        #else
        return nil
        #endif
    }

    /// Parses `/proc/self/stat` (proc(5)) and the boot time in `/proc/stat`.
    static func parse(
        stat: String, systemStat: String, openFDs: Int, maxFDs: Int, clockTicksPerSecond: Int, pageSize: Int
    ) -> ProcessStats? {
        // The command name (field 2) is in parentheses and may itself contain spaces and parentheses.
        guard let close = stat.lastIndex(of: ")"), clockTicksPerSecond > 0 else { return nil }
        // Field 3 (state) is at index 0.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        func field(_ number: Int) -> Double? {
            let index = number - 3
            return fields.indices.contains(index) ? Double(fields[index]) : nil
        }
        guard let utime = field(14), let stime = field(15), let startTicks = field(22),
            let vsize = field(23), let rssPages = field(24),
            let bootLine = systemStat.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
            let bootTime = Double(bootLine.dropFirst("btime ".count).trimmingCharacters(in: .whitespaces))
        else { return nil }
        let ticks = Double(clockTicksPerSecond)
        return ProcessStats(
            cpuSeconds: (utime + stime) / ticks,
            residentMemoryBytes: Int(rssPages) * pageSize,
            virtualMemoryBytes: Int(vsize),
            openFDs: openFDs,
            maxFDs: maxFDs,
            startTimeSeconds: bootTime + startTicks / ticks
        )
    }

    /// The Go client's help texts and types.
    func prometheusText() -> String {
        func metric(_ name: String, _ type: String, _ help: String, _ value: String) -> String {
            "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
        }
        return metric("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
                      "\(cpuSeconds)")
            + metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", "\(maxFDs)")
            + metric("process_open_fds", "gauge", "Number of open file descriptors.", "\(openFDs)")
            + metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                     "\(residentMemoryBytes)")
            + metric("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
                     "\(startTimeSeconds)")
            + metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
                     "\(virtualMemoryBytes)")
    }
}
