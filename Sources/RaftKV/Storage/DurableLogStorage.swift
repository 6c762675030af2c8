import Foundation

/// The driver's view of the durable Raft log: what it writes after each ``Ready``.
///
/// Every method either completes durably or throws; after a throw the caller must stop using the node,
/// because memory and disk may disagree.
/// Implementations are `Sendable` so that a driver actor can own one; they need not be thread-safe, because only
/// that owner touches them.
public protocol DurableLogStorage: RaftLogStorage, Sendable {
    /// Appends `entries`, first truncating any existing suffix from `entries.first.index`, and stores
    /// `hardState` when given, in one transaction; the transaction is synced to disk when `sync` is true.
    /// `entries` are contiguous and `entries.first.index <= lastIndex + 1`.
    func save(hardState: HardState?, entries: [Entry], sync: Bool) throws

    /// Stores one chunk of a snapshot arriving from the leader. A chunk at offset 0 discards any earlier
    /// partial snapshot; other chunks must continue the staged data exactly at its end.
    func stageSnapshotChunk(_ chunk: SnapshotChunk) throws

    /// Makes the completely staged snapshot current: if the log holds an entry at `metadata.index` with
    /// `metadata.term`, the entries after it are kept; otherwise the whole log is dropped. The commit index
    /// in the hard state becomes at least `metadata.index`. One transaction, synced.
    func installStagedSnapshot(_ metadata: SnapshotMetadata) throws

    /// Records a snapshot that the local state machine wrote into `file` (which storage takes over) at
    /// `metadata.index <= lastIndex`, then drops log entries up to `metadata.index - retainEntries`.
    func adoptLocalSnapshot(_ metadata: SnapshotMetadata, file: URL, retainEntries: UInt64) throws

    /// Where the current snapshot's data is, for restoring the state machine after a restart; nil without one.
    var snapshotFile: URL? { get }

    /// A fresh path in the storage's directory where the state machine may write a snapshot for
    /// ``adoptLocalSnapshot(_:file:retainEntries:)``.
    func temporarySnapshotFile() -> URL

    /// The bytes of entry data in `range` (indexes still in the log), for the snapshot schedule.
    func entryBytes(in range: Range<LogIndex>) -> Int64
}

extension DurableLogStorage {
    public func entryBytes(in range: Range<LogIndex>) -> Int64 {
        var total: Int64 = 0
        var next = max(range.lowerBound, firstIndex)
        let end = min(range.upperBound, lastIndex + 1)
        while next < end {
            let batch = entries(in: next..<end, maxBytes: 4 << 20)
            guard let last = batch.last else { break }
            total += batch.reduce(0) { $0 + Int64($1.data.count) }
            next = last.index + 1
        }
        return total
    }
}
