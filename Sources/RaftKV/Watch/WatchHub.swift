import Foundation

/// Serves etcd watches from the events the apply path publishes and, for watchers behind, from history.
///
/// The design is etcd's watchable store. A watcher is *synced* when every event it wants below the hub's
/// revision has been queued for it; the apply path (``publish(events:revision:)``) fans each revision out to the
/// synced watchers only, from memory. A watcher is *unsynced* when it starts in the past or fell behind because
/// its buffer was full: it gets no live events at all, and the catch-up loop in ``run(clock:)`` reads its missed
/// revisions from history (a separate read-only connection) in bounded batches until it reaches the hub's
/// revision, then moves it to the synced group. Each watcher remembers the next revision it must see, so live
/// and history deliveries never overlap or leave a gap.
///
/// Every response of a stream goes through one FIFO queue, which is what makes a stream-wide progress response
/// (sent only when all the stream's watchers are synced) never ahead of an event still to come.
///
/// Thread safety: all state is guarded by one lock, held only for in-memory work; history is read outside it.
public final class WatchHub: @unchecked Sendable {
    public struct Configuration: Sendable {
        /// Watchers one stream may hold.
        public var maxWatchersPerStream: Int
        /// Events queued for one watcher before it falls back to catching up from history.
        public var maxBufferedEventsPerWatcher: Int
        /// Encoded event bytes queued for one watcher before it falls back to catching up from history.
        public var maxBufferedBytesPerWatcher: Int
        /// Events read from history per catch-up round (a revision is never split, so a round may read more).
        public var historyBatchEvents: Int
        /// Unsynced watchers served by one history read (etcd's `maxWatchersPerSync`).
        public var maxWatchersPerSync: Int
        /// Responses bigger than this are split: between revisions always, within one revision only for
        /// watchers that asked for fragments (etcd: `--max-request-bytes` plus gRPC overhead).
        public var maxResponseBytes: Int
        /// Create, cancel and progress requests of a stream whose answers the consumer has not read yet; further
        /// requests wait (etcd's `ctrlStreamBufLen`).
        public var maxPendingControlResponses: Int
        /// Period of progress notifications for watchers created with `progressNotify` (etcd: 10 minutes).
        public var progressNotifyInterval: Duration

        public init(maxWatchersPerStream: Int = 10_000, maxBufferedEventsPerWatcher: Int = 1_000,
                    maxBufferedBytesPerWatcher: Int = 4 * 1024 * 1024, historyBatchEvents: Int = 500,
                    maxWatchersPerSync: Int = 512, maxResponseBytes: Int = 2 * 1024 * 1024,
                    maxPendingControlResponses: Int = 16, progressNotifyInterval: Duration = .seconds(600)) {
            self.maxWatchersPerStream = maxWatchersPerStream
            self.maxBufferedEventsPerWatcher = maxBufferedEventsPerWatcher
            self.maxBufferedBytesPerWatcher = maxBufferedBytesPerWatcher
            self.historyBatchEvents = historyBatchEvents
            self.maxWatchersPerSync = maxWatchersPerSync
            self.maxResponseBytes = maxResponseBytes
            self.maxPendingControlResponses = maxPendingControlResponses
            self.progressNotifyInterval = progressNotifyInterval
        }
    }

    public let configuration: Configuration
    private let history: any WatchHistory
    private let lock = NSLock()
    private let wakeup: AsyncStream<Void>
    private let wakeupContinuation: AsyncStream<Void>.Continuation

    // MARK: State guarded by `lock`

    /// The last revision published.
    private var revision: Revision
    private var compacted: Revision
    private var streams: [UInt64: StreamState] = [:]
    private var nextStreamID: UInt64 = 1
    /// Synced watchers of a single key, by key.
    private var syncedByKey: [[UInt8]: [ObjectIdentifier: Watcher]] = [:]
    /// Synced watchers of a range (scanned for each event).
    private var syncedRanges: [ObjectIdentifier: Watcher] = [:]
    private var unsynced: [ObjectIdentifier: Watcher] = [:]
    /// Streams with a progress request not yet answered.
    private var streamsAwaitingProgress: Set<UInt64> = []
    /// How often watchers fell back to history, and history reads done (tests check both paths ran).
    private(set) var fallbacks = 0
    private(set) var historyReads = 0
    private let latestRevision: (@Sendable () -> Revision)?
    /// Continuations to resume once the lock is released.
    private var resumes: [() -> Void] = []

    /// - Parameters:
    ///   - history: where unsynced watchers read missed revisions (e.g. ``MVCCStore/makeWatchHistory()``).
    ///   - currentRevision: the store's revision now; the next publish must be for the revision after it.
    ///   - compactedRevision: the store's compacted revision (-1 when never compacted).
    ///   - latestRevision: the store's revision now, when publishing lags the store (events are published from a
    ///     queue): a watcher starting "from now" starts after it, not after the last revision published.
    public init(history: any WatchHistory, currentRevision: Revision, compactedRevision: Revision,
                configuration: Configuration = Configuration(), latestRevision: (@Sendable () -> Revision)? = nil) {
        precondition(configuration.maxBufferedEventsPerWatcher > 0 && configuration.historyBatchEvents > 0
                     && configuration.maxWatchersPerSync > 0 && configuration.maxPendingControlResponses > 0,
                     "watch hub bounds must be positive")
        self.history = history
        self.latestRevision = latestRevision
        self.configuration = configuration
        self.revision = currentRevision
        self.compacted = compactedRevision
        (wakeup, wakeupContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    // MARK: Apply path

    /// Hands the hub the events of one applied revision, all together and in order, after the transaction that
    /// applied them committed. Never reads storage and never waits for a consumer: a watcher whose buffer is full
    /// drops back to catching up from history. A revision already published is ignored.
    public func publish(events: [Event], revision newRevision: Revision) {
        locked {
            guard newRevision > revision else { return }
            if newRevision > revision + 1 {
                // Revisions were skipped (not published): synced watchers must read them from history.
                for watcher in Array(syncedRanges.values) + syncedByKey.values.flatMap(\.values)
                where watcher.nextRevision < newRevision {
                    unsync(watcher)
                }
            }
            revision = newRevision
            // What every watcher of the whole revision gets is built once and shared (copy-on-write arrays):
            // delivery costs a queue append per watcher, not a copy and a size computation per event.
            let batch = RevisionBatch(events)
            var wholeRevision: [Watcher] = []
            var partial: [(Watcher, [Event])] = []
            for watcher in syncedRanges.values {
                let matching = events.count == 1
                    ? (watcher.range.contains(events[0].kv.key) ? events.count : 0)
                    : events.reduce(0) { $0 + (watcher.range.contains($1.kv.key) ? 1 : 0) }
                if matching == events.count {
                    wholeRevision.append(watcher)
                } else if matching > 0 {
                    partial.append((watcher, events.filter { watcher.range.contains($0.kv.key) }))
                }
            }
            if events.count == 1 {
                wholeRevision.append(contentsOf: syncedByKey[events[0].kv.key]?.values ?? [:].values)
            } else {
                var order: [Watcher] = []
                var matched: [ObjectIdentifier: [Event]] = [:]
                for event in events {
                    for watcher in syncedByKey[event.kv.key]?.values ?? [:].values {
                        let id = ObjectIdentifier(watcher)
                        if matched[id] == nil { order.append(watcher) }
                        matched[id, default: []].append(event)
                    }
                }
                for watcher in order { partial.append((watcher, matched[ObjectIdentifier(watcher)]!)) }
            }
            for watcher in wholeRevision { deliverLive(watcher, batch, revision: newRevision) }
            for (watcher, subset) in partial { deliverLive(watcher, RevisionBatch(subset), revision: newRevision) }
            answerProgressRequests()
        }
    }

    /// Publishes what one batch of applied entries produced (one revision per entry with events), then the
    /// store's compacted revision when it moved.
    public func publish(_ applied: [AppliedEntry], compactedRevision: Revision) {
        for entry in applied {
            guard let first = entry.events.first else { continue }
            publish(events: entry.events, revision: first.kv.modRevision)
        }
        publishCompaction(revision: compactedRevision)
    }

    /// Records a compaction: unsynced watchers whose next revision is now gone are canceled with
    /// `compactRevision` set. Synced watchers are ahead of any compaction and unaffected.
    public func publishCompaction(revision compactedRevision: Revision) {
        locked {
            guard compactedRevision > compacted else { return }
            compacted = compactedRevision
            for watcher in unsynced.values where watcher.nextRevision < compacted {
                cancelCompacted(watcher, compactedRevision: compacted)
            }
            answerProgressRequests()
        }
    }

    /// After the store's state was replaced (snapshot install): reopens history and sends every watcher through
    /// history again from its next revision, as etcd's `Restore` does.
    public func resynchronize(currentRevision: Revision, compactedRevision: Revision) throws {
        try history.reopen()
        locked {
            for watcher in Array(syncedRanges.values) + syncedByKey.values.flatMap(\.values) { unsync(watcher) }
            revision = currentRevision
            compacted = compactedRevision
            for watcher in unsynced.values where watcher.nextRevision < compacted {
                cancelCompacted(watcher, compactedRevision: compacted)
            }
            wakeupContinuation.yield()
        }
    }

    // MARK: Observation

    /// The last revision published.
    public var currentRevision: Revision { locked { revision } }
    public var compactedRevision: Revision { locked { compacted } }
    public var streamCount: Int { locked { streams.count } }
    public var watcherCount: Int { locked { streams.values.reduce(0) { $0 + $1.watchers.count } } }
    public var unsyncedWatcherCount: Int { locked { unsynced.count } }
    var statistics: (fallbacks: Int, historyReads: Int) { locked { (fallbacks, historyReads) } }

    // MARK: Background work

    /// Runs the catch-up loop and the periodic progress notifications until the task is canceled. Call once, in
    /// the owner's task group.
    public func run<C: Clock>(clock: C) async where C.Duration == Duration {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.catchUpLoop() }
            group.addTask {
                while !Task.isCancelled {
                    do {
                        try await clock.sleep(for: self.configuration.progressNotifyInterval)
                    } catch {
                        return
                    }
                    self.progressTick()
                }
            }
        }
    }

    public func run() async {
        await run(clock: ContinuousClock())
    }

    private func catchUpLoop() async {
        for await _ in wakeup {
            while !Task.isCancelled, catchUpRound() {
                await Task.yield()
            }
        }
    }

    /// One periodic progress round: each synced `progressNotify` watcher that was sent no event since the last
    /// round and has nothing queued gets a progress response at the hub's revision (etcd's progress ticker).
    public func progressTick() {
        locked {
            for stream in streams.values {
                for watcher in stream.watchers.values where watcher.progressNotify {
                    if !watcher.sentEventsSinceTick, watcher.isSynced, watcher.bufferedResponses == 0,
                       revision >= watcher.startRevision - 1 {
                        enqueue(WatchResponse(headerRevision: revision, watchID: watcher.id), on: stream, for: watcher)
                    }
                    watcher.sentEventsSinceTick = false
                }
            }
        }
    }

    private struct CatchUpPlan {
        var watchers: [Watcher]
        var startRevision: Revision
        var keyRange: KeyRange
        var prevKv: Bool
    }

    /// Serves up to `maxWatchersPerSync` unsynced watchers with room in their buffers from one history read.
    /// Returns false when there was nothing to do.
    @discardableResult
    func catchUpRound() -> Bool {
        let plan: CatchUpPlan? = locked {
            var picked: [Watcher] = []
            var compactedAway: [Watcher] = []
            var caughtUp: [Watcher] = []
            for watcher in unsynced.values where hasRoom(watcher) {
                if watcher.nextRevision < compacted {
                    compactedAway.append(watcher)
                } else if watcher.nextRevision > revision {
                    caughtUp.append(watcher)
                } else {
                    picked.append(watcher)
                    if picked.count == configuration.maxWatchersPerSync { break }
                }
            }
            for watcher in compactedAway { cancelCompacted(watcher, compactedRevision: compacted) }
            for watcher in caughtUp { makeSynced(watcher) }
            if !compactedAway.isEmpty || !caughtUp.isEmpty { answerProgressRequests() }
            guard !picked.isEmpty else { return nil }
            return CatchUpPlan(watchers: picked, startRevision: picked.map(\.nextRevision).min()!,
                               keyRange: Self.covering(picked.map(\.range)), prevKv: picked.contains(where: \.prevKv))
        }
        guard let plan else { return false }
        let result: Result<WatchHistoryRead, any Error>
        do {
            result = .success(try history.read(from: plan.startRevision, keyRange: plan.keyRange,
                                               limit: configuration.historyBatchEvents, prevKv: plan.prevKv))
        } catch {
            result = .failure(error)
        }
        locked {
            historyReads += 1
            switch result {
            case .failure(let error):
                // Retrying could spin forever on a broken file: end these watches and say why.
                for watcher in plan.watchers where !watcher.isRemoved && !watcher.isSynced {
                    let stream = watcher.stream
                    remove(watcher)
                    enqueue(WatchResponse(headerRevision: revision, watchID: watcher.id, canceled: true,
                                          cancelReason: "\(error)"), on: stream, for: nil)
                }
            case .success(.compacted(let compactedRevision)):
                compacted = max(compacted, compactedRevision)
                for watcher in plan.watchers where !watcher.isRemoved && !watcher.isSynced
                    && watcher.nextRevision < compacted {
                    cancelCompacted(watcher, compactedRevision: compacted)
                }
            case .success(.events(let events, let through)):
                for watcher in plan.watchers where !watcher.isRemoved && !watcher.isSynced {
                    if through >= watcher.nextRevision {
                        let mine = events.filter {
                            $0.kv.modRevision >= watcher.nextRevision && watcher.range.contains($0.kv.key)
                        }
                        deliver(watcher, watcher.shape(mine), finalHeader: through)
                        watcher.nextRevision = through + 1
                    }
                    if watcher.nextRevision > revision { makeSynced(watcher) }
                }
            }
            answerProgressRequests()
        }
        return true
    }

    /// The smallest single range covering all of `ranges`.
    static func covering(_ ranges: [KeyRange]) -> KeyRange {
        var lowest: [UInt8]?
        var highest: [UInt8]? = []  // nil = unbounded
        for range in ranges {
            let start: [UInt8]
            let end: [UInt8]?
            switch range {
            case .single(let key):
                start = key
                end = key + [0]
            case .from(let key):
                start = key
                end = nil
            case .interval(let from, let to):
                start = from
                end = to
            }
            if lowest == nil || start.lexicographicallyPrecedes(lowest!) { lowest = start }
            if let current = highest {
                if let end { if current.lexicographicallyPrecedes(end) { highest = end } } else { highest = nil }
            }
        }
        if ranges.count == 1 { return ranges[0] }
        guard let lowest else { return .from([]) }
        if let highest { return .interval(lowest, highest) }
        return .from(lowest)
    }

    // MARK: Streams (called by WatchStream)

    func openStream() -> UInt64 {
        locked {
            let id = nextStreamID
            nextStreamID += 1
            streams[id] = StreamState(id: id)
            return id
        }
    }

    /// Opens a stream: many watchers, one ordered response sequence.
    public func makeStream() -> WatchStream {
        WatchStream(hub: self, id: openStream())
    }

    func closeStream(_ id: UInt64) {
        locked {
            guard let stream = streams.removeValue(forKey: id) else { return }
            for watcher in Array(stream.watchers.values) { remove(watcher) }
            stream.queue.removeAll()
            stream.closed = true
            streamsAwaitingProgress.remove(id)
            if let waiter = stream.consumer {
                stream.consumer = nil
                resumes.append { waiter.resume(returning: nil) }
            }
            wakeControlWaiters(stream, all: true)
        }
    }

    /// The next response of stream `id`, waiting for one; nil once the stream is closed. Canceling the waiting
    /// task closes the stream.
    func next(_ id: UInt64) async -> WatchResponse? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<WatchResponse?, Never>) in
                let closeNow: Bool = locked {
                    guard let stream = streams[id] else {
                        resumes.append { continuation.resume(returning: nil) }
                        return false
                    }
                    if let response = popFirst(stream) {
                        resumes.append { continuation.resume(returning: response) }
                        return false
                    }
                    if Task.isCancelled {
                        resumes.append { continuation.resume(returning: nil) }
                        return true
                    }
                    precondition(stream.consumer == nil, "a watch stream has one consumer")
                    stream.consumer = continuation
                    return false
                }
                if closeNow { closeStream(id) }
            }
        } onCancel: {
            closeStream(id)
        }
    }

    func poll(_ id: UInt64) -> WatchResponse? {
        locked { streams[id].flatMap { popFirst($0) } }
    }

    /// Internal counters of stream `id` for tests: queued responses and the largest watcher buffer.
    func queueState(_ id: UInt64) -> (responses: Int, maxWatcherEvents: Int) {
        locked {
            guard let stream = streams[id] else { return (0, 0) }
            return (stream.queue.count, stream.watchers.values.map(\.bufferedEvents).max() ?? 0)
        }
    }

    /// Waits until stream `id` may queue one more control response (or is closed).
    func waitForControlRoom(_ id: UInt64) async {
        while true {
            let hasRoom: Bool = locked {
                guard let stream = streams[id] else { return true }
                return stream.controlBacklog < configuration.maxPendingControlResponses
            }
            if hasRoom { return }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                locked {
                    if let stream = streams[id], stream.controlBacklog >= configuration.maxPendingControlResponses {
                        stream.controlWaiters.append(continuation)
                    } else {
                        resumes.append { continuation.resume() }
                    }
                }
            }
        }
    }

    func createWatcher(on id: UInt64, _ request: WatchCreateRequest, refusal: String? = nil) -> WatchResponse {
        locked {
            func refuse(_ reason: String) -> WatchResponse {
                WatchResponse(headerRevision: revision, watchID: WatchResponse.invalidWatchID, created: true,
                              canceled: true, cancelReason: reason)
            }
            guard let stream = streams[id] else { return refuse(WatchCancelReason.emptyRange) }
            // As etcd's server: an empty key is the smallest key.
            let key = request.key.isEmpty ? [0] : request.key
            let range = KeyRange(key: key, rangeEnd: request.rangeEnd)
            var failure: String?
            if let refusal {
                failure = refusal
            } else if case .interval(let start, let end) = range, !start.lexicographicallyPrecedes(end) {
                failure = WatchCancelReason.emptyRange
            } else if request.watchID != 0, stream.watchers[request.watchID] != nil {
                failure = WatchCancelReason.duplicateID
            } else if stream.watchers.count >= configuration.maxWatchersPerStream {
                failure = WatchCancelReason.tooManyWatchers
            }
            if let failure {
                let response = refuse(failure)
                enqueue(response, on: stream, for: nil, control: true)
                return response
            }
            var watchID = request.watchID
            if watchID == 0 {
                while stream.watchers[stream.nextWatchID] != nil { stream.nextWatchID += 1 }
                watchID = stream.nextWatchID
                stream.nextWatchID += 1
            }
            // 0 = from the next revision; a negative start reads all history that is left, as in etcd.
            let now = max(revision, latestRevision?() ?? revision)
            let start = request.startRevision == 0 ? now + 1 : max(request.startRevision, 1)
            let watcher = Watcher(stream: stream, id: watchID, range: range,
                                  startRevision: start, request: request)
            stream.watchers[watchID] = watcher
            let response = WatchResponse(headerRevision: now, watchID: watchID, created: true)
            enqueue(response, on: stream, for: nil, control: true)
            if start > revision {
                makeSynced(watcher)
            } else {
                unsynced[ObjectIdentifier(watcher)] = watcher
                wakeupContinuation.yield()
            }
            return response
        }
    }

    func cancelWatcher(on id: UInt64, watchID: Int64) -> Bool {
        locked {
            guard let stream = streams[id], let watcher = stream.watchers[watchID] else { return false }
            remove(watcher)
            enqueue(WatchResponse(headerRevision: revision, watchID: watchID, canceled: true), on: stream,
                    for: nil, control: true)
            answerProgressRequests()
            return true
        }
    }

    func requestProgress(on id: UInt64) {
        locked {
            guard streams[id] != nil else { return }
            streamsAwaitingProgress.insert(id)
            answerProgressRequests()
        }
    }

    // MARK: Internals (lock held)

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        let result: T
        do {
            result = try body()
        } catch {
            let pending = resumes
            resumes = []
            lock.unlock()
            for resume in pending { resume() }
            throw error
        }
        let pending = resumes
        resumes = []
        lock.unlock()
        for resume in pending { resume() }
        return result
    }

    private func hasRoom(_ watcher: Watcher) -> Bool {
        watcher.bufferedEvents <= configuration.maxBufferedEventsPerWatcher / 2
            && watcher.bufferedBytes <= configuration.maxBufferedBytesPerWatcher / 2
    }

    private func deliverLive(_ watcher: Watcher, _ batch: RevisionBatch, revision eventRevision: Revision) {
        // Already delivered from history (its snapshot was ahead of the published revision).
        guard eventRevision >= watcher.nextRevision else { return }
        let shaped: [Event]
        let bytes: Int
        if watcher.filters.isEmpty {
            (shaped, bytes) = watcher.prevKv ? (batch.events, batch.bytes) : (batch.withoutPrevKv, batch.bytesWithoutPrevKv)
        } else {
            shaped = watcher.shape(batch.events)
            bytes = shaped.reduce(0) { $0 + WatchEncodedSize.event($1) }
        }
        if !shaped.isEmpty, watcher.bufferedEvents > 0 {
            if watcher.bufferedEvents + shaped.count > configuration.maxBufferedEventsPerWatcher
                || watcher.bufferedBytes + bytes > configuration.maxBufferedBytesPerWatcher {
                // Slow consumer: stop feeding it live; it reads this revision and what follows from history.
                fallbacks += 1
                unsync(watcher)
                return
            }
        }
        deliver(watcher, shaped, finalHeader: eventRevision, bytes: bytes)
        watcher.nextRevision = eventRevision + 1
    }

    /// Queues `events` (already filtered) for `watcher`, split into responses at revision boundaries when they
    /// exceed `maxResponseBytes`, and within a revision only when the watcher asked for fragments.
    private func deliver(_ watcher: Watcher, _ events: [Event], finalHeader: Revision, bytes: Int? = nil) {
        guard !events.isEmpty else { return }
        watcher.sentEventsSinceTick = true
        // One revision for a watcher that does not take fragments (the live case): ``split(_:watchID:fragment:
        // maxBytes:)`` would make exactly this one response, whatever its size.
        if let bytes, !watcher.fragment, events.first!.kv.modRevision == events.last!.kv.modRevision {
            enqueue(WatchResponse(headerRevision: finalHeader, watchID: watcher.id, events: events), on: watcher.stream,
                    for: watcher, bytes: bytes)
            return
        }
        var responses = Self.split(events, watchID: watcher.id, fragment: watcher.fragment,
                                   maxBytes: configuration.maxResponseBytes)
        // The last unit (a response, or the fragments of one revision) carries the final header.
        var index = responses.count - 1
        responses[index].headerRevision = finalHeader
        while index > 0, responses[index - 1].fragment {
            index -= 1
            responses[index].headerRevision = finalHeader
        }
        for response in responses { enqueue(response, on: watcher.stream, for: watcher) }
    }

    /// Splits events into responses of at most `maxBytes` (etcd's `Size()`) without splitting a revision, except
    /// by fragmenting one revision (etcd's `sendFragments`) when `fragment` is set. Headers are each response's
    /// last revision.
    static func split(_ events: [Event], watchID: Int64, fragment: Bool, maxBytes: Int) -> [WatchResponse] {
        let envelope = WatchEncodedSize.envelope(WatchResponse(headerRevision: events.last!.kv.modRevision,
                                                               watchID: watchID))
        var responses: [WatchResponse] = []
        var current: [Event] = []
        var currentSize = envelope
        func flush() {
            guard !current.isEmpty else { return }
            responses.append(WatchResponse(headerRevision: current.last!.kv.modRevision, watchID: watchID,
                                           events: current))
            current = []
            currentSize = envelope
        }
        var start = 0
        while start < events.count {
            var end = start + 1
            while end < events.count, events[end].kv.modRevision == events[start].kv.modRevision { end += 1 }
            let unit = events[start..<end]
            let sizes = unit.map { WatchEncodedSize.eventField(WatchEncodedSize.event($0)) }
            let unitSize = sizes.reduce(0, +)
            if !current.isEmpty, currentSize + unitSize > maxBytes { flush() }
            if fragment, unit.count > 1, envelope + unitSize >= maxBytes {
                flush()
                // etcd: add events while the fragment stays under the limit; a single event always goes.
                let fragmentEnvelope = envelope + 2
                var piece: [Event] = []
                var pieceSize = fragmentEnvelope
                for (event, size) in zip(unit, sizes) {
                    if !piece.isEmpty, pieceSize + size >= maxBytes {
                        responses.append(WatchResponse(headerRevision: event.kv.modRevision, watchID: watchID,
                                                       fragment: true, events: piece))
                        piece = []
                        pieceSize = fragmentEnvelope
                    }
                    piece.append(event)
                    pieceSize += size
                }
                responses.append(WatchResponse(headerRevision: unit.first!.kv.modRevision, watchID: watchID,
                                               events: piece))
            } else {
                current.append(contentsOf: unit)
                currentSize += unitSize
            }
            start = end
        }
        flush()
        return responses
    }

    private func enqueue(_ response: WatchResponse, on stream: StreamState, for watcher: Watcher?,
                         control: Bool = false, bytes knownBytes: Int? = nil) {
        guard !stream.closed else { return }
        let bytes = knownBytes ?? response.events.reduce(0) { $0 + WatchEncodedSize.event($1) }
        if let watcher {
            watcher.bufferedEvents += response.events.count
            watcher.bufferedBytes += bytes
            watcher.bufferedResponses += 1
        }
        if control { stream.controlBacklog += 1 }
        stream.queue.append(QueuedResponse(response: response, watcher: watcher, bytes: bytes, isControl: control))
        if let consumer = stream.consumer, let next = popFirst(stream) {
            stream.consumer = nil
            resumes.append { consumer.resume(returning: next) }
        }
    }

    private func popFirst(_ stream: StreamState) -> WatchResponse? {
        guard let entry = stream.queue.popFirst() else { return nil }
        if let watcher = entry.watcher {
            watcher.bufferedEvents -= entry.response.events.count
            watcher.bufferedBytes -= entry.bytes
            watcher.bufferedResponses -= 1
            if !watcher.isSynced, !watcher.isRemoved, hasRoom(watcher) { wakeupContinuation.yield() }
        }
        if entry.isControl {
            stream.controlBacklog -= 1
            wakeControlWaiters(stream, all: false)
        }
        return entry.response
    }

    private func wakeControlWaiters(_ stream: StreamState, all: Bool) {
        guard all || stream.controlBacklog < configuration.maxPendingControlResponses else { return }
        let waiters = stream.controlWaiters
        stream.controlWaiters = []
        for waiter in waiters { resumes.append { waiter.resume() } }
    }

    private func makeSynced(_ watcher: Watcher) {
        let id = ObjectIdentifier(watcher)
        unsynced[id] = nil
        watcher.isSynced = true
        if case .single(let key) = watcher.range {
            syncedByKey[key, default: [:]][id] = watcher
        } else {
            syncedRanges[id] = watcher
        }
    }

    private func unsync(_ watcher: Watcher) {
        removeFromSynced(watcher)
        watcher.isSynced = false
        unsynced[ObjectIdentifier(watcher)] = watcher
        wakeupContinuation.yield()
    }

    private func removeFromSynced(_ watcher: Watcher) {
        let id = ObjectIdentifier(watcher)
        if case .single(let key) = watcher.range {
            syncedByKey[key]?[id] = nil
            if syncedByKey[key]?.isEmpty == true { syncedByKey[key] = nil }
        } else {
            syncedRanges[id] = nil
        }
    }

    private func remove(_ watcher: Watcher) {
        guard !watcher.isRemoved else { return }
        watcher.isRemoved = true
        if watcher.isSynced { removeFromSynced(watcher) } else { unsynced[ObjectIdentifier(watcher)] = nil }
        if watcher.stream.watchers[watcher.id] === watcher { watcher.stream.watchers[watcher.id] = nil }
    }

    private func cancelCompacted(_ watcher: Watcher, compactedRevision: Revision) {
        let stream = watcher.stream
        remove(watcher)
        enqueue(WatchResponse(headerRevision: revision, watchID: watcher.id, canceled: true,
                              compactRevision: compactedRevision), on: stream, for: nil)
    }

    /// Answers each pending stream progress request whose watchers are all synced (etcd 3.5's
    /// `RequestProgressAll`): then every event up to the hub's revision is already queued before the answer.
    private func answerProgressRequests() {
        guard !streamsAwaitingProgress.isEmpty else { return }
        for id in streamsAwaitingProgress {
            guard let stream = streams[id] else {
                streamsAwaitingProgress.remove(id)
                continue
            }
            let ready = stream.watchers.values.allSatisfy { $0.isSynced && revision >= $0.startRevision - 1 }
            guard ready else { continue }
            streamsAwaitingProgress.remove(id)
            // etcd sends nothing for a stream without watchers.
            if !stream.watchers.isEmpty {
                enqueue(WatchResponse(headerRevision: revision, watchID: WatchResponse.invalidWatchID),
                        on: stream, for: nil, control: true)
            }
        }
    }
}

// MARK: Internal state

/// One watcher. Only touched with the hub's lock held.
final class Watcher {
    let stream: StreamState
    let id: Int64
    let range: KeyRange
    /// The first revision the watcher wants (its request's, or the next one for "now").
    let startRevision: Revision
    let filters: [WatchFilter]
    let prevKv: Bool
    let fragment: Bool
    let progressNotify: Bool
    /// Every wanted event below this revision has been queued.
    var nextRevision: Revision
    var isSynced = false
    var isRemoved = false
    var bufferedEvents = 0
    var bufferedBytes = 0
    var bufferedResponses = 0
    var sentEventsSinceTick = false

    init(stream: StreamState, id: Int64, range: KeyRange, startRevision: Revision,
         request: WatchCreateRequest) {
        self.stream = stream
        self.id = id
        self.range = range
        self.startRevision = startRevision
        self.filters = request.filters
        self.prevKv = request.prevKv
        self.fragment = request.fragment
        self.progressNotify = request.progressNotify
        self.nextRevision = startRevision
    }

    /// Applies the filters and drops `prevKv` unless asked for.
    func shape(_ events: [Event]) -> [Event] {
        var result: [Event] = []
        result.reserveCapacity(events.count)
        for var event in events where !filters.contains(where: { $0.drops(event) }) {
            if !prevKv { event.prevKv = nil }
            result.append(event)
        }
        return result
    }
}

/// One revision's events as published, with what watchers without filters get, computed at most once.
final class RevisionBatch {
    let events: [Event]
    private(set) lazy var bytes = events.reduce(0) { $0 + WatchEncodedSize.event($1) }
    private(set) lazy var withoutPrevKv: [Event] = events.map { event in
        var event = event
        event.prevKv = nil
        return event
    }
    private(set) lazy var bytesWithoutPrevKv = withoutPrevKv.reduce(0) { $0 + WatchEncodedSize.event($1) }

    init(_ events: [Event]) {
        self.events = events
    }
}

struct QueuedResponse {
    var response: WatchResponse
    /// The watcher whose buffer this response counts against.
    var watcher: Watcher?
    var bytes: Int
    var isControl: Bool
}

/// A FIFO with amortized O(1) removal at the front.
struct ResponseQueue {
    private var items: [QueuedResponse] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }
    var count: Int { items.count - head }

    mutating func append(_ item: QueuedResponse) { items.append(item) }

    mutating func popFirst() -> QueuedResponse? {
        guard head < items.count else { return nil }
        let item = items[head]
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024, head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }

    mutating func removeAll() {
        items = []
        head = 0
    }
}

/// One stream's watchers and response queue. Only touched with the hub's lock held.
final class StreamState {
    let id: UInt64
    var watchers: [Int64: Watcher] = [:]
    var nextWatchID: Int64 = 0
    var queue = ResponseQueue()
    /// Control responses (created, canceled, progress) queued and not yet read.
    var controlBacklog = 0
    var closed = false
    var consumer: CheckedContinuation<WatchResponse?, Never>?
    var controlWaiters: [CheckedContinuation<Void, Never>] = []

    init(id: UInt64) { self.id = id }
}
