import Foundation
import Testing
@testable import RaftKV

@Suite("Watch replay")
struct WatchReplayTests {
    /// Watchers start at random old revisions while writes continue concurrently; tiny buffers and batches force
    /// watchers in and out of the synced group. Each watcher's events must equal the store's history for its
    /// range: no gap, no duplicate, in order, one revision per response, and progress never ahead.
    @Test func historyReplaySwitchesToLiveWithoutGapsOrDuplicates() async throws {
        let seed = watchSeed("historyReplaySwitchesToLiveWithoutGapsOrDuplicates")
        var random = SeededRandom(seed: seed)
        let fixture = try WatchFixture(.init(maxBufferedEventsPerWatcher: 12, historyBatchEvents: 5,
                                             maxWatchersPerSync: 3))
        let keys = (0..<16).map { "k\(String($0, radix: 16))" }

        func randomCommand() -> KVCommand {
            switch Int.random(in: 0..<10, using: &random) {
            case 0..<6:
                return .put(PutRequest(key: b(keys.randomElement(using: &random)!), value: b("\(random.next() % 1000)")))
            case 6..<8:
                let chosen = keys.shuffled(using: &random).prefix(Int.random(in: 1...4, using: &random))
                return .txn(TxnRequest(success: chosen.map { .put(PutRequest(key: b($0), value: b("t"))) }))
            default:
                let pair = keys.shuffled(using: &random).prefix(2).sorted()
                return .deleteRange(DeleteRangeRequest(key: b(pair[0]), rangeEnd: b(pair[1])))
            }
        }

        func randomRequest(upTo current: Revision) -> WatchCreateRequest {
            let start = Revision.random(in: 1...max(current, 1), using: &random)
            let prevKv = Bool.random(using: &random)
            let key = keys.randomElement(using: &random)!
            switch Int.random(in: 0..<4, using: &random) {
            case 0: return watch(key, start: start, prevKv: prevKv)
            case 1: return watch(key, end: "\0", start: start, prevKv: prevKv)
            case 2:
                let pair = keys.shuffled(using: &random).prefix(2).sorted()
                return watch(pair[0], end: pair[1] + "0", start: start, prevKv: prevKv)
            default: return watch("", end: "\0", start: start, prevKv: prevKv)
            }
        }

        for _ in 0..<150 { try fixture.apply(randomCommand()) }

        let streamCount = 10
        let streams = (0..<streamCount).map { _ in fixture.hub.makeStream() }
        var requests: [WatchCreateRequest] = []
        // Half the watchers exist before the concurrent phase, half are created during it.
        for index in 0..<streamCount / 2 {
            let request = randomRequest(upTo: fixture.store.currentRevision)
            requests.append(request)
            await streams[index].create(request)
        }
        let slowReaders = Set((0..<streamCount).filter { $0 % 3 == 0 || Bool.random(using: &random) })
        let hub = fixture.hub
        let writes = 400

        let collected: [Int: [WatchResponse]] = try await withThrowingTaskGroup(of: (Int, [WatchResponse])?.self) { group in
            group.addTask {
                await hub.run()
                return nil
            }
            for (index, stream) in streams.enumerated() {
                let slow = slowReaders.contains(index)
                group.addTask {
                    var responses: [WatchResponse] = []
                    for await response in stream.responses {
                        responses.append(response)
                        if response.watchID == WatchResponse.invalidWatchID { break }
                        // Slow readers pause long enough for their buffers to fill while their watchers are
                        // synced, so these fall back to history.
                        if slow, responses.count % 10 == 0 { try? await Task.sleep(for: .milliseconds(15)) }
                    }
                    return (index, responses)
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(30))
                for stream in streams { stream.close() }  // a watchdog: fail instead of hanging
                return nil
            }
            for step in 0..<writes {
                try fixture.apply(randomCommand())
                if step % 40 == 0, requests.count < streamCount {
                    let request = randomRequest(upTo: fixture.store.currentRevision)
                    await streams[requests.count].create(request)
                    requests.append(request)
                }
                if step % 10 == 0 { try await Task.sleep(for: .milliseconds(1)) }
            }
            while requests.count < streamCount {
                let request = randomRequest(upTo: fixture.store.currentRevision)
                await streams[requests.count].create(request)
                requests.append(request)
            }
            for stream in streams { await stream.requestProgress() }
            var results: [Int: [WatchResponse]] = [:]
            while results.count < streamCount, let next = try await group.next() {
                if let (index, responses) = next { results[index] = responses }
            }
            group.cancelAll()
            return results
        }

        let finalRevision = fixture.store.currentRevision
        for index in 0..<streamCount {
            let request = requests[index]
            let responses = try #require(collected[index], "seed=\(seed) stream \(index)")
            #expect(responses.first?.created == true && responses.first?.canceled == false, "seed=\(seed)")
            let progress = try #require(responses.last, "seed=\(seed)")
            #expect(progress.watchID == -1 && progress.headerRevision == finalRevision,
                    "seed=\(seed) stream \(index): progress \(progress)")
            let eventResponses = responses.dropFirst().dropLast()
            #expect(eventResponses.allSatisfy { !$0.events.isEmpty && !$0.canceled && !$0.fragment }, "seed=\(seed)")
            // A revision never spans two responses; headers cover their events.
            var seen: Set<Revision> = []
            for response in eventResponses {
                let revisions = Set(response.events.map(\.kv.modRevision))
                #expect(seen.isDisjoint(with: revisions), "seed=\(seed) stream \(index): revision split")
                seen.formUnion(revisions)
                #expect(response.headerRevision >= response.events.last!.kv.modRevision, "seed=\(seed)")
            }
            let key = request.key.isEmpty ? [0] : request.key
            let expected = try fixture.store.events(from: request.startRevision,
                                                    keyRange: KeyRange(key: key, rangeEnd: request.rangeEnd),
                                                    prevKv: request.prevKv)
            let received = eventResponses.flatMap(\.events)
            if let difference = firstDifference(received, expected) {
                Issue.record("seed=\(seed) stream \(index) from \(request.startRevision): \(difference)")
            }
        }
        #expect(fixture.hub.unsyncedWatcherCount == 0, "seed=\(seed)")
        let statistics = fixture.hub.statistics
        print("seed=\(seed): \(statistics.fallbacks) fallbacks to history, \(statistics.historyReads) history reads")
        #expect(statistics.historyReads > 0)
    }
}
