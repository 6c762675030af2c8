import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// The first handler of every accepted connection: waits for enough bytes to tell gRPC from HTTP/1.1, then
/// replaces itself with the pipeline for that protocol.
///
/// gRPC clients open with the HTTP/2 client preface (prior knowledge, no upgrade), which no HTTP/1.1 request
/// can begin with, so the first 24 bytes decide; a connection is HTTP/1.1 as soon as one byte differs from the
/// preface, which lets garbage reach the HTTP/1.1 parser and be refused there with a 400.
final class ClientProtocolSniffer {
    static let http2Preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private enum State {
        case sniffing
        /// The preface arrived; the internal gRPC connection is being opened and reads are held meanwhile, so
        /// at most one read's worth of bytes waits here.
        case connecting
        case done
    }

    private let grpcAddress: SocketAddress
    private let endpoints: HTTPEndpoints
    /// Set when client certificates name users: the proxied connection is recorded there.
    private let certificateIdentities: ClientCertificateIdentities?
    private let configuration: ClientListener.Configuration
    private let logger: Logger

    private var state = State.sniffing
    private var buffered: ByteBuffer?
    private var readPending = false
    private var inputClosedWhileConnecting = false
    private var deadline: NIODeadline?
    private var timeout: Scheduled<Void>?

    init(grpcAddress: SocketAddress, endpoints: HTTPEndpoints, certificateIdentities: ClientCertificateIdentities? = nil,
         configuration: ClientListener.Configuration, logger: Logger) {
        self.grpcAddress = grpcAddress
        self.endpoints = endpoints
        self.certificateIdentities = certificateIdentities
        self.configuration = configuration
        self.logger = logger
    }

    private func armTimeout(context: ChannelHandlerContext) {
        guard timeout == nil else { return }
        let deadline = NIODeadline.now() + configuration.sniffTimeout
        self.deadline = deadline
        timeout = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            guard let self, case .sniffing = self.state else { return }
            self.logger.debug("closing a client connection that did not open a request in time")
            context.close(promise: nil)
        }
    }

    private func cancelTimeout() {
        timeout?.cancel()
        timeout = nil
    }

    private func decide(context: ChannelHandlerContext) {
        guard let buffered else { return }
        let preface = Self.http2Preface
        let bytes = buffered.readableBytesView
        let compared = min(bytes.count, preface.count)
        if !bytes.prefix(compared).elementsEqual(preface.prefix(compared)) {
            switchToHTTP1(context: context)
        } else if compared == preface.count {
            switchToGRPC(context: context)
        }
        // Otherwise a strict prefix of the preface: wait for more.
    }

    private func switchToHTTP1(context: ChannelHandlerContext) {
        state = .done
        cancelTimeout()
        do {
            let pipeline = context.pipeline.syncOperations
            try pipeline.configureHTTPServerPipeline(
                position: .after(self), withPipeliningAssistance: true, withErrorHandling: true)
            // The request must complete within the time left for sniffing, not within a fresh period.
            try pipeline.addHandler(
                HTTPEndpointHandler(
                    endpoints: endpoints,
                    requestTimeout: configuration.httpRequestTimeout,
                    maxRequestBodyBytes: configuration.maxRequestBodyBytes,
                    firstRequestDeadline: deadline ?? .now() + configuration.httpRequestTimeout
                ),
                position: .last
            )
        } catch {
            logger.debug("could not set up an HTTP/1.1 connection", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        handOver(context: context)
    }

    private func switchToGRPC(context: ChannelHandlerContext) {
        state = .connecting
        cancelTimeout()
        let (downstreamGlue, upstreamGlue) = ProxyGlueHandler.matchedPair()
        let upstreamGlueBound = NIOLoopBound(upstreamGlue, eventLoop: context.eventLoop)
        // Same event loop as the client's socket: the glue handlers call each other directly.
        ClientBootstrap(group: context.eventLoop)
            .connectTimeout(configuration.upstreamConnectTimeout)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(upstreamGlueBound.value)
                }
            }
            .connect(to: grpcAddress)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    self.logger.warning(
                        "could not reach the gRPC server for a client connection",
                        metadata: ["grpc": "\(self.grpcAddress)", "error": "\(error)"])
                    context.close(promise: nil)
                case .success(let upstream):
                    guard context.channel.isActive, upstream.isActive else {
                        upstream.close(promise: nil)
                        context.close(promise: nil)
                        return
                    }
                    do {
                        try context.pipeline.syncOperations.addHandler(downstreamGlue, position: .after(self))
                    } catch {
                        upstream.close(promise: nil)
                        context.close(promise: nil)
                        return
                    }
                    // Before any byte goes upstream, so the first call already knows its user.
                    if let identities = self.certificateIdentities,
                       let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
                       let certificate = tls.peerCertificate,
                       let user = ClientCertificateIdentities.commonName(of: certificate) {
                        identities.register(user: user, upstream: upstream)
                    }
                    self.state = .done
                    self.handOver(context: context)
                }
            }
    }

    /// Passes what was read so far to the handlers that now own the connection and leaves the pipeline.
    private func handOver(context: ChannelHandlerContext) {
        let channel = context.channel
        if let buffered, buffered.readableBytes > 0 {
            self.buffered = nil
            context.fireChannelRead(NIOAny(buffered))
            context.fireChannelReadComplete()
        }
        if inputClosedWhileConnecting {
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        if readPending {
            readPending = false
            // Through the whole pipeline again, now without this handler.
            channel.read()
        }
    }
}

extension ClientProtocolSniffer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive {
            armTimeout(context: context)
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        armTimeout(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimeout()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        switch state {
        case .sniffing, .connecting:
            if buffered == nil {
                buffered = bytes
            } else {
                buffered!.writeBuffer(&bytes)
            }
            if case .sniffing = state {
                decide(context: context)
            }
        case .done:
            context.fireChannelRead(data)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case ChannelEvent.inputClosed = event else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch state {
        case .sniffing:
            // Half a preface then silence for ever: there is nothing to answer.
            context.close(promise: nil)
        case .connecting:
            inputClosedWhileConnecting = true
        case .done:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("client connection failed before its protocol was known", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func read(context: ChannelHandlerContext) {
        if case .connecting = state {
            readPending = true
        } else {
            context.read()
        }
    }
}
