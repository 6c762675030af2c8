import Dispatch
import Synchronization

/// Applies committed entries to the state machine on its own thread, in order, so that the node's loop persists
/// and replicates the next entries while the state machine commits the previous ones (etcd applies in a goroutine
/// of its own for the same reason). Without it, every turn of the loop waits for the log's fsync and then for the
/// state transaction, one after the other.
///
/// The loop hands over each Ready's committed entries with the requests waiting for them, and may go on at once.
/// It waits (``drain()``) before anything that needs the state machine to have caught up: a membership change (the
/// core's membership and the state machine's must change together), installing or taking a snapshot, and a queue
/// that holds ``maxQueuedBytes``.
final class Applier: Sendable {
    typealias Waiter = CheckedContinuation<ApplyResult, any Error>

    private struct State {
        var queuedBytes = 0
        var failure: (any Error)?
        /// Set by ``stop()``: batches not yet applied fail their waiters instead (the entries stay committed in the
        /// log and are applied again at the next start).
        var stopped = false
    }

    /// Bound on the entry bytes handed over but not yet applied.
    let maxQueuedBytes: Int
    private let stateMachine: any StateMachine
    private let queue = DispatchQueue(label: "raft.apply")
    private let state = Mutex(State())
    /// Called after each batch, on the applier's thread: the node then serves reads that waited for it.
    private let onApplied: @Sendable () -> Void

    init(stateMachine: any StateMachine, maxQueuedBytes: Int, onApplied: @escaping @Sendable () -> Void) {
        precondition(maxQueuedBytes > 0, "the applier needs room")
        self.stateMachine = stateMachine
        self.maxQueuedBytes = maxQueuedBytes
        self.onApplied = onApplied
    }

    /// The error that stopped applying, if any; the node must stop with it.
    var failure: (any Error)? {
        state.withLock { $0.failure }
    }

    /// Queues `entries` (contiguous, following those queued before) and the requests waiting for their results,
    /// by index. Blocks while the queue is full.
    func enqueue(_ entries: [Entry], waiters: [LogIndex: Waiter]) {
        precondition(!entries.isEmpty, "an empty batch")
        let bytes = Self.weight(entries)
        let full = state.withLock { state in
            state.queuedBytes += bytes
            return state.queuedBytes > maxQueuedBytes
        }
        queue.async { [self] in apply(entries, waiters: waiters) }
        if full { drain() }
    }

    /// Returns once everything queued has been applied (or failed).
    func drain() {
        queue.sync {}
    }

    /// Stops applying: what is still queued fails its waiters; returns once nothing is being applied.
    func stop() {
        state.withLock { $0.stopped = true }
        drain()
    }

    private func apply(_ entries: [Entry], waiters: [LogIndex: Waiter]) {
        let refusal = state.withLock { state -> RaftNodeError? in
            state.queuedBytes -= Self.weight(entries)
            if let failure = state.failure { return .stopped("\(failure)") }
            return state.stopped ? .stopped("shut down") : nil
        }
        if let refusal {
            for waiter in waiters.values { waiter.resume(throwing: refusal) }
            return
        }
        let results: [ApplyResult]
        do {
            precondition(entries.first!.index == stateMachine.appliedIndex + 1,
                         "applying \(entries.first!.index) after \(stateMachine.appliedIndex)")
            results = try stateMachine.apply(entries)
        } catch {
            state.withLock { state in
                if state.failure == nil { state.failure = error }
            }
            for waiter in waiters.values { waiter.resume(throwing: RaftNodeError.stopped("\(error)")) }
            onApplied()
            return
        }
        precondition(results.count == entries.count, "one result per applied entry")
        precondition(stateMachine.appliedIndex == entries.last!.index, "the state machine must record what it applied")
        for (entry, result) in zip(entries, results) {
            waiters[entry.index]?.resume(returning: result)
        }
        onApplied()
    }

    /// What a batch counts against the bound: its data, plus a little per entry so empty entries count too.
    private static func weight(_ entries: [Entry]) -> Int {
        entries.reduce(0) { $0 + $1.data.count + 64 }
    }
}
