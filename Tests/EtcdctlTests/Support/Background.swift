import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An etcdctl (or any program) left running while the test goes on: its output collected as it comes, signals
/// sent by its process ID, and every wait bounded. Killed when dropped, so that a failing test leaves nothing.
final class Background: @unchecked Sendable {
    private let process = Process()
    private let lock = NSLock()
    private var stdoutData = Data()
    private var stderrData = Data()
    private var input: Pipe?

    /// `keepStdin`: standard input is a pipe the test writes with ``write(_:)`` and ends with ``closeInput()``.
    init(_ executable: String, _ arguments: [String], environment: [String: String], keepStdin: Bool = false) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        if keepStdin {
            let pipe = Pipe()
            input = pipe
            process.standardInput = pipe
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        out.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            if data.isEmpty { handle.readabilityHandler = nil }
            guard let self else { return }
            self.lock.withLock { self.stdoutData.append(data) }
        }
        err.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            if data.isEmpty { handle.readabilityHandler = nil }
            guard let self else { return }
            self.lock.withLock { self.stderrData.append(data) }
        }
        try process.run()
    }

    /// etcdctl (real or ours) with `--endpoints` of `server` first, in the same environment as Server.run.
    static func etcdctl(real: Bool, server: Server, _ args: [String], env: [String: String] = [:],
                        keepStdin: Bool = false) throws -> Background {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ETCDCTL_") }
        environment["ETCDCTL_API"] = "3"
        environment.merge(env) { $1 }
        return try Background(real ? Server.realEtcdctlPath : Server.ourEtcdctl!.path,
                              ["--endpoints=\(server.endpoint)"] + args, environment: environment, keepStdin: keepStdin)
    }

    func write(_ text: String) { input?.fileHandleForWriting.write(Data(text.utf8)) }

    func closeInput() { try? input?.fileHandleForWriting.close() }

    var stdout: String { lock.withLock { String(decoding: stdoutData, as: UTF8.self) } }
    var stderr: String { lock.withLock { String(decoding: stderrData, as: UTF8.self) } }
    var isRunning: Bool { process.isRunning }

    /// Waits until stdout satisfies `condition`; false if it did not within `timeout` seconds.
    @discardableResult
    func waitForOutput(timeout: TimeInterval = 10, _ condition: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition(stdout) { return true }
            usleep(20_000)
        }
        return condition(stdout)
    }

    func signal(_ number: Int32) {
        if process.isRunning { kill(process.processIdentifier, number) }
    }

    /// The exit status once the process ends, or nil (and the process killed) after `timeout` seconds.
    func waitForExit(timeout: TimeInterval = 10) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        process.waitUntilExit()
        // Let the readability handlers take the last bytes.
        usleep(50_000)
        return process.terminationStatus
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}
