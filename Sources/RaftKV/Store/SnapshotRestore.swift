import Foundation

/// What etcdctl's `snapshot status` and `snapshot restore` need to know of a state snapshot (the file
/// Maintenance/Snapshot streams: a copy of the state database, ``MVCCStore/writeSnapshot(to:)``), kept here so that
/// the store stays the one owner of its format.
public enum StateSnapshot {
    /// etcd's snapshot.Status, computed over our format: `hash` is the CRC-32C of every table's name and rows (as
    /// etcd's hashes every bucket's name, keys and values), `totalKeys` the rows of every table (as etcd counts the
    /// entries of every bucket: every revision of every key, and the store's own records), `totalSize` the
    /// database's size in bytes, `revision` the store's current revision.
    public struct Status: Sendable, Equatable {
        public var hash: UInt32
        public var revision: Int64
        public var totalKeys: Int
        public var totalSize: Int64
    }

    /// Where a member keeps its state database in its data directory (``KVStore`` opens it there).
    public static func stateDatabase(inDataDirectory directory: URL) -> URL {
        directory.appendingPathComponent("member").appendingPathComponent("kv.db")
    }

    public enum Failure: Error, CustomStringConvertible {
        case notAState(String)

        public var description: String {
            switch self {
            case .notAState(let reason): reason
            }
        }
    }

    /// The status of the state database at `path` (without the stream's trailing SHA-256).
    public static func status(ofDatabaseAt path: String) throws -> Status {
        let database = try open(path, readOnly: true)
        guard let revision = try database.scalarInt64("SELECT value FROM meta WHERE name = 'current_rev'") else {
            throw Failure.notAState("no current revision in the snapshot")
        }
        let pageCount = try database.scalarInt64("PRAGMA page_count") ?? 0
        let pageSize = try database.scalarInt64("PRAGMA page_size") ?? 0
        var tables: [String] = []
        let list = try database.statement("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        while try list.step() { tables.append(list.string(0)) }
        list.reset()
        var crc = CRC32C()
        var rows = 0
        for table in tables {
            crc.update(Array(table.utf8))
            var columns: [String] = []
            let info = try database.statement("SELECT name FROM pragma_table_info(?1)").bind(1, table)
            while try info.step() { columns.append(info.string(0)) }
            info.reset()
            // Every column as bytes (integers as their decimal text), in the table's own order.
            let selected = columns.map { "CAST(\(quoted($0)) AS BLOB)" }.joined(separator: ", ")
            let scan = try database.statement("SELECT \(selected) FROM \(quoted(table))")
            while try scan.step() {
                rows += 1
                for column in columns.indices { crc.update(scan.bytes(Int32(column))) }
            }
            scan.reset()
        }
        return Status(hash: crc.value, revision: revision, totalKeys: rows, totalSize: pageCount * pageSize)
    }

    /// Makes the snapshot database at `path` the state of a member of a new cluster, as etcd's restore does to its
    /// copy of the backend: the old cluster's member records go (the new cluster's members publish themselves),
    /// and the applied index goes back to 0 so that the new log's first entries (the initial membership) apply.
    /// Keys, their history and revision, leases, users and roles stay.
    public static func prepareForNewCluster(databaseAt path: String) throws {
        let database = try open(path, readOnly: false)
        guard try database.scalarInt64("SELECT value FROM meta WHERE name = 'current_rev'") != nil else {
            throw Failure.notAState("no current revision in the snapshot")
        }
        try database.transaction {
            try database.execute("""
                DELETE FROM member; DELETE FROM removed_member;
                UPDATE meta SET value = 0 WHERE name = 'applied_index';
                """)
        }
    }

    private static func open(_ path: String, readOnly: Bool) throws -> SQLiteDatabase {
        let database: SQLiteDatabase
        do {
            database = try SQLiteDatabase(path: path, create: false, readOnly: readOnly)
            _ = try database.scalarInt64("SELECT count(*) FROM sqlite_master")
        } catch let error as SQLiteError {
            throw Failure.notAState(error.message)
        }
        guard try database.scalarInt64("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('meta', 'kv', 'latest')") == 3 else {
            throw Failure.notAState("not a kvserver state snapshot")
        }
        return database
    }
}

private func quoted(_ name: String) -> String {
    "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}
