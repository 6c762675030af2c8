import EtcdAPI
import Foundation
import GRPCCore
import RaftKV
import SwiftProtobuf

/// The leader's side of forwarding: runs a follower's client request through the same service code a client
/// reaches directly, and answers the protobuf response.
struct ForwardedRequestHandler: Sendable {
    let kv: KVService
    let lease: LeaseService
    let cluster: ClusterService
    let maintenance: MaintenanceService
    let auth: AuthService

    func handle(_ frame: [UInt8]) async throws -> [UInt8] {
        try await answering {
            let (kind, identity, body) = try ForwardedRequest.decode(frame)
            return try await AuthIdentity.$current.withValue(identity) { try await handle(kind, body) }
        }
    }

    private func handle(_ kind: ForwardedRequest.Kind, _ body: ArraySlice<UInt8>) async throws -> [UInt8] {
        switch kind {
        case .put: return try await kv.put(try decode(body)).serializedBytes()
        case .deleteRange: return try await kv.deleteRange(try decode(body)).serializedBytes()
        case .txn: return try await kv.txn(try decode(body) as Etcdserverpb_TxnRequest).serializedBytes()
        case .compact: return try await kv.compact(try decode(body)).serializedBytes()
        case .leaseGrant: return try await lease.leaseGrant(try decode(body)).serializedBytes()
        case .leaseRevoke: return try await lease.leaseRevoke(try decode(body)).serializedBytes()
        case .leaseKeepAlive: return try await lease.renew(try decode(body)).serializedBytes()
        case .leaseTimeToLive: return try await lease.leaseTimeToLive(try decode(body)).serializedBytes()
        case .memberAdd: return try await cluster.memberAdd(try decode(body)).serializedBytes()
        case .memberRemove: return try await cluster.memberRemove(try decode(body)).serializedBytes()
        case .memberUpdate: return try await cluster.memberUpdate(try decode(body)).serializedBytes()
        case .memberPromote: return try await cluster.memberPromote(try decode(body)).serializedBytes()
        case .alarm: return try await maintenance.alarm(try decode(body) as Etcdserverpb_AlarmRequest).serializedBytes()
        case .moveLeader: return try await maintenance.moveLeader(try decode(body)).serializedBytes()
        case .publish:
            let attributes = try JSONDecoder().decode(PublishedAttributes.self, from: Data(body))
            try await kv.server.store.publishMember(id: attributes.id, name: attributes.name,
                                                    clientURLs: attributes.clientURLs)
            return []
        case .authEnable: return try await auth.authEnable(try decode(body)).serializedBytes()
        case .authDisable: return try await auth.authDisable(try decode(body)).serializedBytes()
        case .authenticate: return try await auth.authenticate(try decode(body)).serializedBytes()
        case .userAdd: return try await auth.userAdd(try decode(body)).serializedBytes()
        case .userDelete: return try await auth.userDelete(try decode(body)).serializedBytes()
        case .userChangePassword: return try await auth.userChangePassword(try decode(body)).serializedBytes()
        case .userGrantRole: return try await auth.userGrantRole(try decode(body)).serializedBytes()
        case .userRevokeRole: return try await auth.userRevokeRole(try decode(body)).serializedBytes()
        case .roleAdd: return try await auth.roleAdd(try decode(body)).serializedBytes()
        case .roleDelete: return try await auth.roleDelete(try decode(body)).serializedBytes()
        case .roleGrantPermission: return try await auth.roleGrantPermission(try decode(body)).serializedBytes()
        case .roleRevokePermission: return try await auth.roleRevokePermission(try decode(body)).serializedBytes()
        }
    }

    private func decode<Request: SwiftProtobuf.Message>(_ body: ArraySlice<UInt8>) throws -> Request {
        do {
            return try Request(serializedBytes: Array(body))
        } catch {
            throw RPCError(code: .invalidArgument, message: "malformed forwarded request: \(error)")
        }
    }

}
