import GRPCCore
import NIOCore
import RaftKV

/// The peer port's gRPC service `raftkv.Peer`, for the calls that are not Raft messages (those go on raw
/// streams, ``PeerStreamWire``). Its messages are raw bytes (no protobuf): `Forward`/`ClusterInfo` carry payloads
/// the server layer encodes.
enum PeerRPC {
    static let service = ServiceDescriptor(fullyQualifiedService: "raftkv.Peer")
    /// Unary: a client request forwarded from a follower to the leader; opaque bytes both ways.
    static let forward = MethodDescriptor(service: service, method: "Forward", type: .unary)
    /// Unary: empty request; the cluster ID and member list, for a member that joins.
    static let clusterInfo = MethodDescriptor(service: service, method: "ClusterInfo", type: .unary)

    /// etcd's words to a removed member; the transport of a member that reads them stops the member.
    static let memberRemovedMessage = "rafthttp: the member has been permanently removed from the cluster"

    /// Member and cluster IDs as etcd prints them: lowercase hex.
    static func hex(_ id: UInt64) -> String { String(id, radix: 16) }
}

/// How Raft messages travel between members: one TCP (or TLS) connection per sender and receiver, opened by the
/// sender, on the receiver's peer port (which tells it from gRPC by its first bytes).
///
/// The sender writes ``preface``, then frames: a 4-byte big-endian length and that many bytes of ``PeerFrame``.
/// The receiver writes frames of the same shape back, but only two kinds: empty ones (keep-alives) and at most
/// one refusal (a ``Refusal``), after which it closes. A frame of length 0 either way is a keep-alive: each side
/// sends one after ``Liveness/keepaliveInterval`` without writing, and drops a connection that sent nothing for
/// ``Liveness/silenceLimit``, so that a peer that vanished without closing is noticed. As etcd's rafthttp streams, this is
/// a pipe of messages, not a call per message: no per-message framing beyond the length, no acknowledgement
/// (Raft has its own).
enum PeerStreamWire {
    /// Cannot be taken for the HTTP/2 client preface ("PRI …") or a TLS record.
    static let preface: [UInt8] = Array("RAFTKV-STREAM/1\n".utf8)
    /// When a stream's ends send keep-alives, and when they give up on a silent one.
    struct Liveness: Sendable {
        var keepaliveInterval: TimeAmount = .seconds(2)
        /// As the gRPC keep-alive the streams had before: a ping every 10 s, answered within 5 s.
        var silenceLimit: TimeAmount = .seconds(15)

        static let standard = Liveness()

        /// Fires the write-idle event that sends a keep-alive, and the read-idle event that ends a silent stream.
        func idleStateHandler() -> IdleStateHandler {
            precondition(keepaliveInterval < silenceLimit, "keep-alives must come before the other end gives up")
            return IdleStateHandler(readTimeout: silenceLimit, writeTimeout: keepaliveInterval)
        }
    }
    /// The largest frame a sender accepts from a receiver (a refusal's text).
    static let maxReplyFrameBytes = 64 * 1024

    /// Appends one frame of `messages` to `buffer`.
    static func writeFrame(clusterID: UInt64, from: NodeID, to: NodeID, messages: some Sequence<Message>,
                           into buffer: inout ByteBuffer) {
        let frame = PeerFrame.encode(clusterID: clusterID, from: from, to: to, messages: messages)
        precondition(frame.count <= UInt32.max, "a frame length fits its 4 bytes")
        buffer.writeInteger(UInt32(frame.count))
        buffer.writeBytes(frame)
    }

    /// Writes and flushes an empty frame, from a handler at the end of a stream's pipeline.
    static func sendKeepalive(on context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: 4)
        buffer.writeInteger(UInt32(0))
        context.writeAndFlush(NIOAny(buffer), promise: nil)
    }

    /// Why a receiver refused a stream: a gRPC status code, as the streams had when they were gRPC calls, so that
    /// the sender treats both alike.
    struct Refusal: Error, Equatable {
        var code: RPCError.Code
        var message: String

        init(code: RPCError.Code, message: String) {
            self.code = code
            self.message = message
        }

        init(_ error: RPCError) {
            self.init(code: error.code, message: error.message)
        }

        func write(into buffer: inout ByteBuffer) {
            let text = Array(message.utf8.prefix(maxReplyFrameBytes - 1))
            buffer.writeInteger(UInt32(1 + text.count))
            buffer.writeInteger(UInt8(code.rawValue))
            buffer.writeBytes(text)
        }

        /// Reads a non-empty reply frame's payload.
        static func read(_ payload: ByteBuffer) -> Refusal {
            var payload = payload
            let code = payload.readInteger(as: UInt8.self).flatMap { Status.Code(rawValue: Int($0)) }.flatMap(RPCError.Code.init) ?? .unknown
            let message = payload.readString(length: payload.readableBytes) ?? ""
            return Refusal(code: code, message: message)
        }
    }

    enum DecodingError: Error, CustomStringConvertible {
        case frameTooLarge(bytes: UInt32, limit: Int)

        var description: String {
            switch self {
            case .frameTooLarge(let bytes, let limit): "rafthttp: frame of \(bytes) bytes exceeds the limit of \(limit)"
            }
        }
    }

    /// Splits a stream into the payloads of its frames (empty for keep-alives), refusing frames above a limit
    /// before buffering them.
    struct FrameDecoder: ByteToMessageDecoder {
        typealias InboundOut = ByteBuffer
        let maxFrameBytes: Int

        mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
            guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
            guard length <= maxFrameBytes else {
                throw DecodingError.frameTooLarge(bytes: length, limit: maxFrameBytes)
            }
            guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
            buffer.moveReaderIndex(forwardBy: 4)
            context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
            return .continue
        }

        mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer,
                                 seenEOF: Bool) throws -> DecodingState {
            // A partial frame at the end is dropped: the connection is gone, and Raft resends what matters.
            while try decode(context: context, buffer: &buffer) == .continue {}
            return .needMoreData
        }
    }
}

enum PeerLimits {
    /// Byte budget of one frame on the sending side. Raft's appends are ≤ 1 MiB (`maxMessageBytes`, bar a single
    /// larger entry) and snapshot chunks ≤ 1 MiB, so a frame carries several of them.
    static let frameBudgetBytes = 4 << 20
    /// The largest Raft stream frame or gRPC message either side accepts. Far above the frame budget, because a single message that
    /// exceeds the budget is still sent alone (an entry near etcd's 1.5 MiB request limit, plus overhead), and
    /// forwarded requests go up to `--max-request-bytes` plus their envelope.
    static let maxMessageBytes = 16 << 20
}

/// `[UInt8]` as a gRPC message, unchanged.
struct RawBytesCodec: MessageSerializer, MessageDeserializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes {
        Bytes(message)
    }

    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
        serializedMessageBytes.withUnsafeBytes { Array($0) }
    }
}

/// One frame of a Raft stream: who sends to whom in which cluster, then Raft messages, each a length-prefixed
/// ``MessageCodec`` encoding. The header comes first so that the receiver refuses a foreign frame before it decodes
/// any message.
struct PeerFrame: Sendable, Equatable {
    var clusterID: UInt64
    var from: NodeID
    var to: NodeID
    /// Encoded messages, decoded only once the header is accepted.
    var encodedMessages: [[UInt8]]

    static func encode(clusterID: UInt64, from: NodeID, to: NodeID, messages: some Sequence<Message>) -> [UInt8] {
        var writer = BinaryWriter(capacity: 64)
        writer.unsigned(clusterID)
        writer.unsigned(from)
        writer.unsigned(to)
        for message in messages {
            writer.blob(MessageCodec.encode(message))
        }
        return writer.bytes
    }

    static func decode(_ bytes: [UInt8]) throws(BinaryDecodingError) -> PeerFrame {
        var reader = BinaryReader(bytes)
        let clusterID = try reader.unsigned()
        let from = try reader.unsigned()
        let to = try reader.unsigned()
        var messages: [[UInt8]] = []
        while !reader.isAtEnd {
            messages.append(try reader.blob())
        }
        return PeerFrame(clusterID: clusterID, from: from, to: to, encodedMessages: messages)
    }
}


extension CallOptions {
    /// The options of every peer call: message sizes large enough for frames and forwarded requests.
    static func peer(timeout: Duration? = nil) -> CallOptions {
        var options = CallOptions.defaults
        options.maxRequestMessageBytes = PeerLimits.maxMessageBytes
        options.maxResponseMessageBytes = PeerLimits.maxMessageBytes
        options.timeout = timeout
        return options
    }
}
