import Foundation

/// What an applied entry did to leases, for the ``LeaseManager``'s timers.
enum LeaseChange: Sendable, Hashable {
    case granted(id: LeaseID, ttlSeconds: Int64)
    case revoked(id: LeaseID)
    case checkpointed(id: LeaseID, remainingTTLSeconds: Int64)
}

/// The ``MVCCStore`` as the Raft node's ``StateMachine``.
///
/// `apply` decodes each normal entry's ``KVCommand`` (empty entries and membership changes only advance the applied
/// index), applies the whole batch in one SQLite transaction that also records the applied index, and answers each
/// entry with ``KVResultCodec``'s encoding of its `Result<KVResponse, KVError>`. Once the transaction has committed it
/// hands the batch's ``AppliedEntry`` values (with their events) to ``onApplied`` — the hook the watch hub subscribes
/// to.
///
/// The store underneath is not thread-safe, so every access goes through one lock: the node's apply calls, local
/// reads (``withStore(_:)``), snapshots and bounded compaction steps (``compactionStep(maxRows:)``), which the
/// embedding ``KVStore`` runs between applies so that physical compaction never holds writes back for long.
public final class KVStateMachine: StateMachine, @unchecked Sendable {
    private let lock = NSLock()
    private let store: MVCCStore
    private let databasePath: String
    private var appliedObserver: (@Sendable ([AppliedEntry]) -> Void)?
    private var restoreObserver: (@Sendable (LogIndex) -> Void)?
    /// The lease manager's feed: called after commit, on the applying thread, in apply order.
    private var leaseObserver: (@Sendable ([LeaseChange]) -> Void)?
    /// Called with the whole lease table after a snapshot replaced the state.
    private var leaseResetObserver: (@Sendable ([LeaseInfo]) -> Void)?
    /// The term of the last empty entry applied. A leader has applied everything of earlier terms once this equals
    /// its term (the no-op it appends when elected), which is when etcd promotes its lessor.
    private var lastEmptyEntryTerm: Term = 0

    /// Opens (creating when absent) the state database at `path`.
    public init(path: String, configuration: MVCCStore.Configuration = .init()) throws {
        databasePath = path
        store = try MVCCStore(path: path, configuration: configuration)
    }

    // MARK: Hooks

    /// Called after each applied batch has committed, with one ``AppliedEntry`` per entry (index, result, events),
    /// in log order, on the node's apply path: keep it short and never call back into the node from it.
    ///
    /// **Watch hub hook.** This is where the watch hub subscribes to applied events. Events handed out here are
    /// durable; the same index is never handed out twice by one process, but after a restart entries above the
    /// state's applied index are applied (and handed out) again — a subscriber must resume from the store's
    /// revision, not from memory.
    public var onApplied: (@Sendable ([AppliedEntry]) -> Void)? {
        get { lock.withLock { appliedObserver } }
        set { lock.withLock { appliedObserver = newValue } }
    }

    /// Called after the state was replaced by a snapshot (taken at the given index): history a watcher had not
    /// seen yet may have been skipped, so a watch hub must resynchronise from the store.
    public var onRestored: (@Sendable (LogIndex) -> Void)? {
        get { lock.withLock { restoreObserver } }
        set { lock.withLock { restoreObserver = newValue } }
    }

    /// Connects the lease manager: `changes` follows applied lease commands, `reset` gets the table after a restore.
    func setLeaseObservers(changes: @escaping @Sendable ([LeaseChange]) -> Void,
                           reset: @escaping @Sendable ([LeaseInfo]) -> Void) {
        lock.withLock {
            leaseObserver = changes
            leaseResetObserver = reset
        }
    }

    // MARK: StateMachine

    public var appliedIndex: LogIndex { lock.withLock { store.appliedIndex } }

    public func apply(_ entries: [Entry]) throws -> [ApplyResult] {
        var commands: [LogIndex: KVCommand] = [:]
        var decodeFailures: [LogIndex: KVError] = [:]
        var emptyEntryTerm: Term?
        let batch: [(index: LogIndex, command: KVCommand?)] = entries.map { entry in
            guard entry.kind == .normal else {
                // A removed member's record goes with it, in the same transaction as the applied index.
                if let change = ConfigChange(encoded: entry.data), case .removeMember(let id) = change {
                    return (entry.index, .forgetMember(id: id))
                }
                return (entry.index, nil)
            }
            guard !entry.data.isEmpty else {
                emptyEntryTerm = entry.term
                return (entry.index, nil)
            }
            do throws(KVCodecError) {
                let command = try KVCommandCodec.decode(entry.data)
                // Lease bookkeeping follows what was done, whoever asked.
                if case .authorized(_, let inner) = command { commands[entry.index] = inner } else { commands[entry.index] = command }
                return (entry.index, command)
            } catch {
                // Every member fails the same entry the same way, so the state stays identical.
                decodeFailures[entry.index] = .malformedCommand(error.description)
                return (entry.index, nil)
            }
        }
        let (applied, appliedObserver, leaseObserver) = try lock.withLock {
            var applied = try store.apply(batch)
            for position in applied.indices {
                if let failure = decodeFailures[applied[position].index] { applied[position].result = .failure(failure) }
            }
            if let emptyEntryTerm { lastEmptyEntryTerm = emptyEntryTerm }
            return (applied, self.appliedObserver, self.leaseObserver)
        }
        precondition(applied.count == entries.count, "the node delivers each entry once, after the applied index")
        if let leaseObserver {
            let changes = Self.leaseChanges(applied, commands: commands)
            if !changes.isEmpty { leaseObserver(changes) }
        }
        appliedObserver?(applied)
        return applied.map { KVResultCodec.encode($0.result) }
    }

    public func writeSnapshot(to file: URL) throws {
        try lock.withLock { try store.writeSnapshot(to: file) }
    }

    public var snapshotsConcurrently: Bool { true }

    /// The pages in use: what `VACUUM INTO` copies.
    public var stateSizeBytes: Int64 { (try? lock.withLock { try store.sizeInUseBytes() }) ?? 0 }

    /// Copies the state through a second connection: applies, reads and compaction steps go on meanwhile.
    public func writeSnapshotConcurrently(to file: URL) throws -> LogIndex {
        try MVCCStore.writeSnapshot(ofDatabaseAt: databasePath, to: file)
    }

    public func restore(from file: URL, index: LogIndex) throws {
        let (observer, leaseReset, leases) = try lock.withLock {
            try store.restore(from: file, index: index)
            lastEmptyEntryTerm = 0
            return (restoreObserver, leaseResetObserver, leaseResetObserver == nil ? [] : try store.leases())
        }
        leaseReset?(leases)
        observer?(index)
    }

    private static func leaseChanges(_ applied: [AppliedEntry], commands: [LogIndex: KVCommand]) -> [LeaseChange] {
        var changes: [LeaseChange] = []
        for entry in applied {
            guard case .success = entry.result, let command = commands[entry.index] else { continue }
            switch command {
            case .leaseGrant(let id, let ttlSeconds): changes.append(.granted(id: id, ttlSeconds: ttlSeconds))
            case .leaseRevoke(let id): changes.append(.revoked(id: id))
            case .leaseCheckpoint(let checkpoints):
                for checkpoint in checkpoints {
                    changes.append(.checkpointed(id: checkpoint.id, remainingTTLSeconds: checkpoint.remainingTTLSeconds))
                }
            default: continue
            }
        }
        return changes
    }

    // MARK: Local access

    /// Runs `body` with the store, excluding applies, snapshots and compaction meanwhile. For local reads (ranges,
    /// events, leases, hashes) and maintenance; never apply through it (that bypasses the log).
    public func withStore<T>(_ body: (MVCCStore) throws -> T) rethrows -> T {
        try lock.withLock { try body(store) }
    }

    /// The term of the last empty (leader no-op) entry applied since the store was opened or restored; 0 if none.
    var lastAppliedEmptyEntryTerm: Term { lock.withLock { lastEmptyEntryTerm } }

    /// True while a recorded compaction has history left to remove physically.
    public var isCompactionPending: Bool {
        get throws { try lock.withLock { try store.isCompactionPending } }
    }

    /// Removes up to `maxRows` rows of compacted history in one short transaction; true once nothing is left.
    @discardableResult
    public func compactionStep(maxRows: Int) throws -> Bool {
        try lock.withLock { try store.compactStep(maxRows: maxRows) }
    }
}
