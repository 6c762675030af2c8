import GRPCCore
import RaftKV

/// The member-to-member gRPC service `raftkv.Peer`. Its messages are raw bytes (no protobuf): the Raft messages
/// inside a frame have their own versioned codec (``MessageCodec``), and `Forward`/`ClusterInfo` carry payloads the
/// server layer encodes.
enum PeerRPC {
    static let service = ServiceDescriptor(fullyQualifiedService: "raftkv.Peer")
    /// Client streaming: one ``PeerFrame`` per request message; the response is empty.
    static let stream = MethodDescriptor(service: service, method: "Stream", type: .clientStreaming)
    /// Unary: a client request forwarded from a follower to the leader; opaque bytes both ways.
    static let forward = MethodDescriptor(service: service, method: "Forward", type: .unary)
    /// Unary: empty request; the cluster ID and member list, for a member that joins.
    static let clusterInfo = MethodDescriptor(service: service, method: "ClusterInfo", type: .unary)

    /// etcd's words to a removed member; the transport of a member that reads them stops the member.
    static let memberRemovedMessage = "rafthttp: the member has been permanently removed from the cluster"

    /// Member and cluster IDs as etcd prints them: lowercase hex.
    static func hex(_ id: UInt64) -> String { String(id, radix: 16) }
}

enum PeerLimits {
    /// Byte budget of one frame on the sending side. Raft's appends are ≤ 1 MiB (`maxMessageBytes`, bar a single
    /// larger entry) and snapshot chunks ≤ 1 MiB, so a frame carries several of them.
    static let frameBudgetBytes = 4 << 20
    /// The largest gRPC message either side accepts. Far above the frame budget, because a single message that
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

/// One request message of `Stream`: who sends to whom in which cluster, then Raft messages, each a length-prefixed
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
