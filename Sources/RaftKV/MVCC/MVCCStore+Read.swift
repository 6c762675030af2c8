extension MVCCStore {
    // MARK: Public reads (served from the local state, outside the log)

    /// Serves a range at the current revision, exactly as etcd's applier does.
    public func range(_ request: RangeRequest) throws -> RangeResponse {
        try range(request, readRevision: currentRevision)
    }

    /// The current value of `key`, if it exists.
    public func get(_ key: [UInt8]) throws -> KeyValue? {
        try latestValue(key)
    }

    /// The events with revision ≥ `startRevision` on keys in `keyRange`, in (revision, sub-revision) order.
    ///
    /// At least `limit` events are returned when that many exist, but a revision is never split: the events of
    /// the last revision are all included (`limit` ≤ 0 = no limit). `prevKv` fills each event's previous value (the
    /// key at `modRevision - 1`) while that revision is not compacted. A `startRevision` below the compacted
    /// revision throws ``KVError/compacted``; as in etcd, starting exactly at it is allowed (the store keeps every
    /// change of the compacted revision itself).
    public func events(from startRevision: Revision, keyRange: KeyRange, limit: Int = 0, prevKv: Bool = false) throws -> [Event] {
        if startRevision < compactedRevision { throw KVError.compacted }
        if Self.isEmpty(keyRange) { return [] }
        var events: [Event] = []
        try withStatement(Self.eventsSQL(keyRange)) { statement in
            _ = try Self.readEvents(statement, from: startRevision, keyRange: keyRange, limit: limit, into: &events)
        }
        if prevKv {
            for index in events.indices {
                let previous = events[index].kv.modRevision - 1
                // As etcd: a previous value that was compacted away is simply left out.
                guard previous >= compactedRevision, previous > 0 else { continue }
                events[index].prevKv = try valueAt(events[index].kv.key, revision: previous)
            }
        }
        return events
    }

    /// A hash of the logical key-value history up to `revision` (≤ 0 = current), independent of physical layout
    /// and of how far physical compaction has progressed: members at the same applied index agree on it.
    ///
    /// It covers, for the compacted revision, the live value of every key, then every change after it.
    public func hashKV(revision: Revision = 0) throws -> (hash: UInt32, currentRevision: Revision, compactedRevision: Revision) {
        if revision > 0 && revision <= compactedRevision { throw KVError.compacted }
        if revision > currentRevision { throw KVError.futureRevision }
        let upper = revision > 0 ? revision : currentRevision
        var hash = CRC32C()
        func add(_ kv: KeyValue, sub: Int64, tombstone: Bool) {
            hash.update(int: kv.modRevision)
            hash.update(int: sub)
            hash.update(int: tombstone ? 1 : 0)
            hash.update(int: Int64(kv.key.count))
            hash.update(kv.key)
            hash.update(int: Int64(kv.value.count))
            hash.update(kv.value)
            hash.update(int: kv.createRevision)
            hash.update(int: kv.version)
            hash.update(int: kv.lease)
        }
        if compactedRevision > 0 {
            try forEachKey(in: .from([]), at: compactedRevision) { kv in
                add(kv, sub: 0, tombstone: false)
                return true
            }
        }
        let sql = """
            SELECT rev, sub, key, value, create_rev, version, lease, tombstone FROM kv
            WHERE rev > ?1 AND rev <= ?2 ORDER BY rev, sub
            """
        try withStatement(sql) { statement in
            statement.bind(1, max(compactedRevision, 0)).bind(2, upper)
            while try statement.step() {
                let kv = KeyValue(key: statement.bytes(2), createRevision: statement.int64(4),
                                  modRevision: statement.int64(0), version: statement.int64(5),
                                  value: statement.bytes(3), lease: statement.int64(6))
                add(kv, sub: statement.int64(1), tombstone: statement.int64(7) != 0)
            }
        }
        // Leases are state too: a member that lost one must not hash equal.
        for lease in try leases() {
            hash.update(int: lease.id)
            hash.update(int: lease.grantedTTLSeconds)
        }
        return (hash.value, currentRevision, compactedRevision)
    }

    // MARK: Leases

    /// The lease `id` with its attached keys (when `keys`), or nil when it does not exist.
    public func lease(_ id: LeaseID, keys: Bool = true) throws -> LeaseInfo? {
        var info: LeaseInfo? = try withStatement("SELECT ttl, remaining_ttl FROM lease WHERE id = ?1") { statement in
            statement.bind(1, id)
            guard try statement.step() else { return nil }
            return LeaseInfo(id: id, grantedTTLSeconds: statement.int64(0), remainingTTLSeconds: statement.int64(1))
        }
        if keys, info != nil {
            info?.keys = try attachedKeys(id)
        }
        return info
    }

    /// Every member record, by ascending ID (a UInt64 ID is stored as its Int64 bit pattern).
    public func members() throws -> [MemberRecord] {
        try withStatement("SELECT id, name, peer_urls, client_urls FROM member") { statement in
            var result: [MemberRecord] = []
            while try statement.step() {
                result.append(MemberRecord(id: UInt64(bitPattern: statement.int64(0)), name: statement.string(1),
                                           peerURLs: MemberRecord.split(statement.string(2)),
                                           clientURLs: MemberRecord.split(statement.string(3))))
            }
            return result.sorted { $0.id < $1.id }
        }
    }

    /// Whether member `id` was removed from the cluster (IDs are never reused).
    public func isRemovedMember(_ id: NodeID) throws -> Bool {
        try withStatement("SELECT 1 FROM removed_member WHERE id = ?1") { statement in
            statement.bind(1, Int64(bitPattern: id))
            return try statement.step()
        }
    }

    /// Every lease, by ascending ID, without keys.
    public func leases() throws -> [LeaseInfo] {
        try withStatement("SELECT id, ttl, remaining_ttl FROM lease ORDER BY id") { statement in
            var result: [LeaseInfo] = []
            while try statement.step() {
                result.append(LeaseInfo(id: statement.int64(0), grantedTTLSeconds: statement.int64(1),
                                        remainingTTLSeconds: statement.int64(2)))
            }
            return result
        }
    }

    func leaseExists(_ id: LeaseID) throws -> Bool {
        try withStatement("SELECT 1 FROM lease WHERE id = ?1") { statement in
            statement.bind(1, id)
            return try statement.step()
        }
    }

    func attachedKeys(_ id: LeaseID) throws -> [[UInt8]] {
        try withStatement("SELECT key FROM latest WHERE lease = ?1 AND lease != 0 ORDER BY key") { statement in
            statement.bind(1, id)
            var keys: [[UInt8]] = []
            while try statement.step() { keys.append(statement.bytes(0)) }
            return keys
        }
    }

    // MARK: Range machinery

    /// etcd's `applierV3backend.Range` over a view at `readRevision`.
    func range(_ request: RangeRequest, readRevision: Revision) throws -> RangeResponse {
        var revision = request.revision
        if revision > readRevision { throw KVError.futureRevision }
        if revision <= 0 { revision = readRevision }
        if revision < compactedRevision { throw KVError.compacted }

        let keyRange = request.keyRange
        if request.countOnly {
            return RangeResponse(revision: readRevision, count: Int64(try count(keyRange, at: revision, readRevision: readRevision)))
        }
        let filtered = request.minModRevision != 0 || request.maxModRevision != 0
            || request.minCreateRevision != 0 || request.maxCreateRevision != 0
        // Sorting and filtering need every key; otherwise one extra key tells whether there are more.
        var fetchLimit = (request.sortOrder != .none || filtered) ? 0 : Int(clamping: request.limit)
        // A limit no store can reach (clients send Int64.max) means no limit; one more would overflow.
        if fetchLimit == Int.max { fetchLimit = 0 }
        if fetchLimit > 0 { fetchLimit += 1 }
        var (kvs, total) = try fetch(keyRange, at: revision, readRevision: readRevision, limit: fetchLimit)

        if filtered {
            kvs.removeAll { kv in
                (request.maxModRevision != 0 && kv.modRevision > request.maxModRevision)
                    || (request.minModRevision != 0 && kv.modRevision < request.minModRevision)
                    || (request.maxCreateRevision != 0 && kv.createRevision > request.maxCreateRevision)
                    || (request.minCreateRevision != 0 && kv.createRevision < request.minCreateRevision)
            }
        }
        var order = request.sortOrder
        // Results come in key order already; etcd sorts ascending by default for any other target.
        if request.sortTarget != .key && order == .none { order = .ascend }
        if order != .none {
            Self.sort(&kvs, by: request.sortTarget, descending: order == .descend)
        }
        var more = false
        if request.limit > 0 && kvs.count > request.limit {
            kvs.removeLast(kvs.count - Int(request.limit))
            more = true
        }
        if request.keysOnly {
            for index in kvs.indices { kvs[index].value = [] }
        }
        return RangeResponse(revision: readRevision, kvs: kvs, more: more, count: Int64(total))
    }

    /// Sorts by `target`; ties (which etcd leaves in an unspecified order) are broken by ascending key so every
    /// member answers the same.
    static func sort(_ kvs: inout [KeyValue], by target: RangeRequest.SortTarget, descending: Bool) {
        func compare(_ a: KeyValue, _ b: KeyValue) -> Int {
            switch target {
            case .key: return 0
            case .version: return a.version < b.version ? -1 : (a.version > b.version ? 1 : 0)
            case .create: return a.createRevision < b.createRevision ? -1 : (a.createRevision > b.createRevision ? 1 : 0)
            case .mod: return a.modRevision < b.modRevision ? -1 : (a.modRevision > b.modRevision ? 1 : 0)
            case .value:
                if a.value == b.value { return 0 }
                return a.value.lexicographicallyPrecedes(b.value) ? -1 : 1
            }
        }
        kvs.sort { a, b in
            let order = compare(a, b)
            if order != 0 { return descending ? order > 0 : order < 0 }
            if target == .key {
                return descending ? b.key.lexicographicallyPrecedes(a.key) : a.key.lexicographicallyPrecedes(b.key)
            }
            return a.key.lexicographicallyPrecedes(b.key)
        }
    }

    /// Keys in `keyRange` at `revision` (key order, at most `limit` when > 0) and how many there are in all.
    func fetch(_ keyRange: KeyRange, at revision: Revision, readRevision: Revision, limit: Int) throws -> (kvs: [KeyValue], count: Int) {
        if Self.isEmpty(keyRange) { return ([], 0) }
        if revision == readRevision {
            let sql = """
                SELECT key, create_rev, mod_rev, version, value, lease FROM latest
                WHERE \(Self.keyPredicate(keyRange, first: 1)) ORDER BY key LIMIT ?3
                """
            let kvs = try withStatement(sql) { statement in
                Self.bind(keyRange, to: statement, first: 1)
                statement.bind(3, Int64(limit > 0 ? limit : -1))
                var kvs: [KeyValue] = []
                while try statement.step() {
                    kvs.append(KeyValue(key: statement.bytes(0), createRevision: statement.int64(1),
                                        modRevision: statement.int64(2), version: statement.int64(3),
                                        value: statement.bytes(4), lease: statement.int64(5)))
                }
                return kvs
            }
            if limit <= 0 || kvs.count < limit { return (kvs, kvs.count) }
            return (kvs, try count(keyRange, at: revision, readRevision: readRevision))
        }
        var kvs: [KeyValue] = []
        var total = 0
        try forEachKey(in: keyRange, at: revision) { kv in
            total += 1
            if limit <= 0 || kvs.count < limit { kvs.append(kv) }
            return true
        }
        return (kvs, total)
    }

    func count(_ keyRange: KeyRange, at revision: Revision, readRevision: Revision) throws -> Int {
        if Self.isEmpty(keyRange) { return 0 }
        if revision == readRevision {
            return try withStatement("SELECT COUNT(*) FROM latest WHERE \(Self.keyPredicate(keyRange, first: 1))") { statement in
                Self.bind(keyRange, to: statement, first: 1)
                _ = try statement.step()
                return Int(statement.int64(0))
            }
        }
        var total = 0
        try forEachKey(in: keyRange, at: revision) { _ in
            total += 1
            return true
        }
        return total
    }

    /// Visits, in key order, every key live at `revision` in history. Each distinct key costs two index lookups,
    /// however long its history. `body` returns false to stop.
    func forEachKey(in keyRange: KeyRange, at revision: Revision, _ body: (KeyValue) throws -> Bool) throws {
        if Self.isEmpty(keyRange) { return }
        if case .single(let key) = keyRange {
            if let kv = try valueAt(key, revision: revision) { _ = try body(kv) }
            return
        }
        let upper: [UInt8]?
        var cursor: [UInt8]
        switch keyRange {
        case .single: preconditionFailure("handled above")
        case .from(let start):
            cursor = start
            upper = nil
        case .interval(let start, let end):
            cursor = start
            upper = end
        }
        var inclusive = true
        while true {
            let comparison = inclusive ? ">=" : ">"
            let sql = upper == nil
                ? "SELECT key FROM kv WHERE key \(comparison) ?1 ORDER BY key LIMIT 1"
                : "SELECT key FROM kv WHERE key \(comparison) ?1 AND key < ?2 ORDER BY key LIMIT 1"
            let next: [UInt8]? = try withStatement(sql) { statement in
                statement.bind(1, cursor)
                if let upper { statement.bind(2, upper) }
                return try statement.step() ? statement.bytes(0) : nil
            }
            guard let key = next else { return }
            if let kv = try valueAt(key, revision: revision), try !body(kv) { return }
            cursor = key
            inclusive = false
        }
    }

    /// `key` as of `revision` from history, or nil when absent or deleted then.
    func valueAt(_ key: [UInt8], revision: Revision) throws -> KeyValue? {
        try withStatement(Self.valueAtSQL) { try Self.readValue($0, key: key, revision: revision) }
    }

    /// The live value of `key`, including writes of the request being applied.
    func latestValue(_ key: [UInt8]) throws -> KeyValue? {
        try withStatement("SELECT create_rev, mod_rev, version, value, lease FROM latest WHERE key = ?1") { statement in
            statement.bind(1, key)
            guard try statement.step() else { return nil }
            return KeyValue(key: key, createRevision: statement.int64(0), modRevision: statement.int64(1),
                            version: statement.int64(2), value: statement.bytes(3), lease: statement.int64(4))
        }
    }
}

/// CRC-32C (Castagnoli), the checksum etcd's hash uses.
struct CRC32C {
    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    private var state: UInt32 = 0xFFFF_FFFF

    mutating func update(_ bytes: [UInt8]) {
        let table = Self.table
        for byte in bytes {
            state = table[Int((state ^ UInt32(byte)) & 0xff)] ^ (state >> 8)
        }
    }

    mutating func update(int value: Int64) {
        var little = value.littleEndian
        withUnsafeBytes(of: &little) { raw in
            let table = Self.table
            for byte in raw { state = table[Int((state ^ UInt32(byte)) & 0xff)] ^ (state >> 8) }
        }
    }

    var value: UInt32 { state ^ 0xFFFF_FFFF }
}

// History rows, decoded the same way for the store's own reads and for the watch history's connection.
extension MVCCStore {
    static func eventsSQL(_ keyRange: KeyRange) -> String {
        """
        SELECT rev, sub, key, value, create_rev, version, lease, tombstone FROM kv
        WHERE rev >= ?1 AND \(keyPredicate(keyRange, first: 2)) ORDER BY rev, sub
        """
    }

    /// Appends the events of a prepared ``eventsSQL(_:)`` statement; once `limit` (> 0) events are read it stops at
    /// the next revision boundary, so a revision is never split. Returns whether it stopped early.
    static func readEvents(_ statement: SQLiteStatement, from startRevision: Revision, keyRange: KeyRange, limit: Int,
                           into events: inout [Event]) throws -> Bool {
        statement.bind(1, max(startRevision, 0))
        bind(keyRange, to: statement, first: 2)
        while try statement.step() {
            let revision = statement.int64(0)
            if limit > 0, events.count >= limit, let last = events.last, last.kv.modRevision != revision { return true }
            let key = statement.bytes(2)
            if statement.int64(7) != 0 {
                events.append(Event(kind: .delete, kv: KeyValue(key: key, modRevision: revision)))
            } else {
                events.append(Event(kind: .put, kv: KeyValue(
                    key: key, createRevision: statement.int64(4), modRevision: revision,
                    version: statement.int64(5), value: statement.bytes(3), lease: statement.int64(6))))
            }
        }
        return false
    }

    static let valueAtSQL = """
        SELECT rev, create_rev, version, value, lease, tombstone FROM kv
        WHERE key = ?1 AND rev <= ?2 ORDER BY rev DESC, sub DESC LIMIT 1
        """

    /// The value of `key` at `revision` from a prepared ``valueAtSQL`` statement; nil when absent or deleted.
    static func readValue(_ statement: SQLiteStatement, key: [UInt8], revision: Revision) throws -> KeyValue? {
        statement.bind(1, key).bind(2, revision)
        guard try statement.step(), statement.int64(5) == 0 else { return nil }
        return KeyValue(key: key, createRevision: statement.int64(1), modRevision: statement.int64(0),
                        version: statement.int64(2), value: statement.bytes(3), lease: statement.int64(4))
    }
}
