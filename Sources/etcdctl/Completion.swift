import Foundation

// Shell completion: cobra's hidden `__complete` / `__completeNoDesc` commands over our command tree (the protocol
// every shell script speaks: one candidate a line, then `:<directive>`), and the `completion <shell>` scripts.

/// cobra's ShellCompDirective bits.
struct CompletionDirective: OptionSet {
    let rawValue: Int
    static let error = CompletionDirective(rawValue: 1)
    static let noSpace = CompletionDirective(rawValue: 2)
    static let noFileComp = CompletionDirective(rawValue: 4)
    static let filterFileExt = CompletionDirective(rawValue: 8)
    static let filterDirs = CompletionDirective(rawValue: 16)
    static let `default`: CompletionDirective = []

    /// The names cobra prints on stderr ("Completion ended with directive: ...").
    var names: String {
        let all: [(CompletionDirective, String)] = [
            (.error, "ShellCompDirectiveError"), (.noSpace, "ShellCompDirectiveNoSpace"),
            (.noFileComp, "ShellCompDirectiveNoFileComp"), (.filterFileExt, "ShellCompDirectiveFilterFileExt"),
            (.filterDirs, "ShellCompDirectiveFilterDirs"),
        ]
        let set = all.filter { contains($0.0) }.map(\.1)
        return set.isEmpty ? "ShellCompDirectiveDefault" : set.joined(separator: ", ")
    }
}

enum Completion {
    static let requestCommand = "__complete"
    static let noDescRequestCommand = "__completeNoDesc"

    /// Runs `__complete` (`withDescriptions`) or `__completeNoDesc` with the words after it and exits.
    static func run(_ words: [String], root: CommandSpec, withDescriptions: Bool) -> Never {
        let (candidates, directive, error) = complete(words, root: root)
        if let error {
            // cobra's CompErrorln goes through CompDebug, hence both tags.
            writeErr("[Debug] [Error] \(error)\n")
        }
        for candidate in candidates {
            var line = withDescriptions ? candidate : String(candidate.split(separator: "\t", omittingEmptySubsequences: false)[0])
            // A description with a newline would read as more candidates.
            line = String(line.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
            out(line.trimmingCharacters(in: .whitespaces) + "\n")
        }
        out(":\(directive.rawValue)\n")
        writeErr("Completion ended with directive: \(directive.names)\n")
        flushOut()
        exit(0)
    }

    /// cobra's getCompletions: the candidates for the last word, given the words before it.
    static func complete(_ words: [String], root: CommandSpec) -> ([String], CompletionDirective, String?) {
        var toComplete = words.last ?? ""
        let typed = Array(words.dropLast())
        guard let (command, found) = find(typed, root: root) else {
            return ([], .default, "Unable to find a command for arguments: [\(typed.joined(separator: " "))]")
        }
        var args = found

        // Completing a flag's value (`--flag=<partial>`, or the word after a flag that takes one)?
        var valueOf: FlagSpec?
        var flagFailure: String?
        var unsupportedFlag = false
        let flags = command.allFlags
        func lookup(_ name: String) -> FlagSpec? {
            name.count == 1 ? flags.first { $0.shorthand == name } : flags.first { $0.name == name }
        }
        var flagName = ""
        var withEqual = false
        if toComplete.hasPrefix("-") {
            if let equal = toComplete.firstIndex(of: "=") {
                let head = toComplete[..<equal]
                flagName = head.hasPrefix("--") ? String(head.dropFirst(2)) : String(head.suffix(1))
                toComplete = String(toComplete[toComplete.index(after: equal)...])
                withEqual = true
            }
        } else if let previous = args.last, isFlagArgument(previous), !previous.contains("=") {
            flagName = previous.hasPrefix("--") ? String(previous.dropFirst(2)) : String(previous.suffix(1))
            args.removeLast()
        }
        if !flagName.isEmpty {
            if let flag = lookup(flagName) {
                valueOf = flag
                if !withEqual && flag.kind == .bool {
                    // A bool flag takes no separate value: the word is an argument after all.
                    valueOf = nil
                    args = found
                }
            } else {
                flagFailure = "Subcommand '\(command.name)' does not support flag '\(flagName)'"
                unsupportedFlag = true
                args = found
                toComplete = words.last ?? ""
            }
        }

        // After `--` (already typed) no word is a flag; pflag counts the extra `--` as an argument then.
        var flagCompletion = true
        guard case .parsed(_, _, let withDash) = Parser.parseFlags(args + ["--"], command: command, helpIsFlag: true) else {
            return ([], .default, parseError(args, command))
        }
        let parsed = Parser.parseFlags(args, command: command, helpIsFlag: true)
        guard case .parsed(_, let changed, let positional) = parsed else {
            return ([], .default, parseError(args, command))
        }
        if withDash.count > positional.count { flagCompletion = false }
        if let failure = flagFailure, !(unsupportedFlag && !flagCompletion) {
            return ([], .default, failure)
        }
        if changed.contains("help") { return ([], .noFileComp, nil) }

        if valueOf == nil, toComplete.hasPrefix("-"), !toComplete.contains("="), flagCompletion {
            var candidates: [String] = []
            for flag in command.inheritedFlags + command.localFlags where !flag.hidden {
                guard !changed.contains(flag.name) || flag.kind == .stringSlice else { continue }
                if ("--" + flag.name).hasPrefix(toComplete) { candidates.append("--\(flag.name)\t\(flag.usage)") }
                if let short = flag.shorthand, ("-" + short).hasPrefix(toComplete) { candidates.append("-\(short)\t\(flag.usage)") }
            }
            return (candidates, .noFileComp, nil)
        }

        var candidates: [String] = []
        var directive = CompletionDirective.default
        if valueOf == nil {
            // Sub-commands only before any argument, and before any flag of this command's own.
            let localNonPersistent = Set((command.flags.map(\.name)) + ["help"])
            if positional.isEmpty && changed.isDisjoint(with: localNonPersistent) {
                for child in command.sortedChildren where child.isAvailable {
                    if child.name.hasPrefix(toComplete) { candidates.append("\(child.name)\t\(child.short)") }
                    directive = .noFileComp
                }
            }
        }
        if valueOf == nil || !flagCompletion {
            if let function = command.completeArguments {
                let (more, given) = function(positional, toComplete)
                candidates += more
                directive = given
            }
        }
        // No flag of etcdctl has a value completion: the shell's default (files) applies.
        return (candidates, directive, nil)
    }

    private static func parseError(_ args: [String], _ command: CommandSpec) -> String {
        guard case .error(let message) = Parser.parseFlags(args, command: command, helpIsFlag: true) else {
            return "Error while parsing flags from args [\(args.joined(separator: " "))]"
        }
        return "Error while parsing flags from args [\(args.joined(separator: " "))]: \(message)"
    }

    /// pflag's isFlagArg.
    private static func isFlagArgument(_ arg: String) -> Bool {
        let bytes = Array(arg.utf8)
        return (bytes.count >= 3 && bytes[1] == UInt8(ascii: "-")) || (bytes.count >= 2 && bytes[0] == UInt8(ascii: "-") && bytes[1] != UInt8(ascii: "-"))
    }

    /// ``Parser/find(_:root:)``; nil where cobra fails (a word at the root that names no command).
    static func find(_ words: [String], root: CommandSpec) -> (CommandSpec, [String])? {
        let found = Parser.find(words, root: root)
        return found.unknown == nil ? (found.command, found.rest) : nil
    }

    /// The `help` command's arguments: the commands under the one its words name.
    static func helpArguments(root: CommandSpec) -> ([String], String) -> ([String], CompletionDirective) {
        { [unowned root] args, toComplete in
            guard let (command, _) = find(args, root: root) else { return ([], .noFileComp) }
            let candidates = command.sortedChildren
                .filter { $0.isAvailable && $0.name.hasPrefix(toComplete) }
                .map { "\($0.name)\t\($0.short)" }
            return (candidates, .noFileComp)
        }
    }

    /// cobra's NoFileCompletions.
    static func noFiles(_ args: [String], _ toComplete: String) -> ([String], CompletionDirective) { ([], .noFileComp) }
}

extension CommandSpec {
    /// cobra's IsAvailableCommand (our tree has no hidden or deprecated commands): runnable, or with a runnable
    /// command under it.
    var isAvailable: Bool {
        isRunnable || children.contains { $0.isAvailable }
    }
}
