/// The stateless checks etcd's gRPC layer makes before proposing a request (`v3rpc/key.go`).
///
/// They run before a request enters the log, not when it is applied: `maxTxnOps` is per-member configuration, and
/// applying must not depend on it or members would diverge.
public enum KVValidation {
    /// etcd's `--max-txn-ops` default.
    public static let defaultMaxTxnOps = 128

    public static func check(_ request: RangeRequest) throws(KVError) {
        if request.key.isEmpty { throw .emptyKey }
    }

    public static func check(_ request: PutRequest) throws(KVError) {
        if request.key.isEmpty { throw .emptyKey }
        if request.ignoreValue && !request.value.isEmpty { throw .valueProvided }
        if request.ignoreLease && request.lease != 0 { throw .leaseProvided }
    }

    public static func check(_ request: DeleteRangeRequest) throws(KVError) {
        if request.key.isEmpty { throw .emptyKey }
    }

    /// Operation counts, empty keys, and keys written twice (etcd's `checkTxnRequest` then `checkIntervals`).
    public static func check(_ request: TxnRequest, maxTxnOps: Int = defaultMaxTxnOps) throws(KVError) {
        try checkShape(request, maxTxnOps: maxTxnOps)
        // Overlaps are checked after the shape so that a huge request cannot make this quadratic.
        _ = try checkIntervals(request.success)
        _ = try checkIntervals(request.failure)
    }

    /// Checks any write request that travels through the log.
    public static func check(_ command: KVCommand, maxTxnOps: Int = defaultMaxTxnOps) throws(KVError) {
        switch command {
        case .range(let request): try check(request)
        case .put(let request): try check(request)
        case .deleteRange(let request): try check(request)
        case .txn(let request): try check(request, maxTxnOps: maxTxnOps)
        case .leaseGrant(let id, let ttlSeconds):
            if id == 0 { throw .leaseNotFound }
            if ttlSeconds > maxLeaseTTLSeconds { throw .leaseTTLTooLarge }
        case .authorized(_, let inner): try check(inner, maxTxnOps: maxTxnOps)
        case .compact, .leaseRevoke, .leaseCheckpoint, .alarm, .publishMember, .setMemberPeerURLs, .forgetMember,
             .auth:
            return
        }
    }

    /// etcd's `lease.MaxLeaseTTL`.
    public static let maxLeaseTTLSeconds: Int64 = 9_000_000_000

    private static func checkShape(_ request: TxnRequest, maxTxnOps: Int) throws(KVError) {
        let operations = max(request.compare.count, request.success.count, request.failure.count)
        if operations > maxTxnOps { throw .tooManyOperations }
        for compare in request.compare where compare.key.isEmpty { throw .emptyKey }
        // Nested transactions share the budget left by their parent, as in etcd.
        for op in request.success + request.failure {
            switch op {
            case .range(let nested): try check(nested)
            case .put(let nested): try check(nested)
            case .deleteRange(let nested): try check(nested)
            case .txn(let nested): try checkShape(nested, maxTxnOps: maxTxnOps - operations)
            }
        }
    }

    /// A deleted interval as etcd's interval tree sees it: `end == nil` is a single key, an empty `end` is
    /// unbounded. A `range_end` of `"\0"` is taken literally here (so it covers nothing), matching etcd 3.4.
    private struct Interval {
        var start: [UInt8]
        var end: [UInt8]?

        func contains(_ key: [UInt8]) -> Bool {
            guard let end else { return key == start }
            if key.lexicographicallyPrecedes(start) { return false }
            return end.isEmpty || key.lexicographicallyPrecedes(end)
        }
    }

    /// etcd's `checkIntervals`: puts may not hit a key put or deleted elsewhere in the same branch set, except that
    /// the success and failure branches of one nested transaction may put the same key (only one runs).
    private static func checkIntervals(_ ops: [RequestOp]) throws(KVError) -> (puts: Set<[UInt8]>, deletes: [Interval]) {
        var deletes: [Interval] = []
        for case .deleteRange(let request) in ops {
            deletes.append(Interval(start: request.key, end: request.rangeEnd.isEmpty ? nil : request.rangeEnd))
        }
        var puts = Set<[UInt8]>()
        func isDeleted(_ key: [UInt8]) -> Bool { deletes.contains { $0.contains(key) } }
        for case .txn(let nested) in ops {
            let then = try checkIntervals(nested.success)
            let otherwise = try checkIntervals(nested.failure)
            for key in then.puts {
                if puts.contains(key) || isDeleted(key) { throw .duplicateKey }
                puts.insert(key)
            }
            for key in otherwise.puts {
                if puts.contains(key) && !then.puts.contains(key) { throw .duplicateKey }
                if isDeleted(key) { throw .duplicateKey }
                puts.insert(key)
            }
            // etcd merges nested deletes clipped to ["\0", ∞), which every non-empty key lies in.
            deletes.append(contentsOf: then.deletes)
            deletes.append(contentsOf: otherwise.deletes)
        }
        for case .put(let request) in ops {
            if puts.contains(request.key) || isDeleted(request.key) { throw .duplicateKey }
            puts.insert(request.key)
        }
        return (puts, deletes)
    }
}
