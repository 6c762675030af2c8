import EtcdAPI
import Foundation
import GRPCCore

// lock and elect (ctlv3/command/lock_command.go, elect_command.go) over the recipes in Concurrency.swift.

let lockFlags: [FlagSpec] = [FlagSpec(name: "ttl", kind: .int64, defValue: "10", usage: "timeout for session")]
let electFlags: [FlagSpec] = [.bool("listen", "l", false, "observation mode")]

/// concurrency.WithTTL: a TTL that is not positive leaves the default.
private func sessionTTL(_ ttl: Int64) -> Int64 { ttl > 0 ? ttl : 60 }

/// Grants the session's lease, keeps it alive in a child task while `body` runs, then exits (the lease is left
/// to expire, as etcdctl leaves it: it never closes its session; and a keep-alive stream need not wind down).
private func withSession(_ context: Context, ttl: Int64,
                         _ body: @Sendable @escaping (ConcurrencySession) async throws -> Void) async {
    do {
        try await Call.withClient(context.config, timeout: nil) { client in
            let session = try await ConcurrencySession.grant(client, ttl: ttl)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await session.keepAlive() }
                // exit(3) would wait a second or more for the client's threads; the output is written unbuffered.
                do {
                    try await body(session)
                } catch {
                    writeErr("Error: \(concurrencyErrorText(error))\n")
                    _exit(ExitCode.error)
                }
                flushOut()
                _exit(ExitCode.success)
            }
        }
    } catch {
        exitWithError(ExitCode.error, concurrencyErrorText(error))
    }
}

/// Waits for a signal (true) or the end of the session (false).
private func signalOrSessionEnd(_ interrupts: Interrupts, _ session: ConcurrencySession) async throws -> Bool {
    try await withThrowingTaskGroup(of: Bool.self) { group in
        group.addTask {
            try await interrupts.wait()
            return true
        }
        group.addTask {
            try await session.waitDone()
            return false
        }
        defer { group.cancelAll() }
        return try await group.next() ?? false
    }
}

// MARK: lock

func runLock(_ inv: Invocation) async {
    if inv.args.isEmpty {
        exitWithError(ExitCode.badArgs, "lock takes a lock name argument and an optional command to execute")
    }
    let context = makeContext(inv)
    let name = inv.args[0]
    let command = Array(inv.args.dropFirst())
    let printer = context.printer
    await withSession(context, ttl: sessionTTL(inv.int64("ttl"))) { session in
        let mutex = LockMutex(session: session, name: name)
        let interrupts = Interrupts.install()
        do {
            if case .interrupted = try await untilInterrupted(interrupts, { try await mutex.lock() }) {
                try? await mutex.unlock()
                throw ContextCanceled()
            }
        } catch {
            // A failed wait gives the place in the queue back.
            if !(error is ContextCanceled) { try? await mutex.unlock() }
            throw error
        }
        if !command.isEmpty {
            flushOut()
            let failure = await runLockedCommand(command, key: mutex.key, revision: mutex.header?.revision ?? 0)
            var unlockError: Error?
            do { try await mutex.unlock() } catch { unlockError = error }
            if let failure { throw ConcurrencyError(text: failure) }
            if let unlockError { throw unlockError }
            return
        }
        let response = try await session.kv.range(.single(mutex.key))
        if response.kvs.isEmpty { throw ConcurrencyError(text: "lock lost on init") }
        printer.get(response)
        flushOut()
        if try await signalOrSessionEnd(interrupts, session) {
            try await mutex.unlock()
            return
        }
        throw ConcurrencyError(text: "session expired")
    }
}

/// Runs the command with the lock's key and revision in its environment, its output on ours; the error text
/// of Go's exec.Cmd.Run when it fails, nil when it exits 0.
func runLockedCommand(_ command: [String], key: String, revision: Int64) async -> String? {
    let process = Process()
    let executable = command[0]
    if executable.contains("/") {
        process.executableURL = URL(fileURLWithPath: executable)
    } else {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        guard let found = path.split(separator: ":", omittingEmptySubsequences: false)
            .map({ ($0.isEmpty ? "." : String($0)) + "/" + executable })
            .first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            return "exec: \(goQuote(executable)): executable file not found in $PATH"
        }
        process.executableURL = URL(fileURLWithPath: found)
    }
    process.arguments = Array(command.dropFirst())
    // cmd.Env = the lock's variables, then os.Environ(); Go keeps the last of duplicate names.
    var environment = ["ETCD_LOCK_KEY": key, "ETCD_LOCK_REV": String(revision)]
    environment.merge(ProcessInfo.processInfo.environment) { $1 }
    process.environment = environment
    let finished = AsyncStream<Void>.makeStream()
    process.terminationHandler = { _ in
        finished.continuation.yield()
        finished.continuation.finish()
    }
    do {
        try process.run()
    } catch {
        return "fork/exec \(executable): no such file or directory"
    }
    for await _ in finished.stream { break }
    process.waitUntilExit()
    switch process.terminationReason {
    case .exit:
        return process.terminationStatus == 0 ? nil : "exit status \(process.terminationStatus)"
    case .uncaughtSignal:
        return "signal: \(goSignalName(process.terminationStatus))"
    @unknown default:
        return "exit status \(process.terminationStatus)"
    }
}

/// Go's syscall.Signal.String() for the common signals.
func goSignalName(_ number: Int32) -> String {
    switch number {
    case SIGHUP: "hangup"
    case SIGINT: "interrupt"
    case SIGQUIT: "quit"
    case SIGABRT: "aborted"
    case SIGKILL: "killed"
    case SIGSEGV: "segmentation fault"
    case SIGPIPE: "broken pipe"
    case SIGALRM: "alarm clock"
    case SIGTERM: "terminated"
    case SIGUSR1: "user defined signal 1"
    case SIGUSR2: "user defined signal 2"
    default: "signal \(number)"
    }
}

// MARK: elect

func runElect(_ inv: Invocation) async {
    let args = inv.args
    if args.count != 1 && args.count != 2 {
        exitWithError(ExitCode.badArgs, "elect takes one election name argument and an optional proposal argument")
    }
    let context = makeContext(inv)
    let listen = inv.bool("listen")
    if args.count == 1 && !listen { exitWithError(ExitCode.badArgs, "no proposal argument but -l not set") }
    if args.count == 2 && listen { exitWithError(ExitCode.badArgs, "proposal given but -l is set") }
    let printer = context.printer
    await withSession(context, ttl: 60) { session in
        let election = Election(session: session, name: args[0])
        let interrupts = Interrupts.install()
        if args.count == 1 {
            let outcome = try await untilInterrupted(interrupts) {
                await election.observe { response in
                    printer.get(response)
                    flushOut()
                }
            }
            if case .interrupted = outcome { return }
            throw ConcurrencyError(text: "elect: observer lost")
        }
        if case .interrupted = try await untilInterrupted(interrupts, { try await election.campaign(args[1]) }) {
            try? await election.resign()
            throw ContextCanceled()
        }
        let response = try await session.kv.range(.single(election.key))
        printer.get(response)
        flushOut()
        if try await signalOrSessionEnd(interrupts, session) {
            try await election.resign()
            return
        }
        throw ConcurrencyError(text: "elect: session expired")
    }
}
