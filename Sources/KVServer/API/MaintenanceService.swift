import Crypto
import EtcdAPI
import Foundation
import GRPCCore
import RaftKV

/// etcd's `Maintenance` service.
struct MaintenanceService: Etcdserverpb_Maintenance.SimpleServiceProtocol {
    let server: EtcdServer
    /// Snapshot stream chunks, as etcd's `snapshotSendBufferSize`.
    static let snapshotChunkBytes = 32 * 1024

    func alarm(request: Etcdserverpb_AlarmRequest, context: ServerContext) async throws -> Etcdserverpb_AlarmResponse {
        try await answering { try await alarm(request) }
    }

    /// The store knows one alarm, NOSPACE, armed for the whole cluster; it is listed under this member's ID.
    func alarm(_ request: Etcdserverpb_AlarmRequest) async throws -> Etcdserverpb_AlarmResponse {
        var armed: Bool
        switch request.action {
        case .get:
            armed = server.store.stateMachine.withStore { $0.isNoSpaceAlarmArmed }
        case .activate, .deactivate:
            guard request.alarm == .nospace else {
                // Only NOSPACE exists here; other alarms are neither raised nor listed.
                var message = Etcdserverpb_AlarmResponse()
                message.header = server.header()
                return message
            }
            return try await server.servedByLeader(.alarm, request, waitForRevision: false) {
                let response = try await server.store.alarm(request.action == .activate ? .activate : .deactivate)
                var message = Etcdserverpb_AlarmResponse()
                message.header = server.header(revision: response.revision)
                // As etcd: activation lists the raised alarm, deactivation the one disarmed.
                message.alarms = [noSpaceAlarm]
                return message
            }
        case .UNRECOGNIZED(let raw):
            throw APIError.invalidArgument("unknown alarm action \(raw)")
        }
        var message = Etcdserverpb_AlarmResponse()
        message.header = server.header()
        if armed { message.alarms = [noSpaceAlarm] }
        return message
    }

    private var noSpaceAlarm: Etcdserverpb_AlarmMember {
        var alarm = Etcdserverpb_AlarmMember()
        alarm.memberID = server.memberID
        alarm.alarm = .nospace
        return alarm
    }

    func status(request: Etcdserverpb_StatusRequest, context: ServerContext) async throws -> Etcdserverpb_StatusResponse {
        try await answering {
            let status = try await server.store.status()
            var message = Etcdserverpb_StatusResponse()
            message.header = server.header(revision: status.revision)
            message.header.raftTerm = status.term
            message.version = EtcdServer.serverVersion
            message.dbSize = status.dbSizeBytes
            message.dbSizeInUse = status.dbSizeInUseBytes
            message.leader = status.leader
            message.raftIndex = status.commitIndex
            message.raftAppliedIndex = status.appliedIndex
            message.raftTerm = status.term
            message.isLearner = status.membership.learners.contains(server.memberID)
            if status.leader == 0 { message.errors.append(KVError.noLeader.description) }
            // The text form of etcd's AlarmMember, as its Status lists alarms.
            if status.noSpaceAlarm { message.errors.append("memberID:\(server.memberID) alarm:NOSPACE ") }
            return message
        }
    }

    func defragment(request: Etcdserverpb_DefragmentRequest,
                    context: ServerContext) async throws -> Etcdserverpb_DefragmentResponse {
        try await answering {
            try server.store.checkAdmin()
            try server.store.defragment()
            var message = Etcdserverpb_DefragmentResponse()
            message.header = server.header()
            return message
        }
    }

    /// etcd hashes its whole backend here; this is the hash of the key-value state (HashKV at the current revision).
    func hash(request: Etcdserverpb_HashRequest, context: ServerContext) async throws -> Etcdserverpb_HashResponse {
        try await answering {
            try server.store.checkAdmin()
            let hash = try server.store.hashKV()
            var message = Etcdserverpb_HashResponse()
            message.header = server.header(revision: hash.revision)
            message.hash = hash.hash
            return message
        }
    }

    func hashKV(request: Etcdserverpb_HashKVRequest, context: ServerContext) async throws -> Etcdserverpb_HashKVResponse {
        try await answering {
            try server.store.checkAdmin()
            let hash = try server.store.hashKV(revision: request.revision)
            var message = Etcdserverpb_HashKVResponse()
            message.header = server.header(revision: hash.revision)
            message.hash = hash.hash
            message.compactRevision = hash.compactRevision
            return message
        }
    }

    /// Streams a consistent copy of the state database, then its SHA-256 (as etcd, for restore's integrity check).
    func snapshot(request: Etcdserverpb_SnapshotRequest, response: RPCWriter<Etcdserverpb_SnapshotResponse>,
                  context: ServerContext) async throws {
        try await answering {
            try server.store.checkAdmin()
            let file = FileManager.default.temporaryDirectory
                .appendingPathComponent("kvserver-snapshot-\(UUID().uuidString).db")
            defer { try? FileManager.default.removeItem(at: file) }
            try server.store.stateMachine.writeSnapshot(to: file)
            let handle = try FileHandle(forReadingFrom: file)
            defer { try? handle.close() }
            let total = try handle.seekToEnd()
            try handle.seek(toOffset: 0)
            var sent: UInt64 = 0
            var digest = SHA256()
            let header = server.header()
            while sent < total {
                let chunk = try handle.read(upToCount: Self.snapshotChunkBytes) ?? Data()
                guard !chunk.isEmpty else { throw APIError.invalidArgument("snapshot file shrank while streaming") }
                sent += UInt64(chunk.count)
                digest.update(data: chunk)
                var message = Etcdserverpb_SnapshotResponse()
                message.header = header
                message.remainingBytes = total - sent
                message.blob = chunk
                try await response.write(message)
            }
            var last = Etcdserverpb_SnapshotResponse()
            last.header = header
            last.blob = Data(digest.finalize())
            try await response.write(last)
        }
    }

    func moveLeader(request: Etcdserverpb_MoveLeaderRequest,
                    context: ServerContext) async throws -> Etcdserverpb_MoveLeaderResponse {
        try await answering { try await moveLeader(request) }
    }

    func moveLeader(_ request: Etcdserverpb_MoveLeaderRequest) async throws -> Etcdserverpb_MoveLeaderResponse {
        try server.store.checkAdmin()
        return try await server.servedByLeader(.moveLeader, request, waitForRevision: false) {
            guard server.raftStatus.membership.voters.contains(request.targetID) else {
                throw APIError.badLeaderTransferee
            }
            try await server.store.moveLeader(to: request.targetID)
            var message = Etcdserverpb_MoveLeaderResponse()
            message.header = server.header()
            return message
        }
    }

    func downgrade(request: Etcdserverpb_DowngradeRequest,
                   context: ServerContext) async throws -> Etcdserverpb_DowngradeResponse {
        throw RPCError(mapping: APIError.unimplemented("Downgrade"))
    }
}
