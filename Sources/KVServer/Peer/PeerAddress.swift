import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Synchronization

/// Why a peer URL was refused.
struct PeerAddressError: Error, Sendable, Hashable, CustomStringConvertible {
    var url: String
    var reason: String

    var description: String { "invalid peer URL \"\(url)\": \(reason)" }
}

/// Where a member listens for its peers: the host and port of an etcd peer URL (`http://10.0.0.1:2380`).
struct PeerAddress: Sendable, Hashable, CustomStringConvertible {
    /// A host name, an IPv4 address, or an IPv6 address without its brackets.
    var host: String
    var port: Int
    /// Set for `https` URLs: the member's peer certificate, key and CA, to serve and to dial with.
    var tls: TLSFiles?

    init(host: String, port: Int) {
        precondition((0...65_535).contains(port), "port \(port) out of range")
        self.host = host
        self.port = port
    }

    /// Parses an etcd peer URL: `http://host:port`, with an optional trailing slash. etcd requires the port too;
    /// `https` only with the peer TLS files, never silently spoken in plaintext.
    /// - Parameter tls: the peer TLS files (`--peer-cert-file`…), required for `https` URLs, ignored for `http`.
    init(url: String, tls: TLSFiles? = nil) throws(PeerAddressError) {
        func failure(_ reason: String) -> PeerAddressError { PeerAddressError(url: url, reason: reason) }

        guard let schemeEnd = url.range(of: "://") else { throw failure("missing scheme (want http://host:port)") }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        let secure: Bool
        switch scheme {
        case "http": secure = false
        case "https":
            guard tls != nil else { throw failure("https peer URLs need --peer-cert-file and --peer-key-file") }
            secure = true
        default: throw failure("unsupported scheme \"\(scheme)\" (want http or https)")
        }
        var authority = url[schemeEnd.upperBound...]
        if authority.hasSuffix("/") { authority = authority.dropLast() }
        guard !authority.contains(where: { "/?#@".contains($0) }) else {
            throw failure("a peer URL has no path, query or user (want http://host:port)")
        }

        let host: Substring
        let portText: Substring
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw failure("unterminated IPv6 address") }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let rest = authority[authority.index(after: close)...]
            guard rest.hasPrefix(":") else { throw failure("missing port") }
            portText = rest.dropFirst()
        } else {
            guard let colon = authority.lastIndex(of: ":") else { throw failure("missing port") }
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
            guard !host.contains(":") else { throw failure("an IPv6 address needs brackets, as in http://[::1]:2380") }
        }
        guard !host.isEmpty else { throw failure("missing host") }
        guard host.allSatisfy({ $0.isLetter || $0.isNumber || ".-_:%".contains($0) }) else {
            throw failure("invalid host \"\(host)\"")
        }
        guard !portText.isEmpty, portText.allSatisfy(\.isASCII), portText.allSatisfy(\.isNumber),
              let port = Int(portText), (0...65_535).contains(port) else {
            throw failure("invalid port \"\(portText)\"")
        }
        self.init(host: String(host), port: port)
        self.tls = secure ? tls : nil
    }

    var isIPv6: Bool { host.contains(":") }

    var isIPv4: Bool {
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { part in
            !part.isEmpty && part.count <= 3 && part.allSatisfy { $0.isASCII && $0.isNumber } && Int(part)! <= 255
        }
    }

    /// `host:port`, with brackets around an IPv6 host.
    var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    var url: String { "\(tls == nil ? "http" : "https")://\(description)" }

    /// The gRPC target that dials this address; host names go through DNS, so a peer may move behind its name.
    var clientTarget: any ResolvableTarget {
        if isIPv4 { return .ipv4(address: host, port: port) }
        if isIPv6 { return .ipv6(address: host, port: port) }
        return .dns(host: host, port: port)
    }

    /// The host to listen on. Like etcd, listening needs an IP address; `localhost` is accepted as the loopback
    /// address.
    func bindHost() throws(PeerAddressError) -> String {
        if isIPv4 || isIPv6 { return host }
        if host.lowercased() == "localhost" { return "127.0.0.1" }
        throw PeerAddressError(url: url, reason: "expected an IP address to listen on")
    }
}

/// Parsed peer URLs by their text. The transport asks for a member's address before every batch it sends, and
/// parsing the URL each time took about 5 % of a follower's CPU under load.
final class PeerAddressCache: Sendable {
    private let tls: TLSFiles?
    private let parsed = Mutex<[String: PeerAddress]>([:])
    /// Members are few; the bound only keeps URLs that come and go from piling up.
    private let maxEntries = 1_024

    init(tls: TLSFiles?) {
        self.tls = tls
    }

    /// The address of `url`, nil when it does not parse.
    func address(of url: String) -> PeerAddress? {
        if let known = parsed.withLock({ $0[url] }) { return known }
        guard let address = try? PeerAddress(url: url, tls: tls) else { return nil }
        parsed.withLock { table in
            if table.count >= maxEntries { table.removeAll() }
            table[url] = address
        }
        return address
    }
}
