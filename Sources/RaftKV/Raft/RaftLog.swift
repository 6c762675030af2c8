/// The log as the core sees it: the durable prefix in storage plus entries not yet handed to the driver for
/// persisting (`unstable`), which may replace a suffix of the durable part.
struct RaftLog {
    let storage: any RaftLogStorage
    /// Entries from `unstableOffset` on, newer than (or replacing) what storage holds.
    private(set) var unstable: [Entry] = []
    private(set) var unstableOffset: LogIndex
    /// A snapshot received from the leader that the driver has yet to install; while set, the log is empty
    /// after it and storage is stale.
    private(set) var pendingSnapshot: SnapshotMetadata?
    private(set) var committed: LogIndex
    /// Committed entries up to here have been applied (the driver confirmed by `advance`).
    private(set) var applied: LogIndex
    /// Committed entries up to here have been handed to the driver in a Ready.
    private(set) var appliedHanded: LogIndex
    /// Unstable entries up to here have been handed to the driver in a Ready.
    private(set) var stableHanded: LogIndex

    init(storage: any RaftLogStorage, applied: LogIndex) {
        self.storage = storage
        unstableOffset = storage.lastIndex + 1
        committed = storage.hardState.commit
        self.applied = applied
        appliedHanded = applied
        stableHanded = storage.lastIndex
    }

    var firstIndex: LogIndex {
        if let pendingSnapshot { return pendingSnapshot.index + 1 }
        return storage.firstIndex
    }

    var lastIndex: LogIndex {
        if let last = unstable.last { return last.index }
        if let pendingSnapshot { return pendingSnapshot.index }
        return unstableOffset - 1
    }

    /// The last index the driver has persisted (and that still belongs to this log).
    var durableLastIndex: LogIndex { unstableOffset - 1 }

    var lastTerm: Term {
        guard let term = term(at: lastIndex) else { preconditionFailure("the last entry's term is always known") }
        return term
    }

    /// The term at `index` for `firstIndex - 1...lastIndex`, else nil.
    func term(at index: LogIndex) -> Term? {
        if index >= unstableOffset {
            let position = Int(index - unstableOffset)
            return position < unstable.count ? unstable[position].term : nil
        }
        if let pendingSnapshot {
            return index == pendingSnapshot.index ? pendingSnapshot.term : nil
        }
        guard index + 1 >= storage.firstIndex, index <= storage.lastIndex else { return nil }
        return storage.term(at: index)
    }

    func matchTerm(_ index: LogIndex, _ term: Term) -> Bool {
        self.term(at: index) == term
    }

    /// Raft §5.4.1: a candidate's log is at least as up-to-date as ours.
    func isUpToDate(lastIndex candidateIndex: LogIndex, lastTerm candidateTerm: Term) -> Bool {
        candidateTerm > lastTerm || (candidateTerm == lastTerm && candidateIndex >= lastIndex)
    }

    /// Entries from `start` through `lastIndex`, within `maxBytes` (at least one when any exist).
    func entries(from start: LogIndex, maxBytes: Int) -> [Entry] {
        entries(from: start, through: lastIndex, maxBytes: maxBytes)
    }

    func entries(from start: LogIndex, through end: LogIndex, maxBytes: Int) -> [Entry] {
        guard start <= end else { return [] }
        precondition(start >= firstIndex, "entries from \(start) requested below the first index \(firstIndex)")
        precondition(end <= lastIndex, "entries through \(end) requested past the last index \(lastIndex)")
        var result: [Entry] = []
        var bytes = 0
        if start < unstableOffset {
            let storedEnd = min(end, unstableOffset - 1)
            result = storage.entries(in: start..<(storedEnd + 1), maxBytes: maxBytes)
            bytes = result.reduce(0) { $0 + $1.sizeBytes }
            if result.last?.index != storedEnd { return result }
        }
        if end >= unstableOffset {
            let from = Int(max(start, unstableOffset) - unstableOffset)
            let to = Int(end - unstableOffset)
            for entry in unstable[from...to] {
                if !result.isEmpty && bytes + entry.sizeBytes > maxBytes { break }
                bytes += entry.sizeBytes
                result.append(entry)
            }
        }
        return result
    }

    /// The last index in `0...index` whose term is at most `term`, and that term. Fast backtracking uses it on both
    /// sides to skip a whole term of conflicting entries in one round trip.
    func findConflictByTerm(index: LogIndex, term: Term) -> (index: LogIndex, term: Term) {
        var candidate = min(index, lastIndex)
        while true {
            guard let found = self.term(at: candidate) else {
                // Below the known prefix: the best hint is the compaction point itself.
                return (candidate, 0)
            }
            if found <= term || candidate == 0 { return (candidate, found) }
            candidate -= 1
        }
    }

    /// Appends the leader's `entries` that follow `prevIndex`, skipping those already present and truncating at the
    /// first conflict. Returns the last index the leader's entries cover.
    mutating func appendFromLeader(prevIndex: LogIndex, entries: [Entry]) -> LogIndex {
        let lastNew = prevIndex + LogIndex(entries.count)
        for (offset, entry) in entries.enumerated() {
            precondition(entry.index == prevIndex + 1 + LogIndex(offset), "leader sent non-contiguous entries")
            if let existing = term(at: entry.index), existing == entry.term { continue }
            if entry.index <= lastIndex {
                precondition(entry.index > committed,
                             "entry \(entry.index) conflicts with the committed prefix (commit \(committed))")
            }
            append(Array(entries[offset...]))
            break
        }
        return lastNew
    }

    /// Appends `entries`, replacing any existing suffix from `entries[0].index`.
    mutating func append(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        precondition(first.index >= 1 && first.index <= lastIndex + 1, "append at \(first.index) leaves a gap after \(lastIndex)")
        if first.index == unstableOffset + LogIndex(unstable.count) {
            unstable.append(contentsOf: entries)
        } else if first.index <= unstableOffset {
            // Replaces part of the durable log: the driver's next save truncates storage at `first.index`.
            unstableOffset = first.index
            unstable = entries
            stableHanded = min(stableHanded, first.index - 1)
        } else {
            unstable.removeSubrange(Int(first.index - unstableOffset)...)
            unstable.append(contentsOf: entries)
            stableHanded = min(stableHanded, first.index - 1)
        }
    }

    mutating func commit(to index: LogIndex) {
        guard index > committed else { return }
        precondition(index <= lastIndex, "commit \(index) past the last index \(lastIndex)")
        committed = index
    }

    // MARK: Ready bookkeeping

    /// Entries not yet handed to the driver for persisting.
    var unhandedUnstable: ArraySlice<Entry> {
        let from = max(stableHanded + 1, unstableOffset)
        guard from <= lastIndex, from >= unstableOffset else { return [] }
        return unstable[Int(from - unstableOffset)...]
    }

    mutating func markHanded(stableTo index: LogIndex) { stableHanded = max(stableHanded, index) }

    /// Committed entries to hand out next, bounded by `maxBytes`.
    func committedToApply(maxBytes: Int) -> [Entry] {
        let from = max(appliedHanded + 1, firstIndex)
        let to = committed
        guard from <= to else { return [] }
        return entries(from: from, through: to, maxBytes: maxBytes)
    }

    mutating func markHanded(appliedTo index: LogIndex) { appliedHanded = max(appliedHanded, index) }

    /// The driver persisted entries through `index` (of `term`): drop them from `unstable` unless since replaced.
    mutating func stable(to index: LogIndex, term: Term) {
        guard index >= unstableOffset, self.term(at: index) == term else { return }
        let count = Int(index - unstableOffset + 1)
        unstable.removeFirst(count)
        unstableOffset = index + 1
    }

    mutating func applied(to index: LogIndex) {
        precondition(index <= committed, "applied \(index) past commit \(committed)")
        applied = max(applied, index)
    }

    // MARK: Snapshots

    /// Replaces the whole log by the snapshot: nothing after it is known until the leader sends it.
    mutating func restore(_ metadata: SnapshotMetadata) {
        precondition(metadata.index > committed, "restoring snapshot \(metadata.index) at or below commit \(committed)")
        pendingSnapshot = metadata
        unstable = []
        unstableOffset = metadata.index + 1
        committed = metadata.index
        stableHanded = metadata.index
    }

    /// The driver installed the pending snapshot and restored the state machine from it.
    mutating func snapshotInstalled(_ metadata: SnapshotMetadata) {
        guard pendingSnapshot == metadata else { return }
        pendingSnapshot = nil
        // Storage may have kept entries after the snapshot; the unstable tail (if any arrived since) follows them.
        if unstable.isEmpty { unstableOffset = storage.lastIndex + 1 }
        stableHanded = max(stableHanded, unstableOffset - 1)
        applied = max(applied, metadata.index)
        appliedHanded = max(appliedHanded, metadata.index)
    }
}
