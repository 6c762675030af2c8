import Foundation
import Testing
@testable import RaftKV

/// Member records: replicated metadata beside the keyspace.
@Suite(.serialized) struct KVStoreMemberTests {
    @Test func recordsKeepEachFieldAndSurviveRestarts() async throws {
        let scratch = try StoreScratch()
        let id: NodeID = 0xd4c3_3893_9122_f8de
        do {
            let running = RunningStore(try KVStore.open(directory: scratch.url, configuration: fastConfiguration()))
            let store = running.store
            try await store.setMemberPeerURLs(id: id, peerURLs: ["http://127.0.0.1:2380", "http://10.0.0.1:2380"])
            // Publishing sets name and client URLs and leaves the peer URLs alone, and the other way round.
            try await store.publishMember(id: id, name: "infra4", clientURLs: ["http://127.0.0.1:2379"])
            try await store.setMemberPeerURLs(id: id, peerURLs: ["http://127.0.0.1:2381"])
            try await store.publishMember(id: 7, name: "other", clientURLs: [])
            #expect(try store.memberRecords() == [
                MemberRecord(id: 7, name: "other"),
                MemberRecord(id: id, name: "infra4", peerURLs: ["http://127.0.0.1:2381"],
                             clientURLs: ["http://127.0.0.1:2379"]),
            ])
            // The keyspace does not move.
            #expect(try await store.status().revision == 1)
            await running.close()
        }
        let reopened = RunningStore(try KVStore.open(directory: scratch.url, configuration: fastConfiguration()))
        #expect(try reopened.store.memberRecords().map(\.id) == [7, id])
        await reopened.close()
    }

    @Test func removingAMemberDropsItsRecord() async throws {
        let scratch = try StoreScratch()
        let running = RunningStore(try KVStore.open(directory: scratch.url, configuration: fastConfiguration()))
        let store = running.store
        try await store.setMemberPeerURLs(id: 2, peerURLs: ["http://127.0.0.1:22380"])
        // A learner: the one-member cluster keeps its quorum of one.
        try await store.changeMembership(.addLearner(2))
        #expect(try store.memberRecords().map(\.id) == [2])
        #expect(await store.node.status.membership == Membership(voters: [1], learners: [2]))
        try await store.changeMembership(.removeMember(2))
        #expect(try store.memberRecords().isEmpty)
        #expect(await store.node.status.membership == Membership(voters: [1]))
        await running.close()
    }
}

/// Snapshots are written in the background while writes go on; a store rebuilt from one (its state file lost)
/// is the same store.
@Suite(.serialized) struct KVStoreBackgroundSnapshotTests {
    @Test func aStateRebuiltFromABackgroundSnapshotMatches() async throws {
        let scratch = try StoreScratch()
        var configuration = fastConfiguration()
        configuration.snapshotEveryEntries = 20
        configuration.snapshotLogToStateRatio = 0  // snapshot mechanics, not the schedule
        configuration.snapshotRetainEntries = 5
        let running = RunningStore(try KVStore.open(directory: scratch.url, configuration: configuration))
        // Concurrent writers, so that applies keep running while snapshots are copied.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<4 {
                group.addTask {
                    for index in 0..<75 { try await running.store.put("w\(writer)/\(index)", "v\(index)") }
                }
            }
            try await group.waitForAll()
        }
        let snapshots = scratch.url.appendingPathComponent("member/raft/snap")
        try await eventually("a snapshot was adopted") {
            (try? FileManager.default.contentsOfDirectory(atPath: snapshots.path))?
                .contains { $0.hasSuffix(".snap") && !$0.hasPrefix("tmp") } ?? false
        }
        let hash = try running.store.hashKV()
        await running.close()

        // Lose the state file: the node restores the snapshot, then replays the log above it.
        for suffix in ["", "-wal", "-shm"] {
            try? FileManager.default.removeItem(at: scratch.url.appendingPathComponent("member/kv.db\(suffix)"))
        }
        let reopened = RunningStore(try KVStore.open(directory: scratch.url, configuration: configuration))
        // A linearizable read first: the log above the snapshot is applied again once the node runs.
        #expect(try await reopened.store.prefix(u8("w")).count == 300)
        let rebuilt = try reopened.store.hashKV()
        #expect(rebuilt == hash, "\(rebuilt) vs \(hash)")
        await reopened.close()
    }
}
