import Foundation

/// Membership as a server needs it: Raft decides who is a member; the replicated member records say how to reach
/// them and what they are called.
extension KVStore {
    /// The replicated member records (possibly including an ID whose addition has not committed yet).
    public func memberRecords() throws -> [MemberRecord] {
        try stateMachine.withStore { try $0.members() }
    }

    /// Whether member `id` was removed from the cluster.
    public func isRemovedMember(_ id: NodeID) throws -> Bool {
        try stateMachine.withStore { try $0.isRemovedMember(id) }
    }

    /// Records a member's name and client URLs in the replicated state (etcd's publish; a follower's publish is
    /// carried out by the leader on its behalf).
    public func publishMember(id: NodeID, name: String, clientURLs: [String]) async throws {
        _ = try await propose(.publishMember(id: id, name: name, clientURLs: clientURLs))
    }

    /// Records a member's peer URLs in the replicated state (before it is added, or when they change).
    public func setMemberPeerURLs(id: NodeID, peerURLs: [String]) async throws {
        _ = try await propose(.setMemberPeerURLs(id: id, peerURLs: peerURLs))
    }

    /// Changes the Raft membership and returns once the change is applied here. Waits (up to the request timeout)
    /// while no leader is known or another change is still in flight; other refusals are thrown as the node's
    /// ``RaftNodeError`` so that the caller can say what was wrong with the change.
    public func changeMembership(_ change: ConfigChange) async throws {
        var waits = 0
        while true {
            do {
                return try await node.proposeConfigChange(change)
            } catch let error as RaftNodeError {
                switch error {
                case .rejected(.noLeader), .rejected(.configChangePending), .rejected(.leadershipTransferInProgress):
                    guard waits < requestTimeoutTicks else { throw Self.kvError(error) }
                    waits += 1
                    try await Task.sleep(for: configuration.tickInterval)
                case .rejected(.notLeader(let leader)):
                    throw KVError.notLeader(leader: leader ?? 0)
                case .rejected:
                    throw error
                default:
                    throw Self.kvError(error)
                }
            }
        }
    }

    /// Waits until this member has applied `revision` (a write another member answered), so that a client that got
    /// a revision from this member then reads its own write here, even serializably.
    public func waitUntilApplied(revision: Revision) async throws {
        try await applyWaiters.wait(for: .revision(revision), timeout: configuration.requestTimeout, timeoutError: KVError.timeout)
    }

    /// Waits (up to the request timeout, then ``KVError/timeout``) until this member has applied log entry `index`.
    public func waitUntilApplied(index: LogIndex) async throws {
        try await applyWaiters.wait(for: .index(index), timeout: configuration.requestTimeout, timeoutError: KVError.timeout)
    }

    /// Asks this member, which must lead, to hand leadership to `target` and waits (up to the request timeout)
    /// until `target` leads.
    public func moveLeader(to target: NodeID) async throws {
        do {
            try await node.transferLeadership(to: target)
        } catch let error as RaftNodeError {
            if case .rejected(.notLeader(let leader)) = error { throw KVError.notLeader(leader: leader ?? 0) }
            throw error
        }
        var waits = 0
        while await node.status.leader != target {
            guard waits < requestTimeoutTicks else { throw KVError.timeout }
            waits += 1
            try await Task.sleep(for: configuration.tickInterval)
        }
    }
}
