import Foundation
import Testing
@testable import RaftKV

@Suite("Watch hub")
struct WatchHubTests {
    @Test func liveEventsAreOrderedAtomicWithPrevKvAndFilters() async throws {
        let fixture = try WatchFixture()
        let stream = fixture.hub.makeStream()
        try fixture.put("a0", "zero")  // 2
        let prefix = await stream.create(watch("a", end: "b", prevKv: true))
        let single = await stream.create(watch("a1"))
        let noPut = await stream.create(watch("a", end: "b", filters: [.noPut]))
        let noDelete = await stream.create(watch("a", end: "b", filters: [.noDelete], id: 7))
        #expect([prefix, single, noPut, noDelete].map(\.watchID) == [0, 1, 2, 7])
        #expect([prefix, single, noPut, noDelete].allSatisfy { $0.created && !$0.canceled && $0.headerRevision == 2 })

        try fixture.put("a1", "one")  // 3
        try fixture.apply(.txn(TxnRequest(success: [
            .put(PutRequest(key: b("a1"), value: b("uno"))), .put(PutRequest(key: b("a2"), value: b("two"))),
            .deleteRange(DeleteRangeRequest(key: b("a0"))),
        ])))  // 4
        try fixture.delete("a1")  // 5
        try fixture.put("b1", "outside")  // 6

        let responses = stream.drain()
        #expect(responses.prefix(4).map(\.watchID) == [0, 1, 2, 7])
        let prefixResponses = responses.filter { $0.watchID == 0 && !$0.created }
        // One response per revision: the transaction's three events arrive together, in sub-revision order.
        #expect(prefixResponses.map(\.headerRevision) == [3, 4, 5])
        #expect(prefixResponses.map { $0.events.map(\.keyText) } == [["a1"], ["a1", "a2", "a0"], ["a1"]])
        #expect(prefixResponses[1].events.map(\.kind) == [.put, .put, .delete])
        // prev_kv: the value before each change.
        #expect(prefixResponses[0].events[0].prevKv == nil)
        #expect(prefixResponses[1].events[0].prevKv?.value == b("one"))
        #expect(prefixResponses[1].events[1].prevKv == nil)
        #expect(prefixResponses[1].events[2].prevKv?.value == b("zero"))
        #expect(prefixResponses[2].events[0].prevKv?.value == b("uno"))

        let singleEvents = events(responses.filter { !$0.created }, 1)
        #expect(singleEvents.map(\.kv.modRevision) == [3, 4, 5])
        #expect(singleEvents.allSatisfy { $0.prevKv == nil })
        #expect(events(responses, 2).map { "\($0.keyText)@\($0.kv.modRevision)" } == ["a0@4", "a1@5"])
        #expect(events(responses, 7).map { "\($0.keyText)@\($0.kv.modRevision)" } == ["a1@3", "a1@4", "a2@4"])
        #expect(fixture.hub.unsyncedWatcherCount == 0)
    }

    @Test func createErrorsMatchEtcd() async throws {
        let fixture = try WatchFixture(.init(maxWatchersPerStream: 2))
        let stream = fixture.hub.makeStream()
        let first = await stream.create(watch("a", id: 5))
        let duplicate = await stream.create(watch("b", id: 5))
        #expect(first.watchID == 5 && first.created && !first.canceled)
        #expect(duplicate == WatchResponse(headerRevision: 1, watchID: -1, created: true, canceled: true,
                                           cancelReason: "mvcc: duplicate watch ID provided on the WatchStream"))
        let empty = await stream.create(watch("b", end: "a"))
        #expect(empty.watchID == -1 && empty.created && empty.canceled
                && empty.cancelReason == "mvcc: watcher range is empty")
        // Auto IDs skip the client-chosen ones.
        #expect(await stream.create(watch("c")).watchID == 0)
        let tooMany = await stream.create(watch("d"))
        #expect(tooMany.canceled && tooMany.watchID == -1 && tooMany.cancelReason == WatchCancelReason.tooManyWatchers)
        #expect(stream.drain() == [first, duplicate, empty, WatchResponse(headerRevision: 1, watchID: 0, created: true), tooMany])

        // Cancel: the canceled response follows, nothing after it; unknown IDs answer nothing (etcd 3.4).
        try fixture.put("a", "1")
        #expect(await stream.cancel(watchID: 5))
        try fixture.put("a", "2")
        #expect(!(await stream.cancel(watchID: 42)))
        let afterCancel = stream.drain()
        #expect(afterCancel.map(\.watchID) == [5, 5])
        #expect(afterCancel[0].events.map(\.kv.modRevision) == [2])
        #expect(afterCancel[1].canceled && afterCancel[1].events.isEmpty)
        #expect(fixture.hub.watcherCount == 1)
    }

    @Test func compactedStartRevisionCancelsWithCompactRevision() async throws {
        let fixture = try WatchFixture()
        for index in 0..<10 { try fixture.put("k\(index)", "v") }  // 2...11
        try fixture.apply(.compact(revision: 6, physical: true))
        try fixture.store.finishCompaction()
        let stream = fixture.hub.makeStream()
        let old = await stream.create(watch("k", end: "l", start: 3))
        let atCompaction = await stream.create(watch("k", end: "l", start: 6))
        fixture.catchUp()
        let responses = stream.drain().filter { !$0.created }
        let canceled = responses.filter { $0.watchID == old.watchID }
        #expect(canceled == [WatchResponse(headerRevision: 11, watchID: old.watchID, canceled: true, compactRevision: 6)])
        #expect(events(responses, atCompaction.watchID).map(\.kv.modRevision) == Array(6...11))
        #expect(fixture.hub.watcherCount == 1)

        // A compaction the hub has not been told about yet is found by the history read.
        _ = try fixture.store.apply(index: fixture.store.appliedIndex + 1, command: .compact(revision: 9, physical: false))
        let late = await stream.create(watch("k", end: "l", start: 7))
        fixture.catchUp()
        let lateResponses = stream.drain().filter { $0.watchID == late.watchID && !$0.created }
        #expect(lateResponses.count == 1)
        #expect(lateResponses.first?.canceled == true && lateResponses.first?.compactRevision == 9)
    }

    @Test func slowWatcherNeverBlocksPublishingNorOthersAndCatchesUpExactlyOnce() async throws {
        let fixture = try WatchFixture(.init(maxBufferedEventsPerWatcher: 50, historyBatchEvents: 40))
        let slow = fixture.hub.makeStream()
        let fast = fixture.hub.makeStream()
        await slow.create(watch("", end: "\0", prevKv: true))
        await fast.create(watch("", end: "\0"))
        _ = slow.drain()
        _ = fast.drain()

        let writes = 3000
        var fastEvents: [Event] = []
        var slowestPublish = Duration.zero
        var totalPublish = Duration.zero
        let clock = ContinuousClock()
        for index in 0..<writes {
            let applied = try #require(try fixture.store.apply(
                index: fixture.store.appliedIndex + 1,
                command: .put(PutRequest(key: b("k\(index % 97)"), value: b("v\(index)")))))
            let elapsed = clock.measure { fixture.hub.publish([applied], compactedRevision: -1) }
            slowestPublish = max(slowestPublish, elapsed)
            totalPublish += elapsed
            fastEvents += events(fast.drain(), 0)
            // The slow stream's queue stays bounded however far behind it is.
            #expect(fixture.hub.queueState(slow.id).maxWatcherEvents <= 50)
        }
        let expected = try fixture.store.events(from: 2, keyRange: .from([0]), prevKv: false)
        print("slow watcher: \(writes) publishes took \(totalPublish), slowest \(slowestPublish)")
        #expect(totalPublish < .seconds(1))
        if let difference = firstDifference(fastEvents, expected) { Issue.record("fast watcher: \(difference)") }
        #expect(fixture.hub.unsyncedWatcherCount == 1)

        // Now it reads: every event exactly once, in order, the buffered ones first, then history, then live.
        var slowEvents: [Event] = []
        while true {
            let batch = slow.drain()
            slowEvents += events(batch, 0)
            if batch.isEmpty, !fixture.hub.catchUpRound() { break }
        }
        let expectedWithPrevKv = try fixture.store.events(from: 2, keyRange: .from([0]), prevKv: true)
        #expect(expectedWithPrevKv.count == writes)
        if let difference = firstDifference(slowEvents, expectedWithPrevKv) { Issue.record("slow watcher: \(difference)") }
        #expect(fixture.hub.unsyncedWatcherCount == 0)
        try fixture.put("live", "again")
        #expect(events(slow.drain(), 0).map(\.keyText) == ["live"])
    }

    /// The apply path publishes after its commit, so a history read can see revisions not yet published: the
    /// watcher gets them from history, turns synced, and the later publish of the same revisions is skipped.
    @Test func historyAheadOfPublishedRevisionIsNotDeliveredTwice() async throws {
        let fixture = try WatchFixture()
        for index in 0..<5 { try fixture.put("k\(index)", "v") }  // 2...6, published
        let stream = fixture.hub.makeStream()
        await stream.create(watch("k", end: "l", start: 3))
        var pending: [AppliedEntry] = []
        for index in 0..<3 {  // 7...9, committed but not published yet
            pending.append(try #require(try fixture.store.apply(
                index: fixture.store.appliedIndex + 1, command: .put(PutRequest(key: b("k\(index)"), value: b("w"))))))
        }
        fixture.catchUp()
        #expect(fixture.hub.unsyncedWatcherCount == 0)
        fixture.hub.publish(pending, compactedRevision: -1)
        try fixture.put("k9", "live")  // 10
        let responses = stream.drain()
        #expect(responses.flatMap(\.events).map(\.kv.modRevision) == Array(3...10))
        // The history response covers the unpublished revisions; the header never trails its events.
        #expect(responses.allSatisfy { $0.headerRevision >= ($0.events.last?.kv.modRevision ?? 0) })
    }

    @Test func slowWatcherCompactedPastItsNextRevisionIsCanceled() async throws {
        let fixture = try WatchFixture(.init(maxBufferedEventsPerWatcher: 10))
        let slow = fixture.hub.makeStream()
        await slow.create(watch("k", end: "l"))
        _ = slow.drain()
        for index in 0..<100 { try fixture.put("k\(index)", "v") }  // 2...101
        try fixture.apply(.compact(revision: 80, physical: true))
        let responses = slow.drain()
        let received = responses.flatMap(\.events).map(\.kv.modRevision)
        #expect(received == Array(2...Revision(1 + received.count)))
        #expect(received.count <= 10)
        #expect(responses.last == WatchResponse(headerRevision: 101, watchID: 0, canceled: true, compactRevision: 80))
        #expect(fixture.hub.watcherCount == 0)
    }

    @Test func progressRequestWaitsUntilTheStreamIsSynced() async throws {
        let fixture = try WatchFixture(.init(maxBufferedEventsPerWatcher: 4, historyBatchEvents: 3))
        let stream = fixture.hub.makeStream()
        // A stream without watchers gets nothing, as in etcd 3.5.
        await stream.requestProgress()
        #expect(stream.drain().isEmpty)

        for index in 0..<10 { try fixture.put("k\(index)", "v") }  // 2...11
        await stream.create(watch("k", end: "l", start: 2))
        await stream.requestProgress()
        #expect(stream.drain().map(\.created) == [true])  // unsynced: no progress yet

        // Keep writing while it catches up (it also overflows its tiny buffer on the way).
        var responses: [WatchResponse] = []
        for index in 0..<20 {
            try fixture.put("k\(index)", "w")  // 12...31
            if index % 3 == 0 { _ = fixture.hub.catchUpRound() }
            responses += stream.drain()
        }
        while true {
            let batch = stream.drain()
            responses += batch
            if batch.isEmpty, !fixture.hub.catchUpRound() { break }
        }
        let progress = responses.filter { $0.watchID == WatchResponse.invalidWatchID }
        #expect(progress.count == 1)
        let progressIndex = try #require(responses.firstIndex { $0.watchID == WatchResponse.invalidWatchID })
        let header = responses[progressIndex].headerRevision
        // Never ahead: every event up to the header came before it, none after it.
        let before = responses[..<progressIndex].flatMap(\.events).map(\.kv.modRevision)
        let after = responses[(progressIndex + 1)...].flatMap(\.events).map(\.kv.modRevision)
        #expect(before == Array(2...header))
        #expect(after.allSatisfy { $0 > header })
        #expect(before + after == Array(2...31))

        // Synced: answered at once with the current revision.
        await stream.requestProgress()
        #expect(stream.drain() == [WatchResponse(headerRevision: 31, watchID: -1)])
    }

    @Test func periodicProgressOnlyWhenIdleAndSynced() async throws {
        let fixture = try WatchFixture(.init(maxBufferedEventsPerWatcher: 2))
        let stream = fixture.hub.makeStream()
        let notified = await stream.create(watch("a", id: 3, progressNotify: true))
        await stream.create(watch("b"))
        _ = stream.drain()
        fixture.hub.progressTick()
        #expect(stream.drain() == [WatchResponse(headerRevision: 1, watchID: notified.watchID)])
        // An unread progress response is not repeated.
        fixture.hub.progressTick()
        fixture.hub.progressTick()
        #expect(stream.drain().count == 1)

        try fixture.put("a", "1")
        fixture.hub.progressTick()  // events were sent since the last tick: elided, as etcd
        #expect(stream.drain().map(\.events.count) == [1])
        try fixture.put("b", "1")
        fixture.hub.progressTick()
        #expect(stream.drain().map(\.headerRevision) == [3, 3])  // b's event, then a's progress at 3

        // Behind (unsynced): no progress until caught up.
        for index in 0..<5 { try fixture.put("a", "\(index)") }
        fixture.hub.progressTick()
        fixture.hub.progressTick()
        var responses: [WatchResponse] = []
        while true {
            let batch = stream.drain()
            responses += batch
            if batch.isEmpty, !fixture.hub.catchUpRound() { break }
        }
        #expect(responses.allSatisfy { !$0.events.isEmpty })
        #expect(responses.flatMap(\.events).map(\.kv.modRevision) == Array(4...8))
        fixture.hub.progressTick()
        fixture.hub.progressTick()
        #expect(stream.drain() == [WatchResponse(headerRevision: 8, watchID: 3)])
    }

    @Test func runDrivesPeriodicProgressAndCatchUp() async throws {
        let fixture = try WatchFixture(.init(progressNotifyInterval: .milliseconds(20)))
        for index in 0..<50 { try fixture.put("k\(index)", "v") }
        let hub = fixture.hub
        let stream = hub.makeStream()
        await stream.create(watch("k", end: "l", start: 1, progressNotify: true))
        let received: [WatchResponse] = await withTaskGroup(of: [WatchResponse]?.self) { group in
            group.addTask {
                await hub.run()
                return nil
            }
            group.addTask {
                var responses: [WatchResponse] = []
                for await response in stream.responses {
                    responses.append(response)
                    if response.isProgressNotify { break }
                }
                return responses
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(10))
                stream.close()  // a watchdog: fail instead of hanging
                return nil
            }
            var result: [WatchResponse] = []
            while let next = await group.next() {
                if let responses = next {
                    result = responses
                    break
                }
            }
            group.cancelAll()
            return result
        }
        #expect(received.first?.created == true)
        #expect(received.flatMap(\.events).map(\.kv.modRevision) == Array(2...51))
        #expect(received.last == WatchResponse(headerRevision: 51, watchID: 0))
    }

    @Test func manyWatchersOnOneStreamAndCloseFreesThem() async throws {
        let fixture = try WatchFixture(.init(maxWatchersPerStream: 1000))
        let stream = fixture.hub.makeStream()
        for index in 0..<1000 {
            let response = await stream.create(watch("key\(index)", prevKv: index % 2 == 0))
            #expect(response.watchID == Int64(index))
            _ = stream.drain()
        }
        #expect(await stream.create(watch("one-too-many")).canceled)
        _ = stream.drain()
        #expect(fixture.hub.watcherCount == 1000)
        try fixture.apply(.txn(TxnRequest(success: (0..<100).map {
            .put(PutRequest(key: b("key\($0 * 10)"), value: b("v")))
        })))
        let responses = stream.drain()
        #expect(responses.count == 100)
        #expect(Set(responses.map(\.watchID)) == Set((0..<100).map { Int64($0 * 10) }))
        #expect(responses.allSatisfy { $0.events.count == 1 && $0.headerRevision == 2 })

        for index in stride(from: 0, to: 1000, by: 2) {
            #expect(await stream.cancel(watchID: Int64(index)))
            _ = stream.drain()
        }
        #expect(fixture.hub.watcherCount == 500)
        stream.close()
        #expect(fixture.hub.watcherCount == 0)
        #expect(fixture.hub.streamCount == 0)
        #expect(await stream.next() == nil)
        try fixture.put("key1", "after close")  // nothing left to deliver to

        // Dropping a stream closes it; so does canceling its reader.
        do {
            let dropped = fixture.hub.makeStream()
            await dropped.create(watch("x"))
        }
        #expect(fixture.hub.streamCount == 0)
        let read = fixture.hub.makeStream()
        await read.create(watch("x"))
        let reader = Task {
            var count = 0
            for await _ in read.responses { count += 1 }
            return count
        }
        reader.cancel()
        _ = await reader.value
        #expect(fixture.hub.streamCount == 0)
        #expect(fixture.hub.watcherCount == 0)
    }

    @Test func controlRequestsWaitWhileTheirAnswersAreUnread() async throws {
        let fixture = try WatchFixture(.init(maxPendingControlResponses: 4))
        let stream = fixture.hub.makeStream()
        for index in 0..<4 { await stream.create(watch("k\(index)")) }
        let blocked = Task { await stream.create(watch("k4")) }
        try await Task.sleep(for: .milliseconds(50))
        #expect(fixture.hub.watcherCount == 4)
        #expect(stream.poll()?.watchID == 0)
        let response = await blocked.value
        #expect(response.watchID == 4)
        #expect(stream.drain().map(\.watchID) == [1, 2, 3, 4])
    }

    @Test func hugeRevisionIsFragmentedOnlyForWatchersThatAskForIt() async throws {
        let maxBytes = 4096
        let fixture = try WatchFixture(.init(maxResponseBytes: maxBytes))
        let stream = fixture.hub.makeStream()
        let fragmented = await stream.create(watch("f", end: "g", fragment: true))
        let whole = await stream.create(watch("f", end: "g"))
        _ = stream.drain()
        let value = [UInt8](repeating: 0x61, count: 1000)
        try fixture.apply(.txn(TxnRequest(success: (0..<10).map {
            .put(PutRequest(key: b("f\($0)"), value: value))
        })))  // 2
        let responses = stream.drain()
        let fragments = responses.filter { $0.watchID == fragmented.watchID }
        #expect(fragments.count >= 3)
        #expect(fragments.dropLast().allSatisfy { $0.fragment })
        #expect(fragments.last?.fragment == false)
        #expect(fragments.allSatisfy { $0.headerRevision == 2 })
        #expect(fragments.allSatisfy { WatchEncodedSize.envelope($0) + $0.events.reduce(0) {
            $0 + WatchEncodedSize.eventField(WatchEncodedSize.event($1))
        } < maxBytes })
        #expect(fragments.flatMap(\.events).map(\.keyText) == (0..<10).map { "f\($0)" })
        let wholeResponses = responses.filter { $0.watchID == whole.watchID }
        #expect(wholeResponses.map(\.events.count) == [10])

        // From history too; and several revisions are split at revision boundaries, never inside one.
        for index in 0..<10 { try fixture.put("f\(index)", String(repeating: "b", count: 1000)) }  // 3...12
        let replay = await stream.create(watch("f", end: "g", start: 2, fragment: true))
        let replayWhole = await stream.create(watch("f", end: "g", start: 3))
        _ = stream.drain()
        fixture.catchUp()
        let history = stream.drain()
        let replayed = history.filter { $0.watchID == replay.watchID }
        #expect(replayed.flatMap(\.events).map(\.kv.modRevision) == Array(repeating: 2, count: 10) + Array(3...12))
        #expect(replayed.filter { $0.fragment }.count >= 2)
        let split = history.filter { $0.watchID == replayWhole.watchID }
        #expect(split.count >= 3)
        #expect(split.allSatisfy { !$0.fragment && $0.headerRevision >= ($0.events.last?.kv.modRevision ?? 0) })
        #expect(split.flatMap(\.events).map(\.kv.modRevision) == Array(3...12))
    }
}
