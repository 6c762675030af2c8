import EtcdAPI
import Foundation
import GRPCCore
import Synchronization

// check perf and check datascale (ctlv3/command/check.go): a write benchmark and its verdict lines.

let checkLoadAliases = ["s": "s", "small": "s", "m": "m", "medium": "m", "l": "l", "large": "l", "xl": "xl", "xLarge": "xl"]

/// checkPerfCfgMap: puts per second, concurrent clients, seconds.
let checkPerfLoads: [String: (limit: Int, clients: Int, duration: Double)] = [
    "s": (150, 50, 60), "m": (1000, 200, 60), "l": (8000, 500, 60), "xl": (15000, 1000, 60),
]

/// checkDatascaleCfgMap: puts, bytes per key-value, concurrent clients.
let checkDatascaleLoads: [String: (limit: Int, kvSize: Int, clients: Int)] = [
    "s": (10000, 1024, 50), "m": (100000, 1024, 200), "l": (1000000, 1024, 500), "xl": (3000000, 1024, 1000),
]

/// etcdctl's perf check runs a minute; tests shorten it with this variable (a Go duration), which is not etcdctl's.
let checkPerfDurationVariable = "CHECK_PERF_DURATION"
/// …and shrink datascale's number of puts with this one.
let checkDatascaleCountVariable = "CHECK_DATASCALE_COUNT"

func checkFlags(_ kind: String, prefix: String) -> [FlagSpec] {
    [
        .string("load", nil, "s", "The \(kind) check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)"),
        .string("prefix", nil, prefix, "The prefix for writing the \(kind) check's keys."),
        .bool("auto-compact", nil, false, "Compact storage with last revision after test is finished."),
        .bool("auto-defrag", nil, false, "Defragment storage after test is finished."),
    ]
}

/// A key as check.go makes it: the prefix, then `size` bytes holding binary.PutVarint of a random int63.
func checkKey(prefix: String, size: Int) -> Data {
    var bytes = [UInt8](repeating: 0, count: size)
    let value = Int64.random(in: 0..<Int64.max)
    var zigzag = UInt64(bitPattern: value << 1) ^ UInt64(bitPattern: value >> 63)
    var index = 0
    while zigzag >= 0x80 && index < size {
        bytes[index] = UInt8(truncatingIfNeeded: zigzag) | 0x80
        zigzag >>= 7
        index += 1
    }
    if index < size { bytes[index] = UInt8(truncatingIfNeeded: zigzag) }
    return Data(prefix.utf8) + Data(bytes)
}

/// pkg/report's Stats: latencies of the successes, errors by text, and the rate over the run.
final class CheckResults: Sendable {
    private struct State {
        var latencies: [Double] = []
        var errors: [String: Int] = [:]
    }
    private let state = Mutex(State())

    func record(latency: Double) { state.withLock { $0.latencies.append(latency) } }
    func record(error: String) { state.withLock { $0.errors[error, default: 0] += 1 } }

    func stats(totalSeconds: Double) -> (rps: Double, slowest: Double, stddev: Double, errors: [String: Int]) {
        state.withLock { s in
            let count = Double(s.latencies.count)
            let average = s.latencies.reduce(0, +) / count
            let variance = s.latencies.reduce(0) { $0 + ($1 - average) * ($1 - average) } / count
            return (count / totalSeconds, s.latencies.max() ?? 0, variance.squareRoot(), s.errors)
        }
    }
}

/// The prefix must be empty before a check (a Get with limit 1).
private func requireEmptyPrefix(_ context: Context, _ prefix: String, timeout: Double?) async {
    var request = Etcdserverpb_RangeRequest()
    request.key = Data(prefix.utf8)
    request.rangeEnd = prefixRangeEnd(request.key)
    request.limit = 1
    let finalRequest = request
    let response = await unary(context, timeout: .some(timeout)) { client in
        try await Etcdserverpb_KV.Client(wrapping: client).range(finalRequest, options: .etcdctl)
    }
    if !response.kvs.isEmpty {
        exitWithError(ExitCode.invalidInput, "prefix \(goQuote(prefix)) has keys. Delete with etcdctl del --prefix \(prefix) first")
    }
}

/// Puts from `clients` concurrent workers while `next()` hands out work, each result recorded.
private func runPuts(_ context: Context, clients: Int, results: CheckResults,
                     next: @Sendable @escaping () async -> Etcdserverpb_PutRequest?) async {
    do {
        try await Call.withClient(context.config, timeout: nil) { client in
            let kv = Etcdserverpb_KV.Client(wrapping: client)
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<clients {
                    group.addTask {
                        while let request = await next() {
                            let start = Date()
                            do {
                                _ = try await kv.put(request, options: .etcdctl)
                                results.record(latency: Date().timeIntervalSince(start))
                            } catch {
                                results.record(error: concurrencyErrorText(error))
                            }
                        }
                    }
                }
            }
        }
    } catch {
        exitWithError(ExitCode.error, concurrencyErrorText(error))
    }
}

/// Deletes the prefix, then compacts and defragments as asked (util.go's compact and defrag).
private func cleanUp(_ context: Context, prefix: String) async {
    var delete = Etcdserverpb_DeleteRangeRequest()
    delete.key = Data(prefix.utf8)
    delete.rangeEnd = prefixRangeEnd(delete.key)
    let finalDelete = delete
    let deleted = await unary(context, timeout: .some(30)) { client in
        try await Etcdserverpb_KV.Client(wrapping: client).deleteRange(finalDelete, options: .etcdctl)
    }
    if context.invocation.bool("auto-compact") {
        let revision = deleted.header.revision
        out("Compacting with revision \(revision)\n")
        var compact = Etcdserverpb_CompactionRequest()
        compact.revision = revision
        compact.physical = true
        let finalCompact = compact
        _ = await unary(context, timeout: .some(30)) { client in
            try await Etcdserverpb_KV.Client(wrapping: client).compact(finalCompact, options: .etcdctl)
        }
        out("Compacted with revision \(revision)\n")
    }
    if context.invocation.bool("auto-defrag") {
        for endpoint in context.config.endpoints {
            out("Defragmenting \(goQuote(endpoint))\n")
            _ = await unary(context, timeout: .some(30), endpoints: [endpoint]) { client in
                try await Etcdserverpb_Maintenance.Client(wrapping: client).defragment(Etcdserverpb_DefragmentRequest(), options: .etcdctl)
            }
            out("Defragmented \(goQuote(endpoint))\n")
        }
    }
}

// MARK: perf

/// rate.NewLimiter(limit, 1) with a deadline: one slot every 1/limit s, none after the deadline.
final class RateSlots: Sendable {
    private let next = Mutex(Date())
    let interval: Double
    let deadline: Date

    init(perSecond: Int, seconds: Double) {
        interval = 1 / Double(perSecond)
        deadline = Date().addingTimeInterval(seconds)
    }

    /// Waits for the next slot; false once the run is over.
    func take() async -> Bool {
        let slot: Date = next.withLock {
            let slot = max($0, Date())
            $0 = slot.addingTimeInterval(interval)
            return slot
        }
        if slot >= deadline { return false }
        let wait = slot.timeIntervalSinceNow
        if wait > 0 { try? await Task.sleep(for: .milliseconds(Int(wait * 1000))) }
        return true
    }
}

func runCheckPerf(_ inv: Invocation) async {
    guard let model = checkLoadAliases[inv.string("load")], let load = checkPerfLoads[model] else {
        exitWithError(ExitCode.badFeature, "unknown load option \(inv.string("load"))")
    }
    let context = makeContext(inv)
    let prefix = inv.string("prefix")
    var duration = load.duration
    if let text = ProcessInfo.processInfo.environment[checkPerfDurationVariable], let seconds = try? parseGoDuration(text), seconds > 0 {
        duration = seconds
    }
    await requireEmptyPrefix(context, prefix, timeout: duration)
    let results = CheckResults()
    let slots = RateSlots(perSecond: load.limit, seconds: duration)
    let value = Data(count: 1024)
    let start = Date()
    await runPuts(context, clients: load.clients, results: results) {
        guard await slots.take() else { return nil }
        var request = Etcdserverpb_PutRequest()
        request.key = checkKey(prefix: prefix, size: 256)
        request.value = value
        return request
    }
    let stats = results.stats(totalSeconds: Date().timeIntervalSince(start))
    await cleanUp(context, prefix: prefix)
    var ok = true
    if !stats.errors.isEmpty {
        out("FAIL: too many errors\n")
        for (text, count) in stats.errors { out("FAIL: ERROR(\(text)) -> \(count)\n") }
        ok = false
    }
    // int(s.RPS)+1, as etcdctl prints it.
    let throughput = (stats.rps.isFinite ? Int(stats.rps) : 0) + 1
    if stats.rps / Double(load.limit) <= 0.9 {
        out("FAIL: Throughput too low: \(throughput) writes/s\n")
        ok = false
    } else {
        out("PASS: Throughput is \(throughput) writes/s\n")
    }
    if stats.slowest > 0.5 {
        out(String(format: "Slowest request took too long: %fs\n", stats.slowest))
        ok = false
    } else {
        out(String(format: "PASS: Slowest request took %fs\n", stats.slowest))
    }
    if stats.stddev > 0.1 {
        out(String(format: "Stddev too high: %fs\n", stats.stddev))
        ok = false
    } else {
        out(String(format: "PASS: Stddev is %fs\n", stats.stddev))
    }
    if ok {
        out("PASS\n")
    } else {
        out("FAIL\n")
        flushOut()
        exit(ExitCode.error)
    }
}

// MARK: datascale

/// util.go's endpointMemoryMetrics: process_resident_memory_bytes from the endpoint's /metrics; 0 (after a line
/// saying why) when it cannot be read.
func endpointMemoryMetrics(_ endpoint: String, tls: TLSSettings?) async -> Double {
    let key = "process_resident_memory_bytes"
    var host = endpoint
    if !host.hasPrefix("http://") && !host.hasPrefix("https://") { host = "http://" + host }
    let url = host + "/metrics"
    guard let target = URL(string: url) else {
        out("fetch error: parse \(goQuote(url)): invalid URL\n")
        return 0
    }
    let text: String
    do {
        let (data, _) = try await httpGet(target, tls: tls)
        text = String(decoding: data, as: UTF8.self)
    } catch {
        out("fetch error: Get \(goQuote(url)): \(error)\n")
        return 0
    }
    for line in text.split(separator: "\n") where line.hasPrefix(key) {
        let value = line.dropFirst(key.count).trimmingCharacters(in: .whitespaces)
        guard let bytes = Double(value) else {
            out("parse error: strconv.ParseFloat: parsing \(goQuote(value)): invalid syntax\n")
            return 0
        }
        return bytes
    }
    out("could not find: \(key)\n")
    return 0
}

func runCheckDatascale(_ inv: Invocation) async {
    guard let model = checkLoadAliases[inv.string("load")], let load = checkDatascaleLoads[model] else {
        exitWithError(ExitCode.badFeature, "unknown load option \(inv.string("load"))")
    }
    let context = makeContext(inv)
    let prefix = inv.string("prefix")
    var count = load.limit
    if let text = ProcessInfo.processInfo.environment[checkDatascaleCountVariable], let n = Int(text), n > 0 { count = n }
    await requireEmptyPrefix(context, prefix, timeout: nil)
    let endpoint = context.config.endpoints.first ?? "127.0.0.1:2379"
    let before = await endpointMemoryMetrics(endpoint, tls: context.config.tls)
    if before == 0 {
        out("FAIL: Could not read process_resident_memory_bytes before the put operations.\n")
        flushOut()
        exit(ExitCode.error)
    }
    out("Start data scale check for work load [\(count) key-value pairs, \(load.kvSize) bytes per key-value, \(load.clients) concurrent clients].\n")
    flushOut()
    let results = CheckResults()
    let remaining = Mutex(count)
    let value = Data(count: 512)
    await runPuts(context, clients: load.clients, results: results) {
        let take = remaining.withLock { left -> Bool in
            guard left > 0 else { return false }
            left -= 1
            return true
        }
        guard take else { return nil }
        var request = Etcdserverpb_PutRequest()
        request.key = checkKey(prefix: prefix, size: 512)
        request.value = value
        return request
    }
    let stats = results.stats(totalSeconds: 1)
    let after = await endpointMemoryMetrics(endpoint, tls: context.config.tls)
    if after == 0 {
        out("FAIL: Could not read process_resident_memory_bytes after the put operations.\n")
        flushOut()
        exit(ExitCode.error)
    }
    await cleanUp(context, prefix: prefix)
    if !stats.errors.isEmpty {
        out("FAIL: too many errors\n")
        for (text, count) in stats.errors { out("FAIL: ERROR(\(text)) -> \(count)\n") }
        flushOut()
        exit(ExitCode.error)
    }
    out(String(format: "PASS: Approximate system memory used : %.2f MB.\n", (after - before) / (1024 * 1024)))
}
