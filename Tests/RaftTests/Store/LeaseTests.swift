import Foundation
import Synchronization
import Testing
@testable import RaftKV

/// The lease manager alone, on a manual clock: etcd's lessor timing rules.
@Suite struct LeaseManagerTests {
    func manager(checkpointInterval: Duration = .seconds(5)) -> (LeaseManager, ManualLeaseClock) {
        let clock = ManualLeaseClock()
        var configuration = LeaseManager.Configuration()
        configuration.checkpointInterval = checkpointInterval
        return (LeaseManager(clock: clock, configuration: configuration), clock)
    }

    @Test func onlyThePrimaryExpiresRenewsAndAnswersTimeToLive() throws {
        let (leases, clock) = manager()
        leases.apply([.granted(id: 1, ttlSeconds: 10)])
        clock.advance(by: .seconds(60))
        #expect(leases.expiredLeases(limit: 10).isEmpty)
        #expect(throws: LeaseManager.RenewError.notPrimary) { try leases.renew(1) }
        #expect(throws: LeaseManager.RenewError.notPrimary) { try leases.timeToLive(1) }

        leases.promote(extend: .seconds(1))
        #expect(try leases.timeToLive(1)?.remainingSeconds == 11)
        #expect(try leases.timeToLive(2) == nil)
        clock.advance(by: .seconds(10.5))
        #expect(leases.expiredLeases(limit: 10).isEmpty)
        #expect(try leases.timeToLive(1)?.remainingSeconds == 0)
        clock.advance(by: .seconds(0.5))
        #expect(leases.expiredLeases(limit: 10) == [1])
        #expect(try leases.timeToLive(1)?.remainingSeconds == -1)
        // Reported once; again only after the retry interval if the revocation did not happen.
        #expect(leases.expiredLeases(limit: 10).isEmpty)
        #expect(throws: LeaseManager.RenewError.leaseNotFound) { try leases.renew(1) }
        clock.advance(by: .seconds(3))
        #expect(leases.expiredLeases(limit: 10) == [1])
        leases.apply([.revoked(id: 1)])
        clock.advance(by: .seconds(3))
        #expect(leases.expiredLeases(limit: 10).isEmpty)

        leases.demote()
        #expect(!leases.isPrimary)
    }

    @Test func renewRestoresTheWholeTTLAndAsksToClearACheckpoint() throws {
        let (leases, clock) = manager()
        leases.promote(extend: .zero)
        leases.apply([.granted(id: 7, ttlSeconds: 30)])
        clock.advance(by: .seconds(20))
        #expect(try leases.timeToLive(7)?.remainingSeconds == 10)
        #expect(try leases.renew(7) == LeaseManager.RenewOutcome(ttlSeconds: 30, clearCheckpoint: false))
        #expect(try leases.timeToLive(7)?.remainingSeconds == 30)
        leases.apply([.checkpointed(id: 7, remainingTTLSeconds: 12)])
        #expect(try leases.renew(7) == LeaseManager.RenewOutcome(ttlSeconds: 30, clearCheckpoint: true))
        #expect(try leases.renew(7).clearCheckpoint == false)
    }

    @Test func checkpointsRecordRemainingTTLAndPromotionResumesFromThem() throws {
        let (leases, clock) = manager(checkpointInterval: .seconds(5))
        leases.promote(extend: .zero)
        leases.apply([.granted(id: 1, ttlSeconds: 60), .granted(id: 2, ttlSeconds: 4)])
        #expect(leases.dueCheckpoints(limit: 10).isEmpty)
        clock.advance(by: .seconds(5))
        // Lease 2 has less than one interval left: never checkpointed (etcd's scheduleCheckpointIfNeeded).
        #expect(leases.dueCheckpoints(limit: 10) == [LeaseCheckpoint(id: 1, remainingTTLSeconds: 55)])
        #expect(leases.dueCheckpoints(limit: 10).isEmpty)
        // The checkpoint comes back applied: the next one is scheduled an interval later.
        leases.apply([.checkpointed(id: 1, remainingTTLSeconds: 55)])
        clock.advance(by: .seconds(5.5))
        #expect(leases.dueCheckpoints(limit: 10) == [LeaseCheckpoint(id: 1, remainingTTLSeconds: 50)])

        // A follower that applied the checkpoint and becomes leader resumes from 55 (+ extension), not 60.
        let (follower, followerClock) = manager()
        follower.apply([.granted(id: 1, ttlSeconds: 60), .checkpointed(id: 1, remainingTTLSeconds: 55)])
        followerClock.advance(by: .seconds(1000))
        follower.promote(extend: .seconds(1))
        #expect(try follower.timeToLive(1)?.remainingSeconds == 56)
        #expect(try follower.timeToLive(1)?.grantedSeconds == 60)
    }

    @Test func promotionSpreadsPiledUpExpiries() throws {
        let clock = ManualLeaseClock()
        var configuration = LeaseManager.Configuration()
        configuration.revokeRatePerSecond = 8
        let leases = LeaseManager(clock: clock, configuration: configuration)
        leases.apply((1...16).map { .granted(id: $0, ttlSeconds: 10) })
        leases.promote(extend: .zero)
        // At most 3/4 of the rate (6) expire in the first second after the common expiry.
        clock.advance(by: .seconds(10))
        let first = leases.expiredLeases(limit: 100)
        #expect(first == Array(1...6))
        leases.apply(first.map { .revoked(id: $0) })
        // etcd's delays: lease n (n > 6) expires n/6 s late, so 7…12 by +2 s and 13…16 by +3 s.
        clock.advance(by: .seconds(2))
        let second = leases.expiredLeases(limit: 100)
        #expect(second == Array(7...12))
        clock.advance(by: .seconds(1))
        #expect(leases.expiredLeases(limit: 100) == Array(13...16))
        // 7…12 are reported again once the 3 s retry interval passed without their revocation.
        clock.advance(by: .seconds(2))
        #expect(leases.expiredLeases(limit: 100) == Array(7...12))
    }

    @Test func resetKeepsTimersOfKnownLeases() throws {
        let (leases, clock) = manager()
        leases.promote(extend: .zero)
        leases.apply([.granted(id: 1, ttlSeconds: 10)])
        clock.advance(by: .seconds(4))
        leases.reset(to: [LeaseInfo(id: 1, grantedTTLSeconds: 10, remainingTTLSeconds: 0),
                          LeaseInfo(id: 2, grantedTTLSeconds: 20, remainingTTLSeconds: 15)])
        #expect(try leases.timeToLive(1)?.remainingSeconds == 6)
        #expect(try leases.timeToLive(2)?.remainingSeconds == 15)
        #expect(leases.count == 2)
    }
}

/// Leases through the embedded store, single member, manual clock.
@Suite(.serialized) struct StoreLeaseTests {
    @Test func grantKeepAliveTimeToLiveRevoke() async throws {
        let scratch = try StoreScratch()
        let clock = ManualLeaseClock()
        let running = RunningStore(try KVStore.open(directory: scratch.url, configuration: fastConfiguration(clock: clock)))
        let store = running.store

        let lease = try await store.grant(ttlSeconds: 100)
        #expect(lease.id > 0 && lease.ttlSeconds == 100)
        try await store.put("a", "1", lease: lease.id)
        try await store.put("b", "2", lease: lease.id)
        clock.advance(by: .seconds(30))
        var ttl = try await store.timeToLive(lease.id, keys: true)
        #expect(ttl.ttlSeconds == 70 && ttl.grantedTTLSeconds == 100 && ttl.keys == [u8("a"), u8("b")])
        #expect(try await store.timeToLive(lease.id).keys.isEmpty)
        #expect(try await store.keepAlive(lease.id) == LeaseKeepAliveResponse(id: lease.id, ttlSeconds: 100))
        ttl = try await store.timeToLive(lease.id)
        #expect(ttl.ttlSeconds == 100)
        #expect(try await store.leases() == [lease.id])

        let revision = try await store.status().revision
        let revoked = try await store.revoke(lease.id)
        #expect(revoked.revision == revision + 1)
        #expect(try await store.get("a") == nil)
        #expect(try await store.get("b") == nil)
        #expect(try await store.timeToLive(lease.id) == LeaseTimeToLiveResponse(id: lease.id, ttlSeconds: -1, grantedTTLSeconds: 0))
        #expect(try await store.leases().isEmpty)
        await expectKVError("etcdserver: requested lease not found") { _ = try await store.keepAlive(lease.id) }
        await running.close()
    }

    @Test func shortTTLsGetTheMinimum() async throws {
        // etcd's minLeaseTTL = ⌈(3 × electionTicks / 2) × tick⌉: 2 s for the defaults (10 ticks of 100 ms).
        #expect(KVStore.Configuration().minLeaseTTLSeconds == 2)
        var slow = KVStore.Configuration()
        slow.electionTimeoutTicks = 25
        slow.tickInterval = .milliseconds(200)
        #expect(slow.minLeaseTTLSeconds == 8) // (75 / 2 = 37 ticks) × 200 ms = 7.4 s → 8 s

        let scratch = try StoreScratch()
        var configuration = fastConfiguration(clock: ManualLeaseClock())
        configuration.tickInterval = .milliseconds(20) // 15 ticks × 20 ms = 0.3 s → 1 s
        let running = RunningStore(try KVStore.open(directory: scratch.url, configuration: configuration))
        #expect(try await running.store.grant(ttlSeconds: 0).ttlSeconds == 1)
        #expect(try await running.store.grant(ttlSeconds: -5).ttlSeconds == 1)
        #expect(try await running.store.grant(ttlSeconds: 3).ttlSeconds == 3)
        await running.close()
    }

    @Test func expiryRevokesAllKeysAtOneRevision() async throws {
        let scratch = try StoreScratch()
        let clock = ManualLeaseClock()
        let running = RunningStore(try KVStore.open(directory: scratch.url, configuration: fastConfiguration(clock: clock)))
        let store = running.store
        let lease = try await store.grant(ttlSeconds: 10)
        for key in ["x", "y", "z"] { try await store.put(key, "v", lease: lease.id) }
        try await store.put("unleased", "v")
        let revision = try await store.status().revision
        clock.advance(by: .seconds(9))
        try await Task.sleep(for: .milliseconds(50))
        #expect(try await store.get("x") != nil)

        let deletes = Mutex<[Event]>([])
        store.onApplied = { entries in deletes.withLock { $0 += entries.flatMap(\.events) } }
        // (+ the promotion's extension, had the grant been applied before this member was promoted)
        clock.advance(by: .seconds(1.1))
        try await eventually("the lease is revoked") { try await store.leases().isEmpty }
        let events = deletes.withLock { $0 }
        #expect(events.map(\.kind) == [.delete, .delete, .delete])
        #expect(events.map(\.kv.modRevision) == [revision + 1, revision + 1, revision + 1])
        #expect(try await store.get("unleased") != nil)
        #expect(try await store.get("x") == nil)
        await running.close()
    }
}
