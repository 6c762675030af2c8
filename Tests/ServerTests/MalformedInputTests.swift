import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import HistoryCheck
import XCTest
@testable import KVServer
#if canImport(Glibc)
import Glibc
#endif

/// Bad bytes on a real kvserver's client port: malformed protobuf messages, a txn nested too deep, extreme limits,
/// clients that vanish in the middle of a watch, and connections that do not speak HTTP/2. Every call ends within a
/// bounded time with a gRPC error, and the server keeps serving other clients afterwards.
final class MalformedInputTests: XCTestCase {
    /// Protobuf encodings that no decoder can accept.
    static let malformed: [(name: String, bytes: [UInt8])] = [
        // A varint longer than 10 bytes, in tag position.
        ("overlong varint", [UInt8](repeating: 0xFF, count: 11) + [0x01]),
        // Field 1 (key), length-delimited, announces 32 bytes and carries 1.
        ("truncated length-delimited field", [0x0A, 0x20, 0x61]),
        // Field number 0 does not exist.
        ("field number 0", [0x00, 0x01]),
        // Wire types 6 and 7 do not exist.
        ("wire type 7", [0x0F, 0x01]),
        // A group start (wire type 3) that never ends.
        ("unterminated group", [0x0B, 0x08, 0x01]),
        // Length-delimited field with a length above 2 GiB.
        ("huge length", [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x61]),
    ]

    private var cluster: TestCluster!
    /// Where the current server process's part of the log begins.
    private var logStart = 0

    override func setUpWithError() throws {
        cluster = try TestCluster(size: 1)
        try cluster.startAll()
        try cluster.waitHealthy()
        print("\(name): kvserver on client port \(port), log in \(cluster.root.path)")
    }

    override func tearDown() {
        // A crashed server's backtracer inherits its sockets: let it finish before the process is killed.
        _ = crashReport()
        cluster = nil
    }

    private var port: Int { cluster.members[0].clientPort }

    // MARK: Malformed protobuf requests

    func testMalformedUnaryRequestsFailAndTheServerKeepsServing() async throws {
        let port = self.port
        let methods: [(String, MethodDescriptor)] = [
            ("KV/Put", Etcdserverpb_KV.Method.Put.descriptor),
            ("KV/Range", Etcdserverpb_KV.Method.Range.descriptor),
            ("KV/Txn", Etcdserverpb_KV.Method.Txn.descriptor),
        ]
        var codes: [String] = []
        for (method, descriptor) in methods {
            for (name, bytes) in Self.malformed {
                let outcome = try await bounded(seconds: 10, "\(method) with \(name)") {
                    try await withRawClient(port: port) { client in
                        try await client.unary(request: ClientRequest(message: bytes), descriptor: descriptor,
                                               serializer: RawBytesCodec(), deserializer: RawBytesCodec(),
                                               options: .defaults) { try $0.message }
                    }
                }
                let code = try assertRPCError(outcome, "\(method) with \(name)")
                codes.append("\(method) \(name): \(code)")
            }
        }
        print("malformed unary requests answered: \n  " + codes.joined(separator: "\n  "))
        try assertServerAlive()
        try await assertServesPutAndRange(key: "/after/unary")
    }

    func testMalformedWatchRequestFailsTheStreamAndTheServerKeepsServing() async throws {
        let port = self.port
        var codes: [String] = []
        for (name, bytes) in Self.malformed {
            let outcome = try await bounded(seconds: 10, "Watch with \(name)") {
                try await withRawClient(port: port) { client in
                    let request = StreamingClientRequest(of: [UInt8].self) { writer in
                        try await writer.write(bytes)
                        // Keep the request side open: the stream must end because of the bad message, not
                        // because the client closed its side.
                        try await Task.sleep(for: .seconds(30))
                    }
                    return try await client.bidirectionalStreaming(
                        request: request, descriptor: Etcdserverpb_Watch.Method.Watch.descriptor,
                        serializer: RawBytesCodec(), deserializer: RawBytesCodec(), options: .defaults
                    ) { response in
                        var count = 0
                        for try await _ in response.messages { count += 1 }
                        return [UInt8](repeating: 0, count: count)
                    }
                }
            }
            let code = try assertRPCError(outcome, "Watch with \(name)")
            codes.append("Watch \(name): \(code)")
        }
        print("malformed watch requests answered: \n  " + codes.joined(separator: "\n  "))
        try assertServerAlive()
        try await assertServesPutAndRange(key: "/after/watch")
        try await assertWatchWorks()
    }

    // MARK: Deep nesting and extreme values

    /// Nested txns: depth 100 through the generated client, depth 10,000 as hand-encoded bytes (which the client's
    /// own encoder would recurse on). Each gets an answer, the server stays up.
    func testDeeplyNestedTxnGetsAnErrorNotACrash() async throws {
        let port = self.port
        var shallow = Etcdserverpb_TxnRequest()
        for depth in 0..<100 {
            var op = Etcdserverpb_RequestOp()
            if depth == 0 {
                var put = Etcdserverpb_PutRequest()
                put.key = Data("/deep".utf8)
                put.value = Data("v".utf8)
                op.requestPut = put
            } else {
                op.requestTxn = shallow
            }
            shallow = Etcdserverpb_TxnRequest()
            shallow.success = [op]
        }
        let request = shallow
        let depth100 = try await bounded(seconds: 20, "txn nested 100 deep") {
            try await withKVClient(port: port) { kv in try await kv.txn(request) }
        }
        switch depth100 {
        case .success(let response):
            print("txn nested 100 deep: succeeded at revision \(response.header.revision)")
        case .failure:
            let code = try assertRPCError(depth100, "txn nested 100 deep")
            print("txn nested 100 deep: \(code)")
        }
        try assertServerAlive()

        let bytes = Self.nestedTxnBytes(depth: 10_000)
        let depth10k = try await bounded(seconds: 20, "txn nested 10,000 deep") {
            try await withRawClient(port: port) { client in
                try await client.unary(request: ClientRequest(message: bytes),
                                       descriptor: Etcdserverpb_KV.Method.Txn.descriptor,
                                       serializer: RawBytesCodec(), deserializer: RawBytesCodec(),
                                       options: .defaults) { try $0.message }
            }
        }
        let code = try assertRPCError(depth10k, "txn nested 10,000 deep")
        print("txn nested 10,000 deep: \(code)")
        try assertServerAlive()
        try await assertServesPutAndRange(key: "/after/deep")
    }

    /// TxnRequest{success: [RequestOp{request_txn: …}]} `depth` times around an empty TxnRequest.
    static func nestedTxnBytes(depth: Int) -> [UInt8] {
        func varint(_ value: Int) -> [UInt8] {
            var value = UInt64(value)
            var bytes: [UInt8] = []
            while value >= 0x80 {
                bytes.append(UInt8(value & 0x7F) | 0x80)
                value >>= 7
            }
            bytes.append(UInt8(value))
            return bytes
        }
        var txn: [UInt8] = []
        for _ in 0..<depth {
            let op = [0x22] + varint(txn.count) + txn  // RequestOp.request_txn = 4
            txn = [0x12] + varint(op.count) + op       // TxnRequest.success = 2
        }
        return txn
    }

    func testRangeWithTheLargestLimit() async throws {
        let port = self.port
        let outcome = try await bounded(seconds: 10, "range with limit Int64.max") {
            try await withKVClient(port: port) { kv in
                for index in 0..<5 {
                    var put = Etcdserverpb_PutRequest()
                    put.key = Data("/limit/\(index)".utf8)
                    put.value = Data("\(index)".utf8)
                    _ = try await kv.put(put)
                }
                var range = Etcdserverpb_RangeRequest()
                range.key = Data("/limit/".utf8)
                range.rangeEnd = Data("/limit0".utf8)
                range.limit = .max
                return try await kv.range(range)
            }
        }
        guard case .success(let response) = outcome else {
            try assertServerAlive()
            XCTFail("range with limit Int64.max failed: \(outcome)")
            return
        }
        XCTAssertEqual(response.kvs.map { String(decoding: $0.key, as: UTF8.self) }, (0..<5).map { "/limit/\($0)" })
        XCTAssertEqual(response.count, 5)
        XCTAssertFalse(response.more)
        // And sorted, and counting only, and with every revision bound at its extreme.
        let extremes = try await bounded(seconds: 10, "range with extreme bounds") {
            try await withKVClient(port: port) { kv in
                var range = Etcdserverpb_RangeRequest()
                range.key = Data("/limit/".utf8)
                range.rangeEnd = Data("/limit0".utf8)
                range.limit = .max
                range.sortOrder = .descend
                range.sortTarget = .mod
                range.maxModRevision = .max
                range.maxCreateRevision = .max
                return try await kv.range(range)
            }
        }.get()
        XCTAssertEqual(extremes.kvs.map { String(decoding: $0.key, as: UTF8.self) },
                       (0..<5).reversed().map { "/limit/\($0)" })
        try assertServerAlive()
    }

    // MARK: Clients that go away

    func testClientsLeavingInTheMiddleOfAWatchLeaveTheServerServing() async throws {
        let port = self.port
        // A writer keeps events coming while watchers leave.
        let writer = Task {
            try await withKVClient(port: port) { kv in
                var index = 0
                let deadline = ContinuousClock.now + .seconds(60)
                while !Task.isCancelled && ContinuousClock.now < deadline {
                    var put = Etcdserverpb_PutRequest()
                    put.key = Data("/w/\(index % 10)".utf8)
                    put.value = Data(repeating: UInt8(ascii: "x"), count: 512)
                    _ = try await kv.put(put)
                    index += 1
                }
            }
        }
        defer { writer.cancel() }

        // 1. A gRPC client that cancels its watch after a few events (RST_STREAM), then closes its connection.
        let seen = try await bounded(seconds: 15, "watch cancelled mid-stream") {
            try await withWatchClient(port: port) { watch in
                do {
                    return try await watch.watch(request: StreamingClientRequest(of: Etcdserverpb_WatchRequest.self) {
                        writer in
                        try await writer.write(.create(prefix: "/w/"))
                        try await Task.sleep(for: .seconds(30))
                    }) { response in
                        var events = 0
                        for try await message in response.messages {
                            events += message.events.count
                            if events >= 20 { throw LeftMidStream(events: events) }
                        }
                        return events
                    }
                } catch let left as LeftMidStream {
                    return left.events
                }
            }
        }.get()
        XCTAssertGreaterThanOrEqual(seen, 20)
        try assertServerAlive()

        // 2. etcdctl killed (SIGKILL) in the middle of a watch: the connection drops without any goodbye.
        for _ in 0..<3 {
            let killed = try cluster.etcdctl(["watch", "--prefix", "/w/"], timeout: 1.5)
            XCTAssertTrue(killed.stdout.contains("PUT\n/w/"), "the watch saw no event before it was killed")
        }
        try assertServerAlive()
        try await assertServesPutAndRange(key: "/after/left")
        try await assertWatchWorks()
    }

    // MARK: Not HTTP/2

    func testConnectionsThatDoNotSpeakHTTP2AreClosed() async throws {
        var generator = SystemRandomNumberGenerator()
        let random = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) }
        // Random bytes from the first byte; random bytes after a valid HTTP/2 preface; a preface and a frame
        // header announcing a 16 MiB frame of an unknown type on stream 0 … then garbage.
        let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        let cases: [(String, [UInt8])] = [
            ("random bytes", [0x16, 0x03, 0x01] + random),
            ("random bytes after the HTTP/2 preface", preface + random),
            ("an oversized frame after the preface", preface + [0xFF, 0xFF, 0xFF, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00]
                + random),
        ]
        for (name, bytes) in cases {
            let result = try RawConnection.sendAndAwaitClose(port: port, bytes: bytes, timeout: 15)
            XCTAssertTrue(result.closed, "\(name): the server did not close the connection within 15 s")
            print("\(name): closed=\(result.closed) after \(result.received) bytes from the server")
            try assertServerAlive()
        }
        try await assertServesPutAndRange(key: "/after/garbage")
    }

    // MARK: Extreme values

    /// Well-formed requests with values at the edges of their types (and enum values no version of etcd defines),
    /// each on a new connection: every one gets an answer, none brings the server down. A crash is reported with
    /// its backtrace, and a new server process is started on the same data for the next case.
    func testExtremeValuesDoNotCrashTheServer() async throws {
        typealias Client = GRPCClient<HTTP2ClientTransport.Posix>
        let cases: [(String, @Sendable (Client) async throws -> String)] = [
            ("Range limit Int64.max", { client in
                var range = Etcdserverpb_RangeRequest()
                range.key = Data("/".utf8)
                range.rangeEnd = Data([0])
                range.limit = .max
                return "\(try await Etcdserverpb_KV.Client(wrapping: client).range(range).count) keys"
            }),
            ("Range limit Int64.min, revision Int64.min", { client in
                var range = Etcdserverpb_RangeRequest()
                range.key = Data("/".utf8)
                range.rangeEnd = Data([0])
                range.limit = .min
                range.revision = .min
                return "\(try await Etcdserverpb_KV.Client(wrapping: client).range(range).count) keys"
            }),
            ("Range unknown sort order and target", { client in
                var range = Etcdserverpb_RangeRequest()
                range.key = Data("/".utf8)
                range.rangeEnd = Data([0])
                range.limit = 1
                range.sortOrder = .UNRECOGNIZED(99)
                range.sortTarget = .UNRECOGNIZED(99)
                return "\(try await Etcdserverpb_KV.Client(wrapping: client).range(range).count) keys"
            }),
            ("Range min revisions Int64.max, max revisions Int64.min", { client in
                var range = Etcdserverpb_RangeRequest()
                range.key = Data([0])
                range.rangeEnd = Data([0])
                range.minModRevision = .max
                range.minCreateRevision = .max
                range.maxModRevision = .min
                range.maxCreateRevision = .min
                return "\(try await Etcdserverpb_KV.Client(wrapping: client).range(range).count) keys"
            }),
            ("Put lease Int64.min", { client in
                var put = Etcdserverpb_PutRequest()
                put.key = Data("/extreme/lease".utf8)
                put.lease = .min
                return "revision \(try await Etcdserverpb_KV.Client(wrapping: client).put(put).header.revision)"
            }),
            ("DeleteRange of every key with prev_kv", { client in
                var delete = Etcdserverpb_DeleteRangeRequest()
                delete.key = Data([0])
                delete.rangeEnd = Data([0])
                delete.prevKv = true
                return "\(try await Etcdserverpb_KV.Client(wrapping: client).deleteRange(delete).deleted) deleted"
            }),
            ("Compact revision Int64.min", { client in
                var compact = Etcdserverpb_CompactionRequest()
                compact.revision = .min
                return "revision \(try await Etcdserverpb_KV.Client(wrapping: client).compact(compact).header.revision)"
            }),
            ("Txn compares with unknown result and target, Int64 extremes, no target value", { client in
                var txn = Etcdserverpb_TxnRequest()
                var unknown = Etcdserverpb_Compare()
                unknown.key = Data("/a".utf8)
                unknown.result = .UNRECOGNIZED(9)
                unknown.target = .UNRECOGNIZED(9)
                unknown.modRevision = .max
                var empty = Etcdserverpb_Compare()
                empty.key = Data("/a".utf8)
                empty.target = .value
                var lease = Etcdserverpb_Compare()
                lease.key = Data([0])
                lease.rangeEnd = Data([0])
                lease.target = .lease
                lease.result = .less
                lease.lease = .min
                txn.compare = [unknown, empty, lease]
                return "succeeded \(try await Etcdserverpb_KV.Client(wrapping: client).txn(txn).succeeded)"
            }),
            ("Txn with a range of limit Int64.max inside", { client in
                var range = Etcdserverpb_RangeRequest()
                range.key = Data([0])
                range.rangeEnd = Data([0])
                range.limit = .max
                var op = Etcdserverpb_RequestOp()
                op.requestRange = range
                var txn = Etcdserverpb_TxnRequest()
                txn.success = [op]
                return "succeeded \(try await Etcdserverpb_KV.Client(wrapping: client).txn(txn).succeeded)"
            }),
            ("LeaseGrant TTL Int64.max", { client in
                var grant = Etcdserverpb_LeaseGrantRequest()
                grant.ttl = .max
                let response = try await Etcdserverpb_Lease.Client(wrapping: client).leaseGrant(grant)
                return "ttl \(response.ttl) error \(response.error.debugDescription)"
            }),
            ("LeaseGrant TTL Int64.min", { client in
                var grant = Etcdserverpb_LeaseGrantRequest()
                grant.ttl = .min
                let response = try await Etcdserverpb_Lease.Client(wrapping: client).leaseGrant(grant)
                return "ttl \(response.ttl) error \(response.error.debugDescription)"
            }),
            ("LeaseGrant ID Int64.max twice, ID -1", { client in
                let lease = Etcdserverpb_Lease.Client(wrapping: client)
                var grant = Etcdserverpb_LeaseGrantRequest()
                grant.ttl = 9_000_000_000
                grant.id = .max
                let first = try await lease.leaseGrant(grant)
                var outcomes = ["id \(first.id) ttl \(first.ttl)"]
                do {
                    _ = try await lease.leaseGrant(grant)
                    outcomes.append("second grant succeeded")
                } catch let error as RPCError {
                    outcomes.append("second: \(error.message)")
                }
                grant.id = -1
                do {
                    let negative = try await lease.leaseGrant(grant)
                    outcomes.append("id -1 granted as \(negative.id)")
                } catch let error as RPCError {
                    outcomes.append("id -1: \(error.message)")
                }
                var revoke = Etcdserverpb_LeaseRevokeRequest()
                revoke.id = .max
                _ = try await lease.leaseRevoke(revoke)
                return outcomes.joined(separator: "; ")
            }),
            ("LeaseTimeToLive ID Int64.min with keys", { client in
                var request = Etcdserverpb_LeaseTimeToLiveRequest()
                request.id = .min
                request.keys = true
                let response = try await Etcdserverpb_Lease.Client(wrapping: client).leaseTimeToLive(request)
                return "ttl \(response.ttl)"
            }),
            ("LeaseKeepAlive IDs Int64.min, 0, Int64.max", { client in
                try await Etcdserverpb_Lease.Client(wrapping: client).leaseKeepAlive { writer in
                    for id: Int64 in [.min, 0, .max] {
                        var request = Etcdserverpb_LeaseKeepAliveRequest()
                        request.id = id
                        try await writer.write(request)
                    }
                    try await Task.sleep(for: .milliseconds(500))
                } onResponse: { response in
                    var ttls: [Int64] = []
                    for try await message in response.messages { ttls.append(message.ttl) }
                    return "ttls \(ttls)"
                }
            }),
            ("Watch start revisions Int64.max and Int64.min, one watch ID twice, unknown filter, cancel of no watch", {
                client in
                try await Etcdserverpb_Watch.Client(wrapping: client).watch(
                    request: StreamingClientRequest(of: Etcdserverpb_WatchRequest.self) { writer in
                        var requests: [Etcdserverpb_WatchRequest] = []
                        for (start, id) in [(Int64.max, Int64.max), (Int64.min, Int64.max), (0, Int64.min)] {
                            var request = Etcdserverpb_WatchRequest.create(prefix: "/")
                            request.createRequest.startRevision = start
                            request.createRequest.watchID = id
                            request.createRequest.filters = [.UNRECOGNIZED(7), .nodelete]
                            requests.append(request)
                        }
                        var cancel = Etcdserverpb_WatchRequest()
                        cancel.cancelRequest.watchID = .min
                        requests.append(cancel)
                        var progress = Etcdserverpb_WatchRequest()
                        progress.progressRequest = Etcdserverpb_WatchProgressRequest()
                        requests.append(progress)
                        for request in requests { try await writer.write(request) }
                        try await Task.sleep(for: .seconds(1))
                    }
                ) { response in
                    var seen: [String] = []
                    for try await message in response.messages {
                        seen.append("id \(message.watchID) created \(message.created) canceled \(message.canceled)"
                            + (message.cancelReason.isEmpty ? "" : " (\(message.cancelReason))"))
                    }
                    return seen.joined(separator: "; ")
                }
            }),
            ("MemberAdd with unparsable peer URLs", { client in
                var add = Etcdserverpb_MemberAddRequest()
                add.peerUrls = ["::not a url::", ""]
                let response = try await Etcdserverpb_Cluster.Client(wrapping: client).memberAdd(add)
                return "added \(response.member.id) with \(response.member.peerUrls)"
            }),
            ("MemberAdd with no peer URL", { client in
                let response = try await Etcdserverpb_Cluster.Client(wrapping: client)
                    .memberAdd(Etcdserverpb_MemberAddRequest())
                return "added \(response.member.id) with \(response.member.peerUrls)"
            }),
            ("MemberRemove, MemberPromote of ID 0", { client in
                let cluster = Etcdserverpb_Cluster.Client(wrapping: client)
                var outcomes: [String] = []
                do {
                    _ = try await cluster.memberRemove(Etcdserverpb_MemberRemoveRequest())
                    outcomes.append("remove succeeded")
                } catch let error as RPCError {
                    outcomes.append("remove: \(error.message)")
                }
                _ = try await cluster.memberPromote(Etcdserverpb_MemberPromoteRequest())
                return outcomes.joined(separator: "; ")
            }),
        ]
        var report: [String] = []
        for (name, body) in cases {
            let port = self.port
            let answer: Result<String, any Error>?
            do {
                answer = try await bounded(seconds: 15, name) {
                    try await withRawClient(port: port) { client in try await body(client) }
                }
            } catch is TimedOut {
                answer = nil  // bounded reported it, with the crash if there was one
            }
            guard let outcome = answer else {
                report.append("\(name): NO ANSWER\(crashReport() == nil ? "" : " (CRASH)")")
                try restartServer()
                continue
            }
            if let crash = crashReport() {
                XCTFail("\(name): kvserver crashed:\n\(crash)")
                report.append("\(name): CRASH")
                try restartServer()
                continue
            }
            switch outcome {
            case .success(let answer): report.append("\(name): \(answer)")
            case .failure(let error as RPCError):
                XCTAssertFalse([.unavailable, .deadlineExceeded].contains(error.code), "\(name): \(error)")
                report.append("\(name): \(error.code): \(error.message)")
            case .failure(let error):
                XCTFail("\(name): not a gRPC error: \(error)")
                report.append("\(name): \(error)")
            }
        }
        print("extreme values answered:\n  " + report.joined(separator: "\n  "))
        try assertServerAlive()
        try await assertServesPutAndRange(key: "/after/extremes")
    }

    // MARK: Helpers

    private struct LeftMidStream: Error {
        var events: Int
    }

    private struct TimedOut: Error, CustomStringConvertible {
        var what: String
        var description: String { "\(what): no answer within the time limit" }
    }

    /// Runs `body` for at most `seconds`; a timeout fails the test (a hang is a bug) and throws. The body runs in a
    /// task of its own that is cancelled at the limit but never waited for, so a body that ignores cancellation
    /// cannot hang the test.
    private func bounded<T: Sendable>(seconds: Double, _ what: String,
                                      _ body: @escaping @Sendable () async throws -> T) async throws -> Result<T, any Error> {
        let outcome: Result<T, any Error>? = await withCheckedContinuation { continuation in
            let pending = ResumeOnce(continuation)
            let task = Task {
                let result: Result<T, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                pending.resume(returning: result)
            }
            Task {
                try? await Task.sleep(for: .seconds(seconds))
                if pending.resume(returning: nil) { task.cancel() }
            }
        }
        guard let outcome else {
            // A server that crashed may leave the call hanging: its backtracer holds the sockets meanwhile.
            if let crash = crashReport() {
                XCTFail("\(what): no answer within \(seconds) s; kvserver crashed:\n\(crash)")
            } else {
                XCTFail("\(what): no answer within \(seconds) s")
            }
            throw TimedOut(what: what)
        }
        return outcome
    }

    /// The outcome must be a gRPC error other than those that mean "no server" or "no answer"; answers its code.
    @discardableResult
    private func assertRPCError<T>(_ outcome: Result<T, any Error>, _ what: String,
                                   file: StaticString = #filePath, line: UInt = #line) throws -> String {
        switch outcome {
        case .success:
            XCTFail("\(what): succeeded, expected a gRPC error", file: file, line: line)
            return "success"
        case .failure(let error as RPCError):
            XCTAssertFalse([.unavailable, .deadlineExceeded].contains(error.code),
                           "\(what): \(error) (the server is gone or did not answer)", file: file, line: line)
            return "\(error.code): \(error.message)"
        case .failure(let error):
            XCTFail("\(what): not a gRPC error: \(error)", file: file, line: line)
            return "\(error)"
        }
    }

    private func assertServerAlive(file: StaticString = #filePath, line: UInt = #line) throws {
        if let crash = crashReport() {
            XCTFail("kvserver crashed:\n\(crash)", file: file, line: line)
            throw TimedOut(what: "kvserver crashed")
        }
    }

    /// Whether the server crashed (it exited, or its log shows a trap), with the crash's lines of its log once the
    /// backtrace is complete (Swift's backtracer takes seconds; waits up to 60 s for the process to end).
    private func crashReport() -> String? {
        let markers = ["*** Signal", "Fatal error", "runtime failure"]
        guard let process = cluster.members[0].process else { return "kvserver is not running" }
        if process.isRunning && !markers.contains(where: currentLog().contains) { return nil }
        let deadline = Date().addingTimeInterval(60)
        while process.isRunning && Date() < deadline { usleep(100_000) }
        let log = currentLog()
        guard let start = markers.compactMap({ log.range(of: $0)?.lowerBound }).min() else {
            return "kvserver exited with status \(process.isRunning ? -1 : process.terminationStatus); its log:\n"
                + log.suffix(8000)
        }
        // The trap line, then the crashed thread's frames up to the first frame of the async runtime.
        let lines = log[start...].split(separator: "\n", omittingEmptySubsequences: false)
        var kept: [Substring] = Array(lines.prefix(4))
        if let crashed = lines.firstIndex(where: { $0.hasSuffix(" crashed:") }) {
            kept.append("...")
            kept += lines[crashed...].prefix(16)
        }
        return kept.joined(separator: "\n")
    }

    /// The log of the running server process (the log file is appended to across restarts).
    private func currentLog() -> String {
        String(cluster.log(0).dropFirst(logStart))
    }

    /// After a crash: a fresh server on the same data directory, so that the next case runs.
    private func restartServer() throws {
        cluster.kill(0)
        logStart = cluster.log(0).count
        try cluster.start(0)
        try cluster.waitHealthy()
    }

    /// A new client puts and reads back a key.
    private func assertServesPutAndRange(key: String, file: StaticString = #filePath, line: UInt = #line) async throws {
        let port = self.port
        let value = try await bounded(seconds: 10, "put and range of \(key)") {
            try await withKVClient(port: port) { kv in
                var put = Etcdserverpb_PutRequest()
                put.key = Data(key.utf8)
                put.value = Data("alive".utf8)
                _ = try await kv.put(put)
                var range = Etcdserverpb_RangeRequest()
                range.key = Data(key.utf8)
                return try await kv.range(range).kvs.first.map { String(decoding: $0.value, as: UTF8.self) }
            }
        }
        switch value {
        case .success(let value): XCTAssertEqual(value, "alive", file: file, line: line)
        case .failure(let error):
            XCTFail("the server no longer serves put/range: \(error)\n\(cluster.log(0).suffix(8000))", file: file,
                    line: line)
        }
    }

    /// A new watch sees a new put.
    private func assertWatchWorks(file: StaticString = #filePath, line: UInt = #line) async throws {
        let port = self.port
        let key = "/watch-check/\(UUID().uuidString.prefix(6))"
        let seen = try await bounded(seconds: 10, "a new watch") {
            try await withWatchClient(port: port) { watch in
                do {
                    return try await watch.watch(request: StreamingClientRequest(of: Etcdserverpb_WatchRequest.self) {
                        writer in
                        try await writer.write(.create(prefix: key))
                        try await Task.sleep(for: .seconds(30))
                    }) { response in
                        for try await message in response.messages {
                            if message.created {
                                try await withKVClient(port: port) { kv in
                                    var put = Etcdserverpb_PutRequest()
                                    put.key = Data(key.utf8)
                                    put.value = Data("w".utf8)
                                    _ = try await kv.put(put)
                                }
                            }
                            if let event = message.events.first {
                                throw LeftMidStream(events: event.kv.key == Data(key.utf8) ? 1 : 0)
                            }
                        }
                        return 0
                    }
                } catch let left as LeftMidStream {
                    return left.events
                }
            }
        }
        switch seen {
        case .success(let events): XCTAssertEqual(events, 1, "the new watch saw no event", file: file, line: line)
        case .failure(let error): XCTFail("a new watch failed: \(error)", file: file, line: line)
        }
    }
}

extension Etcdserverpb_WatchRequest {
    static func create(prefix: String) -> Etcdserverpb_WatchRequest {
        var create = Etcdserverpb_WatchCreateRequest()
        create.key = Data(prefix.utf8)
        var end = Array(prefix.utf8)
        end[end.count - 1] += 1
        create.rangeEnd = Data(end)
        var request = Etcdserverpb_WatchRequest()
        request.createRequest = create
        return request
    }
}

private func transport(port: Int) throws -> HTTP2ClientTransport.Posix {
    try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
}

private func withRawClient<T: Sendable>(
    port: Int, _ body: @Sendable (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
) async throws -> T {
    try await withGRPCClient(transport: try transport(port: port)) { client in try await body(client) }
}

private func withKVClient<T: Sendable>(
    port: Int, _ body: @Sendable (Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>) async throws -> T
) async throws -> T {
    try await withGRPCClient(transport: try transport(port: port)) { client in
        try await body(Etcdserverpb_KV.Client(wrapping: client))
    }
}

private func withWatchClient<T: Sendable>(
    port: Int, _ body: @Sendable (Etcdserverpb_Watch.Client<HTTP2ClientTransport.Posix>) async throws -> T
) async throws -> T {
    try await withGRPCClient(transport: try transport(port: port)) { client in
        try await body(Etcdserverpb_Watch.Client(wrapping: client))
    }
}

/// A continuation resumed by whichever of two tasks comes first.
private final class ResumeOnce<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<Value, Never>?

    init(_ continuation: CheckedContinuation<Value, Never>) {
        self.continuation = continuation
    }

    /// Whether this call resumed it.
    @discardableResult
    func resume(returning value: Value) -> Bool {
        lock.lock()
        let continuation = self.continuation
        self.continuation = nil
        lock.unlock()
        continuation?.resume(returning: value)
        return continuation != nil
    }
}

/// A plain TCP connection that sends bytes and waits (bounded) for the server to close it.
enum RawConnection {
    struct Result {
        var closed: Bool
        var received: Int
    }

    static func sendAndAwaitClose(port: Int, bytes: [UInt8], timeout: TimeInterval) throws -> Result {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        var receiveTimeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &receiveTimeout, socklen_t(MemoryLayout<timeval>.size))
        // MSG_NOSIGNAL: a server that closes early must not kill the test process with SIGPIPE.
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes {
                send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if sent <= 0 { break }
            offset += sent
        }
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { return Result(closed: true, received: received) }
            if count > 0 {
                received += count
                continue
            }
            if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { continue }
            return Result(closed: true, received: received)  // ECONNRESET and the like
        }
        return Result(closed: false, received: received)
    }
}

// MARK: - Seeded fuzzing of every method

/// Random and mutated protobuf bytes to every etcd gRPC method, oversize payloads, nasty but well-formed requests
/// (inverted and empty ranges, extreme limits and revisions, txns over the op limit and nested deep), and streams
/// (Watch, LeaseKeepAlive) abandoned mid-way. Every call must end within its deadline plus a margin; afterwards the
/// process is alive and a put and a range work.
///
/// `FUZZ_SEED=S` replays a run (the default seed is fixed, so CI is repeatable); `FUZZ_CALLS=N` changes the number
/// of calls (default 400, a few seconds).
extension MalformedInputTests {
    enum FuzzShape: Sendable { case unary, serverStream, bidiStream }

    struct FuzzMethod: Sendable {
        var descriptor: MethodDescriptor
        var shape: FuzzShape
        /// Valid requests to mutate; empty for methods only ever sent garbage (those whose valid requests would
        /// change the cluster itself: adding members, enabling auth, moving the leader, a full snapshot).
        var templates: [[UInt8]]
    }

    static func fuzzMethods() throws -> [FuzzMethod] {
        func method(_ service: String, _ name: String, _ shape: FuzzShape = .unary, _ templates: [[UInt8]] = []) -> FuzzMethod {
            FuzzMethod(descriptor: MethodDescriptor(fullyQualifiedService: "etcdserverpb.\(service)", method: name),
                       shape: shape, templates: templates)
        }
        var range = Etcdserverpb_RangeRequest()
        range.key = Data("/fuzz/a".utf8)
        range.rangeEnd = Data("/fuzz/z".utf8)
        range.limit = 10
        var inverted = range
        inverted.key = Data("/fuzz/z".utf8)
        inverted.rangeEnd = Data("/fuzz/a".utf8)
        var extreme = range
        extreme.limit = .max
        extreme.revision = .max
        var negative = range
        negative.limit = -1
        negative.revision = .min
        var everything = Etcdserverpb_RangeRequest()
        everything.key = Data([0])
        everything.rangeEnd = Data([0])
        everything.countOnly = true
        var put = Etcdserverpb_PutRequest()
        put.key = Data("/fuzz/k".utf8)
        put.value = Data("v".utf8)
        put.prevKv = true
        var emptyKeyPut = put
        emptyKeyPut.key = Data()
        var delete = Etcdserverpb_DeleteRangeRequest()
        delete.key = Data("/fuzz/k".utf8)
        delete.rangeEnd = Data("/fuzz/l".utf8)
        var compare = Etcdserverpb_Compare()
        compare.key = Data("/fuzz/k".utf8)
        compare.target = .mod
        compare.result = .greater
        compare.modRevision = 1
        var operation = Etcdserverpb_RequestOp()
        operation.requestPut = put
        var txn = Etcdserverpb_TxnRequest()
        txn.compare = [compare]
        txn.success = [operation]
        var rangeOperation = Etcdserverpb_RequestOp()
        rangeOperation.requestRange = range
        txn.failure = [rangeOperation]
        var overLimit = Etcdserverpb_TxnRequest()
        overLimit.success = Array(repeating: rangeOperation, count: 200)
        var compact = Etcdserverpb_CompactionRequest()
        compact.revision = 1
        var grant = Etcdserverpb_LeaseGrantRequest()
        grant.ttl = 5
        var revoke = Etcdserverpb_LeaseRevokeRequest()
        revoke.id = 1
        var timeToLive = Etcdserverpb_LeaseTimeToLiveRequest()
        timeToLive.id = 1
        timeToLive.keys = true
        var keepAlive = Etcdserverpb_LeaseKeepAliveRequest()
        keepAlive.id = 1
        var hashKV = Etcdserverpb_HashKVRequest()
        hashKV.revision = 0
        var alarm = Etcdserverpb_AlarmRequest()
        alarm.action = .get
        var authenticate = Etcdserverpb_AuthenticateRequest()
        authenticate.name = "fuzz-user"
        authenticate.password = "p"
        var userAdd = Etcdserverpb_AuthUserAddRequest()
        userAdd.name = "fuzz-user"
        userAdd.password = "p"
        var userGet = Etcdserverpb_AuthUserGetRequest()
        userGet.name = "fuzz-user"
        var userDelete = Etcdserverpb_AuthUserDeleteRequest()
        userDelete.name = "fuzz-user"
        var changePassword = Etcdserverpb_AuthUserChangePasswordRequest()
        changePassword.name = "fuzz-user"
        changePassword.password = "q"
        var grantRole = Etcdserverpb_AuthUserGrantRoleRequest()
        grantRole.user = "fuzz-user"
        grantRole.role = "fuzz-role"
        var revokeRole = Etcdserverpb_AuthUserRevokeRoleRequest()
        revokeRole.name = "fuzz-user"
        revokeRole.role = "fuzz-role"
        var roleAdd = Etcdserverpb_AuthRoleAddRequest()
        roleAdd.name = "fuzz-role"
        var roleGet = Etcdserverpb_AuthRoleGetRequest()
        roleGet.role = "fuzz-role"
        var roleDelete = Etcdserverpb_AuthRoleDeleteRequest()
        roleDelete.role = "fuzz-role"
        var permission = Authpb_Permission()
        permission.permType = .readwrite
        permission.key = Data("/fuzz/".utf8)
        permission.rangeEnd = Data("/fuzz0".utf8)
        var grantPermission = Etcdserverpb_AuthRoleGrantPermissionRequest()
        grantPermission.name = "fuzz-role"
        grantPermission.perm = permission
        var revokePermission = Etcdserverpb_AuthRoleRevokePermissionRequest()
        revokePermission.role = "fuzz-role"
        revokePermission.key = Data("/fuzz/".utf8)
        revokePermission.rangeEnd = Data("/fuzz0".utf8)
        var watch = Etcdserverpb_WatchRequest()
        var create = Etcdserverpb_WatchCreateRequest()
        create.key = Data("/fuzz/".utf8)
        create.rangeEnd = Data("/fuzz0".utf8)
        create.prevKv = true
        create.progressNotify = true
        watch.createRequest = create
        var cancel = Etcdserverpb_WatchRequest()
        var cancelRequest = Etcdserverpb_WatchCancelRequest()
        cancelRequest.watchID = 0
        cancel.cancelRequest = cancelRequest
        var progress = Etcdserverpb_WatchRequest()
        progress.progressRequest = Etcdserverpb_WatchProgressRequest()

        return [
            method("KV", "Range", .unary, [try Array(range.serializedData()), try Array(inverted.serializedData()), try Array(extreme.serializedData()), try Array(negative.serializedData()),
                                           try Array(everything.serializedData())]),
            method("KV", "Put", .unary, [try Array(put.serializedData()), try Array(emptyKeyPut.serializedData())]),
            method("KV", "DeleteRange", .unary, [try Array(delete.serializedData())]),
            method("KV", "Txn", .unary, [try Array(txn.serializedData()), try Array(overLimit.serializedData()), Self.nestedTxnBytes(depth: 150)]),
            method("KV", "Compact", .unary, [try Array(compact.serializedData())]),
            method("Watch", "Watch", .bidiStream, [try Array(watch.serializedData()), try Array(cancel.serializedData()), try Array(progress.serializedData())]),
            method("Lease", "LeaseGrant", .unary, [try Array(grant.serializedData())]),
            method("Lease", "LeaseRevoke", .unary, [try Array(revoke.serializedData())]),
            method("Lease", "LeaseKeepAlive", .bidiStream, [try Array(keepAlive.serializedData())]),
            method("Lease", "LeaseTimeToLive", .unary, [try Array(timeToLive.serializedData())]),
            method("Lease", "LeaseLeases", .unary, [try Array(Etcdserverpb_LeaseLeasesRequest().serializedData())]),
            method("Cluster", "MemberAdd"), method("Cluster", "MemberRemove"), method("Cluster", "MemberUpdate"),
            method("Cluster", "MemberPromote"),
            method("Cluster", "MemberList", .unary, [try Array(Etcdserverpb_MemberListRequest().serializedData())]),
            method("Maintenance", "Alarm", .unary, [try Array(alarm.serializedData())]),
            method("Maintenance", "Status", .unary, [try Array(Etcdserverpb_StatusRequest().serializedData())]),
            method("Maintenance", "Defragment"),
            method("Maintenance", "Hash", .unary, [try Array(Etcdserverpb_HashRequest().serializedData())]),
            method("Maintenance", "HashKV", .unary, [try Array(hashKV.serializedData())]),
            method("Maintenance", "Snapshot", .serverStream),
            method("Maintenance", "MoveLeader"),
            method("Auth", "AuthEnable"), method("Auth", "AuthDisable"),
            method("Auth", "AuthStatus", .unary, [try Array(Etcdserverpb_AuthStatusRequest().serializedData())]),
            method("Auth", "Authenticate", .unary, [try Array(authenticate.serializedData())]),
            method("Auth", "UserAdd", .unary, [try Array(userAdd.serializedData())]),
            method("Auth", "UserGet", .unary, [try Array(userGet.serializedData())]),
            method("Auth", "UserList", .unary, [try Array(Etcdserverpb_AuthUserListRequest().serializedData())]),
            method("Auth", "UserDelete", .unary, [try Array(userDelete.serializedData())]),
            method("Auth", "UserChangePassword", .unary, [try Array(changePassword.serializedData())]),
            method("Auth", "UserGrantRole", .unary, [try Array(grantRole.serializedData())]),
            method("Auth", "UserRevokeRole", .unary, [try Array(revokeRole.serializedData())]),
            method("Auth", "RoleAdd", .unary, [try Array(roleAdd.serializedData())]),
            method("Auth", "RoleGet", .unary, [try Array(roleGet.serializedData())]),
            method("Auth", "RoleList", .unary, [try Array(Etcdserverpb_AuthRoleListRequest().serializedData())]),
            method("Auth", "RoleDelete", .unary, [try Array(roleDelete.serializedData())]),
            method("Auth", "RoleGrantPermission", .unary, [try Array(grantPermission.serializedData())]),
            method("Auth", "RoleRevokePermission", .unary, [try Array(revokePermission.serializedData())]),
        ]
    }

    /// A payload for `method`: random bytes, a mutated valid request, or (rarely) an oversize one.
    static func fuzzPayload(_ method: FuzzMethod, using random: inout SeededRandom) -> (kind: String, bytes: [UInt8]) {
        let roll = Int.random(in: 0..<100, using: &random)
        if roll < 3 {
            // Beyond the server's receive limit (--max-request-bytes + gRPC's margin).
            return ("oversize", [UInt8](repeating: UInt8.random(in: 0...255, using: &random), count: 3 << 20))
        }
        if method.templates.isEmpty || roll < 35 {
            let count = Int.random(in: 0...64, using: &random) * (Bool.random(using: &random) ? 1 : 8)
            return ("random", (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) })
        }
        var bytes = method.templates.randomElement(using: &random)!
        if roll < 45 { return ("template", bytes) }
        for _ in 0..<Int.random(in: 1...4, using: &random) {
            let position = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &random)
            switch Int.random(in: 0..<5, using: &random) {
            case 0 where !bytes.isEmpty: bytes[position] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &random)
            case 1 where !bytes.isEmpty: bytes[position] = UInt8.random(in: 0...255, using: &random)
            case 2: bytes.insert(contentsOf: (0..<Int.random(in: 1...8, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) },
                                 at: position)
            case 3 where !bytes.isEmpty: bytes.removeSubrange(position..<min(bytes.count, position + Int.random(in: 1...8, using: &random)))
            default: bytes = Array(bytes.prefix(position))
            }
        }
        return ("mutated", bytes)
    }

    func testSeededFuzzOfEveryMethodLeavesTheServerServing() async throws {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["FUZZ_SEED"].flatMap(UInt64.init) ?? 1
        let calls = environment["FUZZ_CALLS"].flatMap(Int.init) ?? 400
        let replay = "FUZZ_SEED=\(seed) swift test --filter ServerTests.MalformedInputTests/testSeededFuzzOfEveryMethodLeavesTheServerServing"
        print("gRPC fuzz: seed \(seed), \(calls) calls (replay: \(replay))")
        let methods = try Self.fuzzMethods()
        var random = SeededRandom(seed: seed)
        var outcomes: [String: Int] = [:]
        var perMethod: [String: Int] = [:]
        let port = self.port
        let started = ContinuousClock.now
        for index in 0..<calls {
            // Every method at least once, then at random.
            let method = index < methods.count ? methods[index] : methods.randomElement(using: &random)!
            let (kind, payload) = Self.fuzzPayload(method, using: &random)
            let abandonAfter: Duration? = method.shape == .bidiStream && Bool.random(using: &random)
                ? .milliseconds(Int.random(in: 0...50, using: &random)) : nil
            let name = "\(method.descriptor.service.fullyQualifiedService)/\(method.descriptor.method)"
            let what = "call \(index): \(name) with \(kind) bytes (\(payload.count))\(abandonAfter == nil ? "" : ", abandoned")"
                + " [\(replay)]"
            let outcome = try await bounded(seconds: 10, what) {
                try await withRawClient(port: port) { client in
                    let options: CallOptions = {
                        var options = CallOptions.defaults
                        options.timeout = .seconds(5)
                        return options
                    }()
                    switch method.shape {
                    case .unary:
                        return try await client.unary(request: ClientRequest(message: payload), descriptor: method.descriptor,
                                                      serializer: RawBytesCodec(), deserializer: RawBytesCodec(),
                                                      options: options) { _ = try $0.message; return 1 }
                    case .serverStream:
                        return try await client.serverStreaming(request: ClientRequest(message: payload),
                                                                descriptor: method.descriptor, serializer: RawBytesCodec(),
                                                                deserializer: RawBytesCodec(), options: options) { response in
                            var count = 0
                            for try await _ in response.messages { count += 1 }
                            return count
                        }
                    case .bidiStream:
                        let request = StreamingClientRequest(of: [UInt8].self) { writer in
                            try await writer.write(payload)
                            try await writer.write(payload)
                            try? await Task.sleep(for: .milliseconds(100))
                        }
                        return try await withThrowingTaskGroup(of: Int.self) { group in
                            group.addTask {
                                try await client.bidirectionalStreaming(request: request, descriptor: method.descriptor,
                                                                        serializer: RawBytesCodec(), deserializer: RawBytesCodec(),
                                                                        options: options) { response in
                                    var count = 0
                                    // A watch stays open: two answers are enough.
                                    for try await _ in response.messages { count += 1; if count >= 2 { break } }
                                    return count
                                }
                            }
                            if let abandonAfter {
                                // Cancelling resets the stream mid-way (RST_STREAM), as a client that vanished.
                                try? await Task.sleep(for: abandonAfter)
                                group.cancelAll()
                            }
                            defer { group.cancelAll() }
                            return try await group.next() ?? 0
                        }
                    }
                }
            }
            let label: String
            switch outcome {
            case .success: label = "ok"
            case .failure(let error as RPCError):
                // Which payloads make the server drop the connection rather than answer.
                label = "\(error.code)" + (error.code == .unavailable ? " (\(kind))" : "")
                    + (error.code == .unknown ? " (\(name): \(error.message.prefix(80)))" : "")
                XCTAssertNotEqual(error.code, RPCError.Code.deadlineExceeded, "\(what): no answer within 5 s")
            case .failure(let error as CancellationError) where abandonAfter != nil:
                _ = error
                label = "abandoned"
            case .failure(let error):
                label = "other error"
                XCTFail("\(what): not a gRPC error: \(error)")
            }
            outcomes[label, default: 0] += 1
            perMethod[name, default: 0] += 1
            if index % 50 == 49 { try assertServerAlive() }
        }
        print("gRPC fuzz: \(calls) calls to \(perMethod.count) methods in \(started.duration(to: .now)): "
            + outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        XCTAssertEqual(perMethod.count, methods.count, "every method was called")
        try assertServerAlive()
        try await assertServesPutAndRange(key: "/after/fuzz")
        XCTAssertTrue(cluster.members[0].process?.isRunning == true, "kvserver is not running after the fuzz; \(replay)")
    }
}
