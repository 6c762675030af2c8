import GRPCCore
import Logging
import RaftKV

/// The receiving side of the peer port: checks every Raft stream frame's cluster, receiver and sender before
/// handing its messages to Raft, and answers the gRPC calls `Forward` and `ClusterInfo` through closures of the
/// server layer.
///
/// A refused frame ends its stream with the refusal (the sender reconnects with backoff); the server keeps
/// serving every other stream.
struct PeerService: RegistrableRPCService {
    let clusterID: UInt64
    let localID: NodeID
    private let isMember: @Sendable (NodeID) -> Bool
    private let isRemoved: @Sendable (NodeID) -> Bool
    private let deliver: @Sendable (Message) -> Void
    private let forwardHandler: @Sendable ([UInt8]) async throws -> [UInt8]
    private let clusterInfoHandler: @Sendable () async throws -> [UInt8]
    let logger: Logger

    /// - Parameters:
    ///   - isMember: whether a sender is a current member; frames from unknown or removed members are refused.
    ///   - isRemoved: whether a refused sender was removed from the cluster (it is then told so, and stops);
    ///     asked only for senders `isMember` refused.
    ///   - deliver: takes each accepted message (e.g. ``KVStore/deliver(_:)``); must not block.
    ///   - forward: answers a request forwarded by a follower. An ``RPCError`` it throws reaches the caller as it is.
    ///   - clusterInfo: the cluster ID and member list, for a member that joins.
    init(clusterID: UInt64, localID: NodeID, isMember: @escaping @Sendable (NodeID) -> Bool,
         isRemoved: @escaping @Sendable (NodeID) -> Bool = { _ in false },
         deliver: @escaping @Sendable (Message) -> Void,
         forward: @escaping @Sendable ([UInt8]) async throws -> [UInt8],
         clusterInfo: @escaping @Sendable () async throws -> [UInt8],
         logger: Logger) {
        precondition(localID != 0, "member ID 0 is reserved for 'none'")
        self.clusterID = clusterID
        self.localID = localID
        self.isMember = isMember
        self.isRemoved = isRemoved
        self.deliver = deliver
        self.forwardHandler = forward
        self.clusterInfoHandler = clusterInfo
        self.logger = logger
    }

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        router.registerHandler(forMethod: PeerRPC.forward, deserializer: RawBytesCodec(), serializer: RawBytesCodec()) {
            request, _ in
            let single = try await ServerRequest(stream: request)
            let reply = try await Self.answer { try await forwardHandler(single.message) }
            return StreamingServerResponse(single: ServerResponse(message: reply))
        }
        router.registerHandler(forMethod: PeerRPC.clusterInfo, deserializer: RawBytesCodec(), serializer: RawBytesCodec()) {
            request, _ in
            _ = try await ServerRequest(stream: request)
            let reply = try await Self.answer { try await clusterInfoHandler() }
            return StreamingServerResponse(single: ServerResponse(message: reply))
        }
    }

    /// Checks one frame and delivers its messages. Nothing of a refused frame is delivered: every message is
    /// decoded and checked before the first goes to Raft.
    func receive(frame bytes: [UInt8]) throws(RPCError) {
        let frame: PeerFrame
        do { frame = try PeerFrame.decode(bytes) } catch {
            throw RPCError(code: .invalidArgument, message: "rafthttp: malformed frame: \(error)")
        }
        guard frame.clusterID == clusterID else {
            throw RPCError(code: .failedPrecondition, message: """
                rafthttp: cluster ID mismatch: member \(PeerRPC.hex(localID)) is in cluster \(PeerRPC.hex(clusterID)), \
                member \(PeerRPC.hex(frame.from)) sent a frame for cluster \(PeerRPC.hex(frame.clusterID))
                """)
        }
        guard frame.to == localID else {
            throw RPCError(code: .failedPrecondition, message: """
                rafthttp: frame for member \(PeerRPC.hex(frame.to)) reached member \(PeerRPC.hex(localID)) \
                (stale peer URL?)
                """)
        }
        guard frame.from != localID, isMember(frame.from) else {
            if isRemoved(frame.from) { throw RPCError(code: .permissionDenied, message: PeerRPC.memberRemovedMessage) }
            throw RPCError(code: .permissionDenied, message: """
                rafthttp: member \(PeerRPC.hex(frame.from)) is not a member of cluster \(PeerRPC.hex(clusterID)) \
                (removed or unknown)
                """)
        }
        var messages: [Message] = []
        messages.reserveCapacity(frame.encodedMessages.count)
        for encoded in frame.encodedMessages {
            let message: Message
            do { message = try MessageCodec.decode(encoded) } catch {
                throw RPCError(code: .invalidArgument, message: """
                    rafthttp: malformed message from member \(PeerRPC.hex(frame.from)): \(error)
                    """)
            }
            // A message must travel in its own sender's frame to its own receiver, or the checks above mean nothing.
            guard message.from == frame.from, message.to == localID else {
                throw RPCError(code: .invalidArgument, message: """
                    rafthttp: message from \(PeerRPC.hex(message.from)) to \(PeerRPC.hex(message.to)) in a frame \
                    from \(PeerRPC.hex(frame.from)) to \(PeerRPC.hex(frame.to))
                    """)
            }
            messages.append(message)
        }
        for message in messages {
            deliver(message)
        }
    }

    /// Runs a handler, passing its ``RPCError`` through unchanged and naming any other error, which gRPC would
    /// otherwise reduce to "unknown error".
    private static func answer(_ body: () async throws -> [UInt8]) async throws(RPCError) -> [UInt8] {
        do {
            return try await body()
        } catch let error as RPCError {
            throw error
        } catch {
            throw RPCError(code: .unknown, message: "\(error)")
        }
    }
}
