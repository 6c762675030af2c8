import Synchronization

/// Carries what the apply path produced to the watch hub. The apply path only enqueues; ``run(into:)`` drains the
/// queue into the hub on its own task, so fanning events out to many watchers never delays writes.
///
/// The queue is bounded by events. When it is full the oldest applied batches are dropped: the hub then sees a gap in
/// revisions and sends the watchers concerned back to the store's history, which holds every event — so a flood of
/// writes costs watchers latency, never correctness, and never costs writers throughput.
final class WatchFeed: Sendable {
    enum Item {
        case applied([AppliedEntry], compactedRevision: Revision)
        /// The state was replaced by a snapshot: the hub must reopen history and resynchronise every watcher.
        case restored(currentRevision: Revision, compactedRevision: Revision)

        var eventCount: Int {
            if case .applied(let entries, _) = self { return entries.reduce(0) { $0 + $1.events.count } }
            return 0
        }
    }

    private struct Queue {
        var items: [Item] = []
        var events = 0
        var dropped = 0
    }

    let maxQueuedEvents: Int
    /// The newest revision enqueued: the store's revision as far as watchers are concerned, ahead of the hub's.
    let latestRevision = Atomic<Revision>(0)
    private let queue = Mutex(Queue())
    private let signal: AsyncStream<Void>
    private let signalContinuation: AsyncStream<Void>.Continuation

    init(maxQueuedEvents: Int = 100_000) {
        precondition(maxQueuedEvents > 0, "the feed needs room for at least one event")
        self.maxQueuedEvents = maxQueuedEvents
        (signal, signalContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Called on the apply path: never waits.
    func enqueue(_ item: Item, storeRevision: Revision) {
        latestRevision.store(storeRevision, ordering: .releasing)
        queue.withLock { queue in
            queue.items.append(item)
            queue.events += item.eventCount
            // Restore markers are never dropped: without one the hub would keep reading a replaced history.
            while queue.events > maxQueuedEvents, let oldest = queue.items.firstIndex(where: { $0.eventCount > 0 }) {
                queue.events -= queue.items[oldest].eventCount
                queue.items.remove(at: oldest)
                queue.dropped += 1
            }
        }
        signalContinuation.yield()
    }

    /// Batches dropped so far because the hub fell behind.
    var droppedBatches: Int { queue.withLock { $0.dropped } }

    /// Publishes queued items into `hub`, in order, until the task is cancelled.
    func run(into hub: WatchHub, onError: (any Error) -> Void) async {
        for await _ in signal {
            let items = queue.withLock { queue -> [Item] in
                defer { queue.items = []; queue.events = 0 }
                return queue.items
            }
            for item in items {
                switch item {
                case .applied(let entries, let compactedRevision):
                    hub.publish(entries, compactedRevision: compactedRevision)
                case .restored(let currentRevision, let compactedRevision):
                    do { try hub.resynchronize(currentRevision: currentRevision, compactedRevision: compactedRevision) } catch { onError(error) }
                }
                // Fan-out to many watchers is long CPU work on a shared cooperative thread: let the Raft loop and
                // the writers run between batches.
                await Task.yield()
            }
        }
    }

    func finish() { signalContinuation.finish() }
}
