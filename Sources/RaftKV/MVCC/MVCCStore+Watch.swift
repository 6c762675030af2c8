import Foundation

extension MVCCStore {
    /// A history reader over a separate read-only connection to this store's database file. SQLite's WAL mode
    /// lets it read committed state while the apply path writes.
    public func makeWatchHistory() throws -> MVCCWatchHistory {
        try MVCCWatchHistory(path: path)
    }
}

/// ``WatchHistory`` over its own read-only SQLite connection to an ``MVCCStore`` file.
///
/// Each read runs in one read transaction, so the compacted revision, the current revision and the events come
/// from the same snapshot. The connection is guarded by a lock: reads are serialized.
public final class MVCCWatchHistory: WatchHistory, @unchecked Sendable {
    private let path: String
    private let lock = NSLock()
    /// Guarded by `lock`.
    private var database: SQLiteDatabase

    public init(path: String) throws {
        self.path = path
        database = try SQLiteDatabase(path: path, create: false, readOnly: true)
    }

    public func reopen() throws {
        let fresh = try SQLiteDatabase(path: path, create: false, readOnly: true)
        lock.withLock { database = fresh }
    }

    public func read(from startRevision: Revision, keyRange: KeyRange, limit: Int, prevKv: Bool) throws -> WatchHistoryRead {
        try lock.withLock {
            try database.transaction(immediate: false) {
                try readInSnapshot(from: startRevision, keyRange: keyRange, limit: limit, prevKv: prevKv)
            }
        }
    }

    private func meta(_ name: String) throws -> Int64 {
        let statement = try database.statement("SELECT value FROM meta WHERE name = ?1")
        defer { statement.reset() }
        statement.bind(1, name)
        guard try statement.step() else { preconditionFailure("meta row \(name) is created at open") }
        return statement.int64(0)
    }

    private func readInSnapshot(from startRevision: Revision, keyRange: KeyRange, limit: Int, prevKv: Bool) throws -> WatchHistoryRead {
        let currentRevision = try meta("current_rev")
        let compactedRevision = try meta("compact_rev")
        // Same rule as MVCCStore.events(from:): starting exactly at the compacted revision is allowed.
        if startRevision < compactedRevision { return .compacted(compactedRevision: compactedRevision) }
        if MVCCStore.isEmpty(keyRange) || startRevision > currentRevision {
            return .events([], throughRevision: currentRevision)
        }
        var events: [Event] = []
        let cut: Bool
        do {
            let statement = try database.statement(MVCCStore.eventsSQL(keyRange))
            defer { statement.reset() }
            cut = try MVCCStore.readEvents(statement, from: startRevision, keyRange: keyRange, limit: limit, into: &events)
        }
        if prevKv {
            for index in events.indices {
                let previous = events[index].kv.modRevision - 1
                guard previous >= compactedRevision, previous > 0 else { continue }
                events[index].prevKv = try valueAt(events[index].kv.key, revision: previous)
            }
        }
        let through = cut ? events.last!.kv.modRevision : currentRevision
        return .events(events, throughRevision: through)
    }

    private func valueAt(_ key: [UInt8], revision: Revision) throws -> KeyValue? {
        let statement = try database.statement(MVCCStore.valueAtSQL)
        defer { statement.reset() }
        return try MVCCStore.readValue(statement, key: key, revision: revision)
    }
}
