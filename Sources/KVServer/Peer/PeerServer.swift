import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOCore
import NIOSSL
import Synchronization

/// The peer port: receives Raft streams (``PeerStreamWire``) and serves the `raftkv.Peer` gRPC calls on one
/// listen address, telling them apart by their first bytes, as the client port tells gRPC from HTTP.
///
/// ```swift
/// let server = try PeerServer(listeningOn: PeerAddress(url: "http://127.0.0.1:2380"), service: service)
/// group.addTask { try await server.serve() }
/// let port = try await server.boundPort()
/// ```
final class PeerServer: Sendable {
    private let host: String
    private let port: Int
    private let service: PeerService
    private let tls: NIOSSLContext?
    private let liveness: PeerStreamWire.Liveness
    private let handoff = GRPCHandoff()
    private let grpcServer: GRPCServer<HTTP2ServerTransport.Custom<GRPCHandoff>>
    private let bound = OneShot<Int>()
    private let shutdownRequests: AsyncStream<Void>
    private let shutdownContinuation: AsyncStream<Void>.Continuation

    /// How long a new connection may take to show whether it is a Raft stream or gRPC.
    static let sniffTimeout: TimeAmount = .seconds(10)

    /// - Parameter address: must be an IP address (or `localhost`); port 0 binds an ephemeral port.
    init(listeningOn address: PeerAddress, service: PeerService, liveness: PeerStreamWire.Liveness = .standard) throws {
        host = try address.bindHost()
        self.liveness = liveness
        port = address.port
        self.service = service
        tls = try address.tls?.serverContext(applicationProtocols: ["h2"])
        var config = HTTP2ServerTransport.Custom<GRPCHandoff>.Config.defaults
        config.rpc.maxRequestPayloadSize = PeerLimits.maxMessageBytes
        grpcServer = GRPCServer(transport: HTTP2ServerTransport.Custom(listenerFactory: handoff, config: config),
                                services: [service])
        (shutdownRequests, shutdownContinuation) = AsyncStream.makeStream(of: Void.self,
                                                                          bufferingPolicy: .bufferingNewest(1))
    }

    /// Serves until ``beginGracefulShutdown()`` lets the open calls finish, or until the task is cancelled (which
    /// breaks every connection at once, as a crash would).
    func serve() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await self.grpcServer.serve() }
            await handoff.waitUntilServing()
            let listener: SniffingListener
            do {
                listener = try await SniffingListener.bind(host: host, port: port, tls: tls,
                                                           allowRemoteHalfClosure: false) { [service, handoff, tls, liveness] _ in
                    Self.sniffer(service: service, grpc: handoff, tls: tls != nil, liveness: liveness)
                }
            } catch {
                bound.fail(error)
                grpcServer.beginGracefulShutdown()
                throw error
            }
            bound.succeed(listener.port)
            for await _ in shutdownRequests { break }
            // Raft streams close at once (their senders reconnect elsewhere or later); calls get a moment.
            await listener.close(grace: Task.isCancelled ? .zero : .seconds(1))
            await handoff.close()
            grpcServer.beginGracefulShutdown()
        }
    }

    private static func sniffer(service: PeerService, grpc: GRPCHandoff, tls: Bool,
                                liveness: PeerStreamWire.Liveness) -> PrefaceSniffer {
        let raftRoute = PrefaceSniffer.Route(preface: PeerStreamWire.preface, passesPreface: false) { context, _ in
            let pipeline = context.pipeline.syncOperations
            try pipeline.addHandlers([
                liveness.idleStateHandler(),
                ByteToMessageHandler(PeerStreamWire.FrameDecoder(maxFrameBytes: PeerLimits.maxMessageBytes)),
                PeerStreamReceiver(service: service, silenceLimit: liveness.silenceLimit),
            ], position: .after(context.handler))
        }
        let grpcRoute = PrefaceSniffer.Route(preface: ClientListener.http2Preface) { context, _ in
            try grpc.serve(context.channel, tls: tls)
        }
        return PrefaceSniffer(routes: [raftRoute, grpcRoute], fallback: nil, timeout: sniffTimeout,
                              logger: service.logger)
    }

    /// The port the server listens on, once it does (the actual port when bound to port 0). Throws when the
    /// server failed to bind.
    func boundPort() async throws -> Int {
        try await bound.value()
    }

    func beginGracefulShutdown() {
        shutdownContinuation.yield()
    }
}

/// The receiving end of one Raft stream: hands each frame to ``PeerService/receive(frame:)``; a refused frame
/// is answered with the refusal and the connection closes.
final class PeerStreamReceiver: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let service: PeerService
    private let silenceLimit: TimeAmount
    private var refused = false

    init(service: PeerService, silenceLimit: TimeAmount) {
        self.service = service
        self.silenceLimit = silenceLimit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        // Keep-alives are empty; anything after a refusal is the sender's backlog, not to be delivered.
        guard frame.readableBytes > 0, !refused else { return }
        do throws(RPCError) {
            try service.receive(frame: Array(frame.readableBytesView))
        } catch {
            refuse(context: context, PeerStreamWire.Refusal(error))
        }
    }

    private func refuse(context: ChannelHandlerContext, _ refusal: PeerStreamWire.Refusal) {
        guard !refused else { return }
        refused = true
        service.logger.warning("refused a peer frame: \(refusal.message)")
        var buffer = context.channel.allocator.buffer(capacity: 64 + refusal.message.utf8.count)
        refusal.write(into: &buffer)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case IdleStateHandler.IdleStateEvent.write:
            PeerStreamWire.sendKeepalive(on: context)
        case IdleStateHandler.IdleStateEvent.read:
            service.logger.debug("closing a Raft stream whose sender was silent for \(silenceLimit)")
            context.close(promise: nil)
        case is ChannelShouldQuiesceEvent, ChannelEvent.inputClosed:
            context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? PeerStreamWire.DecodingError {
            refuse(context: context, PeerStreamWire.Refusal(code: .invalidArgument, message: "\(error)"))
        } else {
            service.logger.debug("a Raft stream failed: \(error)")
            context.close(promise: nil)
        }
    }
}

/// A value that is set once and awaited by any number of tasks.
final class OneShot<Value: Sendable>: Sendable {
    private let state = Mutex<(result: Result<Value, any Error>?, waiters: [CheckedContinuation<Value, any Error>])>(
        (nil, []))

    func succeed(_ value: Value) { complete(.success(value)) }

    func fail(_ error: any Error) { complete(.failure(error)) }

    private func complete(_ result: Result<Value, any Error>) {
        let waiters = state.withLock { state in
            guard state.result == nil else { return [CheckedContinuation<Value, any Error>]() }
            state.result = result
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    func value() async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            let result = state.withLock { state in
                if state.result == nil { state.waiters.append(continuation) }
                return state.result
            }
            if let result { continuation.resume(with: result) }
        }
    }
}
