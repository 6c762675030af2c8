import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// The gRPC server members dial: serves ``PeerService`` on a peer listen address.
///
/// ```swift
/// let server = try PeerServer(listeningOn: PeerAddress(url: "http://127.0.0.1:2380"), service: service)
/// group.addTask { try await server.serve() }
/// let port = try await server.boundPort()
/// ```
final class PeerServer: Sendable {
    private let transport: HTTP2ServerTransport.Posix
    private let server: GRPCServer<HTTP2ServerTransport.Posix>

    /// - Parameter address: must be an IP address (or `localhost`); port 0 binds an ephemeral port.
    init(listeningOn address: PeerAddress, service: PeerService) throws(PeerAddressError) {
        let bindAddress = try address.bindAddress()
        transport = HTTP2ServerTransport.Posix(
            address: bindAddress,
            transportSecurity: address.tls?.peerServerSecurity ?? .plaintext,
            config: .defaults { config in
                config.rpc.maxRequestPayloadSize = PeerLimits.maxMessageBytes
                // Senders ping to find dead connections (see PeerTransport); allow them as often as they ping.
                config.connection.keepalive.clientBehavior = .init(minPingIntervalWithoutCalls: .seconds(5),
                                                                   allowWithoutCalls: true)
                // And find dead senders too: a half-open stream otherwise lingers until TCP gives up.
                config.connection.keepalive.time = .seconds(10)
                config.connection.keepalive.timeout = .seconds(5)
                // Senders already write a batch of Raft messages per frame; coalescing only delays each flush.
                config.connection.flushCoalescing = nil
            })
        server = GRPCServer(transport: transport, services: [service])
    }

    /// Serves until ``beginGracefulShutdown()`` lets the open RPCs finish, or until the task is cancelled.
    func serve() async throws {
        try await server.serve()
    }

    /// The port the server listens on, once it does (the actual port when bound to port 0). Throws when the
    /// server failed to bind.
    func boundPort() async throws -> Int {
        let address = try await transport.listeningAddress
        if let ipv4 = address.ipv4 { return ipv4.port }
        if let ipv6 = address.ipv6 { return ipv6.port }
        preconditionFailure("a peer server binds IP addresses only, not \(address)")
    }

    func beginGracefulShutdown() {
        server.beginGracefulShutdown()
    }
}
