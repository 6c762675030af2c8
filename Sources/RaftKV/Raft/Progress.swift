/// The leader's view of one follower's log.
struct Progress: Equatable {
    enum State: Equatable {
        /// The leader does not know where the logs diverge: one append at a time until one is accepted.
        case probe
        /// Logs match up to `match`: appends are pipelined, up to the inflight limit.
        case replicate
        /// The follower needs entries the leader has compacted: a snapshot is streaming, chunk by chunk.
        /// `confirmedOffset` is how many bytes the follower has acknowledged.
        case snapshot(SnapshotMetadata, confirmedOffset: UInt64)
    }

    var match: LogIndex = 0
    var next: LogIndex
    var state: State = .probe
    /// In probe state, an append is outstanding; cleared by any response or a heartbeat response.
    var probeSent = false
    /// Last index of each append in flight, oldest first; bounded by the core's `maxInflightMessages`.
    var inflight: [LogIndex] = []
    /// The highest commit index sent to this follower, so the leader knows whom a new commit has not reached.
    var sentCommit: LogIndex = 0
    /// Heard from since the last check-quorum round.
    var recentActive = false
    var isLearner: Bool

    init(next: LogIndex, isLearner: Bool) {
        self.next = next
        self.isLearner = isLearner
    }

    mutating func becomeProbe() {
        if case .snapshot(let metadata, _) = state {
            // After a snapshot, the follower's log ends at the snapshot at least.
            next = max(match + 1, metadata.index + 1)
        } else {
            next = match + 1
        }
        state = .probe
        probeSent = false
        inflight.removeAll()
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match + 1
        probeSent = false
        inflight.removeAll()
    }

    mutating func becomeSnapshot(_ metadata: SnapshotMetadata) {
        state = .snapshot(metadata, confirmedOffset: 0)
        probeSent = false
        inflight.removeAll()
    }

    /// Records an acceptance up to `index`; false when it tells nothing new.
    mutating func acknowledge(upTo index: LogIndex) -> Bool {
        var updated = false
        if match < index {
            match = index
            updated = true
            probeSent = false
        }
        next = max(next, index + 1)
        inflight.removeAll { $0 <= index }
        return updated
    }

    /// Handles a rejection of the append whose previous index was `rejected`; `hint` is the highest index the
    /// leader believes may match. False when the rejection is stale.
    mutating func decrease(rejected: LogIndex, hint: LogIndex) -> Bool {
        switch state {
        case .replicate:
            // A rejection at or below match is an old message: the follower has since accepted more.
            guard rejected > match else { return false }
            next = max(match + 1, min(rejected, hint + 1))
            return true
        case .probe:
            // Only the response to the probe we sent (prevIndex == next - 1) tells us anything.
            guard next >= 1, rejected == next - 1 else { return false }
            next = max(match + 1, min(rejected, hint + 1))
            probeSent = false
            return true
        case .snapshot:
            return false
        }
    }

    func isPaused(maxInflight: Int) -> Bool {
        switch state {
        case .probe: return probeSent
        case .replicate: return inflight.count >= maxInflight
        case .snapshot: return true
        }
    }
}
