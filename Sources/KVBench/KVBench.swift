import ArgumentParser
import Foundation

/// etcd's `benchmark` tool (tools/benchmark in etcd's repository) over the v3 gRPC API, so that one binary measures
/// real etcd and kvserver with the same requests.
@main
struct KVBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kvbench",
        abstract: "Load an etcd v3 API server (etcd or kvserver) and report throughput and latency.",
        discussion: """
            Every run is bounded: by --total requests and by --timeout seconds. Results go to stdout (text, or \
            JSON with --json); a progress bar goes to stderr only when stderr is a terminal.
            """,
        subcommands: [Put.self, RangeCommand.self, TxnPut.self, WatchLatency.self, LeaseKeepalive.self]
    )
}

/// Options every workload shares: where to connect, how many clients over how many connections, the bounds.
struct CommonOptions: ParsableArguments {
    @Option(help: "Comma-separated client endpoints (host:port or http://host:port); connections go round-robin.")
    var endpoints: String = "127.0.0.1:2379"

    @Option(help: "gRPC connections the clients are spread over.")
    var conns: Int = 1

    @Option(help: "Concurrent clients, each issuing one request at a time.")
    var clients: Int = 1

    @Option(name: .customLong("request-timeout"), help: "Seconds one request may take before it counts as an error.")
    var requestTimeoutSeconds: Double = 10

    @Option(name: .customLong("timeout"), help: "Seconds the whole run may take; requests not done by then count as errors.")
    var runTimeoutSeconds: Double = 600

    @Flag(help: "Print the result as one JSON object instead of text.")
    var json = false

    func validate() throws {
        guard conns >= 1 else { throw ValidationError("--conns must be at least 1") }
        guard clients >= 1 else { throw ValidationError("--clients must be at least 1") }
        guard requestTimeoutSeconds > 0, runTimeoutSeconds > 0 else {
            throw ValidationError("--request-timeout and --timeout must be positive")
        }
        _ = try parsedEndpoints()
    }

    func parsedEndpoints() throws -> [Endpoint] {
        let list = endpoints.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !list.isEmpty else { throw ValidationError("--endpoints is empty") }
        return try list.map { text in
            guard let endpoint = Endpoint(text) else { throw ValidationError("bad endpoint \(text) (want host:port)") }
            return endpoint
        }
    }

    var load: LoadSettings {
        get throws {
            LoadSettings(endpoints: try parsedEndpoints(), connectionCount: conns, clientCount: clients,
                         requestTimeoutSeconds: requestTimeoutSeconds, runTimeoutSeconds: runTimeoutSeconds)
        }
    }
}

/// How keys are made: etcd's benchmark writes fixed-size keys chosen from a key space, at random or in order.
struct KeyOptions: ParsableArguments {
    @Option(help: "Bytes per key (a decimal key number, zero-padded after --key-prefix).")
    var keySize: Int = 8

    @Option(help: "Bytes per value.")
    var valSize: Int = 8

    @Option(help: "Distinct keys written: key numbers are taken modulo this.")
    var keySpaceSize: Int = 1

    @Flag(help: "Key numbers in request order (0, 1, 2, …) instead of at random.")
    var sequentialKeys = false

    @Option(help: "Bytes every key starts with, so a range over the prefix finds exactly the benchmark's keys.")
    var keyPrefix: String = ""

    func validate() throws {
        guard keySize >= 1, valSize >= 0 else { throw ValidationError("--key-size must be ≥ 1 and --val-size ≥ 0") }
        guard keySpaceSize >= 1 else { throw ValidationError("--key-space-size must be at least 1") }
    }

    var keys: KeyMaker {
        KeyMaker(prefix: Array(keyPrefix.utf8), keySize: keySize, keySpaceSize: keySpaceSize, sequential: sequentialKeys)
    }
}

/// Prints a report as text or JSON.
func emit(_ report: BenchmarkReport, json: Bool) throws {
    if json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    } else {
        print(report.text, terminator: "")
    }
}
