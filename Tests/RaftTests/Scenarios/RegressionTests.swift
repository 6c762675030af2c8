import Foundation
import Testing
@testable import RaftKV

/// Bugs found by the simulation soak, each replayed directly against the core.
@Suite struct RegressionTests {
    static func chunk(_ metadata: SnapshotMetadata, offset: UInt64, _ data: [UInt8], last: Bool, term: Term) -> Message {
        Message(from: 1, to: 2, term: term, body: .snapshot(SnapshotChunk(metadata: metadata, offset: offset, data: data, isLast: last)))
    }

    /// Soak seeds 1218, 2499, 3515 and 4599: the last chunk of snapshot A and the first chunk of a newer snapshot B
    /// arrived before the driver took a Ready, so one Ready staged A's chunks, then B's first chunk (which restarts
    /// staging), then asked to install A — from B's bytes.
    @Test func newerSnapshotChunkDoesNotOverwriteAStagedSnapshotAwaitingInstall() throws {
        let storage = MemoryLogStorage()
        var core = try RaftCore(configuration: RaftConfiguration(id: 2), storage: storage, bootstrap: Membership(voters: [1, 2, 3]))
        if let ready = core.ready() {
            try storage.save(hardState: ready.hardState, entries: ready.entries, sync: true)
            core.advance(ready)
        }
        let membership = Membership(voters: [1, 2, 3])
        let snapshotA = SnapshotMetadata(index: 20, term: 2, membership: membership)
        let snapshotB = SnapshotMetadata(index: 30, term: 2, membership: membership)
        core.step(Self.chunk(snapshotA, offset: 0, [1, 2], last: false, term: 2))
        core.step(Self.chunk(snapshotA, offset: 2, [3, 4], last: true, term: 2))
        core.step(Self.chunk(snapshotB, offset: 0, [9, 9], last: false, term: 2))
        let taken = core.ready()
        let ready = try #require(taken)
        #expect(ready.snapshot == snapshotA)
        #expect(ready.snapshotChunks.map(\.metadata) == [snapshotA, snapshotA], "B's chunk must wait until A is installed")
        for chunk in ready.snapshotChunks { try storage.stageSnapshotChunk(chunk) }
        try storage.installStagedSnapshot(snapshotA)
        #expect(storage.snapshotBytes == [1, 2, 3, 4])
        // B's sender is told to start over; once A is installed, B is accepted.
        #expect(ready.messages.last?.body == .snapshotResponse(nextOffset: 0, done: false, snapshotIndex: 30))
        try storage.save(hardState: ready.hardState, entries: ready.entries, sync: true)
        core.advance(ready)
        core.step(Self.chunk(snapshotB, offset: 0, [9, 9], last: true, term: 2))
        let nextTaken = core.ready()
        let next = try #require(nextTaken)
        #expect(next.snapshot == snapshotB)
        #expect(next.snapshotChunks.map(\.metadata) == [snapshotB])
    }
}
