import Foundation
import Testing
@testable import RaftKV

/// A real store on a scratch directory feeding a watch hub exactly as the node will: apply, then publish.
final class WatchFixture {
    let scratch: MVCCScratch
    let store: MVCCStore
    let hub: WatchHub

    init(_ configuration: WatchHub.Configuration = .init()) throws {
        scratch = try MVCCScratch()
        store = try scratch.open()
        hub = WatchHub(history: try store.makeWatchHistory(), currentRevision: store.currentRevision,
                       compactedRevision: store.compactedRevision, configuration: configuration)
    }

    /// Applies `command` as the next entry and publishes what it produced.
    @discardableResult
    func apply(_ command: KVCommand) throws -> AppliedEntry {
        let applied = try #require(try store.apply(index: store.appliedIndex + 1, command: command))
        hub.publish([applied], compactedRevision: store.compactedRevision)
        return applied
    }

    func put(_ key: String, _ value: String) throws {
        try apply(.put(PutRequest(key: b(key), value: b(value))))
    }

    func delete(_ key: String, end: String = "") throws {
        try apply(.deleteRange(DeleteRangeRequest(key: b(key), rangeEnd: b(end))))
    }

    /// Runs catch-up rounds until there is nothing left to do.
    func catchUp() {
        while hub.catchUpRound() {}
    }
}

extension WatchStream {
    /// Every response queued now.
    func drain() -> [WatchResponse] {
        var responses: [WatchResponse] = []
        while let response = poll() { responses.append(response) }
        return responses
    }
}

func watch(_ key: String, end: String = "", start: Revision = 0, prevKv: Bool = false,
           filters: [WatchFilter] = [], id: Int64 = 0, progressNotify: Bool = false,
           fragment: Bool = false) -> WatchCreateRequest {
    WatchCreateRequest(key: b(key), rangeEnd: b(end), startRevision: start, progressNotify: progressNotify,
                       filters: filters, prevKv: prevKv, watchID: id, fragment: fragment)
}

extension Event {
    var keyText: String { String(decoding: kv.key, as: UTF8.self) }
    var valueText: String { String(decoding: kv.value, as: UTF8.self) }
}

/// The events of `responses` for `watchID`, in order.
func events(_ responses: [WatchResponse], _ watchID: Int64) -> [Event] {
    responses.filter { $0.watchID == watchID }.flatMap(\.events)
}


/// The seed from `WATCH_SEED`, or a fresh one; printed with the command that replays it.
func watchSeed(_ test: String) -> UInt64 {
    let seed = ProcessInfo.processInfo.environment["WATCH_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...999_999)
    print("\(test): seed=\(seed) (replay: WATCH_SEED=\(seed) swift test --filter \(test))")
    return seed
}

/// Where two event sequences first differ, briefly (nil when equal), so a failure stays readable.
func firstDifference(_ received: [Event], _ expected: [Event]) -> String? {
    func describe(_ event: Event?) -> String {
        guard let event else { return "nothing" }
        return "\(event.kind) \(event.keyText)@\(event.kv.modRevision) prev=\(event.prevKv.map { "\($0.modRevision)" } ?? "nil")"
    }
    for index in 0..<max(received.count, expected.count) {
        let got = index < received.count ? received[index] : nil
        let want = index < expected.count ? expected[index] : nil
        if got != want {
            return "event #\(index) of \(expected.count): got \(describe(got)), expected \(describe(want)) "
                + "(received \(received.count))"
        }
    }
    return nil
}
