import ArgumentParser
import EtcdAPI
import Foundation
import GRPCCore
import Synchronization

/// Watch event delivery (etcd benchmark watch-latency): `--watchers` watchers of one key over `--streams` watch
/// streams, then `--put-total` puts of that key; each event's latency is its receive time minus the time its put
/// was issued (the put's number travels in the value).
struct WatchLatency: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Watchers over watch streams and a put stream; event delivery latency.")

    @OptionGroup var common: CommonOptions

    @Option(help: "Watchers in all, spread evenly over the streams.")
    var watchers: Int = 1_000

    @Option(help: "Watch streams, spread over --conns connections.")
    var streams: Int = 10

    @Option(help: "Puts of the watched key; every watcher should receive every one.")
    var putTotal: Int = 100

    @Option(help: "Puts per second (the put stream); 0 = one after another.")
    var putRate: Double = 100

    @Option(help: "The watched key.")
    var key: String = "kvbench/watch"

    @Option(help: "Bytes per value (at least the digits of the put's number).")
    var valSize: Int = 32

    func validate() throws {
        guard watchers >= 1, streams >= 1, streams <= watchers else {
            throw ValidationError("--watchers and --streams must be ≥ 1, and --streams ≤ --watchers")
        }
        guard putTotal >= 1 else { throw ValidationError("--put-total must be at least 1") }
    }

    func run() async throws {
        let settings = try common.load
        let (watchers, streams, putTotal, putRate) = (self.watchers, self.streams, self.putTotal, self.putRate)
        let key = Data(self.key.utf8)
        let valSize = self.valSize
        let expectedEvents = watchers * putTotal
        let progress = ProgressBar(label: "watch events", total: expectedEvents)
        let shared = WatchShared(putTotal: putTotal)
        let options = settings.callOptions
        // One more connection than asked for carries the puts, so they never queue behind watch traffic.
        let outcome = try await withConnections(settings.endpoints, count: settings.connectionCount + 1) { connections -> (LoadOutcome, ClientStats) in
            try await withProgress(progress) { () -> (LoadOutcome, ClientStats) in
                let putConnection = connections[settings.connectionCount]
                let (result, timedOut) = await withRunTimeout(seconds: settings.runTimeoutSeconds) {
                    await withTaskGroup(of: StreamResult.self, returning: (ClientStats, ClientStats).self) { group in
                        for stream in 0..<streams {
                            let watchersOnStream = watchers / streams + (stream < watchers % streams ? 1 : 0)
                            let connection = connections[stream % settings.connectionCount]
                            group.addTask {
                                await watchStream(connection: connection, key: key, watcherCount: watchersOnStream,
                                                  putTotal: putTotal, shared: shared, progress: progress)
                            }
                        }
                        group.addTask {
                            await putStream(connection: putConnection, key: key, putTotal: putTotal,
                                            ratePerSecond: putRate, valueBytes: valSize, watcherCount: watchers,
                                            options: options, shared: shared)
                        }
                        var events = ClientStats()
                        var puts = ClientStats()
                        for await result in group {
                            switch result {
                            case .events(let stats): events.add(stats)
                            case .puts(let stats): puts.add(stats)
                            }
                        }
                        return (events, puts)
                    }
                }
                var events = result.0
                let puts = result.1
                events.recordError(message: "event not delivered", count: expectedEvents - events.successes - events.errors)
                let start = shared.firstPutInstant ?? .now
                return (LoadOutcome(stats: events, durationSeconds: start.duration(to: shared.lastEventInstant ?? .now).seconds,
                                    timedOut: timedOut), puts)
            }
        }
        var described = describe(common, nil, rate: putRate)
        described["watchers"] = String(watchers)
        described["streams"] = String(streams)
        described["put-total"] = String(putTotal)
        described["val-size"] = String(valSize)
        var report = BenchmarkReport(workload: "watch", settings: described, total: expectedEvents, outcome: outcome.0)
        report.putLatencyMilliseconds = LatencySummary(outcome.1)
        // Put failures are errors of the run even though the events are what it counts.
        report.errors += outcome.1.errors
        for (message, count) in outcome.1.errorMessages { report.errorMessages["put: " + message, default: 0] += count }
        try emit(report, json: common.json)
    }
}

enum StreamResult: Sendable {
    case events(ClientStats)
    case puts(ClientStats)
}

/// What the watch streams and the put stream share: when each put was issued, and when the run's events began and
/// ended.
final class WatchShared: Sendable {
    private let issueInstants: Mutex<[ContinuousClock.Instant?]>
    private let bounds = Mutex<(first: ContinuousClock.Instant?, last: ContinuousClock.Instant?)>((nil, nil))
    /// Watchers whose creation the server confirmed; the puts wait for all of them.
    let createdWatchers = Atomic<Int>(0)
    /// Set when the puts are over (or failed), so streams stop waiting for events that cannot come.
    let putsFinished = Atomic<Bool>(false)

    init(putTotal: Int) {
        issueInstants = Mutex(Array(repeating: nil, count: putTotal))
    }

    func recordIssue(of put: Int, at instant: ContinuousClock.Instant) {
        issueInstants.withLock { $0[put] = instant }
        bounds.withLock { if $0.first == nil { $0.first = instant } }
    }

    func issueInstant(of put: Int) -> ContinuousClock.Instant? {
        issueInstants.withLock { $0.indices.contains(put) ? $0[put] : nil }
    }

    func recordEvent(at instant: ContinuousClock.Instant) {
        bounds.withLock { if $0.last.map({ $0 < instant }) ?? true { $0.last = instant } }
    }

    var firstPutInstant: ContinuousClock.Instant? { bounds.withLock { $0.first } }
    var lastEventInstant: ContinuousClock.Instant? { bounds.withLock { $0.last } }
}

/// One watch stream with `watcherCount` watchers of `key`; returns when every watcher has seen every put, or when
/// the run is cancelled.
func watchStream(
    connection: Connection, key: Data, watcherCount: Int, putTotal: Int, shared: WatchShared, progress: ProgressBar
) async -> StreamResult {
    let expected = watcherCount * putTotal
    let stats = Locked(ClientStats())
    let finished = Latch()
    do {
        try await Etcdserverpb_Watch.Client(wrapping: connection).watch(
            // As clientv3's WithRequireLeader: a member without a leader fails the stream instead of leaving it idle.
            metadata: ["hasleader": "true"],
            requestProducer: { writer in
                for _ in 0..<watcherCount {
                    var create = Etcdserverpb_WatchCreateRequest()
                    create.key = key
                    var request = Etcdserverpb_WatchRequest()
                    request.createRequest = create
                    try await writer.write(request)
                }
                // The request side stays open while events arrive; closing it early ends the watch on some servers.
                // Ending quietly on cancellation: the response side returning cancels the call, and that is success.
                while !finished.isSet && !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(20))
                }
            },
            onResponse: { response in
                var received = 0
                for try await message in response.messages {
                    if message.created { shared.createdWatchers.add(1, ordering: .relaxed) }
                    if message.canceled {
                        throw RPCError(code: .cancelled, message: "watch canceled by the server: \(message.cancelReason)")
                    }
                    guard !message.events.isEmpty else { continue }
                    let now = ContinuousClock.now
                    shared.recordEvent(at: now)
                    stats.withLock { stats in
                        for event in message.events {
                            if let put = Int(String(decoding: event.kv.value.prefix { $0 != UInt8(ascii: ".") }, as: UTF8.self)),
                               let issued = shared.issueInstant(of: put) {
                                stats.recordSuccess(issued.duration(to: now))
                            } else {
                                stats.recordError(message: "event of an unknown put")
                            }
                        }
                    }
                    received += message.events.count
                    progress.advance(by: message.events.count)
                    if received >= expected { break }
                }
                finished.set()
            })
    } catch {
        finished.set()
        stats.withLock { $0.recordError(error) }
    }
    return .events(stats.withLock { $0 })
}

/// The put stream: waits (bounded by the run's timeout) until every watcher exists, then puts `putTotal` values
/// whose first bytes are the put's number.
func putStream(
    connection: Connection, key: Data, putTotal: Int, ratePerSecond: Double, valueBytes: Int, watcherCount: Int,
    options: CallOptions, shared: WatchShared
) async -> StreamResult {
    var stats = ClientStats()
    defer { shared.putsFinished.store(true, ordering: .relaxed) }
    while shared.createdWatchers.load(ordering: .relaxed) < watcherCount {
        do { try await Task.sleep(for: .milliseconds(10)) } catch {
            stats.recordError(message: "watchers not all created before --timeout", count: putTotal)
            return .puts(stats)
        }
    }
    let kv = Etcdserverpb_KV.Client(wrapping: connection)
    let start = ContinuousClock.now
    for put in 0..<putTotal {
        if Task.isCancelled {
            stats.recordError(message: "not issued before --timeout", count: putTotal - put)
            break
        }
        if ratePerSecond > 0 {
            try? await Task.sleep(until: start + .nanoseconds(Int64(Double(put) / ratePerSecond * 1e9)), clock: .continuous)
        }
        let digits = Array(String(put).utf8) + [UInt8(ascii: ".")]
        var request = Etcdserverpb_PutRequest()
        request.key = key
        request.value = Data(digits + [UInt8](repeating: UInt8(ascii: "v"), count: max(0, valueBytes - digits.count)))
        let issued = ContinuousClock.now
        shared.recordIssue(of: put, at: issued)
        do {
            _ = try await kv.put(request, options: options)
            stats.recordSuccess(issued.duration(to: .now))
        } catch {
            stats.recordError(error)
        }
    }
    return .puts(stats)
}

/// Lease keep-alive round trips (etcd benchmark lease-keepalive): each client grants a lease, then sends its share
/// of `--total` keep-alives on its own LeaseKeepAlive stream, one at a time.
struct LeaseKeepalive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease-keepalive", abstract: "Lease keep-alive round trips (etcd benchmark lease-keepalive).")

    @OptionGroup var common: CommonOptions

    @Option(help: "Keep-alive requests in all.")
    var total: Int = 10_000

    func run() async throws {
        let settings = try common.load
        let total = self.total
        let options = settings.callOptions
        let progress = ProgressBar(label: "lease-keepalive", total: total)
        let start = ContinuousClock.now
        let (stats, timedOut) = try await withConnections(settings.endpoints, count: settings.connectionCount) { connections in
            try await withProgress(progress) {
                await withRunTimeout(seconds: settings.runTimeoutSeconds) {
                    await withTaskGroup(of: ClientStats.self, returning: ClientStats.self) { group in
                        for client in 0..<settings.clientCount {
                            let share = total / settings.clientCount + (client < total % settings.clientCount ? 1 : 0)
                            let connection = connections[client % connections.count]
                            group.addTask {
                                await keepAliveClient(connection: connection, requests: share, options: options,
                                                      progress: progress)
                            }
                        }
                        var merged = ClientStats()
                        for await stats in group { merged.add(stats) }
                        return merged
                    }
                }
            }
        }
        let outcome = LoadOutcome(stats: stats, durationSeconds: start.duration(to: .now).seconds, timedOut: timedOut)
        try emit(BenchmarkReport(workload: "lease-keepalive", settings: describe(common, nil, rate: 0), total: total,
                                 outcome: outcome), json: common.json)
    }
}

/// One client's keep-alives: a request is written only after the previous response arrived, so each latency is
/// one round trip.
func keepAliveClient(connection: Connection, requests: Int, options: CallOptions, progress: ProgressBar) async -> ClientStats {
    guard requests > 0 else { return ClientStats() }
    let lease = Etcdserverpb_Lease.Client(wrapping: connection)
    let leaseID: Int64
    do {
        var grant = Etcdserverpb_LeaseGrantRequest()
        grant.ttl = 60
        leaseID = try await lease.leaseGrant(grant, options: options).id
    } catch {
        var stats = ClientStats()
        stats.recordError(error, count: requests)
        return stats
    }
    let (arrivals, arrival) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    let sentInstant = Locked(ContinuousClock.now)
    let stats = Locked(ClientStats())
    do {
        try await lease.leaseKeepAlive(
            requestProducer: { writer in
                var iterator = arrivals.makeAsyncIterator()
                var request = Etcdserverpb_LeaseKeepAliveRequest()
                request.id = leaseID
                for _ in 0..<requests {
                    sentInstant.withLock { $0 = .now }
                    try await writer.write(request)
                    guard await iterator.next() != nil else { return }
                }
            },
            onResponse: { response in
                var received = 0
                for try await _ in response.messages {
                    let latency = sentInstant.withLock { $0.duration(to: .now) }
                    stats.withLock { $0.recordSuccess(latency) }
                    progress.advance()
                    received += 1
                    if received == requests { break }
                    arrival.yield()
                }
                arrival.finish()
            })
    } catch {
        arrival.finish()
        stats.withLock { $0.recordError(error) }
    }
    var result = stats.withLock { $0 }
    result.recordError(message: "keep-alive not answered", count: requests - result.successes - result.errors)
    var revoke = Etcdserverpb_LeaseRevokeRequest()
    revoke.id = leaseID
    _ = try? await lease.leaseRevoke(revoke, options: options)
    return result
}

/// A value behind a lock that escaping closures can share (a `Mutex` itself cannot be captured: it is not copyable).
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) { mutex = Mutex(value) }

    func withLock<Result: Sendable>(_ body: (inout Value) -> Result) -> Result {
        mutex.withLock { body(&$0) }
    }
}

/// A flag set once, read by other tasks.
final class Latch: Sendable {
    private let value = Atomic<Bool>(false)

    func set() { value.store(true, ordering: .relaxed) }

    var isSet: Bool { value.load(ordering: .relaxed) }
}
