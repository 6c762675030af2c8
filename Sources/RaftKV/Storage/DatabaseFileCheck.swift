import CSQLite
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Checks SQLite cannot be relied on to make at open: SQLite reads pages lazily, so a database file cut short
/// (a truncated copy, a file system that lost its tail) opens without complaint and fails later, in the middle of
/// serving, or reads the missing pages as zeros.
enum DatabaseFileCheck {
    /// Throws `SQLITE_CORRUPT`, naming the file, when `path` is shorter than its header says it is. Only when no
    /// write-ahead log with content sits beside it: with one, pages may legitimately still be only in the WAL (a
    /// checkpoint interrupted by a crash), and SQLite's recovery owns that case.
    static func refuseTruncated(path: String) throws {
        let files = FileManager.default
        if let walBytes = (try? files.attributesOfItem(atPath: path + "-wal"))?[.size] as? Int, walBytes > 0 { return }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        var header = [UInt8](repeating: 0, count: 100)
        guard read(descriptor, &header, header.count) == header.count,
              header.starts(with: Array("SQLite format 3\0".utf8)) else { return }
        func bigEndian(_ offset: Int, _ count: Int) -> Int {
            header[offset..<(offset + count)].reduce(0) { $0 << 8 | Int($1) }
        }
        let rawPageSize = bigEndian(16, 2)
        let pageSize = rawPageSize == 1 ? 65_536 : rawPageSize
        let changeCounter = bigEndian(24, 4)
        let pageCount = bigEndian(28, 4)
        // The header's page count is only meaningful when "version-valid-for" matches the change counter.
        guard pageCount > 0, bigEndian(92, 4) == changeCounter else { return }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { return }
        let expected = pageCount * pageSize
        if Int(status.st_size) < expected {
            throw SQLiteError(code: SQLITE_CORRUPT, message: "database file is truncated: \(status.st_size) bytes, "
                + "but its header says \(pageCount) pages of \(pageSize) bytes (\(expected) bytes)", path: path)
        }
    }
}
