import Foundation

/// A persistence boundary where fault tests can make the store fail, as if the process died there.
public enum MVCCFailurePoint: Sendable, Hashable {
    /// Inside the apply transaction, after every entry of the batch was applied, before COMMIT.
    case beforeApplyCommit
    /// Right after the apply transaction committed.
    case afterApplyCommit
    /// Inside a physical compaction batch, before COMMIT.
    case beforeCompactionCommit
}

/// What applying one log entry produced.
public struct AppliedEntry: Sendable, Hashable {
    public var index: LogIndex
    /// The answer for the proposer: the response, or the etcd error it must see.
    public var result: Result<KVResponse, KVError>
    /// The changes the entry made, in (revision, sub-revision) order, for the watch hub. `prevKv` is always filled
    /// (the key's value at `modRevision - 1`); watchers that did not ask for it drop it. Only hand these out
    /// after `apply` returned: before that they are not durable.
    public var events: [Event]

    public init(index: LogIndex, result: Result<KVResponse, KVError>, events: [Event] = []) {
        self.index = index
        self.result = result
        self.events = events
    }
}

/// Why the store could not do what was asked, outside etcd's request errors.
public enum MVCCStoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The snapshot file was taken at a different index than the one Raft says it stands for.
    case snapshotIndexMismatch(expected: LogIndex, found: LogIndex)
    /// The database was written by an incompatible version of this store.
    case unsupportedFormat(Int64)
    /// A user or role record that does not decode: the database is damaged.
    case corruptAuthRecord(String)

    public var description: String {
        switch self {
        case .snapshotIndexMismatch(let expected, let found):
            return "snapshot holds applied index \(found), expected \(expected)"
        case .unsupportedFormat(let version): return "unsupported mvcc database format \(version)"
        case .corruptAuthRecord(let what): return "corrupt auth record: \(what)"
        }
    }
}

/// etcd's MVCC key-value state machine over its own SQLite file.
///
/// Every mutating request or transaction gets the next store revision (the empty store is at revision 1); the
/// writes of one revision get increasing sub-revisions. History is kept in the `kv` table until compacted; the
/// `latest` table holds the live value of each key so that reads of the current revision do not scan history.
/// Nothing proportional to the data lives in memory.
///
/// Applying is deterministic: the result depends only on the state and the command. A batch of entries is applied
/// in one SQLite transaction that also records the last applied Raft index, so a crash leaves either the whole
/// batch or none of it.
///
/// Not thread-safe: one owner (the node's apply loop) drives it.
public final class MVCCStore {
    /// Tunables. None of them changes what applying an entry does to the state, so members may differ.
    public struct Configuration: Sendable {
        /// Database size at which writes start failing with ``KVError/noSpace``; ≤ 0 disables the quota.
        public var quotaBackendBytes: Int64
        public init(quotaBackendBytes: Int64 = 2 * 1024 * 1024 * 1024) {
            self.quotaBackendBytes = quotaBackendBytes
        }
    }

    /// The format of the tables below; bump on incompatible change.
    static let schemaVersion: Int64 = 1
    /// etcd's per-put metadata estimate for the quota (`kvOverhead`).
    static let putOverheadBytes = 256
    /// etcd's per-lease estimate for the quota (`leaseOverhead`).
    static let leaseOverheadBytes = 64

    public let path: String
    public var configuration: Configuration
    /// Lets fault tests fail (throw) at a persistence boundary.
    public var failurePoint: ((MVCCFailurePoint) throws -> Void)?
    /// Told how long each apply transaction took to commit (etcd's backend commit duration).
    public var commitObserver: (@Sendable (Duration) -> Void)?

    var db: SQLiteDatabase!

    /// The index of the last applied log entry, as durable as the state it describes.
    public internal(set) var appliedIndex: LogIndex = 0
    /// The latest revision; 1 for an empty store.
    public internal(set) var currentRevision: Revision = 1
    /// Revisions below this one can no longer be read; -1 when never compacted (as etcd).
    public internal(set) var compactedRevision: Revision = -1
    /// True while the NOSPACE alarm is armed: puts, writing transactions and lease grants fail.
    public internal(set) var isNoSpaceAlarmArmed = false
    /// Users, roles and the auth switch, as applied (see MVCCStore+Auth).
    public internal(set) var authState = AuthState()

    // Write state of the request being applied (etcd's storeTxnWrite).
    var beginRevision: Revision = 0
    var changeCount: Int64 = 0
    var pendingEvents: [Event] = []
    /// The value each key touched by the current write had before it (at `beginRevision`).
    var valuesBeforeWrite: [[UInt8]: KeyValue?] = [:]

    /// Opens (creating when absent) the store at `path`.
    public init(path: String, configuration: Configuration = Configuration()) throws {
        self.path = path
        self.configuration = configuration
        try open()
    }

    private func open() throws {
        let database = try SQLiteDatabase(path: path)
        // The Raft log is the durable record; losing the last few commits on power loss only means re-applying.
        try database.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        try database.execute("""
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS kv (
                rev INTEGER NOT NULL, sub INTEGER NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
                create_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL,
                tombstone INTEGER NOT NULL, PRIMARY KEY (rev, sub)) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS kv_key_rev ON kv (key, rev, sub);
            CREATE TABLE IF NOT EXISTS latest (
                key BLOB PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL,
                version INTEGER NOT NULL, lease INTEGER NOT NULL) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS latest_lease ON latest (lease) WHERE lease != 0;
            CREATE TABLE IF NOT EXISTS lease (
                id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL, remaining_ttl INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS removed_member (id INTEGER PRIMARY KEY);
            CREATE TABLE IF NOT EXISTS member (
                id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '', peer_urls TEXT NOT NULL DEFAULT '',
                client_urls TEXT NOT NULL DEFAULT '');
            INSERT OR IGNORE INTO meta (name, value) VALUES
                ('schema_version', \(Self.schemaVersion)), ('applied_index', 0), ('current_rev', 1),
                ('compact_rev', -1), ('compact_target', -1), ('compact_done', -1),
                ('compact_cursor_rev', 0), ('compact_cursor_sub', -1), ('alarm_nospace', 0);
            """)
        try database.execute(Self.authSchema)
        db = database
        let schema = try meta("schema_version")
        guard schema == Self.schemaVersion else { throw MVCCStoreError.unsupportedFormat(schema) }
        try loadState()
    }

    /// Re-reads the in-memory copies of the persistent counters, after open or after a failed transaction.
    func loadState() throws {
        appliedIndex = LogIndex(try meta("applied_index"))
        currentRevision = try meta("current_rev")
        compactedRevision = try meta("compact_rev")
        isNoSpaceAlarmArmed = try meta("alarm_nospace") != 0
        authState = try loadAuthState()
    }

    // MARK: SQL helpers

    /// Runs `body` with a cached statement and resets it afterwards, so no statement stays active between calls
    /// (an active statement would block VACUUM and checkpoints).
    @inline(__always)
    func withStatement<T>(_ sql: String, _ body: (SQLiteStatement) throws -> T) throws -> T {
        let statement = try db.statement(sql)
        defer { statement.reset() }
        return try body(statement)
    }

    func meta(_ name: String) throws -> Int64 {
        try withStatement("SELECT value FROM meta WHERE name = ?1") { statement in
            statement.bind(1, name)
            guard try statement.step() else { preconditionFailure("meta row \(name) is created at open") }
            return statement.int64(0)
        }
    }

    func setMeta(_ name: String, _ value: Int64) throws {
        try withStatement("UPDATE meta SET value = ?2 WHERE name = ?1") { statement in
            try statement.bind(1, name).bind(2, value).run()
        }
    }

    /// SQL for `column` restricted to `range`, binding parameters `?first` and `?first+1`.
    static func keyPredicate(_ range: KeyRange, column: String = "key", first: Int) -> String {
        switch range {
        case .single: return "\(column) = ?\(first)"
        case .from: return "\(column) >= ?\(first)"
        case .interval: return "\(column) >= ?\(first) AND \(column) < ?\(first + 1)"
        }
    }

    static func bind(_ range: KeyRange, to statement: SQLiteStatement, first: Int32) {
        switch range {
        case .single(let key), .from(let key): statement.bind(first, key)
        case .interval(let start, let end):
            statement.bind(first, start)
            statement.bind(first + 1, end)
        }
    }

    static func isEmpty(_ range: KeyRange) -> Bool {
        if case .interval(let start, let end) = range { return !start.lexicographicallyPrecedes(end) }
        return false
    }

    // MARK: Size and quota

    /// Bytes the database occupies, free pages included (as etcd's backend size): only ``defragment()`` shrinks it.
    public func sizeBytes() throws -> Int64 {
        let pages = try withStatement("PRAGMA page_count") { statement in
            _ = try statement.step()
            return statement.int64(0)
        }
        let pageSize = try withStatement("PRAGMA page_size") { statement in
            _ = try statement.step()
            return statement.int64(0)
        }
        return pages * pageSize
    }

    /// Bytes the database holds in pages that are in use.
    public func sizeInUseBytes() throws -> Int64 {
        let free = try withStatement("PRAGMA freelist_count") { statement in
            _ = try statement.step()
            return statement.int64(0)
        }
        let pageSize = try withStatement("PRAGMA page_size") { statement in
            _ = try statement.step()
            return statement.int64(0)
        }
        return try sizeBytes() - free * pageSize
    }

    /// etcd's `backendQuota.Available`: whether a request costing `costBytes` still fits.
    func quotaAvailable(costBytes: Int) throws -> Bool {
        // A request that adds nothing always passes, as in etcd.
        guard configuration.quotaBackendBytes > 0, costBytes > 0 else { return true }
        return try sizeBytes() + Int64(costBytes) < configuration.quotaBackendBytes
    }

    /// Rebuilds the database file without free pages (etcd's defragment). Run after compaction to give space back.
    public func defragment() throws {
        try db.execute("VACUUM")
    }

    // MARK: Snapshots

    /// Writes a consistent copy of the whole state (at ``appliedIndex``) into `file`, which must not exist.
    public func writeSnapshot(to file: URL) throws {
        try withStatement("VACUUM INTO ?1") { statement in
            try statement.bind(1, file.path).run()
        }
    }

    /// Copies the database at `path` into `file` through a connection of its own, so that the store's connection
    /// goes on applying meanwhile (WAL: the copy reads one consistent state), and returns the applied index the copy
    /// holds.
    public static func writeSnapshot(ofDatabaseAt path: String, to file: URL) throws -> LogIndex {
        do {
            let source = try SQLiteDatabase(path: path, create: false)
            try source.execute("PRAGMA busy_timeout = 10000")
            try source.statement("VACUUM INTO ?1").bind(1, file.path).run()
        }
        let copy = try SQLiteDatabase(path: file.path, create: false, readOnly: true)
        let statement = try copy.statement("SELECT value FROM meta WHERE name = 'applied_index'")
        defer { statement.reset() }
        guard try statement.step() else { throw MVCCStoreError.snapshotIndexMismatch(expected: 0, found: 0) }
        return statement.uint64(0)
    }

    /// Replaces the whole state with the snapshot in `file`, which must have been taken at `index`.
    public func restore(from file: URL, index: LogIndex) throws {
        // Check the snapshot before destroying anything.
        let snapshotIndex: LogIndex
        do {
            let snapshot = try SQLiteDatabase(path: file.path, create: false, readOnly: true)
            let statement = try snapshot.statement("SELECT value FROM meta WHERE name = 'applied_index'")
            guard try statement.step() else { throw MVCCStoreError.snapshotIndexMismatch(expected: index, found: 0) }
            snapshotIndex = statement.uint64(0)
            statement.reset()
        }
        guard snapshotIndex == index else {
            throw MVCCStoreError.snapshotIndexMismatch(expected: index, found: snapshotIndex)
        }
        db = nil
        let manager = FileManager.default
        for suffix in ["", "-wal", "-shm"] where manager.fileExists(atPath: path + suffix) {
            try manager.removeItem(atPath: path + suffix)
        }
        try manager.copyItem(atPath: file.path, toPath: path)
        try open()
    }
}
