import EtcdAPI
import Foundation
import GRPCCore

// get, put, del, txn, compaction (ctlv3/command/{get,put,del,txn,compaction}_command.go).

/// One unary call with etcdctl's error handling: the retry interceptor's warning, then "Error: …".
func unary<R: Sendable>(
    _ context: Context, code: Int32 = ExitCode.error, timeout: Double?? = nil, endpoints: [String]? = nil,
    target: String? = nil, describe: @escaping (String) -> String = { $0 },
    _ body: @Sendable @escaping (GRPCClient<Transport>) async throws -> R
) async -> R {
    switch await attempt(context, timeout: timeout, endpoints: endpoints, target: target, body) {
    case .success(let response): return response
    case .failure(let message): exitWithError(code, describe(message.text))
    }
}

/// One unary call; a failure logs the retry interceptor's warning and gives the error as clientv3 returns it. As
/// clientv3's retry interceptor, a signed-in run whose token the server no longer knows signs in again and retries.
func attempt<R: Sendable>(
    _ context: Context, timeout: Double?? = nil, endpoints: [String]? = nil, target: String? = nil,
    _ body: @Sendable @escaping (GRPCClient<Transport>) async throws -> R
) async -> Result<R, Msg> {
    let timeout: Double? = timeout ?? context.commandTimeout
    let target = target ?? context.config.target
    var renewed = false
    for attemptNumber in 0..<2 {
        do {
            return .success(try await Call.withClient(context.config, endpoints: endpoints, timeout: timeout, body))
        } catch let error as RPCError {
            let failure = RPCFailure(error)
            logRetryWarning(target: target, error: failure.grpcText, attempt: attemptNumber)
            if !renewed && context.config.credentials != nil && shouldRefreshToken(failure.message) {
                renewed = true
                context.config.session.forget()
                do {
                    try await SignIn.ensure(context.config)
                } catch let signIn as SignInFailure {
                    logRetryWarning(target: target, error: signIn.message,
                                    message: "retrying of unary invoker failed to fetch new auth token", callerLine: 79)
                    return .failure(Msg(signIn.message))
                } catch {
                    return .failure(Msg("\(error)"))
                }
                continue
            }
            return .failure(Msg(failure.text))
        } catch let failure as RPCFailure {
            logRetryWarning(target: target, error: failure.grpcText, attempt: attemptNumber)
            return .failure(Msg(failure.code == .deadlineExceeded ? "context deadline exceeded" : failure.text))
        } catch {
            return .failure(Msg("\(error)"))
        }
    }
    preconditionFailure("the loop returns on its second attempt")
}

/// clientv3's shouldRefreshToken: the server forgot the token, or it predates a change of the auth store.
func shouldRefreshToken(_ message: String) -> Bool {
    ["etcdserver: invalid auth token", "etcdserver: revision of auth store is old", "etcdserver: user name is empty"]
        .contains(message)
}

/// clientv3.New signs in before the command does anything else (txn reads its input after that).
func signInBeforeInput(_ context: Context) async {
    guard context.config.credentials != nil else { return }
    do {
        try await SignIn.ensure(context.config)
    } catch let failure as SignInFailure {
        exitWithError(ExitCode.badConnection, failure.message)
    } catch {}
}

/// clientv3.GetPrefixRangeEnd.
func prefixRangeEnd(_ key: Data) -> Data {
    var end = Array(key)
    while let last = end.last {
        if last < 0xFF {
            end[end.count - 1] = last + 1
            return Data(end)
        }
        end.removeLast()
    }
    return Data([0])
}

// MARK: get

let getFlags: [FlagSpec] = [
    .string("consistency", nil, "l", "Linearizable(l) or Serializable(s)"),
    .string("order", nil, "", "Order of results; ASCEND or DESCEND (ASCEND by default)"),
    .string("sort-by", nil, "", "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION"),
    .int("limit", 0, "Maximum number of results"),
    .bool("prefix", nil, false, "Get keys with matching prefix"),
    .bool("from-key", nil, false, "Get keys that are greater than or equal to the given key using byte compare"),
    .int("rev", 0, "Specify the kv revision"),
    .bool("keys-only", nil, false, "Get only the keys"),
    // etcdctl 3.5's flag; hidden from the usage text so that it stays etcdctl 3.4's.
    FlagSpec(name: "count-only", kind: .bool, defValue: "false", usage: "Get only the count", hidden: true),
    .bool("print-value-only", nil, false, #"Only write values when using the "simple" output format"#),
]

func getRequest(_ inv: Invocation) -> Etcdserverpb_RangeRequest {
    let args = inv.args
    if args.isEmpty {
        exitWithError(ExitCode.badArgs, "get command needs one argument as key and an optional argument as range_end")
    }
    let prefix = inv.bool("prefix"), fromKey = inv.bool("from-key")
    if prefix && fromKey {
        exitWithError(ExitCode.badArgs, "`--prefix` and `--from-key` cannot be set at the same time, choose one")
    }
    var request = Etcdserverpb_RangeRequest()
    switch inv.string("consistency") {
    case "s": request.serializable = true
    case "l": break
    default: exitWithError(ExitCode.badFeature, "unknown consistency flag \(goQuote(inv.string("consistency")))")
    }
    request.key = Data(args[0].utf8)
    if args.count > 1 {
        if prefix || fromKey {
            exitWithError(ExitCode.badArgs, "too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
        }
        request.rangeEnd = Data(args[1].utf8)
    }
    request.limit = inv.int64("limit")
    if inv.int64("rev") > 0 { request.revision = inv.int64("rev") }
    var sortOrder: Etcdserverpb_RangeRequest.SortOrder = .none
    switch inv.string("order").uppercased() {
    case "ASCEND": sortOrder = .ascend
    case "DESCEND": sortOrder = .descend
    case "": break
    default: exitWithError(ExitCode.badFeature, "bad sort order \(inv.string("order"))")
    }
    var sortTarget: Etcdserverpb_RangeRequest.SortTarget = .key
    switch inv.string("sort-by").uppercased() {
    case "CREATE": sortTarget = .create
    case "KEY": sortTarget = .key
    case "MODIFY": sortTarget = .mod
    case "VALUE": sortTarget = .value
    case "VERSION": sortTarget = .version
    case "": break
    default: exitWithError(ExitCode.badFeature, "bad sort target \(inv.string("sort-by"))")
    }
    // clientv3.WithSort: sorting by key ascending is the server's order already, so none is sent.
    if sortTarget == .key && sortOrder == .ascend { sortOrder = .none }
    request.sortOrder = sortOrder
    request.sortTarget = sortTarget
    if prefix {
        if request.key.isEmpty {
            request.key = Data([0])
            request.rangeEnd = Data([0])
        } else {
            request.rangeEnd = prefixRangeEnd(request.key)
        }
    }
    if fromKey {
        if request.key.isEmpty { request.key = Data([0]) }
        request.rangeEnd = Data([0])
    }
    if inv.bool("keys-only") { request.keysOnly = true }
    if inv.bool("count-only") { request.countOnly = true }
    return request
}

func runGet(_ inv: Invocation) async {
    let request = getRequest(inv)
    if inv.bool("count-only") && inv.bool("keys-only") {
        exitWithError(ExitCode.badArgs, "`--keys-only` and `--count-only` cannot be set at the same time, choose one")
    }
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await Etcdserverpb_KV.Client(wrapping: client).range(request, options: .etcdctl)
    }
    var printer = context.printer
    // etcdctl 3.5: --count-only goes with the fields output only.
    if inv.bool("count-only") && printer.format != .fields {
        exitWithError(ExitCode.badArgs, "--count-only is only for `--write-out=fields`")
    }
    if inv.bool("print-value-only") {
        guard printer.format == .simple else {
            exitWithError(ExitCode.badArgs, "print-value-only is only for `--write-out=simple`")
        }
        printer.valueOnly = true
    }
    printer.get(response)
}

// MARK: put

let putFlags: [FlagSpec] = [
    .string("lease", nil, "0", "lease ID (in hexadecimal) to attach to the key"),
    .bool("prev-kv", nil, false, "return the previous key-value pair before modification"),
    .bool("ignore-value", nil, false, "updates the key using its current value"),
    .bool("ignore-lease", nil, false, "updates the key using its current lease"),
]

let putLong = """

Puts the given key into the store.

When <value> begins with '-', <value> is interpreted as a flag.
Insert '--' for workaround:

$ put <key> -- <value>
$ put -- <key> <value>

If <value> isn't given as a command line argument and '--ignore-value' is not specified,
this command tries to read the value from standard input.

If <lease> isn't given as a command line argument and '--ignore-lease' is not specified,
this command tries to read the value from standard input.

For example,
$ cat file | put <key>
will store the content of the file to <key>.

"""

/// strconv.ParseInt(s, 16, 64)'s error text, or the value.
func parseHexInt64(_ s: String) -> Result<Int64, Msg> {
    var body = Substring(s)
    var negative = false
    if body.first == "-" || body.first == "+" { negative = body.first == "-"; body = body.dropFirst() }
    if body.isEmpty || !body.allSatisfy({ $0.isHexDigit }) {
        return .failure("strconv.ParseInt: parsing \(goQuote(s)): invalid syntax")
    }
    guard let magnitude = UInt64(body, radix: 16),
          magnitude <= (negative ? UInt64(Int64.max) + 1 : UInt64(Int64.max)) else {
        return .failure("strconv.ParseInt: parsing \(goQuote(s)): value out of range")
    }
    return .success(negative ? Int64(bitPattern: 0 &- magnitude) : Int64(magnitude))
}

func parseHexUInt64(_ s: String) -> Result<UInt64, Msg> {
    if s.isEmpty || !s.allSatisfy({ $0.isHexDigit }) {
        return .failure("strconv.ParseUint: parsing \(goQuote(s)): invalid syntax")
    }
    guard let value = UInt64(s, radix: 16) else {
        return .failure("strconv.ParseUint: parsing \(goQuote(s)): value out of range")
    }
    return .success(value)
}

func putRequest(_ inv: Invocation, stdin: StdinReader) -> Etcdserverpb_PutRequest {
    let args = inv.args
    if args.isEmpty {
        exitWithError(ExitCode.badArgs, "put command needs 1 argument and input from stdin or 2 arguments")
    }
    let ignoreValue = inv.bool("ignore-value")
    if ignoreValue && args.count > 1 {
        exitWithError(ExitCode.badArgs, "put command needs only 1 argument when 'ignore-value' is set")
    }
    var request = Etcdserverpb_PutRequest()
    request.key = Data(args[0].utf8)
    if !ignoreValue {
        if args.count > 1 {
            request.value = Data(args[1].utf8)
        } else {
            let data = stdin.readAll()
            if data.isEmpty {
                exitWithError(ExitCode.badArgs, "put command needs 1 argument and input from stdin or 2 arguments")
            }
            request.value = data
        }
    }
    switch parseHexInt64(inv.string("lease")) {
    case .success(let id): request.lease = id
    case .failure(let message): exitWithError(ExitCode.badArgs, "bad lease ID (\(message)), expecting ID in Hex")
    }
    request.prevKv = inv.bool("prev-kv")
    request.ignoreValue = ignoreValue
    request.ignoreLease = inv.bool("ignore-lease")
    return request
}

func runPut(_ inv: Invocation) async {
    let request = putRequest(inv, stdin: StdinReader.shared)
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await Etcdserverpb_KV.Client(wrapping: client).put(request, options: .etcdctl)
    }
    context.printer.put(response)
}

// MARK: del

let delFlags: [FlagSpec] = [
    .bool("prefix", nil, false, "delete keys with matching prefix"),
    .bool("prev-kv", nil, false, "return deleted key-value pairs"),
    .bool("from-key", nil, false, "delete keys that are greater than or equal to the given key using byte compare"),
]

func delRequest(_ inv: Invocation) -> Etcdserverpb_DeleteRangeRequest {
    let args = inv.args
    if args.isEmpty || args.count > 2 {
        exitWithError(ExitCode.badArgs, "del command needs one argument as key and an optional argument as range_end")
    }
    let prefix = inv.bool("prefix"), fromKey = inv.bool("from-key")
    if prefix && fromKey {
        exitWithError(ExitCode.badArgs, "`--prefix` and `--from-key` cannot be set at the same time, choose one")
    }
    var request = Etcdserverpb_DeleteRangeRequest()
    request.key = Data(args[0].utf8)
    if args.count > 1 {
        if prefix || fromKey {
            exitWithError(ExitCode.badArgs, "too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
        }
        request.rangeEnd = Data(args[1].utf8)
    }
    if prefix {
        if request.key.isEmpty {
            request.key = Data([0])
            request.rangeEnd = Data([0])
        } else {
            request.rangeEnd = prefixRangeEnd(request.key)
        }
    }
    request.prevKv = inv.bool("prev-kv")
    if fromKey {
        if request.key.isEmpty { request.key = Data([0]) }
        request.rangeEnd = Data([0])
    }
    return request
}

func runDel(_ inv: Invocation) async {
    let request = delRequest(inv)
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await Etcdserverpb_KV.Client(wrapping: client).deleteRange(request, options: .etcdctl)
    }
    context.printer.del(response)
}

// MARK: compaction

func runCompaction(_ inv: Invocation) async {
    if inv.args.count != 1 {
        exitWithError(ExitCode.badArgs, "compaction command needs 1 argument")
    }
    guard let revision = Int64(inv.args[0]) else {
        exitWithError(ExitCode.error, "strconv.ParseInt: parsing \(goQuote(inv.args[0])): invalid syntax")
    }
    var request = Etcdserverpb_CompactionRequest()
    request.revision = revision
    request.physical = inv.bool("physical")
    let context = makeContext(inv)
    _ = await unary(context) { [request] client in
        try await Etcdserverpb_KV.Client(wrapping: client).compact(request, options: .etcdctl)
    }
    out("compacted revision \(revision)\n")
}

// MARK: txn

/// Standard input read as Go's bufio.Reader does (line by line, so interactive prompts interleave).
final class StdinReader: @unchecked Sendable {
    static let shared = StdinReader()
    private var buffer: [UInt8] = []
    private var eof = false

    private func fill() -> Bool {
        if eof { return false }
        var chunk = [UInt8](repeating: 0, count: 4096)
        let n = read(0, &chunk, chunk.count)
        if n <= 0 { eof = true; return false }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    /// The next line with its newline, or nil (and the partial line dropped) at end of input: ReadString('\n').
    func readLine() -> String? {
        while true {
            if let index = buffer.firstIndex(of: 0x0A) {
                let line = Array(buffer[...index])
                buffer.removeSubrange(...index)
                return String(decoding: line, as: UTF8.self)
            }
            if !fill() { return nil }
        }
    }

    /// One byte: buffered input first, then a single byte from the descriptor (so that what a password
    /// prompt does not consume stays for later readers, as with Go's unbuffered os.Stdin reads).
    private func nextByte() -> UInt8? {
        if !buffer.isEmpty { return buffer.removeFirst() }
        if eof { return nil }
        var byte: UInt8 = 0
        if read(0, &byte, 1) != 1 { eof = true; return nil }
        return byte
    }

    private func unread(_ byte: UInt8) { buffer.insert(byte, at: 0) }

    /// speakeasy's readline: bytes up to a newline (not included) or the end of input.
    func readLineBytewise() -> String {
        var line: [UInt8] = []
        while let byte = nextByte(), byte != 0x0A { line.append(byte) }
        return String(decoding: line, as: UTF8.self)
    }

    /// fmt.Scanf("%s") on os.Stdin: leading blanks skipped, "" when a newline or the end comes first, else
    /// the bytes up to the next white space (which is consumed too).
    func scanWord() -> String {
        func isSpace(_ b: UInt8) -> Bool { b == 0x20 || (0x09...0x0D).contains(b) }
        while true {
            guard let byte = nextByte() else { return "" }
            if byte == 0x0D, let next = nextByte() {
                if next == 0x0A { return "" }
                unread(next)
                continue
            }
            if byte == 0x0A { return "" }
            if !isSpace(byte) { unread(byte); break }
        }
        var word: [UInt8] = []
        while let byte = nextByte(), !isSpace(byte) { word.append(byte) }
        return String(decoding: word, as: UTF8.self)
    }

    func readAll() -> Data {
        while fill() {}
        defer { buffer = [] }
        return Data(buffer)
    }
}

/// etcdctl's argify: splits a line into words, with "double" and 'single' quoted words.
func argify(_ s: String) -> [String] {
    let pattern = #""(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?"#
    guard let regex = try? NSRegularExpression(pattern: pattern) else { return [] }
    let ns = s as NSString
    var args = regex.matches(in: s, range: NSRange(location: 0, length: ns.length)).map { ns.substring(with: $0.range) }
    let count = args.count
    for i in args.indices where !args[i].isEmpty {
        if args[i].hasPrefix("'") {
            // etcdctl slices with len(args) (sic) rather than the word's length.
            let bytes = Array(args[i].utf8)
            let end = count - 1
            if end >= 1 && end <= bytes.count {
                args[i] = String(decoding: bytes[1..<end], as: UTF8.self)
            } else {
                args[i] = String(args[i].dropFirst().dropLast())
            }
        } else if args[i].hasPrefix("\"") {
            if let unquoted = goUnquote(args[i]) {
                args[i] = unquoted
            } else {
                exitWithError(ExitCode.invalidInput, "unexpected EOF")
            }
        }
    }
    return args
}

/// strconv.Unquote of a double-quoted Go string literal.
func goUnquote(_ s: String) -> String? {
    guard s.count >= 2, s.hasPrefix("\""), s.hasSuffix("\"") else { return nil }
    var out: [UInt8] = []
    let bytes = Array(s.utf8.dropFirst().dropLast())
    var i = 0
    while i < bytes.count {
        let b = bytes[i]
        if b == 0x22 { return nil }
        if b != 0x5C { out.append(b); i += 1; continue }
        i += 1
        guard i < bytes.count else { return nil }
        let c = bytes[i]
        i += 1
        switch c {
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "a"): out.append(0x07)
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "v"): out.append(0x0B)
        case UInt8(ascii: "\\"): out.append(0x5C)
        case UInt8(ascii: "\""): out.append(0x22)
        case UInt8(ascii: "'"): out.append(0x27)
        case UInt8(ascii: "x"):
            guard i + 2 <= bytes.count, let v = UInt8(String(decoding: bytes[i..<(i + 2)], as: UTF8.self), radix: 16) else { return nil }
            out.append(v)
            i += 2
        case UInt8(ascii: "u"), UInt8(ascii: "U"):
            let n = c == UInt8(ascii: "u") ? 4 : 8
            guard i + n <= bytes.count, let v = UInt32(String(decoding: bytes[i..<(i + n)], as: UTF8.self), radix: 16),
                  let scalar = Unicode.Scalar(v) else { return nil }
            out.append(contentsOf: Array(String(scalar).utf8))
            i += n
        default: return nil
        }
    }
    return String(decoding: out, as: UTF8.self)
}

/// fmt.Sscanf(s, "%q) %s %q", &key, &op, &val): how many of the three were scanned, and the values.
func scanCompare(_ s: String) -> (Int, String, String, String, String?) {
    var rest = Substring(s)
    func scanQuoted() -> String? {
        while rest.first == " " || rest.first == "\t" { rest = rest.dropFirst() }
        guard let first = rest.first else { return nil }
        if first == "`" {
            guard let end = rest.dropFirst().firstIndex(of: "`") else { return nil }
            let value = String(rest[rest.index(after: rest.startIndex)..<end])
            rest = rest[rest.index(after: end)...]
            return value
        }
        guard first == "\"" else { return nil }
        var index = rest.index(after: rest.startIndex)
        while index < rest.endIndex {
            if rest[index] == "\\" {
                index = rest.index(after: index)
                if index < rest.endIndex { index = rest.index(after: index) }
                continue
            }
            if rest[index] == "\"" {
                let literal = String(rest[rest.startIndex...index])
                rest = rest[rest.index(after: index)...]
                return goUnquote(literal)
            }
            index = rest.index(after: index)
        }
        return nil
    }
    guard let key = scanQuoted() else { return (0, "", "", "", "bad quoted string") }
    guard rest.first == ")" else { return (1, key, "", "", "input does not match format") }
    rest = rest.dropFirst()
    while rest.first == " " || rest.first == "\t" { rest = rest.dropFirst() }
    let op = String(rest.prefix { $0 != " " && $0 != "\t" && $0 != "\n" })
    rest = rest.dropFirst(op.count)
    if op.isEmpty { return (1, key, "", "", "unexpected EOF") }
    guard let value = scanQuoted() else { return (2, key, op, "", "bad quoted string") }
    return (3, key, op, value, nil)
}

func parseCompare(_ line: String) -> Result<Etcdserverpb_Compare, Msg> {
    guard let paren = line.firstIndex(of: "(") else {
        return .failure("malformed comparison: \(line)")
    }
    let target = String(line[..<paren])
    let (n, key, op, value, scanError) = scanCompare(String(line[line.index(after: paren)...]))
    if n != 3 {
        return .failure("malformed comparison: \(line); got \(target)(\(goQuote(key))) \(op) \(goQuote(value))")
    }
    if let scanError { return .failure("malformed comparison: \(line) (\(scanError))") }
    var compare = Etcdserverpb_Compare()
    compare.key = Data(key.utf8)
    switch op {
    case "=", "==": compare.result = .equal
    case "!=": compare.result = .notEqual
    case "<": compare.result = .less
    case ">": compare.result = .greater
    default: return .failure("malformed comparison: \(line) (unknown result op \(op))")
    }
    switch target {
    case "ver", "version", "c", "create", "m", "mod":
        guard let v = Int64(value) else { return .failure("invalid txn compare request: \(line)") }
        switch target {
        case "ver", "version": compare.target = .version; compare.version = v
        case "c", "create": compare.target = .create; compare.createRevision = v
        default: compare.target = .mod; compare.modRevision = v
        }
    case "val", "value":
        compare.target = .value
        compare.value = Data(value.utf8)
    default:
        return .failure("malformed comparison: \(line) (unknown target \(target))")
    }
    return .success(compare)
}

/// A txn request line (put/get/del with their flags), parsed as etcdctl does with its own commands.
func parseRequestOp(_ line: String) -> Result<Etcdserverpb_RequestOp, Msg> {
    let args = argify(line)
    if args.count < 2 { return .failure("invalid txn compare request: \(line)") }
    let invalid = Result<Etcdserverpb_RequestOp, Msg>.failure("invalid txn request: \(line)")
    let root = CommandSpec("", "")
    let put = CommandSpec("put", "", flags: putFlags, run: { _ in })
    let get = CommandSpec("get", "", flags: getFlags.filter { $0.name != "count-only" }, run: { _ in })
    let del = CommandSpec("del", "", flags: delFlags, run: { _ in })
    root.add(put, get, del)
    guard case .run(let inv) = Parser.parse(args, root: root) else { return invalid }
    var op = Etcdserverpb_RequestOp()
    switch inv.command.name {
    case "put": op.requestPut = putRequest(inv, stdin: StdinReader.shared)
    case "get": op.requestRange = getRequest(inv)
    default: op.requestDeleteRange = delRequest(inv)
    }
    return .success(op)
}

func runTxn(_ inv: Invocation) async {
    if !inv.args.isEmpty {
        exitWithError(ExitCode.badArgs, "txn command does not accept argument")
    }
    let context = makeContext(inv)
    await signInBeforeInput(context)
    let interactive = inv.bool("interactive")
    let reader = StdinReader.shared
    func prompt(_ s: String) {
        if interactive {
            out(s + "\n")
            flushOut()
        }
    }
    func readLines() -> [String] {
        var lines: [String] = []
        while true {
            guard let line = reader.readLine() else { exitWithError(ExitCode.invalidInput, "EOF") }
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { break }
            lines.append(trimmed)
        }
        return lines
    }
    var request = Etcdserverpb_TxnRequest()
    prompt("compares:")
    for line in readLines() {
        switch parseCompare(line) {
        case .success(let compare): request.compare.append(compare)
        case .failure(let message): exitWithError(ExitCode.invalidInput, message)
        }
    }
    for (label, isSuccess) in [("success requests (get, put, del):", true), ("failure requests (get, put, del):", false)] {
        prompt(label)
        for line in readLines() {
            switch parseRequestOp(line) {
            case .success(let op):
                if isSuccess { request.success.append(op) } else { request.failure.append(op) }
            case .failure(let message): exitWithError(ExitCode.invalidInput, message)
            }
        }
    }
    let finalRequest = request
    let response = await unary(context, timeout: .some(nil)) { client in
        try await Etcdserverpb_KV.Client(wrapping: client).txn(finalRequest, options: .etcdctl)
    }
    context.printer.txn(response)
}
