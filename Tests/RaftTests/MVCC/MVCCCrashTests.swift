import Foundation
import Testing
@testable import RaftKV

@Suite struct MVCCCrashTests {
    static func entries(from first: LogIndex) -> [Entry] {
        let commands: [KVCommand] = [
            .leaseGrant(id: 9, ttlSeconds: 10),
            .put(PutRequest(key: b("a"), value: b("1"), lease: 9)),
            .txn(TxnRequest(success: [.put(PutRequest(key: b("b"), value: b("2"))), .deleteRange(DeleteRangeRequest(key: b("z")))])),
            .deleteRange(DeleteRangeRequest(key: b("a"))),
            .compact(revision: 3, physical: false),
            .put(PutRequest(key: b("c"), value: b("3"))),
        ]
        return commands.enumerated().map { Entry(term: 1, index: first + LogIndex($0.offset), data: KVCommandCodec.encode($0.element)) }
    }

    /// A crash before the batch commits loses the whole batch, applied index included; delivering it again after
    /// the restart applies every entry exactly once.
    @Test func crashBeforeCommitReappliesExactlyOnce() throws {
        let reference = try MVCCScratch()
        let expected = try reference.open()
        try expected.put("seed", "0")
        _ = try expected.apply(entries: Self.entries(from: 2))

        let scratch = try MVCCScratch()
        var store = try scratch.open()
        try store.put("seed", "0")
        store.failurePoint = { if $0 == .beforeApplyCommit { throw CancellationError() } }
        #expect(throws: CancellationError.self) { _ = try store.apply(entries: Self.entries(from: 2)) }
        // The in-memory view rolled back with the transaction.
        #expect(store.appliedIndex == 1)
        #expect(store.currentRevision == 2)
        #expect(try store.leases().isEmpty)

        store = try scratch.open()
        #expect(store.appliedIndex == 1)
        #expect(store.currentRevision == 2)
        #expect(store.compactedRevision == -1)
        let applied = try store.apply(entries: Self.entries(from: 2))
        #expect(applied.map(\.index) == Array(2...7))
        #expect(applied.allSatisfy { (try? $0.result.get()) != nil })
        #expect(store.appliedIndex == 7)
        #expect(try store.hashKV().hash == expected.hashKV().hash)
        #expect(store.currentRevision == expected.currentRevision)
        #expect(store.compactedRevision == 3)
    }

    /// A crash after the commit keeps the batch: redelivery of the same entries (the log does not know the state
    /// machine got that far) changes nothing.
    @Test func crashAfterCommitSkipsRedeliveredEntries() throws {
        let scratch = try MVCCScratch()
        var store = try scratch.open()
        store.failurePoint = { if $0 == .afterApplyCommit { throw CancellationError() } }
        #expect(throws: CancellationError.self) { _ = try store.apply(entries: Self.entries(from: 1)) }
        store = try scratch.open()
        #expect(store.appliedIndex == 6)
        let revision = store.currentRevision
        let hash = try store.hashKV().hash
        // Overlapping redelivery: only the empty entry at index 7 is new.
        let more = Self.entries(from: 1) + [Entry(term: 2, index: 7, data: [])]
        let applied = try store.apply(entries: Array(more.suffix(3)))
        #expect(applied.map(\.index) == [7])
        #expect(store.appliedIndex == 7)
        #expect(store.currentRevision == revision)
        #expect(try store.hashKV().hash == hash)
    }

    /// Closing the connection with the transaction still open (the process dying) is the same as a rollback.
    @Test func dyingMidTransactionLosesOnlyUncommittedEntries() throws {
        let scratch = try MVCCScratch()
        do {
            let store = try scratch.open()
            _ = try store.apply(entries: Array(Self.entries(from: 1).prefix(2)))
            try store.db.execute("BEGIN IMMEDIATE")
            try store.db.execute("UPDATE meta SET value = 99 WHERE name = 'applied_index'")
            try store.db.execute("DELETE FROM latest")
            // No COMMIT: the connection closes when the store goes away.
        }
        let reopened = try scratch.open()
        #expect(reopened.appliedIndex == 2)
        #expect(try reopened.get(b("a"))?.value == b("1"))
    }

    /// A txn whose later op fails after earlier writes (possible because etcd's duplicate check reads a "\0" range
    /// end literally) is undone completely; etcd 3.4 panics in this case.
    @Test func txnFailingAfterAWriteIsUndone() throws {
        let scratch = try MVCCScratch()
        let store = try scratch.open()
        try store.put("k", "v")
        let request = TxnRequest(success: [.deleteRange(DeleteRangeRequest(key: b("a"), rangeEnd: [0])),
                                           .put(PutRequest(key: b("k"), ignoreValue: true))])
        #expect(kvError { try KVValidation.check(request) } == nil)
        let applied = try #require(try store.apply(index: store.appliedIndex + 1, command: .txn(request)))
        #expect(applied.result == .failure(.keyNotFound))
        #expect(applied.events.isEmpty)
        #expect(store.currentRevision == 2)
        #expect(try store.get(b("k"))?.value == b("v"))
        #expect(try store.events(from: 3, keyRange: .from([0])).isEmpty)
    }
}
