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
        case done
    }

    private let grpc: GRPCHandoff
    /// Whether the connection came through TLS (the gRPC scheme is https then).
    private let tls: Bool
    private let endpoints: HTTPEndpoints
    /// Set when client certificates name users: the connection's user is recorded there.
    private let certificateIdentities: ClientCertificateIdentities?
    private let configuration: ClientListener.Configuration
    private let logger: Logger

    private var state = State.sniffing
    private var buffered: ByteBuffer?
    private var deadline: NIODeadline?
    private var timeout: Scheduled<Void>?

    init(grpc: GRPCHandoff, tls: Bool, endpoints: HTTPEndpoints,
         certificateIdentities: ClientCertificateIdentities? = nil, configuration: ClientListener.Configuration,
         logger: Logger) {
        self.grpc = grpc
        self.tls = tls
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
        state = .done
        cancelTimeout()
        do {
            // Before any byte reaches gRPC, so the first call already knows its user.
            if let identities = certificateIdentities,
               let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
               let certificate = tls.peerCertificate,
               let user = ClientCertificateIdentities.commonName(of: certificate) {
                identities.register(user: user, connection: context.channel)
            }
            try grpc.serve(context.channel, tls: tls)
        } catch {
            logger.warning("could not hand a client connection to the gRPC server", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        handOver(context: context)
    }

    /// Passes what was read so far to the handlers that now own the connection and leaves the pipeline.
    private func handOver(context: ChannelHandlerContext) {
        if let buffered, buffered.readableBytes > 0 {
            self.buffered = nil
            context.fireChannelRead(NIOAny(buffered))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

extension ClientProtocolSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

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
        case .sniffing:
            if buffered == nil {
                buffered = bytes
            } else {
                buffered!.writeBuffer(&bytes)
            }
            decide(context: context)
        case .done:
            context.fireChannelRead(data)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch (state, event) {
        case (.sniffing, ChannelEvent.inputClosed):
            // Half a preface then silence for ever: there is nothing to answer.
            context.close(promise: nil)
        case (.sniffing, is ChannelShouldQuiesceEvent):
            // The listener is closing and no request has begun.
            context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("client connection failed before its protocol was known", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
