/// etcd's gRPC watch stream: many watchers, one ordered sequence of responses.
///
/// The RPC layer forwards each `WatchRequest` to ``create(_:)``, ``cancel(watchID:)`` or ``requestProgress()``
/// and writes ``responses`` to the client. Responses are not buffered outside the hub: the sequence pulls each
/// one from the stream's queue, whose size the hub bounds per watcher. Close the stream when the RPC ends;
/// canceling the task that reads ``responses`` and dropping the last reference (the sequence holds one)
/// close it too.
public final class WatchStream: Sendable {
    public let hub: WatchHub
    let id: UInt64

    init(hub: WatchHub, id: UInt64) {
        self.hub = hub
        self.id = id
    }

    deinit { hub.closeStream(id) }

    /// The responses, in order; ends when the stream is closed. Iterate it from one task only.
    public var responses: AsyncStream<WatchResponse> {
        // Holding the stream keeps it open while the sequence is iterated.
        // AsyncStream may end on cancellation without calling the closure again: close the stream then too.
        AsyncStream(unfolding: { await self.next() }, onCancel: { self.close() })
    }

    /// The next response, waiting for one; nil once the stream is closed.
    public func next() async -> WatchResponse? {
        await hub.next(id)
    }

    /// The next queued response without waiting (tests drive the hub step by step with it).
    func poll() -> WatchResponse? {
        hub.poll(id)
    }

    /// Creates a watcher. Returns the response also queued on the stream: `created` with the watch ID, or
    /// `created` and `canceled` with watch ID -1 and etcd's reason (duplicate ID, empty range, too many
    /// watchers). Waits while too many control responses are unread.
    /// With a `refusal` (the caller's reason, e.g. the client may not read the range), nothing is created and the
    /// refusal is answered the same way.
    @discardableResult
    public func create(_ request: WatchCreateRequest, refusal: String? = nil) async -> WatchResponse {
        await hub.waitForControlRoom(id)
        return hub.createWatcher(on: id, request, refusal: refusal)
    }

    /// Cancels a watcher; its `canceled` response follows any of its responses already queued. Returns false,
    /// sending nothing, when the stream has no such watcher (as etcd 3.4).
    @discardableResult
    public func cancel(watchID: Int64) async -> Bool {
        await hub.waitForControlRoom(id)
        return hub.cancelWatcher(on: id, watchID: watchID)
    }

    /// Asks for a progress response (watch ID -1, no events, the hub's revision). It is sent once all the
    /// stream's watchers are synced, so it never reports a revision ahead of an event still to come; a stream
    /// without watchers gets nothing (as etcd 3.5).
    public func requestProgress() async {
        await hub.waitForControlRoom(id)
        hub.requestProgress(on: id)
    }

    /// Removes every watcher and ends ``responses``. Idempotent.
    public func close() {
        hub.closeStream(id)
    }
}
