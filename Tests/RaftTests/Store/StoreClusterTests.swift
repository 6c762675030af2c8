import Foundation
import Testing
@testable import RaftKV

/// Three embedded stores in one process over a `LocalTransport`.
@Suite(.serialized) struct StoreClusterTests {
    @Test func writesOnTheLeaderAreReadLinearizablyOnFollowers() async throws {
        let cluster = try StoreCluster(size: 3)
        for i in 1...10 {
            try await cluster.onLeader { try await $0.put("key-\(i)", "value-\(i)") }
            // Right after the acknowledgement, on every member, without waiting: ReadIndex makes it visible.
            for member in cluster.members.values.map(\.store) {
                #expect(try await member.get("key-\(i)")?.value == u8("value-\(i)"))
            }
        }
        let leader = try await cluster.leader()
        let response = try await cluster.followers(of: leader)[0].prefix(u8("key-"))
        #expect(response.count == 10)
        // Read-only transactions on a follower are served locally after the barrier too.
        let txn = try await cluster.followers(of: leader)[1].txn(TxnRequest(success: [.range(RangeRequest(key: u8("key-3")))]))
        guard case .range(let inner) = txn.responses.first else { Issue.record("no range response"); return }
        #expect(inner.kvs.first?.value == u8("value-3"))
        // Every member ends with the same state.
        let hash = try leader.hashKV()
        for follower in cluster.followers(of: leader) {
            try await eventually("follower applied everything") { try follower.hashKV() == hash }
        }
        await cluster.shutdown()
    }

    @Test func followersRefuseWritesAndLeaderOnlyLeaseRequestsNamingTheLeader() async throws {
        let cluster = try StoreCluster(size: 3)
        let leader = try await cluster.leader()
        let follower = cluster.followers(of: leader)[0]
        for attempt in [{ _ = try await follower.put("k", "v") },
                        { _ = try await follower.grant(ttlSeconds: 10) },
                        { _ = try await follower.keepAlive(1) },
                        { _ = try await follower.timeToLive(1) }] as [() async throws -> Void] {
            do {
                try await attempt()
                Issue.record("a follower served a leader-only request")
            } catch let error as KVError {
                #expect(error == .notLeader(leader: leader.memberID))
                #expect(error.description == "etcdserver: not leader")
            }
        }
        // Serializable reads are served by the follower itself.
        try await leader.put("k", "v")
        try await eventually("replicated") { try await follower.get("k", consistency: .serializable) != nil }
        await cluster.shutdown()
    }

    @Test func leaderLossElectsANewLeaderWithTheDataIntact() async throws {
        let cluster = try StoreCluster(size: 3)
        for i in 1...20 { try await cluster.onLeader { try await $0.put("key-\(i)", "value-\(i)") } }
        let first = try await cluster.leader()
        let hash = try first.hashKV()
        await cluster.stop(first.memberID)

        let second = try await cluster.leader()
        #expect(second.memberID != first.memberID)
        #expect(try second.hashKV() == hash)
        #expect(try await second.prefix(u8("key-")).count == 20)
        let revision = try await cluster.onLeader { try await $0.put("after", "failover").revision }
        #expect(revision == hash.revision + 1)
        let survivor = cluster.followers(of: second)[0]
        #expect(try await survivor.get("after")?.modRevision == revision)

        // The old leader comes back as a follower and catches up.
        try cluster.start(first.memberID, membership: nil)
        let returned = cluster.store(first.memberID)
        try await eventually("the returned member catches up") { try await returned.get("after", consistency: .serializable) != nil }
        #expect(try await returned.get("key-7")?.value == u8("value-7"))
        await cluster.shutdown()
    }

    @Test func expiredLeaseIsRevokedOnEveryMemberAtOneRevision() async throws {
        let cluster = try StoreCluster(size: 3)
        let lease = try await cluster.onLeader { try await $0.grant(ttlSeconds: 5) }
        for key in ["a", "b", "c"] { try await cluster.onLeader { try await $0.put(key, "v", lease: lease.id) } }
        let revision = try await cluster.onLeader { try await $0.put("other", "v").revision }
        for member in cluster.members.values.map(\.store) {
            try await eventually("member \(member.memberID) revoked the lease") {
                // Advancing on every poll: a leader change in between restarts the lease's full TTL.
                cluster.clock.advance(by: .seconds(6))
                let revoked = try await member.leases().isEmpty
                let current = try await member.status().revision
                return revoked && current == revision + 1
            }
            let deletes = try member.stateMachine.withStore { try $0.events(from: revision + 1, keyRange: .from([])) }
            #expect(deletes.map(\.kind) == [.delete, .delete, .delete])
            #expect(deletes.allSatisfy { $0.kv.modRevision == revision + 1 })
            #expect(try await member.get("other", consistency: .serializable) != nil)
        }
        await cluster.shutdown()
    }

    /// etcd's lease checkpointing: the new leader resumes from the checkpointed remaining TTL, not the full TTL.
    @Test func remainingTTLSurvivesALeaderChange() async throws {
        let cluster = try StoreCluster(size: 3) { $0.leaseCheckpointInterval = .seconds(1) }
        let leader = try await cluster.leader()
        let lease = try await leader.grant(ttlSeconds: 60)
        cluster.clock.advance(by: .seconds(20))
        #expect(try await leader.timeToLive(lease.id).ttlSeconds == 40)
        for member in cluster.members.values.map(\.store) {
            try await eventually("member \(member.memberID) applied the checkpoint") {
                try member.stateMachine.withStore { try $0.lease(lease.id)?.remainingTTLSeconds } == 40
            }
        }
        await cluster.stop(leader.memberID)

        let next = try await cluster.leader()
        var ttl = try await next.timeToLive(lease.id)
        #expect(ttl.ttlSeconds == 40) // 40 s checkpointed + the 150 ms election-timeout extension, truncated
        #expect(ttl.grantedTTLSeconds == 60)
        // A keep-alive gives the whole TTL back and clears the checkpoint for any later leader.
        #expect(try await next.keepAlive(lease.id).ttlSeconds == 60)
        for member in cluster.members.values.map(\.store) {
            try await eventually("member \(member.memberID) cleared the checkpoint") {
                try member.stateMachine.withStore { try $0.lease(lease.id)?.remainingTTLSeconds } == 0
            }
        }
        ttl = try await next.timeToLive(lease.id)
        #expect(ttl.ttlSeconds == 60)
        await cluster.shutdown()
    }
}
