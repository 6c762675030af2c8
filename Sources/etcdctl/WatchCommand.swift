import EtcdAPI
import Foundation
import GRPCCore

// watch (ctlv3/command/watch_command.go).

let watchFlags: [FlagSpec] = [
    .bool("interactive", "i", false, "Interactive mode"),
    .bool("prefix", nil, false, "Watch on a prefix if prefix is set"),
    .int("rev", 0, "Revision to start watching"),
    .bool("prev-kv", nil, false, "get the previous key-value pair before the event happens"),
]

struct WatchSpec: Sendable {
    var key: String
    var rangeEnd: String?
    var prefix: Bool
    var rev: Int64
    var prevKV: Bool
    var exec: [String]
}

func watchSpec(args: [String], prefix: Bool, rev: Int64, prevKV: Bool, exec: [String]) -> Result<WatchSpec, Msg> {
    if args.isEmpty { return .failure("bad number of arguments") }
    if args.count == 2 && prefix { return .failure("`range_end` and `--prefix` are mutually exclusive") }
    return .success(WatchSpec(key: args[0], rangeEnd: args.count == 2 ? args[1] : nil, prefix: prefix, rev: rev,
                              prevKV: prevKV, exec: exec))
}

func createRequest(_ spec: WatchSpec, id: Int64) -> Etcdserverpb_WatchRequest {
    var create = Etcdserverpb_WatchCreateRequest()
    create.key = Data(spec.key.utf8)
    if let rangeEnd = spec.rangeEnd { create.rangeEnd = Data(rangeEnd.utf8) }
    if spec.prefix {
        if create.key.isEmpty {
            create.key = Data([0])
            create.rangeEnd = Data([0])
        } else {
            create.rangeEnd = prefixRangeEnd(create.key)
        }
    }
    create.startRevision = spec.rev
    create.prevKv = spec.prevKV
    create.watchID = id
    var request = Etcdserverpb_WatchRequest()
    request.createRequest = create
    return request
}

/// Prints a watch response and runs the exec command per event, as printWatchCh does.
func handleWatchResponse(_ message: Etcdserverpb_WatchResponse, printer: Printer, exec: [String]) {
    if message.created && message.events.isEmpty && !message.canceled { return }
    if message.canceled {
        let reason = message.compactRevision > 0
            ? "etcdserver: mvcc: required revision has been compacted"
            : (message.cancelReason.isEmpty ? "<nil>" : message.cancelReason)
        writeErr("watch was canceled (\(reason))\n")
    }
    let progress = message.events.isEmpty && !message.canceled && !message.created && message.compactRevision == 0
    if progress {
        out("progress notify: \(message.header.revision)\n")
    }
    printer.watch(WatchEvent(header: message.header, events: message.events, compactRevision: message.compactRevision,
                             canceled: message.canceled, created: message.created))
    flushOut()
    guard !exec.isEmpty else { return }
    for event in message.events {
        let process = Process()
        let executable = exec[0]
        if executable.contains("/") {
            process.executableURL = URL(fileURLWithPath: executable)
        } else {
            let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
            let found = path.split(separator: ":").map { "\($0)/\(executable)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
            process.executableURL = URL(fileURLWithPath: found ?? executable)
        }
        process.arguments = Array(exec.dropFirst())
        var environment = ProcessInfo.processInfo.environment
        environment["ETCD_WATCH_REVISION"] = String(message.header.revision)
        environment["ETCD_WATCH_EVENT_TYPE"] = event.type == .delete ? "\"DELETE\"" : "\"PUT\""
        environment["ETCD_WATCH_KEY"] = goQuote(bytes: Array(event.kv.key))
        environment["ETCD_WATCH_VALUE"] = goQuote(bytes: Array(event.kv.value))
        process.environment = environment
        do {
            try process.run()
            process.waitUntilExit()
            if process.terminationStatus != 0 {
                writeErr("command \(goQuoteList(exec)) error (exit status \(process.terminationStatus))\n")
                exit(1)
            }
        } catch {
            writeErr("command \(goQuoteList(exec)) error (exec: \(goQuote(executable)): executable file not found in $PATH)\n")
            exit(1)
        }
    }
}

func goQuoteList(_ list: [String]) -> String {
    "[" + list.map(goQuote).joined(separator: " ") + "]"
}

func runWatch(_ inv: Invocation) async {
    let environment = ProcessInfo.processInfo.environment
    let envKey = environment["ETCDCTL_WATCH_KEY"] ?? "", envRange = environment["ETCDCTL_WATCH_RANGE_END"] ?? ""
    if envKey.isEmpty && !envRange.isEmpty {
        exitWithError(ExitCode.badArgs, "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END=\(goQuote(envRange))")
    }
    if inv.bool("interactive") {
        await runWatchInteractive(inv, envKey: envKey, envRange: envRange)
        return
    }
    // etcdctl reads os.Args after "watch" to find the exec command after "--".
    var rawArgs = Array(CommandLine.arguments.dropFirst())
    if let index = rawArgs.firstIndex(of: "watch") { rawArgs = Array(rawArgs[(index + 1)...]) }
    var watchArgs = inv.args
    let separator = rawArgs.firstIndex(of: "--")
    if let separator, separator == rawArgs.count - 1 {
        exitWithError(ExitCode.badArgs, "bad number of arguments (found separator --, but no commands)")
    }
    if separator == nil && rawArgs.isEmpty && envKey.isEmpty {
        exitWithError(ExitCode.badArgs, "bad number of arguments")
    }
    if separator == nil && !watchArgs.isEmpty && !envKey.isEmpty {
        exitWithError(ExitCode.badArgs, "bad number of arguments (found conflicting environment key)")
    }
    var exec: [String] = []
    if let separator { exec = Array(rawArgs[(separator + 1)...]) }
    if !envKey.isEmpty {
        watchArgs = [envKey] + (envRange.isEmpty ? [] : [envRange]) + watchArgs
    }
    if !exec.isEmpty, let end = watchArgs.lastIndex(of: exec[0]) {
        watchArgs = Array(watchArgs[..<end])
    }
    let context = makeContext(inv, extraEnvironment: ["watch-key", "watch-range-end"])
    let spec: WatchSpec
    switch watchSpec(args: watchArgs, prefix: inv.bool("prefix"), rev: inv.int64("rev"), prevKV: inv.bool("prev-kv"), exec: exec) {
    case .success(let s): spec = s
    case .failure(let message): exitWithError(ExitCode.badArgs, message)
    }
    let printer = context.printer
    do {
        try await Call.withClient(context.config, timeout: nil) { client in
            try await Etcdserverpb_Watch.Client(wrapping: client).watch(
                metadata: ["hasleader": "true"],
                requestProducer: { writer in
                    try await writer.write(createRequest(spec, id: 0))
                    // Keep the stream open until the response side ends.
                    while !Task.isCancelled { try await Task.sleep(for: .seconds(3600)) }
                },
                onResponse: { response in
                    for try await message in response.messages {
                        handleWatchResponse(message, printer: printer, exec: spec.exec)
                        if message.canceled { return }
                    }
                })
        }
    } catch {}
    exitWithError(ExitCode.interrupted, "watch is canceled by the server")
}

/// Lines from standard input as an async stream (read on a thread of its own).
func stdinLines() -> AsyncStream<String?> {
    AsyncStream { continuation in
        Thread.detachNewThread {
            while let line = StdinReader.shared.readLine() {
                continuation.yield(line)
            }
            continuation.yield(nil)
            continuation.finish()
        }
    }
}

func runWatchInteractive(_ inv: Invocation, envKey: String, envRange: String) async {
    let context = makeContext(inv, extraEnvironment: ["watch-key", "watch-range-end"])
    let printer = context.printer
    let execs = ExecTable()
    do {
        try await Call.withClient(context.config, timeout: nil) { client in
            try await Etcdserverpb_Watch.Client(wrapping: client).watch(
                metadata: ["hasleader": "true"],
                requestProducer: { writer in
                    var nextID: Int64 = 0
                    for await line in stdinLines() {
                        guard let rawLine = line else {
                            exitWithError(ExitCode.invalidInput, "Error reading watch request line: EOF")
                        }
                        let l = rawLine.hasSuffix("\n") ? String(rawLine.dropLast()) : rawLine
                        let args = argify(l)
                        if args.isEmpty {
                            writeErr("Invalid command: \(l) (watch and progress supported)\n")
                            continue
                        }
                        switch args[0] {
                        case "watch":
                            if args.count < 2 && envKey.isEmpty {
                                writeErr("Invalid command \(l) (command type or key is not provided)\n")
                                continue
                            }
                            var words = Array(args.dropFirst())
                            var exec: [String] = []
                            if let separator = words.firstIndex(of: "--") {
                                if separator == words.count - 1 {
                                    exitWithError(ExitCode.badArgs, "bad number of arguments (found separator --, but no commands)")
                                }
                                exec = Array(words[(separator + 1)...])
                                words = Array(words[..<separator])
                            }
                            let root = CommandSpec("", "")
                            let watch = CommandSpec("watch", "", flags: watchFlags, run: { _ in })
                            root.add(watch)
                            guard case .run(let parsed) = Parser.parse(["watch"] + words, root: root) else {
                                exitWithError(ExitCode.badArgs, "bad flags")
                            }
                            var watchArgs = parsed.args
                            if exec.isEmpty && watchArgs.isEmpty && envKey.isEmpty {
                                exitWithError(ExitCode.badArgs, "bad number of arguments")
                            }
                            if exec.isEmpty && !watchArgs.isEmpty && !envKey.isEmpty {
                                exitWithError(ExitCode.badArgs, "bad number of arguments (found conflicting environment key)")
                            }
                            if !envKey.isEmpty {
                                watchArgs = [envKey] + (envRange.isEmpty ? [] : [envRange]) + watchArgs
                            }
                            switch watchSpec(args: watchArgs, prefix: parsed.bool("prefix"), rev: parsed.int64("rev"),
                                             prevKV: parsed.bool("prev-kv"), exec: exec) {
                            case .success(let spec):
                                execs.set(nextID, spec.exec)
                                try await writer.write(createRequest(spec, id: nextID))
                                nextID += 1
                            case .failure(let message):
                                writeErr("Invalid command \(l) (\(message))\n")
                            }
                        case "progress":
                            var request = Etcdserverpb_WatchRequest()
                            request.progressRequest = Etcdserverpb_WatchProgressRequest()
                            try await writer.write(request)
                        default:
                            writeErr("Invalid command \(l) (only support watch)\n")
                        }
                    }
                },
                onResponse: { response in
                    for try await message in response.messages {
                        handleWatchResponse(message, printer: printer, exec: execs.get(message.watchID))
                    }
                })
        }
    } catch {}
    exitWithError(ExitCode.interrupted, "watch is canceled by the server")
}

final class ExecTable: @unchecked Sendable {
    private let lock = NSLock()
    private var table: [Int64: [String]] = [:]
    func set(_ id: Int64, _ exec: [String]) { lock.withLock { table[id] = exec } }
    func get(_ id: Int64) -> [String] { lock.withLock { table[id] ?? [] } }
}
