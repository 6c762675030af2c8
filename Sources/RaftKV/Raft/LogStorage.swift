/// What the Raft core reads of the durable log. The core never writes: the driver writes what a ``Ready`` asks,
/// then calls ``RaftCore/advance(_:)``, and from then on the storage must show it.
///
/// Entries `firstIndex...lastIndex` are readable. Everything below `firstIndex` is compacted, and the term of
/// `firstIndex - 1` is still known (it is the snapshot's index or a compacted entry kept as a marker), so
/// `firstIndex - 1 <= snapshotMetadata.index <= lastIndex` always holds. An empty log has
/// `lastIndex == firstIndex - 1`. Keeping some entries below the snapshot lets a slightly lagging follower catch
/// up from the log instead of a snapshot.
///
/// Reads are not expected to fail: an implementation that cannot read what it has promised (an I/O error)
/// must stop the process with a message naming the file, because a node that cannot read its log cannot take
/// part in consensus safely.
public protocol RaftLogStorage: AnyObject {
    /// The hard state persisted last.
    var hardState: HardState { get }
    /// The newest snapshot's metadata; index 0 when there is none.
    var snapshotMetadata: SnapshotMetadata { get }
    var firstIndex: LogIndex { get }
    var lastIndex: LogIndex { get }
    /// The term of the entry at `index` for `firstIndex - 1...lastIndex`; nil outside that range.
    func term(at index: LogIndex) -> Term?
    /// Entries in `range` (within `firstIndex...lastIndex`), stopping before `maxBytes` is exceeded but always
    /// returning at least one entry when the range is not empty.
    func entries(in range: Range<LogIndex>, maxBytes: Int) -> [Entry]
    /// Up to `maxBytes` of the current snapshot's data starting at `offset`, and whether that reaches its end.
    func snapshotData(offset: UInt64, maxBytes: Int) -> (data: [UInt8], isLast: Bool)
}

extension RaftLogStorage {
    /// Entries within `range`, limited only by `maxBytes`.
    func entries(from start: LogIndex, through end: LogIndex, maxBytes: Int = .max) -> [Entry] {
        guard start <= end else { return [] }
        return entries(in: start..<(end + 1), maxBytes: maxBytes)
    }
}
