import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The products `swift build` puts beside the test runner (kvserver, our etcdctl), and the tools the tests take
/// from Debian (the real etcdctl).
public enum BuiltProducts {
    /// The build products directory's `name`, nil when it is not built.
    public static func url(of name: String) -> URL? {
        // The test runner is itself in the build products directory (`<package>PackageTests.xctest`).
        let candidates = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
                          Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent()]
        for directory in candidates {
            let binary = directory.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: binary.path) { return binary }
        }
        return nil
    }

    /// The real etcdctl 3.4 (Debian's etcd-client), nil when it is not installed.
    public static var realEtcdctl: String? {
        ["/usr/bin/etcdctl", "/usr/local/bin/etcdctl"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

/// The command line of one kvserver member on loopback, as every test that starts one writes it.
public enum KVServerFlags {
    /// Short timings keep elections quick in tests (etcd's rule: election ≥ 5 heartbeats).
    public static let quickElections = ["--heartbeat-interval", "50", "--election-timeout", "500"]

    public static func member(name: String, dataDirectory: URL, clientURL: String, peerURL: String,
                              advertisedPeerURL: String? = nil, token: String, initialCluster: String,
                              state: String = "new") -> [String] {
        [
            "--name", name, "--data-dir", dataDirectory.path,
            "--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
            "--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", advertisedPeerURL ?? peerURL,
            "--initial-cluster-token", token, "--initial-cluster", initialCluster,
            "--initial-cluster-state", state,
        ]
    }
}

/// Child processes of the tests: servers started in the background with their output in a log file, and tools
/// run to completion with a bound on their time.
public enum ChildProcess {
    public struct Output: Sendable {
        /// The exit status, the signal's number when a signal ended it, or -9 when it ran out of time and was killed.
        public var status: Int32
        public var stdout: Data
        public var stderr: Data

        public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
        public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
    }

    /// Starts `executable` in the background, its stdout and stderr appended to `log`.
    /// - Parameter environment: added to (and overriding) this process's environment.
    public static func start(_ executable: URL, _ arguments: [String], environment: [String: String] = [:],
                             log: URL) throws -> Process {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        if !FileManager.default.fileExists(atPath: log.path) {
            FileManager.default.createFile(atPath: log.path, contents: nil)
        }
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    /// Runs `executable` to completion, killed after `timeout` seconds; stdin gets `stdin`, then end of input
    /// unless `keepStdinOpen`.
    /// - Parameter environment: the child's whole environment.
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String],
                           stdin: String? = nil, timeout: TimeInterval, keepStdinOpen: Bool = false) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        let out = Pipe(), err = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        if !keepStdinOpen { try? input.fileHandleForWriting.close() }
        // Read both pipes while the process runs, so a large output cannot block it.
        let group = DispatchGroup()
        let collected = Collected()
        DispatchQueue.global().async(group: group) { collected.stdout = out.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { collected.stderr = err.fileHandleForReading.readDataToEndOfFile() }
        var status = reap(process, timeout: timeout)
        if status == nil {
            Glibc.kill(process.processIdentifier, SIGKILL)
            _ = reap(process, timeout: 30)
            status = -9
        }
        try? input.fileHandleForWriting.close()
        group.wait()
        return Output(status: status ?? -1, stdout: collected.stdout, stderr: collected.stderr)
    }

    /// Waits (bounded) until `process` has exited and returns its exit status (the signal's number when a signal
    /// ended it, as Foundation reports it), or nil if it still runs at the deadline. Foundation's Process has been
    /// seen to miss a child's exit (a kvserver that crashed stayed a zombie, `isRunning` stayed true and
    /// `waitUntilExit` never returned, hanging the whole test run), so a zombie child is reaped here directly.
    public static func reap(_ process: Process, timeout: TimeInterval) -> Int32? {
        let pid = process.processIdentifier
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if !process.isRunning {
                process.waitUntilExit()
                return process.terminationStatus
            }
            let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
            // The state follows the parenthesised command name.
            if let close = stat.lastIndex(of: ")"), stat[close...].dropFirst(2).first == "Z" {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    return status & 0x7f == 0 ? (status >> 8) & 0xff : status & 0x7f
                }
            }
            usleep(10_000)
        } while Date() < deadline
        return nil
    }

    /// Kills `process` (SIGKILL) if it still runs and reaps it.
    public static func kill(_ process: Process) {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        _ = reap(process, timeout: 30)
    }

    private final class Collected: @unchecked Sendable {
        var stdout = Data()
        var stderr = Data()
    }
}
