import Foundation
import Synchronization
import Testing
@testable import RaftKV

/// The embedded store with one member: every operation end to end, etcd's errors, restarts and crashes.
@Suite(.serialized) struct KVStoreTests {
    @Test func keyValueOperationsEndToEnd() async throws {
        let scratch = try StoreScratch()
        let running = RunningStore(try KVStore.open(directory: scratch.url, configuration: fastConfiguration()))
        let store = running.store

        // Put, get, overwrite with prevKv.
        #expect(try await store.put("a", "1").revision == 2)
        #expect(try await store.put("b", "2").revision == 3)
        let overwrite = try await store.put(PutRequest(key: u8("a"), value: u8("1b"), prevKv: true))
        #expect(overwrite.revision == 4)
        #expect(overwrite.prevKv?.value == u8("1"))
        let a = try #require(try await store.get("a"))
        #expect(a.value == u8("1b") && a.createRevision == 2 && a.modRevision == 4 && a.version == 2)
        #expect(try await store.get("missing") == nil)
        #expect(try await store.get("a", consistency: .serializable)?.value == u8("1b"))

        // Range options: prefix, limit (count before limit), sort, keys only, count only, old revision, filters.
        for key in ["p/3", "p/1", "p/2"] { try await store.put(key, "v-\(key)") }
        let prefix = try await store.prefix(u8("p/"), limit: 2)
        #expect(prefix.kvs.map(\.key) == [u8("p/1"), u8("p/2")])
        #expect(prefix.count == 3 && prefix.more)
        let sorted = try await store.range(RangeRequest(key: u8("p/"), rangeEnd: KeyRange.prefixEnd(u8("p/")),
                                                        sortOrder: .descend, sortTarget: .create, keysOnly: true))
        #expect(sorted.kvs.map(\.key) == [u8("p/2"), u8("p/1"), u8("p/3")])
        #expect(sorted.kvs.allSatisfy { $0.value.isEmpty })
        let counted = try await store.range(RangeRequest(key: u8("\0"), rangeEnd: [0], countOnly: true))
        #expect(counted.count == 5 && counted.kvs.isEmpty)
        let old = try await store.range(RangeRequest(key: u8("a"), revision: 2))
        #expect(old.kvs.first?.value == u8("1"))
        let filtered = try await store.range(RangeRequest(key: u8("p/"), rangeEnd: KeyRange.prefixEnd(u8("p/")),
                                                          minModRevision: 6))
        #expect(filtered.kvs.map(\.key) == [u8("p/1"), u8("p/2")] && filtered.count == 3)

        // Delete a range with prevKv.
        let deleted = try await store.delete(DeleteRangeRequest(key: u8("p/1"), rangeEnd: u8("p/3"), prevKv: true))
        #expect(deleted.deleted == 2 && deleted.prevKvs.map(\.key) == [u8("p/1"), u8("p/2")])
        #expect(try await store.delete("nothing") == 0)

        // Transactions: a failed compare takes the failure branch; a read-only one takes no revision.
        let revisionBefore = try await store.status().revision
        let created = try await store.txn(TxnRequest(
            compare: [Compare(key: u8("new"), target: .modRevision(0), result: .equal)],
            success: [.put(PutRequest(key: u8("new"), value: u8("x")))],
            failure: [.range(RangeRequest(key: u8("new")))]))
        #expect(created.succeeded && created.revision == revisionBefore + 1)
        let again = try await store.txn(TxnRequest(
            compare: [Compare(key: u8("new"), target: .modRevision(0), result: .equal)],
            success: [.put(PutRequest(key: u8("new"), value: u8("y")))],
            failure: [.range(RangeRequest(key: u8("new")))]))
        #expect(!again.succeeded)
        guard case .range(let seen) = again.responses.first else { Issue.record("no range response"); return }
        #expect(seen.kvs.first?.value == u8("x"))
        let readOnly = try await store.txn(TxnRequest(compare: [Compare(key: u8("a"), target: .version(2), result: .equal)],
                                                      success: [.range(RangeRequest(key: u8("a")))]),
                                           consistency: .serializable)
        #expect(readOnly.succeeded && readOnly.revision == revisionBefore + 1)
        #expect(try await store.status().revision == revisionBefore + 1)

        // Compaction: old revisions fail with etcd's message; history is removed physically.
        let current = try await store.status().revision
        try await store.compact(revision: current, physical: true)
        #expect(try store.stateMachine.isCompactionPending == false)
        await expectKVError("etcdserver: mvcc: required revision has been compacted") {
            _ = try await store.range(RangeRequest(key: u8("a"), revision: 2))
        }
        await expectKVError("etcdserver: mvcc: required revision has been compacted") {
            try await store.compact(revision: current - 1)
        }
        await expectKVError("etcdserver: mvcc: required revision is a future revision") {
            _ = try await store.range(RangeRequest(key: u8("a"), revision: current + 10))
        }
        #expect(try await store.get("a")?.value == u8("1b"))

        // Status, hash, defragment.
        let status = try await store.status()
        #expect(status.leader == 1 && status.role == .leader && status.revision == current && status.compactRevision == current)
        #expect(status.appliedIndex == status.commitIndex && status.dbSizeBytes > 0 && !status.noSpaceAlarm)
        let hash = try store.hashKV()
        try store.defragment()
        #expect(try store.hashKV() == hash)
        #expect(hash.revision == current)
        await running.close()
    }

    @Test func requestErrorsCarryEtcdMessages() async throws {
        let scratch = try StoreScratch()
        var configuration = fastConfiguration()
        configuration.maxTxnOps = 4
        let running = RunningStore(try KVStore.open(directory: scratch.url, configuration: configuration))
        let store = running.store
        try await store.put("k", "v")

        await expectKVError("etcdserver: key is not provided") { try await store.put("", "v") }
        await expectKVError("etcdserver: key is not provided") { _ = try await store.get([UInt8]()) }
        await expectKVError("etcdserver: request is too large") {
            try await store.put(u8("big"), [UInt8](repeating: 1, count: 1_600_000))
        }
        await expectKVError("etcdserver: too many operations in txn request") {
            _ = try await store.txn(TxnRequest(success: (0..<5).map { .put(PutRequest(key: u8("t\($0)"))) }))
        }
        await expectKVError("etcdserver: duplicate key given in txn request") {
            _ = try await store.txn(TxnRequest(success: [.put(PutRequest(key: u8("d"))), .put(PutRequest(key: u8("d")))]))
        }
        await expectKVError("etcdserver: key not found") {
            _ = try await store.put(PutRequest(key: u8("absent"), ignoreValue: true))
        }
        await expectKVError("etcdserver: value is provided") {
            _ = try await store.put(PutRequest(key: u8("k"), value: u8("v"), ignoreValue: true))
        }
        await expectKVError("etcdserver: requested lease not found") { try await store.put("k", "v", lease: 12345) }
        await expectKVError("etcdserver: requested lease not found") { try await store.revoke(12345) }
        await expectKVError("etcdserver: requested lease not found") { _ = try await store.keepAlive(12345) }
        await expectKVError("etcdserver: too large lease TTL") { _ = try await store.grant(ttlSeconds: 9_000_000_001) }
        let lease = try await store.grant(ttlSeconds: 100, id: 77)
        #expect(lease.id == 77)
        await expectKVError("etcdserver: lease already exists") { _ = try await store.grant(ttlSeconds: 100, id: 77) }

        // The NOSPACE alarm blocks writes until disarmed; reads and deletes go on.
        #expect(try await store.alarm(.activate).noSpaceArmed)
        #expect(try await store.status().noSpaceAlarm)
        await expectKVError("etcdserver: mvcc: database space exceeded") { try await store.put("k", "w") }
        await expectKVError("etcdserver: mvcc: database space exceeded") { _ = try await store.grant(ttlSeconds: 10) }
        #expect(try await store.get("k")?.value == u8("v"))
        #expect(try await store.delete("k") == 1)
        #expect(try await store.alarm(.deactivate).noSpaceArmed == false)
        try await store.put("k", "w")

        // The node's refusals map to etcd's messages and codes.
        #expect(KVStore.kvError(.timedOut).description == "etcdserver: request timed out")
        #expect(KVStore.kvError(.leaderChanged).description == "etcdserver: leader changed")
        #expect(KVStore.kvError(.rejected(.noLeader)).description == "etcdserver: no leader")
        #expect(KVStore.kvError(.rejected(.notLeader(leader: 3))) == .notLeader(leader: 3))
        #expect(KVStore.kvError(.rejected(.notLeader(leader: 3))).code == .failedPrecondition)
        #expect(KVStore.kvError(.stopped("x")).description == "etcdserver: server stopped")
        #expect(KVStore.kvError(.rejected(.tooManyUncommittedEntries)).description == "etcdserver: too many requests")

        await running.close()
        // After close, requests fail with etcd's "server stopped".
        await expectKVError("etcdserver: server stopped") { try await store.put("k", "z") }
    }

    @Test func quotaExceededAppliesTheWriteThenArmsTheAlarm() async throws {
        let scratch = try StoreScratch()
        var configuration = fastConfiguration()
        configuration.quotaBackendBytes = 64 * 1024
        let running = RunningStore(try KVStore.open(directory: scratch.url, configuration: configuration))
        let store = running.store
        var failedAt: Int?
        for i in 0..<200 {
            do {
                try await store.put(u8("k\(i)"), [UInt8](repeating: 7, count: 2_000))
            } catch let error as KVError {
                #expect(error == .noSpace)
                failedAt = i
                break
            }
        }
        let first = try #require(failedAt)
        // etcd applies the write that crossed the quota and still reports the error; then the alarm is armed.
        #expect(try await store.get("k\(first)") != nil)
        try await eventually("the NOSPACE alarm") { try await store.status().noSpaceAlarm }
        await expectKVError("etcdserver: mvcc: database space exceeded") { try await store.put("small", "v") }
        await running.close()
    }

    @Test func reopenAfterCloseKeepsEverything() async throws {
        let scratch = try StoreScratch()
        var configuration = fastConfiguration()
        configuration.snapshotEveryEntries = 10
        configuration.snapshotLogToStateRatio = 0  // snapshot mechanics, not the schedule
        configuration.snapshotRetainEntries = 2
        var running = RunningStore(try KVStore.open(directory: scratch.url, configuration: configuration))
        for i in 1...25 { try await running.store.put("key-\(i)", "value-\(i)") }
        let lease = try await running.store.grant(ttlSeconds: 500)
        try await running.store.put("leased", "x", lease: lease.id)
        let hash = try running.store.hashKV()
        await running.close()

        running = RunningStore(try KVStore.open(directory: scratch.url, configuration: configuration))
        let store = running.store
        #expect(try store.hashKV() == hash)
        #expect(try await store.prefix(u8("key-")).count == 25)
        #expect(try await store.leases() == [lease.id])
        #expect(try await store.timeToLive(lease.id, keys: true).keys == [u8("leased")])
        let next = try await store.put("after", "reopen")
        #expect(next.revision == hash.revision + 1)
        await running.close()
    }

    /// A crash inside the apply transaction (the entry is in the log, its effects are not committed) and a crash
    /// without any shutdown: on reopen nothing acknowledged is lost and nothing is applied twice.
    @Test func crashesLoseNothingAcknowledgedAndApplyNothingTwice() async throws {
        let scratch = try StoreScratch()
        let configuration = fastConfiguration()
        var running = RunningStore(try KVStore.open(directory: scratch.url, configuration: configuration))
        var acknowledged: [String: Revision] = [:]
        for i in 1...20 { acknowledged["k\(i)"] = try await running.store.put("k\(i)", "v\(i)").revision }

        // Crash 1: the state machine fails before committing the next batch; the node stops.
        running.store.stateMachine.withStore { store in
            store.failurePoint = { point in
                if point == .beforeApplyCommit { throw CancellationError() }
            }
        }
        await expectKVError("etcdserver: server stopped") { try await running.store.put("k21", "v21") }
        let outcome = await running.task.result
        #expect(throws: (any Error).self) { try outcome.get() }
        running.store.stateMachine.withStore { $0.failurePoint = nil }

        // Reopen: the entry that was persisted in the log but not applied is applied now, once.
        running = RunningStore(try KVStore.open(directory: scratch.url, configuration: configuration))
        for (key, revision) in acknowledged { #expect(try await running.store.get(key)?.modRevision == revision) }
        #expect(try await running.store.get("k21")?.modRevision == 22)
        for i in 22...30 { acknowledged["k\(i)"] = try await running.store.put("k\(i)", "v\(i)").revision }

        // Crash 2: no shutdown at all — the run task is cancelled and the objects are dropped mid-flight.
        let inFlight = Task { [store = running.store] in
            for i in 31...60 { _ = try? await store.put("k\(i)", "v\(i)") }
        }
        try await Task.sleep(for: .milliseconds(20))
        running.task.cancel()
        _ = await running.task.result
        _ = await inFlight.result

        running = RunningStore(try KVStore.open(directory: scratch.url, configuration: configuration))
        let store = running.store
        for (key, revision) in acknowledged { #expect(try await store.get(key)?.modRevision == revision) }
        // Revisions are continuous: revision r holds exactly one change, for every r in 2...current.
        let current = try await store.status().revision
        let events = try store.stateMachine.withStore { try $0.events(from: 2, keyRange: .from([])) }
        #expect(events.map(\.kv.modRevision) == Array(2...current))
        #expect(Set(events.map(\.kv.key)).count == events.count)
        await running.close()
    }

    @Test func appliedObserverSeesEveryEventInOrder() async throws {
        let scratch = try StoreScratch()
        let running = RunningStore(try KVStore.open(directory: scratch.url, configuration: fastConfiguration()))
        let store = running.store
        let seen = Mutex<[Event]>([])
        store.onApplied = { entries in seen.withLock { $0 += entries.flatMap(\.events) } }
        try await store.put("a", "1")
        try await store.put("b", "2")
        _ = try await store.txn(TxnRequest(success: [.deleteRange(DeleteRangeRequest(key: u8("a"))),
                                                     .put(PutRequest(key: u8("c"), value: u8("3")))]))
        let events = seen.withLock { $0 }
        #expect(events.map(\.kind) == [.put, .put, .delete, .put])
        #expect(events.map(\.kv.key) == [u8("a"), u8("b"), u8("a"), u8("c")])
        #expect(events.map(\.kv.modRevision) == [2, 3, 4, 4])
        #expect(events[2].prevKv?.value == u8("1"))
        await running.close()
    }
}
