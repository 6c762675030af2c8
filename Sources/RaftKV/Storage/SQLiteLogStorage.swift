import CSQLite
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why the log storage refused to open or to do what was asked. Every description names the file at fault.
public struct LogStorageError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The file is not an SQLite database, or one that belongs to another program.
        case notRaftLog
        /// The file was written by a version of this storage with another schema.
        case unsupportedSchemaVersion
        /// The stored data breaks an invariant of the log; starting from it could break consensus.
        case corrupt
        /// A snapshot chunk did not continue the staged data exactly.
        case snapshotChunkOutOfOrder
        /// No completely staged snapshot matches the one to install.
        case snapshotNotStaged
        /// A file operation failed.
        case fileSystem
    }

    public var kind: Kind
    public var path: String
    public var detail: String

    public init(_ kind: Kind, path: String, _ detail: String) {
        self.kind = kind
        self.path = path
        self.detail = detail
    }

    public var description: String { "raft log storage \(path): \(detail)" }
}

/// The durable Raft log in one SQLite database, `<directory>/raft.db`, with snapshot files in `<directory>/snap/`.
///
/// The database runs in WAL mode with `synchronous=FULL`, so each write transaction costs one fsync of the WAL.
/// The values the Raft core reads most (hard state, log bounds, the terms at both ends, snapshot metadata) live
/// in memory and change only after the transaction that wrote them has committed.
///
/// Opening validates the stored log and throws ``LogStorageError`` rather than starting over existing data.
/// Not thread-safe: one owner at a time, like ``SQLiteDatabase``.
public final class SQLiteLogStorage: DurableLogStorage, @unchecked Sendable {
    /// "RFLG": marks the database as a Raft log so that a foreign SQLite file is recognised.
    static let applicationID: Int64 = 0x5246_4C47
    static let schemaVersion: Int64 = 1
    /// Entries deleted per transaction when compacting, so that one compaction does not hold a huge transaction.
    static let compactionBatchEntries: UInt64 = 10_000
    static let stagedSnapshotName = "incoming.partial"
    static let temporarySnapshotPrefix = "tmp-"
    static let snapshotSuffix = ".snap"

    public let directory: URL
    public let databaseFile: URL
    public let snapshotDirectory: URL
    private let database: SQLiteDatabase

    public private(set) var hardState: HardState
    public private(set) var snapshotMetadata: SnapshotMetadata
    public var firstIndex: LogIndex { boundaryIndex + 1 }
    public private(set) var lastIndex: LogIndex
    /// The compacted prefix ends here: `firstIndex - 1` and its term.
    private var boundaryIndex: LogIndex
    private var boundaryTerm: Term
    /// The term at `lastIndex`, which the core asks for on every election and append.
    private var lastTerm: Term
    private var snapshotFileName: String?
    /// What ``stageSnapshotChunk(_:)`` has written so far; nil when nothing is staged.
    private var staged: (metadata: SnapshotMetadata, sizeBytes: UInt64, isComplete: Bool)?
    /// Whether commits currently fsync; `save(sync: false)` lowers it until the next write that must sync.
    private var synchronousIsFull = true

    private var stagedSnapshotFile: URL { snapshotDirectory.appendingPathComponent(Self.stagedSnapshotName) }

    public var snapshotFile: URL? { snapshotFileName.map { snapshotDirectory.appendingPathComponent($0) } }

    /// Opens the log in `directory`, creating an empty one when the directory holds none.
    /// Told how long each synced (fsynced) save took: etcd's WAL fsync duration. Set before the node runs.
    public var syncObserver: (@Sendable (Duration) -> Void)?

    public init(directory: URL) throws {
        self.directory = directory
        let databaseFile = directory.appendingPathComponent("raft.db")
        let snapshotDirectory = directory.appendingPathComponent("snap", isDirectory: true)
        self.databaseFile = databaseFile
        self.snapshotDirectory = snapshotDirectory
        let path = databaseFile.path
        do {
            try FileManager.default.createDirectory(at: snapshotDirectory, withIntermediateDirectories: true)
        } catch {
            throw LogStorageError(.fileSystem, path: snapshotDirectory.path, "cannot create directory: \(error)")
        }
        try Self.refuseMissingDatabase(databaseFile: databaseFile, snapshotDirectory: snapshotDirectory)

        let database = try Self.openingErrorsClassified(path: path) { try SQLiteDatabase(path: path) }
        self.database = database
        let stored = try Self.openingErrorsClassified(path: path) { () throws -> StoredState in
            try Self.prepareSchema(database)
            return try Self.loadAndValidate(database, snapshotDirectory: snapshotDirectory)
        }
        hardState = stored.hardState
        snapshotMetadata = stored.snapshotMetadata
        snapshotFileName = stored.snapshotFileName
        boundaryIndex = stored.boundaryIndex
        boundaryTerm = stored.boundaryTerm
        lastIndex = stored.lastIndex
        lastTerm = stored.lastTerm
        // Only once the stored state is known good may leftovers of interrupted operations go.
        removeSnapshotFiles(keeping: snapshotFileName, includingTemporary: true)
    }

    // MARK: Opening

    /// Refuses to create an empty log next to the remains of a previous one, which would silently forget
    /// everything this node promised.
    private static func refuseMissingDatabase(databaseFile: URL, snapshotDirectory: URL) throws {
        let files = FileManager.default
        guard !files.fileExists(atPath: databaseFile.path) else { return }
        if files.fileExists(atPath: databaseFile.path + "-wal") {
            throw LogStorageError(.corrupt, path: databaseFile.path, "database file is missing but its write-ahead log exists")
        }
        let snapshots = (try? files.contentsOfDirectory(atPath: snapshotDirectory.path)) ?? []
        if let snapshot = snapshots.first(where: { $0.hasSuffix(snapshotSuffix) && !$0.hasPrefix(temporarySnapshotPrefix) }) {
            throw LogStorageError(.corrupt, path: databaseFile.path, "database file is missing but snapshot \(snapshot) exists")
        }
    }

    /// Turns the SQLite errors that mean "this is not a usable log file" into ``LogStorageError``; others
    /// (I/O, locking) stay ``SQLiteError``, which also names the file.
    private static func openingErrorsClassified<T>(path: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as SQLiteError {
            switch error.code & 0xff {
            case SQLITE_NOTADB: throw LogStorageError(.notRaftLog, path: path, "not an SQLite database: \(error.message)")
            case SQLITE_CORRUPT, SQLITE_ERROR: throw LogStorageError(.corrupt, path: path, error.message)
            default: throw error
            }
        }
    }

    private static func prepareSchema(_ database: SQLiteDatabase) throws {
        let path = database.path
        // Reading the header first makes a foreign file fail before anything is written to it.
        let applicationID = try database.scalarInt64("PRAGMA application_id") ?? 0
        let version = try database.scalarInt64("PRAGMA user_version") ?? 0
        let tableCount = try database.scalarInt64("SELECT count(*) FROM sqlite_schema") ?? 0
        let isNew = applicationID == 0 && version == 0 && tableCount == 0
        if !isNew {
            guard applicationID == Self.applicationID else {
                throw LogStorageError(.notRaftLog, path: path,
                                      "SQLite database of another program (application id \(applicationID), \(tableCount) schema objects)")
            }
            guard version == Self.schemaVersion else {
                throw LogStorageError(.unsupportedSchemaVersion, path: path,
                                      "schema version \(version), this program reads version \(Self.schemaVersion)")
            }
        }

        let journalMode = try database.statement("PRAGMA journal_mode = WAL")
        guard try journalMode.step(), journalMode.string(0).lowercased() == "wal" else {
            throw LogStorageError(.fileSystem, path: path, "cannot switch to WAL journal mode")
        }
        journalMode.reset()
        try database.execute("PRAGMA synchronous = FULL")
        guard isNew else { return }
        try database.transaction {
            try database.execute("""
                PRAGMA application_id = \(Self.applicationID);
                PRAGMA user_version = \(Self.schemaVersion);
                CREATE TABLE entries (
                    idx INTEGER PRIMARY KEY,
                    term INTEGER NOT NULL,
                    kind INTEGER NOT NULL,
                    data BLOB NOT NULL
                );
                CREATE TABLE hard_state (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    term INTEGER NOT NULL,
                    vote INTEGER NOT NULL,
                    commit_index INTEGER NOT NULL
                );
                CREATE TABLE log_boundary (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    compacted_index INTEGER NOT NULL,
                    compacted_term INTEGER NOT NULL
                );
                CREATE TABLE snapshot (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    idx INTEGER NOT NULL,
                    term INTEGER NOT NULL,
                    voters TEXT NOT NULL,
                    learners TEXT NOT NULL,
                    file_name TEXT
                );
                INSERT INTO hard_state (id, term, vote, commit_index) VALUES (1, 0, 0, 0);
                INSERT INTO log_boundary (id, compacted_index, compacted_term) VALUES (1, 0, 0);
                INSERT INTO snapshot (id, idx, term, voters, learners, file_name) VALUES (1, 0, 0, '', '', NULL);
                """)
        }
    }

    private struct StoredState {
        var hardState: HardState
        var snapshotMetadata: SnapshotMetadata
        var snapshotFileName: String?
        var boundaryIndex: LogIndex
        var boundaryTerm: Term
        var lastIndex: LogIndex
        var lastTerm: Term
    }

    /// Reads the stored state and checks every invariant the Raft core relies on.
    private static func loadAndValidate(_ database: SQLiteDatabase, snapshotDirectory: URL) throws -> StoredState {
        let path = database.path
        func corrupt(_ detail: String) -> LogStorageError { LogStorageError(.corrupt, path: path, detail) }
        func unsigned(_ value: Int64, _ what: String) throws -> UInt64 {
            guard value >= 0 else { throw corrupt("negative \(what) \(value)") }
            return UInt64(value)
        }
        func singleRow(_ table: String) throws {
            let count = try database.scalarInt64("SELECT count(*) FROM \(table)") ?? 0
            guard count == 1 else { throw corrupt("table \(table) has \(count) rows instead of 1") }
        }

        return try database.transaction(immediate: false) {
            try singleRow("hard_state")
            try singleRow("log_boundary")
            try singleRow("snapshot")

            let hardStateRow = try database.statement("SELECT term, vote, commit_index FROM hard_state")
            defer { hardStateRow.reset() }
            _ = try hardStateRow.step()
            let hardState = HardState(term: try unsigned(hardStateRow.int64(0), "hard state term"),
                                      // Member IDs use all 64 bits (etcd's are SHA-1 based): stored as their bit pattern.
                                      vote: NodeID(bitPattern: hardStateRow.int64(1)),
                                      commit: try unsigned(hardStateRow.int64(2), "commit index"))

            let boundaryRow = try database.statement("SELECT compacted_index, compacted_term FROM log_boundary")
            defer { boundaryRow.reset() }
            _ = try boundaryRow.step()
            let boundaryIndex = try unsigned(boundaryRow.int64(0), "compacted index")
            let boundaryTerm = try unsigned(boundaryRow.int64(1), "compacted term")

            let bounds = try database.statement("SELECT count(*), min(idx), max(idx) FROM entries")
            defer { bounds.reset() }
            _ = try bounds.step()
            let entryCount = bounds.int64(0)
            var lastIndex = boundaryIndex
            var lastTerm = boundaryTerm
            if entryCount > 0 {
                let first = bounds.int64(1)
                let last = bounds.int64(2)
                guard first >= 1, UInt64(first) == boundaryIndex + 1 else {
                    throw corrupt("first entry index \(first) does not follow the compacted index \(boundaryIndex)")
                }
                guard last - first + 1 == entryCount else {
                    throw corrupt("entry indexes \(first)...\(last) have gaps (\(entryCount) entries)")
                }
                lastIndex = UInt64(last)

                let malformed = try database.statement("""
                    SELECT idx, term, kind, typeof(data) FROM entries
                    WHERE typeof(term) <> 'integer' OR term < ? OR kind NOT IN (0, 1) OR typeof(data) <> 'blob'
                    LIMIT 1
                    """)
                defer { malformed.reset() }
                malformed.bind(1, Int64(bitPattern: boundaryTerm))
                if try malformed.step() {
                    throw corrupt("entry \(malformed.int64(0)) is malformed (term \(malformed.string(1)), kind \(malformed.string(2)), data \(malformed.string(3)); compacted term \(boundaryTerm))")
                }

                let termDecrease = try database.statement("""
                    SELECT idx, term, previous_term FROM (
                        SELECT idx, term, lag(term) OVER (ORDER BY idx) AS previous_term FROM entries
                    ) WHERE term < previous_term LIMIT 1
                    """)
                defer { termDecrease.reset() }
                if try termDecrease.step() {
                    throw corrupt("term decreases at entry \(termDecrease.int64(0)): \(termDecrease.int64(2)) then \(termDecrease.int64(1))")
                }

                lastTerm = UInt64(try termOfStoredEntry(database, index: lastIndex) ?? 0)
            }

            guard hardState.commit <= lastIndex else {
                throw corrupt("commit index \(hardState.commit) is beyond the last entry \(lastIndex)")
            }

            let snapshotRow = try database.statement("SELECT idx, term, voters, learners, file_name FROM snapshot")
            defer { snapshotRow.reset() }
            _ = try snapshotRow.step()
            let snapshotIndex = try unsigned(snapshotRow.int64(0), "snapshot index")
            let snapshotTerm = try unsigned(snapshotRow.int64(1), "snapshot term")
            guard let voters = decodeMembers(snapshotRow.string(2)), let learners = decodeMembers(snapshotRow.string(3)) else {
                throw corrupt("snapshot membership is not a list of hexadecimal member ids: '\(snapshotRow.string(2))' / '\(snapshotRow.string(3))'")
            }
            guard voters.isDisjoint(with: learners) else {
                throw corrupt("snapshot membership lists a member as both voter and learner")
            }
            let snapshotMetadata = SnapshotMetadata(index: snapshotIndex, term: snapshotTerm,
                                                    membership: Membership(voters: voters, learners: learners))
            var snapshotFileName: String?
            if snapshotIndex == 0 {
                guard boundaryIndex == 0 else {
                    throw corrupt("the log is compacted up to \(boundaryIndex) without a snapshot")
                }
            } else {
                guard boundaryIndex <= snapshotIndex, snapshotIndex <= lastIndex else {
                    throw corrupt("snapshot index \(snapshotIndex) is outside the log \(boundaryIndex)...\(lastIndex)")
                }
                let termAtSnapshot = snapshotIndex == boundaryIndex
                    ? boundaryTerm : UInt64(try termOfStoredEntry(database, index: snapshotIndex) ?? 0)
                guard termAtSnapshot == snapshotTerm else {
                    throw corrupt("snapshot term \(snapshotTerm) differs from the log's term \(termAtSnapshot) at index \(snapshotIndex)")
                }
                let name = snapshotRow.isNull(4) ? "" : snapshotRow.string(4)
                guard !name.isEmpty, !name.contains("/"), name != Self.stagedSnapshotName else {
                    throw corrupt("snapshot file name '\(name)' is invalid")
                }
                let file = snapshotDirectory.appendingPathComponent(name).path
                guard FileManager.default.fileExists(atPath: file) else {
                    throw corrupt("snapshot file \(file) is missing")
                }
                snapshotFileName = name
            }

            return StoredState(hardState: hardState, snapshotMetadata: snapshotMetadata, snapshotFileName: snapshotFileName,
                               boundaryIndex: boundaryIndex, boundaryTerm: boundaryTerm,
                               lastIndex: lastIndex, lastTerm: lastTerm)
        }
    }

    private static func termOfStoredEntry(_ database: SQLiteDatabase, index: LogIndex) throws -> Int64? {
        let statement = try database.statement("SELECT term FROM entries WHERE idx = ?")
        defer { statement.reset() }
        statement.bind(1, index)
        return try statement.step() ? statement.int64(0) : nil
    }

    // MARK: Reading

    /// Runs a read the core was promised will succeed; a node that cannot read its own log must stop.
    private func mustRead<T>(_ what: String, _ body: () throws -> T) -> T {
        do {
            return try body()
        } catch {
            fatalError("cannot read \(what) from raft log \(databaseFile.path): \(error)")
        }
    }

    public func term(at index: LogIndex) -> Term? {
        guard index >= boundaryIndex, index <= lastIndex else { return nil }
        if index == boundaryIndex { return boundaryTerm }
        if index == lastIndex { return lastTerm }
        let term = mustRead("the term of entry \(index)") { try Self.termOfStoredEntry(database, index: index) }
        guard let term, term >= 0 else {
            fatalError("raft log \(databaseFile.path) lacks entry \(index) within \(firstIndex)...\(lastIndex)")
        }
        return UInt64(term)
    }

    /// SQLite answers `length()` of a blob from the record header, without reading the data.
    public func entryBytes(in range: Range<LogIndex>) -> Int64 {
        guard !range.isEmpty else { return 0 }
        return mustRead("entry bytes \(range)") {
            let select = try database.statement("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM entries WHERE idx >= ? AND idx < ?")
            defer { select.reset() }
            select.bind(1, range.lowerBound).bind(2, range.upperBound)
            guard try select.step() else { return 0 }
            return select.int64(0)
        }
    }

    public func entries(in range: Range<LogIndex>, maxBytes: Int) -> [Entry] {
        precondition(range.lowerBound >= firstIndex && range.upperBound <= lastIndex + 1,
                     "entries \(range) requested outside the log \(firstIndex)...\(lastIndex)")
        guard !range.isEmpty else { return [] }
        return mustRead("entries \(range)") {
            let select = try database.statement("SELECT idx, term, kind, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx")
            // An unfinished statement would keep a read transaction open and stop WAL checkpoints.
            defer { select.reset() }
            select.bind(1, range.lowerBound).bind(2, range.upperBound)
            var entries: [Entry] = []
            var totalBytes = 0
            while try select.step() {
                let index = range.lowerBound + UInt64(entries.count)
                guard select.int64(0) == Int64(index), let kind = EntryKind(rawValue: UInt8(truncatingIfNeeded: select.int64(2))) else {
                    fatalError("raft log \(databaseFile.path) has a missing or malformed entry at \(index)")
                }
                let entry = Entry(term: select.uint64(1), index: index, kind: kind, data: select.bytes(3))
                if !entries.isEmpty && totalBytes + entry.sizeBytes > maxBytes { break }
                totalBytes += entry.sizeBytes
                entries.append(entry)
            }
            if entries.isEmpty {
                fatalError("raft log \(databaseFile.path) lacks entry \(range.lowerBound) within \(firstIndex)...\(lastIndex)")
            }
            return entries
        }
    }

    public func snapshotData(offset: UInt64, maxBytes: Int) -> (data: [UInt8], isLast: Bool) {
        guard let file = snapshotFile else { return ([], true) }
        return mustRead("snapshot \(file.path)") {
            let handle = try FileHandle(forReadingFrom: file)
            defer { try? handle.close() }
            let sizeBytes = try handle.seekToEnd()
            guard offset < sizeBytes else { return ([], true) }
            try handle.seek(toOffset: offset)
            let data = [UInt8](try handle.read(upToCount: max(maxBytes, 0)) ?? Data())
            return (data, offset + UInt64(data.count) >= sizeBytes)
        }
    }

    public func temporarySnapshotFile() -> URL {
        snapshotDirectory.appendingPathComponent("\(Self.temporarySnapshotPrefix)\(UUID().uuidString)\(Self.snapshotSuffix)")
    }

    // MARK: Writing

    /// With `sync` false the transaction commits with `synchronous=NORMAL`: in WAL mode it survives a crash of
    /// the process but not of the machine, until the next synced commit or checkpoint makes it durable.
    public func save(hardState newHardState: HardState?, entries newEntries: [Entry], sync: Bool) throws {
        var nextLastIndex = lastIndex
        var nextLastTerm = lastTerm
        if let first = newEntries.first, let last = newEntries.last {
            precondition(first.index >= firstIndex && first.index <= lastIndex + 1,
                         "entries from \(first.index) do not attach to the log \(firstIndex)...\(lastIndex)")
            var previousTerm = term(at: first.index - 1)!
            for (offset, entry) in newEntries.enumerated() {
                precondition(entry.index == first.index + UInt64(offset), "entries are not contiguous at \(entry.index)")
                precondition(entry.term >= previousTerm, "term decreases at entry \(entry.index)")
                previousTerm = entry.term
            }
            if first.index <= snapshotMetadata.index {
                // Entries the snapshot covers are committed; replacing them may not change the snapshot's term.
                precondition(last.index >= snapshotMetadata.index
                                && newEntries[Int(snapshotMetadata.index - first.index)].term == snapshotMetadata.term,
                             "entries from \(first.index) would overwrite snapshot \(snapshotMetadata.index)")
            }
            nextLastIndex = last.index
            nextLastTerm = last.term
        }
        let nextHardState = newHardState ?? hardState
        precondition(nextHardState.commit <= nextLastIndex,
                     "commit index \(nextHardState.commit) beyond the last entry \(nextLastIndex)")
        guard newHardState != nil || !newEntries.isEmpty else { return }

        try setSynchronous(full: sync)
        let started = ContinuousClock.now
        defer { if sync { syncObserver?(ContinuousClock.now - started) } }
        if sync { try FailPoints.hit(.logBeforeFsync) }
        try database.transaction {
            if let first = newEntries.first {
                try database.statement("DELETE FROM entries WHERE idx >= ?").bind(1, first.index).run()
                for entry in newEntries {
                    try database.statement("INSERT INTO entries (idx, term, kind, data) VALUES (?, ?, ?, ?)")
                        .bind(1, entry.index).bind(2, entry.term).bind(3, Int64(entry.kind.rawValue)).bind(4, entry.data)
                        .run()
                }
            }
            if let newHardState { try writeHardState(newHardState) }
        }
        hardState = nextHardState
        lastIndex = nextLastIndex
        lastTerm = nextLastTerm
        assert(memoryMatchesDatabase())
        if sync { try FailPoints.hit(.logAfterFsync) }
    }

    public func stageSnapshotChunk(_ chunk: SnapshotChunk) throws {
        let path = stagedSnapshotFile.path
        if chunk.offset != 0 {
            guard let staged, !staged.isComplete, staged.metadata == chunk.metadata, staged.sizeBytes == chunk.offset else {
                let expectation = staged.map {
                    $0.isComplete ? "the staged snapshot is already complete"
                        : "expected offset \($0.sizeBytes) of snapshot \($0.metadata.term)-\($0.metadata.index)"
                } ?? "nothing is staged"
                throw LogStorageError(.snapshotChunkOutOfOrder, path: path,
                                      "chunk at offset \(chunk.offset) of snapshot \(chunk.metadata.term)-\(chunk.metadata.index): \(expectation)")
            }
        }
        staged = nil
        let descriptor = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (chunk.offset == 0 ? O_TRUNC : 0), 0o644)
        guard descriptor >= 0 else { throw fileSystemError(path, "cannot open") }
        defer { close(descriptor) }
        let sizeBytes = lseek(descriptor, 0, SEEK_END)
        guard sizeBytes >= 0 else { throw fileSystemError(path, "cannot seek") }
        guard UInt64(sizeBytes) == chunk.offset else {
            throw LogStorageError(.snapshotChunkOutOfOrder, path: path,
                                  "chunk at offset \(chunk.offset) but the staged file holds \(sizeBytes) bytes")
        }
        try writeAll(chunk.data, to: descriptor, path: path)
        if chunk.isLast, fsync(descriptor) != 0 { throw fileSystemError(path, "cannot fsync") }
        staged = (chunk.metadata, chunk.offset + UInt64(chunk.data.count), chunk.isLast)
    }

    public func installStagedSnapshot(_ metadata: SnapshotMetadata) throws {
        guard let staged, staged.isComplete, staged.metadata == metadata else {
            throw LogStorageError(.snapshotNotStaged, path: stagedSnapshotFile.path,
                                  "snapshot \(metadata.term)-\(metadata.index) is not completely staged")
        }
        precondition(metadata.index > 0, "a snapshot covers at least one entry")
        precondition(metadata.index >= snapshotMetadata.index,
                     "snapshot \(metadata.index) is older than the current one at \(snapshotMetadata.index)")
        let keepsSuffix = term(at: metadata.index) == metadata.term
        precondition(keepsSuffix || metadata.index >= hardState.commit,
                     "snapshot \(metadata.index) would drop committed entries up to \(hardState.commit)")

        let name = Self.snapshotFileName(metadata)
        try moveIntoSnapshotDirectory(stagedSnapshotFile, name: name)
        try FailPoints.hit(.snapshotInstallBeforeRecord)
        self.staged = nil
        var nextHardState = hardState
        nextHardState.commit = max(hardState.commit, metadata.index)
        try setSynchronous(full: true)
        try database.transaction {
            if keepsSuffix {
                try database.statement("DELETE FROM entries WHERE idx <= ?").bind(1, metadata.index).run()
            } else {
                try database.statement("DELETE FROM entries").run()
            }
            try writeBoundary(index: metadata.index, term: metadata.term)
            try writeSnapshotRecord(metadata, fileName: name)
            try writeHardState(nextHardState)
        }
        boundaryIndex = metadata.index
        boundaryTerm = metadata.term
        if !keepsSuffix {
            lastIndex = metadata.index
            lastTerm = metadata.term
        }
        snapshotMetadata = metadata
        snapshotFileName = name
        hardState = nextHardState
        assert(memoryMatchesDatabase())
        removeSnapshotFiles(keeping: name, includingTemporary: false)
    }

    /// `file` must be on the same file system as the storage directory, as ``temporarySnapshotFile()`` is.
    public func adoptLocalSnapshot(_ metadata: SnapshotMetadata, file: URL, retainEntries: UInt64) throws {
        precondition(metadata.index > 0, "a snapshot covers at least one entry")
        precondition(metadata.index <= lastIndex && term(at: metadata.index) == metadata.term,
                     "snapshot \(metadata.term)-\(metadata.index) does not match the log \(firstIndex)...\(lastIndex)")
        precondition(metadata.index >= snapshotMetadata.index,
                     "snapshot \(metadata.index) is older than the current one at \(snapshotMetadata.index)")

        let name = Self.snapshotFileName(metadata)
        try syncFile(file)
        try moveIntoSnapshotDirectory(file, name: name)
        try setSynchronous(full: true)
        try database.transaction { try writeSnapshotRecord(metadata, fileName: name) }
        snapshotMetadata = metadata
        snapshotFileName = name
        assert(memoryMatchesDatabase())
        removeSnapshotFiles(keeping: name, includingTemporary: false)

        let compactedIndex = metadata.index > retainEntries ? metadata.index - retainEntries : 0
        while boundaryIndex < compactedIndex {
            let batchEnd = min(compactedIndex, boundaryIndex + Self.compactionBatchEntries)
            let batchEndTerm = term(at: batchEnd)!
            try database.transaction {
                try database.statement("DELETE FROM entries WHERE idx <= ?").bind(1, batchEnd).run()
                try writeBoundary(index: batchEnd, term: batchEndTerm)
            }
            boundaryIndex = batchEnd
            boundaryTerm = batchEndTerm
            assert(memoryMatchesDatabase())
        }
    }

    // MARK: Helpers

    private static func snapshotFileName(_ metadata: SnapshotMetadata) -> String {
        "\(metadata.term)-\(metadata.index)\(snapshotSuffix)"
    }

    private func setSynchronous(full: Bool) throws {
        guard full != synchronousIsFull else { return }
        try database.run(full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL")
        synchronousIsFull = full
    }

    private func writeHardState(_ state: HardState) throws {
        try database.statement("UPDATE hard_state SET term = ?, vote = ?, commit_index = ? WHERE id = 1")
            .bind(1, state.term).bind(2, Int64(bitPattern: state.vote)).bind(3, state.commit).run()
        guard database.changes == 1 else { throw LogStorageError(.corrupt, path: database.path, "hard state row is missing") }
    }

    private func writeBoundary(index: LogIndex, term: Term) throws {
        try database.statement("UPDATE log_boundary SET compacted_index = ?, compacted_term = ? WHERE id = 1")
            .bind(1, index).bind(2, term).run()
        guard database.changes == 1 else { throw LogStorageError(.corrupt, path: database.path, "log boundary row is missing") }
    }

    private func writeSnapshotRecord(_ metadata: SnapshotMetadata, fileName: String) throws {
        try database.statement("UPDATE snapshot SET idx = ?, term = ?, voters = ?, learners = ?, file_name = ? WHERE id = 1")
            .bind(1, metadata.index).bind(2, metadata.term)
            .bind(3, Self.encodeMembers(metadata.membership.voters))
            .bind(4, Self.encodeMembers(metadata.membership.learners))
            .bind(5, fileName)
            .run()
        guard database.changes == 1 else { throw LogStorageError(.corrupt, path: database.path, "snapshot row is missing") }
    }

    static func encodeMembers(_ members: Set<NodeID>) -> String {
        members.sorted().map { String($0, radix: 16) }.joined(separator: ",")
    }

    static func decodeMembers(_ text: String) -> Set<NodeID>? {
        guard !text.isEmpty else { return [] }
        var members: Set<NodeID> = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard let id = NodeID(part, radix: 16), id != 0 else { return nil }
            members.insert(id)
        }
        return members
    }

    /// Renames `file` to `name` in the snapshot directory and makes the rename durable.
    private func moveIntoSnapshotDirectory(_ file: URL, name: String) throws {
        let destination = snapshotDirectory.appendingPathComponent(name)
        guard file.standardizedFileURL.path != destination.standardizedFileURL.path else { return }
        guard rename(file.path, destination.path) == 0 else {
            throw fileSystemError(file.path, "cannot rename to \(destination.path)")
        }
        try syncFile(snapshotDirectory)
    }

    private func syncFile(_ file: URL) throws {
        let descriptor = open(file.path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw fileSystemError(file.path, "cannot open") }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw fileSystemError(file.path, "cannot fsync") }
    }

    private func writeAll(_ bytes: [UInt8], to descriptor: Int32, path: String) throws {
        try bytes.withUnsafeBytes { buffer in
            var written = 0
            while written < buffer.count {
                let result = write(descriptor, buffer.baseAddress! + written, buffer.count - written)
                if result < 0 {
                    if errno == EINTR { continue }
                    throw fileSystemError(path, "cannot write")
                }
                written += result
            }
        }
    }

    private func fileSystemError(_ path: String, _ what: String) -> LogStorageError {
        LogStorageError(.fileSystem, path: path, "\(what): \(String(cString: strerror(errno)))")
    }

    /// Removes snapshot files other than `current`: older snapshots, and those of operations a crash
    /// interrupted. Temporary files may belong to a snapshot the state machine is writing right now, so they
    /// go only at open. Failures leave garbage, not damage, so they are ignored.
    private func removeSnapshotFiles(keeping current: String?, includingTemporary: Bool) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: snapshotDirectory.path) else { return }
        for name in names where name != current {
            let isTemporary = name.hasPrefix(Self.temporarySnapshotPrefix) || name == Self.stagedSnapshotName
            guard name.hasSuffix(Self.snapshotSuffix) || name == Self.stagedSnapshotName else { continue }
            guard includingTemporary || !isTemporary else { continue }
            try? FileManager.default.removeItem(at: snapshotDirectory.appendingPathComponent(name))
        }
    }

    /// Debug check that the in-memory copies equal what the last transaction wrote. It reads only the small
    /// records and the ends of the log, so that debug builds stay usable with long logs.
    private func memoryMatchesDatabase() -> Bool {
        func row(_ sql: String) throws -> [Int64] {
            let statement = try database.statement(sql)
            defer { statement.reset() }
            guard try statement.step() else { return [] }
            return (0..<4).map { statement.int64($0) }
        }
        guard let hard = try? row("SELECT term, vote, commit_index, 0 FROM hard_state"),
              let boundary = try? row("SELECT compacted_index, compacted_term, 0, 0 FROM log_boundary"),
              let snapshot = try? row("SELECT idx, term, 0, 0 FROM snapshot"),
              let ends = try? row("SELECT min(idx), max(idx), count(*), (SELECT term FROM entries ORDER BY idx DESC LIMIT 1) FROM entries"),
              let fileNameRow = try? database.statement("SELECT file_name FROM snapshot"),
              (try? fileNameRow.step()) == true
        else { return false }
        let name = fileNameRow.isNull(0) ? nil : fileNameRow.string(0)
        fileNameRow.reset()
        let entryCount = UInt64(ends[2])
        return hard == [Int64(hardState.term), Int64(bitPattern: hardState.vote), Int64(hardState.commit), 0]
            && boundary[0] == Int64(boundaryIndex) && boundary[1] == Int64(boundaryTerm)
            && snapshot[0] == Int64(snapshotMetadata.index) && snapshot[1] == Int64(snapshotMetadata.term)
            && name == snapshotFileName
            && lastIndex == boundaryIndex + entryCount
            && (entryCount == 0 ? lastTerm == boundaryTerm
                : ends[0] == Int64(firstIndex) && ends[1] == Int64(lastIndex) && ends[3] == Int64(lastTerm))
    }
}
