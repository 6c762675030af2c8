// The client port's front door: gRPC handed on the accepted socket to a real grpc-swift server, etcd's
// plain-HTTP endpoints answered on the same port, and connections that speak neither closed in bounded time.
// Everything runs on the loopback interface with ports chosen by the kernel.

import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import KVServer

// MARK: - A gRPC service behind the listener

/// Range answers with the key it was asked for, or with the call's local and remote peers for the key `peers`,
/// after sleeping `range_end` milliseconds when that is a number; Put echoes the value back as the previous
/// value, so a large value crosses the listener in both directions.
/// When each delayed Range began on the server (the suite runs serialized).
private let slowCallStarts = Mutex<[ContinuousClock.Instant]>([])

private final class EchoKVService: Etcdserverpb_KV.SimpleServiceProtocol {
    func range(request: Etcdserverpb_RangeRequest, context: ServerContext) async throws
        -> Etcdserverpb_RangeResponse
    {
        if let delay = Int(String(decoding: request.rangeEnd, as: UTF8.self)) {
            slowCallStarts.withLock { $0.append(ContinuousClock.now) }
            try await Task.sleep(for: .milliseconds(delay))
        }
        var kv = Mvccpb_KeyValue()
        kv.key = request.key
        kv.value = request.key == Data("peers".utf8) ? Data("\(context.localPeer) \(context.remotePeer)".utf8) : request.key
        var response = Etcdserverpb_RangeResponse()
        response.kvs = [kv]
        response.count = 1
        return response
    }

    func put(request: Etcdserverpb_PutRequest, context: ServerContext) async throws -> Etcdserverpb_PutResponse {
        var previous = Mvccpb_KeyValue()
        previous.key = request.key
        previous.value = request.value
        var response = Etcdserverpb_PutResponse()
        response.header.revision = Int64(request.value.count)
        response.prevKv = previous
        return response
    }

    func deleteRange(request: Etcdserverpb_DeleteRangeRequest, context: ServerContext) async throws
        -> Etcdserverpb_DeleteRangeResponse
    {
        throw RPCError(code: .unimplemented, message: "DeleteRange")
    }

    func txn(request: Etcdserverpb_TxnRequest, context: ServerContext) async throws -> Etcdserverpb_TxnResponse {
        throw RPCError(code: .unimplemented, message: "Txn")
    }

    func compact(request: Etcdserverpb_CompactionRequest, context: ServerContext) async throws
        -> Etcdserverpb_CompactionResponse
    {
        throw RPCError(code: .unimplemented, message: "Compact")
    }
}

// MARK: - Fixtures

private let fastTimeouts: ClientListener.Configuration = {
    var configuration = ClientListener.Configuration()
    configuration.sniffTimeout = .milliseconds(400)
    configuration.httpRequestTimeout = .seconds(5)
    return configuration
}()

/// Keeps the listener's "serving" line out of the test output; warnings still show.
private let quietLogger: Logger = {
    var logger = Logger(label: "kvserver.client-listener.test")
    logger.logLevel = .warning
    return logger
}()

private func stubEndpoints(
    health: @escaping @Sendable (HTTPEndpoints.HealthQuery) async -> (healthy: Bool, reason: String) = { _ in
        (true, "")
    },
    metrics: @escaping @Sendable () -> String = { "" }
) -> HTTPEndpoints {
    HTTPEndpoints(health: health, versionJSON: { HTTPEndpoints.versionJSON() }, metrics: metrics)
}

/// Runs `body` with the echo gRPC service behind a ClientListener, closing both afterwards.
private func withGRPCStack<T: Sendable>(
    endpoints: HTTPEndpoints = stubEndpoints(),
    configuration: ClientListener.Configuration = fastTimeouts,
    grpcConfig: HTTP2ServerTransport.Custom<GRPCHandoff>.Config = .defaults,
    _ body: @escaping @Sendable (SniffingListener) async throws -> T
) async throws -> T {
    let handoff = GRPCHandoff()
    let server = GRPCServer(transport: HTTP2ServerTransport.Custom(listenerFactory: handoff, config: grpcConfig),
                            services: [EchoKVService()])
    return try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask {
            try await server.serve()
            return nil
        }
        defer { server.beginGracefulShutdown() }
        await handoff.waitUntilServing()
        let listener = try await ClientListener.bind(
            host: "127.0.0.1", port: 0, grpc: handoff, endpoints: endpoints, configuration: configuration,
            logger: quietLogger)
        let result: T
        do {
            result = try await body(listener)
        } catch {
            await listener.close()
            await handoff.close()
            throw error
        }
        await listener.close()
        await handoff.close()
        server.beginGracefulShutdown()
        try await group.waitForAll()
        return result
    }
}

private func withGRPCClient<T: Sendable>(
    port: Int, _ body: @escaping @Sendable (Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>) async throws -> T
) async throws -> T {
    let transport = try HTTP2ClientTransport.Posix(
        target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
    return try await GRPCCore.withGRPCClient(transport: transport) { client in
        try await body(Etcdserverpb_KV.Client(wrapping: client))
    }
}

/// Polls `condition` every few milliseconds until it holds or `timeout` passes: every wait in these tests is
/// bounded, and none sleeps longer than needed.
private func eventually(
    timeout: Duration = .seconds(3), _ condition: () -> Bool
) async -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return condition()
}

// MARK: - A raw TCP client

/// A TCP client that records everything it receives, for speaking HTTP/1.1 by hand, sending garbage, or
/// staying silent.
private final class RawClient: Sendable {
    struct Received: Sendable {
        var bytes: [UInt8] = []
        var inputClosed = false
        var closed = false
    }

    private final class Recorder: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let box: StateBox
        init(_ box: StateBox) { self.box = box }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            box.state.withLock { $0.bytes += buffer.readableBytesView }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case ChannelEvent.inputClosed = event {
                box.state.withLock { $0.inputClosed = true }
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            box.state.withLock {
                $0.inputClosed = true
                $0.closed = true
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    private final class StateBox: Sendable {
        let state = Mutex(Received())
    }

    let channel: any Channel
    private let box: StateBox

    private init(channel: any Channel, box: StateBox) {
        self.channel = channel
        self.box = box
    }

    static func connect(port: Int, autoRead: Bool = true) async throws -> RawClient {
        let box = StateBox()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.autoRead, value: autoRead)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Recorder(box))
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        return RawClient(channel: channel, box: box)
    }

    var received: Received {
        box.state.withLock { $0 }
    }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    func send(_ text: String) async throws {
        try await send(Array(text.utf8))
    }

    func shutdownOutput() async throws {
        try await channel.close(mode: .output)
    }

    func startReading() async throws {
        try await channel.setOption(.autoRead, value: true).get()
    }

    func close() async {
        try? await channel.close()
    }

    /// Waits (bounded) for `count` complete HTTP responses and returns them.
    func responses(_ count: Int, timeout: Duration = .seconds(3)) async throws -> [HTTPResponse] {
        _ = await eventually(timeout: timeout) {
            (try? HTTPResponse.parse(self.received.bytes, limit: count).count) ?? 0 >= count
        }
        let parsed = try HTTPResponse.parse(received.bytes, limit: count)
        try #require(parsed.count >= count, "got \(parsed.count) of \(count) responses: \(received.bytes.count) bytes")
        return parsed
    }

    /// Waits (bounded) for the server to end the connection (end of input: the client allows half-closure).
    func waitUntilClosed(timeout: Duration = .seconds(3)) async -> Bool {
        await eventually(timeout: timeout) { self.received.inputClosed }
    }
}

/// An HTTP/1.1 response as it came over the wire.
private struct HTTPResponse {
    var statusLine: String
    var headers: [(String, String)]
    var body: String

    var status: Int { Int(statusLine.split(separator: " ")[1]) ?? 0 }

    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    struct Malformed: Error {}

    /// Up to `limit` complete responses at the front of `bytes`, bodies delimited by Content-Length (so no
    /// answer to HEAD may be among them).
    static func parse(_ bytes: [UInt8], limit: Int) throws -> [HTTPResponse] {
        var responses: [HTTPResponse] = []
        var rest = bytes[...]
        let separator = Array("\r\n\r\n".utf8)
        while responses.count < limit, let end = rest.firstRange(of: separator) {
            let head = String(decoding: rest[rest.startIndex..<end.lowerBound], as: UTF8.self)
            var lines = head.components(separatedBy: "\r\n")
            let statusLine = lines.removeFirst()
            let headers = try lines.map { line -> (String, String) in
                guard let colon = line.firstIndex(of: ":") else { throw Malformed() }
                return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            }
            let length = Int(headers.first { $0.0.lowercased() == "content-length" }?.1 ?? "0") ?? 0
            let bodyStart = end.upperBound
            guard rest.endIndex - bodyStart >= length else { break }
            let body = String(decoding: rest[bodyStart..<bodyStart + length], as: UTF8.self)
            responses.append(HTTPResponse(statusLine: statusLine, headers: headers, body: body))
            rest = rest[(bodyStart + length)...]
        }
        return responses
    }
}

private let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

/// The types of the complete HTTP/2 frames in `bytes` (a server's side of a connection: no preface).
private func http2FrameTypes(_ bytes: [UInt8]) -> [UInt8] {
    var types: [UInt8] = []
    var offset = 0
    while bytes.count - offset >= 9 {
        let length = Int(bytes[offset]) << 16 | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
        guard bytes.count - offset >= 9 + length else { break }
        types.append(bytes[offset + 3])
        offset += 9 + length
    }
    return types
}

// MARK: - Tests

@Suite("ClientListener", .serialized)
struct ClientListenerTests {
    @Test func grpcCallsThroughTheListener() async throws {
        try await withGRPCStack { listener in
            try await withGRPCClient(port: listener.port) { kv in
                // Concurrent calls share one proxied HTTP/2 connection.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<16 {
                        group.addTask {
                            var request = Etcdserverpb_RangeRequest()
                            request.key = Data("/registry/pods/default/web-\(index)".utf8)
                            let response = try await kv.range(request)
                            #expect(response.kvs.first?.value == request.key)
                        }
                    }
                    try await group.waitForAll()
                }

                // About a mebibyte each way, more than the proxy's write buffer and HTTP/2's initial windows.
                var put = Etcdserverpb_PutRequest()
                put.key = Data("/big".utf8)
                put.value = Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
                let response = try await kv.put(put)
                #expect(response.header.revision == Int64(1 << 20))
                #expect(response.prevKv.value == put.value)
            }
        }
    }

    @Test func healthyHealthAndVersionOnOneKeepAliveConnection() async throws {
        let queries = Mutex<[HTTPEndpoints.HealthQuery]>([])
        let endpoints = stubEndpoints(health: { query in
            queries.withLock { $0.append(query) }
            return (true, "")
        })
        try await withGRPCStack(endpoints: endpoints) { listener in
            let client = try await RawClient.connect(port: listener.port)
            defer { Task { await client.close() } }
            // Two requests back to back: answered in order on the same connection.
            try await client.send(
                "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
                    + "GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n")
            let responses = try await client.responses(2)
            #expect(responses[0].statusLine == "HTTP/1.1 200 OK")
            #expect(responses[0].body == #"{"health":"true","reason":""}"#)
            #expect(responses[0].header("Content-Type") == "text/plain; charset=utf-8")
            #expect(responses[1].status == 200)
            #expect(responses[1].body == #"{"etcdserver":"3.5.13","etcdcluster":"3.5.0"}"#)
            #expect(responses[1].header("Content-Type") == "application/json")
            #expect(responses[1].header("Connection") == nil)

            try await client.send("GET /health?exclude=NOSPACE&serializable=true HTTP/1.1\r\nHost: x\r\n\r\n")
            _ = try await client.responses(3)
            #expect(queries.withLock { $0 } == [
                HTTPEndpoints.HealthQuery(),
                HTTPEndpoints.HealthQuery(excludedAlarms: ["NOSPACE"], serializable: true),
            ])
            #expect(!client.received.inputClosed)
        }
    }

    @Test func unhealthyHealthIs503WithEtcdsReason() async throws {
        let endpoints = stubEndpoints(health: { _ in (false, HTTPEndpoints.HealthReason.noLeader) })
        try await withGRPCStack(endpoints: endpoints) { listener in
            let client = try await RawClient.connect(port: listener.port)
            defer { Task { await client.close() } }
            try await client.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            let response = try #require(try await client.responses(1).first)
            #expect(response.statusLine == "HTTP/1.1 503 Service Unavailable")
            #expect(response.body == "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n")
            #expect(response.header("X-Content-Type-Options") == "nosniff")
        }
    }

    @Test func metricsAfterUpdates() async throws {
        let metrics = ServerMetrics()
        metrics.setLeader(hasLeader: true, isLeader: true)
        metrics.recordLeaderChange()
        metrics.recordLeaderChange()
        metrics.setProposals(committed: 42, applied: 41, pending: 3)
        metrics.recordProposalFailed()
        metrics.observeWALFsync(seconds: 0.0015)
        metrics.observeWALFsync(seconds: 0.5)
        metrics.observeBackendCommit(seconds: 0.02)
        metrics.setDatabaseSize(total: 1 << 20, inUse: 1 << 19)
        metrics.recordPeerSendFailure(to: "8e9e05c52164694d")
        let endpoints = stubEndpoints(metrics: { metrics.render() })

        try await withGRPCStack(endpoints: endpoints) { listener in
            let client = try await RawClient.connect(port: listener.port)
            defer { Task { await client.close() } }
            try await client.send("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            let response = try #require(try await client.responses(1).first)
            #expect(response.status == 200)
            #expect(response.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8")
            let samples = PrometheusSamples(response.body)
            #expect(samples["etcd_server_has_leader"] == 1)
            #expect(samples["etcd_server_is_leader"] == 1)
            #expect(samples["etcd_server_leader_changes_seen_total"] == 2)
            #expect(samples["etcd_server_proposals_committed_total"] == 42)
            #expect(samples["etcd_server_proposals_applied_total"] == 41)
            #expect(samples["etcd_server_proposals_pending"] == 3)
            #expect(samples["etcd_server_proposals_failed_total"] == 1)
            #expect(samples[#"etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"}"#] == 0)
            #expect(samples[#"etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"}"#] == 1)
            #expect(samples[#"etcd_disk_wal_fsync_duration_seconds_bucket{le="0.512"}"#] == 2)
            #expect(samples[#"etcd_disk_wal_fsync_duration_seconds_bucket{le="8.192"}"#] == 2)
            #expect(samples[#"etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"}"#] == 2)
            #expect(samples["etcd_disk_wal_fsync_duration_seconds_count"] == 2)
            #expect(samples["etcd_disk_wal_fsync_duration_seconds_sum"] == 0.5015)
            #expect(samples[#"etcd_disk_backend_commit_duration_seconds_bucket{le="0.032"}"#] == 1)
            #expect(samples["etcd_mvcc_db_total_size_in_bytes"] == 1_048_576)
            #expect(samples["etcd_mvcc_db_total_size_in_use_in_bytes"] == 524_288)
            #expect(samples[#"etcd_network_peer_sent_failures_total{To="8e9e05c52164694d"}"#] == 1)
            #expect(samples[#"etcd_server_version{server_version="3.5.13"}"#] == 1)
            #expect((samples["process_resident_memory_bytes"] ?? 0) > 0)
            #expect((samples["process_open_fds"] ?? 0) > 0)
            let startTime = samples["process_start_time_seconds"] ?? 0
            #expect(abs(startTime - Date().timeIntervalSince1970) < 24 * 3600)
            #expect(response.body.contains("# TYPE etcd_server_proposals_committed_total gauge\n"))
            #expect(response.body.contains("# TYPE etcd_server_leader_changes_seen_total counter\n"))
            #expect(response.body.contains("# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"))
            #expect(response.body.contains(
                "# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.\n"))
        }
    }

    @Test func otherPathsAndMethods() async throws {
        try await withGRPCStack { listener in
            let client = try await RawClient.connect(port: listener.port)
            defer { Task { await client.close() } }
            try await client.send(
                "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "GET /health/ HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                    + "HEAD /version HTTP/1.1\r\nHost: x\r\n\r\n"
                    + "GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            // HEAD's answer has a Content-Length but no body: parse only the answers before it.
            let responses = try await client.responses(3)
            #expect(responses[0].statusLine == "HTTP/1.1 404 Not Found")
            #expect(responses[0].body == "404 page not found\n")
            #expect(responses[0].header("Content-Type") == "text/plain; charset=utf-8")
            #expect(responses[1].status == 404)
            #expect(responses[2].status == 405)
            #expect(responses[2].header("Allow") == "GET")
            #expect(responses[2].body == "Method Not Allowed\n")
            #expect(await client.waitUntilClosed())
            let text = String(decoding: client.received.bytes, as: UTF8.self)
            #expect(text.contains("HTTP/1.1 405 Method Not Allowed\r\n"))
            // HEAD /version is refused as etcd refuses it; the closing request is answered, then the close.
            #expect(text.hasSuffix(#"{"etcdserver":"3.5.13","etcdcluster":"3.5.0"}"#))
            #expect(text.contains("Connection: close\r\n"))
        }
    }

    @Test func oversizedRequestsAndIdleConnectionsAreClosed() async throws {
        var configuration = fastTimeouts
        configuration.httpRequestTimeout = .milliseconds(300)
        try await withGRPCStack(configuration: configuration) { listener in
            // Bodies are ignored, but only up to a bound.
            let body = try await RawClient.connect(port: listener.port)
            try await body.send("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
            // The server may close while this is still being written.
            try? await body.send([UInt8](repeating: 0x41, count: 100_000))
            #expect(await body.waitUntilClosed())
            #expect(body.received.bytes.isEmpty)

            // So are headers (NIO's parser refuses more than 80 KiB of them).
            let headers = try await RawClient.connect(port: listener.port)
            try await headers.send("GET /health HTTP/1.1\r\nHost: x\r\n")
            for index in 0..<100 {
                try? await headers.send("X-Filler-\(index): \(String(repeating: "f", count: 1000))\r\n")
            }
            #expect(await headers.waitUntilClosed())
            // The 400 may be lost: the server closes while the client still writes, and the kernel then resets the
            // connection, dropping unread data. Whatever arrived must be that 400.
            let answer = String(decoding: headers.received.bytes, as: UTF8.self)
            #expect(answer.isEmpty || answer.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(answer)")

            // A keep-alive connection that stays idle is closed after the request timeout.
            // Timed from before the request: the server's timer starts after it arrives, so the close can come no
            // sooner than the timeout after this instant, however late this task reads the answer on a busy machine.
            let idle = try await RawClient.connect(port: listener.port)
            let clock = ContinuousClock()
            let sent = clock.now
            try await idle.send("GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(try await idle.responses(1).first?.status == 200)
            #expect(await idle.waitUntilClosed())
            #expect(clock.now - sent >= .milliseconds(300))
        }
    }

    @Test func garbageAndSilentClientsAreClosedWithoutDisturbingOthers() async throws {
        try await withGRPCStack { listener in
            // Timed from before the connections exist: each one's sniff timeout starts when it is accepted.
            let clock = ContinuousClock()
            let start = clock.now
            let garbage = try await RawClient.connect(port: listener.port)
            let silent = try await RawClient.connect(port: listener.port)
            let halfPreface = try await RawClient.connect(port: listener.port)

            try await garbage.send([0x00, 0xFF, 0x13, 0x37] + Array("\r\n\r\nnot http at all\r\n\r\n".utf8))
            try await halfPreface.send(Array(preface.prefix(10)))

            // Meanwhile the others are served.
            try await withGRPCClient(port: listener.port) { kv in
                var request = Etcdserverpb_RangeRequest()
                request.key = Data("k".utf8)
                let response = try await kv.range(request)
                #expect(response.count == 1)
            }
            let healthy = try await RawClient.connect(port: listener.port)
            try await healthy.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(try await healthy.responses(1).first?.status == 200)

            #expect(await garbage.waitUntilClosed())
            #expect(String(decoding: garbage.received.bytes, as: UTF8.self).hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
            #expect(await silent.waitUntilClosed())
            #expect(await halfPreface.waitUntilClosed())
            // The silent ones were closed by the sniff timeout (400 ms), not at once.
            #expect(clock.now - start >= .milliseconds(400))
            #expect(silent.received.bytes.isEmpty)

            // The keep-alive client outlived them all.
            try await healthy.send("GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(try await healthy.responses(2).last?.status == 200)
            await healthy.close()
            #expect(await eventually { listener.openConnectionCount == 0 })
        }
    }

    @Test func grpcIsServedOnTheAcceptedSocket() async throws {
        try await withGRPCStack { listener in
            try await withGRPCClient(port: listener.port) { kv in
                var request = Etcdserverpb_RangeRequest()
                request.key = Data("peers".utf8)
                let peers = String(decoding: try await kv.range(request).kvs.first?.value ?? Data(), as: UTF8.self)
                // Through a proxy, the call's local peer would be the internal server's address.
                #expect(peers.hasPrefix("ipv4:127.0.0.1:\(listener.port) ipv4:127.0.0.1:"), "\(peers)")
            }
        }
    }

    @Test func handedOverConnectionsStartTheServersConnectionTimers() async throws {
        var grpcConfig = HTTP2ServerTransport.Custom<GRPCHandoff>.Config.defaults
        grpcConfig.connection.maxAge = .milliseconds(100)
        try await withGRPCStack(grpcConfig: grpcConfig) { listener in
            let client = try await RawClient.connect(port: listener.port)
            defer { Task { await client.close() } }
            // grpc-swift starts its max-age timer on channelActive, which the connection passed before it was
            // handed to gRPC; only that timer makes the server send GOAWAY to a client that stays silent.
            try await client.send(preface + [0, 0, 0, 4, 0, 0, 0, 0, 0])
            #expect(await eventually { http2FrameTypes(client.received.bytes).contains(7) },
                    "frame types received: \(http2FrameTypes(client.received.bytes))")
        }
    }

    @Test func closingWithAGraceLetsCallsInFlightFinish() async throws {
        slowCallStarts.withLock { $0.removeAll() }
        try await withGRPCStack { listener in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await withGRPCClient(port: listener.port) { kv in
                        var slow = Etcdserverpb_RangeRequest()
                        slow.key = Data("slow".utf8)
                        slow.rangeEnd = Data("400".utf8)
                        let response = try await kv.range(slow)
                        #expect(response.kvs.first?.key == slow.key)
                    }
                }
                group.addTask {
                    // Close once the call is running on the server (connecting may take a while on a busy machine).
                    #expect(await eventually(timeout: .seconds(10)) { slowCallStarts.withLock { $0.count } == 1 })
                    let closing = ContinuousClock.now
                    await listener.close(grace: .seconds(5))
                    // It waited for the call to end, and not for the whole grace.
                    let started = try #require(slowCallStarts.withLock { $0.first })
                    #expect(ContinuousClock.now - started >= .milliseconds(400))
                    #expect(ContinuousClock.now - closing < .seconds(5))
                }
                try await group.waitForAll()
            }
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl")))
    func curlSeesEtcdsAnswers() async throws {
        let endpoints = stubEndpoints(
            health: { _ in (false, HTTPEndpoints.HealthReason.alarmNoSpace) },
            metrics: { ServerMetrics(reportsProcess: false).render() })
        let output = try await withGRPCStack(endpoints: endpoints) { listener in
            // One curl, several URLs: they share a keep-alive connection.
            let base = "http://127.0.0.1:\(listener.port)"
            return try await runCurl([
                "-sS", "-i", "--max-time", "5", "\(base)/health", "\(base)/version", "\(base)/metrics", "\(base)/x",
            ])
        }
        #expect(output.contains("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(output.contains("{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n"))
        #expect(output.contains("{\"etcdserver\":\"3.5.13\",\"etcdcluster\":\"3.5.0\"}"))
        #expect(output.contains("# TYPE etcd_server_has_leader gauge\netcd_server_has_leader 0.0\n"))
        #expect(output.hasSuffix("404 page not found\n"))
    }

    @Test func closingTheListenerClosesItsConnections() async throws {
        try await withGRPCStack { listener in
            let grpc = try await RawClient.connect(port: listener.port)
            try await grpc.send(preface)
            let http = try await RawClient.connect(port: listener.port)
            try await http.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            _ = try await http.responses(1)
            // The gRPC server's SETTINGS frame shows the connection reached it.
            #expect(await eventually { !grpc.received.bytes.isEmpty })

            await listener.close()
            #expect(await grpc.waitUntilClosed())
            #expect(await http.waitUntilClosed())
            await #expect(throws: (any Error).self) {
                let client = try await RawClient.connect(port: listener.port)
                await client.close()
            }
        }
    }
}

/// Runs curl with `arguments` and returns what it printed (curl's own `--max-time` bounds the wait). The
/// output goes to a file, so no thread blocks reading a pipe.
private func runCurl(_ arguments: [String]) async throws -> String {
    let outputURL = FileManager.default.temporaryDirectory
        .appendingPathComponent("client-listener-curl-\(UUID().uuidString)")
    #expect(FileManager.default.createFile(atPath: outputURL.path, contents: nil))
    defer { try? FileManager.default.removeItem(at: outputURL) }
    let output = try FileHandle(forWritingTo: outputURL)
    defer { try? output.close() }

    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    process.arguments = arguments
    process.standardOutput = output
    let finished = AsyncStream<Void> { continuation in
        process.terminationHandler = { _ in continuation.finish() }
    }
    try process.run()
    for await _ in finished {}
    #expect(process.terminationStatus == 0)
    return try String(contentsOf: outputURL, encoding: .utf8)
}

/// Sample lines of a Prometheus text exposition, by series (name plus labels as written).
private struct PrometheusSamples {
    private var values: [String: Double] = [:]

    init(_ text: String) {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...])
            else { continue }
            values[String(line[..<space])] = value
        }
    }

    subscript(series: String) -> Double? { values[series] }
}

@Suite("ServerMetrics and HTTP endpoint helpers")
struct ServerMetricsTests {
    @Test func etcdBuckets() {
        #expect(ServerMetrics.diskDurationBuckets.count == 14)
        #expect(ServerMetrics.diskDurationBuckets.first == 0.001)
        #expect(ServerMetrics.diskDurationBuckets.last == 8.192)
    }

    @Test func registriesAreIndependent() {
        let first = ServerMetrics(reportsProcess: false)
        let second = ServerMetrics(reportsProcess: false)
        first.recordLeaderChange()
        #expect(PrometheusSamples(first.render())["etcd_server_leader_changes_seen_total"] == 1)
        #expect(PrometheusSamples(second.render())["etcd_server_leader_changes_seen_total"] == 0)
        #expect(!first.render().contains("process_"))
        // Families come sorted by name, as from Prometheus' Go client, whatever the registry's order.
        let names = ServerMetrics().render().split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }
            .map { $0.split(separator: " ")[2] }
        #expect(names == names.sorted())
        #expect(names.contains("process_open_fds"))
        // No peer has failed yet: no series, as with etcd's CounterVec.
        #expect(!first.render().contains("etcd_network_peer_sent_failures_total"))
    }

    @Test func healthCountersAsEtcd() {
        let metrics = ServerMetrics(reportsProcess: false)
        metrics.recordHealthCheck(healthy: true)
        metrics.recordHealthCheck(healthy: false)
        metrics.recordHealthCheck(healthy: false)
        let samples = PrometheusSamples(metrics.render())
        #expect(samples["etcd_server_health_success"] == 1)
        #expect(samples["etcd_server_health_failures"] == 2)
    }

    @Test func processStatsFromProc() throws {
        let stat =
            "4242 (kv server) (x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 150 0 0 20 0 9 0 360000 "
            + "1073741824 5000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
        let parsed = try #require(
            ProcessStats.parse(
                stat: stat, systemStat: "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n", openFDs: 12, maxFDs: 1024,
                clockTicksPerSecond: 100, pageSize: 4096))
        #expect(parsed.cpuSeconds == 4)
        #expect(parsed.startTimeSeconds == 1_700_003_600)
        #expect(parsed.virtualMemoryBytes == 1 << 30)
        #expect(parsed.residentMemoryBytes == 5000 * 4096)
        #expect(parsed.openFDs == 12)
        #expect(parsed.prometheusText().contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 4.0\n"))
        #if os(Linux)
        #expect(ProcessStats.current() != nil)
        #endif
    }

    @Test func jsonAsGoEscapesIt() {
        #expect(HTTPEndpoints.healthJSON(healthy: true, reason: "") == #"{"health":"true","reason":""}"#)
        #expect(
            HTTPEndpoints.healthJSON(healthy: false, reason: HTTPEndpoints.HealthReason.rangeError("a <b> & \"c\"\n"))
                == #"{"health":"false","reason":"RANGE ERROR:a \u003cb\u003e \u0026 \"c\"\n"}"#)
        #expect(HTTPEndpoints.goJSONString("\u{1}\u{2028}é") == #""\u0001\u2028é""#)
        #expect(HTTPEndpoints.versionJSON(server: "3.5.13", cluster: "not_decided")
            == #"{"etcdserver":"3.5.13","etcdcluster":"not_decided"}"#)
    }

    @Test func healthQueryParameters() {
        #expect(HTTPEndpoints.healthQuery(from: nil) == HTTPEndpoints.HealthQuery())
        let query = HTTPEndpoints.healthQuery(from: "exclude=NOSPACE&exclude=CORRUPT&serializable=true&serializable=false")
        #expect(query.excludedAlarms == ["NOSPACE", "CORRUPT"])
        #expect(query.serializable)
        #expect(!HTTPEndpoints.healthQuery(from: "serializable=1").serializable)
        #expect(HTTPEndpoints.healthQuery(from: "exclude=NO%53PACE").excludedAlarms == ["NOSPACE"])
    }
}
