/// The Raft consensus algorithm as a pure value: no I/O, no clock, no threads. Randomness comes from a seeded
/// generator, so the same inputs always produce the same outputs.
///
/// Feed it with ``tick()``, ``step(_:)``, ``propose(_:)``, ``proposeConfigChange(_:)``, ``readIndex(requestID:)``
/// and ``transferLeadership(to:)``; collect the work with ``ready()``, carry it out in the order ``Ready``
/// documents, then call ``advance(_:)``.
///
/// Design choices (docs/raft.md explains them):
/// - Pre-vote and check-quorum, so a partitioned node cannot disrupt a healthy leader on rejoining.
/// - Membership changes one at a time, taking effect when applied; a leader proposes one only after it has
///   committed an entry of its own term and applied every earlier change.
/// - Proposals on a follower are refused with ``RaftError/notLeader(leader:)``; the server forwards them.
/// - Snapshots stream in bounded chunks; neither side holds a whole snapshot in memory.
public struct RaftCore {
    public let id: NodeID
    let configuration: RaftConfiguration
    var log: RaftLog

    public private(set) var term: Term
    public private(set) var vote: NodeID
    /// The leader this node follows in `term`; 0 when unknown.
    public private(set) var leader: NodeID = 0
    public private(set) var role: Role = .follower
    /// Membership as of the applied index.
    public private(set) var membership: Membership

    var progress: [NodeID: Progress] = [:]
    var votesReceived: [NodeID: Bool] = [:]
    var electionElapsed = 0
    var heartbeatElapsed = 0
    var randomizedElectionTimeout = 0
    var random: SeededRandom
    /// The member leadership is being handed to; proposals are refused meanwhile.
    public private(set) var leadershipTransferee: NodeID = 0
    /// Index of the newest membership change in the log; the next may be proposed once it is applied.
    var pendingConfigChangeIndex: LogIndex = 0

    // ReadIndex: rounds of heartbeats confirm leadership for batches of reads.
    var readSequence: UInt64 = 0
    var readAcknowledged: [NodeID: UInt64] = [:]
    var readRounds: [ReadRound] = []
    var readsAwaitingRound: [ReadRequest] = []
    var readsAwaitingTermCommit: [ReadRequest] = []

    /// A snapshot arriving from the leader. Chunks continue it only if they come from the same leader and term:
    /// two leaders' files for the same snapshot index need not be byte-identical, and must never be mixed.
    var incomingSnapshot: (metadata: SnapshotMetadata, sender: NodeID, term: Term, nextOffset: UInt64)?

    // Output gathered for the next Ready.
    var outbox: [Message] = []
    var readStates: [ReadState] = []
    var chunksToStage: [SnapshotChunk] = []
    var persistedHardState: HardState
    var snapshotHanded = false
    var readyInFlight = false
    var lastReadyLeader: NodeID = 0
    var lastReadyRole: Role = .follower

    struct ReadRequest: Equatable {
        var requestID: UInt64
        /// The member that asked (this node for local reads).
        var origin: NodeID
    }

    struct ReadRound: Equatable {
        var sequence: UInt64
        var index: LogIndex
        var requests: [ReadRequest]
    }

    /// Restores a node from `storage`. `bootstrap` gives the initial membership of a new cluster and is used only
    /// when storage is empty; a node joining an existing cluster passes nil and learns everything from the leader.
    public init(configuration: RaftConfiguration, storage: any RaftLogStorage, bootstrap: Membership? = nil) throws(RaftError) {
        precondition(configuration.id != 0, "0 is not a valid member ID")
        precondition(configuration.electionTimeoutTicks > configuration.heartbeatTicks, "election timeout must exceed the heartbeat")
        id = configuration.id
        self.configuration = configuration
        random = SeededRandom(seed: configuration.randomSeed)
        let hardState = storage.hardState
        term = hardState.term
        vote = hardState.vote
        persistedHardState = hardState
        let snapshot = storage.snapshotMetadata
        let applied = max(configuration.appliedIndex, snapshot.index)
        guard storage.firstIndex >= 1, storage.lastIndex + 1 >= storage.firstIndex else {
            throw .corruptState("log bounds first \(storage.firstIndex) last \(storage.lastIndex)")
        }
        guard snapshot.index + 1 >= storage.firstIndex, snapshot.index <= storage.lastIndex else {
            throw .corruptState("snapshot at \(snapshot.index) outside the log \(storage.firstIndex)...\(storage.lastIndex)")
        }
        guard hardState.commit <= storage.lastIndex else {
            throw .corruptState("commit index \(hardState.commit) past the last log index \(storage.lastIndex)")
        }
        guard applied <= max(hardState.commit, snapshot.index) else {
            throw .corruptState("the state machine applied \(applied) but the log commits only \(hardState.commit): the log lost entries")
        }
        log = RaftLog(storage: storage, applied: applied)
        log.commit(to: max(hardState.commit, applied))
        var current = snapshot.membership
        if storage.lastIndex == 0 && snapshot.index == 0, let bootstrap {
            // A new cluster: its initial members become the first entries of the log, committed at term 1, so that
            // every member — including ones that join later and replay the log — derives the same membership.
            precondition(!bootstrap.voters.isEmpty, "a new cluster needs at least one voter")
            let changes = bootstrap.voters.sorted().map(ConfigChange.addVoter) + bootstrap.learners.sorted().map(ConfigChange.addLearner)
            log.append(changes.enumerated().map { Entry(term: 1, index: LogIndex($0.offset + 1), kind: .configChange, data: $0.element.encoded) })
            log.commit(to: LogIndex(changes.count))
            term = max(term, 1)
        } else if applied > snapshot.index {
            // Membership as of `applied`: the snapshot's, then every change applied since, read in bounded batches
            // (the log since the snapshot may hold hundreds of megabytes).
            var next = snapshot.index + 1
            while next <= applied {
                let batch = storage.entries(from: next, through: applied, maxBytes: 4 << 20)
                guard let last = batch.last else {
                    throw .corruptState("no entries from \(next) to the applied index \(applied)")
                }
                for entry in batch where entry.kind == .configChange {
                    guard let change = ConfigChange(encoded: entry.data) else {
                        throw .corruptState("undecodable membership change at index \(entry.index)")
                    }
                    current = current.applying(change)
                }
                next = last.index + 1
            }
        }
        membership = current
        resetRandomizedElectionTimeout()
    }

    // MARK: - Inputs

    /// Advances logical time by one tick.
    public mutating func tick() {
        switch role {
        case .leader: tickLeader()
        case .follower, .preCandidate, .candidate: tickElection()
        }
    }

    /// Appends `data` as a new entry if this node leads; returns the index it will commit at.
    @discardableResult
    public mutating func propose(_ data: [UInt8]) throws(RaftError) -> LogIndex {
        try checkCanPropose(bytes: data.count)
        return appendAsLeader([Entry(term: term, index: 0, kind: .normal, data: data)])
    }

    /// Proposes one membership change; see the type's documentation for when one is accepted.
    @discardableResult
    public mutating func proposeConfigChange(_ change: ConfigChange) throws(RaftError) -> LogIndex {
        try checkCanPropose(bytes: 9)
        guard pendingConfigChangeIndex <= log.applied, log.term(at: log.committed) == term else {
            throw .configChangePending
        }
        switch change {
        case .addVoter(let id):
            if membership.voters.contains(id) { throw .invalidConfigChange("member \(String(id, radix: 16)) is already a voter") }
        case .addLearner(let id):
            if membership.contains(id) { throw .invalidConfigChange("member \(String(id, radix: 16)) is already a member") }
        case .promoteLearner(let id):
            if !membership.learners.contains(id) { throw .invalidConfigChange("member \(String(id, radix: 16)) is not a learner") }
        case .removeMember(let id):
            if !membership.contains(id) { throw .unknownMember(id) }
            if membership.voters == [id] { throw .invalidConfigChange("cannot remove the last voter") }
        }
        let index = appendAsLeader([Entry(term: term, index: 0, kind: .configChange, data: change.encoded)])
        pendingConfigChangeIndex = index
        return index
    }

    /// Asks for a linearizable read point. The answer comes as a ``ReadState`` with `requestID` in a later Ready
    /// (after a heartbeat round confirms leadership); it never comes if leadership is lost, so callers time out.
    public mutating func readIndex(requestID: UInt64) throws(RaftError) {
        switch role {
        case .leader:
            handleReadIndex(ReadRequest(requestID: requestID, origin: id))
        case .follower:
            guard leader != 0 else { throw .noLeader }
            send(to: leader, .readIndex(requestID: requestID))
        case .preCandidate, .candidate:
            throw .noLeader
        }
    }

    /// Hands leadership to `target` once its log has caught up.
    public mutating func transferLeadership(to target: NodeID) throws(RaftError) {
        guard role == .leader else { throw leader == 0 ? .noLeader : .notLeader(leader: leader) }
        guard target != id else { return }
        guard membership.voters.contains(target), progress[target] != nil else { throw .unknownMember(target) }
        if leadershipTransferee == target { return }
        leadershipTransferee = target
        // The transfer is abandoned if it does not complete within an election timeout.
        electionElapsed = 0
        if progress[target]!.match == log.lastIndex {
            send(to: target, .timeoutNow)
        } else {
            sendAppend(to: target)
        }
    }

    /// Processes one message from another member.
    public mutating func step(_ message: Message) {
        guard message.to == id, message.from != id, message.from != 0 else { return }
        if message.term > term {
            if isCampaignRequest(message) {
                // Check-quorum lease: while a leader is heard from, ignore would-be disrupters.
                let transfer: Bool
                if case .vote(_, _, let flag) = message.body { transfer = flag } else { transfer = false }
                if configuration.checkQuorum && leader != 0 && electionElapsed < configuration.electionTimeoutTicks && !transfer {
                    return
                }
            }
            switch message.body {
            case .preVote:
                // A pre-vote does not change our term.
                break
            case .preVoteResponse(let granted) where granted:
                // Granted pre-votes carry the term we would campaign in.
                break
            case .append, .heartbeat, .snapshot:
                becomeFollower(term: message.term, leader: message.from)
            default:
                becomeFollower(term: message.term, leader: 0)
            }
        } else if message.term < term {
            switch message.body {
            case .append, .heartbeat:
                // A leader of an old term, perhaps back from a partition: tell it our term so it steps down.
                // (With check-quorum or pre-vote we would not otherwise raise its term.)
                send(to: message.from, .appendResponse(accepted: true, matchIndex: 0, rejectedIndex: 0, hintIndex: 0, hintTerm: 0))
            case .preVote:
                send(to: message.from, .preVoteResponse(granted: false))
            default:
                break
            }
            return
        }

        switch message.body {
        case .preVote(let lastIndex, let lastTerm), .vote(let lastIndex, let lastTerm, _):
            handleVoteRequest(message, lastIndex: lastIndex, lastTerm: lastTerm)
            return
        default:
            break
        }

        switch role {
        case .leader: stepLeader(message)
        case .candidate, .preCandidate: stepCandidate(message)
        case .follower: stepFollower(message)
        }
    }

    private func isCampaignRequest(_ message: Message) -> Bool {
        switch message.body {
        case .vote, .preVote: return true
        default: return false
        }
    }

    // MARK: - Ready

    /// The work accumulated since the last Ready, or nil when there is none.
    public mutating func ready() -> Ready? {
        precondition(!readyInFlight, "ready() called again before advance()")
        var ready = Ready()
        let hardState = currentHardState
        if hardState != persistedHardState { ready.hardState = hardState }
        if let snapshot = log.pendingSnapshot, !snapshotHanded {
            ready.snapshot = snapshot
        }
        ready.snapshotChunks = chunksToStage
        ready.entries = Array(log.unhandedUnstable)
        if role == .leader && persistedHardState.term == term {
            // Only once the term is durable: a leader elected in a Ready not yet persisted could otherwise send
            // entries of a term it forgets in a crash, then be elected again in that same term and number
            // different entries with it.
            for message in outbox {
                if message.promisesNothingDurable { ready.earlyMessages.append(message) } else { ready.messages.append(message) }
            }
        } else {
            ready.messages = outbox
        }
        ready.readStates = readStates
        ready.committed = log.committedToApply(maxBytes: configuration.maxCommittedBytesPerReady)
        ready.mustSync = !ready.entries.isEmpty || ready.snapshot != nil || !ready.snapshotChunks.isEmpty
            || hardState.term != persistedHardState.term || hardState.vote != persistedHardState.vote
        ready.leader = leader
        ready.role = role
        ready.term = term
        if ready.isEmpty && leader == lastReadyLeader && role == lastReadyRole { return nil }

        if ready.snapshot != nil { snapshotHanded = true }
        chunksToStage.removeAll()
        outbox.removeAll()
        readStates.removeAll()
        if let last = ready.entries.last { log.markHanded(stableTo: last.index) }
        if let last = ready.committed.last { log.markHanded(appliedTo: last.index) }
        lastReadyLeader = leader
        lastReadyRole = role
        readyInFlight = true
        return ready
    }

    /// Confirms that the driver carried out `ready`.
    public mutating func advance(_ ready: Ready) {
        precondition(readyInFlight, "advance() without a Ready in flight")
        readyInFlight = false
        if let hardState = ready.hardState { persistedHardState = hardState }
        if let snapshot = ready.snapshot {
            log.snapshotInstalled(snapshot)
            snapshotHanded = false
            membership = snapshot.membership
        }
        if let last = ready.entries.last {
            log.stable(to: last.index, term: last.term)
            if role == .leader, progress[id] != nil {
                _ = progress[id]!.acknowledge(upTo: log.durableLastIndex)
                if maybeCommit() { broadcastAppend() }
            }
        }
        if let last = ready.committed.last {
            for entry in ready.committed where entry.kind == .configChange {
                guard let change = ConfigChange(encoded: entry.data) else {
                    preconditionFailure("undecodable membership change at index \(entry.index)")
                }
                applyConfigChange(change)
            }
            log.applied(to: last.index)
        }
    }

    /// True when a Ready would carry something.
    public var hasReady: Bool {
        if readyInFlight { return false }
        return currentHardState != persistedHardState || !outbox.isEmpty || !readStates.isEmpty || !chunksToStage.isEmpty
            || !log.unhandedUnstable.isEmpty || (log.pendingSnapshot != nil && !snapshotHanded)
            || log.committed > log.appliedHanded || leader != lastReadyLeader || role != lastReadyRole
    }

    public var currentHardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }
    public var commitIndex: LogIndex { log.committed }
    public var appliedIndex: LogIndex { log.applied }
    public var lastIndex: LogIndex { log.lastIndex }

    /// The leader's view of a follower's replication, for status reporting.
    public func matchIndex(of member: NodeID) -> LogIndex? { progress[member]?.match }

    // MARK: - Roles

    mutating func reset(term newTerm: Term) {
        if term != newTerm {
            term = newTerm
            vote = 0
        }
        leader = 0
        electionElapsed = 0
        heartbeatElapsed = 0
        resetRandomizedElectionTimeout()
        leadershipTransferee = 0
        votesReceived = [:]
        progress = [:]
        readRounds = []
        readsAwaitingRound = []
        readsAwaitingTermCommit = []
        readAcknowledged = [:]
        incomingSnapshot = nil
    }

    mutating func becomeFollower(term newTerm: Term, leader newLeader: NodeID) {
        reset(term: newTerm)
        role = .follower
        leader = newLeader
    }

    mutating func becomePreCandidate() {
        precondition(role != .leader, "a leader does not campaign")
        // Pre-candidacy changes neither term nor vote: a node that cannot win leaves no trace.
        votesReceived = [:]
        leader = 0
        role = .preCandidate
        electionElapsed = 0
        resetRandomizedElectionTimeout()
    }

    mutating func becomeCandidate() {
        precondition(role != .leader, "a leader does not campaign")
        reset(term: term + 1)
        vote = id
        role = .candidate
    }

    mutating func becomeLeader() {
        precondition(role == .candidate, "only a candidate becomes leader")
        reset(term: term)
        leader = id
        role = .leader
        let lastIndex = log.lastIndex
        for member in membership.members {
            var entry = Progress(next: lastIndex + 1, isLearner: membership.learners.contains(member))
            if member == id {
                entry.match = log.durableLastIndex
                entry.state = .replicate
                entry.recentActive = true
            }
            progress[member] = entry
        }
        // Conservatively treat every entry we hold as a possible membership change: none may be proposed
        // until all of them are applied, which needs an entry of this term committed.
        pendingConfigChangeIndex = lastIndex
        _ = appendAsLeader([Entry(term: term, index: 0)])
    }

    mutating func campaign(preVote: Bool, transfer: Bool = false) {
        guard isPromotable else { return }
        let campaignTerm: Term
        if preVote {
            becomePreCandidate()
            campaignTerm = term + 1
        } else {
            becomeCandidate()
            campaignTerm = term
        }
        votesReceived[id] = true
        if tallyVotes() == .won {
            if preVote { campaign(preVote: false, transfer: transfer) } else { becomeLeader() }
            return
        }
        for voter in membership.voters.sorted() where voter != id {
            let body: Message.Body = preVote
                ? .preVote(lastIndex: log.lastIndex, lastTerm: log.lastTerm)
                : .vote(lastIndex: log.lastIndex, lastTerm: log.lastTerm, leadershipTransfer: transfer)
            outbox.append(Message(from: id, to: voter, term: campaignTerm, body: body))
        }
    }

    enum VoteResult { case won, lost, pending }

    func tallyVotes() -> VoteResult {
        var granted = 0
        var rejected = 0
        for voter in membership.voters {
            switch votesReceived[voter] {
            case true?: granted += 1
            case false?: rejected += 1
            case nil: break
            }
        }
        if granted >= membership.quorum { return .won }
        if rejected >= membership.quorum { return .lost }
        return .pending
    }

    /// Only a voter of the applied membership may campaign; learners and removed members never do.
    var isPromotable: Bool { membership.voters.contains(id) && log.pendingSnapshot == nil }

    mutating func resetRandomizedElectionTimeout() {
        let base = configuration.electionTimeoutTicks
        randomizedElectionTimeout = base + Int(random.next() % UInt64(base))
    }

    // MARK: - Ticks

    mutating func tickElection() {
        electionElapsed += 1
        if isPromotable && electionElapsed >= randomizedElectionTimeout {
            electionElapsed = 0
            campaign(preVote: configuration.preVote)
        }
    }

    mutating func tickLeader() {
        heartbeatElapsed += 1
        electionElapsed += 1
        if electionElapsed >= configuration.electionTimeoutTicks {
            electionElapsed = 0
            if configuration.checkQuorum {
                let active = membership.voters.filter { $0 == id || progress[$0]?.recentActive == true }.count
                for member in progress.keys where member != id { progress[member]!.recentActive = false }
                if active < membership.quorum {
                    becomeFollower(term: term, leader: 0)
                    return
                }
            }
            // A transfer that has not completed in an election timeout is abandoned.
            leadershipTransferee = 0
        }
        if heartbeatElapsed >= configuration.heartbeatTicks {
            heartbeatElapsed = 0
            broadcastHeartbeat()
        }
    }

    // MARK: - Votes

    mutating func handleVoteRequest(_ message: Message, lastIndex: LogIndex, lastTerm: Term) {
        let isPreVote: Bool
        if case .preVote = message.body { isPreVote = true } else { isPreVote = false }
        let canVote = vote == message.from
            || (vote == 0 && leader == 0)
            || (isPreVote && message.term > term)
        var logOK = log.isUpToDate(lastIndex: lastIndex, lastTerm: lastTerm)
        #if DEBUG
        if configuration.injectedBugs.contains(.voteWithoutLogCheck) { logOK = true }
        #endif
        if canVote && logOK {
            if isPreVote {
                outbox.append(Message(from: id, to: message.from, term: message.term, body: .preVoteResponse(granted: true)))
            } else {
                electionElapsed = 0
                vote = message.from
                send(to: message.from, .voteResponse(granted: true))
            }
        } else {
            send(to: message.from, isPreVote ? .preVoteResponse(granted: false) : .voteResponse(granted: false))
        }
    }

    mutating func stepCandidate(_ message: Message) {
        switch message.body {
        case .append, .heartbeat, .snapshot:
            // Someone won this term.
            becomeFollower(term: message.term, leader: message.from)
            stepFollower(message)
        case .preVoteResponse(let granted) where role == .preCandidate:
            recordVote(from: message.from, granted: granted)
        case .voteResponse(let granted) where role == .candidate:
            recordVote(from: message.from, granted: granted)
        case .timeoutNow:
            break
        default:
            break
        }
    }

    mutating func recordVote(from voter: NodeID, granted: Bool) {
        if votesReceived[voter] == nil { votesReceived[voter] = granted }
        switch tallyVotes() {
        case .won:
            if role == .preCandidate { campaign(preVote: false) } else { becomeLeader() }
        case .lost:
            becomeFollower(term: term, leader: 0)
        case .pending:
            break
        }
    }

    // MARK: - Follower

    mutating func stepFollower(_ message: Message) {
        switch message.body {
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            electionElapsed = 0
            leader = message.from
            handleAppend(from: message.from, prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit)
        case .heartbeat(let commit, let sequence):
            electionElapsed = 0
            leader = message.from
            // The leader sends min(match, commit), so we hold every entry up to it.
            log.commit(to: min(commit, log.lastIndex))
            send(to: message.from, .heartbeatResponse(readSequence: sequence))
        case .snapshot(let chunk):
            electionElapsed = 0
            leader = message.from
            handleSnapshotChunk(from: message.from, chunk)
        case .timeoutNow:
            // The leader asked us to take over: campaign at once, skipping pre-vote, and tell voters to ignore
            // their leader lease.
            campaign(preVote: false, transfer: true)
        case .readIndexResponse(let requestID, let index):
            if index > 0 { readStates.append(ReadState(requestID: requestID, index: index)) }
        case .readIndex(let requestID):
            // Not the leader (any more): the asker times out and retries.
            _ = requestID
        default:
            break
        }
    }

    mutating func handleAppend(from sender: NodeID, prevIndex: LogIndex, prevTerm: Term, entries: [Entry], commit: LogIndex) {
        if prevIndex < log.committed {
            send(to: sender, .appendResponse(accepted: true, matchIndex: log.committed, rejectedIndex: 0, hintIndex: 0, hintTerm: 0))
            return
        }
        if log.matchTerm(prevIndex, prevTerm) {
            var lastNew: LogIndex
            #if DEBUG
            if configuration.injectedBugs.contains(.keepConflictingSuffix) {
                // The bug: keep our own entries and only add the leader's beyond our end.
                let fresh = entries.filter { $0.index > log.lastIndex }
                if let first = fresh.first, first.index == log.lastIndex + 1 { log.append(fresh) }
                lastNew = prevIndex + LogIndex(entries.count)
                log.commit(to: min(commit, lastNew, log.lastIndex))
                send(to: sender, .appendResponse(accepted: true, matchIndex: lastNew, rejectedIndex: 0, hintIndex: 0, hintTerm: 0))
                return
            }
            #endif
            lastNew = log.appendFromLeader(prevIndex: prevIndex, entries: entries)
            log.commit(to: min(commit, lastNew))
            send(to: sender, .appendResponse(accepted: true, matchIndex: lastNew, rejectedIndex: 0, hintIndex: 0, hintTerm: 0))
        } else {
            let hint = log.findConflictByTerm(index: min(prevIndex, log.lastIndex), term: prevTerm)
            send(to: sender, .appendResponse(accepted: false, matchIndex: 0, rejectedIndex: prevIndex, hintIndex: hint.index, hintTerm: hint.term))
        }
    }

    mutating func handleSnapshotChunk(from sender: NodeID, _ chunk: SnapshotChunk) {
        let metadata = chunk.metadata
        if metadata.index <= log.committed {
            // Nothing to gain: our committed log already covers it.
            incomingSnapshot = nil
            send(to: sender, .snapshotResponse(nextOffset: 0, done: true, snapshotIndex: metadata.index))
            return
        }
        if log.pendingSnapshot != nil {
            // The previous snapshot is complete but not installed yet: staging another now would overwrite the
            // staged data it is about to be installed from. The leader retries after the next heartbeat.
            send(to: sender, .snapshotResponse(nextOffset: 0, done: false, snapshotIndex: metadata.index))
            return
        }
        if chunk.offset == 0 {
            incomingSnapshot = (metadata, sender, term, 0)
        }
        guard let incoming = incomingSnapshot, incoming.metadata == metadata, incoming.sender == sender,
              incoming.term == term, incoming.nextOffset == chunk.offset else {
            let continues = incomingSnapshot.map { $0.metadata == metadata && $0.sender == sender && $0.term == term } ?? false
            let expected = continues ? incomingSnapshot!.nextOffset : 0
            send(to: sender, .snapshotResponse(nextOffset: expected, done: false, snapshotIndex: metadata.index))
            return
        }
        chunksToStage.append(chunk)
        let next = chunk.offset + UInt64(chunk.data.count)
        guard chunk.isLast else {
            incomingSnapshot = (metadata, sender, term, next)
            send(to: sender, .snapshotResponse(nextOffset: next, done: false, snapshotIndex: metadata.index))
            return
        }
        incomingSnapshot = nil
        if log.matchTerm(metadata.index, metadata.term) {
            // Our log already holds the snapshot's last entry: commit up to it instead of replacing the log.
            log.commit(to: metadata.index)
        } else {
            log.restore(metadata)
            snapshotHanded = false
        }
        send(to: sender, .snapshotResponse(nextOffset: next, done: true, snapshotIndex: metadata.index))
    }

    // MARK: - Leader

    mutating func stepLeader(_ message: Message) {
        guard progress[message.from] != nil else {
            if case .readIndex(let requestID) = message.body {
                send(to: message.from, .readIndexResponse(requestID: requestID, index: 0))
            }
            return
        }
        progress[message.from]!.recentActive = true
        switch message.body {
        case .appendResponse(let accepted, let matchIndex, let rejectedIndex, let hintIndex, let hintTerm):
            handleAppendResponse(from: message.from, accepted: accepted, matchIndex: matchIndex,
                                 rejectedIndex: rejectedIndex, hintIndex: hintIndex, hintTerm: hintTerm)
        case .heartbeatResponse(let sequence):
            var peer = progress[message.from]!
            peer.probeSent = false
            // A full window may be full of lost messages: free a slot so the empty append below can discover the gap.
            if peer.state == .replicate && peer.inflight.count >= configuration.maxInflightMessages { peer.inflight.removeFirst() }
            progress[message.from] = peer
            if case .snapshot = peer.state {
                sendSnapshotChunk(to: message.from)
            } else if peer.match < log.lastIndex {
                sendAppend(to: message.from)
            }
            if sequence > (readAcknowledged[message.from] ?? 0) {
                readAcknowledged[message.from] = sequence
                releaseConfirmedReads()
            }
        case .snapshotResponse(let nextOffset, let done, let snapshotIndex):
            handleSnapshotResponse(from: message.from, nextOffset: nextOffset, done: done, snapshotIndex: snapshotIndex)
        case .readIndex(let requestID):
            handleReadIndex(ReadRequest(requestID: requestID, origin: message.from))
        default:
            break
        }
    }

    mutating func handleAppendResponse(from peer: NodeID, accepted: Bool, matchIndex: LogIndex,
                                       rejectedIndex: LogIndex, hintIndex: LogIndex, hintTerm: Term) {
        if accepted {
            guard matchIndex > 0 || progress[peer]!.match == 0 else { return }
            let wasProbe = progress[peer]!.state == .probe
            if progress[peer]!.acknowledge(upTo: matchIndex) {
                if wasProbe { progress[peer]!.becomeReplicate() }
                if case .snapshot = progress[peer]!.state, progress[peer]!.match >= snapshotIndexOf(peer) {
                    progress[peer]!.becomeProbe()
                    progress[peer]!.becomeReplicate()
                }
                if maybeCommit() {
                    broadcastAppend()
                } else {
                    sendAppendsWhileUnpaused(to: peer)
                    // A follower that was paused when the commit advanced has not heard of it: tell it now rather
                    // than at the next heartbeat.
                    if progress[peer]!.sentCommit < min(progress[peer]!.match, log.committed) { sendAppend(to: peer) }
                }
                if peer == leadershipTransferee && progress[peer]!.match == log.lastIndex {
                    send(to: peer, .timeoutNow)
                }
            } else if wasProbe {
                // Nothing new was matched, yet the follower confirms our match: replicate from there. Probing again
                // with an empty append would bounce back and forth forever when there is nothing new to send.
                if matchIndex == progress[peer]!.match { progress[peer]!.becomeReplicate() } else { progress[peer]!.probeSent = false }
                sendAppendsWhileUnpaused(to: peer)
                if progress[peer]!.state == .probe && progress[peer]!.match < log.lastIndex { sendAppend(to: peer) }
            }
        } else {
            var hint = hintIndex
            if hintTerm > 0 {
                // Skip every entry of ours whose term exceeds the follower's term at its hint.
                hint = log.findConflictByTerm(index: hintIndex, term: hintTerm).index
            }
            if progress[peer]!.decrease(rejected: rejectedIndex, hint: hint) {
                if progress[peer]!.state == .replicate { progress[peer]!.becomeProbe() }
                sendAppend(to: peer)
            }
        }
    }

    private func snapshotIndexOf(_ peer: NodeID) -> LogIndex {
        if case .snapshot(let metadata, _) = progress[peer]!.state { return metadata.index }
        return 0
    }

    mutating func handleSnapshotResponse(from peer: NodeID, nextOffset: UInt64, done: Bool, snapshotIndex: LogIndex) {
        guard case .snapshot(let metadata, let confirmed) = progress[peer]!.state, metadata.index == snapshotIndex else { return }
        if done {
            progress[peer]!.match = max(progress[peer]!.match, metadata.index)
            progress[peer]!.becomeProbe()
            sendAppend(to: peer)
            return
        }
        // Only a response that moves the offset triggers a send, so duplicated responses cannot multiply chunks.
        guard nextOffset != confirmed else { return }
        progress[peer]!.state = .snapshot(metadata, confirmedOffset: nextOffset)
        sendSnapshotChunk(to: peer)
    }

    mutating func sendAppendsWhileUnpaused(to peer: NodeID) {
        // Pipelining: keep sending while the window allows and there is something to send.
        while let entry = progress[peer], entry.state == .replicate, !entry.isPaused(maxInflight: configuration.maxInflightMessages),
              entry.next <= log.lastIndex {
            sendAppend(to: peer)
        }
    }

    mutating func sendAppend(to peer: NodeID, allowEmpty: Bool = true) {
        guard var entry = progress[peer], peer != id else { return }
        if entry.isPaused(maxInflight: configuration.maxInflightMessages) { return }
        let prevIndex = entry.next - 1
        guard let prevTerm = log.term(at: prevIndex), entry.next >= log.firstIndex || entry.next > log.lastIndex else {
            startSnapshot(to: peer)
            return
        }
        let entries = log.entries(from: entry.next, maxBytes: configuration.maxMessageBytes)
        if entries.isEmpty && !allowEmpty { return }
        switch entry.state {
        case .replicate:
            if let last = entries.last {
                entry.next = last.index + 1
                entry.inflight.append(last.index)
            }
        case .probe:
            entry.probeSent = true
        case .snapshot:
            preconditionFailure("appends are paused while a snapshot streams")
        }
        entry.sentCommit = max(entry.sentCommit, min(log.committed, prevIndex + LogIndex(entries.count)))
        progress[peer] = entry
        send(to: peer, .append(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: log.committed))
    }

    mutating func startSnapshot(to peer: NodeID) {
        let metadata = log.storage.snapshotMetadata
        precondition(metadata.index > 0, "entries are compacted but there is no snapshot")
        progress[peer]!.becomeSnapshot(metadata)
        sendSnapshotChunk(to: peer)
    }

    mutating func sendSnapshotChunk(to peer: NodeID) {
        guard case .snapshot(let metadata, let offset) = progress[peer]!.state else { return }
        let current = log.storage.snapshotMetadata
        if current != metadata {
            // A newer snapshot replaced the one streaming: restart with it, from the beginning.
            progress[peer]!.becomeSnapshot(current)
            return sendSnapshotChunk(to: peer)
        }
        let (data, isLast) = log.storage.snapshotData(offset: offset, maxBytes: configuration.maxSnapshotChunkBytes)
        send(to: peer, .snapshot(SnapshotChunk(metadata: metadata, offset: offset, data: data, isLast: isLast)))
    }

    mutating func broadcastAppend() {
        for peer in progress.keys.sorted() where peer != id {
            sendAppend(to: peer)
        }
    }

    mutating func broadcastHeartbeat() {
        for peer in progress.keys.sorted() where peer != id {
            let commit = min(progress[peer]!.match, log.committed)
            progress[peer]!.sentCommit = max(progress[peer]!.sentCommit, commit)
            send(to: peer, .heartbeat(commit: commit, readSequence: readSequence))
        }
    }

    /// Raft §5.4.2: the leader commits only entries of its own term by counting replicas; earlier entries commit
    /// with them.
    mutating func maybeCommit() -> Bool {
        let matches = membership.voters.map { progress[$0]?.match ?? 0 }.sorted(by: >)
        guard !matches.isEmpty else { return false }
        let candidate = matches[membership.quorum - 1]
        guard candidate > log.committed else { return false }
        var allowed = log.term(at: candidate) == term
        #if DEBUG
        if configuration.injectedBugs.contains(.commitPreviousTermByCounting) { allowed = true }
        #endif
        guard allowed else { return false }
        let hadTermCommit = log.term(at: log.committed) == term
        log.commit(to: candidate)
        if !hadTermCommit && log.term(at: log.committed) == term {
            // Reads that waited for the first commit of this term may proceed now.
            let waiting = readsAwaitingTermCommit
            readsAwaitingTermCommit = []
            for request in waiting { handleReadIndex(request) }
        }
        return true
    }

    mutating func checkCanPropose(bytes: Int) throws(RaftError) {
        guard role == .leader else {
            throw leader == 0 ? .noLeader : .notLeader(leader: leader)
        }
        guard progress[id] != nil else { throw .removed }
        guard leadershipTransferee == 0 else { throw .leadershipTransferInProgress }
        guard bytes <= configuration.maxProposalBytes else {
            throw .proposalTooLarge(bytes: bytes, limit: configuration.maxProposalBytes)
        }
        guard log.lastIndex - log.committed < LogIndex(configuration.maxUncommittedEntries) else {
            throw .tooManyUncommittedEntries
        }
    }

    mutating func appendAsLeader(_ entries: [Entry]) -> LogIndex {
        var index = log.lastIndex
        let numbered = entries.map { entry -> Entry in
            index += 1
            var entry = entry
            entry.term = term
            entry.index = index
            return entry
        }
        log.append(numbered)
        // Our own acknowledgement counts once the driver has persisted the entries (see advance).
        broadcastAppend()
        return index
    }

    // MARK: - ReadIndex

    mutating func handleReadIndex(_ request: ReadRequest) {
        guard log.term(at: log.committed) == term else {
            // Until an entry of this term commits, our commit index may lag the true one.
            readsAwaitingTermCommit.append(request)
            return
        }
        if membership.voters == [id] {
            deliverRead(request, index: log.committed)
            return
        }
        readsAwaitingRound.append(request)
        if readRounds.isEmpty { startReadRound() }
    }

    /// Starts a heartbeat round that confirms leadership for every read waiting for one: reads that arrive while
    /// a round is under way join the next, so one round serves a whole batch.
    mutating func startReadRound() {
        guard !readsAwaitingRound.isEmpty else { return }
        readSequence += 1
        readRounds.append(ReadRound(sequence: readSequence, index: log.committed, requests: readsAwaitingRound))
        readsAwaitingRound = []
        broadcastHeartbeat()
    }

    mutating func releaseConfirmedReads() {
        let acknowledged = membership.voters.map { $0 == id ? UInt64.max : (readAcknowledged[$0] ?? 0) }.sorted(by: >)
        let confirmed = acknowledged[membership.quorum - 1]
        var released = false
        while let round = readRounds.first, round.sequence <= confirmed {
            readRounds.removeFirst()
            for request in round.requests { deliverRead(request, index: round.index) }
            released = true
        }
        if released && readRounds.isEmpty { startReadRound() }
    }

    mutating func deliverRead(_ request: ReadRequest, index: LogIndex) {
        if request.origin == id {
            readStates.append(ReadState(requestID: request.requestID, index: index))
        } else {
            send(to: request.origin, .readIndexResponse(requestID: request.requestID, index: index))
        }
    }

    // MARK: - Membership

    mutating func applyConfigChange(_ change: ConfigChange) {
        membership = membership.applying(change)
        guard role == .leader else {
            if !membership.voters.contains(id) && (role == .candidate || role == .preCandidate) {
                becomeFollower(term: term, leader: leader)
            }
            return
        }
        let lastIndex = log.lastIndex
        var added: [NodeID] = []
        for member in membership.members.sorted() where progress[member] == nil {
            progress[member] = Progress(next: lastIndex + 1, isLearner: membership.learners.contains(member))
            progress[member]!.recentActive = true
            added.append(member)
        }
        for member in Array(progress.keys) {
            if !membership.contains(member) {
                progress[member] = nil
                readAcknowledged[member] = nil
            } else {
                progress[member]!.isLearner = membership.learners.contains(member)
            }
        }
        if leadershipTransferee != 0 && !membership.voters.contains(leadershipTransferee) { leadershipTransferee = 0 }
        if !membership.voters.contains(id) {
            // Removed (or demoted): hand over to the most up-to-date voter so the cluster need not wait an
            // election timeout, then step down.
            if let successor = membership.voters.max(by: { (progress[$0]?.match ?? 0, $1) < (progress[$1]?.match ?? 0, $0) }),
               progress[successor]?.match == log.lastIndex {
                send(to: successor, .timeoutNow)
            }
            becomeFollower(term: term, leader: 0)
            return
        }
        // A smaller quorum may commit more at once; a new member needs its first probe.
        if maybeCommit() {
            broadcastAppend()
        } else {
            for member in added { sendAppend(to: member) }
        }
        releaseConfirmedReads()
    }

    // MARK: - Output

    mutating func send(to peer: NodeID, _ body: Message.Body) {
        outbox.append(Message(from: id, to: peer, term: term, body: body))
    }
}
