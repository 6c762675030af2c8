import Foundation
import EtcdAPI
import GRPCCore
import RaftKV

/// etcd's `Lease` service. Grants, keep-alives and time-to-live are the leader's (its lessor keeps the timers):
/// a follower forwards them, as etcd does.
struct LeaseService: Etcdserverpb_Lease.SimpleServiceProtocol {
    let server: EtcdServer

    func leaseGrant(request: Etcdserverpb_LeaseGrantRequest,
                    context: ServerContext) async throws -> Etcdserverpb_LeaseGrantResponse {
        try await answering { try await leaseGrant(request) }
    }

    func leaseGrant(_ request: Etcdserverpb_LeaseGrantRequest) async throws -> Etcdserverpb_LeaseGrantResponse {
        try await server.servedByLeader(.leaseGrant, request, waitForRevision: true) {
            let response = try await server.store.grant(ttlSeconds: request.ttl, id: request.id)
            var message = Etcdserverpb_LeaseGrantResponse()
            message.header = server.header(revision: response.revision)
            message.id = response.id
            message.ttl = response.ttlSeconds
            return message
        }
    }

    func leaseRevoke(request: Etcdserverpb_LeaseRevokeRequest,
                     context: ServerContext) async throws -> Etcdserverpb_LeaseRevokeResponse {
        try await answering { try await leaseRevoke(request) }
    }

    func leaseRevoke(_ request: Etcdserverpb_LeaseRevokeRequest) async throws -> Etcdserverpb_LeaseRevokeResponse {
        try await server.servedByLeader(.leaseRevoke, request, waitForRevision: true) {
            let response = try await server.store.revoke(request.id)
            var message = Etcdserverpb_LeaseRevokeResponse()
            message.header = server.header(revision: response.revision)
            return message
        }
    }

    func leaseKeepAlive(request: RPCAsyncSequence<Etcdserverpb_LeaseKeepAliveRequest, any Error>,
                        response: RPCWriter<Etcdserverpb_LeaseKeepAliveResponse>,
                        context: ServerContext) async throws {
        try await answering {
            for try await keepAlive in request {
                try await response.write(try await renew(keepAlive))
            }
        }
    }

    /// One keep-alive round. An unknown lease answers TTL 0 instead of failing the stream, as etcd does.
    func renew(_ request: Etcdserverpb_LeaseKeepAliveRequest) async throws -> Etcdserverpb_LeaseKeepAliveResponse {
        try await server.servedByLeader(.leaseKeepAlive, request, waitForRevision: false) {
            var message = Etcdserverpb_LeaseKeepAliveResponse()
            message.id = request.id
            do {
                message.ttl = try await server.store.keepAlive(request.id).ttlSeconds
            } catch KVError.leaseNotFound {
                message.ttl = 0
            }
            message.header = server.header()
            return message
        }
    }

    func leaseTimeToLive(request: Etcdserverpb_LeaseTimeToLiveRequest,
                         context: ServerContext) async throws -> Etcdserverpb_LeaseTimeToLiveResponse {
        try await answering { try await leaseTimeToLive(request) }
    }

    func leaseTimeToLive(_ request: Etcdserverpb_LeaseTimeToLiveRequest) async throws -> Etcdserverpb_LeaseTimeToLiveResponse {
        try await server.servedByLeader(.leaseTimeToLive, request, waitForRevision: false) {
            let response = try await server.store.timeToLive(request.id, keys: request.keys)
            var message = Etcdserverpb_LeaseTimeToLiveResponse()
            message.header = server.header()
            message.id = response.id
            message.ttl = response.ttlSeconds
            message.grantedTtl = response.grantedTTLSeconds
            message.keys = response.keys.map { Data($0) }
            return message
        }
    }

    func leaseLeases(request: Etcdserverpb_LeaseLeasesRequest,
                     context: ServerContext) async throws -> Etcdserverpb_LeaseLeasesResponse {
        try await answering {
            var message = Etcdserverpb_LeaseLeasesResponse()
            message.leases = try await server.store.leases().map { id in
                var status = Etcdserverpb_LeaseStatus()
                status.id = id
                return status
            }
            message.header = server.header()
            return message
        }
    }
}
