import Foundation
import XCTest

/// Shell completion: cobra's hidden `__complete` / `__completeNoDesc` commands answer as the real etcdctl's do,
/// byte for byte (no server needed), `completion`'s help and errors are etcdctl's, and our bash script, driven
/// the way bash drives a completion function, completes from them.
final class EtcdctlCompletionTests: XCTestCase {
    func run(real: Bool, _ args: [String], environment: [String: String] = [:]) throws -> Server.Output {
        guard let ours = Server.ourEtcdctl, FileManager.default.isExecutableFile(atPath: Server.realEtcdctlPath) else {
            XCTFail("needs our etcdctl and /usr/bin/etcdctl")
            throw CancellationError()
        }
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ETCDCTL_") && $0.key != "BASH_COMP_DEBUG_FILE" }
        env.merge(environment) { $1 }
        return try Server.run(real ? Server.realEtcdctlPath : ours.path, args, environment: env, stdin: nil, timeout: 20,
                              keepStdinOpen: false)
    }

    func assertSame(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let real = try run(real: true, args), ours = try run(real: false, args)
        XCTAssertEqual(ours.status, real.status, "\(args)", file: file, line: line)
        XCTAssertEqual(ours.stdout, real.stdout, "\(args)", file: file, line: line)
        XCTAssertEqual(ours.stderr, real.stderr, "\(args)", file: file, line: line)
    }

    func testCompleteMatchesEtcdctl() throws {
        let cases: [[String]] = [
            [""], ["g"], ["l"], ["zzz"], ["__c"], ["ch"],
            ["get", ""], ["get", "--pr"], ["get", "-"], ["get", "--"], ["get", "a", "-"], ["get", "-wj", "-"],
            ["get", "--rev", ""], ["get", "--rev="], ["get", "--prefix="], ["get", "--prefix", ""], ["get", "--", "-"],
            ["get", "--help", ""], ["get", "-h", ""], ["get", "--bogus", ""], ["get", "--bogus=1", "-"],
            ["get", "--endpoints=a", "--endp"], ["get", "--endpoints", "a", "--endp"], ["get", "--prefix", "--pr"],
            ["lease", ""], ["lease", "gr"], ["lease", "grant", ""], ["member", ""], ["member", "l"], ["snapshot", ""],
            ["user", ""], ["role", ""], ["alarm", ""], ["auth", ""], ["check", ""], ["endpoint", ""], ["endpoint", "-"],
            ["endpoint", "status", "--cl"], ["defrag", "-"], ["defrag", "--data-dir", ""], ["defrag", "--data-dir="],
            ["--endpoints=x", ""], ["--endpoints", "x", ""], ["--endpoints", ""], ["-w", ""], ["-w=j"], ["-"], ["--w"],
            ["--debug", "g"], ["-d", "x", "l"], ["zzz", ""], ["get", "-z", ""], ["get", "-x="], ["get", "--x="],
            ["help", ""], ["help", "lease", ""], ["help", "lease", "k"], ["help", "zzz", ""],
            ["completion", ""], ["completion", "b"], ["completion", "bash", ""], ["completion", "bash", "-"],
            ["completion", "zsh", "--no"], ["watch", "-"], ["txn", "-"], ["make-mirror", "--"], ["put", "k", ""],
        ]
        for words in cases {
            try assertSame(["__complete"] + words)
            try assertSame(["__completeNoDesc"] + words)
        }
    }

    func testCompletionCommandHelpAndErrors() throws {
        let cases: [[String]] = [
            ["completion"], ["completion", "foo"], ["completion", "-h"], ["completion", "--help"],
            ["completion", "bash", "-h"], ["completion", "zsh", "-h"], ["completion", "fish", "--help"],
            ["completion", "powershell", "-h"], ["help", "completion"], ["help", "completion", "zsh"],
            ["completion", "bash", "extra"], ["completion", "zsh", "x", "y"], ["completion", "fish", "--bogus"],
            ["completion", "powershell", "--no-descriptions=maybe"], ["completion", "bash", "--no-descriptions", "x"],
        ]
        for args in cases { try assertSame(args) }
    }

    /// Each script asks for the candidates with `__complete` (`__completeNoDesc` with --no-descriptions).
    func testScriptsCallComplete() throws {
        for shell in ["bash", "zsh", "fish", "powershell"] {
            let with = try run(real: false, ["completion", shell])
            XCTAssertEqual(with.status, 0, with.stderr)
            XCTAssertTrue(with.stdout.contains("__complete "), shell)
            XCTAssertFalse(with.stdout.contains("__completeNoDesc"), shell)
            let without = try run(real: false, ["completion", shell, "--no-descriptions"])
            XCTAssertEqual(without.status, 0, without.stderr)
            XCTAssertTrue(without.stdout.contains("__completeNoDesc "), shell)
        }
    }

    /// Sources our bash script and calls its function as bash's programmable completion does (COMP_WORDS,
    /// COMP_CWORD), with our etcdctl as the command word.
    func bashComplete(_ words: [String], extraFlags: [String] = []) throws -> (replies: [String], output: Server.Output) {
        guard FileManager.default.isExecutableFile(atPath: "/bin/bash") else {
            throw XCTSkip("bash is missing")
        }
        let ours = try XCTUnwrap(Server.ourEtcdctl)
        let quoted = ([ours.path] + words).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let script = """
            source <('\(ours.path)' completion bash \(extraFlags.joined(separator: " "))) || exit 3
            COMP_WORDS=(\(quoted.joined(separator: " ")))
            COMP_CWORD=\(words.count)
            COMP_LINE="${COMP_WORDS[*]}"
            COMP_POINT=${#COMP_LINE}
            _etcdctl_complete 2>/dev/null
            complete -p etcdctl >&2
            printf '%s\\n' "${COMPREPLY[@]}"
            """
        let output = try Server.run("/bin/bash", ["--norc", "--noprofile", "-c", script],
                                    environment: ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "COLUMNS": "80"],
                                    stdin: nil, timeout: 20, keepStdinOpen: false)
        XCTAssertEqual(output.status, 0, output.stderr)
        XCTAssertEqual(output.stderr, "complete -o default -F _etcdctl_complete etcdctl\n")
        return (output.stdout.split(separator: "\n", omittingEmptySubsequences: true).map(String.init), output)
    }

    func testBashCompletesFromComplete() throws {
        XCTAssertEqual(try bashComplete(["ge"]).replies, ["get"])
        XCTAssertEqual(try bashComplete(["lease", "gr"]).replies, ["grant"])
        XCTAssertEqual(try bashComplete(["get", "--pref"]).replies, ["--prefix"])
        XCTAssertEqual(try bashComplete(["completion", "p"], extraFlags: ["--no-descriptions"]).replies, ["powershell"])
        // Several candidates: listed with their descriptions.
        XCTAssertEqual(try bashComplete(["l"]).replies, ["lease  (Lease related commands)", "lock  (Acquires a named lock)"])
        XCTAssertEqual(try bashComplete(["l"], extraFlags: ["--no-descriptions"]).replies, ["lease", "lock"])
        // A longer common prefix is inserted first.
        XCTAssertEqual(try bashComplete(["get", "--keep"]).replies, ["--keepalive-time"])
        // Nothing to offer for a key: no candidates (bash then falls back to its default, files).
        XCTAssertEqual(try bashComplete(["get", ""]).replies, [])
    }
}
