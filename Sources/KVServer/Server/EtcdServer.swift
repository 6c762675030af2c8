import EtcdAPI
import Foundation
import GRPCCore
import Logging
import RaftKV
import SwiftProtobuf
import Synchronization

/// How a member reaches the leader with a request it cannot serve itself (the peer transport's `Forward`).
protocol LeaderForwarding: Sendable {
    func forward(to leader: NodeID, _ request: [UInt8]) async throws -> [UInt8]
}

/// A member of the cluster as the Cluster API shows it.
struct ClusterMember: Sendable, Hashable {
    var id: NodeID
    var name: String
    var peerURLs: [String]
    var clientURLs: [String]
    var isLearner: Bool
}

/// What every API handler shares: the store, this member's identity, a cached view of Raft's state for headers,
/// and forwarding to the leader.
final class EtcdServer: Sendable {
    let store: KVStore
    let clusterID: UInt64
    var memberID: NodeID { store.memberID }
    let name: String
    /// Members of the initial cluster by ID, as the flags gave them: used until members have published themselves.
    let initialMembers: [NodeID: ClusterMember]
    /// How passwords received by this member are hashed (`--bcrypt-cost`).
    let passwordHashing: PasswordHashing
    let logger: Logger
    fileprivate let forwarder: Mutex<(any LeaderForwarding)?> = Mutex(nil)
    private let raft: Mutex<RaftNode.Status>
    private let recordedPeerURLs = Mutex<[NodeID: [String]]>([:])

    /// The version this server reports (Kubernetes needs at least 3.5.13 to use watch progress requests).
    static let serverVersion = "3.5.13"
    static let clusterVersion = "3.5.0"

    init(store: KVStore, clusterID: UInt64, name: String, initialMembers: [ClusterMember],
         passwordHashing: PasswordHashing = PasswordHashing(bcryptCost: 10), logger: Logger) {
        self.store = store
        self.passwordHashing = passwordHashing
        self.clusterID = clusterID
        self.name = name
        self.initialMembers = Dictionary(initialMembers.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        self.logger = logger
        raft = Mutex(RaftNode.Status(id: store.memberID, leader: 0, term: 0, role: .follower, commitIndex: 0,
                                     appliedIndex: 0, membership: Membership()))
        refreshRecordedPeerURLs()
    }

    func setForwarder(_ forwarder: any LeaderForwarding) {
        self.forwarder.withLock { $0 = forwarder }
    }

    // MARK: Raft state

    /// Raft's state as last observed (refreshed every tick by ``observeRaft()``): headers and health read it
    /// without waiting on the node.
    var raftStatus: RaftNode.Status { raft.withLock { $0 } }

    /// Refreshes ``raftStatus`` until cancelled; calls `onChange` with the previous and new status when they differ.
    func observeRaft(every interval: Duration, onChange: @Sendable (RaftNode.Status, RaftNode.Status) -> Void) async {
        while !Task.isCancelled {
            let status = await store.node.status
            let previous = raft.withLock { current in
                defer { current = status }
                return current
            }
            if previous != status { onChange(previous, status) }
            refreshRecordedPeerURLs()
            do { try await Task.sleep(for: interval) } catch { return }
        }
    }

    /// Reads Raft's state now (after a change this member just applied).
    func refreshRaftStatus() async {
        let status = await store.node.status
        raft.withLock { $0 = status }
    }

    var currentRevision: Revision { store.stateMachine.withStore { $0.currentRevision } }

    /// etcd's response header. `revision` nil = the store's current revision.
    func header(revision: Revision? = nil) -> Etcdserverpb_ResponseHeader {
        var header = Etcdserverpb_ResponseHeader()
        header.clusterID = clusterID
        header.memberID = memberID
        header.revision = revision ?? currentRevision
        header.raftTerm = raftStatus.term
        return header
    }

    /// The header of Cluster responses: etcd's cluster server leaves the revision out.
    func clusterHeader() -> Etcdserverpb_ResponseHeader {
        var header = header()
        header.revision = 0
        return header
    }

    // MARK: Members

    /// The members Raft knows, with what the replicated records (or, before a member published itself, the
    /// initial cluster flags) say about them. Sorted by ID.
    func members() throws -> [ClusterMember] {
        let membership = raftStatus.membership
        let records = Dictionary(try store.memberRecords().map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        return membership.members.sorted().map { id in
            let record = records[id]
            let initial = initialMembers[id]
            let name = record.map(\.name).flatMap { $0.isEmpty ? nil : $0 } ?? initial?.name ?? ""
            let peerURLs = record.map(\.peerURLs).flatMap { $0.isEmpty ? nil : $0 } ?? initial?.peerURLs ?? []
            return ClusterMember(id: id, name: name, peerURLs: peerURLs, clientURLs: record?.clientURLs ?? [],
                                 isLearner: membership.learners.contains(id))
        }
    }

    /// Where to reach member `id`'s peer endpoint: its replicated record, else the initial cluster flags. Read from
    /// a copy refreshed every tick: the transport asks for every batch it sends, and the records live in the state
    /// database behind the lock that applies take.
    func peerURLs(of id: NodeID) -> [String] {
        if let urls = recordedPeerURLs.withLock({ $0[id] }), !urls.isEmpty { return urls }
        return initialMembers[id]?.peerURLs ?? []
    }

    /// Re-reads the replicated member records' peer URLs into the copy ``peerURLs(of:)`` reads.
    func refreshRecordedPeerURLs() {
        guard let records = try? store.memberRecords() else { return }
        let urls = Dictionary(records.map { ($0.id, $0.peerURLs) }, uniquingKeysWith: { first, _ in first })
        recordedPeerURLs.withLock { $0 = urls }
    }

    // MARK: Forwarding

    /// Runs `local`; when this member is not the leader, sends the request to the leader instead and answers with
    /// the leader's response, re-headed by this member. With `waitForRevision`, first waits until this member has
    /// applied the leader's answer, so that the client then reads its own write here.
    func servedByLeader<Response: ResponseWithHeader>(
        _ kind: ForwardedRequest.Kind, _ request: some SwiftProtobuf.Message, waitForRevision: Bool,
        local: () async throws -> Response
    ) async throws -> Response {
        do {
            return try await local()
        } catch KVError.notLeader(let leader) where leader != 0 {
            let answer = try await forward(to: leader, ForwardedRequest.encode(kind, identity: AuthIdentity.current, try request.serializedBytes()))
            var response = try Response(serializedBytes: answer)
            if waitForRevision { try await store.waitUntilApplied(revision: response.header.revision) }
            response.header.memberID = memberID
            return response
        }
    }
}

extension EtcdServer {
    /// Sends a forwarded request to `leader` over the peer transport.
    func forward(to leader: NodeID, _ frame: [UInt8]) async throws -> [UInt8] {
        guard let forwarder = forwarder.withLock({ $0 }) else { throw KVError.notLeader(leader: leader) }
        return try await forwarder.forward(to: leader, frame)
    }
}

/// A response message with etcd's header, so forwarded answers can be re-headed.
protocol ResponseWithHeader: SwiftProtobuf.Message {
    var header: Etcdserverpb_ResponseHeader { get set }
}

extension Etcdserverpb_PutResponse: ResponseWithHeader {}
extension Etcdserverpb_DeleteRangeResponse: ResponseWithHeader {}
extension Etcdserverpb_TxnResponse: ResponseWithHeader {}
extension Etcdserverpb_CompactionResponse: ResponseWithHeader {}
extension Etcdserverpb_LeaseGrantResponse: ResponseWithHeader {}
extension Etcdserverpb_LeaseRevokeResponse: ResponseWithHeader {}
extension Etcdserverpb_LeaseKeepAliveResponse: ResponseWithHeader {}
extension Etcdserverpb_LeaseTimeToLiveResponse: ResponseWithHeader {}
extension Etcdserverpb_MemberAddResponse: ResponseWithHeader {}
extension Etcdserverpb_MemberRemoveResponse: ResponseWithHeader {}
extension Etcdserverpb_MemberUpdateResponse: ResponseWithHeader {}
extension Etcdserverpb_MemberPromoteResponse: ResponseWithHeader {}
extension Etcdserverpb_AlarmResponse: ResponseWithHeader {}
extension Etcdserverpb_MoveLeaderResponse: ResponseWithHeader {}

/// A client request carried to the leader: one kind byte, the identity the client was authenticated as (a flag
/// byte, then user and auth revision) so that the leader judges the request as this member would have, then the
/// request's protobuf encoding. Peers are trusted to have authenticated their clients.
enum ForwardedRequest {
    enum Kind: UInt8, Sendable {
        case put = 1, deleteRange, txn, compact, leaseGrant, leaseRevoke, leaseKeepAlive, leaseTimeToLive
        case memberAdd, memberRemove, memberUpdate, memberPromote, alarm, moveLeader, publish
        case authEnable, authDisable, authenticate, userAdd, userDelete, userChangePassword, userGrantRole
        case userRevokeRole, roleAdd, roleDelete, roleGrantPermission, roleRevokePermission
    }

    static func encode(_ kind: Kind, identity: AuthIdentity?, _ body: [UInt8]) -> [UInt8] {
        var writer = BinaryWriter()
        writer.bytes.reserveCapacity(body.count + 16)
        writer.byte(kind.rawValue)
        if let identity {
            writer.byte(1)
            writer.blob(Array(identity.user.utf8))
            writer.unsigned(identity.authRevision)
        } else {
            writer.byte(0)
        }
        writer.bytes.append(contentsOf: body)
        return writer.bytes
    }

    static func decode(_ frame: [UInt8]) throws -> (Kind, AuthIdentity?, ArraySlice<UInt8>) {
        var reader = BinaryReader(frame)
        do {
            guard let kind = Kind(rawValue: try reader.byte()) else { throw reader.failure("unknown kind") }
            var identity: AuthIdentity?
            if try reader.bool() {
                identity = AuthIdentity(user: String(decoding: try reader.blob(), as: UTF8.self),
                                        authRevision: try reader.unsigned())
            }
            return (kind, identity, frame[(frame.count - reader.remaining)...])
        } catch {
            throw RPCError(code: .invalidArgument, message: "malformed forwarded request")
        }
    }
}
