/// Identifies a member of the cluster. Zero means "none" and is never a valid member.
public typealias NodeID = UInt64
/// A Raft term. Terms only grow.
public typealias Term = UInt64
/// A position in the replicated log. The first real entry has index 1; index 0 is the empty prefix.
public typealias LogIndex = UInt64

/// What a log entry carries.
public enum EntryKind: UInt8, Sendable, Equatable {
    /// Application data; an empty normal entry is the no-op a new leader appends.
    case normal = 0
    /// An encoded ``ConfigChange``.
    case configChange = 1
}

/// One slot of the replicated log.
public struct Entry: Sendable, Equatable {
    public var term: Term
    public var index: LogIndex
    public var kind: EntryKind
    public var data: [UInt8]

    public init(term: Term, index: LogIndex, kind: EntryKind = .normal, data: [UInt8] = []) {
        self.term = term
        self.index = index
        self.kind = kind
        self.data = data
    }

    /// Bytes this entry costs against message and batch limits.
    public var sizeBytes: Int { data.count + 24 }
}

/// The state that must be on disk before a node answers any message that depends on it.
public struct HardState: Sendable, Equatable {
    public var term: Term
    /// Whom this node voted for in `term`; 0 for nobody.
    public var vote: NodeID
    public var commit: LogIndex

    public init(term: Term = 0, vote: NodeID = 0, commit: LogIndex = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
}

/// Who votes and who only listens.
public struct Membership: Sendable, Equatable, Hashable {
    public var voters: Set<NodeID>
    public var learners: Set<NodeID>

    public init(voters: Set<NodeID> = [], learners: Set<NodeID> = []) {
        precondition(voters.isDisjoint(with: learners), "a member is either a voter or a learner")
        self.voters = voters
        self.learners = learners
    }

    public var members: Set<NodeID> { voters.union(learners) }
    public func contains(_ id: NodeID) -> Bool { voters.contains(id) || learners.contains(id) }
    public var quorum: Int { voters.count / 2 + 1 }

    /// The membership after `change`; changes that do not apply (adding a present voter, removing an
    /// absent member) leave it unchanged, as etcd does, so that every node computes the same result.
    public func applying(_ change: ConfigChange) -> Membership {
        var next = self
        switch change {
        case .addVoter(let id):
            next.learners.remove(id)
            next.voters.insert(id)
        case .addLearner(let id):
            // Demoting a voter to a learner is not a supported change.
            if !next.voters.contains(id) { next.learners.insert(id) }
        case .promoteLearner(let id):
            if next.learners.remove(id) != nil { next.voters.insert(id) }
        case .removeMember(let id):
            next.voters.remove(id)
            next.learners.remove(id)
        }
        return next
    }
}

/// One membership change; changes are made one at a time (see docs/raft.md).
public enum ConfigChange: Sendable, Equatable, Hashable {
    case addVoter(NodeID)
    case addLearner(NodeID)
    case promoteLearner(NodeID)
    case removeMember(NodeID)

    public var nodeID: NodeID {
        switch self {
        case .addVoter(let id), .addLearner(let id), .promoteLearner(let id), .removeMember(let id): return id
        }
    }
}

/// Identifies a snapshot: the log prefix it replaces and the membership at its last entry.
public struct SnapshotMetadata: Sendable, Equatable {
    public var index: LogIndex
    public var term: Term
    public var membership: Membership

    public init(index: LogIndex = 0, term: Term = 0, membership: Membership = Membership()) {
        self.index = index
        self.term = term
        self.membership = membership
    }
}

/// A piece of a snapshot in transit. Snapshots move in chunks of bounded size so that neither side ever holds
/// a whole state database in memory.
public struct SnapshotChunk: Sendable, Equatable {
    public var metadata: SnapshotMetadata
    /// Byte offset of `data` within the snapshot.
    public var offset: UInt64
    public var data: [UInt8]
    /// True on the last chunk.
    public var isLast: Bool

    public init(metadata: SnapshotMetadata, offset: UInt64, data: [UInt8], isLast: Bool) {
        self.metadata = metadata
        self.offset = offset
        self.data = data
        self.isLast = isLast
    }
}

/// A linearizable read point: once the local state machine has applied `index`, a read tagged `requestID`
/// may be served locally.
public struct ReadState: Sendable, Equatable {
    public var requestID: UInt64
    public var index: LogIndex

    public init(requestID: UInt64, index: LogIndex) {
        self.requestID = requestID
        self.index = index
    }
}

public enum Role: String, Sendable, Equatable {
    case follower, preCandidate, candidate, leader
}

/// A message between members.
public struct Message: Sendable, Equatable {
    public var from: NodeID
    public var to: NodeID
    /// The sender's term; for pre-votes, the term the sender would campaign in.
    public var term: Term
    public var body: Body

    public init(from: NodeID, to: NodeID, term: Term, body: Body) {
        self.from = from
        self.to = to
        self.term = term
        self.body = body
    }

    public enum Body: Sendable, Equatable {
        case preVote(lastIndex: LogIndex, lastTerm: Term)
        case preVoteResponse(granted: Bool)
        /// `leadershipTransfer` lets voters ignore their leader lease (check-quorum), because the current leader
        /// itself asked for this election.
        case vote(lastIndex: LogIndex, lastTerm: Term, leadershipTransfer: Bool)
        case voteResponse(granted: Bool)
        case append(prevIndex: LogIndex, prevTerm: Term, entries: [Entry], commit: LogIndex)
        /// `matchIndex` is the last index known to match when accepted. When rejected, `rejectedIndex` is the
        /// `prevIndex` that did not match and `hintIndex`/`hintTerm` point at the last entry whose term is at most
        /// the leader's term at `rejectedIndex` (fast backtracking).
        case appendResponse(accepted: Bool, matchIndex: LogIndex, rejectedIndex: LogIndex, hintIndex: LogIndex, hintTerm: Term)
        /// `readSequence` is the newest ReadIndex round this heartbeat confirms leadership for.
        case heartbeat(commit: LogIndex, readSequence: UInt64)
        case heartbeatResponse(readSequence: UInt64)
        case snapshot(SnapshotChunk)
        /// `nextOffset` is the offset the follower expects next; `done` once the whole snapshot is installed.
        case snapshotResponse(nextOffset: UInt64, done: Bool, snapshotIndex: LogIndex)
        case timeoutNow
        /// A follower asks the leader for a read index on behalf of `requestID`.
        case readIndex(requestID: UInt64)
        /// `index` is 0 when the leader could not serve the read (it must be retried).
        case readIndexResponse(requestID: UInt64, index: LogIndex)
    }

    /// Appends and heartbeats say what the sender's log holds and what is committed, not that anything is on the
    /// sender's disk: see ``Ready/earlyMessages``. Every response and vote does promise that.
    var promisesNothingDurable: Bool {
        switch body {
        case .append, .heartbeat: return true
        default: return false
        }
    }

    /// Bytes this message costs against transport limits.
    public var sizeBytes: Int {
        switch body {
        case .append(_, _, let entries, _): return 48 + entries.reduce(0) { $0 + $1.sizeBytes }
        case .snapshot(let chunk): return 64 + chunk.data.count
        default: return 48
        }
    }
}

/// Why the core refused a request. Descriptions are meant for users.
public enum RaftError: Error, Sendable, Equatable, CustomStringConvertible {
    /// This node is not the leader; `leader` is the one it knows, if any.
    case notLeader(leader: NodeID?)
    /// No leader is known.
    case noLeader
    case leadershipTransferInProgress
    /// A configuration change is still being applied, or the leader has not committed an entry of its term.
    case configChangePending
    case invalidConfigChange(String)
    case unknownMember(NodeID)
    /// The proposal was larger than the core accepts in one message.
    case proposalTooLarge(bytes: Int, limit: Int)
    /// The leader already holds its limit of uncommitted entries (it may be cut off from its quorum).
    case tooManyUncommittedEntries
    /// This node is no longer a member of the cluster.
    case removed
    /// The log storage could not be read consistently at start.
    case corruptState(String)

    public var description: String {
        switch self {
        case .notLeader(let leader):
            if let leader { return "not leader (leader is \(String(leader, radix: 16)))" }
            return "not leader"
        case .noLeader: return "no leader"
        case .leadershipTransferInProgress: return "leadership transfer in progress"
        case .configChangePending: return "a membership change is already in progress"
        case .invalidConfigChange(let why): return "invalid membership change: \(why)"
        case .unknownMember(let id): return "member \(String(id, radix: 16)) not found"
        case .proposalTooLarge(let bytes, let limit): return "proposal of \(bytes) bytes exceeds the limit of \(limit)"
        case .tooManyUncommittedEntries: return "too many uncommitted entries"
        case .removed: return "this member has been removed from the cluster"
        case .corruptState(let why): return "corrupt raft state: \(why)"
        }
    }
}
