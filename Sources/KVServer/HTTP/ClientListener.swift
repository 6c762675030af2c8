import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// The client port's front door: one TCP listener serving both gRPC and etcd's plain-HTTP endpoints, as etcd
/// serves both on its client URL.
///
/// The gRPC server (grpc-swift's HTTP/2 transport) cannot answer HTTP/1.1, so it listens on an internal
/// address and this listener looks at the first bytes of each connection: the HTTP/2 client preface (gRPC with
/// prior knowledge) is proxied byte for byte to the gRPC server, anything else is parsed as HTTP/1.1 and
/// answered from ``HTTPEndpoints``.
final class ClientListener: Sendable {
    struct Configuration: Sendable {
        /// How long a new connection may take to show which protocol it speaks; silent or trickling clients
        /// would otherwise hold a socket for ever.
        var sniffTimeout: TimeAmount = .seconds(10)
        /// How long an HTTP/1.1 connection may take to deliver its next complete request (keep-alive idleness
        /// included); bounds slow-header clients.
        var httpRequestTimeout: TimeAmount = .seconds(60)
        /// Request bodies are ignored (no endpoint takes one); a connection sending more than this is closed.
        var maxRequestBodyBytes = 64 * 1024
        /// How long to wait for the internal gRPC server to accept a proxied connection.
        var upstreamConnectTimeout: TimeAmount = .seconds(5)
        var backlog: Int32 = 256

        init() {}
    }

    /// The address the listener is bound to, with the port the kernel chose when asked for port 0.
    let localAddress: SocketAddress
    private let serverChannel: any Channel
    private let connections: ConnectionRegistry

    var port: Int {
        localAddress.port ?? 0
    }

    private init(serverChannel: any Channel, localAddress: SocketAddress, connections: ConnectionRegistry) {
        self.serverChannel = serverChannel
        self.localAddress = localAddress
        self.connections = connections
    }

    /// Binds `host:port` and starts accepting connections.
    ///
    /// - Parameters:
    ///   - grpcAddress: where the gRPC server listens; connections that open with the HTTP/2 preface are
    ///     proxied there.
    ///   - group: the event loops that run the listener and its connections; a proxied connection's two
    ///     sockets share one loop, so forwarding needs no hop between threads.
    static func bind(
        host: String,
        port: Int,
        grpcAddress: SocketAddress,
        endpoints: HTTPEndpoints,
        tls: NIOSSLContext? = nil,
        certificateIdentities: ClientCertificateIdentities? = nil,
        configuration: Configuration = Configuration(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "kvserver.client-listener")
    ) async throws -> ClientListener {
        let connections = ConnectionRegistry()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: configuration.backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            // Proxied connections forward half-closure; HTTP/1.1 handles it as the end of requests.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                guard connections.insert(channel) else {
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    // TLS first: the sniffer and everything after it see the decrypted stream.
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        ClientProtocolSniffer(
                            grpcAddress: grpcAddress,
                            endpoints: endpoints,
                            certificateIdentities: certificateIdentities,
                            configuration: configuration,
                            logger: logger
                        )
                    )
                }
            }
            .bind(host: host, port: port)
            .get()
        guard let localAddress = channel.localAddress else {
            try? await channel.close()
            throw ChannelError.unknownLocalAddress
        }
        logger.info("serving client requests", metadata: ["address": "\(localAddress)", "grpc": "\(grpcAddress)"])
        return ClientListener(serverChannel: channel, localAddress: localAddress, connections: connections)
    }

    /// Stops accepting and closes every open connection (proxied ones close their upstream side with them).
    func close() async {
        try? await serverChannel.close()
        for channel in connections.closeAll() {
            try? await channel.close()
        }
    }

    /// Returns once the listening socket has closed.
    func waitUntilClosed() async {
        try? await serverChannel.closeFuture.get()
    }

    /// The number of accepted connections still open (for tests and diagnostics).
    var openConnectionCount: Int {
        connections.count
    }
}

/// The accepted connections, so that closing the listener also closes them.
private final class ConnectionRegistry: Sendable {
    private struct State {
        var closing = false
        var channels: [ObjectIdentifier: any Channel] = [:]
    }

    private let state = Mutex(State())

    /// Registers `channel` until it closes; false once the listener is closing.
    func insert(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let accepted = state.withLock { state in
            guard !state.closing else { return false }
            state.channels[id] = channel
            return true
        }
        if accepted {
            channel.closeFuture.whenComplete { _ in
                _ = self.state.withLock { $0.channels.removeValue(forKey: id) }
            }
        }
        return accepted
    }

    func closeAll() -> [any Channel] {
        state.withLock { state in
            state.closing = true
            return Array(state.channels.values)
        }
    }

    var count: Int {
        state.withLock { $0.channels.count }
    }
}
