import Foundation
import Testing
@testable import RaftKV

/// Watches through the embedded store: the hub is fed by the apply path and replays history from the store.
@Suite struct KVStoreWatchTests {
    /// Reads responses until `count` events arrived, returning them in order; gives up (closing the stream) after
    /// 10 s so that a hub that is never fed fails the test instead of hanging it.
    static func collectEvents(_ stream: WatchStream, count: Int) async -> [Event] {
        let deadline = Task {
            try? await Task.sleep(for: .seconds(10))
            stream.close()
        }
        defer { deadline.cancel() }
        var events: [Event] = []
        while events.count < count, let response = await stream.next() {
            events += response.events
        }
        return events
    }

    @Test func liveAndReplayedWatchersSeeEveryWriteInOrder() async throws {
        let scratch = try StoreScratch()
        let running = RunningStore(try KVStore.open(directory: scratch.url, configuration: fastConfiguration()))
        let store = running.store
        try await store.put("/a/early", "0")
        let stream = store.watch()
        let created = await stream.create(WatchCreateRequest(key: u8("/a/"), rangeEnd: KeyRange.prefixEnd(u8("/a/")), prevKv: true))
        #expect(created.created && !created.canceled)
        for i in 1...20 { try await store.put("/a/k\(i % 5)", "v\(i)") }
        try await store.put("/b/outside", "x")
        _ = try await store.delete("/a/k1")
        let live = await Self.collectEvents(stream, count: 21)
        #expect(live.count == 21)
        #expect(live.map { String(decoding: $0.kv.value, as: UTF8.self) }.prefix(20) == ArraySlice((1...20).map { "v\($0)" }))
        #expect(live.last?.kind == .delete)
        #expect(live[5].prevKv.map { String(decoding: $0.value, as: UTF8.self) } == "v1", "prev_kv of the second write to k1")
        #expect(zip(live, live.dropFirst()).allSatisfy { $0.kv.modRevision < $1.kv.modRevision })

        // A second watcher from the first revision replays the same history, including the early write.
        let replay = store.watch()
        _ = await replay.create(WatchCreateRequest(key: u8("/a/"), rangeEnd: KeyRange.prefixEnd(u8("/a/")), startRevision: 1))
        let history = await Self.collectEvents(replay, count: 22)
        #expect(history.count == 22)
        #expect(history.dropFirst().map(\.kv.modRevision) == live.map(\.kv.modRevision))
        stream.close()
        replay.close()
        await running.close()
    }

    @Test func watchFromACompactedRevisionIsCanceledWithTheCompactRevision() async throws {
        let scratch = try StoreScratch()
        let running = RunningStore(try KVStore.open(directory: scratch.url, configuration: fastConfiguration()))
        let store = running.store
        for i in 1...10 { try await store.put("k", "v\(i)") }
        try await store.compact(revision: 8)
        let stream = store.watch()
        _ = await stream.create(WatchCreateRequest(key: u8("k"), startRevision: 3))
        let deadline = Task {
            try? await Task.sleep(for: .seconds(10))
            stream.close()
        }
        defer { deadline.cancel() }
        var canceled: WatchResponse?
        while canceled == nil, let response = await stream.next() {
            if response.canceled { canceled = response }
        }
        #expect(canceled?.compactRevision == 8)
        stream.close()
        await running.close()
    }
}
