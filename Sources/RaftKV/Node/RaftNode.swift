import Foundation
import Logging
import Synchronization

/// Carries Raft messages to other members. Delivery is best effort: Raft tolerates loss, duplication and
/// reordering, so an implementation may drop messages when a peer is slow or unreachable rather than queue
/// without bound.
public protocol RaftTransport: Sendable {
    func send(_ messages: [Message])
}

/// Why a request to the node failed.
public enum RaftNodeError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The core refused the request.
    case rejected(RaftError)
    /// The entry proposed was replaced by a new leader's log before it committed.
    case leaderChanged
    /// No answer within the request timeout.
    case timedOut
    /// The node stopped (shut down, removed from the cluster, or failed to persist).
    case stopped(String)

    public var description: String {
        switch self {
        case .rejected(let error): return error.description
        case .leaderChanged: return "leader changed"
        case .timedOut: return "request timed out"
        case .stopped(let why): return "raft node stopped: \(why)"
        }
    }
}

/// Tunables of the driver.
public struct RaftNodeOptions: Sendable {
    public var tickInterval: Duration = .milliseconds(100)
    /// Requests not answered within this many ticks fail with ``RaftNodeError/timedOut``.
    public var requestTimeoutTicks: Int = 70
    /// Take a state machine snapshot and compact the log every this many applied entries (at the least; see
    /// ``snapshotLogToStateRatio``).
    public var snapshotEveryEntries: UInt64 = 10_000
    /// A snapshot copies the whole state, so taking one every fixed number of entries writes O(N²) bytes while
    /// the state grows to N. A snapshot is therefore also held back until the entries applied since the last one
    /// add up to at least this fraction of the state's size (``StateMachine/stateSizeBytes``): snapshots then
    /// write at most 1/ratio bytes per byte of log, and the log holds at most about ratio × the state before it is
    /// compacted. 0 snapshots on the entry count alone.
    public var snapshotLogToStateRatio: Double = 1.0
    /// …but never lets the log since the last snapshot grow past this many bytes: a restart reads that much of the
    /// log again (to rebuild the membership), so it bounds restart time for a large state, at the price of
    /// snapshots writing up to state / this bytes per byte of log once the state outgrows it.
    public var snapshotMaxLogBytes: Int64 = 128 << 20
    /// Entries kept below a snapshot so that slightly lagging followers catch up without one.
    public var snapshotRetainEntries: UInt64 = 5_000
    /// Bound on messages waiting in the inbox; beyond it new messages are dropped (Raft retransmits).
    public var maxInboxMessages: Int = 10_000
    /// Bound on the bytes of committed entries handed to the applier and not yet applied; beyond it the loop waits.
    public var maxUnappliedBytes: Int = 64 << 20

    public init() {}
}

/// The node driver: runs the pure ``RaftCore`` against real time, storage, a transport and a state machine.
///
/// Every input (tick, message, proposal) is stepped into the core and followed at once by carrying out the
/// resulting ``Ready`` in its documented order — persist, send, apply, advance — without suspending in between,
/// so the actor's state and the disk never disagree across an await. Applying means handing the committed entries
/// to the ``Applier``, which applies them in order on its own thread while the loop goes on (see there for when
/// the loop waits for it).
public actor RaftNode {
    public nonisolated let id: NodeID
    private var core: RaftCore
    private let storage: any DurableLogStorage
    private let stateMachine: any StateMachine
    private let transport: any RaftTransport
    private let options: RaftNodeOptions
    private let logger: Logger
    private let inbox: Inbox
    private let applier: Applier
    /// The last entry handed to the applier (the state machine's applied index trails it).
    private var handedOffIndex: LogIndex
    /// Requests only step the core and signal here; the run loop then carries out one Ready for all of them, so
    /// concurrent proposals share one transaction and one fsync (group commit).
    private let flushes: AsyncStream<Void>
    private let flushContinuation: AsyncStream<Void>.Continuation

    private var ticks = 0
    private var nextRequestID: UInt64 = 1
    private var proposals: [LogIndex: ProposalWaiter] = [:]
    private var reads: [UInt64: ReadWaiter] = [:]
    /// Reads whose index is known, waiting for the state machine to reach it, keyed by request ID.
    private var readsAwaitingApply: [(index: LogIndex, waiter: ReadWaiter)] = []
    private var failure: RaftNodeError?
    private var wasMember = false
    private var lastLeader: NodeID = 0
    /// A background snapshot is being written (at most one at a time).
    private var snapshotInProgress = false
    /// The index of the last membership change applied: a background snapshot taken below it cannot be given the
    /// current membership, so it is dropped.
    private var lastConfigChangeApplied: LogIndex = 0
    /// Bytes of entry data applied since the newest snapshot (counted from the log at start).
    private var bytesAppliedSinceSnapshot: Int64 = 0
    /// ratio × the state's size when last asked; the size (a query on the state machine) is asked again only once
    /// the log has caught up with it, not after every Ready.
    private var snapshotThresholdBytes: Double = 0

    private struct ProposalWaiter {
        var term: Term
        var deadlineTick: Int
        var continuation: CheckedContinuation<ApplyResult, any Error>
    }

    private struct ReadWaiter {
        var deadlineTick: Int
        var continuation: CheckedContinuation<Void, any Error>
    }

    /// Opens a node over `storage` and `stateMachine`, restoring the state machine from the stored snapshot when a
    /// crash left it behind. `bootstrap` is the initial membership of a new cluster (nil to join an existing one).
    public init(configuration: RaftConfiguration, storage: any DurableLogStorage, stateMachine: any StateMachine,
                transport: any RaftTransport, bootstrap: Membership?, options: RaftNodeOptions = RaftNodeOptions(),
                logger: Logger = Logger(label: "raft")) throws {
        if stateMachine.appliedIndex < storage.snapshotMetadata.index, let file = storage.snapshotFile {
            try stateMachine.restore(from: file, index: storage.snapshotMetadata.index)
        }
        var configuration = configuration
        configuration.appliedIndex = stateMachine.appliedIndex
        core = try RaftCore(configuration: configuration, storage: storage, bootstrap: bootstrap)
        id = configuration.id
        self.storage = storage
        self.stateMachine = stateMachine
        self.transport = transport
        self.options = options
        var logger = logger
        logger[metadataKey: "member"] = "\(String(configuration.id, radix: 16))"
        self.logger = logger
        inbox = Inbox(capacity: options.maxInboxMessages)
        (flushes, flushContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        applier = Applier(stateMachine: stateMachine, maxQueuedBytes: options.maxUnappliedBytes) { [flushContinuation] in
            // Reads waiting for the applied index, and applier failures, are handled on the node's next turn.
            flushContinuation.yield()
        }
        handedOffIndex = stateMachine.appliedIndex
        wasMember = core.membership.contains(configuration.id)
        let snapshotIndex = storage.snapshotMetadata.index
        if stateMachine.appliedIndex > snapshotIndex {
            bytesAppliedSinceSnapshot = storage.entryBytes(in: (snapshotIndex + 1)..<(stateMachine.appliedIndex + 1))
        }
    }

    /// Hands a message from a peer to this node; never blocks. Called by transports.
    public nonisolated func deliver(_ message: Message) {
        inbox.put(message)
    }

    /// Runs ticks and the inbox until cancelled or until the node fails.
    public func run() async throws {
        try processReadies()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [inbox] in
                for await _ in inbox.arrivals {
                    try await self.receiveInbox()
                }
            }
            group.addTask { [flushes] in
                for await _ in flushes {
                    try await self.flush()
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: self.options.tickInterval)
                    try await self.tick()
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// Stops the node: every waiting request fails.
    public func stop() {
        inbox.close()
        flushContinuation.finish()
        fail(with: .stopped("shut down"))
        // After this the state machine may be closed: nothing may still be applying.
        applier.stop()
    }

    // MARK: - Requests

    /// Proposes `data` and returns the state machine's result once the entry is applied here.
    public func propose(_ data: [UInt8]) async throws -> ApplyResult {
        try checkRunning()
        let index: LogIndex
        do { index = try core.propose(data) } catch { throw RaftNodeError.rejected(error) }
        let term = core.term
        return try await withCheckedThrowingContinuation { continuation in
            proposals[index] = ProposalWaiter(term: term, deadlineTick: ticks + options.requestTimeoutTicks, continuation: continuation)
            flushContinuation.yield()
        }
    }

    /// Proposes a membership change and returns once it is applied here.
    public func proposeConfigChange(_ change: ConfigChange) async throws {
        try checkRunning()
        let index: LogIndex
        do { index = try core.proposeConfigChange(change) } catch { throw RaftNodeError.rejected(error) }
        let term = core.term
        _ = try await withCheckedThrowingContinuation { continuation in
            proposals[index] = ProposalWaiter(term: term, deadlineTick: ticks + options.requestTimeoutTicks, continuation: continuation)
            flushContinuation.yield()
        }
    }

    /// Returns once this node's state machine reflects every write committed before the call: reads served
    /// after it are linearizable (ReadIndex). Concurrent calls share heartbeat rounds.
    public func linearizableBarrier() async throws {
        try checkRunning()
        let requestID = nextRequestID
        nextRequestID += 1
        do { try core.readIndex(requestID: requestID) } catch { throw RaftNodeError.rejected(error) }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            reads[requestID] = ReadWaiter(deadlineTick: ticks + options.requestTimeoutTicks, continuation: continuation)
            flushContinuation.yield()
        }
    }

    /// Asks the leader (this node) to hand leadership to `target`.
    public func transferLeadership(to target: NodeID) throws {
        try checkRunning()
        do { try core.transferLeadership(to: target) } catch { throw RaftNodeError.rejected(error) }
        try processReadies()
    }

    public struct Status: Sendable, Equatable {
        public var id: NodeID
        public var leader: NodeID
        public var term: Term
        public var role: Role
        public var commitIndex: LogIndex
        public var appliedIndex: LogIndex
        public var membership: Membership

        public init(id: NodeID, leader: NodeID, term: Term, role: Role, commitIndex: LogIndex, appliedIndex: LogIndex,
                    membership: Membership) {
            self.id = id
            self.leader = leader
            self.term = term
            self.role = role
            self.commitIndex = commitIndex
            self.appliedIndex = appliedIndex
            self.membership = membership
        }
    }

    public var status: Status {
        Status(id: id, leader: core.leader, term: core.term, role: core.role, commitIndex: core.commitIndex,
               appliedIndex: stateMachine.appliedIndex, membership: core.membership)
    }

    // MARK: - The loop

    private func checkRunning() throws {
        if let failure { throw failure }
    }

    /// Steps every message that arrived since the last turn, then carries out one Ready for all of them: a
    /// follower whose disk is slower than the appends arriving writes them in one transaction, not one each.
    private func receiveInbox() throws {
        let messages = inbox.takeAll()
        guard failure == nil, !messages.isEmpty else { return }
        for message in messages { core.step(message) }
        try processReadies()
    }

    private func flush() throws {
        guard failure == nil else { return }
        try processReadies()
        releaseReads()
    }

    private func tick() throws {
        guard failure == nil else { return }
        ticks += 1
        core.tick()
        expireRequests()
        try processReadies()
    }

    /// Carries out every pending Ready. Any storage or state machine error stops the node: continuing with
    /// state that could not be persisted would break the promises already made to peers.
    private func processReadies() throws {
        do {
            if let error = applier.failure { throw error }
            while failure == nil, let ready = core.ready() {
                try carryOut(ready)
            }
        } catch {
            logger.critical("stopping: \(error)")
            fail(with: .stopped("\(error)"))
            throw RaftNodeError.stopped("\(error)")
        }
    }

    private func carryOut(_ ready: Ready) throws {
        if !ready.earlyMessages.isEmpty { transport.send(ready.earlyMessages) }
        for chunk in ready.snapshotChunks { try storage.stageSnapshotChunk(chunk) }
        if let snapshot = ready.snapshot {
            // Restoring replaces the state the applier writes to.
            applier.drain()
            if let error = applier.failure { throw error }
            try storage.installStagedSnapshot(snapshot)
            try FailPoints.hit(.snapshotInstallBeforeRestore)
            guard let file = storage.snapshotFile else { preconditionFailure("an installed snapshot has a file") }
            try stateMachine.restore(from: file, index: snapshot.index)
            precondition(stateMachine.appliedIndex == snapshot.index, "state machine restored to \(stateMachine.appliedIndex), not \(snapshot.index)")
            logger.info("installed snapshot at \(snapshot.index) (term \(snapshot.term))")
            lastConfigChangeApplied = max(lastConfigChangeApplied, snapshot.index)
            handedOffIndex = snapshot.index
            bytesAppliedSinceSnapshot = 0
            snapshotThresholdBytes = 0
        }
        if ready.hardState != nil || !ready.entries.isEmpty {
            try storage.save(hardState: ready.hardState, entries: ready.entries, sync: ready.mustSync)
        }
        if !ready.messages.isEmpty { transport.send(ready.messages) }
        if !ready.committed.isEmpty {
            precondition(ready.committed.first!.index == handedOffIndex + 1,
                         "handing over \(ready.committed.first!.index) after \(handedOffIndex)")
            var waiters: [LogIndex: Applier.Waiter] = [:]
            for entry in ready.committed {
                guard let waiter = proposals.removeValue(forKey: entry.index) else { continue }
                if waiter.term == entry.term {
                    waiters[entry.index] = waiter.continuation
                } else {
                    waiter.continuation.resume(throwing: RaftNodeError.leaderChanged)
                }
            }
            applier.enqueue(ready.committed, waiters: waiters)
            handedOffIndex = ready.committed.last!.index
            bytesAppliedSinceSnapshot += ready.committed.reduce(0) { $0 + Int64($1.data.count) }
            if let change = ready.committed.last(where: { $0.kind == .configChange }) {
                lastConfigChangeApplied = change.index
                // The core takes the new membership at advance; the state machine's must have changed by then
                // (etcd's raft loop waits for conf-change applies the same way).
                applier.drain()
                if let error = applier.failure { throw error }
            }
        }
        if ready.leader != lastLeader {
            if lastLeader != 0 || ready.leader == 0 { failReads(.leaderChanged) }
            logger.info("leader is now \(String(ready.leader, radix: 16)) (term \(ready.term))")
            lastLeader = ready.leader
        }
        for state in ready.readStates {
            guard let waiter = reads.removeValue(forKey: state.requestID) else { continue }
            readsAwaitingApply.append((state.index, waiter))
        }
        core.advance(ready)
        releaseReads()
        try maybeSnapshot()
        let isMember = core.membership.contains(id)
        if wasMember && !isMember {
            fail(with: .stopped("removed from the cluster"))
            inbox.close()
        }
        wasMember = wasMember || isMember
    }

    private func releaseReads() {
        let applied = stateMachine.appliedIndex
        readsAwaitingApply.removeAll { item in
            guard item.index <= applied else { return false }
            item.waiter.continuation.resume()
            return true
        }
    }

    private func maybeSnapshot() throws {
        let last = storage.snapshotMetadata.index
        guard !snapshotInProgress, handedOffIndex >= last + options.snapshotEveryEntries else { return }
        // Asked only once the entry count is reached: the size may take a query.
        if bytesAppliedSinceSnapshot < options.snapshotMaxLogBytes && options.snapshotLogToStateRatio > 0 {
            guard Double(bytesAppliedSinceSnapshot) >= snapshotThresholdBytes else { return }
            snapshotThresholdBytes = options.snapshotLogToStateRatio * Double(stateMachine.stateSizeBytes)
            guard Double(bytesAppliedSinceSnapshot) >= snapshotThresholdBytes else { return }
        }
        // A snapshot is taken at the state machine's applied index with the core's membership: both must agree.
        applier.drain()
        if let error = applier.failure { throw error }
        let applied = stateMachine.appliedIndex
        guard applied == core.appliedIndex, applied <= storage.lastIndex, let term = storage.term(at: applied) else { return }
        let file = storage.temporarySnapshotFile()
        if stateMachine.snapshotsConcurrently {
            snapshotInProgress = true
            let stateMachine = self.stateMachine
            Task.detached { [weak self] in
                let result = Result { try stateMachine.writeSnapshotConcurrently(to: file) }
                await self?.adoptConcurrentSnapshot(result, file: file)
            }
            return
        }
        try stateMachine.writeSnapshot(to: file)
        try storage.adoptLocalSnapshot(SnapshotMetadata(index: applied, term: term, membership: core.membership),
                                       file: file, retainEntries: options.snapshotRetainEntries)
        bytesAppliedSinceSnapshot = 0
        snapshotThresholdBytes = 0
        logger.debug("snapshot at \(applied); log now starts at \(storage.firstIndex)")
    }

    /// Adopts a snapshot written in the background, unless the log moved under it: a newer snapshot was installed
    /// meanwhile, its entries were replaced, or the membership changed after the index it reflects.
    private func adoptConcurrentSnapshot(_ result: Result<LogIndex, any Error>, file: URL) {
        snapshotInProgress = false
        guard failure == nil else {
            try? FileManager.default.removeItem(at: file)
            return
        }
        let index: LogIndex
        switch result {
        case .success(let taken): index = taken
        case .failure(let error):
            try? FileManager.default.removeItem(at: file)
            fail(with: .stopped("writing a snapshot failed: \(error)"))
            return
        }
        guard index > storage.snapshotMetadata.index, index <= storage.lastIndex, index <= core.appliedIndex,
              index >= lastConfigChangeApplied, let term = storage.term(at: index) else {
            try? FileManager.default.removeItem(at: file)
            logger.debug("dropped a background snapshot at \(index)")
            return
        }
        do {
            try storage.adoptLocalSnapshot(SnapshotMetadata(index: index, term: term, membership: core.membership),
                                           file: file, retainEntries: options.snapshotRetainEntries)
            // Entries applied while the copy was written are not in it, but are not counted either: the next
            // snapshot waits a little longer, which only errs on the side of fewer copies.
            bytesAppliedSinceSnapshot = 0
            snapshotThresholdBytes = 0
            logger.debug("snapshot at \(index); log now starts at \(storage.firstIndex)")
        } catch {
            fail(with: .stopped("adopting a snapshot failed: \(error)"))
        }
    }

    private func expireRequests() {
        for (index, waiter) in proposals where waiter.deadlineTick <= ticks {
            proposals[index] = nil
            waiter.continuation.resume(throwing: RaftNodeError.timedOut)
        }
        for (requestID, waiter) in reads where waiter.deadlineTick <= ticks {
            reads[requestID] = nil
            waiter.continuation.resume(throwing: RaftNodeError.timedOut)
        }
        readsAwaitingApply.removeAll { item in
            guard item.waiter.deadlineTick <= ticks else { return false }
            item.waiter.continuation.resume(throwing: RaftNodeError.timedOut)
            return true
        }
    }

    private func failReads(_ error: RaftNodeError) {
        for waiter in reads.values { waiter.continuation.resume(throwing: error) }
        reads.removeAll()
    }

    private func fail(with error: RaftNodeError) {
        if failure == nil { failure = error }
        for waiter in proposals.values { waiter.continuation.resume(throwing: error) }
        proposals.removeAll()
        failReads(error)
        for item in readsAwaitingApply { item.waiter.continuation.resume(throwing: error) }
        readsAwaitingApply.removeAll()
    }
}

/// Messages from peers waiting for the node. Bounded: when full, new messages are dropped (Raft retransmits).
/// `arrivals` holds at most one signal, so a burst costs one turn of the node, which takes the whole batch.
private final class Inbox: Sendable {
    private struct State {
        var messages: [Message] = []
        var closed = false
    }

    private let capacity: Int
    private let state = Mutex(State())
    let arrivals: AsyncStream<Void>
    private let arrivalsContinuation: AsyncStream<Void>.Continuation

    init(capacity: Int) {
        precondition(capacity > 0, "the inbox needs room")
        self.capacity = capacity
        (arrivals, arrivalsContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func put(_ message: Message) {
        let accepted = state.withLock { state in
            guard !state.closed, state.messages.count < capacity else { return false }
            state.messages.append(message)
            return true
        }
        if accepted { arrivalsContinuation.yield() }
    }

    func takeAll() -> [Message] {
        state.withLock { state in
            var taken: [Message] = []
            swap(&taken, &state.messages)
            return taken
        }
    }

    func close() {
        state.withLock { state in
            state.closed = true
            state.messages.removeAll()
        }
        arrivalsContinuation.finish()
    }
}

/// A transport between nodes in one process, for tests and single-process clusters. Links can be cut to
/// simulate partitions.
public final class LocalTransport: RaftTransport, @unchecked Sendable {
    private let lock = NSLock()
    private var nodes: [NodeID: RaftNode] = [:]
    private var cut: Set<[NodeID]> = []

    public init() {}

    public func register(_ node: RaftNode) {
        lock.withLock { nodes[node.id] = node }
    }

    public func unregister(_ id: NodeID) {
        _ = lock.withLock { nodes.removeValue(forKey: id) }
    }

    /// Drops every message between `a` and `b` until ``heal()``.
    public func cutLink(_ a: NodeID, _ b: NodeID) {
        _ = lock.withLock { cut.insert([min(a, b), max(a, b)]) }
    }

    public func heal() {
        lock.withLock { cut.removeAll() }
    }

    public func send(_ messages: [Message]) {
        let targets = lock.withLock { () -> [(RaftNode, Message)] in
            messages.compactMap { message in
                guard !cut.contains([min(message.from, message.to), max(message.from, message.to)]),
                      let node = nodes[message.to] else { return nil }
                return (node, message)
            }
        }
        for (node, message) in targets { node.deliver(message) }
    }
}
