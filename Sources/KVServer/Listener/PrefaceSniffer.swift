import Logging
import NIOCore

/// The first handler of every accepted connection on a port that serves several protocols: waits until the
/// first bytes match one route's preface (or can match none), then lets that route configure the pipeline and
/// leaves it, passing on what it read.
///
/// Prefaces are compared byte by byte as they arrive, so a connection is decided as soon as its bytes can only
/// be one thing: a route once its whole preface arrived, the fallback as soon as no preface can match any more.
final class PrefaceSniffer {
    /// One protocol the port speaks, recognised by the bytes its clients open with.
    struct Route {
        var preface: [UInt8]
        /// Whether the protocol's handlers read the preface too (HTTP/2's is part of the protocol), or only what
        /// follows it (a preface that only names the protocol).
        var passesPreface = true
        /// Configures the pipeline for the protocol, before any of the connection's bytes are passed on.
        /// `deadline` is when sniffing would have timed out, for protocols that bound their first request by it.
        var configure: (ChannelHandlerContext, _ deadline: NIODeadline) throws -> Void
    }

    private enum State {
        case sniffing
        case done
    }

    private let routes: [Route]
    /// For a connection no route matches; nil closes it.
    private let fallback: Route?
    private let timeout: TimeAmount
    private let logger: Logger

    private var state = State.sniffing
    private var buffered: ByteBuffer?
    private var deadline: NIODeadline?
    private var timer: Scheduled<Void>?

    /// - Parameters:
    ///   - timeout: how long a connection may take to show its protocol; silent or trickling clients would
    ///     otherwise hold a socket for ever.
    ///   - fallback: takes a connection as soon as no route can match it (its `preface` is ignored).
    init(routes: [Route], fallback: Route?, timeout: TimeAmount, logger: Logger) {
        precondition(!routes.isEmpty && routes.allSatisfy { !$0.preface.isEmpty }, "routes need prefaces")
        self.routes = routes
        self.fallback = fallback
        self.timeout = timeout
        self.logger = logger
    }

    private func armTimeout(context: ChannelHandlerContext) {
        guard timer == nil else { return }
        let deadline = NIODeadline.now() + timeout
        self.deadline = deadline
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            guard let self, case .sniffing = self.state else { return }
            self.logger.debug("closing a connection that did not show its protocol in time")
            context.close(promise: nil)
        }
    }

    private func decide(context: ChannelHandlerContext) {
        guard let buffered else { return }
        let bytes = buffered.readableBytesView
        var undecided = false
        for route in routes {
            let compared = min(bytes.count, route.preface.count)
            guard bytes.prefix(compared).elementsEqual(route.preface.prefix(compared)) else { continue }
            if compared == route.preface.count {
                take(route, context: context)
                return
            }
            undecided = true
        }
        if undecided { return }
        if let fallback {
            take(fallback, context: context)
        } else {
            logger.debug("closing a connection that speaks none of the port's protocols")
            state = .done
            context.close(promise: nil)
        }
    }

    private func take(_ route: Route, context: ChannelHandlerContext) {
        state = .done
        timer?.cancel()
        timer = nil
        do {
            try route.configure(context, deadline ?? .now() + timeout)
        } catch {
            logger.warning("could not set up a connection", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        if !route.passesPreface {
            buffered?.moveReaderIndex(forwardBy: route.preface.count)
        }
        // What was read so far goes to the handlers that now own the connection.
        if let buffered, buffered.readableBytes > 0 {
            self.buffered = nil
            context.fireChannelRead(NIOAny(buffered))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

extension PrefaceSniffer: ChannelInboundHandler, RemovableChannelHandler {
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
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .sniffing:
            var bytes = unwrapInboundIn(data)
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
        logger.debug("connection failed before its protocol was known", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
