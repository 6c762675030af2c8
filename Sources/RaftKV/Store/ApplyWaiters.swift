import Synchronization

/// Requests waiting for this member to apply up to a revision or a log index (a write another member answered, a
/// token issued by an entry), resumed by the apply hook rather than by polling.
final class ApplyWaiters: Sendable {
    enum Target: Sendable {
        case revision(Revision)
        case index(LogIndex)

        func isReached(revision: Revision, index: LogIndex) -> Bool {
            switch self {
            case .revision(let wanted): return revision >= wanted
            case .index(let wanted): return index >= wanted
            }
        }
    }

    private struct Waiter {
        var target: Target
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var waiters: [UInt64: Waiter] = [:]
        var nextID: UInt64 = 0
        /// What the apply hook last reported.
        var revision: Revision
        var index: LogIndex
    }

    private let state: Mutex<State>
    /// Bound on requests waiting at once; beyond it a request fails at once rather than queue without limit.
    private let capacity: Int

    init(revision: Revision, index: LogIndex, capacity: Int = 100_000) {
        state = Mutex(State(revision: revision, index: index))
        self.capacity = capacity
    }

    /// Called after every applied batch and restored snapshot, with the state's revision and applied index.
    func applied(revision: Revision, index: LogIndex) {
        let ready = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            state.revision = max(state.revision, revision)
            state.index = max(state.index, index)
            // Called on every applied batch: nothing to scan or allocate when no one waits, the usual case.
            if state.waiters.isEmpty { return [] }
            let reached = state.waiters.filter { $0.value.target.isReached(revision: state.revision, index: state.index) }
            for id in reached.keys { state.waiters[id] = nil }
            return reached.values.map(\.continuation)
        }
        for continuation in ready { continuation.resume() }
    }

    /// Returns once `target` is applied; throws `timeoutError` after `timeout`, and on cancellation.
    func wait(for target: Target, timeout: Duration, timeoutError: any Error) async throws {
        if state.withLock({ target.isReached(revision: $0.revision, index: $0.index) }) { return }
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        let timer = Task {
            try await Task.sleep(for: timeout)
            self.fail(id, with: timeoutError)
        }
        defer { timer.cancel() }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let outcome = state.withLock { state -> Result<Void, any Error>? in
                    // Checked again under the lock: an apply between the first check and here must not be missed.
                    if target.isReached(revision: state.revision, index: state.index) { return .success(()) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    guard state.waiters.count < capacity else { return .failure(timeoutError) }
                    state.waiters[id] = Waiter(target: target, continuation: continuation)
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            self.fail(id, with: CancellationError())
        }
    }

    private func fail(_ id: UInt64, with error: any Error) {
        state.withLock { $0.waiters.removeValue(forKey: id) }?.continuation.resume(throwing: error)
    }
}
