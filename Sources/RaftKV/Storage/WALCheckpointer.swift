import CSQLite
import Foundation

/// Moves a WAL database's checkpoints off the connection that writes it.
///
/// SQLite's automatic checkpoint runs inside the COMMIT that takes the write-ahead log past its threshold, fsyncs
/// and all, so one commit in a few hundred takes tens of milliseconds. Our writers are the Raft loop and the state
/// machine's apply, which hold up every request meanwhile. Instead the writer's WAL hook only wakes a thread that
/// checkpoints through a connection of its own (PASSIVE: it never blocks the writer; the first write after a
/// complete checkpoint starts the log file over). Should that thread fall `inlineFrames` behind, the writer
/// checkpoints itself, so the log file stays bounded whatever the thread does.
///
/// The checkpoint connection keeps SQLite's default `synchronous=FULL`: a checkpoint syncs the log before copying
/// it and the database before the log may be reused, as the writer's own would.
public final class WALCheckpointer: Sendable {
    /// Frames (pages) in the log that wake the thread; SQLite's own automatic threshold.
    public static let defaultBackgroundFrames: Int32 = 1000
    /// Frames at which the writer stops waiting for the thread (64 MiB of 4 KiB pages).
    public static let defaultInlineFrames: Int32 = 16_384

    private let worker: Worker
    private let writer: SQLiteDatabase.Reference

    /// Starts checkpointing `writer`'s database in the background. The writer must be in WAL mode and stay open at
    /// least as long as this value; ``stop()`` (or dropping this value) ends the thread and hands checkpoints back to
    /// SQLite's automatic ones.
    public init(writer: SQLiteDatabase, backgroundFrames: Int32 = defaultBackgroundFrames,
                inlineFrames: Int32 = defaultInlineFrames) throws {
        precondition(backgroundFrames > 0 && inlineFrames > backgroundFrames, "frame thresholds out of order")
        let connection = try SQLiteDatabase(path: writer.path, create: false)
        worker = Worker(connection: connection)
        self.writer = SQLiteDatabase.Reference(writer)
        let worker = self.worker
        writer.setWALHook { database, frames in
            if frames >= inlineFrames {
                return sqlite3_wal_checkpoint_v2(database, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            }
            if frames >= backgroundFrames { worker.wake() }
            return SQLITE_OK
        }
        worker.start()
    }

    deinit { stop() }

    /// Ends the thread (waiting for a checkpoint in progress) and restores SQLite's automatic checkpoints.
    public func stop() {
        guard worker.finish() else { return }
        writer.database?.restoreAutomaticCheckpoints()
    }

    /// Checkpoints done by the thread, and the last error one of them met (nil when none did).
    public var statistics: (checkpoints: Int, lastError: SQLiteError?) { worker.statistics }

    private final class Worker: @unchecked Sendable {
        // Guards every field below; `connection` is used by the thread only once it has started.
        private let condition = NSCondition()
        private var connection: SQLiteDatabase?
        private var wanted = false
        private var stopping = false
        private var finished = false
        private var checkpoints = 0
        private var lastError: SQLiteError?

        init(connection: SQLiteDatabase) {
            self.connection = connection
        }

        func start() {
            let thread = Thread { [self] in run() }
            thread.name = "wal-checkpoint"
            thread.start()
        }

        func wake() {
            condition.lock()
            wanted = true
            condition.signal()
            condition.unlock()
        }

        /// Stops the thread and waits for it; false when it was already stopped.
        func finish() -> Bool {
            condition.lock()
            defer { condition.unlock() }
            guard !stopping else { return false }
            stopping = true
            condition.broadcast()
            while !finished { condition.wait() }
            return true
        }

        var statistics: (checkpoints: Int, lastError: SQLiteError?) {
            condition.lock()
            defer { condition.unlock() }
            return (checkpoints, lastError)
        }

        private func run() {
            condition.lock()
            let connection = self.connection!
            while true {
                while !wanted && !stopping { condition.wait() }
                if stopping { break }
                wanted = false
                condition.unlock()
                let result = Result { try connection.checkpoint() }
                condition.lock()
                switch result {
                case .success: checkpoints += 1
                case .failure(let error as SQLiteError):
                    // A busy database just means the next wake-up tries again; other errors are kept for
                    // whoever asks. The writer meets a failing disk on its own writes.
                    if error.code & 0xff != SQLITE_BUSY { lastError = error }
                case .failure: break
                }
            }
            self.connection = nil
            finished = true
            condition.broadcast()
            condition.unlock()
        }
    }
}

extension SQLiteDatabase {
    /// A weak reference, so that a checkpointer never keeps its writer open.
    final class Reference: @unchecked Sendable {
        weak var database: SQLiteDatabase?
        init(_ database: SQLiteDatabase) { self.database = database }
    }

    /// A PASSIVE checkpoint: copies what it can of the log into the database without waiting for anyone.
    func checkpoint() throws {
        let rc = sqlite3_wal_checkpoint_v2(rawHandle, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
        guard rc == SQLITE_OK else { throw error(rc) }
    }
}
