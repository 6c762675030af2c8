import Foundation
import Testing
@testable import RaftKV

/// The feed between the apply path and the watch hub: bounded, and lossless for watchers even when it drops.
@Suite struct WatchFeedTests {
    @Test func droppedBatchesAreRecoveredFromHistoryWithoutGapsOrDuplicates() async throws {
        let fixture = try WatchFixture()
        let stream = fixture.hub.makeStream()
        let created = await stream.create(watch("k", end: "l", prevKv: true))
        let watchID = created.watchID
        _ = stream.drain()
        // Apply 50 writes on the store directly and queue them in a feed that holds only 5 events.
        let feed = WatchFeed(maxQueuedEvents: 5)
        for i in 1...50 {
            let applied = try #require(try fixture.store.apply(index: fixture.store.appliedIndex + 1,
                                                               command: .put(PutRequest(key: b("k\(i % 7)"), value: b("v\(i)")))))
            feed.enqueue(.applied([applied], compactedRevision: fixture.store.compactedRevision), storeRevision: fixture.store.currentRevision)
        }
        #expect(feed.droppedBatches == 45, "the feed is bounded: all but the newest five batches are dropped")
        let hub = fixture.hub
        let drain = Task { await feed.run(into: hub) { _ in } }
        // The feed publishes the survivors; the gap sends the watcher back to history.
        for _ in 0..<200 where fixture.hub.currentRevision < fixture.store.currentRevision {
            try await Task.sleep(for: .milliseconds(5))
        }
        feed.finish()
        _ = await drain.value
        fixture.catchUp()
        let received = events(stream.drain(), watchID)
        let expected = try fixture.store.events(from: 2, keyRange: KeyRange(key: b("k"), rangeEnd: b("l")), limit: 1_000, prevKv: true)
        #expect(received.count == 50)
        #expect(firstDifference(received, expected) == nil)
    }
}
