import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Named failure points at the persistence boundaries, for fault tests: the process dies there (as a power cut or
/// `kill -9` at exactly that instruction would leave it), or the storage call there fails (as a full or broken disk
/// would make it).
///
/// Armed only by the environment variable `KVSERVER_FAILPOINTS`, read once, at the first point reached: a
/// comma-separated list of `name[:hit][=action]`. The point fires on its `hit`-th pass (default 1) and on every pass
/// after it; `action` is `exit` (default: write one line naming the point to stderr, then `_exit(86)` without
/// running anything else, so nothing is flushed or closed) or `error` (the call throws ``FailPointError``, as an
/// I/O error from the storage would). Unset, every point costs one check of a flag.
///
/// Each site is one line (`try FailPoints.hit(.logBeforeFsync)`) so that the code it sits in reads as before.
public enum FailPoints {
    public enum Name: String, CaseIterable, Sendable {
        /// The log's Ready transaction with `sync`, before it is written and fsynced.
        case logBeforeFsync = "log-before-fsync"
        /// The same, after it committed (fsynced), before the messages of that Ready are sent.
        case logAfterFsync = "log-after-fsync"
        /// The state machine's apply transaction, after every entry of the batch was applied, before COMMIT.
        case applyBeforeCommit = "apply-before-commit"
        /// Right after the apply transaction committed, before the proposers hear back.
        case applyAfterCommit = "apply-after-commit"
        /// Installing a received snapshot: its file is in the snapshot directory, the log does not record it yet.
        case snapshotInstallBeforeRecord = "snapshot-install-before-record"
        /// Installing a received snapshot: the log records it, the state machine is not restored from it yet.
        case snapshotInstallBeforeRestore = "snapshot-install-before-restore"
    }

    public enum Action: String, Sendable {
        case exit
        case error
    }

    /// The exit status of a process stopped by an `exit` failure point.
    public static let exitStatus: Int32 = 86
    public static let environmentVariable = "KVSERVER_FAILPOINTS"

    struct Armed: Sendable {
        var hit: Int
        var action: Action
        var passes = 0
    }

    /// Parses a `KVSERVER_FAILPOINTS` value; unknown names and malformed entries are errors, so that a test never
    /// believes it armed a point that does not exist.
    public static func parse(_ text: String) throws(FailPointError) -> [Name: (hit: Int, action: Action)] {
        var result: [Name: (hit: Int, action: Action)] = [:]
        for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
            var rest = Substring(item)
            var action = Action.exit
            if let equals = rest.firstIndex(of: "=") {
                guard let parsed = Action(rawValue: String(rest[rest.index(after: equals)...])) else {
                    throw FailPointError(message: "\(environmentVariable): unknown action in \"\(item)\" (want exit or error)")
                }
                action = parsed
                rest = rest[..<equals]
            }
            var hit = 1
            if let colon = rest.firstIndex(of: ":") {
                guard let parsed = Int(rest[rest.index(after: colon)...]), parsed >= 1 else {
                    throw FailPointError(message: "\(environmentVariable): hit count in \"\(item)\" is not a positive integer")
                }
                hit = parsed
                rest = rest[..<colon]
            }
            guard let name = Name(rawValue: String(rest)) else {
                throw FailPointError(message: "\(environmentVariable): unknown failure point \"\(rest)\" (known: "
                    + Name.allCases.map(\.rawValue).joined(separator: ", ") + ")")
            }
            result[name] = (hit, action)
        }
        return result
    }

    final class Table: Sendable {
        let points: Mutex<[Name: Armed]>
        init(_ points: [Name: Armed]) { self.points = Mutex(points) }
    }

    private static let armed: Table? = {
        guard let text = ProcessInfo.processInfo.environment[environmentVariable], !text.isEmpty else { return nil }
        do {
            return Table(try parse(text).mapValues { Armed(hit: $0.hit, action: $0.action) })
        } catch {
            // A misspelt point must not silently test nothing.
            writeToStandardError("kvserver: \(error)\n")
            _exit(2)
        }
    }()

    /// Call at the point `name`: returns at once unless it is armed and due.
    public static func hit(_ name: Name) throws(FailPointError) {
        guard let armed else { return }
        let due = armed.points.withLock { table -> (pass: Int, action: Action)? in
            guard var point = table[name] else { return nil }
            point.passes += 1
            table[name] = point
            return point.passes >= point.hit ? (point.passes, point.action) : nil
        }
        guard let due else { return }
        switch due.action {
        case .exit:
            writeToStandardError("kvserver: failure point \(name.rawValue) reached (pass \(due.pass)): exiting abruptly\n")
            _exit(exitStatus)
        case .error:
            throw FailPointError(message: "failure point \(name.rawValue) (pass \(due.pass)): injected I/O error")
        }
    }

    private static func writeToStandardError(_ line: String) {
        var bytes = Array(line.utf8)
        _ = write(2, &bytes, bytes.count)
    }

    /// The ``MVCCStore/failurePoint`` hook for the apply points, nil when neither is armed (checked once at open).
    public static var applyHook: (@Sendable (MVCCFailurePoint) throws -> Void)? {
        guard let armed, armed.points.withLock({ $0[.applyBeforeCommit] != nil || $0[.applyAfterCommit] != nil }) else { return nil }
        return { point in
            switch point {
            case .beforeApplyCommit: try hit(.applyBeforeCommit)
            case .afterApplyCommit: try hit(.applyAfterCommit)
            case .beforeCompactionCommit: break
            }
        }
    }
}

public struct FailPointError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
