/// What one history read for the watch hub found.
public enum WatchHistoryRead: Sendable, Hashable {
    /// The requested start revision is below the compacted revision of the snapshot read.
    case compacted(compactedRevision: Revision)
    /// Every change with revision in `[start, throughRevision]` on keys of the range, in (revision, sub) order.
    /// `throughRevision` is the snapshot's current revision when the whole history was read, or the last returned
    /// revision when the limit cut the read (a revision is never split).
    case events([Event], throughRevision: Revision)
}

/// Reads history for watchers that are catching up. Implementations must be safe to call from any task, one call
/// at a time, and must never touch the apply path's connection.
public protocol WatchHistory: Sendable {
    /// The changes with revision ≥ `startRevision` on keys in `keyRange`: at least `limit` events when that many
    /// exist, never splitting a revision (`limit` ≤ 0 = no limit). `prevKv` asks for each event's previous value
    /// while it is not compacted.
    func read(from startRevision: Revision, keyRange: KeyRange, limit: Int, prevKv: Bool) throws -> WatchHistoryRead

    /// Drops and reopens the underlying connection, after the store's file was replaced (snapshot install).
    func reopen() throws
}
