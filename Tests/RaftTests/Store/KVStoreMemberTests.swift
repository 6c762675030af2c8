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
