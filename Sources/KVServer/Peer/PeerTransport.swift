import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import RaftKV
import Synchronization

/// Carries this member's Raft messages to its peers over gRPC (`raftkv.Peer/Stream`), and makes `Forward` and
/// `ClusterInfo` calls.
///
/// ``send(_:)`` only queues: each peer has a bounded queue, and when it is full the oldest message goes (Raft
/// retransmits what matters; a stale heartbeat is worth less than a fresh one). ``run()`` drives one sender per
/// peer, created when the first message for it arrives: the sender keeps one `Stream` RPC open and writes frames
/// of several queued messages. When the stream fails it waits (exponential backoff) and asks `resolve` again, so
/// a member whose peer URL changed is found at its new address and a member removed from the cluster (`resolve`
/// returns nil, or ``removePeer(_:)``) loses its sender.
final class PeerTransport: RaftTransport {
    struct Options: Sendable {
        /// Per-peer queue bounds; beyond either the oldest messages are dropped.
        var maxQueuedMessagesPerPeer = 4096
        /// Appends and snapshot chunks are up to 1 MiB each, so the message bound alone could hold gigabytes.
        var maxQueuedBytesPerPeer = 64 << 20
        var frameBudgetBytes = PeerLimits.frameBudgetBytes
        var initialBackoff: Duration = .milliseconds(50)
        var maxBackoff: Duration = .seconds(1)
        /// Timeout of ``PeerTransport/forward(to:_:)`` calls made without an explicit one.
        var forwardTimeout: Duration = .seconds(10)

        init() {}
    }

    /// What happened to one peer's messages so far.
    struct PeerStatistics: Sendable, Equatable {
        var queuedMessages: Int
        var droppedMessages: UInt64
    }

    let clusterID: UInt64
    let localID: NodeID
    let options: Options
    private let resolve: @Sendable (NodeID) -> PeerAddress?
    private let logger: Logger
    private let links = Mutex<LinkTable>(LinkTable())
    private let removalHandler = Mutex<(@Sendable () -> Void)?>(nil)
    private let newLinks: AsyncStream<PeerLink>
    private let newLinksContinuation: AsyncStream<PeerLink>.Continuation

    private struct LinkTable {
        var byPeer: [NodeID: PeerLink] = [:]
        var running = false
        var stopped = false
        /// Messages for members `resolve` does not know.
        var droppedUnknown: UInt64 = 0
    }

    /// - Parameters:
    ///   - resolve: the current peer address of a member, nil for members that are not (or no longer) in the
    ///     cluster. Called from ``send(_:)``, so it must not block.
    convenience init(clusterID: UInt64, localID: NodeID, resolve: @escaping @Sendable (NodeID) -> PeerAddress?,
                     logger: Logger, maxQueuedMessagesPerPeer: Int = 4096) {
        var options = Options()
        options.maxQueuedMessagesPerPeer = maxQueuedMessagesPerPeer
        self.init(clusterID: clusterID, localID: localID, resolve: resolve, logger: logger, options: options)
    }

    init(clusterID: UInt64, localID: NodeID, resolve: @escaping @Sendable (NodeID) -> PeerAddress?,
         logger: Logger, options: Options) {
        precondition(localID != 0, "member ID 0 is reserved for 'none'")
        precondition(options.maxQueuedMessagesPerPeer > 0 && options.maxQueuedBytesPerPeer > 0, "queues need room")
        precondition(options.initialBackoff > .zero && options.maxBackoff >= options.initialBackoff, "backoff range")
        self.clusterID = clusterID
        self.localID = localID
        self.resolve = resolve
        self.logger = logger
        self.options = options
        // Unbounded, but it holds at most one element per peer (a link is announced once, when created).
        (newLinks, newLinksContinuation) = AsyncStream.makeStream(of: PeerLink.self)
    }

    // MARK: - Raft messages

    /// Queues `messages` for their receivers; never blocks. Messages for members `resolve` does not know are
    /// dropped, as are all messages once ``run()`` has ended.
    func send(_ messages: [Message]) {
        var byPeer: [NodeID: [Message]] = [:]
        for message in messages {
            guard message.to != localID else {
                logger.debug("dropped a message addressed to this member itself")
                continue
            }
            byPeer[message.to, default: []].append(message)
        }
        for (peer, batch) in byPeer {
            if let link = link(for: peer) {
                link.enqueue(batch)
            } else {
                links.withLock { $0.droppedUnknown += UInt64(batch.count) }
            }
        }
    }

    /// Stops sending to `peer` (removed from the cluster) and drops what is queued for it. A later message for it
    /// starts a new sender if `resolve` still knows it.
    func removePeer(_ peer: NodeID) {
        links.withLock { $0.byPeer.removeValue(forKey: peer) }?.close()
    }

    func statistics(for peer: NodeID) -> PeerStatistics? {
        links.withLock { $0.byPeer[peer] }?.statistics
    }

    /// Messages dropped because their receiver had no address, or because ``run()`` had ended.
    var droppedForUnknownPeers: UInt64 {
        links.withLock { $0.droppedUnknown }
    }

    private func link(for peer: NodeID) -> PeerLink? {
        if let link = links.withLock({ $0.stopped ? nil : $0.byPeer[peer] }) { return link }
        // Outside the lock: `resolve` belongs to the caller and may take its own locks.
        guard resolve(peer) != nil else { return nil }
        let (link, created) = links.withLock { table -> (PeerLink?, Bool) in
            if table.stopped { return (nil, false) }
            if let existing = table.byPeer[peer] { return (existing, false) }
            let link = PeerLink(id: peer, options: options, logger: logger)
            table.byPeer[peer] = link
            return (link, true)
        }
        if created, let link {
            newLinksContinuation.yield(link)
        }
        return link
    }

    /// Runs the senders until the task is cancelled; call it once. Messages sent before it starts wait in their
    /// queues.
    func run() async {
        links.withLock { table in
            precondition(!table.running && !table.stopped, "PeerTransport.run() is called once")
            table.running = true
        }
        await withDiscardingTaskGroup { group in
            // Ends when the task is cancelled; the group's senders are cancelled with it.
            for await link in newLinks {
                group.addTask { await self.runSender(link) }
            }
        }
        let remaining = links.withLock { table in
            table.stopped = true
            defer { table.byPeer.removeAll() }
            return Array(table.byPeer.values)
        }
        for link in remaining { link.close() }
    }

    private enum StreamEnding: Sendable {
        case closed
        case addressChanged
        case failed(String)
    }

    /// Where the request producer records why it stopped, for the sender to read once the RPC is over.
    private final class EndingBox: Sendable {
        let value = Mutex<StreamEnding?>(nil)
    }

    /// One peer's sender: a client per address, a `Stream` RPC at a time on it, backoff between failures.
    private func runSender(_ link: PeerLink) async {
        var backoff = options.initialBackoff
        senderLoop: while !Task.isCancelled && !link.isClosed {
            guard let address = resolve(link.id) else {
                logger.info("member \(PeerRPC.hex(link.id)) has no peer address any more: stopped sending to it")
                break senderLoop
            }
            let client: GRPCClient<HTTP2ClientTransport.Posix>
            do {
                client = try Self.makeClient(to: address)
            } catch {
                logger.warning("cannot dial member \(PeerRPC.hex(link.id)) at \(address): \(error)")
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, options.maxBackoff)
                continue senderLoop
            }
            await withDiscardingTaskGroup { group in
                group.addTask { try? await client.runConnections() }
                link.attach(client, at: address)
                defer {
                    link.detach(client)
                    client.beginGracefulShutdown()
                }
                while !Task.isCancelled && !link.isClosed {
                    let started = ContinuousClock.now
                    switch await stream(link, over: client, to: address) {
                    case .closed:
                        return
                    case .addressChanged:
                        logger.info("member \(PeerRPC.hex(link.id)) moved from \(address): reconnecting")
                        return
                    case .failed(let error):
                        guard !Task.isCancelled && !link.isClosed else { return }
                        // A stream that lived a while failed afresh; only quick failures in a row back off further.
                        if started.duration(to: .now) >= options.maxBackoff { backoff = options.initialBackoff }
                        link.reportFailure("stream to member \(PeerRPC.hex(link.id)) at \(address) failed: \(error)")
                        try? await Task.sleep(for: backoff)
                        backoff = min(backoff * 2, options.maxBackoff)
                        if resolve(link.id) != address { return }
                    }
                }
            }
        }
        links.withLock { table in
            if table.byPeer[link.id] === link { table.byPeer[link.id] = nil }
        }
        link.close()
    }

    /// One `Stream` RPC: writes frames until the link closes, the peer's address changes or the RPC fails.
    private func stream(_ link: PeerLink, over client: GRPCClient<HTTP2ClientTransport.Posix>,
                        to address: PeerAddress) async -> StreamEnding {
        let ending = EndingBox()
        let request = StreamingClientRequest(of: [UInt8].self) { [clusterID, localID, resolve, options] writer in
            while await link.waitForMessages() {
                guard resolve(link.id) == address else {
                    ending.value.withLock { $0 = .addressChanged }
                    return
                }
                let batch = link.takeBatch(budgetBytes: options.frameBudgetBytes)
                guard !batch.isEmpty else { continue }
                try await writer.write(PeerFrame.encode(clusterID: clusterID, from: localID, to: link.id, messages: batch))
                link.reportSuccess()
            }
            if link.isClosed { ending.value.withLock { $0 = .closed } }
        }
        do {
            try await client.clientStreaming(request: request, descriptor: PeerRPC.stream, serializer: RawBytesCodec(),
                                             deserializer: RawBytesCodec(), options: .peer()) { response in
                _ = try response.message
            }
        } catch {
            if let refusal = error as? RPCError, refusal.code == .permissionDenied,
               refusal.message.contains(PeerRPC.memberRemovedMessage) {
                removalHandler.withLock { $0 }?()
            }
            return ending.value.withLock { $0 } ?? .failed(describe(error))
        }
        return ending.value.withLock { $0 } ?? .failed("the stream ended")
    }

    /// Called when a peer says this member was removed from the cluster (etcd then stops the member).
    func onRemovedFromCluster(_ handler: @escaping @Sendable () -> Void) {
        removalHandler.withLock { $0 = handler }
    }

    // MARK: - Forward and ClusterInfo

    /// Sends a client request to `member` (the leader) and returns its answer. An ``RPCError`` the member's
    /// handler threw arrives unchanged.
    func forward(to member: NodeID, _ request: [UInt8], timeout: Duration? = nil) async throws -> [UInt8] {
        guard let address = resolve(member) else {
            throw RPCError(code: .unavailable, message: "rafthttp: member \(PeerRPC.hex(member)) has no peer address")
        }
        let timeout = timeout ?? options.forwardTimeout
        if let client = links.withLock({ $0.byPeer[member] })?.client(at: address) {
            do {
                return try await Self.unary(PeerRPC.forward, request, via: client, timeout: timeout)
            } catch let error as RuntimeError where error.code == .clientIsStopped {
                // The sender replaced its client meanwhile; a client of our own will do.
            }
        }
        return try await withGRPCClient(transport: try Self.makeClientTransport(to: address)) { client in
            try await Self.unary(PeerRPC.forward, request, via: client, timeout: timeout)
        }
    }

    /// Asks the member at `address` for the cluster ID and member list (what a joining member needs).
    static func clusterInfo(at address: PeerAddress, timeout: Duration = .seconds(5)) async throws -> [UInt8] {
        try await withGRPCClient(transport: try makeClientTransport(to: address)) { client in
            try await unary(PeerRPC.clusterInfo, [], via: client, timeout: timeout)
        }
    }

    private static func unary(_ method: MethodDescriptor, _ request: [UInt8],
                              via client: GRPCClient<HTTP2ClientTransport.Posix>, timeout: Duration) async throws -> [UInt8] {
        try await client.unary(request: ClientRequest(message: request), descriptor: method, serializer: RawBytesCodec(),
                               deserializer: RawBytesCodec(), options: .peer(timeout: timeout)) { response in
            try response.message
        }
    }

    // MARK: - Clients

    static func makeClientTransport(to address: PeerAddress) throws -> HTTP2ClientTransport.Posix {
        try HTTP2ClientTransport.Posix(
            target: address.clientTarget,
            transportSecurity: address.tls?.peerClientSecurity ?? .plaintext,
            config: .defaults { config in
                // gRPC's default reconnect backoff grows to two minutes: far too slow for a member that restarts.
                config.backoff = .init(initial: .milliseconds(50), max: .seconds(1), multiplier: 2, jitter: 0.2)
                // A peer that vanished without closing its connections is found by pings, not by TCP timeouts.
                config.connection.keepalive = .init(time: .seconds(10), timeout: .seconds(5), allowWithoutCalls: true)
                // The sender writes a batch of Raft messages per frame itself; coalescing only delays each flush.
                config.connection.flushCoalescing = nil
            })
    }

    private static func makeClient(to address: PeerAddress) throws -> GRPCClient<HTTP2ClientTransport.Posix> {
        GRPCClient(transport: try makeClientTransport(to: address))
    }

    private func describe(_ error: any Error) -> String {
        if let error = error as? RPCError { return "\(error.code): \(error.message)" }
        return "\(error)"
    }
}

/// One peer's queue, its current client, and the wakeup of its sender.
final class PeerLink: Sendable {
    let id: NodeID
    private let options: PeerTransport.Options
    private let logger: Logger
    private let state = Mutex(State())
    private let wakeup = WakeSignal()

    private struct State {
        var queue = MessageQueue()
        var closed = false
        var droppedTotal: UInt64 = 0
        var droppedSinceLog = 0
        var lastDropLog: ContinuousClock.Instant?
        /// Whether the last attempt failed, so that a failing peer is reported once, not on every retry.
        var failing = false
        var client: (address: PeerAddress, client: GRPCClient<HTTP2ClientTransport.Posix>)?
    }

    init(id: NodeID, options: PeerTransport.Options, logger: Logger) {
        self.id = id
        self.options = options
        self.logger = logger
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    var statistics: PeerTransport.PeerStatistics {
        state.withLock { PeerTransport.PeerStatistics(queuedMessages: $0.queue.count, droppedMessages: $0.droppedTotal) }
    }

    func enqueue(_ messages: [Message]) {
        let report: (dropped: Int, queued: Int, bytes: Int)? = state.withLock { state in
            guard !state.closed else { return nil }
            var dropped = 0
            for message in messages {
                state.queue.append(message)
                while state.queue.count > options.maxQueuedMessagesPerPeer
                        || (state.queue.bytes > options.maxQueuedBytesPerPeer && state.queue.count > 1) {
                    _ = state.queue.removeFirst()
                    dropped += 1
                }
            }
            guard dropped > 0 else { return nil }
            state.droppedTotal += UInt64(dropped)
            state.droppedSinceLog += dropped
            let now = ContinuousClock.now
            if let last = state.lastDropLog, last.duration(to: now) < .seconds(1) { return nil }
            state.lastDropLog = now
            defer { state.droppedSinceLog = 0 }
            return (state.droppedSinceLog, state.queue.count, state.queue.bytes)
        }
        wakeup.signal()
        if let report {
            logger.warning("""
                dropped \(report.dropped) messages to member \(PeerRPC.hex(id)): its queue is full \
                (\(report.queued) messages, \(report.bytes) bytes)
                """)
        }
    }

    /// Waits until messages are queued; false when the link closed or the task was cancelled.
    func waitForMessages() async -> Bool {
        while true {
            let (closed, empty) = state.withLock { ($0.closed, $0.queue.count == 0) }
            if closed || Task.isCancelled { return false }
            if !empty { return true }
            await wakeup.wait()
        }
    }

    /// Takes queued messages up to `budgetBytes`, and at least one.
    func takeBatch(budgetBytes: Int) -> [Message] {
        state.withLock { state in
            var batch: [Message] = []
            var bytes = 0
            while let next = state.queue.first, batch.isEmpty || bytes + next.sizeBytes <= budgetBytes {
                bytes += next.sizeBytes
                batch.append(state.queue.removeFirst())
            }
            return batch
        }
    }

    func close() {
        state.withLock { state in
            state.closed = true
            state.queue = MessageQueue()
        }
        wakeup.signal()
    }

    func attach(_ client: GRPCClient<HTTP2ClientTransport.Posix>, at address: PeerAddress) {
        state.withLock { $0.client = (address, client) }
    }

    func detach(_ client: GRPCClient<HTTP2ClientTransport.Posix>) {
        state.withLock { state in
            if state.client?.client === client { state.client = nil }
        }
    }

    func client(at address: PeerAddress) -> GRPCClient<HTTP2ClientTransport.Posix>? {
        state.withLock { state in
            guard let current = state.client, current.address == address else { return nil }
            return current.client
        }
    }

    func reportFailure(_ description: String) {
        let first = state.withLock { state in
            defer { state.failing = true }
            return !state.failing
        }
        if first {
            logger.warning("\(description) (retrying with backoff)")
        } else {
            logger.debug("\(description)")
        }
    }

    func reportSuccess() {
        let recovered = state.withLock { state in
            defer { state.failing = false }
            return state.failing
        }
        if recovered {
            logger.info("stream to member \(PeerRPC.hex(id)) is up again")
        }
    }
}

/// A FIFO of messages with their total size; removal from the front is amortized O(1).
struct MessageQueue {
    private var storage: [Message] = []
    private var head = 0
    private(set) var bytes = 0

    var count: Int { storage.count - head }
    var first: Message? { head < storage.count ? storage[head] : nil }

    mutating func append(_ message: Message) {
        storage.append(message)
        bytes += message.sizeBytes
    }

    mutating func removeFirst() -> Message {
        precondition(head < storage.count, "removeFirst on an empty queue")
        let message = storage[head]
        head += 1
        bytes -= message.sizeBytes
        // Reclaim the consumed prefix once it is most of the storage, so that memory stays proportional to count.
        if head >= 64 && head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return message
    }
}

/// Wakes one waiting task; a signal sent while nobody waits is kept for the next wait.
final class WakeSignal: Sendable {
    private let state = Mutex<(signalled: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.signalled = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Returns on a signal or when the task is cancelled.
    func wait() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.signalled || Task.isCancelled {
                        state.signalled = false
                        return true
                    }
                    precondition(state.waiter == nil, "a WakeSignal has one waiter at a time")
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}
