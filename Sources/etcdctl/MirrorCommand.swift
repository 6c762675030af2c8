import EtcdAPI
import Foundation
import GRPCCore
import Synchronization

// make-mirror (ctlv3/command/make_mirror_command.go over clientv3/mirror's syncer).

let makeMirrorFlags: [FlagSpec] = [
    .string("prefix", nil, "", "Key-value prefix to mirror"),
    .string("dest-prefix", nil, "", "destination prefix to mirror a prefix to a different prefix in the destination cluster"),
    .bool("no-dest-prefix", nil, false, "mirror key-values to the root of the destination cluster"),
    .string("dest-cert", nil, "", "Identify secure client using this TLS certificate file for the destination cluster"),
    .string("dest-key", nil, "", "Identify secure client using this TLS key file"),
    .string("dest-cacert", nil, "", "Verify certificates of TLS enabled secure servers using this CA bundle"),
    .bool("dest-insecure-transport", nil, true, "Disable transport security for client connections"),
]

/// etcdctl prints the running count every 30 s; tests shorten it with this variable (a Go duration), which is
/// not etcdctl's.
let mirrorReportIntervalVariable = "MAKE_MIRROR_REPORT_INTERVAL"

/// strings.Replace(key, old, new, 1): the first occurrence anywhere in the key (an empty `old` matches at the start).
func replaceFirst(_ key: Data, _ old: Data, _ new: Data) -> Data {
    if old.isEmpty { return new + key }
    guard let range = key.range(of: old) else { return key }
    var result = key
    result.replaceSubrange(range, with: new)
    return result
}

func runMakeMirror(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "make-mirror takes one destination argument") }
    // The destination's client first (its TLS files' errors come first), then the source's.
    var destination = ClientConfig(endpoints: [inv.args[0]], dialTimeout: inv.duration("dial-timeout"),
                                   commandTimeout: inv.duration("command-timeout"))
    destination.tls = makeTLSSettings(cert: inv.string("dest-cert"), key: inv.string("dest-key"),
                                      cacert: inv.string("dest-cacert"),
                                      insecureTransport: inv.bool("dest-insecure-transport"), skipVerify: false)
    let context = makeContext(inv)
    let prefix = inv.string("prefix")
    let givenDestPrefix = inv.string("dest-prefix")
    let noDestPrefix = inv.bool("no-dest-prefix")
    let interval = (try? parseGoDuration(ProcessInfo.processInfo.environment[mirrorReportIntervalVariable] ?? "")) ?? 30
    let total = Atomic<Int64>(0)
    let reporter = Task.detached {
        while !Task.isCancelled {
            try await Task.sleep(for: .milliseconds(Int(max(0.01, interval) * 1000)))
            out("\(total.load(ordering: .sequentiallyConsistent))\n")
            flushOut()
        }
    }
    defer { reporter.cancel() }
    let sourceConfig = context.config
    let destinationConfig = destination
    do {
        try await Call.withClient(sourceConfig, timeout: nil) { source in
            let sourceKV = Etcdserverpb_KV.Client(wrapping: source)
            // SyncBase: the revision of a Get of "foo", then the prefix (or everything) at that revision, in
            // batches of 1000.
            let revision = try await sourceKV.range(.single("foo")).header.revision
            if noDestPrefix && !givenDestPrefix.isEmpty {
                exitWithError(ExitCode.badArgs, "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one")
            }
            let destPrefix = !noDestPrefix && givenDestPrefix.isEmpty ? prefix : givenDestPrefix
            let old = Data(prefix.utf8), new = Data(destPrefix.utf8)
            try await Call.withClient(destinationConfig, timeout: nil) { dest in
                let destKV = Etcdserverpb_KV.Client(wrapping: dest)
                var request = Etcdserverpb_RangeRequest()
                request.limit = 1000
                request.revision = revision
                if prefix.isEmpty {
                    request.key = Data([0])
                    request.rangeEnd = Data([0])
                } else {
                    request.key = old
                    request.rangeEnd = prefixRangeEnd(old)
                }
                while true {
                    let response = try await sourceKV.range(request)
                    for kv in response.kvs {
                        var put = Etcdserverpb_PutRequest()
                        put.key = replaceFirst(kv.key, old, new)
                        put.value = kv.value
                        _ = try await destKV.put(put)
                        total.add(1, ordering: .sequentiallyConsistent)
                    }
                    guard response.more, let last = response.kvs.last else { break }
                    request.key = last.key + Data([0])
                }
                // SyncUpdates: a prefix watch from the next revision; each revision's events in one txn.
                try await watchUntil(source, key: prefix.isEmpty ? "\0" : prefix,
                                     rangeEnd: prefix.isEmpty ? Data([0]) : prefixRangeEnd(old), revision: revision + 1) { message in
                    var lastRevision: Int64 = 0
                    var ops: [Etcdserverpb_RequestOp] = []
                    func commit() async throws {
                        var txn = Etcdserverpb_TxnRequest()
                        txn.success = ops
                        _ = try await destKV.txn(txn)
                        ops = []
                    }
                    for event in message.events {
                        if lastRevision != 0 && event.kv.modRevision > lastRevision { try await commit() }
                        lastRevision = event.kv.modRevision
                        var op = Etcdserverpb_RequestOp()
                        if event.type == .put {
                            var put = Etcdserverpb_PutRequest()
                            put.key = replaceFirst(event.kv.key, old, new)
                            put.value = event.kv.value
                            op.requestPut = put
                        } else {
                            var delete = Etcdserverpb_DeleteRangeRequest()
                            delete.key = replaceFirst(event.kv.key, old, new)
                            op.requestDeleteRange = delete
                        }
                        ops.append(op)
                        total.add(1, ordering: .sequentiallyConsistent)
                    }
                    if !ops.isEmpty { try await commit() }
                    return true
                }
            }
        }
    } catch {
        exitWithError(ExitCode.error, concurrencyErrorText(error))
    }
    // The watch never ends of itself; etcdctl exits with its nil error.
    exitWithError(ExitCode.error, "<nil>")
}
