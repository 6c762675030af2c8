import ArgumentParser
import EtcdAPI
import Foundation
import Synchronization

/// Fixed-size keys: the prefix, then the key number in decimal, zero-padded to fill `keySize` bytes (longer only
/// when the number needs more digits). Decimal rather than etcd's varint bytes so keys print readably and a
/// prefix range finds them all; the sizes on the wire are the same.
struct KeyMaker: Sendable {
    var prefix: [UInt8]
    var keySize: Int
    var keySpaceSize: Int
    var sequential: Bool

    func keyNumber(forRequest index: Int) -> Int {
        sequential ? index % keySpaceSize : Int.random(in: 0..<keySpaceSize)
    }

    func key(_ number: Int) -> Data {
        let digits = Array(String(number).utf8)
        let padding = max(0, keySize - prefix.count - digits.count)
        return Data(prefix + [UInt8](repeating: UInt8(ascii: "0"), count: padding) + digits)
    }
}

/// A value of `size` random bytes, made once: the same bytes for every request, as etcd's benchmark does.
func randomValue(size: Int) -> Data {
    Data((0..<size).map { _ in UInt8.random(in: 0...255) })
}

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Put keys (etcd benchmark put).")

    @OptionGroup var common: CommonOptions
    @OptionGroup var keyOptions: KeyOptions

    @Option(help: "Puts to issue.")
    var total: Int = 10_000

    @Option(help: "Puts per second over all clients; 0 = as fast as the clients go.")
    var rate: Double = 0

    func run() async throws {
        let keys = keyOptions.keys
        let value = randomValue(size: keyOptions.valSize)
        let settings = try common.load
        let options = settings.callOptions
        let outcome = try await runRequests(label: "put", total: total, ratePerSecond: rate, settings: settings) { connection, index in
            var request = Etcdserverpb_PutRequest()
            request.key = keys.key(keys.keyNumber(forRequest: index))
            request.value = value
            _ = try await Etcdserverpb_KV.Client(wrapping: connection).put(request, options: options)
        }
        try emit(BenchmarkReport(workload: "put", settings: describe(common, keyOptions, rate: rate), total: total,
                                 outcome: outcome), json: common.json)
    }
}

struct TxnPut: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "txn-put", abstract: "Transactions of puts without compares (etcd benchmark txn-put).")

    @OptionGroup var common: CommonOptions
    @OptionGroup var keyOptions: KeyOptions

    @Option(help: "Transactions to issue.")
    var total: Int = 10_000

    @Option(help: "Transactions per second over all clients; 0 = as fast as the clients go.")
    var rate: Double = 0

    @Option(help: "Puts per transaction (distinct keys, so at most --key-space-size).")
    var txnOps: Int = 1

    func validate() throws {
        guard txnOps >= 1, txnOps <= keyOptions.keySpaceSize else {
            throw ValidationError("--txn-ops must be between 1 and --key-space-size (a key twice in one txn is an error)")
        }
    }

    func run() async throws {
        let keys = keyOptions.keys
        let value = randomValue(size: keyOptions.valSize)
        let settings = try common.load
        let options = settings.callOptions
        let operationsPerTxn = txnOps
        let outcome = try await runRequests(label: "txn-put", total: total, ratePerSecond: rate, settings: settings) { connection, index in
            let first = keys.sequential ? index * operationsPerTxn : keys.keyNumber(forRequest: index)
            var request = Etcdserverpb_TxnRequest()
            request.success = (0..<operationsPerTxn).map { offset in
                var put = Etcdserverpb_PutRequest()
                put.key = keys.key((first + offset) % keys.keySpaceSize)
                put.value = value
                var operation = Etcdserverpb_RequestOp()
                operation.requestPut = put
                return operation
            }
            _ = try await Etcdserverpb_KV.Client(wrapping: connection).txn(request, options: options)
        }
        var described = describe(common, keyOptions, rate: rate)
        described["txn-ops"] = String(txnOps)
        try emit(BenchmarkReport(workload: "txn-put", settings: described, total: total, outcome: outcome), json: common.json)
    }
}

struct RangeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "range", abstract: "Range requests on a key, a range or a prefix (etcd benchmark range).")

    @OptionGroup var common: CommonOptions

    @Argument(help: "The key, or the start of the range.")
    var key: String

    @Argument(help: "The end of the range (exclusive); none = the single key.")
    var rangeEnd: String?

    @Flag(help: "Range over every key starting with KEY (an empty KEY means every key).")
    var prefix = false

    @Option(help: "Consistency: l (linearizable, ReadIndex) or s (serializable, the member's own state).")
    var consistency: String = "l"

    @Option(help: "At most this many keys per response; 0 = no limit.")
    var limit: Int64 = 0

    @Flag(help: "Return keys without values.")
    var keysOnly = false

    @Flag(help: "Return only the count of keys in the range.")
    var countOnly = false

    @Option(help: "Range requests to issue.")
    var total: Int = 10_000

    @Option(help: "Requests per second over all clients; 0 = as fast as the clients go.")
    var rate: Double = 0

    func validate() throws {
        guard consistency == "l" || consistency == "s" else { throw ValidationError("--consistency must be l or s") }
        guard !(prefix && rangeEnd != nil) else { throw ValidationError("a range end and --prefix exclude each other") }
        guard !key.isEmpty || prefix else { throw ValidationError("the key must not be empty (or use --prefix)") }
    }

    func run() async throws {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(key.utf8)
        if let rangeEnd { request.rangeEnd = Data(rangeEnd.utf8) }
        if prefix {
            if key.isEmpty {
                request.key = Data([0])
                request.rangeEnd = Data([0])
            } else {
                request.rangeEnd = prefixRangeEnd(request.key)
            }
        }
        request.serializable = consistency == "s"
        request.limit = limit
        request.keysOnly = keysOnly
        request.countOnly = countOnly
        let settings = try common.load
        let options = settings.callOptions
        let lastCount = LastCount()
        let template = request
        let outcome = try await runRequests(label: "range", total: total, ratePerSecond: rate, settings: settings) { connection, _ in
            let response = try await Etcdserverpb_KV.Client(wrapping: connection).range(template, options: options)
            lastCount.value.store(response.count, ordering: .relaxed)
        }
        var described = describe(common, nil, rate: rate)
        described["consistency"] = consistency
        described["limit"] = String(limit)
        if keysOnly { described["keys-only"] = "true" }
        if countOnly { described["count-only"] = "true" }
        var report = BenchmarkReport(workload: "range", settings: described, total: total, outcome: outcome)
        let count = lastCount.value.load(ordering: .relaxed)
        report.rangeCount = count >= 0 ? count : nil
        try emit(report, json: common.json)
    }
}

/// The count of the latest range response (-1: none succeeded yet).
final class LastCount: Sendable {
    let value = Atomic<Int64>(-1)
}

/// The end of the range of keys starting with `prefix`: the prefix with its last byte below 0xff incremented.
func prefixRangeEnd(_ prefix: Data) -> Data {
    var end = Array(prefix)
    while let last = end.last {
        if last < 0xff {
            end[end.count - 1] = last + 1
            return Data(end)
        }
        end.removeLast()
    }
    return Data([0])
}

/// The settings a report lists, so a JSON result says what load produced it.
func describe(_ common: CommonOptions, _ keys: KeyOptions?, rate: Double) -> [String: String] {
    var settings = [
        "endpoints": common.endpoints, "clients": String(common.clients), "conns": String(common.conns),
        "rate": rate > 0 ? String(rate) : "unlimited",
    ]
    if let keys {
        settings["key-size"] = String(keys.keySize)
        settings["val-size"] = String(keys.valSize)
        settings["key-space-size"] = String(keys.keySpaceSize)
        settings["sequential-keys"] = String(keys.sequentialKeys)
        if !keys.keyPrefix.isEmpty { settings["key-prefix"] = keys.keyPrefix }
    }
    return settings
}
