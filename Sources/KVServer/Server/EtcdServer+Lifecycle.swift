import Foundation
import RaftKV

extension EtcdServer {
    /// etcd's publish: records this member's name and client URLs through Raft once a leader exists, retrying
    /// until it is done (or the task is cancelled). Skipped when the record already says the same.
    func publishUntilDone(name: String, clientURLs: [String]) async {
        while !Task.isCancelled {
            if let record = try? store.memberRecords().first(where: { $0.id == memberID }),
               record.name == name, record.clientURLs == clientURLs {
                return
            }
            do {
                if raftStatus.leader != 0 {
                    try await servedByLeaderPublish(name: name, clientURLs: clientURLs)
                    logger.info("published member attributes", metadata: ["name": "\(name)"])
                    return
                }
            } catch {
                logger.debug("publishing member attributes failed, retrying: \(error)")
            }
            do { try await Task.sleep(for: .milliseconds(500)) } catch { return }
        }
    }

    /// Publishing goes through the leader's log: a follower has the leader propose it.
    private func servedByLeaderPublish(name: String, clientURLs: [String]) async throws {
        let attributes = PublishedAttributes(id: memberID, name: name, clientURLs: clientURLs)
        do {
            try await store.publishMember(id: memberID, name: name, clientURLs: clientURLs)
        } catch KVError.notLeader(let leader) where leader != 0 {
            _ = try await forward(to: leader, ForwardedRequest.encode(.publish, identity: nil, Array(try JSONEncoder().encode(attributes))))
        }
    }

    /// Whether a peer may send Raft messages here: current members, members being added (a record exists), the
    /// initial cluster, and anyone while this member does not know the membership yet (it is joining).
    func isPeerAccepted(_ id: NodeID) -> Bool {
        let membership = raftStatus.membership
        if membership.members.isEmpty || membership.contains(id) { return true }
        if initialMembers[id] != nil && membership.members.isEmpty { return true }
        return (try? store.memberRecords().contains(where: { $0.id == id })) ?? false
    }

    /// The peer service's `ClusterInfo` answer.
    func clusterInfoJSON() throws -> [UInt8] {
        let info = ClusterInfo(clusterID: clusterID, members: try members().map {
            ClusterInfo.Member(id: $0.id, name: $0.name, peerURLs: $0.peerURLs, isLearner: $0.isLearner)
        })
        return Array(try JSONEncoder().encode(info))
    }

    /// etcd 3.5's `/health`: no leader, an alarm, or a failing read make the member unhealthy.
    func health(serializable: Bool, excludedAlarms: Set<String>) async -> (healthy: Bool, reason: String) {
        if raftStatus.leader == 0 && !serializable { return (false, HTTPEndpoints.HealthReason.noLeader) }
        if store.stateMachine.withStore({ $0.isNoSpaceAlarmArmed }) && !excludedAlarms.contains("NOSPACE") {
            return (false, HTTPEndpoints.HealthReason.alarmNoSpace)
        }
        do {
            _ = try await withTimeout(.seconds(1)) {
                try await self.store.range(RangeRequest(key: Array("health".utf8)),
                                           consistency: serializable ? .serializable : .linearizable)
            }
            return (true, "")
        } catch {
            return (false, HTTPEndpoints.HealthReason.rangeError("\(error)"))
        }
    }
}

/// A member's publish, carried to the leader.
struct PublishedAttributes: Codable {
    var id: UInt64
    var name: String
    var clientURLs: [String]
}

/// Runs `body`, failing with ``KVError/timeout`` after `limit`.
func withTimeout<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw KVError.timeout
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw KVError.timeout }
        return first
    }
}
