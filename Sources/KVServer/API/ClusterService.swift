import EtcdAPI
import Foundation
import GRPCCore
import RaftKV

/// etcd's `Cluster` service over Raft membership changes and the replicated member records.
struct ClusterService: Etcdserverpb_Cluster.SimpleServiceProtocol {
    let server: EtcdServer
    let clusterToken: String

    func memberAdd(request: Etcdserverpb_MemberAddRequest,
                   context: ServerContext) async throws -> Etcdserverpb_MemberAddResponse {
        try await answering { try await memberAdd(request) }
    }

    func memberAdd(_ request: Etcdserverpb_MemberAddRequest) async throws -> Etcdserverpb_MemberAddResponse {
        let urls = try validatedPeerURLs(request.peerUrls)
        return try await server.servedByLeader(.memberAdd, request, waitForRevision: false) {
            try requireLeader()
            let existing = try server.members()
            let taken = Set(existing.flatMap(\.peerURLs))
            if urls.contains(where: taken.contains) { throw APIError.peerURLExists }
            // As etcd: a member added at runtime gets an ID from its URLs, the token and the time.
            let id = MemberIdentity.memberID(peerURLs: urls, clusterToken: clusterToken,
                                             unixTime: Int64(Date().timeIntervalSince1970))
            if existing.contains(where: { $0.id == id }) { throw APIError.memberExists }
            try await server.store.setMemberPeerURLs(id: id, peerURLs: urls)
            try await server.store.changeMembership(request.isLearner ? .addLearner(id) : .addVoter(id))
            var message = Etcdserverpb_MemberAddResponse()
            message.member = Etcdserverpb_Member(ClusterMember(id: id, name: "", peerURLs: urls, clientURLs: [],
                                                               isLearner: request.isLearner))
            message.members = try await currentMembers()
            message.header = server.clusterHeader()
            return message
        }
    }

    func memberRemove(request: Etcdserverpb_MemberRemoveRequest,
                      context: ServerContext) async throws -> Etcdserverpb_MemberRemoveResponse {
        try await answering { try await memberRemove(request) }
    }

    func memberRemove(_ request: Etcdserverpb_MemberRemoveRequest) async throws -> Etcdserverpb_MemberRemoveResponse {
        try await server.servedByLeader(.memberRemove, request, waitForRevision: false) {
            try requireLeader()
            guard try server.members().contains(where: { $0.id == request.id }) else { throw APIError.memberNotFound }
            try await server.store.changeMembership(.removeMember(request.id))
            var message = Etcdserverpb_MemberRemoveResponse()
            message.members = try await currentMembers()
            message.header = server.clusterHeader()
            return message
        }
    }

    func memberUpdate(request: Etcdserverpb_MemberUpdateRequest,
                      context: ServerContext) async throws -> Etcdserverpb_MemberUpdateResponse {
        try await answering { try await memberUpdate(request) }
    }

    func memberUpdate(_ request: Etcdserverpb_MemberUpdateRequest) async throws -> Etcdserverpb_MemberUpdateResponse {
        let urls = try validatedPeerURLs(request.peerUrls)
        return try await server.servedByLeader(.memberUpdate, request, waitForRevision: false) {
            try requireLeader()
            let existing = try server.members()
            guard existing.contains(where: { $0.id == request.id }) else { throw APIError.memberNotFound }
            let taken = Set(existing.filter { $0.id != request.id }.flatMap(\.peerURLs))
            if urls.contains(where: taken.contains) { throw APIError.peerURLExists }
            try await server.store.setMemberPeerURLs(id: request.id, peerURLs: urls)
            var message = Etcdserverpb_MemberUpdateResponse()
            message.members = try await currentMembers()
            message.header = server.clusterHeader()
            return message
        }
    }

    func memberList(request: Etcdserverpb_MemberListRequest,
                    context: ServerContext) async throws -> Etcdserverpb_MemberListResponse {
        try await answering {
            if request.linearizable { try await server.store.linearizableBarrier() }
            // Raft's membership as applied now, not as last cached for headers.
            await server.refreshRaftStatus()
            var message = Etcdserverpb_MemberListResponse()
            message.members = try server.members().map(Etcdserverpb_Member.init)
            message.header = server.clusterHeader()
            return message
        }
    }

    func memberPromote(request: Etcdserverpb_MemberPromoteRequest,
                      context: ServerContext) async throws -> Etcdserverpb_MemberPromoteResponse {
        try await answering { try await memberPromote(request) }
    }

    func memberPromote(_ request: Etcdserverpb_MemberPromoteRequest) async throws -> Etcdserverpb_MemberPromoteResponse {
        try await server.servedByLeader(.memberPromote, request, waitForRevision: false) {
            try requireLeader()
            guard let member = try server.members().first(where: { $0.id == request.id }) else {
                throw APIError.memberNotFound
            }
            guard member.isLearner else { throw APIError.memberNotLearner }
            try await server.store.changeMembership(.promoteLearner(request.id))
            var message = Etcdserverpb_MemberPromoteResponse()
            message.members = try await currentMembers()
            message.header = server.clusterHeader()
            return message
        }
    }

    // MARK: Helpers

    /// Membership changes are decided by the leader; elsewhere they go there (``EtcdServer/servedByLeader``). They
    /// need root once auth is on (etcd's `checkMembershipOperationPermission`), checked here on the leader with the
    /// identity the request was forwarded with.
    private func requireLeader() throws {
        try server.store.checkAdmin()
        let status = server.raftStatus
        guard status.role == .leader else {
            if status.leader == 0 { throw KVError.noLeader }
            throw KVError.notLeader(leader: status.leader)
        }
    }

    /// The members after a change this member applied (the view refreshes on the next tick; read Raft now).
    private func currentMembers() async throws -> [Etcdserverpb_Member] {
        await server.refreshRaftStatus()
        return try server.members().map(Etcdserverpb_Member.init)
    }

    private func validatedPeerURLs(_ urls: [String]) throws -> [String] {
        guard !urls.isEmpty else { throw APIError.invalidArgument("etcdserver: given member URLs are invalid") }
        do {
            return try urls.map { try EndpointURL(parsing: $0).description }
        } catch {
            throw APIError.invalidArgument("etcdserver: given member URLs are invalid")
        }
    }
}
