import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import RaftKV
import Synchronization

/// Carries this member's Raft messages to its peers on Raft streams (``PeerStreamWire``), and makes the gRPC calls
/// `Forward` and `ClusterInfo`.
///
/// ``send(_:)`` only queues: each peer has a bounded queue, and when it is full the oldest message goes (Raft
/// retransmits what matters; a stale heartbeat is worth less than a fresh one). ``run()`` drives one sender per
/// peer, created when the first message for it arrives: the sender keeps one Raft stream connected, and the
/// stream's event loop writes frames of several queued messages as soon as they are queued (no task in between).
/// When the stream fails the sender waits (exponential backoff) and asks `resolve` again, so a member whose peer
/// URL changed is found at its new address and a member removed from the cluster (`resolve` returns nil, or
/// ``removePeer(_:)``) loses its sender.
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
        var streamLiveness = PeerStreamWire.Liveness.standard

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
    private let streamTLSContexts = Mutex<[TLSFiles: NIOSSLContext]>([:])
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

    /// Why a Raft stream ended, as its sender learned it.
    enum StreamEnding: Sendable {
        case closed
        case addressChanged
        case refused(PeerStreamWire.Refusal)
        case failed(String)
    }

    /// One peer's sender: a gRPC client per address (for ``forward(to:_:timeout:)``), and a Raft stream at a
    /// time to that address, with backoff between failures.
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
                    let failure: String
                    switch await stream(link, to: address) {
                    case .closed:
                        return
                    case .addressChanged:
                        logger.info("member \(PeerRPC.hex(link.id)) moved from \(address): reconnecting")
                        return
                    case .refused(let refusal):
                        if refusal.code == .permissionDenied && refusal.message.contains(PeerRPC.memberRemovedMessage) {
                            removalHandler.withLock { $0 }?()
                        }
                        failure = "refused: \(refusal.code): \(refusal.message)"
                    case .failed(let description):
                        failure = description
                    }
                    guard !Task.isCancelled && !link.isClosed else { return }
                    // A stream that lived a while failed afresh; only quick failures in a row back off further.
                    if started.duration(to: .now) >= options.maxBackoff { backoff = options.initialBackoff }
                    link.reportFailure("stream to member \(PeerRPC.hex(link.id)) at \(address) failed: \(failure)")
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, options.maxBackoff)
                    if resolve(link.id) != address { return }
                }
            }
        }
        links.withLock { table in
            if table.byPeer[link.id] === link { table.byPeer[link.id] = nil }
        }
        link.close()
    }

    /// One Raft stream: connects, then writes frames from the event loop whenever messages are queued and the
    /// connection can take them, until the link closes, the peer's address changes or the connection fails.
    private func stream(_ link: PeerLink, to address: PeerAddress) async -> StreamEnding {
        let ending = StreamEndingBox()
        let channel: any Channel
        do {
            let tls = try address.tls.map(streamTLSContext)
            let header = PeerStreamSender.Header(clusterID: clusterID, from: localID, to: link.id)
            let isCurrent: @Sendable () -> Bool = { [resolve] in resolve(link.id) == address }
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(5))
                .channelInitializer { [options] channel in
                    channel.eventLoop.makeCompletedFuture {
                        let pipeline = channel.pipeline.syncOperations
                        if let tls {
                            try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: nil))
                        }
                        try pipeline.addHandler(options.streamLiveness.idleStateHandler())
                        try pipeline.addHandler(ByteToMessageHandler(
                            PeerStreamWire.FrameDecoder(maxFrameBytes: PeerStreamWire.maxReplyFrameBytes)))
                        try pipeline.addHandler(PeerStreamSender(link: link, header: header, isCurrent: isCurrent,
                                                                 frameBudgetBytes: options.frameBudgetBytes,
                                                                 silenceLimit: options.streamLiveness.silenceLimit,
                                                                 ending: ending))
                    }
                }
                .connect(host: address.host, port: address.port)
                .get()
        } catch {
            return .failed("\(error)")
        }
        await withTaskCancellationHandler {
            try? await channel.closeFuture.get()
        } onCancel: {
            channel.close(promise: nil)
        }
        return ending.ending ?? .failed("the connection closed")
    }

    private func streamTLSContext(_ files: TLSFiles) throws -> NIOSSLContext {
        if let known = streamTLSContexts.withLock({ $0[files] }) { return known }
        let context = try files.peerStreamClientContext()
        streamTLSContexts.withLock { $0[files] = context }
        return context
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
}

/// One peer's queue, its current gRPC client and Raft stream, and the scheduling of the stream's writes.
final class PeerLink: Sendable {
    let id: NodeID
    private let options: PeerTransport.Options
    private let logger: Logger
    private let state = Mutex(State())

    /// The connected Raft stream: its channel, and what writes queued messages to it on the channel's loop.
    private struct Stream {
        var channel: any Channel
        var drain: @Sendable () -> Void
    }

    private struct State {
        var queue = MessageQueue()
        var closed = false
        var droppedTotal: UInt64 = 0
        var droppedSinceLog = 0
        var lastDropLog: ContinuousClock.Instant?
        /// Whether the last attempt failed, so that a failing peer is reported once, not on every retry.
        var failing = false
        var client: (address: PeerAddress, client: GRPCClient<HTTP2ClientTransport.Posix>)?
        var stream: Stream?
        /// Whether a drain is on its way to the stream's loop, so that a burst of sends schedules one.
        var drainScheduled = false
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
        let (report, stream): ((dropped: Int, queued: Int, bytes: Int)?, Stream?) = state.withLock { state in
            guard !state.closed else { return (nil, nil) }
            var stream: Stream?
            if !state.drainScheduled, let current = state.stream {
                state.drainScheduled = true
                stream = current
            }
            var dropped = 0
            for message in messages {
                state.queue.append(message)
                while state.queue.count > options.maxQueuedMessagesPerPeer
                        || (state.queue.bytes > options.maxQueuedBytesPerPeer && state.queue.count > 1) {
                    _ = state.queue.removeFirst()
                    dropped += 1
                }
            }
            guard dropped > 0 else { return (nil, stream) }
            state.droppedTotal += UInt64(dropped)
            state.droppedSinceLog += dropped
            let now = ContinuousClock.now
            if let last = state.lastDropLog, last.duration(to: now) < .seconds(1) { return (nil, stream) }
            state.lastDropLog = now
            defer { state.droppedSinceLog = 0 }
            return ((state.droppedSinceLog, state.queue.count, state.queue.bytes), stream)
        }
        if let stream {
            stream.channel.eventLoop.execute(stream.drain)
        }
        if let report {
            logger.warning("""
                dropped \(report.dropped) messages to member \(PeerRPC.hex(id)): its queue is full \
                (\(report.queued) messages, \(report.bytes) bytes)
                """)
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
        let stream = state.withLock { state in
            state.closed = true
            state.queue = MessageQueue()
            return state.stream
        }
        stream?.channel.close(promise: nil)
    }

    /// Makes `channel` the link's Raft stream; `drain` runs on its loop whenever messages are queued. Queued
    /// messages are drained at once.
    func attachStream(_ channel: any Channel, drain: @escaping @Sendable () -> Void) {
        let closed = state.withLock { state in
            state.stream = Stream(channel: channel, drain: drain)
            state.drainScheduled = true
            return state.closed
        }
        if closed {
            channel.close(promise: nil)
        } else {
            channel.eventLoop.execute(drain)
        }
    }

    func detachStream(_ channel: any Channel) {
        state.withLock { state in
            if state.stream?.channel === channel {
                state.stream = nil
                state.drainScheduled = false
            }
        }
    }

    /// Called by a drain before it takes messages: sends queued after this schedule another.
    func beginDrain() {
        state.withLock { $0.drainScheduled = false }
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

/// Why a Raft stream ended: the first reason recorded wins.
final class StreamEndingBox: Sendable {
    private let value = Mutex<PeerTransport.StreamEnding?>(nil)

    func record(_ ending: PeerTransport.StreamEnding) {
        value.withLock { if $0 == nil { $0 = ending } }
    }

    var ending: PeerTransport.StreamEnding? { value.withLock { $0 } }
}

/// The sending end of one Raft stream, on its channel's loop: writes the preface, then frames of queued
/// messages while the connection can take them (so a slow peer's backlog stays in the bounded queue, which drops
/// its oldest), keep-alives when idle; reads the receiver's keep-alives and its refusal.
final class PeerStreamSender: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Header: Sendable {
        var clusterID: UInt64
        var from: NodeID
        var to: NodeID
    }

    private let link: PeerLink
    private let header: Header
    private let isCurrent: @Sendable () -> Bool
    private let frameBudgetBytes: Int
    private let silenceLimit: TimeAmount
    private let ending: StreamEndingBox
    private var context: ChannelHandlerContext?

    /// - Parameter isCurrent: whether the address this stream goes to is still the peer's.
    init(link: PeerLink, header: Header, isCurrent: @escaping @Sendable () -> Bool, frameBudgetBytes: Int,
         silenceLimit: TimeAmount, ending: StreamEndingBox) {
        self.link = link
        self.header = header
        self.isCurrent = isCurrent
        self.frameBudgetBytes = frameBudgetBytes
        self.silenceLimit = silenceLimit
        self.ending = ending
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: PeerStreamWire.preface)), promise: nil)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        link.attachStream(context.channel) { bound.value.drain() }
        context.flush()
        context.fireChannelActive()
    }

    private func drain() {
        link.beginDrain()
        guard let context, context.channel.isActive else { return }
        guard isCurrent() else {
            ending.record(.addressChanged)
            context.close(promise: nil)
            return
        }
        var wrote = false
        while context.channel.isWritable {
            let batch = link.takeBatch(budgetBytes: frameBudgetBytes)
            if batch.isEmpty { break }
            var buffer = context.channel.allocator.buffer(capacity: batch.reduce(16) { $0 + $1.sizeBytes + 16 })
            PeerStreamWire.writeFrame(clusterID: header.clusterID, from: header.from, to: header.to, messages: batch,
                                      into: &buffer)
            context.write(wrapOutboundOut(buffer), promise: nil)
            wrote = true
        }
        guard wrote else { return }
        context.flush()
        link.reportSuccess()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { drain() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        link.detachStream(context.channel)
        if link.isClosed { ending.record(.closed) }
        ending.record(.failed("the connection closed"))
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        // Keep-alives are empty; anything else is the receiver's refusal, its last word.
        guard frame.readableBytes > 0 else { return }
        ending.record(.refused(PeerStreamWire.Refusal.read(frame)))
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case IdleStateHandler.IdleStateEvent.write:
            PeerStreamWire.sendKeepalive(on: context)
        case IdleStateHandler.IdleStateEvent.read:
            ending.record(.failed("nothing heard from the member for \(silenceLimit)"))
            context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        ending.record(.failed("\(error)"))
        context.close(promise: nil)
    }
}
