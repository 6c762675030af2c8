import Foundation

let etcdctlVersion = "3.4.23"
let etcdctlAPIVersion = "3.4"

/// etcdctl's global (persistent) flags, as ctlv3/ctl.go declares them.
let globalFlags: [FlagSpec] = [
    FlagSpec(name: "endpoints", kind: .stringSlice, defValue: "[127.0.0.1:2379]", usage: "gRPC endpoints"),
    .bool("debug", nil, false, "enable client-side debug logging"),
    .string("write-out", "w", "simple", "set the output format (fields, json, protobuf, simple, table)"),
    .bool("hex", nil, false, "print byte strings as hex encoded strings"),
    .duration("dial-timeout", "2s", "dial timeout for client connections"),
    .duration("command-timeout", "5s", "timeout for short running command (excluding dial timeout)"),
    .duration("keepalive-time", "2s", "keepalive time for client connections"),
    .duration("keepalive-timeout", "6s", "keepalive timeout for client connections"),
    .bool("insecure-transport", nil, true, "disable transport security for client connections"),
    .bool("insecure-discovery", nil, true, "accept insecure SRV records describing cluster endpoints"),
    .bool("insecure-skip-tls-verify", nil, false, "skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)"),
    .string("cert", nil, "", "identify secure client using this TLS certificate file"),
    .string("key", nil, "", "identify secure client using this TLS key file"),
    .string("cacert", nil, "", "verify certificates of TLS-enabled secure servers using this CA bundle"),
    .string("user", nil, "", "username[:password] for authentication (prompt if password is not supplied)"),
    .string("password", nil, "", "password for authentication (if this option is used, --user option shouldn't include password)"),
    .string("discovery-srv", "d", "", "domain name to query for SRV records describing cluster endpoints"),
    .string("discovery-srv-name", nil, "", "service name to query when using DNS discovery"),
]

/// capnslog's line format (pkg/flags and mvcc/backend log through it).
func capnslog(_ level: String, _ message: String, package: String = "pkg/flags") {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.dateFormat = "yyyy-MM-dd HH:mm:ss.SSSSSS"
    writeErr("\(formatter.string(from: Date())) \(level) | \(package): \(message)\n")
}

/// The per-run state every command gets: connection settings and the printer.
struct Context {
    var invocation: Invocation
    var config: ClientConfig
    var printer: Printer

    var commandTimeout: Double { config.commandTimeout }
}

/// flags.SetPflagsFromEnv("ETCDCTL", inherited flags): unset flags take ETCDCTL_* values; a variable that
/// shadows a flag given on the command line is fatal; unknown ETCDCTL_* variables are warned about.
func applyEnvironment(_ invocation: inout Invocation, extraNames: [String] = []) {
    let environment = ProcessInfo.processInfo.environment
    let names = invocation.command.inheritedFlags.map(\.name) + extraNames
    var used = Set<String>()
    var alreadySet = Set<String>()
    func envKey(_ name: String) -> String { "ETCDCTL_" + name.uppercased().replacingOccurrences(of: "-", with: "_") }
    for name in names {
        let key = envKey(name)
        if invocation.changed.contains(name) {
            alreadySet.insert(key)
            continue
        }
        if let value = environment[key], !value.isEmpty {
            used.insert(key)
            if extraNames.contains(name) { continue }
            guard let flag = invocation.command.allFlags.first(where: { $0.name == name }) else { continue }
            switch flag.kind {
            case .bool:
                if let b = parseGoBool(value) { invocation.values[name] = b ? "true" : "false" }
            case .int64:
                if let v = Int64(value) { invocation.values[name] = String(v) }
            case .uint64:
                if let v = UInt64(value) { invocation.values[name] = String(v) }
            case .duration:
                if (try? parseGoDuration(value)) != nil { invocation.values[name] = value }
            case .string:
                invocation.values[name] = value
            case .stringSlice:
                invocation.values[name] = "[" + value + "]"
            }
            invocation.changed.insert(name)
        }
    }
    // os.Environ order: the process's environment block.
    var pointer = environ
    while let entry = pointer.pointee {
        let text = String(cString: entry)
        pointer = pointer.advanced(by: 1)
        let key = String(text.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0])
        if used.contains(key) { continue }
        if alreadySet.contains(key) {
            capnslog("C", "conflicting environment variable \(goQuote(key)) is shadowed by corresponding command-line flag (either unset environment variable or disable flag)")
            flushOut()
            exit(1)
        }
        if text.hasPrefix("ETCDCTL_") {
            capnslog("W", "unrecognized environment variable \(text)")
        }
    }
}

/// initDisplayFromCmd.
func makePrinter(_ invocation: Invocation) -> Printer {
    guard let format = OutputFormat(rawValue: invocation.string("write-out")) else {
        exitWithError(ExitCode.badFeature, "unsupported output format")
    }
    return Printer(format: format, isHex: invocation.bool("hex"))
}

/// clientConfigFromCmd and newClientCfg: environment, endpoints, timeouts, the TLS flags' checks, the user and
/// password (prompting for it), the printer, then the TLS files; in etcdctl's order, so the same mistake fails
/// with the same error.
func makeContext(_ invocation: Invocation, extraEnvironment: [String] = []) -> Context {
    var invocation = invocation
    applyEnvironment(&invocation, extraNames: extraEnvironment)
    let endpoints = invocation.stringSlice("endpoints").map { $0.trimmingCharacters(in: .whitespaces) }
    var config = ClientConfig(endpoints: endpoints, dialTimeout: invocation.duration("dial-timeout"),
                              commandTimeout: invocation.duration("command-timeout"))
    for name in ["cert", "key", "cacert"] where invocation.string(name).isEmpty && invocation.changed.contains(name) {
        exitWithError(ExitCode.badArgs, "empty string is passed to --\(name) option")
    }
    config.credentials = makeCredentials(user: invocation.string("user"), password: invocation.string("password"))
    let printer = makePrinter(invocation)
    config.tls = makeTLSSettings(cert: invocation.string("cert"), key: invocation.string("key"),
                                 cacert: invocation.string("cacert"),
                                 insecureTransport: invocation.bool("insecure-transport"),
                                 skipVerify: invocation.bool("insecure-skip-tls-verify"))
    return Context(invocation: invocation, config: config, printer: printer)
}
