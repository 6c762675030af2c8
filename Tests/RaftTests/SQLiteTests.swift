import Foundation
import Testing
@testable import RaftKV

@Test func sqliteRoundTripsBlobsAndIntegers() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sqlite-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let db = try SQLiteDatabase(path: dir.appendingPathComponent("t.db").path)
    try db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
    try db.transaction {
        try db.statement("INSERT INTO t (k, v) VALUES (?, ?)").bind(1, Int64(7)).bind(2, [1, 2, 3] as [UInt8]).run()
        try db.statement("INSERT INTO t (k, v) VALUES (?, ?)").bind(1, Int64(8)).bind(2, [] as [UInt8]).run()
    }
    let select = try db.statement("SELECT v FROM t WHERE k = ?")
    select.bind(1, Int64(7))
    #expect(try select.step())
    #expect(select.bytes(0) == [1, 2, 3])
    let empty = try db.statement("SELECT v IS NULL, length(v) FROM t WHERE k = 8")
    #expect(try empty.step())
    #expect(empty.int64(0) == 0)
    #expect(empty.int64(1) == 0)
}
