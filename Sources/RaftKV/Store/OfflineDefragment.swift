import CSQLite
import Foundation

/// etcdctl's `defrag --data-dir`: defragments the state database of a data directory that no server has open.
///
/// A running kvserver keeps its state database open in WAL mode, which holds a shared lock on the file. Taking the
/// file in SQLite's exclusive locking mode therefore fails (SQLITE_BUSY) for as long as a server has it, the way
/// etcd's bbolt flock blocks while etcd runs; once taken, no server can open the file until the defragmentation is
/// over.
public enum OfflineDefragment {
    public enum Failure: Error, CustomStringConvertible {
        /// The database could not be opened at all (etcd's backend panics here): `reason` as Go's os errors say it.
        case cannotOpen(path: String, reason: String)
        /// Opened, but VACUUM or the checkpoint failed.
        case failed(String)

        public var description: String {
            switch self {
            case .cannotOpen(_, let reason): reason
            case .failed(let reason): reason
            }
        }
    }

    /// Defragments `<dataDirectory>/member/kv.db`. When a server still holds the file after `lockWait` seconds,
    /// `whileWaiting` is called once and the wait goes on until the server lets go (etcd 3.4 waits the same way).
    public static func run(dataDirectory: String, lockWait: Double = 1, whileWaiting: () -> Void) throws {
        let path = databasePath(inDataDirectory: dataDirectory)
        // SQLite's own open error does not say why; the system's does, as bbolt's open(2) would.
        let descriptor = open(path, O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw Failure.cannotOpen(path: path, reason: "open \(path): \(goErrnoText(errno))")
        }
        close(descriptor)
        let database: SQLiteDatabase
        do {
            database = try SQLiteDatabase(path: path, create: false)
            try database.execute("PRAGMA busy_timeout = \(Int(lockWait * 1000)); PRAGMA locking_mode = EXCLUSIVE")
        } catch {
            throw Failure.cannotOpen(path: path, reason: "\(error)")
        }
        // In exclusive mode the first read takes the lock and keeps it until the connection closes.
        var warned = false
        while true {
            do {
                _ = try database.scalarInt64("SELECT count(*) FROM sqlite_master")
                break
            } catch let error as SQLiteError where error.code & 0xFF == SQLITE_BUSY {
                if !warned {
                    warned = true
                    whileWaiting()
                }
            } catch {
                throw Failure.cannotOpen(path: path, reason: "\(error)")
            }
        }
        do {
            guard try database.scalarInt64("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('meta', 'kv', 'latest')") == 3 else {
                throw Failure.cannotOpen(path: path, reason: "not a kvserver state database")
            }
            try database.execute("VACUUM")
            // Fold the rebuilt pages back into the file, so that its size is the defragmented size.
            try database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure.failed("\(error)")
        }
    }

    /// ``StateSnapshot/stateDatabase(inDataDirectory:)`` as a path that stays relative when the directory is (as
    /// etcd's filepath.Join does; a file URL would make it absolute).
    public static func databasePath(inDataDirectory directory: String) -> String {
        (directory as NSString).appendingPathComponent("member/kv.db")
    }

    /// Go's syscall.Errno text for the errors an open can give (Go's table is lower-case, unlike glibc's strerror).
    private static func goErrnoText(_ code: Int32) -> String {
        switch code {
        case ENOENT: return "no such file or directory"
        case EACCES: return "permission denied"
        case ENOTDIR: return "not a directory"
        case EISDIR: return "is a directory"
        default:
            let text = String(cString: strerror(code))
            return text.prefix(1).lowercased() + text.dropFirst()
        }
    }
}
