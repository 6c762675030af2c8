import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// A TCP listener for a port that serves several protocols, as etcd serves gRPC and HTTP on its client URL and
/// Raft streams and peer calls on its peer URL: each accepted connection gets TLS (when the port has it), then
/// the handler `sniffer` makes, which looks at the first bytes and sets up the rest of the pipeline
/// (``PrefaceSniffer``). Closing the listener closes the connections it accepted.
final class SniffingListener: Sendable {
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
    ///   - allowRemoteHalfClosure: for protocols that take the end of input as the end of requests (HTTP/1.1);
    ///     the others should close on it.
    ///   - sniffer: the first handler after TLS, called on the connection's event loop.
    static func bind(
        host: String,
        port: Int,
        tls: NIOSSLContext?,
        backlog: Int32 = 256,
        allowRemoteHalfClosure: Bool,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        sniffer: @escaping @Sendable (any Channel) -> PrefaceSniffer
    ) async throws -> SniffingListener {
        let connections = ConnectionRegistry()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: allowRemoteHalfClosure)
            .childChannelInitializer { channel in
                guard connections.insert(channel) else {
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    // TLS first: the sniffer and everything after it see the decrypted stream.
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    }
                    try channel.pipeline.syncOperations.addHandler(sniffer(channel))
                }
            }
            .bind(host: host, port: port)
            .get()
        guard let localAddress = channel.localAddress else {
            try? await channel.close()
            throw ChannelError.unknownLocalAddress
        }
        return SniffingListener(serverChannel: channel, localAddress: localAddress, connections: connections)
    }

    /// Stops accepting, asks every open connection to finish (gRPC: GOAWAY, calls in flight complete; HTTP/1.1:
    /// after the response in progress; Raft streams at once), and closes those still open after `grace`, as
    /// etcd's graceful stop bounded by a timeout. Watch streams never finish on their own, so a connection with one lasts the grace.
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
