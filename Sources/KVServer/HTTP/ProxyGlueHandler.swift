import NIOCore

/// One end of a byte-for-byte proxy between two channels on the same event loop: what one channel reads,
/// its partner writes.
///
/// Back-pressure: a handler lets its channel read only while the partner channel is writable, so a slow
/// reader on either side stops the other side's reads (and TCP pushes back on its sender) instead of growing
/// the partner's outbound buffer.
///
/// Closure: end of input on one side shuts the output of the other once everything forwarded has been
/// written (half-closure, so a client that shuts its write side still gets its answers); a side that is gone
/// altogether closes the other after the same flush. Both channels need `allowRemoteHalfClosure`.
final class ProxyGlueHandler {
    private var partner: ProxyGlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputClosed = false

    private init() {}

    /// Two handlers glued to each other, one for each channel.
    static func matchedPair() -> (ProxyGlueHandler, ProxyGlueHandler) {
        let first = ProxyGlueHandler()
        let second = ProxyGlueHandler()
        first.partner = second
        second.partner = first
        return (first, second)
    }
}

// The partner's calls on this handler.
extension ProxyGlueHandler {
    private func partnerWrite(_ buffer: ByteBuffer) {
        context?.write(NIOAny(buffer), promise: nil)
    }

    private func partnerFlush() {
        context?.flush()
    }

    private var partnerWritable: Bool {
        context?.channel.isWritable ?? false
    }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    /// The partner will send nothing more: after what it sent has gone out, shut this side's output, or
    /// close this side altogether if the partner is gone (nothing read here could be delivered).
    private func partnerFinished(partnerGone: Bool) {
        guard let context else { return }
        let channel = context.channel
        let closeAll = partnerGone || inputClosed
        // Writes complete in order, so this empty write completes once every forwarded byte is written;
        // closing at once would discard bytes still queued behind a slow reader.
        let flushed = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(NIOAny(ByteBuffer()), promise: flushed)
        flushed.futureResult.whenComplete { _ in
            channel.close(mode: closeAll ? .all : .output, promise: nil)
        }
    }
}

extension ProxyGlueHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.partnerWrite(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        let partner = self.partner
        self.partner = nil
        partner?.partner = nil
        partner?.partnerFinished(partnerGone: true)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            inputClosed = true
            partner?.partnerFinished(partnerGone: false)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A reset or failed write: the byte stream is broken, so neither side can continue. Closing this side
        // closes the partner through channelInactive.
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            partner?.partnerBecameWritable()
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let partner, partner.partnerWritable {
            context.read()
        } else {
            pendingRead = true
        }
    }
}
