import Foundation

/// Latency figures in milliseconds, from the HdrHistogram of successful requests (three significant digits).
struct LatencySummary: Codable, Sendable {
    var average: Double
    var p50: Double
    var p90: Double
    var p99: Double
    var p999: Double
    var max: Double

    init(_ stats: ClientStats) {
        let histogram = stats.latencyMicroseconds
        func milliseconds(_ microseconds: UInt64) -> Double { Double(microseconds) / 1000 }
        guard histogram.totalCount > 0 else {
            average = 0; p50 = 0; p90 = 0; p99 = 0; p999 = 0; max = 0
            return
        }
        average = histogram.mean / 1000
        p50 = milliseconds(histogram.valueAtPercentile(50))
        p90 = milliseconds(histogram.valueAtPercentile(90))
        p99 = milliseconds(histogram.valueAtPercentile(99))
        p999 = milliseconds(histogram.valueAtPercentile(99.9))
        max = milliseconds(histogram.max)
    }
}

/// One workload's result: what bench/compare.sh reads (with --json) and what a person reads (text).
struct BenchmarkReport: Codable, Sendable {
    var workload: String
    /// The command line's settings that shape the load, e.g. "clients" → "64".
    var settings: [String: String]
    /// Requests the run was asked for (for watch: events expected, watchers × puts).
    var total: Int
    var successes: Int
    var errors: Int
    var durationSeconds: Double
    /// Successful requests (watch: events delivered) per second of the run.
    var throughputPerSecond: Double
    var latencyMilliseconds: LatencySummary
    /// Error messages and how often each occurred (at most eight distinct, the rest under "other").
    var errorMessages: [String: Int]
    /// The run hit --timeout before finishing.
    var timedOut: Bool
    /// range only: the count the last successful response reported (keys in the range, before --limit).
    var rangeCount: Int64?
    /// watch only: latency of the puts that made the events.
    var putLatencyMilliseconds: LatencySummary?

    init(workload: String, settings: [String: String], total: Int, outcome: LoadOutcome) {
        self.workload = workload
        self.settings = settings
        self.total = total
        successes = outcome.stats.successes
        errors = outcome.stats.errors
        durationSeconds = outcome.durationSeconds
        throughputPerSecond = outcome.durationSeconds > 0 ? Double(successes) / outcome.durationSeconds : 0
        latencyMilliseconds = LatencySummary(outcome.stats)
        errorMessages = outcome.stats.errorMessages
        timedOut = outcome.timedOut
    }

    var text: String {
        let latency = latencyMilliseconds
        var lines = [
            "\(workload): " + settings.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "),
            "  total       \(total) (\(successes) ok, \(errors) errors)\(timedOut ? ", timed out" : "")",
            String(format: "  duration    %.3f s", durationSeconds),
            String(format: "  throughput  %.1f req/s", throughputPerSecond),
            String(format: "  latency ms  avg %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f",
                   latency.average, latency.p50, latency.p90, latency.p99, latency.p999, latency.max),
        ]
        if let put = putLatencyMilliseconds {
            lines.append(String(format: "  put ms      avg %.3f  p50 %.3f  p99 %.3f  max %.3f", put.average, put.p50, put.p99, put.max))
        }
        if let rangeCount { lines.append("  range count \(rangeCount)") }
        for (message, count) in errorMessages.sorted(by: { $0.value > $1.value }) {
            lines.append("  error ×\(count): \(message)")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
