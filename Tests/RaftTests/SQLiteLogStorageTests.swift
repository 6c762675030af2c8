import Foundation
import Testing
@testable import RaftKV

/// A fresh directory for one test, removed afterwards.
private func withTemporaryDirectory(_ body: (URL) throws -> Void) throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("raftlog-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    try body(directory)
}

private func entries(_ range: ClosedRange<LogIndex>, term: Term, dataBytes: Int = 3) -> [Entry] {
    range.map { Entry(term: term, index: $0, data: [UInt8](repeating: UInt8(truncatingIfNeeded: $0), count: dataBytes)) }
}

/// Changes the database behind a closed storage, as a disk fault or a careless operator might.
private func tamper(_ directory: URL, _ sql: String) throws {
    let database = try SQLiteDatabase(path: directory.appendingPathComponent("raft.db").path, create: false)
    try database.execute(sql)
}

/// The error opening `directory` throws, or nil when it opens.
private func openingError(_ directory: URL) -> LogStorageError? {
    do {
        _ = try SQLiteLogStorage(directory: directory)
        return nil
    } catch let error as LogStorageError {
        return error
    } catch {
        Issue.record("unexpected error type: \(error)")
        return nil
    }
}

private func stage(_ storage: SQLiteLogStorage, _ metadata: SnapshotMetadata, _ data: [UInt8], chunkBytes: Int) throws {
    var offset = 0
    repeat {
        let end = min(offset + chunkBytes, data.count)
        try storage.stageSnapshotChunk(SnapshotChunk(metadata: metadata, offset: UInt64(offset),
                                                     data: Array(data[offset..<end]), isLast: end == data.count))
        offset = end
    } while offset < data.count
}

private func snapshotFileNames(_ directory: URL) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: directory.appendingPathComponent("snap").path).sorted()
}

@Test func sqliteLogStorageStartsEmpty() throws {
    try withTemporaryDirectory { directory in
        let storage = try SQLiteLogStorage(directory: directory)
        #expect(storage.firstIndex == 1)
        #expect(storage.lastIndex == 0)
        #expect(storage.term(at: 0) == 0)
        #expect(storage.term(at: 1) == nil)
        #expect(storage.hardState == HardState())
        #expect(storage.snapshotMetadata == SnapshotMetadata())
        #expect(storage.snapshotFile == nil)
        #expect(storage.entries(in: 1..<1, maxBytes: 100).isEmpty)
        let data = storage.snapshotData(offset: 0, maxBytes: 10)
        #expect(data.data.isEmpty && data.isLast)
    }
}

/// etcd's member IDs are SHA-1 based and use all 64 bits; SQLite's integers are signed.
@Test func sqliteLogStorageKeepsMemberIDsAboveInt64Max() throws {
    try withTemporaryDirectory { directory in
        let vote: NodeID = 0xd4c3_3893_9122_f8de
        let membership = Membership(voters: [vote, 0x8000_0000_0000_0000], learners: [UInt64.max])
        do {
            let storage = try SQLiteLogStorage(directory: directory)
            try storage.save(hardState: HardState(term: 3, vote: vote, commit: 0), entries: entries(1...2, term: 3), sync: true)
            #expect(storage.hardState.vote == vote)
        }
        let reopened = try SQLiteLogStorage(directory: directory)
        #expect(reopened.hardState == HardState(term: 3, vote: vote, commit: 0))
        #expect(SQLiteLogStorage.decodeMembers(SQLiteLogStorage.encodeMembers(membership.voters)) == membership.voters)
        #expect(SQLiteLogStorage.decodeMembers(SQLiteLogStorage.encodeMembers(membership.learners)) == membership.learners)
    }
}

@Test func sqliteLogStorageAppendsAndReopens() throws {
    try withTemporaryDirectory { directory in
        let written = entries(1...3, term: 1) + entries(4...5, term: 2)
            + [Entry(term: 2, index: 6, kind: .configChange, data: [9, 9]), Entry(term: 2, index: 7, data: [])]
        do {
            let storage = try SQLiteLogStorage(directory: directory)
            try storage.save(hardState: HardState(term: 2, vote: 7, commit: 0), entries: Array(written[0..<4]), sync: true)
            try storage.save(hardState: HardState(term: 2, vote: 7, commit: 5), entries: Array(written[4...]), sync: false)
            #expect(storage.lastIndex == 7)
            #expect(storage.hardState == HardState(term: 2, vote: 7, commit: 5))
            #expect(storage.entries(in: 1..<8, maxBytes: .max) == written)
        }
        let reopened = try SQLiteLogStorage(directory: directory)
        #expect(reopened.firstIndex == 1)
        #expect(reopened.lastIndex == 7)
        #expect(reopened.hardState == HardState(term: 2, vote: 7, commit: 5))
        #expect(reopened.entries(in: 1..<8, maxBytes: .max) == written)
        #expect(reopened.entries(in: 3..<5, maxBytes: .max) == Array(written[2..<4]))
        #expect(reopened.term(at: 0) == 0)
        #expect(reopened.term(at: 3) == 1)
        #expect(reopened.term(at: 4) == 2)
        #expect(reopened.term(at: 7) == 2)
        #expect(reopened.term(at: 8) == nil)
    }
}

@Test func sqliteLogStorageTruncatesConflictingSuffix() throws {
    try withTemporaryDirectory { directory in
        do {
            let storage = try SQLiteLogStorage(directory: directory)
            try storage.save(hardState: HardState(term: 2, vote: 1, commit: 2), entries: entries(1...2, term: 1) + entries(3...6, term: 2), sync: true)
            try storage.save(hardState: HardState(term: 3, vote: 0, commit: 2), entries: entries(4...4, term: 3), sync: true)
            #expect(storage.lastIndex == 4)
            #expect(storage.term(at: 4) == 3)
            #expect(storage.term(at: 5) == nil)
            // Entries alone keep the stored hard state.
            try storage.save(hardState: nil, entries: entries(5...5, term: 3), sync: true)
            #expect(storage.hardState == HardState(term: 3, vote: 0, commit: 2))
        }
        let reopened = try SQLiteLogStorage(directory: directory)
        #expect(reopened.lastIndex == 5)
        #expect(reopened.entries(in: 1..<6, maxBytes: .max).map(\.term) == [1, 1, 2, 3, 3])
        #expect(reopened.hardState == HardState(term: 3, vote: 0, commit: 2))
    }
}

@Test func sqliteLogStorageLimitsEntriesByBytes() throws {
    try withTemporaryDirectory { directory in
        let storage = try SQLiteLogStorage(directory: directory)
        try storage.save(hardState: nil, entries: entries(1...10, term: 1, dataBytes: 76), sync: true)
        // Each entry costs 76 + 24 = 100 bytes.
        #expect(storage.entries(in: 1..<11, maxBytes: 350).map(\.index) == [1, 2, 3])
        #expect(storage.entries(in: 1..<11, maxBytes: 300).map(\.index) == [1, 2, 3])
        #expect(storage.entries(in: 4..<11, maxBytes: 10).map(\.index) == [4])
        #expect(storage.entries(in: 4..<11, maxBytes: 0).map(\.index) == [4])
        #expect(storage.entries(in: 9..<11, maxBytes: 10_000).map(\.index) == [9, 10])
    }
}

@Test func sqliteLogStorageInstallsSnapshotKeepingMatchingSuffix() throws {
    try withTemporaryDirectory { directory in
        let snapshotBytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let metadata = SnapshotMetadata(index: 5, term: 2, membership: Membership(voters: [1, 0x2a], learners: [0xfeed]))
        do {
            let storage = try SQLiteLogStorage(directory: directory)
            try storage.save(hardState: HardState(term: 3, vote: 2, commit: 3), entries: entries(1...3, term: 1) + entries(4...8, term: 2), sync: true)
            try stage(storage, metadata, snapshotBytes, chunkBytes: 300)
            try storage.installStagedSnapshot(metadata)
            #expect(storage.firstIndex == 6)
            #expect(storage.lastIndex == 8)
            #expect(storage.term(at: 5) == 2)
            #expect(storage.term(at: 4) == nil)
            #expect(storage.hardState == HardState(term: 3, vote: 2, commit: 5))
            #expect(storage.snapshotMetadata == metadata)
        }
        let reopened = try SQLiteLogStorage(directory: directory)
        #expect(reopened.firstIndex == 6)
        #expect(reopened.lastIndex == 8)
        #expect(reopened.term(at: 5) == 2)
        #expect(reopened.entries(in: 6..<9, maxBytes: .max) == entries(6...8, term: 2))
        #expect(reopened.hardState == HardState(term: 3, vote: 2, commit: 5))
        #expect(reopened.snapshotMetadata == metadata)
        let file = try #require(reopened.snapshotFile)
        #expect(try Data(contentsOf: file) == Data(snapshotBytes))
        #expect(try snapshotFileNames(directory) == [file.lastPathComponent])

        var read: [UInt8] = []
        var isLast = false
        while !isLast {
            let chunk = reopened.snapshotData(offset: UInt64(read.count), maxBytes: 256)
            read += chunk.data
            isLast = chunk.isLast
        }
        #expect(read == snapshotBytes)
        #expect(reopened.snapshotData(offset: 744, maxBytes: 256) == (Array(snapshotBytes[744...]), true))
    }
}

@Test func sqliteLogStorageInstallsSnapshotDroppingConflictingLog() throws {
    try withTemporaryDirectory { directory in
        let metadata = SnapshotMetadata(index: 6, term: 3, membership: Membership(voters: [1, 2, 3]))
        do {
            let storage = try SQLiteLogStorage(directory: directory)
            try storage.save(hardState: HardState(term: 3, vote: 0, commit: 2), entries: entries(1...8, term: 2), sync: true)
            try stage(storage, metadata, [1, 2, 3, 4, 5], chunkBytes: 2)
            try storage.installStagedSnapshot(metadata)
            #expect(storage.firstIndex == 7)
            #expect(storage.lastIndex == 6)
            #expect(storage.term(at: 6) == 3)
            #expect(storage.hardState.commit == 6)
        }
        let reopened = try SQLiteLogStorage(directory: directory)
        #expect(reopened.firstIndex == 7)
        #expect(reopened.lastIndex == 6)
        #expect(reopened.term(at: 6) == 3)
        #expect(reopened.term(at: 7) == nil)
        #expect(reopened.hardState == HardState(term: 3, vote: 0, commit: 6))
        #expect(reopened.snapshotMetadata == metadata)
        #expect(try Data(contentsOf: try #require(reopened.snapshotFile)) == Data([1, 2, 3, 4, 5]))
        // The log continues after the snapshot.
        try reopened.save(hardState: nil, entries: entries(7...7, term: 3), sync: true)
        #expect(reopened.entries(in: 7..<8, maxBytes: .max) == entries(7...7, term: 3))
    }
}

@Test func sqliteLogStorageRejectsChunksOutOfOrder() throws {
    try withTemporaryDirectory { directory in
        let storage = try SQLiteLogStorage(directory: directory)
        let metadata = SnapshotMetadata(index: 4, term: 1, membership: Membership(voters: [1]))
        #expect(throws: LogStorageError.self) {
            try storage.stageSnapshotChunk(SnapshotChunk(metadata: metadata, offset: 10, data: [1], isLast: false))
        }
        try storage.stageSnapshotChunk(SnapshotChunk(metadata: metadata, offset: 0, data: [1, 2, 3], isLast: false))
        let error = #expect(throws: LogStorageError.self) {
            try storage.stageSnapshotChunk(SnapshotChunk(metadata: metadata, offset: 2, data: [3, 4], isLast: true))
        }
        #expect(error?.kind == .snapshotChunkOutOfOrder)
        #expect(error?.description.contains("incoming.partial") == true)
        let otherSnapshot = SnapshotMetadata(index: 5, term: 1, membership: Membership(voters: [1]))
        #expect(throws: LogStorageError.self) {
            try storage.stageSnapshotChunk(SnapshotChunk(metadata: otherSnapshot, offset: 3, data: [4], isLast: true))
        }
        let incomplete = #expect(throws: LogStorageError.self) { try storage.installStagedSnapshot(metadata) }
        #expect(incomplete?.kind == .snapshotNotStaged)
        // Offset 0 starts over.
        try storage.stageSnapshotChunk(SnapshotChunk(metadata: metadata, offset: 0, data: [7], isLast: false))
        try storage.stageSnapshotChunk(SnapshotChunk(metadata: metadata, offset: 1, data: [8], isLast: true))
        try storage.installStagedSnapshot(metadata)
        #expect(try Data(contentsOf: try #require(storage.snapshotFile)) == Data([7, 8]))
    }
}

@Test func sqliteLogStorageAdoptsLocalSnapshotAndCompacts() throws {
    try withTemporaryDirectory { directory in
        let first = SnapshotMetadata(index: 10, term: 2, membership: Membership(voters: [1, 2, 3]))
        let second = SnapshotMetadata(index: 16, term: 3, membership: Membership(voters: [1, 2], learners: [3]))
        do {
            let storage = try SQLiteLogStorage(directory: directory)
            try storage.save(hardState: HardState(term: 3, vote: 1, commit: 18),
                             entries: entries(1...5, term: 1) + entries(6...12, term: 2) + entries(13...20, term: 3), sync: true)

            let firstFile = storage.temporarySnapshotFile()
            #expect(firstFile.deletingLastPathComponent().lastPathComponent == "snap")
            try Data([1, 1, 1]).write(to: firstFile)
            try storage.adoptLocalSnapshot(first, file: firstFile, retainEntries: 3)
            #expect(storage.firstIndex == 8)
            #expect(storage.term(at: 7) == 2)
            #expect(storage.term(at: 6) == nil)
            #expect(storage.snapshotMetadata == first)
            #expect(!FileManager.default.fileExists(atPath: firstFile.path))

            let secondFile = storage.temporarySnapshotFile()
            #expect(secondFile != firstFile)
            try Data([2, 2]).write(to: secondFile)
            try storage.adoptLocalSnapshot(second, file: secondFile, retainEntries: 4)
            #expect(storage.firstIndex == 13)
            #expect(storage.term(at: 12) == 2)
            #expect(storage.lastIndex == 20)
            #expect(try snapshotFileNames(directory) == [try #require(storage.snapshotFile).lastPathComponent])
        }
        let reopened = try SQLiteLogStorage(directory: directory)
        #expect(reopened.firstIndex == 13)
        #expect(reopened.lastIndex == 20)
        #expect(reopened.term(at: 12) == 2)
        #expect(reopened.term(at: 11) == nil)
        #expect(reopened.entries(in: 13..<21, maxBytes: .max) == entries(13...20, term: 3))
        #expect(reopened.snapshotMetadata == second)
        #expect(reopened.hardState == HardState(term: 3, vote: 1, commit: 18))
        #expect(try Data(contentsOf: try #require(reopened.snapshotFile)) == Data([2, 2]))
    }
}

@Test func sqliteLogStorageAdoptsSnapshotRetainingMoreThanTheLog() throws {
    try withTemporaryDirectory { directory in
        let storage = try SQLiteLogStorage(directory: directory)
        try storage.save(hardState: HardState(term: 1, vote: 1, commit: 4), entries: entries(1...4, term: 1), sync: true)
        let file = storage.temporarySnapshotFile()
        try Data([5]).write(to: file)
        try storage.adoptLocalSnapshot(SnapshotMetadata(index: 4, term: 1), file: file, retainEntries: 100)
        #expect(storage.firstIndex == 1)
        #expect(storage.lastIndex == 4)
        #expect(storage.snapshotMetadata.index == 4)
        let again = storage.temporarySnapshotFile()
        try Data([5]).write(to: again)
        try storage.adoptLocalSnapshot(SnapshotMetadata(index: 4, term: 1), file: again, retainEntries: 0)
        #expect(storage.firstIndex == 5)
        #expect(storage.lastIndex == 4)
        #expect(storage.term(at: 4) == 1)
    }
}

@Test func sqliteLogStorageCleansLeftoversOnOpen() throws {
    try withTemporaryDirectory { directory in
        let snapshotDirectory = directory.appendingPathComponent("snap")
        do {
            let storage = try SQLiteLogStorage(directory: directory)
            try storage.save(hardState: nil, entries: entries(1...3, term: 1), sync: true)
            try storage.stageSnapshotChunk(SnapshotChunk(metadata: SnapshotMetadata(index: 9, term: 2), offset: 0, data: [1], isLast: false))
            try Data([1]).write(to: storage.temporarySnapshotFile())
            try Data([1]).write(to: snapshotDirectory.appendingPathComponent("2-9.snap"))
            try Data([1]).write(to: snapshotDirectory.appendingPathComponent("notes.txt"))
        }
        let reopened = try SQLiteLogStorage(directory: directory)
        #expect(reopened.lastIndex == 3)
        #expect(try snapshotFileNames(directory) == ["notes.txt"])
    }
}

// MARK: Validation on open

@Test func sqliteLogStorageRejectsNonSQLiteFile() throws {
    try withTemporaryDirectory { directory in
        let file = directory.appendingPathComponent("raft.db")
        try Data(repeating: 0x41, count: 4096).write(to: file)
        let error = try #require(openingError(directory))
        #expect(error.kind == .notRaftLog)
        #expect(error.description.contains(file.path))
        // The file must not have been replaced by an empty log.
        #expect(try Data(contentsOf: file) == Data(repeating: 0x41, count: 4096))
    }
}

@Test func sqliteLogStorageRejectsForeignSQLiteDatabase() throws {
    try withTemporaryDirectory { directory in
        let file = directory.appendingPathComponent("raft.db")
        let foreign = try SQLiteDatabase(path: file.path)
        try foreign.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER)")
        let error = try #require(openingError(directory))
        #expect(error.kind == .notRaftLog)
        #expect(error.description.contains(file.path))
        #expect(try foreign.scalarInt64("SELECT count(*) FROM sqlite_schema WHERE name = 'entries'") == 0)
    }
}

@Test func sqliteLogStorageRejectsOtherSchemaVersion() throws {
    try withTemporaryDirectory { directory in
        _ = try SQLiteLogStorage(directory: directory)
        try tamper(directory, "PRAGMA user_version = 99")
        let error = try #require(openingError(directory))
        #expect(error.kind == .unsupportedSchemaVersion)
        #expect(error.description.contains(directory.appendingPathComponent("raft.db").path))
    }
}

@Test(arguments: [
    ("gap in indexes", "DELETE FROM entries WHERE idx = 3", "entry indexes 1...6 have gaps"),
    ("term decrease", "UPDATE entries SET term = 1 WHERE idx = 5", "term decreases at entry 5"),
    ("commit beyond last index", "UPDATE hard_state SET commit_index = 9", "commit index 9 is beyond the last entry 6"),
    ("first entry not after boundary", "DELETE FROM entries WHERE idx = 1", "first entry index 2 does not follow"),
    ("unknown entry kind", "UPDATE entries SET kind = 7 WHERE idx = 2", "entry 2 is malformed"),
    ("missing hard state", "DELETE FROM hard_state", "hard_state has 0 rows"),
    ("snapshot beyond log", "UPDATE snapshot SET idx = 50, term = 2, file_name = 'x.snap'", "snapshot index 50 is outside"),
    ("compacted without snapshot", "UPDATE log_boundary SET compacted_index = 1, compacted_term = 1; DELETE FROM entries WHERE idx = 1", "compacted up to 1 without a snapshot"),
])
func sqliteLogStorageRejectsCorruptLog(_ corruption: (name: String, sql: String, expectedDetail: String)) throws {
    try withTemporaryDirectory { directory in
        do {
            let storage = try SQLiteLogStorage(directory: directory)
            try storage.save(hardState: HardState(term: 2, vote: 1, commit: 4), entries: entries(1...3, term: 1) + entries(4...6, term: 2), sync: true)
        }
        try tamper(directory, corruption.sql)
        let error = try #require(openingError(directory), "\(corruption.name) was not detected")
        #expect(error.kind == .corrupt, "\(corruption.name): \(error)")
        #expect(error.detail.contains(corruption.expectedDetail), "\(corruption.name): \(error)")
        #expect(error.description.contains(directory.appendingPathComponent("raft.db").path))
    }
}

@Test func sqliteLogStorageRejectsMissingSnapshotFile() throws {
    try withTemporaryDirectory { directory in
        let file: URL
        do {
            let storage = try SQLiteLogStorage(directory: directory)
            try storage.save(hardState: HardState(term: 1, vote: 1, commit: 3), entries: entries(1...3, term: 1), sync: true)
            let temporary = storage.temporarySnapshotFile()
            try Data([1]).write(to: temporary)
            try storage.adoptLocalSnapshot(SnapshotMetadata(index: 2, term: 1), file: temporary, retainEntries: 0)
            file = try #require(storage.snapshotFile)
        }
        try FileManager.default.removeItem(at: file)
        let error = try #require(openingError(directory))
        #expect(error.kind == .corrupt)
        #expect(error.description.contains(file.path))
    }
}

@Test func sqliteLogStorageRefusesToStartOverLostDatabase() throws {
    try withTemporaryDirectory { directory in
        do {
            let storage = try SQLiteLogStorage(directory: directory)
            try storage.save(hardState: HardState(term: 1, vote: 1, commit: 3), entries: entries(1...3, term: 1), sync: true)
            let temporary = storage.temporarySnapshotFile()
            try Data([1]).write(to: temporary)
            try storage.adoptLocalSnapshot(SnapshotMetadata(index: 3, term: 1), file: temporary, retainEntries: 0)
        }
        try FileManager.default.removeItem(at: directory.appendingPathComponent("raft.db"))
        let error = try #require(openingError(directory))
        #expect(error.kind == .corrupt)
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("raft.db").path))
    }
}

@Test func sqliteLogStorageCompactsLongLogInBatches() throws {
    try withTemporaryDirectory { directory in
        let entryCount: LogIndex = 3 * SQLiteLogStorage.compactionBatchEntries + 500
        let metadata = SnapshotMetadata(index: entryCount - 100, term: 2, membership: Membership(voters: [1]))
        do {
            let storage = try SQLiteLogStorage(directory: directory)
            try storage.save(hardState: HardState(term: 2, vote: 1, commit: entryCount),
                             entries: entries(1...1000, term: 1, dataBytes: 1) + entries(1001...entryCount, term: 2, dataBytes: 1), sync: true)
            let file = storage.temporarySnapshotFile()
            try Data([1]).write(to: file)
            try storage.adoptLocalSnapshot(metadata, file: file, retainEntries: 200)
            #expect(storage.firstIndex == entryCount - 299)
            #expect(storage.term(at: entryCount - 300) == 2)
        }
        let reopened = try SQLiteLogStorage(directory: directory)
        #expect(reopened.firstIndex == entryCount - 299)
        #expect(reopened.lastIndex == entryCount)
        #expect(reopened.term(at: entryCount - 300) == 2)
        #expect(reopened.entries(in: reopened.firstIndex..<(reopened.firstIndex + 2), maxBytes: .max)
                    == entries((entryCount - 299)...(entryCount - 298), term: 2, dataBytes: 1))
    }
}
