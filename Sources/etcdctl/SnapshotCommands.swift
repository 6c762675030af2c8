import Crypto
import Foundation
import RaftKV

// snapshot status and restore (ctlv3/command/snapshot_command.go, clientv3/snapshot/v3_snapshot.go). The file is
// what kvserver's Maintenance/Snapshot streams: its state database (SQLite, not bbolt) and a SHA-256 of it.

let snapshotRestoreFlags: [FlagSpec] = [
    .string("data-dir", nil, "", "Path to the data directory"),
    .string("wal-dir", nil, "", "Path to the WAL directory (use --data-dir if none given)"),
    .string("initial-cluster", nil, "default=http://localhost:2380", "Initial cluster configuration for restore bootstrap"),
    .string("initial-cluster-token", nil, "etcd-cluster", "Initial cluster token for the etcd cluster during restore bootstrap"),
    .string("initial-advertise-peer-urls", nil, "http://localhost:2380", "List of this member's peer URLs to advertise to the rest of the cluster"),
    .string("name", nil, "default", "Human-readable name for this member"),
    .bool("skip-hash-check", nil, false, "Ignore snapshot integrity hash value (required if copied from data directory)"),
]

/// v3_snapshot.go's hasChecksum: a file whose size is a multiple of 512 plus 32 ends with its SHA-256.
private func hasChecksum(_ size: Int) -> Bool { size % 512 == SHA256.byteCount }

private func readFile(_ path: String, stat: Bool) throws -> Data {
    guard FileManager.default.fileExists(atPath: path) else {
        throw ConcurrencyError(text: "\(stat ? "stat" : "open") \(path): no such file or directory")
    }
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ConcurrencyError(text: "open \(path): permission denied")
    }
    return data
}

// MARK: status

func runSnapshotStatus(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "snapshot status requires exactly one argument") }
    // initDisplayFromCmd: the flags only, no ETCDCTL_* variables.
    let printer = makePrinter(inv)
    let status: StateSnapshot.Status
    do {
        var data = try readFile(inv.args[0], stat: true)
        if hasChecksum(data.count) { data.removeLast(SHA256.byteCount) }
        let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("etcdctl-status-\(UUID().uuidString).db")
        defer { try? FileManager.default.removeItem(at: temporary) }
        try data.write(to: temporary)
        status = try StateSnapshot.status(ofDatabaseAt: temporary.path)
    } catch {
        exitWithError(ExitCode.error, concurrencyErrorText(error))
    }
    let row = [String(status.hash, radix: 16), String(status.revision), String(status.totalKeys),
               humanizeBytes(UInt64(max(0, status.totalSize)))]
    switch printer.format {
    case .simple: out(row.joined(separator: ", ") + "\n")
    case .json:
        out(GoJSON.object([("hash", .int(Int64(status.hash))), ("revision", .int(status.revision)),
                           ("totalKey", .int(Int64(status.totalKeys))), ("totalSize", .int(status.totalSize))]).text + "\n")
    case .fields:
        out("\"Hash\" : \(status.hash)\n\"Revision\" : \(status.revision)\n\"Keys\" : \(status.totalKeys)\n\"Size\" : \(status.totalSize)\n")
    case .table: out(Table.render(header: ["hash", "revision", "total keys", "total size"], rows: [row]))
    case .protobuf: printer.unsupportedFormat()
    }
}

// MARK: restore

/// zap's production JSON line (epoch-seconds timestamp), as v3_snapshot.go logs.
private func zapInfo(_ message: String, caller: String, _ fields: [(String, GoJSON)]) {
    let rest = GoJSON.object([("caller", .string(caller)), ("msg", .string(message))] + fields).text
    writeErr("{\"level\":\"info\",\"ts\":\(Date().timeIntervalSince1970)," + rest.dropFirst() + "\n")
}

/// types.NewURLs: each URL must have a scheme etcd knows and a host:port.
private func parsePeerURLs(_ list: [String]) throws -> [String] {
    var urls: [String] = []
    for text in list {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard let url = URL(string: trimmed), let scheme = url.scheme else {
            throw ConcurrencyError(text: "URL scheme must be http, https, unix, or unixs: \(trimmed)")
        }
        guard ["http", "https", "unix", "unixs"].contains(scheme) else {
            throw ConcurrencyError(text: "URL scheme must be http, https, unix, or unixs: \(trimmed)")
        }
        if url.port == nil && scheme != "unix" && scheme != "unixs" {
            throw ConcurrencyError(text: "URL address does not have the form \"host:port\": \(trimmed)")
        }
        if !url.path.isEmpty { throw ConcurrencyError(text: "URL must not contain a path: \(trimmed)") }
        urls.append(trimmed)
    }
    return urls.sorted()
}

/// types.NewURLsMap: `name=url,name=url,…`, a name may repeat for more URLs.
private func parseInitialCluster(_ text: String) throws -> [(name: String, urls: [String])] {
    var members: [(name: String, urls: [String])] = []
    for entry in text.split(separator: ",", omittingEmptySubsequences: true) {
        let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        let name = String(parts[0])
        let url = parts.count > 1 ? String(parts[1]) : ""
        let parsed = try parsePeerURLs([url])
        if let index = members.firstIndex(where: { $0.name == name }) {
            members[index].urls = (members[index].urls + parsed).sorted()
        } else {
            members.append((name, parsed))
        }
    }
    return members
}

func runSnapshotRestore(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "snapshot restore requires exactly one argument") }
    let name = inv.string("name")
    let dataDir = inv.string("data-dir").isEmpty ? name + ".etcd" : inv.string("data-dir")
    let walDir = inv.string("wal-dir").isEmpty ? dataDir + "/member/wal" : inv.string("wal-dir")
    let snapshotPath = inv.args[0]
    do {
        let peerURLs = try parsePeerURLs(inv.string("initial-advertise-peer-urls").split(separator: ",", omittingEmptySubsequences: false).map(String.init))
        let cluster = try parseInitialCluster(inv.string("initial-cluster"))
        // ServerConfig.VerifyBootstrap.
        guard let own = cluster.first(where: { $0.name == name }) else {
            throw ConcurrencyError(text: "couldn't find local name \(goQuote(name)) in the initial cluster configuration")
        }
        if own.urls != peerURLs {
            let missing = own.urls.filter { !peerURLs.contains($0) }.map { "\(name)=\($0)" }
            if !missing.isEmpty {
                throw ConcurrencyError(text: "--initial-cluster has \(missing.joined(separator: ",")) but missing from --initial-advertise-peer-urls=\(peerURLs.joined(separator: ",")) (resolved urls: \(goQuote(peerURLs.joined(separator: ","))) != \(goQuote(own.urls.joined(separator: ","))))")
            }
            throw ConcurrencyError(text: "--initial-advertise-peer-urls has \(peerURLs.joined(separator: ",")) but missing from --initial-cluster=\(own.urls.joined(separator: ","))")
        }
        let allURLs = cluster.flatMap(\.urls)
        if Set(allURLs).count != allURLs.count {
            // URLsMap.String(): by name.
            let text = cluster.sorted { $0.name < $1.name }.map { m in m.urls.map { "\(m.name)=\($0)" }.joined(separator: ",") }
            throw ConcurrencyError(text: "initial cluster \(text.joined(separator: ",")) has duplicate url")
        }
        if FileManager.default.fileExists(atPath: dataDir) { throw ConcurrencyError(text: "data-dir \(goQuote(dataDir)) exists") }
        if !inv.string("wal-dir").isEmpty && FileManager.default.fileExists(atPath: walDir) {
            throw ConcurrencyError(text: "wal-dir \(goQuote(walDir)) exists")
        }
        let snapDir = dataDir + "/member/snap"
        let logFields: [(String, GoJSON)] = [("path", .string(snapshotPath)), ("wal-dir", .string(walDir)),
                                             ("data-dir", .string(dataDir)), ("snap-dir", .string(snapDir))]
        zapInfo("restoring snapshot", caller: "snapshot/v3_snapshot.go:296", logFields)
        var data = try readFile(snapshotPath, stat: false)
        if data.count < SHA256.byteCount {
            throw ConcurrencyError(text: "seek \(snapshotPath): invalid argument")
        }
        let expected = Array(data.suffix(SHA256.byteCount))
        let hasHash = hasChecksum(data.count)
        if hasHash { data.removeLast(SHA256.byteCount) }
        // As etcd's saveDB: the copy is made first, then checked (a refused snapshot leaves the directory).
        let database = StateSnapshot.stateDatabase(inDataDirectory: URL(fileURLWithPath: dataDir))
        try FileManager.default.createDirectory(at: database.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: database)
        if !hasHash && !inv.bool("skip-hash-check") {
            throw ConcurrencyError(text: "snapshot missing hash but --skip-hash-check=false")
        }
        if hasHash && !inv.bool("skip-hash-check") {
            let actual = Array(SHA256.hash(data: data))
            if actual != expected {
                func goBytes(_ b: [UInt8]) -> String { "[" + b.map(String.init).joined(separator: " ") + "]" }
                throw ConcurrencyError(text: "expected sha256 \(goBytes(expected)), got \(goBytes(actual))")
            }
        }
        // kvserver started with the same --name, --initial-cluster, --initial-cluster-token and
        // --initial-advertise-peer-urls makes the new cluster's log around this state.
        try StateSnapshot.prepareForNewCluster(databaseAt: database.path)
        zapInfo("restored snapshot", caller: "snapshot/v3_snapshot.go:309", logFields)
    } catch {
        exitWithError(ExitCode.error, concurrencyErrorText(error))
    }
}
