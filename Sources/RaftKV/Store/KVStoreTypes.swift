/// How a read is served.
public enum ReadConsistency: Sendable, Hashable {
    /// The read reflects every write acknowledged before it started, anywhere in the cluster (etcd's default):
    /// the member confirms the leader's commit index with a ReadIndex round and waits until it has applied it.
    case linearizable
    /// The read is served from this member's local state, which may lag the leader (etcd's `serializable`).
    case serializable
}

/// etcd's `LeaseKeepAliveResponse`.
public struct LeaseKeepAliveResponse: Sendable, Hashable {
    public var id: LeaseID
    /// The TTL the lease has again (its granted TTL).
    public var ttlSeconds: Int64

    public init(id: LeaseID, ttlSeconds: Int64) {
        self.id = id
        self.ttlSeconds = ttlSeconds
    }
}

/// etcd's `LeaseTimeToLiveResponse`. A lease that does not exist (or expired and awaits revocation) has
/// `ttlSeconds == -1`, `grantedTTLSeconds == 0` and no keys, as etcd answers rather than failing.
public struct LeaseTimeToLiveResponse: Sendable, Hashable {
    public var id: LeaseID
    /// Seconds left, truncated; -1 when the lease does not exist or has expired.
    public var ttlSeconds: Int64
    public var grantedTTLSeconds: Int64
    /// Attached keys in ascending order, when asked for.
    public var keys: [[UInt8]]

    public init(id: LeaseID, ttlSeconds: Int64, grantedTTLSeconds: Int64, keys: [[UInt8]] = []) {
        self.id = id
        self.ttlSeconds = ttlSeconds
        self.grantedTTLSeconds = grantedTTLSeconds
        self.keys = keys
    }
}

/// etcd's `HashKVResponse`.
public struct HashKVResponse: Sendable, Hashable {
    public var hash: UInt32
    /// The store's current revision.
    public var revision: Revision
    public var compactRevision: Revision
}

/// What ``KVStore/status()`` reports (etcd's `StatusResponse` plus the local Raft state).
public struct KVStoreStatus: Sendable, Hashable {
    public var memberID: NodeID
    /// 0 when no leader is known.
    public var leader: NodeID
    public var role: Role
    public var term: Term
    public var membership: Membership
    public var commitIndex: LogIndex
    public var appliedIndex: LogIndex
    public var revision: Revision
    /// -1 when never compacted.
    public var compactRevision: Revision
    /// The state database's size, free pages included (etcd's `dbSize`).
    public var dbSizeBytes: Int64
    /// Bytes in pages in use (etcd's `dbSizeInUse`).
    public var dbSizeInUseBytes: Int64
    /// True while the NOSPACE alarm is armed.
    public var noSpaceAlarm: Bool
}
