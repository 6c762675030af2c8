import Foundation
@testable import RaftKV

/// The state machine of a scenario node: it records every applied entry, so tests can compare what two nodes
/// applied at an index. Its snapshot encodes the applied entries (plus optional padding, so that snapshots span
/// several chunks).
struct RecordingStateMachine: Equatable {
    var appliedIndex: LogIndex = 0
    /// Applied entries, oldest first (entries restored from a snapshot included).
    var entries: [Entry] = []

    mutating func apply(_ entry: Entry) -> String? {
        guard entry.index == appliedIndex + 1 else {
            return "applied \(entry.index) after \(appliedIndex)"
        }
        entries.append(entry)
        appliedIndex = entry.index
        return nil
    }

    /// The applied entry at `index`, if this machine applied one there.
    func entry(at index: LogIndex) -> Entry? { entries.first { $0.index == index } }

    /// The data of the applied normal entries with a payload, as strings.
    var values: [String] {
        entries.filter { $0.kind == .normal && !$0.data.isEmpty }.map { String(decoding: $0.data, as: UTF8.self) }
    }

    func snapshotBytes(padding: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        func put(_ value: UInt64) {
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
        }
        put(appliedIndex)
        put(UInt64(entries.count))
        for entry in entries {
            put(entry.index)
            put(entry.term)
            bytes.append(entry.kind.rawValue)
            put(UInt64(entry.data.count))
            bytes.append(contentsOf: entry.data)
        }
        put(UInt64(padding))
        for i in 0..<padding { bytes.append(UInt8(truncatingIfNeeded: i)) }
        return bytes
    }

    init() {}

    init?(snapshot bytes: [UInt8]) {
        var at = 0
        func get() -> UInt64? {
            guard at + 8 <= bytes.count else { return nil }
            defer { at += 8 }
            return bytes[at..<(at + 8)].reduce(0) { $0 << 8 | UInt64($1) }
        }
        guard let applied = get(), let count = get() else { return nil }
        appliedIndex = applied
        for _ in 0..<count {
            guard let index = get(), let term = get() else { return nil }
            guard at < bytes.count, let kind = EntryKind(rawValue: bytes[at]) else { return nil }
            at += 1
            guard let length = get(), at + Int(length) <= bytes.count else { return nil }
            entries.append(Entry(term: term, index: index, kind: kind, data: Array(bytes[at..<(at + Int(length))])))
            at += Int(length)
        }
    }
}

/// One member: the real core over `MemoryLogStorage`, plus the recording state machine.
final class ScenarioNode {
    let id: NodeID
    var configuration: RaftConfiguration
    let bootstrap: Membership?
    let storage = MemoryLogStorage()
    var machine = RecordingStateMachine()
    /// nil while crashed.
    var core: RaftCore?
    /// Every read state this node's Readys handed out, in order.
    var readStates: [ReadState] = []
    /// Every Ready this node produced (for assertions on batching, mustSync, ...).
    var readies: [Ready] = []

    init(id: NodeID, configuration: RaftConfiguration, bootstrap: Membership?) throws {
        self.id = id
        self.configuration = configuration
        self.bootstrap = bootstrap
        try start()
    }

    var isUp: Bool { core != nil }

    func start() throws {
        precondition(core == nil, "node \(id) is already running")
        var configuration = self.configuration
        configuration.appliedIndex = machine.appliedIndex
        core = try RaftCore(configuration: configuration, storage: storage, bootstrap: bootstrap)
    }
}

/// A synchronous, fully controlled in-memory network in the style of etcd-io/raft's interaction tests.
///
/// - Every operation on a node (tick, propose, campaign, delivery) is followed by processing all of that node's
///   Readys in the documented order (stage chunks, install snapshot, save, queue messages, apply, advance).
/// - Messages wait in `queue` until a test delivers them (`deliver`, `deliverOnly`, `stabilize`) or drops them.
/// - Every delivered message is appended to `trace` as one readable line; dropped ones go to `droppedTrace`.
final class ScenarioNetwork {
    var nodes: [NodeID: ScenarioNode] = [:]
    /// Messages sent and not yet delivered, in send order.
    var queue: [Message] = []
    /// Every message handed to a live node, in delivery order.
    var delivered: [Message] = []
    var trace: [String] = []
    var droppedTrace: [String] = []
    /// Unordered pairs of nodes that cannot talk: messages between them are dropped on delivery.
    var cutLinks: Set<[NodeID]> = []
    /// Problems the harness itself noticed (e.g. an apply gap).
    var harnessErrors: [String] = []
    /// Padding added to state-machine snapshots, so that they span several chunks.
    var snapshotPadding = 0

    let configure: (inout RaftConfiguration) -> Void

    /// A new cluster of `voters` (plus `learners`), all bootstrapped with the same membership.
    init(voters: [NodeID], learners: [NodeID] = [], configure: @escaping (inout RaftConfiguration) -> Void = { _ in }) throws {
        self.configure = configure
        let membership = Membership(voters: Set(voters), learners: Set(learners))
        for id in (voters + learners).sorted() {
            nodes[id] = try ScenarioNode(id: id, configuration: configuration(for: id), bootstrap: membership)
        }
        // The bootstrap entries are committed: apply them, so that every node knows the membership.
        for id in nodes.keys.sorted() { process(id) }
    }

    func configuration(for id: NodeID) -> RaftConfiguration {
        var configuration = RaftConfiguration(id: id, randomSeed: 1000 + id)
        configuration.electionTimeoutTicks = 10
        configuration.heartbeatTicks = 1
        configure(&configuration)
        return configuration
    }

    /// Adds a node with empty storage that joins an existing cluster (it learns everything from the leader).
    @discardableResult
    func addNode(_ id: NodeID) throws -> ScenarioNode {
        precondition(nodes[id] == nil)
        let node = try ScenarioNode(id: id, configuration: configuration(for: id), bootstrap: nil)
        nodes[id] = node
        return node
    }

    subscript(_ id: NodeID) -> RaftCore {
        get {
            guard let core = nodes[id]?.core else { preconditionFailure("node \(id) is not running") }
            return core
        }
    }

    func node(_ id: NodeID) -> ScenarioNode { nodes[id]! }

    // MARK: - Inputs

    func tick(_ id: NodeID, times: Int = 1) {
        for _ in 0..<times {
            nodes[id]!.core!.tick()
            process(id)
        }
    }

    /// Ticks every live node once (in ID order), `times` times, delivering all messages after each round.
    func tickAll(times: Int = 1, ids: [NodeID]? = nil) {
        for _ in 0..<times {
            for id in (ids ?? nodes.keys.sorted()) where nodes[id]!.isUp { tick(id) }
            stabilize()
        }
    }

    /// Starts an election on `id` at once, as if its election timer fired (etcd's MsgHup): pre-vote first when
    /// configured.
    func campaign(_ id: NodeID) {
        let preVote = nodes[id]!.configuration.preVote
        nodes[id]!.core!.campaign(preVote: preVote)
        process(id)
    }

    /// Campaigns on `id` and delivers everything until quiet.
    func elect(_ id: NodeID) {
        campaign(id)
        stabilize()
    }

    @discardableResult
    func propose(_ id: NodeID, _ value: String) throws(RaftError) -> LogIndex {
        let index = try nodes[id]!.core!.propose(Array(value.utf8))
        process(id)
        return index
    }

    @discardableResult
    func proposeConfigChange(_ id: NodeID, _ change: ConfigChange) throws(RaftError) -> LogIndex {
        let index = try nodes[id]!.core!.proposeConfigChange(change)
        process(id)
        return index
    }

    func readIndex(_ id: NodeID, requestID: UInt64) throws(RaftError) {
        try nodes[id]!.core!.readIndex(requestID: requestID)
        process(id)
    }

    func transferLeadership(_ id: NodeID, to target: NodeID) throws(RaftError) {
        try nodes[id]!.core!.transferLeadership(to: target)
        process(id)
    }

    // MARK: - Readys

    /// Carries out every Ready of `id`, in the order `Ready` documents; sent messages join the queue.
    func process(_ id: NodeID) {
        guard let node = nodes[id] else { return }
        var rounds = 0
        while node.isUp, let ready = node.core!.ready() {
            rounds += 1
            precondition(rounds < 1000, "node \(id) produces Readys forever")
            node.readies.append(ready)
            queue.append(contentsOf: ready.earlyMessages)
            do {
                for chunk in ready.snapshotChunks { try node.storage.stageSnapshotChunk(chunk) }
                if let snapshot = ready.snapshot {
                    try node.storage.installStagedSnapshot(snapshot)
                    if let restored = RecordingStateMachine(snapshot: node.storage.snapshotBytes) {
                        node.machine = restored
                    } else {
                        harnessErrors.append("node \(id): unreadable snapshot at \(snapshot.index)")
                    }
                }
                try node.storage.save(hardState: ready.hardState, entries: ready.entries, sync: ready.mustSync)
            } catch {
                harnessErrors.append("node \(id): storage failed: \(error)")
            }
            queue.append(contentsOf: ready.messages)
            for entry in ready.committed {
                if let problem = node.machine.apply(entry) { harnessErrors.append("node \(id): \(problem)") }
            }
            node.readStates.append(contentsOf: ready.readStates)
            node.core!.advance(ready)
        }
    }

    // MARK: - Delivery

    func isCut(_ message: Message) -> Bool {
        cutLinks.contains([min(message.from, message.to), max(message.from, message.to)])
    }

    /// Hands one message to its recipient (or drops it when the link is cut or the recipient is down).
    func deliver(_ message: Message) {
        guard !isCut(message), let node = nodes[message.to], node.isUp else {
            droppedTrace.append(Self.describe(message))
            return
        }
        delivered.append(message)
        trace.append(Self.describe(message))
        node.core!.step(message)
        process(message.to)
    }

    /// Delivers the messages queued now that match `filter` (not those they cause); returns how many.
    @discardableResult
    func deliverOnce(where filter: (Message) -> Bool = { _ in true }) -> Int {
        var batch: [Message] = []
        queue.removeAll { message in
            if filter(message) { batch.append(message); return true }
            return false
        }
        batch.forEach(deliver)
        return batch.count
    }

    /// Delivers the first queued message matching `filter`; false when there is none.
    @discardableResult
    func deliverFirst(where filter: (Message) -> Bool) -> Bool {
        guard let position = queue.firstIndex(where: filter) else { return false }
        deliver(queue.remove(at: position))
        return true
    }

    /// Delivers matching messages, including those they cause, until none match; returns how many. After
    /// `maxRounds` deliveries it gives up and records a harness error (a livelock in the core).
    @discardableResult
    func deliver(where filter: (Message) -> Bool, maxRounds: Int = 5000) -> Int {
        var count = 0
        while let position = queue.firstIndex(where: filter) {
            guard count < maxRounds else {
                harnessErrors.append("messages kept flowing for \(maxRounds) deliveries; last ones:\n" + trace.suffix(6).joined(separator: "\n"))
                return count
            }
            deliver(queue.remove(at: position))
            count += 1
        }
        return count
    }

    /// Delivers everything, at most `limit` messages; true when the network went quiet.
    func quietens(within limit: Int) -> Bool {
        let errors = harnessErrors.count
        deliver(where: { _ in true }, maxRounds: limit)
        if harnessErrors.count > errors { harnessErrors.removeLast(harnessErrors.count - errors) }
        return queue.isEmpty
    }

    /// Delivers (repeatedly) only the messages from `from` to `to`.
    @discardableResult
    func deliverOnly(from: NodeID, to: NodeID) -> Int {
        deliver(where: { $0.from == from && $0.to == to })
    }

    /// Delivers everything until the network is quiet.
    @discardableResult
    func stabilize() -> Int { deliver(where: { _ in true }) }

    /// Removes queued messages matching `filter` without delivering them; returns how many.
    @discardableResult
    func drop(where filter: (Message) -> Bool) -> Int {
        var count = 0
        queue.removeAll { message in
            guard filter(message) else { return false }
            droppedTrace.append(Self.describe(message))
            count += 1
            return true
        }
        return count
    }

    /// Cuts every link of `id`.
    func isolate(_ id: NodeID) {
        for other in nodes.keys where other != id { cutLinks.insert([min(id, other), max(id, other)]) }
    }

    func cut(_ a: NodeID, _ b: NodeID) { cutLinks.insert([min(a, b), max(a, b)]) }

    func heal() { cutLinks = [] }

    /// Loses everything not persisted; messages to and from the node that are still queued are lost too.
    func crash(_ id: NodeID) {
        nodes[id]!.core = nil
        drop { $0.from == id || $0.to == id }
    }

    /// Rebuilds the core from storage, with the applied index of the state machine.
    func restart(_ id: NodeID) throws {
        try nodes[id]!.start()
        process(id)
    }

    /// Writes a snapshot of `id`'s state machine at its applied index and compacts the log, keeping `retain`
    /// entries before it.
    func snapshot(_ id: NodeID, retain: UInt64 = 0) throws {
        let node = nodes[id]!
        let core = node.core!
        let applied = node.machine.appliedIndex
        precondition(applied == core.appliedIndex, "snapshot while entries are being applied")
        guard let term = node.storage.term(at: applied) else { preconditionFailure("no term at \(applied)") }
        let file = node.storage.temporarySnapshotFile()
        node.storage.writeSnapshotData(node.machine.snapshotBytes(padding: snapshotPadding), to: file)
        let metadata = SnapshotMetadata(index: applied, term: term, membership: core.membership)
        try node.storage.adoptLocalSnapshot(metadata, file: file, retainEntries: retain)
    }

    // MARK: - Queries

    var leaders: [NodeID] { nodes.keys.sorted().filter { nodes[$0]!.core?.role == .leader } }

    /// Pairs of live-or-crashed nodes that applied different entries at the same index.
    func appliedConflicts() -> [String] {
        var conflicts: [String] = []
        let ids = nodes.keys.sorted()
        for (i, a) in ids.enumerated() {
            for b in ids[(i + 1)...] {
                for entry in nodes[a]!.machine.entries {
                    if let other = nodes[b]!.machine.entry(at: entry.index), other != entry {
                        conflicts.append("index \(entry.index): node \(a) applied \(Self.describe(entry)), node \(b) applied \(Self.describe(other))")
                    }
                }
            }
        }
        return conflicts
    }

    /// Index/term of every entry in `id`'s log from `from` on, e.g. ["4/2", "5/2"].
    func logTerms(_ id: NodeID, from: LogIndex = 1) -> [String] {
        let log = nodes[id]!.core!.log
        guard log.lastIndex >= max(from, log.firstIndex) else { return [] }
        return log.entries(from: max(from, log.firstIndex), through: log.lastIndex, maxBytes: .max).map { "\($0.index)/\($0.term)" }
    }

    /// Trace lines containing `text`.
    func traceLines(_ text: String) -> [String] { trace.filter { $0.contains(text) } }

    /// Delivered messages matching `filter`.
    func deliveredMessages(where filter: (Message) -> Bool) -> [Message] { delivered.filter(filter) }

    func clearTrace() {
        trace = []
        droppedTrace = []
        delivered = []
    }

    // MARK: - Formatting

    static func describe(_ entry: Entry) -> String {
        var text = "\(entry.index)/\(entry.term)"
        switch entry.kind {
        case .configChange:
            if let change = ConfigChange(encoded: entry.data) { text += ":\(change)" } else { text += ":cc?" }
        case .normal:
            if !entry.data.isEmpty { text += ":" + String(decoding: entry.data, as: UTF8.self) }
        }
        return text
    }

    static func describe(_ message: Message) -> String {
        let head = "\(message.from)->\(message.to)"
        let term = "term=\(message.term)"
        switch message.body {
        case .preVote(let lastIndex, let lastTerm):
            return "\(head) MsgPreVote \(term) last=\(lastIndex)/\(lastTerm)"
        case .preVoteResponse(let granted):
            return "\(head) MsgPreVoteResp \(term) \(granted ? "granted" : "rejected")"
        case .vote(let lastIndex, let lastTerm, let transfer):
            return "\(head) MsgVote \(term) last=\(lastIndex)/\(lastTerm)\(transfer ? " transfer" : "")"
        case .voteResponse(let granted):
            return "\(head) MsgVoteResp \(term) \(granted ? "granted" : "rejected")"
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            return "\(head) MsgApp \(term) prev=\(prevIndex)/\(prevTerm) entries=[\(entries.map(describe).joined(separator: ","))] commit=\(commit)"
        case .appendResponse(let accepted, let matchIndex, let rejectedIndex, let hintIndex, let hintTerm):
            if accepted { return "\(head) MsgAppResp \(term) match=\(matchIndex)" }
            return "\(head) MsgAppResp \(term) reject=\(rejectedIndex) hint=\(hintIndex)/\(hintTerm)"
        case .heartbeat(let commit, let readSequence):
            return "\(head) MsgHeartbeat \(term) commit=\(commit) seq=\(readSequence)"
        case .heartbeatResponse(let readSequence):
            return "\(head) MsgHeartbeatResp \(term) seq=\(readSequence)"
        case .snapshot(let chunk):
            return "\(head) MsgSnap \(term) snap=\(chunk.metadata.index)/\(chunk.metadata.term) offset=\(chunk.offset) bytes=\(chunk.data.count)\(chunk.isLast ? " last" : "")"
        case .snapshotResponse(let nextOffset, let done, let snapshotIndex):
            return "\(head) MsgSnapResp \(term) snap=\(snapshotIndex) next=\(nextOffset)\(done ? " done" : "")"
        case .timeoutNow:
            return "\(head) MsgTimeoutNow \(term)"
        case .readIndex(let requestID):
            return "\(head) MsgReadIndex \(term) req=\(requestID)"
        case .readIndexResponse(let requestID, let index):
            return "\(head) MsgReadIndexResp \(term) req=\(requestID) index=\(index)"
        }
    }
}

// MARK: - Message predicates

extension Message {
    var isAppend: Bool { if case .append = body { return true } else { return false } }
    var isHeartbeat: Bool { if case .heartbeat = body { return true } else { return false } }
    var isSnapshot: Bool { if case .snapshot = body { return true } else { return false } }
    var isTimeoutNow: Bool { if case .timeoutNow = body { return true } else { return false } }
    var isVoteTraffic: Bool {
        switch body {
        case .vote, .voteResponse, .preVote, .preVoteResponse: return true
        default: return false
        }
    }
    var isRejectedAppend: Bool {
        if case .appendResponse(let accepted, _, _, _, _) = body { return !accepted }
        return false
    }
    var appendedEntries: [Entry] {
        if case .append(_, _, let entries, _) = body { return entries }
        return []
    }
    var appendCommit: LogIndex? {
        if case .append(_, _, _, let commit) = body { return commit }
        return nil
    }
}
