import Foundation
import Logging
import RaftKV

/// Who this member is in which cluster, kept in the data directory once decided (etcd's member directory plays the
/// same role): a restart reuses it and ignores the `--initial-cluster*` flags, as etcd does.
struct MemberIdentityRecord: Codable, Equatable {
    var clusterID: UInt64
    var memberID: UInt64
    var name: String

    static func file(in dataDirectory: URL) -> URL {
        dataDirectory.appendingPathComponent("member").appendingPathComponent("identity.json")
    }

    static func load(from dataDirectory: URL) throws -> MemberIdentityRecord? {
        let file = file(in: dataDirectory)
        guard FileManager.default.fileExists(atPath: file.path) else { return nil }
        do {
            return try JSONDecoder().decode(MemberIdentityRecord.self, from: Data(contentsOf: file))
        } catch {
            throw ConfigurationError("cannot read \(file.path): \(error)")
        }
    }

    /// Written atomically, so a crash leaves either no identity or a whole one.
    func save(in dataDirectory: URL) throws {
        let file = Self.file(in: dataDirectory)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try JSONEncoder().encode(self).write(to: file, options: .atomic)
    }
}

/// What an existing member tells a joining one (the peer service's `ClusterInfo`).
struct ClusterInfo: Codable, Equatable {
    struct Member: Codable, Equatable {
        var id: UInt64
        var name: String
        var peerURLs: [String]
        var isLearner: Bool
    }

    var clusterID: UInt64
    var members: [Member]
}

/// How this process starts: which member, which cluster, and — for a new cluster — which initial membership.
struct ClusterBootstrap {
    var identity: MemberIdentityRecord
    /// The voters of a new cluster; nil when the data directory already holds a log or the member joins.
    var initialMembership: Membership?
    var initialMembers: [ClusterMember]

    /// The initial cluster from the flags, with etcd's member IDs.
    static func initialMembers(_ configuration: ServerConfiguration) -> [ClusterMember] {
        configuration.initialCluster.map { entry in
            ClusterMember(id: MemberIdentity.memberID(peerURLs: entry.peerURLs, clusterToken: configuration.clusterToken),
                          name: entry.name, peerURLs: entry.peerURLs, clientURLs: [], isLearner: false)
        }
    }

    static func resolve(_ configuration: ServerConfiguration, logger: Logger,
                        clusterInfo: (EndpointURL) async throws -> ClusterInfo) async throws -> ClusterBootstrap {
        let members = initialMembers(configuration)
        if let identity = try MemberIdentityRecord.load(from: configuration.dataDirectory) {
            guard identity.name == configuration.name else {
                throw ConfigurationError("data directory \(configuration.dataDirectory.path) belongs to member \"\(identity.name)\", not \"\(configuration.name)\"")
            }
            logger.info("restarting member", metadata: ["member-id": "\(hex(identity.memberID))",
                                                        "cluster-id": "\(hex(identity.clusterID))"])
            return ClusterBootstrap(identity: identity, initialMembership: nil, initialMembers: members)
        }
        switch configuration.clusterState {
        case .new:
            guard let own = members.first(where: { $0.name == configuration.name }) else {
                throw ConfigurationError("couldn't find local name \"\(configuration.name)\" in the initial cluster configuration")
            }
            let ids = members.map(\.id)
            guard Set(ids).count == ids.count else { throw ConfigurationError("--initial-cluster has duplicate members") }
            let identity = MemberIdentityRecord(clusterID: MemberIdentity.clusterID(memberIDs: ids), memberID: own.id,
                                                name: configuration.name)
            logger.info("starting a new cluster", metadata: ["member-id": "\(hex(identity.memberID))",
                                                             "cluster-id": "\(hex(identity.clusterID))"])
            return ClusterBootstrap(identity: identity, initialMembership: Membership(voters: Set(ids)),
                                    initialMembers: members)
        case .existing:
            let ownURLs = Set(configuration.advertisePeerURLs)
            var lastError: (any Error)?
            for member in members where Set(member.peerURLs) != ownURLs {
                for text in member.peerURLs {
                    do {
                        let info = try await clusterInfo(try EndpointURL(parsing: text))
                        guard let own = info.members.first(where: { Set($0.peerURLs) == ownURLs }) else {
                            throw ConfigurationError("member with peer URLs \(ownURLs.sorted().joined(separator: ",")) is not in cluster \(hex(info.clusterID)): add it first with 'etcdctl member add'")
                        }
                        let identity = MemberIdentityRecord(clusterID: info.clusterID, memberID: own.id,
                                                            name: configuration.name)
                        logger.info("joining an existing cluster", metadata: ["member-id": "\(hex(own.id))",
                                                                             "cluster-id": "\(hex(info.clusterID))"])
                        let known = info.members.map {
                            ClusterMember(id: $0.id, name: $0.name, peerURLs: $0.peerURLs, clientURLs: [],
                                          isLearner: $0.isLearner)
                        }
                        return ClusterBootstrap(identity: identity, initialMembership: nil, initialMembers: known)
                    } catch let error as ConfigurationError {
                        throw error
                    } catch {
                        lastError = error
                    }
                }
            }
            throw ConfigurationError("cannot fetch cluster info from peer URLs: \(lastError.map { "\($0)" } ?? "no other member in --initial-cluster")")
        }
    }
}

/// Member and cluster IDs are shown in hexadecimal, as etcd shows them.
func hex(_ id: UInt64) -> String { String(id, radix: 16) }
