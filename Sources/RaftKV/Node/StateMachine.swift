import Foundation

/// The replicated state machine the node driver applies committed entries to.
///
/// The state machine owns its durability: it records the index of the last entry it applied in the same
/// transaction as the effects of that entry, so that after a crash `appliedIndex` tells exactly which entries
/// to apply again. Entries are delivered in order, without gaps, each once, from the node's applier thread, while
/// the node and readers may read `appliedIndex` and the state from others.
public protocol StateMachine: AnyObject, Sendable {
    /// The index of the last applied entry, as durable as the state it describes.
    var appliedIndex: LogIndex { get }

    /// Applies `entries` (contiguous, starting at `appliedIndex + 1`) and returns one result per entry, in
    /// order. Empty entries and membership changes only advance `appliedIndex`.
    func apply(_ entries: [Entry]) throws -> [ApplyResult]

    /// Writes a consistent copy of the state at `appliedIndex` into `file`.
    func writeSnapshot(to file: URL) throws

    /// Replaces the whole state with the snapshot in `file`, taken at `index`.
    func restore(from file: URL, index: LogIndex) throws

    /// True when ``writeSnapshotConcurrently(to:)`` works: the node then snapshots in the background instead of
    /// stopping its loop (heartbeats included) for as long as a copy of the whole state takes.
    var snapshotsConcurrently: Bool { get }

    /// Writes a consistent copy of the state into `file` while applies go on, from another thread, and returns the
    /// applied index the copy reflects.
    func writeSnapshotConcurrently(to file: URL) throws -> LogIndex

    /// About how many bytes a snapshot of the state takes, to space snapshots out as the state grows (see
    /// ``RaftNodeOptions/snapshotLogToStateRatio``); 0 when unknown.
    var stateSizeBytes: Int64 { get }
}

extension StateMachine {
    public var snapshotsConcurrently: Bool { false }

    public var stateSizeBytes: Int64 { 0 }

    public func writeSnapshotConcurrently(to file: URL) throws -> LogIndex {
        preconditionFailure("\(Self.self) does not snapshot concurrently")
    }
}

/// What applying one entry produced, handed back to whoever proposed it.
public typealias ApplyResult = [UInt8]
