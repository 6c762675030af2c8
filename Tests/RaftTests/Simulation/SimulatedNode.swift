import Foundation
@testable import RaftKV

/// The state machine the simulation replicates: a digest chain over every applied entry, so that two nodes
/// agree on the state at an index exactly when they applied the same entries up to it.
struct DigestStateMachine {
    var appliedIndex: LogIndex = 0
    var digest: UInt64 = 0xcbf2_9ce4_8422_2325

    static func chain(_ digest: UInt64, _ entry: Entry) -> UInt64 {
        var hash = digest
        func mix(_ byte: UInt8) { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        for shift in stride(from: 0, to: 64, by: 8) { mix(UInt8(truncatingIfNeeded: entry.term >> UInt64(shift))) }
        mix(entry.kind.rawValue)
        for byte in entry.data { mix(byte) }
        return hash
    }

    /// Snapshot bytes: index, digest, then deterministic padding so that snapshots span several chunks.
    func snapshotBytes(padding: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        for value in [appliedIndex, digest] {
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
        }
        for i in 0..<padding { bytes.append(UInt8(truncatingIfNeeded: i &* 31 &+ Int(appliedIndex))) }
        return bytes
    }

    init() {}

    init?(snapshot bytes: [UInt8]) {
        guard bytes.count >= 16 else { return nil }
        func read(_ at: Int) -> UInt64 { bytes[at..<(at + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
        appliedIndex = read(0)
        digest = read(8)
    }
}

/// One member in the simulation: the real core over the in-memory storage double, with a durable state machine.
final class SimulatedNode {
    let id: NodeID
    var configuration: RaftConfiguration
    let bootstrap: Membership?
    let storage = MemoryLogStorage()
    var machine = DigestStateMachine()
    var core: RaftCore?
    var restarts: UInt64 = 0
    /// Committed entries handed to the applier but not applied yet, as the real node's applier queue: the core has
    /// advanced past them, the state machine has not. Lost in a crash (the log still has them).
    var pendingApply: [Entry] = []

    init(id: NodeID, configuration: RaftConfiguration, bootstrap: Membership?) throws {
        self.id = id
        self.configuration = configuration
        self.bootstrap = bootstrap
        try start()
    }

    var isUp: Bool { core != nil }

    /// Loses everything not persisted: the core's memory, unsent messages, unapplied entries.
    func crash() {
        core = nil
        pendingApply = []
    }

    func start() throws {
        precondition(core == nil)
        if machine.appliedIndex < storage.snapshotMetadata.index {
            // Crashed between installing a snapshot and restoring the state machine from it.
            guard let restored = DigestStateMachine(snapshot: storage.snapshotBytes) else {
                throw RaftError.corruptState("unreadable snapshot")
            }
            machine = restored
        }
        var configuration = self.configuration
        configuration.appliedIndex = machine.appliedIndex
        configuration.randomSeed = self.configuration.randomSeed &+ restarts &* 7919
        restarts += 1
        core = try RaftCore(configuration: configuration, storage: storage, bootstrap: bootstrap)
    }
}
