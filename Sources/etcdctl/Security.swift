import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Synchronization

// --user/--password (clientv3's sign-in and per-call token) and --cacert/--cert/--key/--insecure-skip-tls-verify
// (clientv3's TLS config), with etcdctl's checks, prompts and error texts (ctlv3/command/global.go).

// MARK: TLS

/// The TLS side of clientv3's config: PEM blocks read and checked when the command starts, as
/// transport.TLSInfo.ClientConfig does, so that bad files fail before any connection.
struct TLSSettings: Sendable {
    /// The client's certificate chain and key (--cert, --key); empty without them.
    var certificateChain: [[UInt8]] = []
    var privateKey: [UInt8]? = nil
    /// The CAs of --cacert; nil trusts the system's roots, as Go's tls.Config with no RootCAs.
    var trustRoots: [[UInt8]]? = nil
    var skipVerify = false

    var transportTLS: HTTP2ClientTransport.Posix.TransportSecurity.TLS {
        .init(certificateChain: certificateChain.map { .bytes($0, format: .pem) },
              privateKey: privateKey.map { .bytes($0, format: .pem) },
              serverCertificateVerification: skipVerify ? .noVerification : .fullVerification,
              trustRoots: trustRoots.map { .certificates($0.map { .bytes($0, format: .pem) }) } ?? .systemDefault)
    }
}

/// A PEM block: its label and the whole block's text (as NIOSSL wants it).
struct PEMBlock {
    var label: String
    var text: [UInt8]
}

/// The PEM blocks of a file, in order (encoding/pem's Decode loop; text around blocks is ignored).
func pemBlocks(_ data: [UInt8]) -> [PEMBlock] {
    let text = String(decoding: data, as: UTF8.self)
    var blocks: [PEMBlock] = []
    var rest = Substring(text)
    while let begin = rest.range(of: "-----BEGIN ") {
        guard let labelEnd = rest[begin.upperBound...].range(of: "-----") else { break }
        let label = String(rest[begin.upperBound..<labelEnd.lowerBound])
        guard let end = rest[labelEnd.upperBound...].range(of: "-----END \(label)-----") else { break }
        blocks.append(PEMBlock(label: label, text: Array((String(rest[begin.lowerBound..<end.upperBound]) + "\n").utf8)))
        rest = rest[end.upperBound...]
    }
    return blocks
}

/// ioutil.ReadFile with Go's error text (`open <path>: no such file or directory`).
func readFileAsGo(_ path: String) -> Result<[UInt8], Msg> {
    let fd = open(path, O_RDONLY)
    if fd < 0 { return .failure("open \(path): \(goErrno(errno))") }
    defer { close(fd) }
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &chunk, chunk.count)
        if n < 0 { return .failure("read \(path): \(goErrno(errno))") }
        if n == 0 { return .success(data) }
        data.append(contentsOf: chunk[0..<n])
    }
}

/// syscall.Errno's text: strerror, lower-cased as Go's table has it.
private func goErrno(_ code: Int32) -> String {
    let text = String(cString: strerror(code))
    return text.prefix(1).lowercased() + text.dropFirst()
}

/// newClientCfg's TLS part: nil when no TLS flag is set and --insecure-transport; errors are etcdctl's
/// (ExitBadArgs).
func makeTLSSettings(cert: String, key: String, cacert: String, insecureTransport: Bool, skipVerify: Bool) -> TLSSettings? {
    func fail(_ message: Msg) -> Never { exitWithError(ExitCode.badArgs, message) }
    var settings: TLSSettings? = nil
    if !cert.isEmpty || !key.isEmpty {
        // transport.TLSInfo.baseConfig, then tlsutil.NewCert (tls.X509KeyPair's checks).
        if key.isEmpty || cert.isEmpty {
            fail("KeyFile and CertFile must both be present[key: \(key), cert: \(cert)]")
        }
        let certData: [UInt8], keyData: [UInt8]
        switch readFileAsGo(cert) {
        case .success(let data): certData = data
        case .failure(let message): fail(message)
        }
        switch readFileAsGo(key) {
        case .success(let data): keyData = data
        case .failure(let message): fail(message)
        }
        let certBlocks = pemBlocks(certData), keyBlocks = pemBlocks(keyData)
        let chain = certBlocks.filter { $0.label == "CERTIFICATE" }
        if chain.isEmpty {
            if certBlocks.contains(where: { $0.label.hasSuffix("PRIVATE KEY") }) {
                fail("tls: failed to find certificate PEM data in certificate input, but did find a private key; PEM inputs may have been switched")
            }
            fail("tls: failed to find any PEM data in certificate input")
        }
        guard let privateKey = keyBlocks.first(where: { $0.label == "PRIVATE KEY" || $0.label.hasSuffix(" PRIVATE KEY") }) else {
            if keyBlocks.contains(where: { $0.label == "CERTIFICATE" }) {
                fail("tls: found a certificate rather than a key in the PEM for the private key")
            }
            fail("tls: failed to find any PEM data in key input")
        }
        settings = TLSSettings(certificateChain: chain.map(\.text), privateKey: privateKey.text)
    }
    if !cacert.isEmpty {
        // tlsutil.NewCertPool: every PEM block must be a certificate.
        let data: [UInt8]
        switch readFileAsGo(cacert) {
        case .success(let read): data = read
        case .failure(let message): fail(message)
        }
        let blocks = pemBlocks(data)
        if blocks.contains(where: { $0.label != "CERTIFICATE" }) { fail("x509: malformed tbs certificate") }
        var current = settings ?? TLSSettings()
        current.trustRoots = blocks.map(\.text)
        settings = current
    }
    // Without key or certificate, a secure connection still needs a TLS config (with the system's roots).
    if settings == nil && !insecureTransport { settings = TLSSettings() }
    if skipVerify { settings?.skipVerify = true }
    if let settings {
        // What NIOSSL refuses to load (a key not matching its certificate, a broken block) fails here, before
        // any connection, as Go's tls.X509KeyPair and x509.ParseCertificate do.
        do {
            _ = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: 1),
                                               transportSecurity: .tls(settings.transportTLS))
        } catch {
            fail(settings.privateKey != nil ? "tls: private key does not match public key" : "x509: malformed certificate")
        }
    }
    return settings
}

// MARK: user and password

struct Credentials: Sendable {
    var user: String
    var password: String
}

/// authCfgFromCmd: `--user name:password`, `--user name --password pw`, or `--user name` and a prompt.
func makeCredentials(user: String, password: String) -> Credentials? {
    if user.isEmpty { return nil }
    var credentials: Credentials
    if password.isEmpty {
        if let colon = user.firstIndex(of: ":") {
            credentials = Credentials(user: String(user[..<colon]), password: String(user[user.index(after: colon)...]))
        } else {
            switch askPassword("Password: ") {
            case .success(let typed): credentials = Credentials(user: user, password: typed)
            case .failure(let message): exitWithError(ExitCode.error, message)
            }
        }
    } else {
        credentials = Credentials(user: user, password: password)
    }
    // clientv3 signs in only when both are non-empty; otherwise its calls carry no token.
    return credentials.user.isEmpty || credentials.password.isEmpty ? nil : credentials
}

/// speakeasy.Ask, as etcdctl prompts: the prompt on stdout, `stty -echo` run on our own standard streams
/// (it complains on stderr when stdin is not a terminal, and etcdctl lets it), one line read byte by byte
/// and trimmed, `stty echo`, and a newline on stdout.
func askPassword(_ prompt: String) -> Result<String, Msg> {
    out(prompt)
    flushOut()
    if let error = runStty("-echo") {
        out("\n")
        return .failure("failed turning off console echo for password entry:\n\t\(error)")
    }
    let line = StdinReader.shared.readLineBytewise()
    _ = runStty("echo")
    out("\n")
    var text = line
    if text.hasSuffix("\r") { text.removeLast() }
    return .success(text.trimmingCharacters(in: .whitespacesAndNewlines))
}

/// Runs /bin/stty with argv[0] "stty" and an empty environment, as Go's syscall.ForkExec does for speakeasy;
/// the error text of a failed start.
private func runStty(_ argument: String) -> String? {
    var pid: pid_t = 0
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup("stty"), strdup(argument), nil]
    defer { argv.forEach { free($0) } }
    let envp: [UnsafeMutablePointer<CChar>?] = [nil]
    let status = posix_spawn(&pid, "/bin/stty", nil, nil, argv, envp)
    if status != 0 { return "fork/exec /bin/stty: \(goErrno(status))" }
    var exitStatus: Int32 = 0
    waitpid(pid, &exitStatus, 0)
    return nil
}

/// etcdctl's readPasswordInteractive (user add, user passwd): asked twice, refused when empty or different.
func readPasswordInteractive(_ name: String) -> String {
    let first: String
    switch askPassword("Password of \(name): ") {
    case .success(let typed): first = typed
    case .failure(let message): exitWithError(ExitCode.badArgs, "failed to ask password: \(message)")
    }
    if first.isEmpty { exitWithError(ExitCode.badArgs, "empty password") }
    switch askPassword("Type password of \(name) again for confirmation: ") {
    case .success(let typed):
        if typed != first { exitWithError(ExitCode.badArgs, "given passwords are different") }
    case .failure(let message): exitWithError(ExitCode.badArgs, "failed to ask password: \(message)")
    }
    return first
}

// MARK: sign-in and token

/// The outcome of the run's one sign-in.
final class AuthSession: Sendable {
    private enum State { case notTried, signedIn(token: String?) }
    private let state = Mutex(State.notTried)

    var token: String? {
        state.withLock { if case .signedIn(let token) = $0 { token } else { nil } }
    }

    var isSignedIn: Bool {
        state.withLock { if case .signedIn = $0 { true } else { false } }
    }

    func signedIn(token: String?) { state.withLock { $0 = .signedIn(token: token) } }

    /// Forgets the token, so that the next ``SignIn/ensure(_:)`` signs in again.
    func forget() { state.withLock { $0 = .notTried } }
}

/// clientv3 sends the token as the `token` metadata of every call, streams included.
struct TokenInterceptor: ClientInterceptor {
    let session: AuthSession

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingClientRequest<Input>, context: ClientContext,
        next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<Output>
    ) async throws -> StreamingClientResponse<Output> {
        guard let token = session.token else { return try await next(request, context) }
        var request = request
        request.metadata.replaceOrAddString(token, forKey: "token")
        return try await next(request, context)
    }
}

struct SignInFailure: Error {
    var message: String
}

enum SignIn {
    /// clientv3's getToken: one Authenticate per endpoint within --dial-timeout, stopping at the first token, or
    /// at "authentication is not enabled" (then calls go without a token). Each failure logs clientv3's retry
    /// warning; after the deadline the remaining endpoints are not tried. Each try goes through a balancer over
    /// all the endpoints (clientv3's resolver group holds them all), so an unreachable one is passed over.
    static func ensure(_ config: ClientConfig) async throws {
        guard let credentials = config.credentials, !config.session.isSignedIn else { return }
        let deadline = config.dialTimeout > 0 ? Date().addingTimeInterval(config.dialTimeout) : nil
        var request = Etcdserverpb_AuthenticateRequest()
        request.name = credentials.user
        request.password = credentials.password
        var lastError = "context deadline exceeded"
        for endpoint in config.endpoints {
            let remaining = deadline.map { $0.timeIntervalSinceNow }
            if let remaining, remaining <= 0 { break }
            var anonymous = config
            anonymous.credentials = nil
            do {
                let response = try await Call.withClient(anonymous, timeout: remaining) { [request] client in
                    try await Etcdserverpb_Auth.Client(wrapping: client).authenticate(request, options: .etcdctl)
                }
                config.session.signedIn(token: response.token)
                return
            } catch let error as RPCError {
                let failure = RPCFailure(error)
                logRetryWarning(target: config.target(for: endpoint), error: failure.grpcText)
                if failure.message == "etcdserver: authentication is not enabled" {
                    config.session.signedIn(token: nil)
                    return
                }
                lastError = failure.text
            } catch let failure as RPCFailure {
                logRetryWarning(target: config.target(for: endpoint), error: failure.grpcText)
                lastError = failure.code == .deadlineExceeded ? "context deadline exceeded" : failure.text
            }
        }
        throw SignInFailure(message: lastError)
    }
}
