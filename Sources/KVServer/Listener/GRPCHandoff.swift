import GRPCNIOTransportHTTP2Posix
import NIOCore
import NIOHTTP2
import NIOPosix
import Synchronization

/// Hands the connections a ``PrefaceSniffer`` recognised as gRPC (the client port's, and the peer port's calls) to
/// grpc-swift's server transport, on the socket they arrived on.
///
/// etcd serves gRPC and plain HTTP on one port, but grpc-swift's transports accept their own connections and
/// speak HTTP/2 only. Its `Custom` transport instead asks a listener factory (this) for a channel that yields
/// connections already configured for gRPC. The listeners configure a connection once its first bytes show
/// the HTTP/2 preface and pass it here; this yields it on a carrier channel the transport iterates.
///
/// The carrier is a pipe channel that never reads: NIO requires a real channel behind the transport's inbound
/// stream, and a pipe is the only kind on which injected reads reach no handler that expects something else
/// (a server socket's pipeline would try to register them as new connections).
final class GRPCHandoff: HTTP2ServerTransport.ListenerFactory {
    private enum State {
        case waiting
        case serving(configurator: HTTP2ServerTransport.ConnectionConfigurator, carrier: any Channel)
        case closed
    }

    let eventLoopGroup: any EventLoopGroup
    private let state = Mutex(State.waiting)
    private let started: AsyncStream<Void>
    private let startedContinuation: AsyncStream<Void>.Continuation

    init(eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.eventLoopGroup = eventLoopGroup
        (started, startedContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// The transport's server task calls this once, when it starts serving.
    func makeListeningChannel(
        listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
        connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
    ) async throws -> NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never> {
        // The listener configurator only adds grpc-swift's graceful-shutdown tracker, which expects accepted
        // sockets on the carrier; ``SniffingListener/close(grace:)`` quiesces the connections itself.
        _ = listenerConfigurator
        var descriptors: [Int32] = [0, 0]
        guard pipe(&descriptors) == 0 else {
            throw IOError(errnoCode: errno, reason: "pipe")
        }
        let carrier = try await NIOPipeBootstrap(group: eventLoopGroup)
            .takingOwnershipOfDescriptors(input: descriptors[0], output: descriptors[1]) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never>(
                        wrappingChannelSynchronously: channel)
                }
            }
        let accepted = state.withLock { state in
            guard case .waiting = state else { return false }
            state = .serving(configurator: connectionConfigurator, carrier: carrier.channel)
            return true
        }
        guard accepted else {
            try? await carrier.channel.close()
            throw ChannelError.ioOnClosedChannel
        }
        startedContinuation.yield()
        return carrier
    }

    /// Returns once the transport is ready for connections (so listeners never accept one it cannot take).
    func waitUntilServing() async {
        for await _ in started { return }
    }

    /// Configures `channel`, whose first bytes were the HTTP/2 preface, as a gRPC connection and gives it to the
    /// transport. Call on `channel`'s event loop, before passing any of its bytes on.
    func serve(_ channel: any Channel, tls: Bool) throws {
        channel.eventLoop.preconditionInEventLoop()
        let serving = state.withLock { state -> (HTTP2ServerTransport.ConnectionConfigurator, any Channel)? in
            guard case .serving(let configurator, let carrier) = state else { return nil }
            return (configurator, carrier)
        }
        guard let (configurator, carrier) = serving else {
            throw ChannelError.ioOnClosedChannel
        }
        // The listener allows half-closure for HTTP/1.1; HTTP/2 ignores end of input, so a gRPC connection whose
        // client has gone would stay open until something is written to it.
        try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: false)
        // Synchronous on the channel's loop: the pipeline is complete when this returns, whatever the future.
        let configured = configurator.configure(channel: channel, tls: tls ? .configured(requireALPN: false) : .none)
        // grpc-swift's connection manager starts its max-age and idle timers on channelActive, which this channel
        // passed before the manager existed; the HTTP/2 handler does not forward a second one.
        try channel.pipeline.syncOperations.context(handlerType: NIOHTTP2Handler.self).fireChannelActive()
        configured.whenComplete { result in
            switch result {
            case .success(let connection):
                carrier.eventLoop.execute {
                    carrier.pipeline.fireChannelRead(NIOAny(connection))
                    carrier.pipeline.fireChannelReadComplete()
                }
            case .failure:
                channel.close(promise: nil)
            }
        }
    }

    /// Ends the transport's stream of connections; connections already handed over keep being served.
    func close() async {
        let carrier = state.withLock { state -> (any Channel)? in
            defer { state = .closed }
            guard case .serving(_, let carrier) = state else { return nil }
            return carrier
        }
        startedContinuation.finish()
        try? await carrier?.close()
    }
}
