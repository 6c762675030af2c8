import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix

typealias Transport = HTTP2ClientTransport.Posix

/// Exit codes of etcdctl (ctlv3/command/error.go).
enum ExitCode {
    static let success: Int32 = 0
    static let error: Int32 = 1
    static let badConnection: Int32 = 2
    static let invalidInput: Int32 = 3
    static let badFeature: Int32 = 4
    static let interrupted: Int32 = 5
    static let io: Int32 = 6
    static let badArgs: Int32 = 128
}

/// etcdctl's ExitWithError: "Error: <err>" on stderr and the exit code.
struct ExitError: Error {
    var code: Int32
    var message: String
}

func exitWithError(_ code: Int32, _ message: Msg) -> Never {
    exitWithError(code, message.text)
}

func exitWithError(_ code: Int32, _ message: String) -> Never {
    writeErr("Error: \(message)\n")
    flushOut()
    exit(code)
}

nonisolated(unsafe) var stdoutBuffer = Data()

func out(_ s: String) {
    stdoutBuffer.append(contentsOf: Array(s.utf8))
    if stdoutBuffer.count > 1 << 16 { flushOut() }
}

func flushOut() {
    guard !stdoutBuffer.isEmpty else { return }
    FileHandle.standardOutput.write(stdoutBuffer)
    stdoutBuffer = Data()
}

func writeErr(_ s: String) {
    flushOut()
    FileHandle.standardError.write(Data(s.utf8))
}

/// A gRPC error as Go's etcd client shows it: etcd's own errors by their text, others as grpc-go formats them.
struct RPCFailure: Error {
    var code: RPCError.Code
    var message: String

    init(_ error: RPCError) {
        code = error.code
        message = error.message
    }

    init(code: RPCError.Code, message: String) {
        self.code = code
        self.message = message
    }

    var isEtcdError: Bool { message.hasPrefix("etcdserver: ") || message.hasPrefix("etcdserver:") }

    /// grpc-go's status error text.
    var grpcText: String { "rpc error: code = \(code.goName) desc = \(message)" }

    /// What etcd's clientv3 returns as the error text.
    var text: String { isEtcdError ? message : grpcText }
}

/// The JSON warning clientv3's retry interceptor logs (zap, production config) when a unary call fails.
func logRetryWarning(target: String, error: String, attempt: Int = 0,
                     message: String = "retrying of unary invoker failed", callerLine: Int = 62) {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"
    let line = GoJSON.object([
        ("level", .string("warn")), ("ts", .string(formatter.string(from: Date()))),
        ("caller", .string("clientv3/retry_interceptor.go:\(callerLine)")), ("msg", .string(message)),
        ("target", .string(target))] + (callerLine == 62 ? [("attempt", .int(Int64(attempt)))] : []) + [("error", .string(error)),
    ]).text
    writeErr(line + "\n")
}

/// Host and port of an endpoint as etcdctl accepts it (`host:port`, `http://host:port`).
func parseEndpoint(_ endpoint: String) -> (host: String, port: Int)? {
    guard let (name, port) = endpointHostAndPort(endpoint) else { return nil }
    return (name == "localhost" ? "127.0.0.1" : name, port)
}

/// The host as written (a name or an address, IPv6 without brackets) and the port.
func endpointHostAndPort(_ endpoint: String) -> (name: String, port: Int)? {
    var rest = Substring(endpointHost(endpoint))
    if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
    guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]) else { return nil }
    var host = String(rest[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return (host, port)
}

/// clientv3's endpoint.ParseEndpoint: the scheme ("" without `://`)…
func endpointScheme(_ endpoint: String) -> String {
    guard let range = endpoint.range(of: "://") else { return "" }
    return String(endpoint[..<range.lowerBound])
}

/// …and what is left for gRPC to dial (also what clientv3's targets show).
func endpointHost(_ endpoint: String) -> String {
    guard let range = endpoint.range(of: "://") else { return endpoint }
    return String(endpoint[range.upperBound...])
}

/// The connection settings of one etcdctl run.
struct ClientConfig: Sendable {
    var endpoints: [String]
    var dialTimeout: Double
    var commandTimeout: Double
    /// clientv3's Config.TLS: set by any of --cert, --key, --cacert, or by --insecure-transport=false.
    var tls: TLSSettings? = nil
    /// --user and its password; nil when either is empty, as clientv3 then does not sign in.
    var credentials: Credentials? = nil
    /// The token of the one sign-in, shared by every connection of the run (and its copies of the config).
    var session = AuthSession()
    /// Endpoint health reports a failed sign-in per endpoint instead of exiting.
    var signInFailureThrows = false
    let clientID = UUID().uuidString.lowercased()

    /// The balancer's target as clientv3's retry warning shows it (the endpoint without its scheme).
    var target: String { target(for: endpoints.first ?? "") }

    func target(for endpoint: String) -> String { "endpoint://client-\(clientID)/\(endpointHost(endpoint))" }

    /// clientv3's processCreds: `http://` is plaintext, `https://` is TLS (with the system's roots when no TLS
    /// flag is given), and an endpoint without a scheme follows the TLS flags.
    func security(forScheme scheme: String) -> TLSSettings? {
        switch scheme {
        case "http": nil
        case "https", "unixs": tls ?? TLSSettings()
        case "", "unix": tls
        default: nil
        }
    }
}

/// One call's failure to reach any endpoint.
struct Unreachable: Error {}

enum Call {
    /// Runs `body` with a client on the first endpoint that answers, failing over to the next on connection
    /// errors until `timeout` (etcd's balancer behaves alike: it retries the endpoints until the deadline).
    static func withClient<R: Sendable>(
        _ config: ClientConfig, endpoints: [String]? = nil, timeout: Double?,
        _ body: @Sendable @escaping (GRPCClient<Transport>) async throws -> R
    ) async throws -> R {
        if config.credentials != nil {
            // clientv3.New signs in before its first call; etcdctl exits when that fails (mustClientFromCmd).
            do {
                try await SignIn.ensure(config)
            } catch let failure as SignInFailure {
                if config.signInFailureThrows { throw failure }
                exitWithError(ExitCode.badConnection, failure.message)
            }
        }
        // A call to one chosen endpoint (Status, HashKV, Defragment…) dials it directly, as clientv3's Dial does.
        let passthrough = endpoints != nil
        let endpoints = endpoints ?? config.endpoints
        // The balancer dials every endpoint with the credentials of the first one's scheme; a direct dial uses
        // its own endpoint's.
        let balancerScheme = endpointScheme(config.endpoints.first ?? "")
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        var attempt = 0
        while true {
            for endpoint in endpoints {
                guard let (host, port) = parseEndpoint(endpoint), let (name, _) = endpointHostAndPort(endpoint) else { continue }
                let security = config.security(forScheme: passthrough ? endpointScheme(endpoint) : balancerScheme)
                do {
                    return try await run(host: host, port: port, serverName: name, security: security,
                                         session: config.session, deadline: deadline, body)
                } catch let error as RPCError where isConnectionFailure(error) {
                    continue
                } catch is Unreachable {
                    continue
                } catch let failure as RPCFailure where failure.code == .deadlineExceeded && attempt > 0 && !passthrough {
                    // The deadline came during yet another try at endpoints that kept refusing (a slow TLS
                    // handshake, say): grpc-go's balancer still has them all in transient failure then.
                    throw RPCFailure(code: .deadlineExceeded, message: "latest balancer error: all SubConns are in TransientFailure")
                }
            }
            attempt += 1
            let pause = Double(min(100 * attempt, 500)) / 1000
            if let deadline, Date().addingTimeInterval(pause) >= deadline {
                try await Task.sleep(for: .milliseconds(max(0, Int(deadline.timeIntervalSinceNow * 1000))))
                if passthrough, let (host, port) = endpoints.first.flatMap(parseEndpoint) {
                    throw RPCFailure(code: .deadlineExceeded, message: "latest balancer error: connection error: desc = \"transport: Error while dialing dial tcp \(host):\(port): connect: connection refused\"")
                }
                throw RPCFailure(code: .deadlineExceeded,
                                 message: "latest balancer error: all SubConns are in TransientFailure")
            }
            try await Task.sleep(for: .milliseconds(Int(pause * 1000)))
        }
    }

    static func isConnectionFailure(_ error: RPCError) -> Bool {
        guard error.code == .unavailable else { return false }
        return !error.message.hasPrefix("etcdserver:")
    }

    private static func run<R: Sendable>(
        host: String, port: Int, serverName: String, security: TLSSettings?, session: AuthSession, deadline: Date?,
        _ body: @Sendable @escaping (GRPCClient<Transport>) async throws -> R
    ) async throws -> R {
        var transportConfig = HTTP2ClientTransport.Posix.Config.defaults
        // Go checks the server's certificate against the endpoint's host name, or its IP address when the
        // endpoint is one; NIOSSL checks the connected address when given no name.
        if security != nil && !isIPv4Address(serverName) && !serverName.contains(":") {
            transportConfig.http2.authority = serverName
        }
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: host, port: port),
            transportSecurity: security.map { .tls($0.transportTLS) } ?? .plaintext, config: transportConfig)
        return try await withGRPCClient(transport: transport, interceptors: [TokenInterceptor(session: session)]) { client in
            if let deadline {
                let remaining = deadline.timeIntervalSinceNow
                if remaining <= 0 { throw RPCFailure(code: .deadlineExceeded, message: "context deadline exceeded") }
                return try await withThrowingTaskGroup(of: R?.self) { group in
                    group.addTask { try await body(client) }
                    group.addTask {
                        try await Task.sleep(for: .milliseconds(Int(remaining * 1000)))
                        return nil
                    }
                    defer { group.cancelAll() }
                    guard let first = try await group.next(), let result = first else {
                        throw RPCFailure(code: .deadlineExceeded, message: "context deadline exceeded")
                    }
                    return result
                }
            }
            return try await body(client)
        }
    }
}

private func isIPv4Address(_ s: String) -> Bool {
    let parts = s.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 4 && parts.allSatisfy { UInt8($0) != nil }
}

extension CallOptions {
    static var etcdctl: CallOptions {
        var options = CallOptions.defaults
        options.waitForReady = false
        return options
    }
}
