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
        let sql = """
            SELECT rev, sub, key, value, create_rev, version, lease, tombstone FROM kv
            WHERE rev >= ?1 AND \(MVCCStore.keyPredicate(keyRange, first: 2)) ORDER BY rev, sub
            """
        var events: [Event] = []
        var cut = false
        do {
            let statement = try database.statement(sql)
            defer { statement.reset() }
            statement.bind(1, max(startRevision, 0))
            MVCCStore.bind(keyRange, to: statement, first: 2)
            while try statement.step() {
                let revision = statement.int64(0)
                if limit > 0, events.count >= limit, let last = events.last, last.kv.modRevision != revision {
                    cut = true
                    break
                }
                let key = statement.bytes(2)
                if statement.int64(7) != 0 {
                    events.append(Event(kind: .delete, kv: KeyValue(key: key, modRevision: revision)))
                } else {
                    events.append(Event(kind: .put, kv: KeyValue(
                        key: key, createRevision: statement.int64(4), modRevision: revision,
                        version: statement.int64(5), value: statement.bytes(3), lease: statement.int64(6))))
                }
            }
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
        let statement = try database.statement("""
            SELECT rev, create_rev, version, value, lease, tombstone FROM kv
            WHERE key = ?1 AND rev <= ?2 ORDER BY rev DESC, sub DESC LIMIT 1
            """)
        defer { statement.reset() }
        statement.bind(1, key).bind(2, revision)
        guard try statement.step(), statement.int64(5) == 0 else { return nil }
        return KeyValue(key: key, createRevision: statement.int64(1), modRevision: statement.int64(0),
                        version: statement.int64(2), value: statement.bytes(3), lease: statement.int64(4))
    }
}
