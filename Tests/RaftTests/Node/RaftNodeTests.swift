import Foundation
import Testing
@testable import RaftKV

/// A state machine that records applied values, with file snapshots, for driver tests.
final class ValueRecordingStateMachine: StateMachine, @unchecked Sendable {
    private let lock = NSLock()
    private var values: [String] = []
    private var applied: LogIndex = 0
    /// What the machine claims its state weighs, to drive the snapshot schedule.
    var reportedStateBytes: Int64 = 0
    var stateSizeBytes: Int64 { lock.withLock { reportedStateBytes } }

    var appliedIndex: LogIndex { lock.withLock { applied } }
    var appliedValues: [String] { lock.withLock { values } }

    func apply(_ entries: [Entry]) throws -> [ApplyResult] {
        lock.withLock {
            entries.map { entry in
                precondition(entry.index == applied + 1)
                applied = entry.index
                guard entry.kind == .normal, !entry.data.isEmpty else { return [] }
                values.append(String(decoding: entry.data, as: UTF8.self))
                return Array("applied \(entry.index)".utf8)
            }
        }
    }

    func writeSnapshot(to file: URL) throws {
        let (index, copy) = lock.withLock { (applied, values) }
        try JSONEncoder().encode(Snapshot(index: index, values: copy)).write(to: file)
    }

    func restore(from file: URL, index: LogIndex) throws {
        let snapshot = try JSONDecoder().decode(Snapshot.self, from: Data(contentsOf: file))
        precondition(snapshot.index == index)
        lock.withLock {
            values = snapshot.values
            applied = snapshot.index
        }
    }

    struct Snapshot: Codable {
        var index: LogIndex
        var values: [String]
    }
}

/// A three-node cluster of real drivers on a local transport, with ticks every 5 ms.
final class LocalCluster: @unchecked Sendable {
    let transport = LocalTransport()
    var nodes: [NodeID: RaftNode] = [:]
    var machines: [NodeID: ValueRecordingStateMachine] = [:]
    var storages: [NodeID: any DurableLogStorage] = [:]
    var tasks: [NodeID: Task<Void, any Error>] = [:]
    let directory: URL
    let snapshotMaxLogBytes: Int64

    init(size: Int, sqlite: Bool, snapshotEveryEntries: UInt64 = 10_000, snapshotMaxLogBytes: Int64 = 128 << 20) throws {
        self.snapshotMaxLogBytes = snapshotMaxLogBytes
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("raftnode-\(UUID().uuidString)")
        let members = Membership(voters: Set(1...NodeID(size)))
        for id in 1...NodeID(size) {
            let storage: any DurableLogStorage = sqlite
                ? try SQLiteLogStorage(directory: directory.appendingPathComponent("\(id)"))
                : MemoryLogStorage()
            try start(id, storage: storage, machine: ValueRecordingStateMachine(), bootstrap: members, snapshotEveryEntries: snapshotEveryEntries)
        }
    }

    func start(_ id: NodeID, storage: any DurableLogStorage, machine: ValueRecordingStateMachine, bootstrap: Membership?, snapshotEveryEntries: UInt64 = 10_000) throws {
        var configuration = RaftConfiguration(id: id)
        configuration.electionTimeoutTicks = 20
        configuration.heartbeatTicks = 2
        var options = RaftNodeOptions()
        options.tickInterval = .milliseconds(5)
        options.requestTimeoutTicks = 400
        options.snapshotEveryEntries = snapshotEveryEntries
        options.snapshotRetainEntries = 2
        options.snapshotMaxLogBytes = snapshotMaxLogBytes
        let node = try RaftNode(configuration: configuration, storage: storage, stateMachine: machine,
                                transport: transport, bootstrap: bootstrap, options: options)
        nodes[id] = node
        machines[id] = machine
        storages[id] = storage
        transport.register(node)
        tasks[id] = Task { try await node.run() }
    }

    func stop(_ id: NodeID) async {
        transport.unregister(id)
        tasks[id]?.cancel()
        _ = await tasks[id]?.result
        await nodes[id]?.stop()
        nodes[id] = nil
    }

    func shutdown() async {
        for id in Array(nodes.keys) { await stop(id) }
        try? FileManager.default.removeItem(at: directory)
    }

    /// Waits (bounded) for a leader among running nodes.
    func leader(excluding: Set<NodeID> = []) async throws -> RaftNode {
        for _ in 0..<400 {
            for (id, node) in nodes where !excluding.contains(id) {
                if await node.status.role == .leader { return node }
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw RaftNodeError.timedOut
    }

    /// Proposes through whichever node leads, retrying across elections.
    func propose(_ value: String) async throws -> ApplyResult {
        for _ in 0..<50 {
            let leader = try await leader()
            do { return try await leader.propose(Array(value.utf8)) } catch RaftNodeError.rejected, RaftNodeError.leaderChanged {
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        throw RaftNodeError.timedOut
    }

    func waitUntil(_ condition: () async -> Bool) async throws {
        for _ in 0..<500 {
            if await condition() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("condition not reached in 5 s")
    }
}

@Suite(.serialized) struct RaftNodeTests {
    @Test(arguments: [false, true])
    func replicatesProposalsToEveryMember(sqlite: Bool) async throws {
        let cluster = try LocalCluster(size: 3, sqlite: sqlite)
        var results: [String] = []
        for i in 1...20 { results.append(String(decoding: try await cluster.propose("value-\(i)"), as: UTF8.self)) }
        #expect(results.allSatisfy { $0.hasPrefix("applied ") })
        try await cluster.waitUntil { cluster.machines.values.allSatisfy { $0.appliedValues.count == 20 } }
        for machine in cluster.machines.values {
            #expect(machine.appliedValues == (1...20).map { "value-\($0)" })
        }
        await cluster.shutdown()
    }

    @Test func survivesLeaderLossAndCatchesUpByRestartFromSQLite() async throws {
        let cluster = try LocalCluster(size: 3, sqlite: true)
        for i in 1...5 { _ = try await cluster.propose("before-\(i)") }
        let oldLeader = try await cluster.leader()
        let oldID = oldLeader.id
        let storageDirectory = cluster.directory.appendingPathComponent("\(oldID)")
        let oldMachine = cluster.machines[oldID]!
        await cluster.stop(oldID)
        let newLeader = try await cluster.leader(excluding: [oldID])
        #expect(newLeader.id != oldID)
        for i in 1...5 { _ = try await cluster.propose("after-\(i)") }
        // Restart the old leader from its SQLite log with its state machine as it was.
        try cluster.start(oldID, storage: try SQLiteLogStorage(directory: storageDirectory), machine: oldMachine, bootstrap: Membership(voters: [1, 2, 3]))
        try await cluster.waitUntil { oldMachine.appliedValues.count == 10 }
        #expect(oldMachine.appliedValues == (1...5).map { "before-\($0)" } + (1...5).map { "after-\($0)" })
        await cluster.shutdown()
    }

    /// Snapshots copy the whole state: with a state of 1,000 bytes and 10-byte entries, one every 5 entries would
    /// copy 20 bytes per byte of log; the schedule waits for 1,000 bytes of entries instead.
    @Test func snapshotsWaitUntilTheLogOutweighsTheState() async throws {
        let cluster = try LocalCluster(size: 1, sqlite: true, snapshotEveryEntries: 5)
        let machine = cluster.machines[1]!
        machine.reportedStateBytes = 1_000
        let storage = cluster.storages[1]!
        _ = try await cluster.leader()
        // Proposes 10-byte entries until the log since the snapshot holds just under 1,000 bytes.
        func fillToJustBelowTheState(_ storage: any DurableLogStorage, _ prefix: String) async throws {
            let logged = storage.entryBytes(in: (storage.snapshotMetadata.index + 1)..<(machine.appliedIndex + 1))
            for i in 0..<Int((999 - logged) / 10) { _ = try await cluster.propose(String(format: "\(prefix)%04d", i)) }
            let now = storage.entryBytes(in: (storage.snapshotMetadata.index + 1)..<(machine.appliedIndex + 1))
            #expect(now > 989 && now < 1_000)
        }
        try await fillToJustBelowTheState(storage, "value-")
        #expect(storage.snapshotMetadata.index == 0, "no snapshot before the log holds the state's size")
        _ = try await cluster.propose("value-last")
        try await cluster.waitUntil { storage.snapshotMetadata.index > 0 }

        // The count starts again from the snapshot, and survives a restart (it is read back from the log).
        let taken = storage.snapshotMetadata.index
        for i in 0..<20 { _ = try await cluster.propose(String(format: "again-%04d", i)) }
        await cluster.stop(1)
        let reopened = try SQLiteLogStorage(directory: cluster.directory.appendingPathComponent("1"))
        #expect(reopened.snapshotMetadata.index == taken)
        try cluster.start(1, storage: reopened, machine: machine, bootstrap: Membership(voters: [1]), snapshotEveryEntries: 5)
        _ = try await cluster.leader()
        try await fillToJustBelowTheState(reopened, "after-")
        #expect(reopened.snapshotMetadata.index == taken, "bytes from before the restart count towards the next one")
        _ = try await cluster.propose("after-last")
        try await cluster.waitUntil { reopened.snapshotMetadata.index > taken }
        await cluster.shutdown()
    }

    /// However large the state, the log since the last snapshot stays under `snapshotMaxLogBytes`.
    @Test func theLogSinceASnapshotIsBoundedWhateverTheStateSize() async throws {
        let cluster = try LocalCluster(size: 1, sqlite: true, snapshotEveryEntries: 5, snapshotMaxLogBytes: 200)
        let machine = cluster.machines[1]!
        machine.reportedStateBytes = 1 << 40
        let storage = cluster.storages[1]!
        for i in 0..<30 { _ = try await cluster.propose(String(format: "value-%04d", i)) }  // 300 bytes
        try await cluster.waitUntil { storage.snapshotMetadata.index > 0 }
        await cluster.shutdown()
    }

    @Test func laggingMemberCatchesUpThroughSnapshot() async throws {
        let cluster = try LocalCluster(size: 3, sqlite: true, snapshotEveryEntries: 5)
        _ = try await cluster.propose("first")
        let leader = try await cluster.leader()
        let lagging: NodeID = [1, 2, 3].first { $0 != leader.id }!
        let machine = cluster.machines[lagging]!
        let directory = cluster.directory.appendingPathComponent("\(lagging)")
        await cluster.stop(lagging)
        for i in 1...30 { _ = try await cluster.propose("v\(i)") }
        let leaderStorage = cluster.storages[leader.id]!
        #expect(leaderStorage.firstIndex > machine.appliedIndex + 1, "the leader compacted past the lagging member")
        try cluster.start(lagging, storage: try SQLiteLogStorage(directory: directory), machine: machine, bootstrap: Membership(voters: [1, 2, 3]))
        try await cluster.waitUntil { machine.appliedValues.count == 31 }
        #expect(machine.appliedValues == ["first"] + (1...30).map { "v\($0)" })
        await cluster.shutdown()
    }

    @Test func linearizableBarrierOnFollowerSeesCommittedWrites() async throws {
        let cluster = try LocalCluster(size: 3, sqlite: false)
        _ = try await cluster.propose("x")
        let leader = try await cluster.leader()
        let followerID: NodeID = [1, 2, 3].first { $0 != leader.id }!
        for i in 1...10 { _ = try await cluster.propose("w\(i)") }
        try await cluster.nodes[followerID]!.linearizableBarrier()
        #expect(cluster.machines[followerID]!.appliedValues.count == 11)
        // Many concurrent barriers on the leader all complete.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<50 { group.addTask { try await leader.linearizableBarrier() } }
            try await group.waitForAll()
        }
        await cluster.shutdown()
    }

    @Test func followerRefusesProposalsNamingTheLeader() async throws {
        let cluster = try LocalCluster(size: 3, sqlite: false)
        _ = try await cluster.propose("x")
        let leader = try await cluster.leader()
        let follower = cluster.nodes.first { $0.key != leader.id }!.value
        await #expect(throws: RaftNodeError.rejected(.notLeader(leader: leader.id))) {
            _ = try await follower.propose([1])
        }
        await cluster.shutdown()
    }

    @Test func membershipChangeAddsAMemberThatCatchesUp() async throws {
        let cluster = try LocalCluster(size: 3, sqlite: false)
        for i in 1...3 { _ = try await cluster.propose("m\(i)") }
        let leader = try await cluster.leader()
        let machine = ValueRecordingStateMachine()
        try cluster.start(4, storage: MemoryLogStorage(), machine: machine, bootstrap: nil)
        try await leader.proposeConfigChange(.addLearner(4))
        try await cluster.waitUntil { machine.appliedValues.count == 3 }
        try await leader.proposeConfigChange(.promoteLearner(4))
        let status = await leader.status
        #expect(status.membership.voters == [1, 2, 3, 4])
        _ = try await cluster.propose("m4")
        try await cluster.waitUntil { machine.appliedValues.count == 4 }
        await cluster.shutdown()
    }
}
