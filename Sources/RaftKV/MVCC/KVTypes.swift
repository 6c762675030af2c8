/// A store revision. Revisions are etcd's `int64`: the empty store is at revision 1 and every mutating request
/// or transaction moves it forward by one.
public typealias Revision = Int64

/// A lease identifier, chosen by the proposer. Zero means "no lease".
public typealias LeaseID = Int64

/// One key's value at some revision, as etcd's `mvccpb.KeyValue`.
public struct KeyValue: Sendable, Hashable {
    public var key: [UInt8]
    /// The revision of the put that created the key's current incarnation (since its last delete).
    public var createRevision: Revision
    /// The revision of the last put to the key.
    public var modRevision: Revision
    /// Puts since creation; 1 for a fresh key, reset by a delete.
    public var version: Int64
    public var value: [UInt8]
    /// The attached lease, or 0.
    public var lease: LeaseID

    public init(key: [UInt8] = [], createRevision: Revision = 0, modRevision: Revision = 0, version: Int64 = 0,
                value: [UInt8] = [], lease: LeaseID = 0) {
        self.key = key
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.value = value
        self.lease = lease
    }
}

/// A key range with etcd's `range_end` conventions.
public enum KeyRange: Sendable, Hashable {
    /// Exactly one key (an empty `range_end`).
    case single([UInt8])
    /// Every key greater than or equal to the key (`range_end` is `"\0"`).
    case from([UInt8])
    /// `[start, end)`; empty when `end <= start`.
    case interval([UInt8], [UInt8])

    /// Interprets `key`/`rangeEnd` as etcd does.
    public init(key: [UInt8], rangeEnd: [UInt8]) {
        if rangeEnd.isEmpty {
            self = .single(key)
        } else if rangeEnd == [0] {
            self = .from(key)
        } else {
            self = .interval(key, rangeEnd)
        }
    }

    public func contains(_ candidate: [UInt8]) -> Bool {
        switch self {
        case .single(let key): return candidate == key
        case .from(let start): return !candidate.lexicographicallyPrecedes(start)
        case .interval(let start, let end):
            return !candidate.lexicographicallyPrecedes(start) && candidate.lexicographicallyPrecedes(end)
        }
    }

    /// The smallest range end that covers every key starting with `prefix` (etcd's `clientv3.GetPrefixRangeEnd`).
    public static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xff {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        // Only 0xff bytes (or nothing): every key from the prefix on.
        return [0]
    }
}

/// etcd's `RangeRequest` (without `serializable`, which only matters to the read path above the store).
public struct RangeRequest: Sendable, Hashable {
    /// Sort order of a range.
    public enum SortOrder: UInt8, Sendable, Hashable, CaseIterable {
        case none = 0, ascend = 1, descend = 2
    }

    /// What a range sorts by.
    public enum SortTarget: UInt8, Sendable, Hashable, CaseIterable {
        case key = 0, version = 1, create = 2, mod = 3, value = 4
    }

    public var key: [UInt8]
    public var rangeEnd: [UInt8]
    /// Maximum number of keys returned; 0 = no limit.
    public var limit: Int64
    /// The revision to read at; ≤ 0 = the latest.
    public var revision: Revision
    public var sortOrder: SortOrder
    public var sortTarget: SortTarget
    public var keysOnly: Bool
    public var countOnly: Bool
    /// Filters applied after counting (0 = no filter), as in etcd.
    public var minModRevision: Revision
    public var maxModRevision: Revision
    public var minCreateRevision: Revision
    public var maxCreateRevision: Revision

    public init(key: [UInt8], rangeEnd: [UInt8] = [], limit: Int64 = 0, revision: Revision = 0,
                sortOrder: SortOrder = .none, sortTarget: SortTarget = .key, keysOnly: Bool = false,
                countOnly: Bool = false, minModRevision: Revision = 0, maxModRevision: Revision = 0,
                minCreateRevision: Revision = 0, maxCreateRevision: Revision = 0) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.limit = limit
        self.revision = revision
        self.sortOrder = sortOrder
        self.sortTarget = sortTarget
        self.keysOnly = keysOnly
        self.countOnly = countOnly
        self.minModRevision = minModRevision
        self.maxModRevision = maxModRevision
        self.minCreateRevision = minCreateRevision
        self.maxCreateRevision = maxCreateRevision
    }

    var keyRange: KeyRange { KeyRange(key: key, rangeEnd: rangeEnd) }
}

public struct RangeResponse: Sendable, Hashable {
    /// The store's revision when the range was served (not the revision read at).
    public var revision: Revision
    public var kvs: [KeyValue]
    /// True when `limit` cut the result.
    public var more: Bool
    /// Keys in the range at the read revision, before `limit` and before the min/max filters.
    public var count: Int64

    public init(revision: Revision, kvs: [KeyValue] = [], more: Bool = false, count: Int64 = 0) {
        self.revision = revision
        self.kvs = kvs
        self.more = more
        self.count = count
    }
}

/// etcd's `PutRequest`.
public struct PutRequest: Sendable, Hashable {
    public var key: [UInt8]
    public var value: [UInt8]
    public var lease: LeaseID
    public var prevKv: Bool
    /// Keep the current value (the key must exist).
    public var ignoreValue: Bool
    /// Keep the current lease (the key must exist).
    public var ignoreLease: Bool

    public init(key: [UInt8], value: [UInt8] = [], lease: LeaseID = 0, prevKv: Bool = false,
                ignoreValue: Bool = false, ignoreLease: Bool = false) {
        self.key = key
        self.value = value
        self.lease = lease
        self.prevKv = prevKv
        self.ignoreValue = ignoreValue
        self.ignoreLease = ignoreLease
    }
}

public struct PutResponse: Sendable, Hashable {
    public var revision: Revision
    public var prevKv: KeyValue?

    public init(revision: Revision, prevKv: KeyValue? = nil) {
        self.revision = revision
        self.prevKv = prevKv
    }
}

/// etcd's `DeleteRangeRequest`.
public struct DeleteRangeRequest: Sendable, Hashable {
    public var key: [UInt8]
    public var rangeEnd: [UInt8]
    public var prevKv: Bool

    public init(key: [UInt8], rangeEnd: [UInt8] = [], prevKv: Bool = false) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.prevKv = prevKv
    }

    var keyRange: KeyRange { KeyRange(key: key, rangeEnd: rangeEnd) }
}

public struct DeleteRangeResponse: Sendable, Hashable {
    public var revision: Revision
    public var deleted: Int64
    public var prevKvs: [KeyValue]

    public init(revision: Revision, deleted: Int64 = 0, prevKvs: [KeyValue] = []) {
        self.revision = revision
        self.deleted = deleted
        self.prevKvs = prevKvs
    }
}

/// etcd's `Compare`: a condition on every key of a range.
public struct Compare: Sendable, Hashable {
    public enum Result: UInt8, Sendable, Hashable, CaseIterable {
        case equal = 0, greater = 1, less = 2, notEqual = 3
    }

    /// What is compared, carrying the operand (etcd's `target` plus `target_union`).
    public enum Target: Sendable, Hashable {
        case version(Int64)
        case createRevision(Revision)
        case modRevision(Revision)
        case value([UInt8])
        case lease(LeaseID)
    }

    public var result: Result
    public var target: Target
    public var key: [UInt8]
    public var rangeEnd: [UInt8]

    public init(key: [UInt8], rangeEnd: [UInt8] = [], target: Target, result: Result) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.target = target
        self.result = result
    }
}

/// One operation of a transaction branch (`RequestOp`).
public indirect enum RequestOp: Sendable, Hashable {
    case range(RangeRequest)
    case put(PutRequest)
    case deleteRange(DeleteRangeRequest)
    case txn(TxnRequest)
}

/// One result of a transaction branch (`ResponseOp`).
public indirect enum ResponseOp: Sendable, Hashable {
    case range(RangeResponse)
    case put(PutResponse)
    case deleteRange(DeleteRangeResponse)
    case txn(TxnResponse)
}

/// etcd's `TxnRequest`: if every compare holds, run `success`, else `failure`.
public struct TxnRequest: Sendable, Hashable {
    public var compare: [Compare]
    public var success: [RequestOp]
    public var failure: [RequestOp]

    public init(compare: [Compare] = [], success: [RequestOp] = [], failure: [RequestOp] = []) {
        self.compare = compare
        self.success = success
        self.failure = failure
    }

    /// True when no branch, at any depth, writes (etcd's `isTxnReadonly`).
    public var isReadOnly: Bool {
        for op in success + failure {
            switch op {
            case .range: continue
            case .put, .deleteRange: return false
            case .txn(let nested): if !nested.isReadOnly { return false }
            }
        }
        return true
    }
}

public struct TxnResponse: Sendable, Hashable {
    public var revision: Revision
    public var succeeded: Bool
    public var responses: [ResponseOp]

    public init(revision: Revision, succeeded: Bool, responses: [ResponseOp] = []) {
        self.revision = revision
        self.succeeded = succeeded
        self.responses = responses
    }
}

public struct CompactionResponse: Sendable, Hashable {
    public var revision: Revision
    public init(revision: Revision) { self.revision = revision }
}

public struct LeaseGrantResponse: Sendable, Hashable {
    public var revision: Revision
    public var id: LeaseID
    public var ttlSeconds: Int64
    public init(revision: Revision, id: LeaseID, ttlSeconds: Int64) {
        self.revision = revision
        self.id = id
        self.ttlSeconds = ttlSeconds
    }
}

public struct LeaseRevokeResponse: Sendable, Hashable {
    public var revision: Revision
    public init(revision: Revision) { self.revision = revision }
}

/// The remaining TTL of one lease as the leader measured it (`LeaseCheckpoint`).
public struct LeaseCheckpoint: Sendable, Hashable {
    public var id: LeaseID
    public var remainingTTLSeconds: Int64
    public init(id: LeaseID, remainingTTLSeconds: Int64) {
        self.id = id
        self.remainingTTLSeconds = remainingTTLSeconds
    }
}

/// A lease as the store persists it.
public struct LeaseInfo: Sendable, Hashable {
    public var id: LeaseID
    /// The TTL the lease was granted with.
    public var grantedTTLSeconds: Int64
    /// The last checkpointed remaining TTL; 0 when never checkpointed.
    public var remainingTTLSeconds: Int64
    /// Attached keys in ascending order (filled only when asked for).
    public var keys: [[UInt8]]

    public init(id: LeaseID, grantedTTLSeconds: Int64, remainingTTLSeconds: Int64, keys: [[UInt8]] = []) {
        self.id = id
        self.grantedTTLSeconds = grantedTTLSeconds
        self.remainingTTLSeconds = remainingTTLSeconds
        self.keys = keys
    }
}

/// Arms or disarms the NOSPACE alarm. Alarms go through the log so that every member switches at the same index.
public enum AlarmAction: UInt8, Sendable, Hashable {
    case activate = 1
    case deactivate = 2
}

public struct AlarmResponse: Sendable, Hashable {
    public var revision: Revision
    /// Whether the NOSPACE alarm is armed after the request.
    public var noSpaceArmed: Bool
    public init(revision: Revision, noSpaceArmed: Bool) {
        self.revision = revision
        self.noSpaceArmed = noSpaceArmed
    }
}

/// What applying one command answered.
public enum KVResponse: Sendable, Hashable {
    case range(RangeResponse)
    case put(PutResponse)
    case deleteRange(DeleteRangeResponse)
    case txn(TxnResponse)
    case compaction(CompactionResponse)
    case leaseGrant(LeaseGrantResponse)
    case leaseRevoke(LeaseRevokeResponse)
    case leaseCheckpoint(revision: Revision)
    case alarm(AlarmResponse)
    case auth(AuthChangeResponse)
    /// An empty entry or one without a command: only the applied index moved.
    case none
}

/// A change to one key, as a watch sees it (`mvccpb.Event`).
public struct Event: Sendable, Hashable {
    public enum Kind: UInt8, Sendable, Hashable {
        case put = 0
        case delete = 1
    }

    public var kind: Kind
    /// For a delete, only `key` and `modRevision` (the deleting revision) are set, as in etcd.
    public var kv: KeyValue
    /// The key's value at `kv.modRevision - 1`, when asked for and still available.
    public var prevKv: KeyValue?

    public init(kind: Kind, kv: KeyValue, prevKv: KeyValue? = nil) {
        self.kind = kind
        self.kv = kv
        self.prevKv = prevKv
    }
}

/// What the replicated state knows of a member beyond its Raft ID (etcd's `membership.Member` attributes).
/// Membership itself is Raft's; a record may exist briefly for an ID whose addition has not committed.
public struct MemberRecord: Sendable, Hashable {
    public var id: NodeID
    /// Empty until the member has published itself.
    public var name: String
    public var peerURLs: [String]
    /// Empty until the member has published itself.
    public var clientURLs: [String]

    public init(id: NodeID, name: String = "", peerURLs: [String] = [], clientURLs: [String] = []) {
        self.id = id
        self.name = name
        self.peerURLs = peerURLs
        self.clientURLs = clientURLs
    }

    // URLs never contain a newline (they are validated before they are proposed), so it separates them.
    static func joined(_ urls: [String]) -> String { urls.joined(separator: "\n") }
    static func split(_ text: String) -> [String] { text.isEmpty ? [] : text.components(separatedBy: "\n") }
}
