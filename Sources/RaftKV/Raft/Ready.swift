/// Everything the driver must do after feeding the core, in this order:
///
/// 0. Send `earlyMessages` (it may also send them later, at step 4: nothing depends on their being early).
/// 1. If `snapshotChunks` is not empty, stage them (a snapshot arriving from the leader).
/// 2. If `snapshot` is set, install the staged snapshot in storage and restore the state machine from it.
/// 3. Persist `hardState` (when set) and `entries` in one transaction, synced to disk when `mustSync`.
/// 4. Only then send `messages`: they may promise that what steps 1–3 wrote is durable (votes, acknowledgements).
/// 5. Apply `committed` to the state machine, in order, and serve `readStates` once applied reaches their index.
///    The driver may instead queue `committed` for applying after this Ready (in order, before any later Ready's),
///    except when it holds a membership change: the core takes the new membership at step 6, so the state machine
///    must have applied it by then.
/// 6. Call ``RaftCore/advance(_:)`` with this value.
///
/// The core hands out at most one Ready at a time: after ``RaftCore/ready()`` returns one, the next comes only
/// after `advance`. Messages and ticks may be stepped in between.
public struct Ready: Sendable, Equatable {
    public var hardState: HardState?
    public var entries: [Entry] = []
    public var snapshotChunks: [SnapshotChunk] = []
    public var snapshot: SnapshotMetadata?
    /// A leader's appends and heartbeats. They promise nothing about this node's disk (the leader counts its own
    /// copy of an entry only once ``RaftCore/advance(_:)`` says it is persisted), so they may leave before step 3:
    /// the leader then writes its log while the followers write theirs (Raft thesis §10.2.1), instead of one after
    /// the other.
    public var earlyMessages: [Message] = []
    public var messages: [Message] = []
    public var committed: [Entry] = []
    public var readStates: [ReadState] = []
    public var mustSync: Bool = false
    /// Who leads as of this Ready and in which role this node is; informational.
    public var leader: NodeID = 0
    public var role: Role = .follower
    public var term: Term = 0

    public var isEmpty: Bool {
        hardState == nil && entries.isEmpty && snapshotChunks.isEmpty && snapshot == nil && messages.isEmpty
            && earlyMessages.isEmpty
            && committed.isEmpty && readStates.isEmpty
    }
}

/// Tunables of the core. Defaults follow etcd's (100 ms ticks: heartbeat 100 ms, election 1 s).
public struct RaftConfiguration: Sendable {
    public var id: NodeID
    public var electionTimeoutTicks: Int = 10
    public var heartbeatTicks: Int = 1
    public var preVote: Bool = true
    public var checkQuorum: Bool = true
    /// Bound on the entry bytes in one append message.
    public var maxMessageBytes: Int = 1 << 20
    /// Bound on pipelined appends to one follower.
    public var maxInflightMessages: Int = 256
    /// Bound on the bytes of one snapshot chunk.
    public var maxSnapshotChunkBytes: Int = 1 << 20
    /// Bound on the committed entry bytes handed out in one Ready.
    public var maxCommittedBytesPerReady: Int = 16 << 20
    /// Bound on one proposal's bytes.
    public var maxProposalBytes: Int = 8 << 20
    /// Bound on the entries appended but not yet committed on the leader; beyond it proposals are refused, so a
    /// leader cut off from its quorum does not grow its log without limit.
    public var maxUncommittedEntries: Int = 100_000
    /// The state machine's applied index at start.
    public var appliedIndex: LogIndex = 0
    /// Seeds the randomized election timeouts; the same seed replays the same run.
    public var randomSeed: UInt64

    #if DEBUG
    /// Known bugs to switch on, so that tests can show the simulator catches them. Debug builds only.
    public var injectedBugs: Set<InjectedBug> = []
    #endif

    public init(id: NodeID, randomSeed: UInt64? = nil) {
        self.id = id
        self.randomSeed = randomSeed ?? id
    }
}

#if DEBUG
/// Deliberate safety bugs, each a mistake real Raft implementations have made.
public enum InjectedBug: String, Sendable, Hashable, CaseIterable {
    /// Commit an entry of an earlier term by counting replicas (Raft §5.4.2, Figure 8).
    case commitPreviousTermByCounting
    /// Grant votes without checking that the candidate's log is at least as up-to-date.
    case voteWithoutLogCheck
    /// Acknowledge appended entries before they are persisted (the driver sends before it writes).
    case acknowledgeBeforePersist
    /// Append the leader's entries after the existing log without truncating a conflicting suffix.
    case keepConflictingSuffix
}
#endif

/// A seeded pseudo-random source (SplitMix64): small, fast and the same on every platform.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
