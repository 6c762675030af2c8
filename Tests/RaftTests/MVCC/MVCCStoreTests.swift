import Foundation
import Testing
@testable import RaftKV

@Suite struct MVCCStoreTests {
    @Test func errorMessagesAndCodesMatchEtcd() {
        #expect(KVError.compacted.description == "etcdserver: mvcc: required revision has been compacted")
        #expect(KVError.futureRevision.description == "etcdserver: mvcc: required revision is a future revision")
        #expect(KVError.noSpace.description == "etcdserver: mvcc: database space exceeded")
        #expect(KVError.tooManyOperations.description == "etcdserver: too many operations in txn request")
        #expect(KVError.emptyKey.description == "etcdserver: key is not provided")
        #expect(KVError.keyNotFound.description == "etcdserver: key not found")
        #expect(KVError.valueProvided.description == "etcdserver: value is provided")
        #expect(KVError.leaseProvided.description == "etcdserver: lease is provided")
        #expect(KVError.duplicateKey.description == "etcdserver: duplicate key given in txn request")
        #expect(KVError.leaseNotFound.description == "etcdserver: requested lease not found")
        #expect(KVError.leaseExists.description == "etcdserver: lease already exists")
        #expect(KVError.requestTooLarge.description == "etcdserver: request is too large")
        #expect(KVError.compacted.code == .outOfRange)
        #expect(KVError.futureRevision.code == .outOfRange)
        #expect(KVError.noSpace.code == .resourceExhausted)
        #expect(KVError.leaseNotFound.code == .notFound)
        #expect(KVError.leaseExists.code == .failedPrecondition)
        #expect(KVError.duplicateKey.code == .invalidArgument)
    }

    @Test func putAssignsRevisionsVersionsAndCreateRevisions() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        #expect(store.currentRevision == 1)
        #expect(try store.put("a", "1").revision == 2)
        #expect(try store.put("a", "2").revision == 3)
        #expect(try store.put("b", "x").revision == 4)
        let a = try #require(try store.get(b("a")))
        #expect(a == KeyValue(key: b("a"), createRevision: 2, modRevision: 3, version: 2, value: b("2")))
        // A delete resets the version; the next put starts a new incarnation.
        _ = try store.run(.deleteRange(DeleteRangeRequest(key: b("a"))))
        #expect(try store.put("a", "3").revision == 6)
        #expect(try store.get(b("a")) == KeyValue(key: b("a"), createRevision: 6, modRevision: 6, version: 1, value: b("3")))
        // History stays readable.
        let old = try store.range(RangeRequest(key: b("a"), revision: 3))
        #expect(old.kvs.map(\.value) == [b("2")])
        #expect(old.revision == 6)
        #expect(try store.range(RangeRequest(key: b("a"), revision: 5)).kvs.isEmpty)
    }

    @Test func putOptions() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        #expect(try store.failure(.put(PutRequest(key: b("k"), ignoreValue: true))) == .keyNotFound)
        #expect(try store.failure(.put(PutRequest(key: b("k"), ignoreLease: true))) == .keyNotFound)
        #expect(try store.failure(.put(PutRequest(key: b("k"), value: b("v"), lease: 7))) == .leaseNotFound)
        #expect(store.currentRevision == 1)
        _ = try store.run(.leaseGrant(id: 7, ttlSeconds: 60))
        try store.put("k", "v", lease: 7)
        guard case .put(let response) = try store.run(.put(PutRequest(key: b("k"), prevKv: true, ignoreValue: true))).get() else {
            Issue.record("expected put")
            return
        }
        #expect(response.prevKv?.value == b("v"))
        // ignore_value kept the value; no lease given, so the key left its lease.
        let kv = try #require(try store.get(b("k")))
        #expect(kv.value == b("v"))
        #expect(kv.lease == 0)
        #expect(try store.lease(7)?.keys == [])
        try store.put("k", "w", lease: 7)
        _ = try store.run(.put(PutRequest(key: b("k"), value: b("z"), ignoreLease: true)))
        #expect(try store.get(b("k"))?.lease == 7)
        #expect(try store.get(b("k"))?.value == b("z"))
    }

    @Test func validationMatchesEtcd() {
        #expect(kvError { try KVValidation.check(PutRequest(key: [])) } == .emptyKey)
        #expect(kvError { try KVValidation.check(RangeRequest(key: [])) } == .emptyKey)
        #expect(kvError { try KVValidation.check(DeleteRangeRequest(key: [])) } == .emptyKey)
        #expect(kvError { try KVValidation.check(PutRequest(key: b("k"), value: b("v"), ignoreValue: true)) } == .valueProvided)
        #expect(kvError { try KVValidation.check(PutRequest(key: b("k"), lease: 1, ignoreLease: true)) } == .leaseProvided)
        let put = { (key: String) in RequestOp.put(PutRequest(key: b(key))) }
        let many = TxnRequest(success: (0..<129).map { put("k\($0)") })
        #expect(kvError { try KVValidation.check(many) } == .tooManyOperations)
        #expect(kvError { try KVValidation.check(many, maxTxnOps: 200) } == nil)
        #expect(kvError { try KVValidation.check(TxnRequest(compare: [Compare(key: [], target: .version(0), result: .equal)])) } == .emptyKey)
        // Duplicates, following etcd's checkIntervals.
        #expect(kvError { try KVValidation.check(TxnRequest(success: [put("a"), put("a")])) } == .duplicateKey)
        #expect(kvError { try KVValidation.check(TxnRequest(success: [put("a")], failure: [put("a")])) } == nil)
        let deleteAC = RequestOp.deleteRange(DeleteRangeRequest(key: b("a"), rangeEnd: b("c")))
        #expect(kvError { try KVValidation.check(TxnRequest(success: [deleteAC, put("b")])) } == .duplicateKey)
        #expect(kvError { try KVValidation.check(TxnRequest(success: [deleteAC, put("c")])) } == nil)
        #expect(kvError { try KVValidation.check(TxnRequest(success: [deleteAC, deleteAC])) } == nil)
        let nestedThenElse = RequestOp.txn(TxnRequest(success: [put("x")], failure: [put("x")]))
        #expect(kvError { try KVValidation.check(TxnRequest(success: [nestedThenElse])) } == nil)
        #expect(kvError { try KVValidation.check(TxnRequest(success: [nestedThenElse, put("x")])) } == .duplicateKey)
        let nestedDelete = RequestOp.txn(TxnRequest(success: [.deleteRange(DeleteRangeRequest(key: b("x")))]))
        #expect(kvError { try KVValidation.check(TxnRequest(success: [nestedDelete, put("x")])) } == .duplicateKey)
        #expect(kvError { try KVValidation.check(TxnRequest(success: [deleteAC, .txn(TxnRequest(failure: [put("b")]))])) } == .duplicateKey)
        // Nested transactions share the parent's budget.
        let nested = TxnRequest(success: (0..<100).map { put("n\($0)") })
        let parent = TxnRequest(success: (0..<30).map { put("p\($0)") } + [.txn(nested)])
        #expect(kvError { try KVValidation.check(parent) } == .tooManyOperations)
        #expect(kvError { try KVValidation.check(KVCommand.leaseGrant(id: 0, ttlSeconds: 5)) } == .leaseNotFound)
        #expect(kvError { try KVValidation.check(KVCommand.leaseGrant(id: 1, ttlSeconds: 9_000_000_001)) } == .leaseTTLTooLarge)
    }

    @Test func rangeEndConventionsLimitAndCount() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        for key in ["a", "ab", "abc", "b", "c"] { try store.put(key, "v-" + key) }
        #expect(try store.keys(RangeRequest(key: b("ab"))) == ["ab"])
        #expect(try store.keys(RangeRequest(key: b("ab"), rangeEnd: [0])) == ["ab", "abc", "b", "c"])
        #expect(try store.keys(RangeRequest(key: [0], rangeEnd: [0])) == ["a", "ab", "abc", "b", "c"])
        #expect(try store.keys(RangeRequest(key: b("a"), rangeEnd: KeyRange.prefixEnd(b("a")))) == ["a", "ab", "abc"])
        #expect(try store.keys(RangeRequest(key: b("b"), rangeEnd: b("a"))) == [])
        let limited = try store.range(RangeRequest(key: b("a"), rangeEnd: b("c"), limit: 2))
        #expect(limited.kvs.count == 2)
        #expect(limited.more)
        #expect(limited.count == 4)
        let exact = try store.range(RangeRequest(key: b("a"), rangeEnd: b("c"), limit: 4))
        #expect(!exact.more)
        // Clients send Int64.max for "no limit" (a fuzzer found it overflowing once), sorted or not.
        for order in RangeRequest.SortOrder.allCases {
            let unbounded = try store.range(RangeRequest(key: b("a"), rangeEnd: [0], limit: .max, sortOrder: order))
            #expect(unbounded.kvs.count == 5 && !unbounded.more && unbounded.count == 5)
        }
        let counted = try store.range(RangeRequest(key: b("a"), rangeEnd: [0], countOnly: true))
        #expect(counted.kvs.isEmpty)
        #expect(counted.count == 5)
        let keysOnly = try store.range(RangeRequest(key: b("a"), keysOnly: true))
        #expect(keysOnly.kvs.first?.value == [])
        #expect(keysOnly.kvs.first?.modRevision == 2)
        // Historical: at revision 3 only a and ab exist.
        let past = try store.range(RangeRequest(key: b("a"), rangeEnd: [0], limit: 1, revision: 3))
        #expect(past.kvs.map(\.key) == [b("a")])
        #expect(past.count == 2)
        #expect(past.more)
        #expect(past.revision == 6)
        #expect(kvError { _ = try store.range(RangeRequest(key: b("a"), revision: 7)) } == .futureRevision)
    }

    @Test func sortingAndFiltersFollowEtcd() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        try store.put("c", "1") // rev 2
        try store.put("a", "3") // rev 3
        try store.put("b", "2") // rev 4
        try store.put("c", "0") // rev 5, version 2
        let all = RangeRequest(key: b("a"), rangeEnd: b("d"))
        func sorted(_ order: RangeRequest.SortOrder, _ target: RangeRequest.SortTarget, limit: Int64 = 0) throws -> [String] {
            var request = all
            request.sortOrder = order
            request.sortTarget = target
            request.limit = limit
            return try store.keys(request)
        }
        #expect(try sorted(.descend, .key) == ["c", "b", "a"])
        #expect(try sorted(.ascend, .mod) == ["a", "b", "c"])
        #expect(try sorted(.descend, .create) == ["b", "a", "c"])
        #expect(try sorted(.ascend, .value) == ["c", "b", "a"])
        // NONE with a target other than KEY sorts ascending, as etcd does.
        #expect(try sorted(.none, .value) == ["c", "b", "a"])
        #expect(try sorted(.descend, .version) == ["c", "a", "b"])
        // etcd picks "fetch everything" from the requested order, so NONE + limit sorts only the first limit+1 keys.
        #expect(try sorted(.none, .value, limit: 1) == ["b"])
        #expect(try sorted(.ascend, .value, limit: 1) == ["c"])
        #expect(try sorted(.descend, .mod, limit: 1) == ["c"])
        var filtered = all
        filtered.minModRevision = 4
        let response = try store.range(filtered)
        #expect(response.kvs.map(\.key) == [b("b"), b("c")])
        // count is taken before the filters.
        #expect(response.count == 3)
        filtered = all
        filtered.maxCreateRevision = 2
        #expect(try store.keys(filtered) == ["c"])
        filtered = all
        filtered.minCreateRevision = 3
        filtered.maxModRevision = 3
        #expect(try store.keys(filtered) == ["a"])
    }

    @Test func deleteRangeAndRevisions() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        for key in ["a", "b", "c"] { try store.put(key, key) }
        guard case .deleteRange(let none) = try store.run(.deleteRange(DeleteRangeRequest(key: b("zz")))).get() else {
            Issue.record("expected delete")
            return
        }
        #expect(none.deleted == 0)
        #expect(none.revision == 4)
        #expect(store.currentRevision == 4)
        guard case .deleteRange(let some) = try store.run(.deleteRange(DeleteRangeRequest(key: b("a"), rangeEnd: b("c"), prevKv: true))).get() else {
            Issue.record("expected delete")
            return
        }
        #expect(some.deleted == 2)
        #expect(some.revision == 5)
        #expect(some.prevKvs.map(\.value) == [b("a"), b("b")])
        #expect(try store.keys(RangeRequest(key: [0], rangeEnd: [0])) == ["c"])
        let events = try store.events(from: 5, keyRange: .from([0]), prevKv: true)
        #expect(events.map(\.kind) == [.delete, .delete])
        #expect(events.map(\.kv) == [KeyValue(key: b("a"), modRevision: 5), KeyValue(key: b("b"), modRevision: 5)])
        #expect(events.map { $0.prevKv?.value } == [b("a"), b("b")])
    }

    @Test func txnComparesBranchesAndRevisions() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        try store.put("k", "v")   // rev 2
        // Kubernetes' create: mod_revision == 0 means absent.
        let create = TxnRequest(compare: [Compare(key: b("new"), target: .modRevision(0), result: .equal)],
                                success: [.put(PutRequest(key: b("new"), value: b("1")))],
                                failure: [.range(RangeRequest(key: b("new")))])
        let created = try store.txnResponse(create)
        #expect(created.succeeded)
        #expect(created.revision == 3)
        #expect(created.responses == [.put(PutResponse(revision: 3))])
        let again = try store.txnResponse(create)
        #expect(!again.succeeded)
        #expect(again.revision == 3)
        guard case .range(let range) = again.responses.first else {
            Issue.record("expected range")
            return
        }
        #expect(range.kvs.first?.value == b("1"))

        // A value compare on a missing key fails whatever the operator.
        for result in Compare.Result.allCases {
            let missing = TxnRequest(compare: [Compare(key: b("missing"), target: .value([]), result: result)])
            #expect(try !store.txnResponse(missing).succeeded)
        }
        // Missing keys compare as zero for other targets.
        let zero = TxnRequest(compare: [Compare(key: b("missing"), target: .version(0), result: .equal),
                                        Compare(key: b("missing"), target: .lease(0), result: .equal),
                                        Compare(key: b("missing"), target: .createRevision(1), result: .less)])
        #expect(try store.txnResponse(zero).succeeded)
        // Range compares need every key to satisfy.
        try store.put("p1", "a")
        try store.put("p2", "b")
        let everyKey = TxnRequest(compare: [Compare(key: b("p"), rangeEnd: b("q"), target: .value(b("a")), result: .greater)])
        #expect(try !store.txnResponse(everyKey).succeeded)
        let everyKey2 = TxnRequest(compare: [Compare(key: b("p"), rangeEnd: b("q"), target: .value(b("0")), result: .greater)])
        #expect(try store.txnResponse(everyKey2).succeeded)
        #expect(try store.txnResponse(TxnRequest(compare: [Compare(key: b("k"), target: .value(b("v")), result: .notEqual)])).succeeded == false)
        #expect(try store.txnResponse(TxnRequest(compare: [Compare(key: b("k"), target: .version(1), result: .greater)])).succeeded == false)
    }

    @Test func txnWritesShareOneRevisionAndSeeEarlierWrites() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        try store.put("a", "0") // rev 2
        let request = TxnRequest(success: [
            .range(RangeRequest(key: b("a"))),
            .put(PutRequest(key: b("a"), value: b("1"), prevKv: true)),
            .range(RangeRequest(key: b("a"))),
            .range(RangeRequest(key: b("a"), revision: 2)),
            .put(PutRequest(key: b("b"), value: b("2"))),
            .deleteRange(DeleteRangeRequest(key: b("zz"))),
            .txn(TxnRequest(compare: [Compare(key: b("a"), target: .value(b("0")), result: .equal)],
                            success: [.put(PutRequest(key: b("c"), value: b("3")))])),
        ])
        let response = try store.txnResponse(request)
        #expect(response.revision == 3)
        #expect(store.currentRevision == 3)
        guard response.responses.count == 7,
              case .range(let before) = response.responses[0],
              case .put(let put) = response.responses[1],
              case .range(let after) = response.responses[2],
              case .range(let historical) = response.responses[3],
              case .deleteRange(let deleted) = response.responses[5],
              case .txn(let nested) = response.responses[6] else {
            Issue.record("unexpected responses \(response.responses)")
            return
        }
        #expect(before.kvs.first?.value == b("0"))
        #expect(before.revision == 2)
        #expect(put.revision == 3)
        #expect(put.prevKv?.value == b("0"))
        #expect(after.kvs.first?.value == b("1"))
        #expect(after.revision == 3)
        #expect(historical.kvs.first?.value == b("0"))
        #expect(deleted.revision == 3)
        // Nested compares were decided before the first write.
        #expect(nested.succeeded)
        let events = try store.events(from: 3, keyRange: .from([0]))
        #expect(events.map(\.kv.key) == [b("a"), b("b"), b("c")])
        #expect(events.allSatisfy { $0.kv.modRevision == 3 })
        // A read-only txn does not take a revision.
        _ = try store.txnResponse(TxnRequest(success: [.range(RangeRequest(key: b("a")))]))
        #expect(store.currentRevision == 3)
    }

    @Test func txnPrecheckFailsWholeTxn() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        try store.put("a", "0")
        let badLease = TxnRequest(success: [.put(PutRequest(key: b("x"), value: b("1"))),
                                            .put(PutRequest(key: b("y"), lease: 99))])
        #expect(try store.failure(.txn(badLease)) == .leaseNotFound)
        let missing = TxnRequest(success: [.put(PutRequest(key: b("x"), value: b("1"))),
                                           .put(PutRequest(key: b("nope"), ignoreValue: true))])
        #expect(try store.failure(.txn(missing)) == .keyNotFound)
        let future = TxnRequest(success: [.put(PutRequest(key: b("x"))), .range(RangeRequest(key: b("a"), revision: 3))])
        #expect(try store.failure(.txn(future)) == .futureRevision)
        #expect(store.currentRevision == 2)
        #expect(try store.get(b("x")) == nil)
        // Errors on the branch not taken do not matter.
        let untaken = TxnRequest(compare: [Compare(key: b("a"), target: .version(1), result: .equal)],
                                 failure: [.put(PutRequest(key: b("y"), lease: 99))])
        #expect(try store.txnResponse(untaken).succeeded)
    }

    @Test func compactionRules() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        for index in 0..<10 { try store.put("k", "\(index)") } // revs 2...11
        _ = try store.run(.deleteRange(DeleteRangeRequest(key: b("k")))) // rev 12
        try store.put("j", "x") // rev 13
        #expect(try store.failure(.compact(revision: 14, physical: false)) == .futureRevision)
        #expect(try store.failure(.compact(revision: 5, physical: true)) == nil)
        #expect(try store.failure(.compact(revision: 5, physical: true)) == .compacted)
        #expect(try store.failure(.compact(revision: 4, physical: true)) == .compacted)
        #expect(store.compactedRevision == 5)
        #expect(kvError { _ = try store.range(RangeRequest(key: b("k"), revision: 4)) } == .compacted)
        #expect(try store.range(RangeRequest(key: b("k"), revision: 5)).kvs.first?.value == b("3"))
        #expect(kvError { _ = try store.events(from: 4, keyRange: .single(b("k"))) } == .compacted)
        let hashBefore = try store.hashKV().hash
        #expect(try store.isCompactionPending)
        try store.finishCompaction(batchRows: 2)
        #expect(try !store.isCompactionPending)
        #expect(try store.hashKV().hash == hashBefore)
        #expect(try store.range(RangeRequest(key: b("k"), revision: 5)).kvs.first?.value == b("3"))
        #expect(try store.range(RangeRequest(key: b("k"), revision: 11)).kvs.first?.value == b("9"))
        // Compact past the delete: the key's whole history goes, the tombstone included.
        _ = try store.run(.compact(revision: 13, physical: true))
        try store.finishCompaction()
        let remaining = try store.db.statement("SELECT COUNT(*) FROM kv WHERE key = ?1").bind(1, b("k"))
        #expect(try remaining.step())
        #expect(remaining.int64(0) == 0)
        #expect(try store.range(RangeRequest(key: [0], rangeEnd: [0], revision: 13)).kvs.map(\.key) == [b("j")])
        #expect(kvError { _ = try store.hashKV(revision: 13) } == .compacted)
    }

    @Test func compactionResumesAfterRestart() throws {
        let scratch = try MVCCScratch()
        var store: MVCCStore? = try scratch.open()
        for index in 0..<50 { try store!.put("k\(index % 5)", "\(index)") }
        _ = try store!.run(.compact(revision: 40, physical: false))
        let hash = try store!.hashKV().hash
        #expect(try !store!.compactStep(maxRows: 10))
        store!.failurePoint = { point in
            if point == .beforeCompactionCommit { throw CancellationError() }
        }
        #expect(throws: CancellationError.self) { try store!.compactStep(maxRows: 10) }
        store = nil
        let reopened = try scratch.open()
        #expect(reopened.compactedRevision == 40)
        #expect(try reopened.isCompactionPending)
        try reopened.finishCompaction(batchRows: 7)
        #expect(try reopened.hashKV().hash == hash)
        let rows = try reopened.db.statement("SELECT COUNT(*) FROM kv")
        #expect(try rows.step())
        // Five keys kept at revision 40 plus the ten later puts.
        #expect(rows.int64(0) == 5 + 11)
    }

    @Test func leases() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        guard case .leaseGrant(let granted) = try store.run(.leaseGrant(id: 5, ttlSeconds: 30)).get() else {
            Issue.record("expected grant")
            return
        }
        #expect(granted == LeaseGrantResponse(revision: 1, id: 5, ttlSeconds: 30))
        #expect(try store.failure(.leaseGrant(id: 5, ttlSeconds: 30)) == .leaseExists)
        #expect(try store.failure(.leaseGrant(id: 0, ttlSeconds: 30)) == .leaseNotFound)
        #expect(try store.failure(.leaseRevoke(id: 6)) == .leaseNotFound)
        try store.put("b", "1", lease: 5)
        try store.put("a", "1", lease: 5)
        try store.put("c", "1", lease: 5)
        try store.put("c", "2") // detaches
        #expect(try store.lease(5)?.keys == [b("a"), b("b")])
        _ = try store.run(.leaseCheckpoint([LeaseCheckpoint(id: 5, remainingTTLSeconds: 12), LeaseCheckpoint(id: 99, remainingTTLSeconds: 1)]))
        #expect(try store.lease(5)?.remainingTTLSeconds == 12)
        #expect(try store.leases().map(\.id) == [5])
        let revision = store.currentRevision
        guard case .leaseRevoke(let revoked) = try store.run(.leaseRevoke(id: 5)).get() else {
            Issue.record("expected revoke")
            return
        }
        #expect(revoked.revision == revision + 1)
        #expect(try store.keys(RangeRequest(key: [0], rangeEnd: [0])) == ["c"])
        let events = try store.events(from: revision + 1, keyRange: .from([0]))
        #expect(events.map(\.kv.key) == [b("a"), b("b")])
        #expect(try store.lease(5) == nil)
        // A lease without keys revokes without a revision.
        _ = try store.run(.leaseGrant(id: 6, ttlSeconds: 1))
        _ = try store.run(.leaseRevoke(id: 6))
        #expect(store.currentRevision == revision + 1)
    }

    @Test func liveEventsCarryPreviousValues() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        try store.put("a", "1")
        let applied = try #require(try store.apply(index: store.appliedIndex + 1, command: .txn(TxnRequest(success: [
            .put(PutRequest(key: b("a"), value: b("2"))),
            .put(PutRequest(key: b("b"), value: b("3"))),
        ]))))
        #expect(applied.events.map(\.kind) == [.put, .put])
        #expect(applied.events.map { $0.prevKv?.value } == [b("1"), nil])
        #expect(applied.events.map(\.kv.modRevision) == [3, 3])
        #expect(try store.events(from: 3, keyRange: .from([0]), prevKv: true) == applied.events)
        let failed = try #require(try store.apply(index: store.appliedIndex + 1, command: .put(PutRequest(key: b("x"), lease: 1))))
        #expect(failed.events.isEmpty)
        // The limit never splits a revision.
        #expect(try store.events(from: 2, keyRange: .from([0]), limit: 2).count == 3)
    }

    @Test func quotaAndNoSpaceAlarm() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open(MVCCStore.Configuration(quotaBackendBytes: 256 * 1024))
        let value = String(repeating: "x", count: 4096)
        var index = 0
        var overQuota = false
        while index < 1000 && !overQuota {
            if case .failure(let error) = try store.run(.put(PutRequest(key: b("k\(index)"), value: b(value)))) {
                #expect(error == .noSpace)
                overQuota = true
            }
            index += 1
        }
        #expect(overQuota)
        // As in etcd, the write that crossed the quota is applied anyway; the alarm goes through the log.
        #expect(try store.get(b("k\(index - 1)")) != nil)
        _ = try store.run(.alarm(.activate))
        #expect(store.isNoSpaceAlarmArmed)
        #expect(try store.failure(.put(PutRequest(key: b("small")))) == .noSpace)
        #expect(try store.failure(.leaseGrant(id: 1, ttlSeconds: 1)) == .noSpace)
        #expect(try store.failure(.txn(TxnRequest(success: [.put(PutRequest(key: b("t")))]))) == .noSpace)
        #expect(try store.failure(.txn(TxnRequest(success: [.range(RangeRequest(key: b("t")))]))) == nil)
        #expect(try store.failure(.deleteRange(DeleteRangeRequest(key: [0], rangeEnd: [0]))) == nil)
        #expect(try store.failure(.compact(revision: store.currentRevision, physical: true)) == nil)
        try store.finishCompaction()
        try store.defragment()
        #expect(try store.sizeBytes() < 256 * 1024)
        #expect(try store.failure(.put(PutRequest(key: b("small")))) == .noSpace)
        _ = try store.run(.alarm(.deactivate))
        #expect(try store.failure(.put(PutRequest(key: b("small")))) == nil)
        // The alarm state survives a restart.
        _ = try store.run(.alarm(.activate))
        let path = store.path
        let reopened = try MVCCStore(path: path)
        #expect(reopened.isNoSpaceAlarmArmed)
    }

    @Test func snapshotAndRestore() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        _ = try store.run(.leaseGrant(id: 3, ttlSeconds: 10))
        for index in 0..<20 { try store.put("k\(index)", "v\(index)", lease: index % 2 == 0 ? 3 : 0) }
        let snapshot = scratch.url.appendingPathComponent("snap.db")
        try store.writeSnapshot(to: snapshot)
        let hash = try store.hashKV().hash
        let snapshotIndex = store.appliedIndex

        let other = try MVCCScratch()
        let follower = try other.open()
        try follower.put("junk", "junk")
        #expect(throws: MVCCStoreError.self) { try follower.restore(from: snapshot, index: snapshotIndex + 1) }
        try follower.restore(from: snapshot, index: snapshotIndex)
        #expect(follower.appliedIndex == snapshotIndex)
        #expect(follower.currentRevision == store.currentRevision)
        #expect(try follower.hashKV().hash == hash)
        #expect(try follower.get(b("junk")) == nil)
        #expect(try follower.lease(3)?.keys.count == 10)
        // Both continue identically.
        try store.put("after", "1")
        try follower.put("after", "1")
        #expect(try follower.hashKV().hash == store.hashKV().hash)
    }

    @Test func hashDependsOnContent() throws {
        let one = try MVCCScratch()
        let two = try MVCCScratch()
        let a = try one.open()
        let c = try two.open()
        try a.put("k", "1")
        try c.put("k", "2")
        #expect(try a.hashKV().hash != c.hashKV().hash)
        #expect(kvError { _ = try a.hashKV(revision: 5) } == .futureRevision)
    }

    @Test func malformedEntryFailsDeterministically() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        let applied = try store.apply(entries: [
            Entry(term: 1, index: 1, data: []),
            Entry(term: 1, index: 2, data: [1, 99]),
            Entry(term: 1, index: 3, data: KVCommandCodec.encode(.put(PutRequest(key: b("a"), value: b("b"))))),
            Entry(term: 1, index: 4, kind: .configChange, data: [1, 2, 3]),
        ])
        #expect(applied.count == 4)
        #expect(applied[0].result == .success(.none))
        guard case .failure(.malformedCommand) = applied[1].result else {
            Issue.record("expected malformed command, got \(applied[1].result)")
            return
        }
        #expect(applied[2].result == .success(.put(PutResponse(revision: 2))))
        #expect(store.appliedIndex == 4)
        // Entries already applied are skipped, not applied twice.
        #expect(try store.apply(entries: [Entry(term: 1, index: 3, data: KVCommandCodec.encode(.put(PutRequest(key: b("a")))))]).isEmpty)
        #expect(store.currentRevision == 2)
    }
}
