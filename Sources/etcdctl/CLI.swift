import Foundation

// A command line parser that behaves as etcdctl's (cobra + pflag): the same command tree, prefix matching of
// command names, interspersed flags, `--`, the same error texts, and the same usage text (etcdctl's own template,
// laid out by Go's text/tabwriter).

enum FlagKind {
    case bool, string, int64, uint64, duration, stringSlice
}

struct FlagSpec {
    var name: String
    var shorthand: String? = nil
    var kind: FlagKind
    var defValue: String
    var usage: String
    /// Left out of the usage text (cobra's hidden flags).
    var hidden = false

    static func bool(_ name: String, _ shorthand: String? = nil, _ def: Bool = false, _ usage: String) -> FlagSpec {
        FlagSpec(name: name, shorthand: shorthand, kind: .bool, defValue: def ? "true" : "false", usage: usage)
    }
    static func string(_ name: String, _ shorthand: String? = nil, _ def: String = "", _ usage: String) -> FlagSpec {
        FlagSpec(name: name, shorthand: shorthand, kind: .string, defValue: def, usage: usage)
    }
    static func int(_ name: String, _ def: Int64 = 0, _ usage: String) -> FlagSpec {
        FlagSpec(name: name, kind: .int64, defValue: String(def), usage: usage)
    }
    static func uint(_ name: String, _ def: UInt64 = 0, _ usage: String) -> FlagSpec {
        FlagSpec(name: name, kind: .uint64, defValue: String(def), usage: usage)
    }
    static func duration(_ name: String, _ def: String, _ usage: String) -> FlagSpec {
        FlagSpec(name: name, kind: .duration, defValue: def, usage: usage)
    }

    /// pflag's `Value.Type()`.
    var typeName: String {
        switch kind {
        case .bool: "bool"
        case .string: "string"
        case .int64: "int64"
        case .uint64: "uint64"
        case .duration: "duration"
        case .stringSlice: "stringSlice"
        }
    }
}

/// A node of etcdctl's command tree.
final class CommandSpec {
    let use: String
    let short: String
    var long: String = ""
    var flags: [FlagSpec] = []
    /// Flags inherited by subcommands (cobra's persistent flags).
    var persistentFlags: [FlagSpec] = []
    var run: ((Invocation) async throws -> Void)?
    /// cobra's ValidArgsFunction: the candidates for a positional argument, given the arguments before it.
    var completeArguments: (([String], String) -> ([String], CompletionDirective))?
    /// cobra's DisableFlagsInUseLine, inverted.
    var flagsInUseLine = true
    private(set) var children: [CommandSpec] = []
    weak var parent: CommandSpec?

    init(_ use: String, _ short: String, long: String = "", flags: [FlagSpec] = [], persistent: [FlagSpec] = [],
         run: ((Invocation) async throws -> Void)? = nil) {
        self.use = use
        self.short = short
        self.long = long
        self.flags = flags
        self.persistentFlags = persistent
        self.run = run
    }

    func add(_ commands: CommandSpec...) {
        for command in commands {
            command.parent = self
            children.append(command)
        }
    }

    var name: String { String(use.split(separator: " ").first ?? "") }
    var sortedChildren: [CommandSpec] { children.sorted { $0.name < $1.name } }
    var path: String { parent.map { "\($0.path) \(name)" } ?? name }
    var isRunnable: Bool { run != nil }

    /// Local flags: own flags, own persistent flags, and `--help`.
    var localFlags: [FlagSpec] {
        var all = flags + persistentFlags
        all.append(.bool("help", "h", false, "help for \(name)"))
        return all.sorted { $0.name < $1.name }
    }

    /// Persistent flags of the ancestors.
    var inheritedFlags: [FlagSpec] {
        var all: [FlagSpec] = []
        var node = parent
        while let current = node {
            for flag in current.persistentFlags where !all.contains(where: { $0.name == flag.name }) {
                all.append(flag)
            }
            node = current.parent
        }
        let local = Set(localFlags.map(\.name))
        return all.filter { !local.contains($0.name) }.sorted { $0.name < $1.name }
    }

    var allFlags: [FlagSpec] { localFlags + inheritedFlags }

    func child(named typed: String) -> CommandSpec? {
        if let exact = children.first(where: { $0.name == typed }) { return exact }
        // cobra.EnablePrefixMatching: a unique prefix names a command.
        let matches = children.filter { $0.name.hasPrefix(typed) }
        return matches.count == 1 ? matches[0] : nil
    }

    var useLine: String {
        var line = parent.map { "\($0.path) \(use)" } ?? use
        if flagsInUseLine && !line.contains("[flags]") { line += " [flags]" }
        return line
    }

    /// etcdctl's usage text (ctlv3/help.go), as printed on stdout by `-h` and after flag errors.
    func usage() -> String {
        var text = "NAME:\n"
        let cmdName = parent == nil ? name : path.split(separator: " ").dropFirst().joined(separator: " ")
        text += "\t\(cmdName) - \(short)\n"
        text += "\nUSAGE:\n\t\(useLine)\n"
        if parent == nil {
            text += "\nVERSION:\n\t\(etcdctlVersion)\n"
        }
        if !children.isEmpty {
            text += "\nAPI VERSION:\n\t\(etcdctlAPIVersion)\n"
            text += "\n\nCOMMANDS:\n"
            for sub in allDescendants() where sub.isRunnable {
                let relative = sub.path.split(separator: " ").dropFirst(path.split(separator: " ").count)
                text += "\t\(relative.joined(separator: " "))\t\(sub.short)\n"
            }
        }
        if !long.isEmpty {
            text += "\nDESCRIPTION:\n"
            let trimmed = long.trimmingCharacters(in: CharacterSet(charactersIn: "\n\t "))
            for line in trimmed.split(separator: "\n", omittingEmptySubsequences: false) {
                text += "\t\(line)\n"
            }
        }
        text += "\nOPTIONS:\n" + Self.flagUsages(localFlags)
        let inherited = inheritedFlags
        if !inherited.isEmpty {
            text += "\nGLOBAL OPTIONS:\n" + Self.flagUsages(inherited)
        }
        text += "\n"
        return TabWriter.format(text)
    }

    private func allDescendants() -> [CommandSpec] {
        var result: [CommandSpec] = []
        for child in sortedChildren {
            result.append(child)
            result.append(contentsOf: child.allDescendants())
        }
        return result
    }

    static func flagUsages(_ flags: [FlagSpec]) -> String {
        var text = ""
        for flag in flags where !flag.hidden {
            var line = flag.shorthand.map { "  -\($0), --\(flag.name)" } ?? "      --\(flag.name)"
            let value: String
            switch flag.kind {
            case .string: value = "=" + goQuote(flag.defValue)
            default: value = "=" + flag.defValue
            }
            line += flag.kind == .bool ? "[\(value)]" : value
            text += line + "\t" + flag.usage + "\n"
        }
        return text
    }
}

/// Go's text/tabwriter with minwidth 0, tabwidth 8, padding 1, padchar '\t', no flags (as etcdctl's usage uses it).
enum TabWriter {
    static func format(_ text: String) -> String {
        var output = ""
        var block: [[String]] = []  // lines of the current block, as cells (the last cell is not tab-terminated)
        func flush() {
            output += render(block)
            block = []
        }
        let lines = text.components(separatedBy: "\n")
        for (index, line) in lines.enumerated() {
            let cells = line.components(separatedBy: "\t")
            if index == lines.count - 1 {
                // The text after the last newline (empty for our texts).
                block.append(cells)
                flush()
                output.removeLast()  // render adds a newline per line
                break
            }
            block.append(cells)
            if cells.count == 1 { flush() }
        }
        return output
    }

    private static func render(_ lines: [[String]]) -> String {
        var widths: [Int] = []
        var out = ""
        func writeLines(_ range: Range<Int>) {
            for i in range {
                let cells = lines[i]
                for (j, cell) in cells.enumerated() {
                    out += cell
                    if j < widths.count && j < cells.count - 1 {
                        let cellWidth = (widths[j] + 7) / 8 * 8
                        let n = cellWidth - cell.count
                        out += String(repeating: "\t", count: (n + 7) / 8)
                    }
                }
                out += "\n"
            }
        }
        func format(_ line0In: Int, _ line1: Int) {
            var line0 = line0In
            let column = widths.count
            var this = line0
            while this < line1 {
                if column >= lines[this].count - 1 { this += 1; continue }
                writeLines(line0..<this)
                line0 = this
                var width = 0
                while this < line1 {
                    let cells = lines[this]
                    if column >= cells.count - 1 { break }
                    width = max(width, cells[column].count + 1)
                    this += 1
                }
                widths.append(width)
                format(line0, this)
                widths.removeLast()
                line0 = this
            }
            writeLines(line0..<line1)
        }
        format(0, lines.count)
        return out
    }
}

/// Go's `%q` for a string (strconv.Quote): printable runes as they are, others escaped.
func goQuote(_ s: String) -> String {
    goQuote(bytes: Array(s.utf8))
}

func goQuote(bytes: [UInt8]) -> String {
    var out = "\""
    var i = 0
    while i < bytes.count {
        let b = bytes[i]
        if b < 0x80 {
            switch b {
            case 0x07: out += "\\a"
            case 0x08: out += "\\b"
            case 0x0C: out += "\\f"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0x0B: out += "\\v"
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0x20...0x7E: out += String(UnicodeScalar(b))
            default: out += String(format: "\\x%02x", b)
            }
            i += 1
            continue
        }
        // Decode one UTF-8 sequence; invalid bytes are \x escaped.
        var length = 0
        if b & 0xE0 == 0xC0 { length = 2 } else if b & 0xF0 == 0xE0 { length = 3 } else if b & 0xF8 == 0xF0 { length = 4 }
        if length > 0, i + length <= bytes.count,
           let scalar = String(bytes: bytes[i..<(i + length)], encoding: .utf8)?.unicodeScalars.first {
            if scalar.properties.generalCategory == .control || scalar.properties.generalCategory == .format
                || scalar.properties.generalCategory == .unassigned || scalar.properties.generalCategory == .lineSeparator
                || scalar.properties.generalCategory == .paragraphSeparator
                || (scalar.properties.generalCategory == .spaceSeparator && scalar.value != 0x20) {
                if scalar.value < 0x10000 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out += String(format: "\\U%08x", scalar.value)
                }
            } else {
                out += String(scalar)
            }
            i += length
        } else {
            out += String(format: "\\x%02x", b)
            i += 1
        }
    }
    return out + "\""
}

/// A parse of the command line, as cobra gives it to a command's Run.
struct Invocation {
    var command: CommandSpec
    var args: [String]
    /// The raw arguments after the command path (for watch's `--` handling, as etcdctl reads os.Args).
    var rawArgs: [String]
    var values: [String: String]
    var changed: Set<String>

    func string(_ name: String) -> String { values[name] ?? "" }
    func bool(_ name: String) -> Bool { values[name] == "true" }
    func int64(_ name: String) -> Int64 { Int64(values[name] ?? "0") ?? 0 }
    func uint64(_ name: String) -> UInt64 { UInt64(values[name] ?? "0") ?? 0 }
    func duration(_ name: String) -> Double { (try? parseGoDuration(values[name] ?? "0")) ?? 0 }
    func stringSlice(_ name: String) -> [String] {
        let raw = values[name] ?? ""
        if raw.hasPrefix("[") && raw.hasSuffix("]") {
            let inner = raw.dropFirst().dropLast()
            return inner.isEmpty ? [] : inner.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        }
        return []
    }
}

struct FlagError: Error {
    var message: String
}

struct GoDurationError: Error {
    var message: String
}

/// Go's time.ParseDuration; the result in seconds.
func parseGoDuration(_ text: String) throws -> Double {
    let invalid = GoDurationError(message: "time: invalid duration " + goQuote(text))
    var s = Substring(text)
    var negative = false
    if let first = s.first, first == "-" || first == "+" {
        negative = first == "-"
        s = s.dropFirst()
    }
    if s == "0" { return 0 }
    if s.isEmpty { throw invalid }
    var total = 0.0
    while !s.isEmpty {
        let numberPart = s.prefix { $0.isNumber || $0 == "." }
        guard !numberPart.isEmpty, numberPart != ".", let value = Double(numberPart) else { throw invalid }
        s = s.dropFirst(numberPart.count)
        let unitPart = s.prefix { !($0.isNumber || $0 == ".") }
        s = s.dropFirst(unitPart.count)
        let unit: Double
        switch unitPart {
        case "ns": unit = 1e-9
        case "us", "µs", "μs": unit = 1e-6
        case "ms": unit = 1e-3
        case "s": unit = 1
        case "m": unit = 60
        case "h": unit = 3600
        case "": throw GoDurationError(message: "time: missing unit in duration " + goQuote(text))
        default: throw GoDurationError(message: "time: unknown unit " + goQuote(String(unitPart)) + " in duration " + goQuote(text))
        }
        total += value * unit
    }
    return negative ? -total : total
}

/// Go's time.Duration.String().
func goDurationString(nanoseconds: Int64) -> String {
    if nanoseconds == 0 { return "0s" }
    var u = UInt64(nanoseconds.magnitude)
    let negative = nanoseconds < 0
    var out: String
    if u < 1_000_000_000 {
        // Sub-second: ns, µs or ms with a fraction.
        let (unit, scale): (String, UInt64) = u < 1000 ? ("ns", 1) : u < 1_000_000 ? ("µs", 1000) : ("ms", 1_000_000)
        out = fraction(u, scale) + unit
    } else {
        var parts = ""
        let seconds = fraction(u % 60_000_000_000, 1_000_000_000) + "s"
        u /= 60_000_000_000
        if u > 0 {
            parts = String(u % 60) + "m"
            u /= 60
            if u > 0 { parts = String(u) + "h" + parts }
        }
        out = parts + seconds
    }
    return negative ? "-" + out : out
}

private func fraction(_ value: UInt64, _ scale: UInt64) -> String {
    let whole = value / scale
    var rest = value % scale
    if rest == 0 { return String(whole) }
    var digits = ""
    var s = scale
    while rest > 0 {
        s /= 10
        digits += String(rest / s)
        rest %= s
    }
    return "\(whole).\(digits)"
}

enum ParseOutcome {
    case run(Invocation)
    case help(CommandSpec)
    /// cobra's Find error (unknown command): printed with "Run '... --help' for usage."
    case findError(CommandSpec, String)
    /// A flag error: "Error: ..." on stderr, the usage on stdout.
    case flagError(CommandSpec, String)
}

enum Parser {
    static func parse(_ arguments: [String], root: CommandSpec) -> ParseOutcome {
        let (command, remaining, unknown) = find(arguments, root: root)
        if let unknown {
            var message = "unknown command \(goQuote(unknown)) for \(goQuote(root.name))"
            let suggestions = suggest(unknown, root)
            if !suggestions.isEmpty {
                message += "\n\nDid you mean this?\n" + suggestions.map { "\t\($0)\n" }.joined()
            }
            return .findError(root, message)
        }

        switch parseFlags(remaining, command: command, helpIsFlag: false) {
        case .help: return .help(command)
        case .error(let message): return .flagError(command, message)
        case .parsed(let values, let changed, let positional):
            if !command.isRunnable {
                return .help(command)
            }
            return .run(Invocation(command: command, args: positional, rawArgs: remaining, values: values, changed: changed))
        }
    }

    enum FlagParse {
        case parsed(values: [String: String], changed: Set<String>, positional: [String])
        case help
        case error(String)
    }

    /// pflag's parse (interspersed) of `remaining` with `command`'s flags. `helpIsFlag`: `--help` is an ordinary
    /// bool flag (as cobra's completion parses it) instead of ending the parse.
    static func parseFlags(_ remaining: [String], command: CommandSpec, helpIsFlag: Bool) -> FlagParse {
        let flags = command.allFlags
        var values: [String: String] = [:]
        for flag in flags {
            values[flag.name] = flag.kind == .stringSlice ? flag.defValue : flag.defValue
        }
        var changed = Set<String>()
        var positional: [String] = []
        var index = 0
        func set(_ flag: FlagSpec, _ value: String, display: String) -> String? {
            switch flag.kind {
            case .bool:
                guard let parsed = parseGoBool(value) else {
                    return "invalid argument \(goQuote(value)) for \(goQuote(display)) flag: strconv.ParseBool: parsing \(goQuote(value)): invalid syntax"
                }
                values[flag.name] = parsed ? "true" : "false"
            case .int64:
                guard let parsed = Int64(value) else {
                    let reason = value.allSatisfy({ $0.isNumber || $0 == "-" || $0 == "+" }) && !value.isEmpty ? "value out of range" : "invalid syntax"
                    return "invalid argument \(goQuote(value)) for \(goQuote(display)) flag: strconv.ParseInt: parsing \(goQuote(value)): \(reason)"
                }
                values[flag.name] = String(parsed)
            case .uint64:
                guard let parsed = UInt64(value) else {
                    return "invalid argument \(goQuote(value)) for \(goQuote(display)) flag: strconv.ParseUint: parsing \(goQuote(value)): invalid syntax"
                }
                values[flag.name] = String(parsed)
            case .duration:
                do { _ = try parseGoDuration(value) } catch let error as GoDurationError {
                    return "invalid argument \(goQuote(value)) for \(goQuote(display)) flag: \(error.message)"
                } catch {}
                values[flag.name] = value
            case .string:
                values[flag.name] = value
            case .stringSlice:
                let items = value.isEmpty ? [] : value.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                if changed.contains(flag.name) {
                    let old = Invocation(command: command, args: [], rawArgs: [], values: values, changed: []).stringSlice(flag.name)
                    values[flag.name] = "[" + (old + items).joined(separator: ",") + "]"
                } else {
                    values[flag.name] = "[" + items.joined(separator: ",") + "]"
                }
            }
            changed.insert(flag.name)
            return nil
        }
        while index < remaining.count {
            let arg = remaining[index]
            index += 1
            if arg == "--" {
                positional.append(contentsOf: remaining[index...])
                break
            }
            if arg.hasPrefix("--") {
                let body = arg.dropFirst(2)
                let name = String(body.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0])
                let inlineValue: String? = body.contains("=") ? String(body.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[1]) : nil
                guard let flag = flags.first(where: { $0.name == name }) else {
                    if name == "help" { return .help }
                    return .error("unknown flag: --\(name)")
                }
                if flag.name == "help" && !helpIsFlag {
                    if let inlineValue, parseGoBool(inlineValue) == false { continue }
                    return .help
                }
                var value: String
                if let inlineValue {
                    value = inlineValue
                } else if flag.kind == .bool {
                    value = "true"
                } else if index < remaining.count {
                    value = remaining[index]
                    index += 1
                } else {
                    return .error("flag needs an argument: --\(name)")
                }
                if let error = set(flag, value, display: "--\(flag.name)") { return .error(error) }
            } else if arg.hasPrefix("-") && arg.count > 1 {
                var shorts = Substring(arg.dropFirst())
                while let c = shorts.first {
                    shorts = shorts.dropFirst()
                    guard let flag = flags.first(where: { $0.shorthand == String(c) }) else {
                        return .error("unknown shorthand flag: '\(c)' in -\(c)\(shorts)")
                    }
                    if flag.name == "help" && !helpIsFlag { return .help }
                    let display = "-\(c), --\(flag.name)"
                    var value: String
                    if shorts.first == "=" {
                        value = String(shorts.dropFirst())
                        shorts = ""
                    } else if flag.kind == .bool {
                        value = "true"
                    } else if !shorts.isEmpty {
                        value = String(shorts)
                        shorts = ""
                    } else if index < remaining.count {
                        value = remaining[index]
                        index += 1
                    } else {
                        return .error("flag needs an argument: '\(c)' in -\(c)")
                    }
                    if let error = set(flag, value, display: display) { return .error(error) }
                }
            } else {
                positional.append(arg)
            }
        }
        return .parsed(values: values, changed: changed, positional: positional)
    }

    /// cobra's Command.Find, as both running and completing use it: walks the command words (unique prefixes name
    /// commands too) and returns the command they name, the arguments left for it, and the first word at the root
    /// that names no command (cobra's legacyArgs error), if any.
    static func find(_ arguments: [String], root: CommandSpec) -> (command: CommandSpec, rest: [String], unknown: String?) {
        var command = root
        var rest = arguments
        while let (index, word) = firstCommandWord(rest, command: command) {
            guard let child = command.child(named: word) else {
                return (command, rest, command === root ? word : nil)
            }
            rest.remove(at: index)
            command = child
        }
        return (command, rest, nil)
    }

    /// cobra's stripFlags: the first argument that is not a flag or, as far as cobra can tell without parsing, a
    /// flag's value. A flag the command does not know counts as taking a value, as in cobra (pflag finds no
    /// NoOptDefVal for it), so `etcdctl --bogus get foo` names the command `foo`.
    private static func firstCommandWord(_ args: [String], command: CommandSpec) -> (Int, String)? {
        let flags = command.allFlags
        var index = 0
        while index < args.count {
            let arg = args[index]
            if arg == "--" { return nil }
            if arg.hasPrefix("--") && !arg.contains("=") {
                if flags.first(where: { $0.name == arg.dropFirst(2) })?.kind != .bool { index += 1 }
            } else if arg.hasPrefix("-") && !arg.contains("=") && arg.count == 2 {
                if flags.first(where: { $0.shorthand == String(arg.dropFirst()) })?.kind != .bool { index += 1 }
            } else if !arg.isEmpty && !arg.hasPrefix("-") {
                return (index, arg)
            }
            index += 1
        }
        return nil
    }

    private static func suggest(_ typed: String, _ root: CommandSpec) -> [String] {
        var result: [String] = []
        for child in root.children {
            let distance = levenshtein(typed.lowercased(), child.name.lowercased())
            if distance <= 2 || child.name.lowercased().hasPrefix(typed.lowercased()) {
                result.append(child.name)
            }
        }
        return result
    }


    private static func levenshtein(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(b.count, 1) where !b.isEmpty {
                let current = row[j]
                row[j] = a[i - 1] == b[j - 1] ? previous : min(previous, row[j], row[j - 1]) + 1
                previous = current
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }
}

/// strconv.ParseBool.
func parseGoBool(_ s: String) -> Bool? {
    switch s {
    case "1", "t", "T", "TRUE", "true", "True": true
    case "0", "f", "F", "FALSE", "false", "False": false
    default: nil
    }
}
