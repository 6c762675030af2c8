import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// The client port's front door: one TCP listener serving both gRPC and etcd's plain-HTTP endpoints, as etcd
/// serves both on its client URL.
///
/// This listener looks at the first bytes of each connection: after the HTTP/2 client preface (gRPC with prior
/// knowledge) the connection is handed to the gRPC server through ``GRPCHandoff``, on the same socket; anything
/// else is parsed as HTTP/1.1 and answered from ``HTTPEndpoints``.
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
    ///   - grpc: takes the connections that open with the HTTP/2 preface.
    ///   - group: the event loops that run the listener and its connections.
    static func bind(
        host: String,
        port: Int,
        grpc: GRPCHandoff,
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
            // HTTP/1.1 handles half-closure as the end of requests (HTTP/2 closes on it).
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
                            grpc: grpc,
                            tls: tls != nil,
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
        logger.info("serving client requests", metadata: ["address": "\(localAddress)"])
        return ClientListener(serverChannel: channel, localAddress: localAddress, connections: connections)
    }

    /// Stops accepting, asks every open connection to finish (gRPC: GOAWAY, calls in flight complete; HTTP/1.1:
    /// after the response in progress), and closes those still open after `grace`, as etcd's graceful stop
    /// bounded by a timeout. Watch streams never finish on their own, so a connection with one lasts the grace.
    func close(grace: Duration = .zero) async {
        try? await serverChannel.close()
        let open = connections.closeAll()
        guard grace > .zero else {
            for channel in open { try? await channel.close() }
            return
        }
        for channel in open {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for channel in open { try? await channel.closeFuture.get() }
            }
            group.addTask { try? await Task.sleep(for: grace) }
            await group.next()
            // Whichever came first: the sleep ends on cancellation, the wait for closures once all are closed.
            group.cancelAll()
            for channel in open { channel.close(promise: nil) }
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
