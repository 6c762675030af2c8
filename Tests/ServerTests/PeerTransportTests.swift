// The member-to-member transport on the loopback interface: PeerTransport (sender) against PeerService behind a
// PeerServer (receiver), Raft streams and gRPC calls, and three embedded stores replicating through them.

import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing
@testable import KVServer
@testable import RaftKV

// MARK: - Support

private let testClusterID: UInt64 = 0x1c2d_3e4f

private func quietLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = .critical
    return logger
}

/// Polls `condition` every 10 ms, at most `seconds × 100` times (counting polls, not wall time, so that a loaded
/// machine slows the test down rather than failing it).
private func eventually(_ what: String, seconds: Double = 5, _ condition: () async throws -> Bool) async throws {
    for _ in 0..<Int(seconds * 100) {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    Issue.record("not reached within \(seconds) s: \(what)")
    throw CancellationError()
}

private func heartbeat(from: NodeID, to: NodeID, _ sequence: UInt64) -> Message {
    Message(from: from, to: to, term: 3, body: .heartbeat(commit: 0, readSequence: sequence))
}

private func sequenceNumber(of message: Message) -> UInt64 {
    if case .heartbeat(_, let sequence) = message.body { return sequence }
    return 0
}

/// What a PeerService delivered.
private final class Inbox: Sendable {
    private let messages = Mutex<[Message]>([])

    func append(_ message: Message) { messages.withLock { $0.append(message) } }
    var all: [Message] { messages.withLock { $0 } }
    var count: Int { messages.withLock { $0.count } }
}

/// A member's receiving side: a PeerServer whose PeerService records what it delivers.
private final class TestPeer: Sendable {
    let id: NodeID
    let inbox: Inbox
    private let server: PeerServer
    private let task: Task<Void, any Error>

    init(id: NodeID, clusterID: UInt64 = testClusterID, members: Set<NodeID>, port: Int = 0,
         liveness: PeerStreamWire.Liveness = .standard,
         forward: @escaping @Sendable ([UInt8]) async throws -> [UInt8] = { $0 },
         clusterInfo: @escaping @Sendable () async throws -> [UInt8] = { [] }) throws {
        self.id = id
        let inbox = Inbox()
        self.inbox = inbox
        let service = PeerService(clusterID: clusterID, localID: id, isMember: { members.contains($0) },
                                  deliver: { [inbox] in inbox.append($0) }, forward: forward, clusterInfo: clusterInfo,
                                  logger: quietLogger("peer-service"))
        let server = try PeerServer(listeningOn: PeerAddress(host: "127.0.0.1", port: port), service: service,
                                    liveness: liveness)
        self.server = server
        task = Task { try await server.serve() }
    }

    var messages: [Message] { inbox.all }

    func port() async throws -> Int { try await server.boundPort() }

    func address() async throws -> PeerAddress { PeerAddress(host: "127.0.0.1", port: try await port()) }

    /// Stops abruptly, as a crash would: open streams break.
    func stop() async {
        task.cancel()
        _ = await task.result
    }
}

/// Resolves member IDs from a table the test changes as it goes.
private final class AddressBook: Sendable {
    private let table = Mutex<[NodeID: PeerAddress]>([:])

    subscript(id: NodeID) -> PeerAddress? {
        get { table.withLock { $0[id] } }
        set { table.withLock { $0[id] = newValue } }
    }

    var resolve: @Sendable (NodeID) -> PeerAddress? { { [self] in self[$0] } }
}

/// A PeerTransport with its `run()` task.
private final class RunningTransport: Sendable {
    let transport: PeerTransport
    private let task: Task<Void, Never>

    init(clusterID: UInt64 = testClusterID, localID: NodeID, addresses: AddressBook,
         liveness: PeerStreamWire.Liveness = .standard) {
        var options = PeerTransport.Options()
        options.streamLiveness = liveness
        transport = PeerTransport(clusterID: clusterID, localID: localID, resolve: addresses.resolve,
                                  logger: quietLogger("peer-transport"), options: options)
        task = Task { [transport] in await transport.run() }
    }

    func stop() async {
        task.cancel()
        await task.value
    }
}

/// Sends `frames` on a Raft stream of its own, as a foreign or misconfigured member would, then ends its side;
/// throws the receiver's refusal as an RPCError.
private func sendRawFrames(_ frames: [[UInt8]], then tail: [UInt8] = [], preface: [UInt8] = PeerStreamWire.preface,
                           to port: Int) async throws {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelOption(.allowRemoteHalfClosure, value: true)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(
                    ByteToMessageHandler(PeerStreamWire.FrameDecoder(maxFrameBytes: PeerStreamWire.maxReplyFrameBytes)))
                return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                    wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
            }
        }
    let refusal = try await channel.executeThenClose { inbound, outbound -> PeerStreamWire.Refusal? in
        var bytes = ByteBuffer(bytes: preface)
        for frame in frames {
            bytes.writeInteger(UInt32(frame.count))
            bytes.writeBytes(frame)
        }
        bytes.writeBytes(tail)
        try await outbound.write(bytes)
        outbound.finish()
        var refusal: PeerStreamWire.Refusal?
        do {
            for try await frame in inbound where frame.readableBytes > 0 {
                refusal = PeerStreamWire.Refusal.read(frame)
            }
        } catch where refusal != nil {
            // The receiver closed right after refusing; its reset may follow the refusal.
        }
        return refusal
    }
    if let refusal { throw RPCError(code: refusal.code, message: refusal.message) }
}

/// A port nothing listens on, that a server may bind later (servers set SO_REUSEADDR).
private func freePort() async throws -> Int {
    let peer = try TestPeer(id: 9, members: [])
    let port = try await peer.port()
    await peer.stop()
    return port
}

/// Opens a Raft stream, sends its preface and nothing else, and counts the receiver's keep-alives until it closes
/// the connection (bounded: 30 s).
private func silentStream(to port: Int) async throws -> Int {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(
                    ByteToMessageHandler(PeerStreamWire.FrameDecoder(maxFrameBytes: PeerStreamWire.maxReplyFrameBytes)))
                return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    return try await withThrowingTaskGroup(of: Int?.self) { group in
        group.addTask {
            try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(bytes: PeerStreamWire.preface))
                var keepalives = 0
                for try await frame in inbound where frame.readableBytes == 0 { keepalives += 1 }
                return keepalives
            }
        }
        group.addTask {
            try await Task.sleep(for: .seconds(30))
            return nil
        }
        defer { group.cancelAll() }
        guard let keepalives = try await group.next() ?? nil else {
            Issue.record("the receiver kept a silent stream open for 30 s")
            channel.channel.close(promise: nil)
            return 0
        }
        return keepalives
    }
}

/// A TCP listener that accepts connections, reads everything, and never writes: a peer that hangs.
private final class MuteListener: Sendable {
    /// The bytes each connection sent, in the order they were accepted.
    private struct Record {
        /// Per connection, by accept order (not by channel identity, which a later channel may reuse).
        var bytes: [[UInt8]] = []
    }

    private let channel: any Channel
    private let record: RecordBox

    private init(channel: any Channel, record: RecordBox) {
        self.channel = channel
        self.record = record
    }

    static func start() async throws -> MuteListener {
        let record = RecordBox()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                let id = record.state.withLock { state in
                    state.bytes.append([])
                    return state.bytes.count - 1
                }
                return child.pipeline.addHandler(Recorder(id: id, record: record))
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return MuteListener(channel: channel, record: record)
    }

    var port: Int { channel.localAddress?.port ?? 0 }
    /// What each Raft stream sent (the sender's gRPC connection for forwarded requests left out).
    var raftStreams: [[UInt8]] {
        record.state.withLock { state in
            state.bytes.filter { $0.starts(with: PeerStreamWire.preface) }
        }
    }

    func stop() {
        channel.close(promise: nil)
    }

    private final class RecordBox: Sendable {
        let state = Mutex(Record())
    }

    private final class Recorder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let id: Int
        let record: RecordBox

        init(id: Int, record: RecordBox) {
            self.id = id
            self.record = record
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            record.state.withLock { $0.bytes[id] += Array(bytes.readableBytesView) }
        }
    }
}

// MARK: - Frames between a transport and a service

@Suite(.serialized) struct PeerTransportTests {
    @Test func messagesArriveIntactAndInOrderIncludingASnapshotChunk() async throws {
        let receiver = try TestPeer(id: 2, members: [1, 2])
        let addresses = AddressBook()
        addresses[2] = try await receiver.address()
        let sender = RunningTransport(localID: 1, addresses: addresses)

        var chunkData = [UInt8](repeating: 0, count: 1 << 20)
        for index in chunkData.indices { chunkData[index] = UInt8(truncatingIfNeeded: index &* 31 &+ index >> 11) }
        let chunk = SnapshotChunk(metadata: SnapshotMetadata(index: 900, term: 3, membership: Membership(voters: [1, 2], learners: [4])),
                                  offset: 0, data: chunkData, isLast: false)
        let entries = (1...50).map { Entry(term: 3, index: $0, data: Array("entry \($0)".utf8)) }
        var sent: [Message] = (1...200).map { heartbeat(from: 1, to: 2, $0) }
        sent.append(Message(from: 1, to: 2, term: 3, body: .append(prevIndex: 0, prevTerm: 0, entries: entries, commit: 40)))
        sent.append(Message(from: 1, to: 2, term: 3, body: .snapshot(chunk)))
        sent.append(Message(from: 1, to: 2, term: 3, body: .snapshot(SnapshotChunk(metadata: chunk.metadata, offset: 1 << 20,
                                                                                  data: [1, 2, 3], isLast: true))))
        sent += (201...300).map { heartbeat(from: 1, to: 2, $0) }

        // In several sends, as Raft's Readies come, with messages for unknown members mixed in.
        for slice in stride(from: 0, to: sent.count, by: 37) {
            sender.transport.send(Array(sent[slice..<min(slice + 37, sent.count)]) + [heartbeat(from: 1, to: 7, 0)])
        }
        try await eventually("every message delivered") { receiver.inbox.count >= sent.count }
        #expect(receiver.messages == sent)
        #expect(sender.transport.droppedForUnknownPeers == UInt64((sent.count + 36) / 37))
        #expect(sender.transport.statistics(for: 2)?.droppedMessages == 0)

        await sender.stop()
        await receiver.stop()
    }

    @Test func framesFromAnotherClusterOrANonMemberAreRefusedAndNothingIsDelivered() async throws {
        let receiver = try TestPeer(id: 2, members: [1, 2, 3])
        let port = try await receiver.port()
        let valid = PeerFrame.encode(clusterID: testClusterID, from: 1, to: 2, messages: [heartbeat(from: 1, to: 2, 1)])

        let refusals: [(frame: [UInt8], code: RPCError.Code, text: String)] = [
            (PeerFrame.encode(clusterID: 0xdead, from: 1, to: 2, messages: [heartbeat(from: 1, to: 2, 1)]),
             .failedPrecondition, "cluster ID mismatch: member 2 is in cluster 1c2d3e4f, member 1 sent a frame for cluster dead"),
            (PeerFrame.encode(clusterID: testClusterID, from: 5, to: 2, messages: [heartbeat(from: 5, to: 2, 1)]),
             .permissionDenied, "member 5 is not a member of cluster 1c2d3e4f (removed or unknown)"),
            (PeerFrame.encode(clusterID: testClusterID, from: 1, to: 3, messages: [heartbeat(from: 1, to: 3, 1)]),
             .failedPrecondition, "frame for member 3 reached member 2"),
            // A message smuggled under another member's frame header.
            (PeerFrame.encode(clusterID: testClusterID, from: 1, to: 2, messages: [heartbeat(from: 5, to: 2, 1)]),
             .invalidArgument, "message from 5 to 2 in a frame from 1 to 2"),
            ([0xff, 0xff], .invalidArgument, "malformed frame"),
            (Array(valid.dropLast(3)), .invalidArgument, "malformed frame"),
        ]
        for refusal in refusals {
            // The refused frame comes after a valid one on the same stream, which still counts.
            let before = receiver.inbox.count
            let error = await #expect(throws: RPCError.self) {
                try await sendRawFrames([valid, refusal.frame], to: port)
            }
            #expect(error?.code == refusal.code)
            #expect(error?.message.contains(refusal.text) == true, "\(error?.message ?? "no error")")
            #expect(receiver.inbox.count == before + 1)
        }
        // Still serving.
        try await sendRawFrames([valid], to: port)
        #expect(receiver.inbox.count == refusals.count + 1)
        #expect(receiver.messages.allSatisfy { $0 == heartbeat(from: 1, to: 2, 1) })

        // A transport configured with another cluster's ID gets nowhere either, however long it retries.
        let addresses = AddressBook()
        addresses[2] = try await receiver.address()
        let foreign = RunningTransport(clusterID: 0xdead, localID: 1, addresses: addresses)
        let stranger = RunningTransport(localID: 5, addresses: addresses)
        foreign.transport.send([heartbeat(from: 1, to: 2, 2)])
        stranger.transport.send([heartbeat(from: 5, to: 2, 2)])
        try await Task.sleep(for: .milliseconds(300))
        #expect(receiver.inbox.count == refusals.count + 1)

        await foreign.stop()
        await stranger.stop()
        await receiver.stop()
    }

    @Test func aPeerThatStartsLateOrRestartsGetsMessagesOnceUp() async throws {
        let port = try await freePort()
        let addresses = AddressBook()
        addresses[2] = PeerAddress(host: "127.0.0.1", port: port)
        let sender = RunningTransport(localID: 1, addresses: addresses)

        // Nobody listens yet: the messages wait in the queue while the sender backs off.
        let early = (1...20).map { heartbeat(from: 1, to: 2, $0) }
        sender.transport.send(early)
        try await Task.sleep(for: .milliseconds(300))
        #expect(sender.transport.statistics(for: 2)?.queuedMessages == early.count)

        let first = try TestPeer(id: 2, members: [1, 2], port: port)
        try await eventually("the queued messages arrive once the peer is up") { first.inbox.count >= early.count }
        #expect(first.messages == early)

        // A crash breaks the stream; what was in flight may be lost, but later messages arrive after the restart.
        await first.stop()
        sender.transport.send([heartbeat(from: 1, to: 2, 100)])
        try await Task.sleep(for: .milliseconds(100))
        let second = try TestPeer(id: 2, members: [1, 2], port: port)
        var sequence: UInt64 = 1000
        try await eventually("messages arrive after the restart") {
            sequence += 1
            sender.transport.send([heartbeat(from: 1, to: 2, sequence)])
            return second.messages.contains { sequenceNumber(of: $0) > 1000 }
        }
        // Whatever arrives comes in order.
        let sequences = second.messages.map(sequenceNumber(of:))
        #expect(sequences == sequences.sorted())

        // The member moves to another address: the sender follows once `resolve` says so.
        let moved = try TestPeer(id: 2, members: [1, 2])
        addresses[2] = try await moved.address()
        try await eventually("messages reach the new address") {
            sender.transport.send([heartbeat(from: 1, to: 2, 5000)])
            return moved.inbox.count > 0
        }

        await sender.stop()
        await second.stop()
        await moved.stop()
    }

    @Test func removedPeersLoseTheirSenderAndFullQueuesDropTheOldest() async throws {
        let addresses = AddressBook()
        addresses[2] = PeerAddress(host: "127.0.0.1", port: try await freePort())
        // Not running: nothing leaves the queue.
        let transport = PeerTransport(clusterID: testClusterID, localID: 1, resolve: addresses.resolve,
                                      logger: quietLogger("peer-transport"), maxQueuedMessagesPerPeer: 4)
        transport.send((1...10).map { heartbeat(from: 1, to: 2, $0) })
        #expect(transport.statistics(for: 2) == PeerTransport.PeerStatistics(queuedMessages: 4, droppedMessages: 6))
        transport.removePeer(2)
        #expect(transport.statistics(for: 2) == nil)
        addresses[2] = nil
        transport.send([heartbeat(from: 1, to: 2, 11)])
        #expect(transport.statistics(for: 2) == nil)
        #expect(transport.droppedForUnknownPeers == 1)

        // A running sender stops when its member leaves the address book.
        let receiver = try TestPeer(id: 3, members: [1, 3])
        addresses[3] = try await receiver.address()
        let running = RunningTransport(localID: 1, addresses: addresses)
        running.transport.send([heartbeat(from: 1, to: 3, 1)])
        try await eventually("delivered") { receiver.inbox.count == 1 }
        addresses[3] = nil
        running.transport.send([heartbeat(from: 1, to: 3, 2)])
        try await eventually("the sender of a removed member stops") { running.transport.statistics(for: 3) == nil }
        #expect(receiver.inbox.count == 1)

        await running.stop()
        await receiver.stop()
    }

    @Test func anOversizedFrameIsRefusedFromItsLengthAndOtherProtocolsAreClosed() async throws {
        let receiver = try TestPeer(id: 2, members: [1, 2])
        let port = try await receiver.port()
        let valid = PeerFrame.encode(clusterID: testClusterID, from: 1, to: 2, messages: [heartbeat(from: 1, to: 2, 1)])

        // The length alone decides: the receiver does not wait for 16 MiB that will never come.
        var oversized: [UInt8] = []
        withUnsafeBytes(of: UInt32(PeerLimits.maxMessageBytes + 1).bigEndian) { oversized.append(contentsOf: $0) }
        let error = await #expect(throws: RPCError.self) {
            try await sendRawFrames([valid], then: oversized + [1, 2, 3], to: port)
        }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message == "rafthttp: frame of \(PeerLimits.maxMessageBytes + 1) bytes exceeds the limit of \(PeerLimits.maxMessageBytes)")
        #expect(receiver.inbox.count == 1)

        // Neither a Raft stream nor HTTP/2: closed without a word, and nothing delivered.
        try await sendRawFrames([valid], preface: Array("GET /raft HTTP/1.1\r\n\r\n".utf8), to: port)
        // Keep-alives (empty frames) around a frame are skipped; the frame is delivered.
        try await sendRawFrames([[], valid, []], to: port)
        #expect(receiver.inbox.count == 2)
        await receiver.stop()
    }

    @Test func silentEndsAreDroppedAndKeepAlivesKeepQuietOnesOpen() async throws {
        var quick = PeerStreamWire.Liveness()
        quick.keepaliveInterval = .milliseconds(100)
        quick.silenceLimit = .milliseconds(600)

        // A receiver that accepts Raft streams and never answers (a peer that hangs): the sender gives up on each
        // connection after the silence limit and dials again, keeping its messages queued meanwhile.
        let mute = try await MuteListener.start()
        let addresses = AddressBook()
        addresses[2] = PeerAddress(host: "127.0.0.1", port: mute.port)
        let sender = RunningTransport(localID: 1, addresses: addresses, liveness: quick)
        sender.transport.send([heartbeat(from: 1, to: 2, 1)])
        try await eventually("the sender redials a silent receiver") { mute.raftStreams.count >= 3 }
        // The first stream carried the preface, the frame, then keep-alives (empty frames) while idle.
        let first = mute.raftStreams[0]
        let frame = PeerFrame.encode(clusterID: testClusterID, from: 1, to: 2, messages: [heartbeat(from: 1, to: 2, 1)])
        let keepalivesStart = PeerStreamWire.preface.count + 4 + frame.count
        #expect(Array(first[PeerStreamWire.preface.count + 4 ..< keepalivesStart]) == frame)
        #expect(first.count >= keepalivesStart + 4)
        #expect(first[keepalivesStart...].allSatisfy { $0 == 0 })
        await sender.stop()
        mute.stop()

        // A sender that opens a stream and says nothing more is dropped by the receiver, which sends keep-alives
        // until then.
        let receiver = try TestPeer(id: 2, members: [1, 2], liveness: quick)
        let port = try await receiver.port()
        let started = ContinuousClock.now
        let keepalives = try await silentStream(to: port)
        #expect(keepalives >= 1)
        #expect(started.duration(to: .now) < .seconds(10), "the receiver dropped the silent stream")
        // A stream that keeps talking is not dropped: heartbeats arrive well past the silence limit.
        addresses[2] = try await receiver.address()
        let talker = RunningTransport(localID: 1, addresses: addresses, liveness: quick)
        for sequence in 1...15 {
            talker.transport.send([heartbeat(from: 1, to: 2, UInt64(sequence))])
            try await Task.sleep(for: .milliseconds(100))
        }
        try await eventually("every heartbeat delivered") { receiver.inbox.count == 15 }
        #expect(receiver.messages.map(sequenceNumber(of:)) == Array(1...15))
        await talker.stop()
        await receiver.stop()
    }

    // MARK: - Forward and ClusterInfo

    @Test func forwardRoundTripsBytesAndPropagatesRPCErrors() async throws {
        let receiver = try TestPeer(id: 2, members: [1, 2], forward: { request in
            switch request {
            case Array("leader changed".utf8):
                throw RPCError(code: .unavailable, message: "etcdserver: leader changed")
            case Array("not an RPCError".utf8):
                throw CocoaError(.fileNoSuchFile)
            default:
                return request.reversed()
            }
        }, clusterInfo: { Array("cluster 1c2d3e4f: members 1, 2".utf8) })
        let addresses = AddressBook()
        addresses[2] = try await receiver.address()
        let sender = RunningTransport(localID: 1, addresses: addresses)

        // Before any Raft message: a client of its own.
        #expect(try await sender.transport.forward(to: 2, [1, 2, 3]) == [3, 2, 1])
        // With a sender running: its client.
        sender.transport.send([heartbeat(from: 1, to: 2, 1)])
        try await eventually("stream up") { receiver.inbox.count == 1 }
        let large = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 % 251) }
        #expect(try await sender.transport.forward(to: 2, large) == large.reversed())

        let error = await #expect(throws: RPCError.self) {
            try await sender.transport.forward(to: 2, Array("leader changed".utf8))
        }
        #expect(error?.code == .unavailable)
        #expect(error?.message == "etcdserver: leader changed")
        let other = await #expect(throws: RPCError.self) {
            try await sender.transport.forward(to: 2, Array("not an RPCError".utf8))
        }
        #expect(other?.code == .unknown)
        let unknown = await #expect(throws: RPCError.self) { try await sender.transport.forward(to: 7, [1]) }
        #expect(unknown?.code == .unavailable)

        let info = try await PeerTransport.clusterInfo(at: try await receiver.address())
        #expect(String(decoding: info, as: UTF8.self) == "cluster 1c2d3e4f: members 1, 2")
        // Nobody there: a prompt error, not a hang.
        let port = try await freePort()
        await #expect(throws: (any Error).self) {
            try await PeerTransport.clusterInfo(at: PeerAddress(host: "127.0.0.1", port: port), timeout: .seconds(2))
        }

        await sender.stop()
        await receiver.stop()
    }

    // MARK: - Peer URLs

    @Test func peerURLsParse() throws {
        #expect(try PeerAddress(url: "http://127.0.0.1:2380") == PeerAddress(host: "127.0.0.1", port: 2380))
        #expect(try PeerAddress(url: "http://10.0.0.7:12380/") == PeerAddress(host: "10.0.0.7", port: 12380))
        #expect(try PeerAddress(url: "HTTP://[::1]:2380") == PeerAddress(host: "::1", port: 2380))
        #expect(try PeerAddress(url: "http://infra0.example.com:2380").host == "infra0.example.com")
        #expect(try PeerAddress(url: "http://[::1]:2380").description == "[::1]:2380")
        #expect(try PeerAddress(url: "http://127.0.0.1:2380").url == "http://127.0.0.1:2380")
        #expect(try PeerAddress(url: "http://127.0.0.1:2380").isIPv4)
        #expect(try !PeerAddress(url: "http://1.2.3.400:2380").isIPv4)
        #expect(throws: Never.self) { try PeerAddress(url: "http://localhost:2380").bindHost() }
        #expect(throws: PeerAddressError.self) { try PeerAddress(url: "http://infra0.example.com:2380").bindHost() }
    }

    @Test func theAddressCacheAnswersAsParsingDoes() throws {
        let cache = PeerAddressCache(tls: nil)
        for url in ["http://127.0.0.1:2380", "http://[::1]:2380/", "https://127.0.0.1:2380", "http://bad host:1", "x"] {
            // Twice: the second answer comes from the cache.
            for _ in 0..<2 { #expect(cache.address(of: url) == (try? PeerAddress(url: url)), "\(url)") }
        }
        #expect(PeerAddressCache(tls: nil).address(of: "http://10.0.0.7:12380") == PeerAddress(host: "10.0.0.7", port: 12380))
    }

    @Test(arguments: [
        ("https://127.0.0.1:2380", "https peer URLs need --peer-cert-file and --peer-key-file"),
        ("unix://peer.sock:1", "unsupported scheme \"unix\""),
        ("127.0.0.1:2380", "missing scheme"),
        ("http://127.0.0.1", "missing port"),
        ("http://127.0.0.1:", "invalid port"),
        ("http://127.0.0.1:65536", "invalid port"),
        ("http://127.0.0.1:23a0", "invalid port"),
        ("http://:2380", "missing host"),
        ("http://::1:2380", "an IPv6 address needs brackets"),
        ("http://[::1:2380", "unterminated IPv6 address"),
        ("http://127.0.0.1:2380/raft", "no path"),
        ("http://user@127.0.0.1:2380", "no path, query or user"),
        ("http://bad host:2380", "invalid host"),
    ])
    func badPeerURLsAreRefusedClearly(url: String, reason: String) {
        let error = #expect(throws: PeerAddressError.self) { try PeerAddress(url: url) }
        #expect(error?.reason.contains(reason) == true, "\(error?.description ?? "parsed")")
        #expect(error?.description.hasPrefix("invalid peer URL \"\(url)\": ") == true)
    }
}

// MARK: - Three stores over the peer transport

@Suite(.serialized) struct PeerClusterTests {
    @Test func threeStoresElectALeaderAndReplicateOverPeerStreams() async throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("peer-cluster-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        var configuration = KVStore.Configuration()
        configuration.tickInterval = .milliseconds(10)
        configuration.electionTimeoutTicks = 20
        configuration.requestTimeout = .seconds(5)
        configuration.logger.logLevel = .critical

        let ids: [NodeID] = [1, 2, 3]
        let membership = Membership(voters: Set(ids))
        let addresses = AddressBook()
        var transports: [NodeID: PeerTransport] = [:]
        var stores: [NodeID: KVStore] = [:]
        var servers: [NodeID: PeerServer] = [:]
        for id in ids {
            let transport = PeerTransport(clusterID: testClusterID, localID: id, resolve: addresses.resolve,
                                          logger: quietLogger("peer-transport"))
            let store = try KVStore(directory: scratch.appendingPathComponent("m\(id)"), memberID: id,
                                    initialMembership: membership, transport: transport, configuration: configuration)
            let service = PeerService(clusterID: testClusterID, localID: id, isMember: { membership.contains($0) },
                                      deliver: { store.deliver($0) }, forward: { $0 }, clusterInfo: { [] },
                                      logger: quietLogger("peer-service"))
            transports[id] = transport
            stores[id] = store
            servers[id] = try PeerServer(listeningOn: PeerAddress(host: "127.0.0.1", port: 0), service: service)
        }

        try await withThrowingTaskGroup(of: Void.self) { group in
            for id in ids {
                let (server, transport, store) = (servers[id]!, transports[id]!, stores[id]!)
                group.addTask { try await server.serve() }
                group.addTask { await transport.run() }
                group.addTask { try await store.run() }
                addresses[id] = PeerAddress(host: "127.0.0.1", port: try await server.boundPort())
            }

            var leader: KVStore?
            try await eventually("a leader every member knows", seconds: 10) {
                var leaders = Set<NodeID>()
                for store in stores.values { leaders.insert(await store.node.status.leader) }
                guard leaders.count == 1, let id = leaders.first, id != 0 else { return false }
                leader = stores[id]
                return true
            }
            // A leader elected on a loaded machine may lose its term before the write commits: ask again.
            var revision: Int64 = 0
            for attempt in 1...5 {
                do {
                    revision = try await leader!.put("greeting", "hello over gRPC").revision
                    break
                } catch let error as KVError where attempt < 5 {
                    configuration.logger.debug("put failed: \(error)")
                    try await Task.sleep(for: .milliseconds(200))
                    for store in stores.values where await store.node.status.role == .leader { leader = store }
                }
            }
            for store in stores.values {
                let value = try await store.get("greeting")
                #expect(value?.value == Array("hello over gRPC".utf8), "member \(store.memberID)")
                #expect(value?.modRevision == revision)
            }

            for store in stores.values { await store.close() }
            group.cancelAll()
            try? await group.waitForAll()
        }
    }
}
