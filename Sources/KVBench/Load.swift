import Foundation
import GRPCCore
import Histogram
import Synchronization

/// What one client (or one watch stream) measured: latencies of successful requests, and failures.
struct ClientStats: Sendable {
    /// Microseconds; ten minutes is far beyond any request timeout, so nothing recorded is dropped.
    static let highestTrackableMicroseconds: UInt64 = 600_000_000
    /// Distinct error messages kept; more are counted under "other" so a storm of errors stays small.
    static let maxDistinctErrors = 8

    var latencyMicroseconds = Histogram<UInt64>(
        lowestDiscernibleValue: 1, highestTrackableValue: highestTrackableMicroseconds, numberOfSignificantValueDigits: .three)
    var successes = 0
    var errors = 0
    var errorMessages: [String: Int] = [:]

    mutating func recordSuccess(_ latency: Duration) {
        let (seconds, attoseconds) = latency.components
        let microseconds = max(0, seconds) * 1_000_000 + attoseconds / 1_000_000_000_000
        latencyMicroseconds.record(UInt64(clamping: min(microseconds, Int64(Self.highestTrackableMicroseconds))))
        successes += 1
    }

    mutating func recordError(_ error: any Error, count: Int = 1) {
        let message = switch error {
        case let error as RPCError: "\(error.code): \(error.message)"
        case is CancellationError: "run timed out (--timeout)"
        default: String(describing: error)
        }
        recordError(message: message, count: count)
    }

    mutating func recordError(message: String, count: Int = 1) {
        guard count > 0 else { return }
        errors += count
        if errorMessages[message] != nil || errorMessages.count < Self.maxDistinctErrors {
            errorMessages[message, default: 0] += count
        } else {
            errorMessages["other", default: 0] += count
        }
    }

    mutating func add(_ other: ClientStats) {
        latencyMicroseconds.add(other.latencyMicroseconds)
        successes += other.successes
        for (message, count) in other.errorMessages { recordError(message: message, count: count) }
    }
}

/// Hands out request numbers 0..<total to the clients; with a rate, request i is not issued before
/// start + i / rate (one schedule for all clients, as etcd's benchmark shares one rate limiter).
final class RequestSchedule: Sendable {
    let total: Int
    let ratePerSecond: Double
    let start: ContinuousClock.Instant
    private let next = Atomic<Int>(0)

    init(total: Int, ratePerSecond: Double) {
        self.total = total
        self.ratePerSecond = ratePerSecond
        start = .now
    }

    /// The next request number, or nil when all `total` have been handed out.
    func take() -> Int? {
        let (taken, _) = next.wrappingAdd(1, ordering: .relaxed)
        return taken < total ? taken : nil
    }

    func issueInstant(of index: Int) -> ContinuousClock.Instant? {
        guard ratePerSecond > 0 else { return nil }
        return start + .nanoseconds(Int64(Double(index) / ratePerSecond * 1e9))
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal (so logs and pipes stay clean).
final class ProgressBar: Sendable {
    let label: String
    let total: Int
    private let done = Atomic<Int>(0)

    init(label: String, total: Int) {
        self.label = label
        self.total = total
    }

    func advance(by count: Int = 1) { done.add(count, ordering: .relaxed) }

    var completed: Int { done.load(ordering: .relaxed) }

    /// Redraws until cancelled; returns at once when stderr is not a terminal.
    func draw() async {
        guard isatty(STDERR_FILENO) != 0, total > 0 else { return }
        let width = 40
        while !Task.isCancelled {
            render(width: width)
            try? await Task.sleep(for: .milliseconds(200))
        }
        render(width: width)
        FileHandle.standardError.write(Data("\n".utf8))
    }

    private func render(width: Int) {
        let count = min(completed, total)
        let filled = count * width / total
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(count)/\(total)".utf8))
    }
}

/// Runs `body` with a progress bar drawn beside it.
func withProgress<Result: Sendable>(
    _ progress: ProgressBar, _ body: @Sendable @escaping () async throws -> Result
) async throws -> Result {
    try await withThrowingTaskGroup(of: Result?.self) { group in
        group.addTask {
            await progress.draw()
            return nil
        }
        group.addTask { try await body() }
        defer { group.cancelAll() }
        while let finished = try await group.next() {
            if let finished { return finished }
        }
        preconditionFailure("the body task always returns a value or throws")
    }
}

/// What finished first in `withRunTimeout`.
enum TimedOutcome<Result: Sendable>: Sendable {
    case finished(Result)
    case deadline
    case timerCancelled
}

/// Runs `body`, cancelling it after `seconds`; `body` must return what it has when cancelled.
func withRunTimeout<Result: Sendable>(
    seconds: Double, _ body: @Sendable @escaping () async -> Result
) async -> (result: Result, timedOut: Bool) {
    return await withTaskGroup(of: TimedOutcome<Result>.self) { group in
        group.addTask {
            do {
                try await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
                return .deadline
            } catch {
                return .timerCancelled
            }
        }
        group.addTask { .finished(await body()) }
        var timedOut = false
        var result: Result?
        while let outcome = await group.next() {
            switch outcome {
            case .finished(let value):
                result = value
                group.cancelAll()
            case .deadline:
                timedOut = true
                group.cancelAll()
            case .timerCancelled:
                break
            }
        }
        guard let result else { preconditionFailure("the body task always returns") }
        return (result, timedOut)
    }
}

/// The outcome of one workload run before it is summarized.
struct LoadOutcome: Sendable {
    var stats: ClientStats
    var durationSeconds: Double
    var timedOut: Bool
}

/// etcd's benchmark loop: `clientCount` clients, spread over the connections, take request numbers from one
/// schedule until `total` are issued (or the run times out), each sending one request at a time.
func runRequests(
    label: String, total: Int, ratePerSecond: Double, settings: LoadSettings,
    operation: @Sendable @escaping (Connection, Int) async throws -> Void
) async throws -> LoadOutcome {
    let progress = ProgressBar(label: label, total: total)
    return try await withConnections(settings.endpoints, count: settings.connectionCount) { connections -> LoadOutcome in
        try await withProgress(progress) { () -> LoadOutcome in
            let schedule = RequestSchedule(total: total, ratePerSecond: ratePerSecond)
            let (stats, timedOut) = await withRunTimeout(seconds: settings.runTimeoutSeconds) {
                await withTaskGroup(of: ClientStats.self, returning: ClientStats.self) { group in
                    for client in 0..<settings.clientCount {
                        let connection = connections[client % connections.count]
                        group.addTask {
                            var stats = ClientStats()
                            while !Task.isCancelled, let index = schedule.take() {
                                if let instant = schedule.issueInstant(of: index) {
                                    try? await Task.sleep(until: instant, clock: .continuous)
                                }
                                let begin = ContinuousClock.now
                                do {
                                    try await operation(connection, index)
                                    stats.recordSuccess(begin.duration(to: .now))
                                } catch {
                                    stats.recordError(error)
                                }
                                progress.advance()
                            }
                            return stats
                        }
                    }
                    var merged = ClientStats()
                    for await stats in group { merged.add(stats) }
                    return merged
                }
            }
            var all = stats
            // Requests never issued because the run timed out are failures too: the run asked for `total`.
            all.recordError(message: "not issued before --timeout", count: total - all.successes - all.errors)
            let duration = schedule.start.duration(to: .now)
            return LoadOutcome(stats: all, durationSeconds: duration.seconds, timedOut: timedOut)
        }
    }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
