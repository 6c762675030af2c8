import Foundation
@testable import RaftKV

/// Parameters of one simulated run, all derived from its seed.
struct SimulationOptions: CustomStringConvertible {
    var seed: UInt64
    var clusterSize: Int
    var steps: Int
    var stepsPerTick: Int
    var maxDelaySteps: Int
    var dropPercent: Int
    var duplicatePercent: Int
    var faultEveryTicks: Int
    var proposeEverySteps: Int
    var membershipChanges: Bool
    var preVote: Bool
    var checkQuorum: Bool
    var maxMessageBytes: Int
    var maxInflight: Int
    var snapshotChunkBytes: Int
    var snapshotPadding: Int
    #if DEBUG
    var injectedBugs: Set<InjectedBug> = []
    #endif

    static func random(seed: UInt64) -> SimulationOptions {
        var random = SeededRandom(seed: seed ^ 0x5eed)
        func pick(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &random) }
        let fullFeatured = pick(0...3) != 0
        return SimulationOptions(
            seed: seed,
            clusterSize: pick(0...1) == 0 ? 3 : 5,
            steps: 4000,
            stepsPerTick: 4,
            maxDelaySteps: pick(1...6),
            dropPercent: pick(0...8),
            duplicatePercent: pick(0...4),
            faultEveryTicks: pick(8...30),
            proposeEverySteps: pick(2...8),
            membershipChanges: pick(0...2) != 0,
            preVote: fullFeatured || pick(0...1) == 0,
            checkQuorum: fullFeatured || pick(0...1) == 0,
            maxMessageBytes: [64, 200, 1 << 20][pick(0...2)],
            maxInflight: pick(1...8),
            snapshotChunkBytes: pick(16...96),
            snapshotPadding: pick(0...300)
        )
    }

    var description: String {
        var text = "seed=\(seed) nodes=\(clusterSize) delay≤\(maxDelaySteps) drop=\(dropPercent)% dup=\(duplicatePercent)% "
            + "preVote=\(preVote) checkQuorum=\(checkQuorum) membership=\(membershipChanges) maxMessageBytes=\(maxMessageBytes)"
        #if DEBUG
        if !injectedBugs.isEmpty { text += " bugs=\(injectedBugs.map(\.rawValue).sorted())" }
        #endif
        return text
    }
}

/// A deterministic cluster: real cores, in-memory storage, a lossy reordering network and a fault schedule, all
/// driven by one seed. Every step checks Raft's safety properties; the end checks liveness after healing.
final class Simulator {
    struct InFlight {
        var deliverAt: Int
        var order: UInt64
        var message: Message
    }

    let options: SimulationOptions
    var random: SeededRandom
    var nodes: [NodeID: SimulatedNode] = [:]
    var removed: Set<NodeID> = []
    var network: [InFlight] = []
    var messageOrder: UInt64 = 0
    /// Links that drop everything, as unordered pairs.
    var cutLinks: Set<[NodeID]> = []
    var step = 0
    var nextNodeID: NodeID
    var violations: [String] = []

    // What the checker knows.
    var leaderOfTerm: [Term: NodeID] = [:]
    /// The first entry applied anywhere at each index, and the digest after it.
    var appliedAt: [LogIndex: (term: Term, digest: UInt64)] = [:]
    var maxApplied: LogIndex = 0
    /// The data of the entry seen at each (index, term) anywhere.
    var entryAt: [LogIndex: [Term: [UInt8]]] = [:]
    var proposals: [String: (node: NodeID, index: LogIndex, term: Term)] = [:]
    var acknowledged: [String: LogIndex] = [:]
    var proposalCounter = 0
    var faultsInjected = 0
    var snapshotsInstalled = 0
    var membershipChangesApplied = 0

    init(options: SimulationOptions) throws {
        self.options = options
        random = SeededRandom(seed: options.seed)
        let members = Set((1...NodeID(options.clusterSize)))
        nextNodeID = NodeID(options.clusterSize) + 1
        for id in members.sorted() {
            nodes[id] = try SimulatedNode(id: id, configuration: configuration(for: id), bootstrap: Membership(voters: members))
        }
    }

    func configuration(for id: NodeID) -> RaftConfiguration {
        var configuration = RaftConfiguration(id: id, randomSeed: options.seed &* 1_000_003 &+ id)
        configuration.electionTimeoutTicks = 10
        configuration.heartbeatTicks = 2
        configuration.preVote = options.preVote
        configuration.checkQuorum = options.checkQuorum
        configuration.maxMessageBytes = options.maxMessageBytes
        configuration.maxInflightMessages = options.maxInflight
        configuration.maxSnapshotChunkBytes = options.snapshotChunkBytes
        #if DEBUG
        configuration.injectedBugs = options.injectedBugs
        #endif
        return configuration
    }

    /// Faults (drops, duplicates, crashes) happen only until the cluster is healed.
    var faultsActive = true

    func chance(_ percent: Int) -> Bool {
        faultsActive && percent > 0 && Int.random(in: 0..<100, using: &random) < percent
    }

    func violation(_ text: String) {
        if violations.count < 20 { violations.append("step \(step): \(text)") }
    }

    // MARK: - Running

    /// Runs the faulty phase, then heals everything and checks that the cluster makes progress.
    func run() throws {
        while step < options.steps && violations.isEmpty {
            try advanceStep(faults: true)
        }
        guard violations.isEmpty else { return }
        try heal()
        try checkLiveness()
        checkLogMatching()
    }

    func advanceStep(faults: Bool) throws {
        step += 1
        if step % options.stepsPerTick == 0 {
            for id in nodes.keys.sorted() { nodes[id]!.core?.tick() }
            if faults && (step / options.stepsPerTick) % options.faultEveryTicks == 0 { try injectFault() }
            if faults && step % (options.stepsPerTick * 25) == 0 { takeSnapshots() }
        }
        if faults && step % options.proposeEverySteps == 0 { proposeFromClient() }
        deliverDueMessages()
        for id in nodes.keys.sorted() {
            // The applier catches up at its own pace.
            if let node = nodes[id], node.isUp, !node.pendingApply.isEmpty, chance(30) { applyPending(node) }
            try drain(id)
        }
        checkRoles()
    }

    func deliverDueMessages() {
        var due: [InFlight] = []
        network.removeAll { item in
            if item.deliverAt <= step { due.append(item); return true }
            return false
        }
        // Reordering: messages due in the same step arrive in random order.
        due.shuffle(using: &random)
        for item in due {
            guard let node = nodes[item.message.to], node.isUp else { continue }
            node.core!.step(item.message)
        }
    }

    func send(_ message: Message) {
        if cutLinks.contains([min(message.from, message.to), max(message.from, message.to)]) { return }
        if chance(options.dropPercent) { return }
        let copies = chance(options.duplicatePercent) ? 2 : 1
        for _ in 0..<copies {
            messageOrder += 1
            let delay = Int.random(in: 1...options.maxDelaySteps, using: &random)
            network.append(InFlight(deliverAt: step + delay, order: messageOrder, message: message))
        }
    }

    /// Carries out every Ready of one node, in the documented order, with crash points in between.
    func drain(_ id: NodeID) throws {
        guard let node = nodes[id] else { return }
        var rounds = 0
        while node.isUp, let ready = node.core!.ready() {
            rounds += 1
            precondition(rounds < 10_000, "node \(id) produces Readys forever")
            ready.earlyMessages.forEach(send)
            // A leader may crash having sent entries it never persisted.
            if !ready.earlyMessages.isEmpty && !ready.entries.isEmpty && chance(1) { node.crash(); return }
            #if DEBUG
            if options.injectedBugs.contains(.acknowledgeBeforePersist) {
                // The bug: messages leave before the entries they acknowledge are durable, and a crash may follow.
                ready.messages.forEach(send)
                if chance(3) { node.crash(); faultsInjected += 1; return }
            }
            #endif
            for chunk in ready.snapshotChunks { try node.storage.stageSnapshotChunk(chunk) }
            if let snapshot = ready.snapshot {
                // The node waits for its applier before restoring the state it writes to.
                applyPending(node)
                try node.storage.installStagedSnapshot(snapshot)
                if chance(1) { node.crash(); return }
                guard let restored = DigestStateMachine(snapshot: node.storage.snapshotBytes) else {
                    violation("node \(id) received an unreadable snapshot at \(snapshot.index)")
                    return
                }
                if let known = appliedAt[snapshot.index], known.digest != restored.digest {
                    violation("node \(id) installed a snapshot at \(snapshot.index) whose state differs from what was applied there")
                }
                node.machine = restored
                snapshotsInstalled += 1
            }
            try node.storage.save(hardState: ready.hardState, entries: ready.entries, sync: ready.mustSync)
            observePersisted(id, ready.entries)
            if chance(1) { node.crash(); return }
            #if DEBUG
            if !options.injectedBugs.contains(.acknowledgeBeforePersist) { ready.messages.forEach(send) }
            #else
            ready.messages.forEach(send)
            #endif
            if !ready.committed.isEmpty && !ready.committed.contains(where: { $0.kind == .configChange }) && chance(50) {
                // Handed to the applier: the core advances before the state machine applies them (Ready step 5).
                node.pendingApply += ready.committed
            } else {
                // A membership change waits for everything before it, and for itself, to be applied.
                applyPending(node)
                for entry in ready.committed {
                    apply(entry, on: node)
                    if chance(1) && chance(20) { node.crash(); return }
                }
            }
            node.core!.advance(ready)
        }
    }

    /// Applies what the node's applier holds, in order.
    func applyPending(_ node: SimulatedNode) {
        let pending = node.pendingApply
        node.pendingApply = []
        for entry in pending { apply(entry, on: node) }
    }

    func apply(_ entry: Entry, on node: SimulatedNode) {
        guard entry.index == node.machine.appliedIndex + 1 else {
            if entry.index > node.machine.appliedIndex + 1 {
                violation("node \(node.id) applied \(entry.index) after \(node.machine.appliedIndex): a gap")
            } else {
                violation("node \(node.id) applied \(entry.index) again (applied \(node.machine.appliedIndex))")
            }
            return
        }
        node.machine.digest = DigestStateMachine.chain(node.machine.digest, entry)
        node.machine.appliedIndex = entry.index
        let known = appliedAt[entry.index]
        if let known {
            if known.term != entry.term || known.digest != node.machine.digest {
                violation("node \(node.id) applied a different entry at \(entry.index) (term \(entry.term), first applied term \(known.term))")
            }
        } else {
            appliedAt[entry.index] = (entry.term, node.machine.digest)
            maxApplied = max(maxApplied, entry.index)
        }
        if let value = String(bytes: entry.data, encoding: .utf8), let proposal = proposals[value],
           proposal.node == node.id, proposal.index == entry.index, proposal.term == entry.term {
            acknowledged[value] = entry.index
        }
        if entry.kind == .configChange && entry.term > 1 && appliedAt[entry.index]?.digest == node.machine.digest && known == nil {
            membershipChangesApplied += 1
        }
        if entry.kind == .configChange, case .removeMember(let gone)? = ConfigChange(encoded: entry.data) {
            removed.insert(gone)
        }
    }

    func observePersisted(_ id: NodeID, _ entries: [Entry]) {
        for entry in entries {
            if let known = entryAt[entry.index]?[entry.term], known != entry.data {
                violation("log matching: two different entries at index \(entry.index) term \(entry.term)")
            }
            entryAt[entry.index, default: [:]][entry.term] = entry.data
        }
    }

    func checkRoles() {
        for id in nodes.keys.sorted() {
            guard let core = nodes[id]!.core, core.role == .leader else { continue }
            if let other = leaderOfTerm[core.term] {
                if other != id { violation("election safety: \(other) and \(id) both lead term \(core.term)") }
                continue
            }
            leaderOfTerm[core.term] = id
            // Leader completeness: a new leader holds every entry applied anywhere (above its compacted prefix).
            let first = nodes[id]!.storage.firstIndex
            var index = max(first, 1)
            while index <= maxApplied {
                if let applied = appliedAt[index], core.log.term(at: index) != applied.term {
                    violation("leader completeness: leader \(id) of term \(core.term) lacks committed entry \(index) (term \(applied.term))")
                    break
                }
                index += 1
            }
        }
    }

    /// Log matching over whole logs: equal terms at an index imply equal prefixes.
    func checkLogMatching() {
        let live = nodes.values.filter(\.isUp).sorted { $0.id < $1.id }
        for (i, a) in live.enumerated() {
            for b in live[(i + 1)...] {
                let logA = a.core!.log, logB = b.core!.log
                let low = max(logA.firstIndex, logB.firstIndex)
                let high = min(logA.lastIndex, logB.lastIndex)
                guard low <= high else { continue }
                var matchedFrom: LogIndex? = nil
                var index = high
                while index >= low {
                    if logA.term(at: index) == logB.term(at: index) { matchedFrom = index; break }
                    index -= 1
                }
                guard let top = matchedFrom else { continue }
                let entriesA = logA.entries(from: low, through: top, maxBytes: .max)
                let entriesB = logB.entries(from: low, through: top, maxBytes: .max)
                if entriesA != entriesB { violation("log matching: \(a.id) and \(b.id) agree at \(top) but differ below it") }
            }
        }
    }

    // MARK: - Clients and faults

    /// Leaders, newest term first. Sets and dictionaries iterate in a per-process random order, so everything a
    /// seed's choices depend on is sorted first: the same seed must replay the same run in any process.
    var leaders: [SimulatedNode] {
        nodes.values.filter { $0.core?.role == .leader }.sorted { ($0.core!.term, $1.id) > ($1.core!.term, $0.id) }
    }

    func proposeFromClient() {
        guard let leader = leaders.first else { return }
        proposalCounter += 1
        let value = "v\(proposalCounter)"
        if let index = try? leader.core!.propose(Array(value.utf8)) {
            proposals[value] = (leader.id, index, leader.core!.term)
        }
    }

    func takeSnapshots() {
        for id in nodes.keys.sorted() {
            guard let node = nodes[id], let core = node.core, chance(50) else { continue }
            // As the node: a snapshot waits for the applier, so that the state and the core's membership agree.
            applyPending(node)
            let applied = node.machine.appliedIndex
            guard applied > node.storage.snapshotMetadata.index, applied == core.appliedIndex,
                  let term = node.storage.term(at: applied), applied <= node.storage.lastIndex else { continue }
            let file = node.storage.temporarySnapshotFile()
            node.storage.writeSnapshotData(node.machine.snapshotBytes(padding: options.snapshotPadding), to: file)
            let metadata = SnapshotMetadata(index: applied, term: term, membership: core.membership)
            try? node.storage.adoptLocalSnapshot(metadata, file: file, retainEntries: UInt64(Int.random(in: 0...10, using: &random)))
        }
    }

    func injectFault() throws {
        faultsInjected += 1
        let ids = nodes.keys.sorted()
        switch Int.random(in: 0..<10, using: &random) {
        case 0, 1:
            // Crash one node, or the leader.
            let victim = Bool.random(using: &random) ? leaders.first?.id : ids.randomElement(using: &random)
            if let victim, nodes[victim]!.isUp { nodes[victim]!.crash() }
        case 2, 3:
            for id in ids where !nodes[id]!.isUp && !removed.contains(id) { try nodes[id]!.start() }
        case 4:
            // Partition into two random sides.
            cutLinks = []
            let side = Set(ids.filter { _ in Bool.random(using: &random) })
            for a in ids { for b in ids where a < b && side.contains(a) != side.contains(b) { cutLinks.insert([a, b]) } }
        case 5:
            // Isolate the leader.
            cutLinks = []
            if let leader = leaders.first?.id {
                for other in ids where other != leader { cutLinks.insert([min(leader, other), max(leader, other)]) }
            }
        case 6:
            cutLinks = []
        case 7:
            if let leader = leaders.first, let target = leader.core!.membership.voters.sorted().filter({ $0 != leader.id }).randomElement(using: &random) {
                try? leader.core!.transferLeadership(to: target)
            }
        default:
            if options.membershipChanges { changeMembership() }
        }
    }

    func changeMembership() {
        guard let leader = leaders.first else { return }
        let membership = leader.core!.membership
        var change: ConfigChange
        if let learner = membership.learners.min() {
            change = .promoteLearner(learner)
        } else if membership.voters.count < 5 && Bool.random(using: &random) {
            change = .addLearner(nextNodeID)
        } else if membership.voters.count > 3 {
            change = .removeMember(membership.voters.sorted().randomElement(using: &random)!)
        } else {
            change = .addLearner(nextNodeID)
        }
        do {
            try leader.core!.proposeConfigChange(change)
        } catch {
            return
        }
        if case .addLearner(let id) = change {
            nextNodeID += 1
            nodes[id] = try? SimulatedNode(id: id, configuration: configuration(for: id), bootstrap: nil)
        }
    }

    // MARK: - Healing and liveness

    func heal() throws {
        faultsActive = false
        cutLinks = []
        for id in nodes.keys.sorted() where !nodes[id]!.isUp && !removed.contains(id) { try nodes[id]!.start() }
    }

    func checkLiveness() throws {
        let limitSteps = step + options.stepsPerTick * 10 * 30
        var marker: String? = nil
        while step < limitSteps {
            try advanceStep(faults: false)
            if !violations.isEmpty { return }
            // Removed members are shut down, as the server does once it applies its own removal.
            for id in removed where nodes[id]?.isUp == true { nodes[id]!.crash() }
            if marker == nil, let leader = leaders.first, leader.core!.leadershipTransferee == 0 {
                proposalCounter += 1
                let value = "final\(proposalCounter)"
                if let index = try? leader.core!.propose(Array(value.utf8)) {
                    proposals[value] = (leader.id, index, leader.core!.term)
                    marker = value
                }
            }
            if let marker, acknowledged[marker] != nil, let leader = leaders.first {
                let members = leader.core!.membership.members.filter { !removed.contains($0) }
                let target = leader.core!.commitIndex
                let caughtUp = members.allSatisfy { nodes[$0]?.isUp == true && nodes[$0]!.machine.appliedIndex == target }
                if caughtUp { return }
            }
            if let pending = marker, let proposal = proposals[pending], nodes[proposal.node]?.core?.role != .leader, acknowledged[pending] == nil {
                marker = nil
            }
        }
        violation("liveness: no commit on every member within 300 ticks after healing (leader: \(leaders.first.map { String($0.id) } ?? "none"))")
    }
}
