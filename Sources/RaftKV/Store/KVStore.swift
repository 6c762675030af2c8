import Foundation
import Logging
import Synchronization

/// An etcd-v3-compatible, Raft-replicated key-value store, embedded in the calling process.
///
/// A `KVStore` is one member of a cluster: its Raft log lives in `<directory>/member/raft/` (``SQLiteLogStorage``)
/// and its state in `<directory>/member/kv.db` (``MVCCStore`` behind ``KVStateMachine``). Open a single-member store
/// with ``open(directory:configuration:)``, or a member of a larger cluster with
/// ``init(directory:memberID:initialMembership:transport:configuration:)``, then keep ``run()`` running (in a task
/// group) for as long as the store is used, and ``close()`` it at the end:
///
/// ```swift
/// let store = try KVStore.open(directory: directory)
/// try await withThrowingTaskGroup(of: Void.self) { group in
///     group.addTask { try await store.run() }
///     _ = try await store.put("greeting", "hello")
///     await store.close()
/// }
/// ```
///
/// **Writes** are checked with ``KVValidation`` (etcd's limits and messages), proposed through Raft and answered
/// once applied here. **Reads** are linearizable by default (a ReadIndex round, then a local read) or serializable
/// (local) on request. Read-only transactions are served like reads, as in etcd. **Errors** are ``KVError`` values
/// whose descriptions are etcd's exact messages; Raft's refusals map to etcd's ("etcdserver: no leader",
/// "etcdserver: leader changed", "etcdserver: request timed out", …). Other errors (a failing disk) propagate as
/// they are.
///
/// **Leases** are timed by the leader's ``LeaseManager``; keep-alive and time-to-live are served by the leader
/// only — on a follower they fail with ``KVError/notLeader(leader:)`` naming the leader, for the server layer to
/// forward. Expired leases are revoked through Raft, so every member deletes their keys at one revision.
///
/// **Watches** go through ``watchHub``: ``watch()`` opens a ``WatchStream`` (many watchers, history replay, then
/// live events); the hub is fed from the apply path after each committed batch.
public final class KVStore: Sendable {
    /// Tunables of one member.
    public struct Configuration: Sendable {
        /// One Raft tick (etcd's `--heartbeat-interval` is one tick of 100 ms).
        public var tickInterval: Duration = .milliseconds(100)
        /// Election timeout in ticks (etcd's `--election-timeout` 1000 ms = 10 ticks).
        public var electionTimeoutTicks: Int = 10
        public var heartbeatTicks: Int = 1
        /// How long a request may wait for its answer, including waiting for a leader to be elected.
        public var requestTimeout: Duration = .seconds(7)
        /// Snapshot the state and compact the Raft log every this many applied entries.
        public var snapshotEveryEntries: UInt64 = 10_000
        /// Entries kept below a snapshot for slightly lagging followers.
        public var snapshotRetainEntries: UInt64 = 5_000
        /// Snapshots also wait until the log since the last one weighs this fraction of the state (see
        /// ``RaftNodeOptions/snapshotLogToStateRatio``); 0 snapshots on the entry count alone.
        public var snapshotLogToStateRatio: Double = 1.0
        /// …up to this many bytes of log (``RaftNodeOptions/snapshotMaxLogBytes``), which bounds restart time.
        public var snapshotMaxLogBytes: Int64 = 128 << 20
        /// etcd's `--max-txn-ops`.
        public var maxTxnOps: Int = KVValidation.defaultMaxTxnOps
        /// etcd's `--max-request-bytes`: larger encoded requests fail with "etcdserver: request is too large".
        public var maxRequestBytes: Int = 1_572_864
        /// etcd's `--quota-backend-bytes` (≤ 0 disables the quota).
        public var quotaBackendBytes: Int64 = 2 * 1024 * 1024 * 1024
        /// How often the leader records leases' remaining TTLs through Raft (etcd: 5 minutes).
        public var leaseCheckpointInterval: Duration = .seconds(300)
        /// How often the leader looks for expired leases and due checkpoints (etcd: 500 ms).
        public var leaseTickInterval: Duration = .milliseconds(500)
        /// Rows of compacted history removed per short transaction, between which writes proceed.
        public var compactionBatchRows: Int = 1_000
        /// The time leases are measured with.
        public var clock: any LeaseClock = SystemLeaseClock()
        /// How long an auth token lives without use (etcd's `--auth-token-ttl`).
        public var authTokenTTL: Duration = .seconds(300)
        /// Told how long each fsynced Raft log write took (etcd's `etcd_disk_wal_fsync_duration_seconds`).
        public var logSyncObserver: (@Sendable (Duration) -> Void)?
        /// Told how long each state transaction took to commit (etcd's `etcd_disk_backend_commit_duration_seconds`).
        public var stateCommitObserver: (@Sendable (Duration) -> Void)?
        public var logger: Logger = Logger(label: "raftkv")

        public init() {}

        /// The election timeout (`electionTimeoutTicks` ticks).
        public var electionTimeout: Duration { tickInterval * electionTimeoutTicks }

        /// etcd's `minLeaseTTL`: ⌈(3 × election ticks / 2) ticks⌉ in seconds; shorter grants get this TTL.
        public var minLeaseTTLSeconds: Int64 {
            let minimum = tickInterval * ((3 * electionTimeoutTicks) / 2)
            let (seconds, attoseconds) = minimum.components
            return seconds + (attoseconds > 0 ? 1 : 0)
        }
    }

    /// This member's ID in the cluster.
    public let memberID: NodeID
    public let directory: URL
    public let configuration: Configuration
    /// The Raft node: register it with a transport, deliver peers' messages to it, change membership through it.
    public let node: RaftNode
    /// The replicated state machine (local reads through ``KVStateMachine/withStore(_:)``).
    public let stateMachine: KVStateMachine
    /// Lease timers (meaningful on the leader).
    public let leaseManager: LeaseManager
    /// The term whose leader this member promoted its lease manager in; 0 when not primary.
    private let promotedTerm = Mutex<Term>(0)
    /// Serves watch streams from applied events and, for watchers behind, from the store's history.
    public let watchHub: WatchHub
    /// The auth tokens this member knows (issued by applied `authenticate` entries).
    public let authTokens: SimpleTokens
    private let watchFeed = WatchFeed()
    private let appliedSubscriber = Mutex<(@Sendable ([AppliedEntry]) -> Void)?>(nil)
    let applyWaiters: ApplyWaiters

    /// Opens (creating when absent) a single-member store in `directory`.
    public static func open(directory: URL, configuration: Configuration = Configuration()) throws -> KVStore {
        try KVStore(directory: directory, memberID: 1, initialMembership: Membership(voters: [1]),
                    transport: NoPeersTransport(), configuration: configuration)
    }

    /// Opens (creating when absent) the member `memberID` of a cluster in `directory`.
    ///
    /// - Parameters:
    ///   - initialMembership: the members a new cluster starts with (the same on every initial member), or nil
    ///     for a member that joins an existing cluster (added there with ``RaftNode/proposeConfigChange(_:)``).
    ///     Ignored when the directory already holds a log.
    ///   - transport: carries Raft messages to the other members; messages for this member go to ``deliver(_:)``.
    public init(directory: URL, memberID: NodeID, initialMembership: Membership?, transport: any RaftTransport,
                configuration: Configuration = Configuration()) throws {
        self.memberID = memberID
        self.directory = directory
        self.configuration = configuration
        let memberDirectory = directory.appendingPathComponent("member")
        let raftDirectory = memberDirectory.appendingPathComponent("raft")
        try FileManager.default.createDirectory(at: raftDirectory, withIntermediateDirectories: true)
        let storage = try SQLiteLogStorage(directory: raftDirectory)
        storage.syncObserver = configuration.logSyncObserver
        stateMachine = try KVStateMachine(path: StateSnapshot.stateDatabase(inDataDirectory: directory).path,
                                          configuration: MVCCStore.Configuration(quotaBackendBytes: configuration.quotaBackendBytes))
        stateMachine.withStore { $0.commitObserver = configuration.stateCommitObserver; $0.failurePoint = FailPoints.applyHook }
        var leaseConfiguration = LeaseManager.Configuration()
        leaseConfiguration.checkpointInterval = configuration.leaseCheckpointInterval
        leaseManager = LeaseManager(clock: configuration.clock, configuration: leaseConfiguration)
        var tokenConfiguration = SimpleTokens.Configuration()
        tokenConfiguration.ttl = configuration.authTokenTTL
        authTokens = SimpleTokens(clock: configuration.clock, configuration: tokenConfiguration)

        var raftConfiguration = RaftConfiguration(id: memberID)
        raftConfiguration.electionTimeoutTicks = configuration.electionTimeoutTicks
        raftConfiguration.heartbeatTicks = configuration.heartbeatTicks
        raftConfiguration.maxProposalBytes = max(raftConfiguration.maxProposalBytes, configuration.maxRequestBytes + 1024)
        var options = RaftNodeOptions()
        options.tickInterval = configuration.tickInterval
        options.requestTimeoutTicks = max(1, Int(configuration.requestTimeout / configuration.tickInterval))
        options.snapshotEveryEntries = configuration.snapshotEveryEntries
        options.snapshotRetainEntries = configuration.snapshotRetainEntries
        options.snapshotLogToStateRatio = configuration.snapshotLogToStateRatio
        options.snapshotMaxLogBytes = configuration.snapshotMaxLogBytes
        node = try RaftNode(configuration: raftConfiguration, storage: storage, stateMachine: stateMachine,
                            transport: transport, bootstrap: initialMembership, options: options,
                            logger: configuration.logger)

        let (history, currentRevision, compactedRevision) = try stateMachine.withStore {
            (try $0.makeWatchHistory(), $0.currentRevision, $0.compactedRevision)
        }
        watchFeed.latestRevision.store(currentRevision, ordering: .releasing)
        watchHub = WatchHub(history: history, currentRevision: currentRevision, compactedRevision: compactedRevision,
                            configuration: WatchHub.Configuration(),
                            latestRevision: { [watchFeed] in watchFeed.latestRevision.load(ordering: .acquiring) })
        applyWaiters = ApplyWaiters(revision: currentRevision, index: stateMachine.appliedIndex)
        stateMachine.onApplied = { [weak self, watchFeed, stateMachine, authTokens, applyWaiters] applied in
            // Before the proposer hears back, so that a token is valid here the moment its client gets it.
            for entry in applied {
                if case .success(.auth(let change)) = entry.result { authTokens.follow(change) }
            }
            let (current, compacted, index) = stateMachine.withStore { ($0.currentRevision, $0.compactedRevision, $0.appliedIndex) }
            watchFeed.enqueue(.applied(applied, compactedRevision: compacted), storeRevision: current)
            applyWaiters.applied(revision: current, index: index)
            self?.appliedSubscriber.withLock { $0 }?(applied)
        }
        stateMachine.onRestored = { [watchFeed, stateMachine, applyWaiters] _ in
            let (current, compacted, index) = stateMachine.withStore { ($0.currentRevision, $0.compactedRevision, $0.appliedIndex) }
            watchFeed.enqueue(.restored(currentRevision: current, compactedRevision: compacted), storeRevision: current)
            applyWaiters.applied(revision: current, index: index)
        }
        leaseManager.reset(to: try stateMachine.withStore { try $0.leases() })
        stateMachine.setLeaseObservers(changes: { [leaseManager] in leaseManager.apply($0) },
                                       reset: { [leaseManager] in leaseManager.reset(to: $0) })
    }

    /// Hands a Raft message from a peer to this member. Called by transports.
    public func deliver(_ message: Message) {
        node.deliver(message)
    }

    /// An extra subscriber to applied batches (after the watch hub), with their entries' results and events, in
    /// log order. See ``KVStateMachine/onApplied``.
    public var onApplied: (@Sendable ([AppliedEntry]) -> Void)? {
        get { appliedSubscriber.withLock { $0 } }
        set { appliedSubscriber.withLock { $0 = newValue } }
    }

    /// Opens a watch stream: create watchers on it (etcd's WatchCreateRequest), read its ``WatchStream/responses``,
    /// and close it when done.
    public func watch() -> WatchStream {
        watchHub.makeStream()
    }

    // MARK: - Lifecycle

    /// Runs the member — the Raft node, the lease timers, background compaction — until ``close()`` is called, the
    /// task is cancelled (which also closes the store) or the node fails (then it throws).
    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.node.run() }
            group.addTask { await self.runLeaseTimer() }
            group.addTask { try await self.runCompaction() }
            group.addTask { await self.watchHub.run() }
            group.addTask {
                await self.watchFeed.run(into: self.watchHub) { error in
                    self.configuration.logger.error("watchers could not resynchronise after a snapshot: \(error)")
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
        await node.stop()
    }

    /// Stops the member: waiting requests fail with ``KVError/stopped`` and ``run()`` returns. Everything
    /// acknowledged is durable already; nothing else needs flushing.
    public func close() async {
        await node.stop()
    }

    private func runLeaseTimer() async {
        let revokeLimit = max(1, Int(Double(leaseManager.configuration.revokeRatePerSecond)
                                      * (configuration.leaseTickInterval / .seconds(1))))
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                do { try await Task.sleep(for: configuration.leaseTickInterval) } catch { break }
                await updateLeadership()
                for id in leaseManager.expiredLeases(limit: revokeLimit) {
                    group.addTask {
                        do {
                            _ = try await self.propose(.leaseRevoke(id: id))
                        } catch {
                            self.configuration.logger.debug("revoking expired lease \(id) failed: \(error)")
                        }
                    }
                }
                let checkpoints = leaseManager.dueCheckpoints(limit: 1_000)
                if !checkpoints.isEmpty {
                    group.addTask { _ = try? await self.propose(.leaseCheckpoint(checkpoints)) }
                }
            }
            // Fail the requests still waiting (revocations above included) so that the group can finish.
            await node.stop()
        }
    }

    /// Removes compacted history in short transactions, so that a large compaction never holds writes back.
    private func runCompaction() async throws {
        while !Task.isCancelled {
            if try stateMachine.isCompactionPending {
                try stateMachine.compactionStep(maxRows: configuration.compactionBatchRows)
                await Task.yield()
            } else {
                do { try await Task.sleep(for: .milliseconds(100)) } catch { return }
            }
        }
    }

    /// Promotes the lease manager once this member leads and has applied its term's first entry (everything of
    /// earlier terms, checkpoints included, is applied then — etcd promotes at the same point); demotes it when
    /// this member no longer leads.
    private func updateLeadership() async {
        let status = await node.status
        let emptyEntryTerm = stateMachine.lastAppliedEmptyEntryTerm
        promotedTerm.withLock { promoted in
            if status.role == .leader {
                guard promoted != status.term, emptyEntryTerm == status.term else { return }
                leaseManager.promote(extend: configuration.electionTimeout)
                promoted = status.term
            } else if promoted != 0 || leaseManager.isPrimary {
                leaseManager.demote()
                promoted = 0
            }
        }
    }

    // MARK: - Key-value

    /// etcd's `Range`: the keys of a range with every `RangeRequest` option.
    public func range(_ request: RangeRequest, consistency: ReadConsistency = .linearizable) async throws -> RangeResponse {
        try KVValidation.check(request)
        if consistency == .linearizable { try await barrier() }
        let identity = AuthIdentity.current
        return try stateMachine.withStore { store in
            if let identity { try store.checkRead(key: request.key, rangeEnd: request.rangeEnd, identity: identity) }
            return try store.range(request)
        }
    }

    /// The current value of `key`, or nil.
    public func get(_ key: [UInt8], consistency: ReadConsistency = .linearizable) async throws -> KeyValue? {
        try await range(RangeRequest(key: key, limit: 1), consistency: consistency).kvs.first
    }

    /// The current value of `key` (UTF-8), or nil.
    public func get(_ key: String, consistency: ReadConsistency = .linearizable) async throws -> KeyValue? {
        try await get(Array(key.utf8), consistency: consistency)
    }

    /// Every key starting with `prefix`, in key order.
    public func prefix(_ prefix: [UInt8], limit: Int64 = 0, consistency: ReadConsistency = .linearizable) async throws -> RangeResponse {
        try await range(RangeRequest(key: prefix, rangeEnd: KeyRange.prefixEnd(prefix), limit: limit), consistency: consistency)
    }

    /// etcd's `Put`.
    public func put(_ request: PutRequest) async throws -> PutResponse {
        try KVValidation.check(request)
        guard case .put(let response) = try await propose(.put(request)) else { throw Self.unexpectedResponse }
        return response
    }

    /// Puts `value` at `key`, optionally attached to `lease`.
    @discardableResult
    public func put(_ key: [UInt8], _ value: [UInt8], lease: LeaseID = 0) async throws -> PutResponse {
        try await put(PutRequest(key: key, value: value, lease: lease))
    }

    /// Puts the UTF-8 `value` at the UTF-8 `key`, optionally attached to `lease`.
    @discardableResult
    public func put(_ key: String, _ value: String, lease: LeaseID = 0) async throws -> PutResponse {
        try await put(Array(key.utf8), Array(value.utf8), lease: lease)
    }

    /// etcd's `DeleteRange`.
    public func delete(_ request: DeleteRangeRequest) async throws -> DeleteRangeResponse {
        try KVValidation.check(request)
        guard case .deleteRange(let response) = try await propose(.deleteRange(request)) else { throw Self.unexpectedResponse }
        return response
    }

    /// Deletes `key` (UTF-8); returns how many keys were deleted (0 or 1).
    @discardableResult
    public func delete(_ key: String) async throws -> Int64 {
        try await delete(DeleteRangeRequest(key: Array(key.utf8))).deleted
    }

    /// etcd's `Txn`. A transaction whose branches only read is served like a read (with `consistency`), without
    /// a log entry, as etcd does; any other goes through Raft and ignores `consistency`.
    public func txn(_ request: TxnRequest, consistency: ReadConsistency = .linearizable) async throws -> TxnResponse {
        try KVValidation.check(request, maxTxnOps: configuration.maxTxnOps)
        if request.isReadOnly {
            if consistency == .linearizable { try await barrier() }
            let identity = AuthIdentity.current
            return try stateMachine.withStore { store in
                if let identity { try store.checkReadOnlyTxn(request, identity: identity) }
                return try store.readOnlyTxn(request)
            }
        }
        guard case .txn(let response) = try await propose(.txn(request)) else { throw Self.unexpectedResponse }
        return response
    }

    /// etcd's `Compact`: reads below `revision` fail from now on. With `physical`, returns only once this member
    /// has removed the compacted history (otherwise that happens in the background, in bounded steps).
    @discardableResult
    public func compact(revision: Revision, physical: Bool = false) async throws -> CompactionResponse {
        guard case .compaction(let response) = try await propose(.compact(revision: revision, physical: physical)) else {
            throw Self.unexpectedResponse
        }
        if physical {
            while try stateMachine.isCompactionPending {
                try stateMachine.compactionStep(maxRows: configuration.compactionBatchRows)
                await Task.yield()
            }
        }
        return response
    }

    // MARK: - Leases

    /// etcd's `LeaseGrant`. `ttlSeconds` below ``Configuration/minLeaseTTLSeconds`` is raised to it (as etcd's
    /// `minLeaseTTL`); `id` 0 lets the store choose a (random, positive) ID.
    ///
    /// Served by the leader once it is the primary lessor, like keep-alive: so the lease's timer starts when the
    /// grant is applied, not at a later promotion. A follower fails with ``KVError/notLeader(leader:)``.
    public func grant(ttlSeconds: Int64, id: LeaseID = 0) async throws -> LeaseGrantResponse {
        let ttl = max(ttlSeconds, configuration.minLeaseTTLSeconds)
        try await awaitPrimary()
        for _ in 0..<8 {
            let chosen = id != 0 ? id : LeaseID.random(in: 1...LeaseID.max)
            try KVValidation.check(KVCommand.leaseGrant(id: chosen, ttlSeconds: ttlSeconds))
            do {
                guard case .leaseGrant(let response) = try await propose(.leaseGrant(id: chosen, ttlSeconds: ttl)) else {
                    throw Self.unexpectedResponse
                }
                return response
            } catch KVError.leaseExists where id == 0 {
                continue
            }
        }
        throw KVError.leaseExists
    }

    /// etcd's `LeaseRevoke`: deletes the lease and its keys, at one revision.
    @discardableResult
    public func revoke(_ id: LeaseID) async throws -> LeaseRevokeResponse {
        guard case .leaseRevoke(let response) = try await propose(.leaseRevoke(id: id)) else { throw Self.unexpectedResponse }
        return response
    }

    /// One etcd `LeaseKeepAlive` round: the lease gets its whole TTL again. Served by the leader only; a follower
    /// fails with ``KVError/notLeader(leader:)`` so that the caller can forward the request, as etcd forwards it.
    public func keepAlive(_ id: LeaseID) async throws -> LeaseKeepAliveResponse {
        try checkSignedIn()
        try await awaitPrimary()
        let outcome: LeaseManager.RenewOutcome
        do {
            outcome = try leaseManager.renew(id)
        } catch .notPrimary {
            throw await notLeaderError()
        } catch .leaseNotFound {
            throw KVError.leaseNotFound
        }
        if outcome.clearCheckpoint {
            // As etcd: the error is ignored; the renewal itself holds on this leader either way.
            _ = try? await propose(.leaseCheckpoint([LeaseCheckpoint(id: id, remainingTTLSeconds: 0)]))
        }
        return LeaseKeepAliveResponse(id: id, ttlSeconds: outcome.ttlSeconds)
    }

    /// etcd's `LeaseTimeToLive`, served by the leader (see ``keepAlive(_:)``). An unknown or expired lease answers
    /// `ttlSeconds == -1` rather than failing, as etcd's server does.
    public func timeToLive(_ id: LeaseID, keys: Bool = false) async throws -> LeaseTimeToLiveResponse {
        try checkSignedIn()
        // etcd 3.5's checkLeaseTimeToLive: the keys of a lease are only shown to whoever may read them all.
        if let identity = AuthIdentity.current {
            try stateMachine.withStore { store in
                for key in try store.lease(id, keys: true)?.keys ?? [] {
                    try store.checkRead(key: key, rangeEnd: [], identity: identity)
                }
            }
        }
        try await awaitPrimary()
        let ttl: (remainingSeconds: Int64, grantedSeconds: Int64)?
        do {
            ttl = try leaseManager.timeToLive(id)
        } catch {
            throw await notLeaderError()
        }
        guard let ttl, ttl.remainingSeconds >= 0 else {
            return LeaseTimeToLiveResponse(id: id, ttlSeconds: -1, grantedTTLSeconds: 0)
        }
        let attached = keys ? (try stateMachine.withStore { try $0.lease(id, keys: true) })?.keys ?? [] : []
        return LeaseTimeToLiveResponse(id: id, ttlSeconds: ttl.remainingSeconds, grantedTTLSeconds: ttl.grantedSeconds,
                                       keys: attached)
    }

    /// etcd's `LeaseLeases`: the IDs of every lease, in ascending order, from the local state.
    public func leases() async throws -> [LeaseID] {
        try checkSignedIn()
        return try stateMachine.withStore { try $0.leases() }.map(\.id)
    }

    // MARK: - Maintenance

    /// etcd's `Alarm` (NOSPACE only): arms or disarms it on every member, through Raft.
    @discardableResult
    public func alarm(_ action: AlarmAction) async throws -> AlarmResponse {
        guard case .alarm(let response) = try await propose(.alarm(action)) else { throw Self.unexpectedResponse }
        return response
    }

    /// etcd's `Status`, with this member's Raft state.
    public func status() async throws -> KVStoreStatus {
        let raft = await node.status
        return try stateMachine.withStore { store in
            KVStoreStatus(memberID: memberID, leader: raft.leader, role: raft.role, term: raft.term,
                          membership: raft.membership, commitIndex: raft.commitIndex, appliedIndex: store.appliedIndex,
                          revision: store.currentRevision, compactRevision: store.compactedRevision,
                          dbSizeBytes: try store.sizeBytes(), dbSizeInUseBytes: try store.sizeInUseBytes(),
                          noSpaceAlarm: store.isNoSpaceAlarmArmed)
        }
    }

    /// etcd's `HashKV` of this member's state up to `revision` (0 = current). Members at the same applied index
    /// return the same hash.
    public func hashKV(revision: Revision = 0) throws -> HashKVResponse {
        let (hash, current, compacted) = try stateMachine.withStore { try $0.hashKV(revision: revision) }
        return HashKVResponse(hash: hash, revision: current, compactRevision: compacted)
    }

    /// etcd's `Defragment`: rebuilds this member's state file without free pages. Applies wait meanwhile.
    public func defragment() throws {
        try stateMachine.withStore { try $0.defragment() }
    }

    // MARK: - Internals

    private static let unexpectedResponse = KVError.malformedCommand("unexpected response kind")

    /// Waits are counted in ticks slept, like the node's own request timeout, not in wall-clock time: a process
    /// that was not scheduled for a while (a paused VM, a starved thread pool) must not time out requests that
    /// nothing had a chance to serve.
    var requestTimeoutTicks: Int { max(1, Int(configuration.requestTimeout / configuration.tickInterval)) }

    /// Proposes `command` and returns its applied response, retrying while no leader is known (an election) for up
    /// to the request timeout.
    func propose(_ command: KVCommand) async throws -> KVResponse {
        // A client's request is judged at apply time by the auth state then (see AuthIdentity).
        let data = KVCommandCodec.encode(AuthIdentity.current.map { .authorized($0, command) } ?? command)
        if data.count > configuration.maxRequestBytes { throw KVError.requestTooLarge }
        let answer = try await retryingWithoutLeader { try await self.node.propose(data) }
        let result: Result<KVResponse, KVError>
        do {
            result = try KVResultCodec.decode(answer)
        } catch {
            throw KVError.malformedCommand("undecodable result: \(error)")
        }
        switch result {
        case .success(let response):
            return response
        case .failure(.noSpace):
            // As etcd: the member that saw the quota exceeded raises the NOSPACE alarm for the whole cluster.
            if !(stateMachine.withStore { $0.isNoSpaceAlarmArmed }) {
                _ = try? await propose(.alarm(.activate))
            }
            throw KVError.noSpace
        case .failure(let error):
            throw error
        }
    }

    /// Waits for the local state to reflect every write committed before the call (ReadIndex), retrying through
    /// elections up to the request timeout.
    public func linearizableBarrier() async throws {
        try await barrier()
    }

    /// Waits for the local state to reflect every write committed before the call (ReadIndex).
    private func barrier() async throws {
        try await retryingWithoutLeader(retryLeaderChange: true) { try await self.node.linearizableBarrier() }
    }

    /// Runs a node request, retrying while the cluster has no leader (or hands leadership over) until the request
    /// timeout; maps the node's errors to etcd's.
    private func retryingWithoutLeader<T>(retryLeaderChange: Bool = false,
                                          _ request: () async throws -> T) async throws -> T {
        var waits = 0
        while true {
            do {
                return try await request()
            } catch let error as RaftNodeError {
                let mapped = Self.kvError(error)
                let retryable: Bool
                switch error {
                case .rejected(.noLeader), .rejected(.leadershipTransferInProgress): retryable = true
                case .leaderChanged: retryable = retryLeaderChange
                default: retryable = false
                }
                guard retryable, waits < requestTimeoutTicks else { throw mapped }
                waits += 1
                try await Task.sleep(for: configuration.tickInterval)
            }
        }
    }

    /// Waits (up to the request timeout) until this member is the primary lessor; fails with
    /// ``KVError/notLeader(leader:)`` at once when another member leads.
    private func awaitPrimary() async throws {
        var waits = 0
        while true {
            await updateLeadership()
            if leaseManager.isPrimary { return }
            let status = await node.status
            if status.role != .leader && status.leader != 0 && status.leader != memberID {
                throw KVError.notLeader(leader: status.leader)
            }
            guard waits < requestTimeoutTicks else { throw status.leader == 0 ? KVError.noLeader : KVError.timeout }
            waits += 1
            try await Task.sleep(for: configuration.tickInterval)
        }
    }

    private func notLeaderError() async -> KVError {
        let leader = await node.status.leader
        return leader == 0 ? .noLeader : .notLeader(leader: leader)
    }

    /// etcd's messages for the node's refusals.
    public static func kvError(_ error: RaftNodeError) -> KVError {
        switch error {
        case .rejected(let refusal):
            switch refusal {
            case .notLeader(let leader): return leader.map { KVError.notLeader(leader: $0) } ?? .noLeader
            case .noLeader: return .noLeader
            case .leadershipTransferInProgress: return .leaderChanged
            case .proposalTooLarge: return .requestTooLarge
            case .tooManyUncommittedEntries: return .tooManyRequests
            case .removed, .corruptState: return .stopped
            // Membership refusals; KV requests never cause them.
            case .configChangePending, .invalidConfigChange, .unknownMember: return .stopped
            }
        case .leaderChanged: return .leaderChanged
        case .timedOut: return .timeout
        case .stopped: return .stopped
        }
    }
}

/// The transport of a single-member cluster: there is nobody to send to.
struct NoPeersTransport: RaftTransport {
    func send(_ messages: [Message]) {}
}
