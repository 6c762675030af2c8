// Smoke tests for the generated etcd v3 API (Sources/EtcdAPI): the messages encode and decode in
// binary and JSON, and the generated KV client and server stubs talk to each other over real
// HTTP/2 on the loopback interface.

import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SwiftProtobuf
import Synchronization
import Testing

@Suite("EtcdAPI messages")
struct EtcdAPIMessageTests {
    private func makeRangeRequest() -> Etcdserverpb_RangeRequest {
        var request = Etcdserverpb_RangeRequest()
        request.key = Data("/registry/pods/".utf8)
        request.rangeEnd = Data("/registry/pods0".utf8)
        request.limit = 500
        request.revision = 42
        request.sortOrder = .descend
        request.sortTarget = .mod
        request.serializable = true
        request.countOnly = false
        request.minModRevision = 7
        return request
    }

    private func makePutRequest() -> Etcdserverpb_PutRequest {
        var request = Etcdserverpb_PutRequest()
        request.key = Data("/registry/minions/node-1".utf8)
        request.value = Data([0x00, 0xFF, 0x10, 0x80])  // values are arbitrary bytes
        request.lease = 0x1234_5678_9ABC
        request.prevKv = true
        return request
    }

    @Test func rangeRequestBinaryRoundTrip() throws {
        let request = makeRangeRequest()
        let bytes: [UInt8] = try request.serializedBytes()
        let decoded = try Etcdserverpb_RangeRequest(serializedBytes: bytes)
        #expect(decoded == request)
        #expect(decoded.key == Data("/registry/pods/".utf8))
        #expect(decoded.rangeEnd == Data("/registry/pods0".utf8))
        #expect(decoded.limit == 500)
        #expect(decoded.revision == 42)
        #expect(decoded.sortOrder == .descend)
        #expect(decoded.sortTarget == .mod)
        #expect(decoded.serializable)
        #expect(decoded.minModRevision == 7)
    }

    @Test func putRequestBinaryRoundTrip() throws {
        let request = makePutRequest()
        let bytes: [UInt8] = try request.serializedBytes()
        let decoded = try Etcdserverpb_PutRequest(serializedBytes: bytes)
        #expect(decoded == request)
        #expect(decoded.value == Data([0x00, 0xFF, 0x10, 0x80]))
        #expect(decoded.lease == 0x1234_5678_9ABC)
        #expect(decoded.prevKv)
        #expect(!decoded.ignoreValue)
    }

    @Test func rangeRequestJSONRoundTrip() throws {
        let request = makeRangeRequest()
        let json = try request.jsonString()
        // Protobuf JSON as `etcdctl -w json` and grpc-gateway use it: lowerCamelCase names, base64
        // bytes, int64 as strings, enums by name.
        #expect(json.contains(#""key":"L3JlZ2lzdHJ5L3BvZHMv""#))
        #expect(json.contains(#""rangeEnd":"L3JlZ2lzdHJ5L3BvZHMw""#))
        #expect(json.contains(#""limit":"500""#))
        #expect(json.contains(#""sortOrder":"DESCEND""#))
        #expect(json.contains(#""sortTarget":"MOD""#))
        let decoded = try Etcdserverpb_RangeRequest(jsonString: json)
        #expect(decoded == request)
        #expect(decoded.revision == 42)
    }

    @Test func putRequestJSONRoundTrip() throws {
        let request = makePutRequest()
        let json = try request.jsonString()
        #expect(json.contains(#""value":"AP8QgA==""#))
        #expect(json.contains(#""prevKv":true"#))
        let decoded = try Etcdserverpb_PutRequest(jsonString: json)
        #expect(decoded == request)
        #expect(decoded.key == Data("/registry/minions/node-1".utf8))
        #expect(decoded.lease == 0x1234_5678_9ABC)
    }

    @Test func etcd35FieldsArePresent() throws {
        // Fields that exist only in etcd 3.5's API (the protos are from v3.5.x).
        var members = Etcdserverpb_MemberListRequest()
        members.linearizable = true
        let decoded = try Etcdserverpb_MemberListRequest(serializedBytes: members.serializedBytes() as [UInt8])
        #expect(decoded.linearizable)
        #expect(Etcdserverpb_Maintenance.Method.Downgrade.descriptor.fullyQualifiedMethod == "etcdserverpb.Maintenance/Downgrade")
        #expect(Etcdserverpb_Auth.Method.AuthStatus.descriptor.fullyQualifiedMethod == "etcdserverpb.Auth/AuthStatus")
    }

    @Test func serviceAndMethodNamesMatchEtcd() {
        // etcd clients call e.g. "/etcdserverpb.KV/Range"; the generated descriptors must agree.
        #expect(Etcdserverpb_KV.descriptor.fullyQualifiedService == "etcdserverpb.KV")
        #expect(Etcdserverpb_KV.Method.Range.descriptor.fullyQualifiedMethod == "etcdserverpb.KV/Range")
        #expect(Etcdserverpb_Watch.Method.Watch.descriptor.fullyQualifiedMethod == "etcdserverpb.Watch/Watch")
        #expect(Etcdserverpb_Lease.Method.LeaseKeepAlive.descriptor.fullyQualifiedMethod == "etcdserverpb.Lease/LeaseKeepAlive")
        #expect(Etcdserverpb_Cluster.Method.MemberList.descriptor.fullyQualifiedMethod == "etcdserverpb.Cluster/MemberList")
        #expect(Etcdserverpb_Maintenance.Method.Status.descriptor.fullyQualifiedMethod == "etcdserverpb.Maintenance/Status")
        #expect(Etcdserverpb_Auth.Method.Authenticate.descriptor.fullyQualifiedMethod == "etcdserverpb.Auth/Authenticate")
    }
}

/// A toy KV service: Put stores into a dictionary, Range returns a single key. Just enough to
/// exercise the generated server stubs.
private final class DictionaryKVService: Etcdserverpb_KV.SimpleServiceProtocol {
    private struct State {
        var revision: Int64 = 1
        var items: [Data: Mvccpb_KeyValue] = [:]
    }

    private let state = Mutex(State())

    private func header(_ revision: Int64) -> Etcdserverpb_ResponseHeader {
        var header = Etcdserverpb_ResponseHeader()
        header.clusterID = 1
        header.memberID = 1
        header.revision = revision
        header.raftTerm = 1
        return header
    }

    func range(
        request: Etcdserverpb_RangeRequest,
        context: ServerContext
    ) async throws -> Etcdserverpb_RangeResponse {
        guard request.rangeEnd.isEmpty else {
            throw RPCError(code: .unimplemented, message: "only single-key ranges")
        }
        let (revision, item) = state.withLock { ($0.revision, $0.items[request.key]) }
        var response = Etcdserverpb_RangeResponse()
        response.header = header(revision)
        if let item {
            response.kvs = [item]
            response.count = 1
        }
        return response
    }

    func put(
        request: Etcdserverpb_PutRequest,
        context: ServerContext
    ) async throws -> Etcdserverpb_PutResponse {
        guard !request.key.isEmpty else {
            throw RPCError(code: .invalidArgument, message: "etcdserver: key is not provided")
        }
        return state.withLock { state in
            state.revision += 1
            let previous = state.items[request.key]
            var kv = Mvccpb_KeyValue()
            kv.key = request.key
            kv.value = request.value
            kv.lease = request.lease
            kv.createRevision = previous?.createRevision ?? state.revision
            kv.modRevision = state.revision
            kv.version = (previous?.version ?? 0) + 1
            state.items[request.key] = kv
            var response = Etcdserverpb_PutResponse()
            response.header = header(state.revision)
            if request.prevKv, let previous {
                response.prevKv = previous
            }
            return response
        }
    }

    func deleteRange(
        request: Etcdserverpb_DeleteRangeRequest,
        context: ServerContext
    ) async throws -> Etcdserverpb_DeleteRangeResponse {
        throw RPCError(code: .unimplemented, message: "DeleteRange")
    }

    func txn(
        request: Etcdserverpb_TxnRequest,
        context: ServerContext
    ) async throws -> Etcdserverpb_TxnResponse {
        throw RPCError(code: .unimplemented, message: "Txn")
    }

    func compact(
        request: Etcdserverpb_CompactionRequest,
        context: ServerContext
    ) async throws -> Etcdserverpb_CompactionResponse {
        throw RPCError(code: .unimplemented, message: "Compact")
    }
}

@Suite("EtcdAPI gRPC")
struct EtcdAPIGRPCTests {
    @Test func putThenRangeOverHTTP2() async throws {
        let serverTransport = HTTP2ServerTransport.Posix(
            address: .ipv4(host: "127.0.0.1", port: 0),
            transportSecurity: .plaintext
        )
        let server = GRPCServer(transport: serverTransport, services: [DictionaryKVService()])

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.serve() }

            // Ends the server however the test body exits.
            defer { server.beginGracefulShutdown() }

            let address = try await serverTransport.listeningAddress
            let port = try #require(address.ipv4?.port)
            #expect(port > 0)

            let clientTransport = try HTTP2ClientTransport.Posix(
                target: .ipv4(address: "127.0.0.1", port: port),
                transportSecurity: .plaintext
            )
            // withGRPCClient runs the client's connections and shuts it down gracefully when the
            // closure returns.
            try await withGRPCClient(transport: clientTransport) { client in
                let kv = Etcdserverpb_KV.Client(wrapping: client)

                var put = Etcdserverpb_PutRequest()
                put.key = Data("/registry/pods/default/web-0".utf8)
                put.value = Data("{\"kind\":\"Pod\"}".utf8)
                let putResponse = try await kv.put(put)
                #expect(putResponse.header.revision == 2)
                #expect(!putResponse.hasPrevKv)

                var range = Etcdserverpb_RangeRequest()
                range.key = put.key
                let rangeResponse = try await kv.range(range)
                #expect(rangeResponse.header.revision == 2)
                #expect(rangeResponse.count == 1)
                let kvs = rangeResponse.kvs
                try #require(kvs.count == 1)
                #expect(kvs[0].key == put.key)
                #expect(kvs[0].value == Data("{\"kind\":\"Pod\"}".utf8))
                #expect(kvs[0].modRevision == 2)
                #expect(kvs[0].version == 1)

                // A missing key: no kvs, count 0.
                range.key = Data("/registry/pods/default/missing".utf8)
                let missing = try await kv.range(range)
                #expect(missing.kvs.isEmpty)
                #expect(missing.count == 0)

                // Errors thrown by the service arrive as RPCError with code and message intact.
                let error = await #expect(throws: RPCError.self) {
                    try await kv.put(Etcdserverpb_PutRequest())
                }
                #expect(error?.code == .invalidArgument)
                #expect(error?.message == "etcdserver: key is not provided")
            }

            server.beginGracefulShutdown()
            try await group.waitForAll()  // serve() has returned: the server is down.
        }
    }
}
