/// A request that travels through the Raft log and changes (or, for `range`, linearizably reads) the store.
///
/// Everything an apply needs is inside the command (IDs, TTLs): applying never reads a clock or a random source.
public indirect enum KVCommand: Sendable, Hashable {
    case range(RangeRequest)
    case put(PutRequest)
    case deleteRange(DeleteRangeRequest)
    case txn(TxnRequest)
    /// Compacts history up to `revision`. `physical` asks the caller to wait for physical removal (as etcd's
    /// `CompactionRequest.physical`); the store itself records the request either way.
    case compact(revision: Revision, physical: Bool)
    case leaseGrant(id: LeaseID, ttlSeconds: Int64)
    case leaseRevoke(id: LeaseID)
    case leaseCheckpoint([LeaseCheckpoint])
    case alarm(AlarmAction)
    /// Records a member's name and client URLs (etcd's "publish", sent by each member once it serves).
    case publishMember(id: NodeID, name: String, clientURLs: [String])
    /// Records a member's peer URLs (etcd's MemberAdd and MemberUpdate carry them).
    case setMemberPeerURLs(id: NodeID, peerURLs: [String])
    /// Drops a member's record; the state machine issues it itself when a member's removal is applied.
    case forgetMember(id: NodeID)
    /// Changes users, roles or the auth switch, or issues a token.
    case auth(AuthCommand)
    /// A client's command, to be checked against the auth state at apply time (etcd's request header `username`
    /// and `auth_revision`). Never nested.
    case authorized(AuthIdentity, KVCommand)
}

/// Why bytes could not be decoded as a ``KVCommand`` or a result.
public typealias KVCodecError = BinaryDecodingError

/// A compact, versioned binary encoding of ``KVCommand``.
///
/// Layout: one format-version byte, one tag byte, then the fields. Integers are LEB128 varints (signed ones
/// zigzag-encoded), byte strings and lists are a varint length followed by their contents. Decoding checks every
/// length against the bytes that remain and caps nesting, so hostile input throws instead of trapping or
/// allocating without bound.
public enum KVCommandCodec {
    /// The only format this version writes; decoding rejects others rather than guessing.
    public static let formatVersion: UInt8 = 1
    /// Deeper nested transactions are refused: etcd has no such limit, but recursion depth must be bounded.
    public static let maxTxnDepth = 64

    fileprivate enum Tag: UInt8 {
        case range = 1, put, deleteRange, txn, compact, leaseGrant, leaseRevoke, leaseCheckpoint, alarm
        case publishMember, setMemberPeerURLs, forgetMember, auth, authorized
    }

    fileprivate enum AuthTag: UInt8 {
        case enable = 1, disable, userAdd, userDelete, userChangePassword, userGrantRole, userRevokeRole, roleAdd,
             roleDelete, roleGrantPermission, roleRevokePermission, authenticate
    }

    fileprivate enum OpTag: UInt8 {
        case range = 1, put, deleteRange, txn
    }

    fileprivate enum CompareTag: UInt8 {
        case version = 1, createRevision, modRevision, value, lease
    }

    public static func encode(_ command: KVCommand) -> [UInt8] {
        var writer = BinaryWriter()
        writer.bytes.reserveCapacity(64)
        writer.byte(formatVersion)
        switch command {
        case .range(let request):
            writer.byte(Tag.range.rawValue)
            writer.range(request)
        case .put(let request):
            writer.byte(Tag.put.rawValue)
            writer.put(request)
        case .deleteRange(let request):
            writer.byte(Tag.deleteRange.rawValue)
            writer.deleteRange(request)
        case .txn(let request):
            writer.byte(Tag.txn.rawValue)
            writer.txn(request)
        case .compact(let revision, let physical):
            writer.byte(Tag.compact.rawValue)
            writer.signed(revision)
            writer.bool(physical)
        case .leaseGrant(let id, let ttlSeconds):
            writer.byte(Tag.leaseGrant.rawValue)
            writer.signed(id)
            writer.signed(ttlSeconds)
        case .leaseRevoke(let id):
            writer.byte(Tag.leaseRevoke.rawValue)
            writer.signed(id)
        case .leaseCheckpoint(let checkpoints):
            writer.byte(Tag.leaseCheckpoint.rawValue)
            writer.unsigned(UInt64(checkpoints.count))
            for checkpoint in checkpoints {
                writer.signed(checkpoint.id)
                writer.signed(checkpoint.remainingTTLSeconds)
            }
        case .alarm(let action):
            writer.byte(Tag.alarm.rawValue)
            writer.byte(action.rawValue)
        case .publishMember(let id, let name, let clientURLs):
            writer.byte(Tag.publishMember.rawValue)
            writer.unsigned(id)
            writer.string(name)
            writer.strings(clientURLs)
        case .setMemberPeerURLs(let id, let peerURLs):
            writer.byte(Tag.setMemberPeerURLs.rawValue)
            writer.unsigned(id)
            writer.strings(peerURLs)
        case .forgetMember(let id):
            writer.byte(Tag.forgetMember.rawValue)
            writer.unsigned(id)
        case .auth(let command):
            writer.byte(Tag.auth.rawValue)
            writer.auth(command)
        case .authorized(let identity, let inner):
            precondition(!inner.isAuthorized, "authorized commands do not nest")
            writer.byte(Tag.authorized.rawValue)
            writer.string(identity.user)
            writer.unsigned(identity.authRevision)
            // The inner command keeps its own version byte, so it decodes as any command does.
            writer.blob(encode(inner))
        }
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(KVCodecError) -> KVCommand {
        var reader = BinaryReader(bytes)
        let version = try reader.byte()
        guard version == formatVersion else { throw reader.failure("unknown format version \(version)") }
        let tagByte = try reader.byte()
        guard let tag = Tag(rawValue: tagByte) else { throw reader.failure("unknown command tag \(tagByte)") }
        let command: KVCommand
        switch tag {
        case .range: command = .range(try reader.range())
        case .put: command = .put(try reader.put())
        case .deleteRange: command = .deleteRange(try reader.deleteRange())
        case .txn: command = .txn(try reader.txn(depth: 0))
        case .compact: command = .compact(revision: try reader.signed(), physical: try reader.bool())
        case .leaseGrant: command = .leaseGrant(id: try reader.signed(), ttlSeconds: try reader.signed())
        case .leaseRevoke: command = .leaseRevoke(id: try reader.signed())
        case .leaseCheckpoint:
            let count = try reader.count(minimumBytesEach: 2)
            var checkpoints: [LeaseCheckpoint] = []
            checkpoints.reserveCapacity(count)
            for _ in 0..<count {
                checkpoints.append(LeaseCheckpoint(id: try reader.signed(), remainingTTLSeconds: try reader.signed()))
            }
            command = .leaseCheckpoint(checkpoints)
        case .alarm:
            let raw = try reader.byte()
            guard let action = AlarmAction(rawValue: raw) else { throw reader.failure("unknown alarm action \(raw)") }
            command = .alarm(action)
        case .publishMember:
            command = .publishMember(id: try reader.unsigned(), name: try reader.string(), clientURLs: try reader.strings())
        case .setMemberPeerURLs:
            command = .setMemberPeerURLs(id: try reader.unsigned(), peerURLs: try reader.strings())
        case .forgetMember:
            command = .forgetMember(id: try reader.unsigned())
        case .auth:
            command = .auth(try reader.auth())
        case .authorized:
            let identity = AuthIdentity(user: try reader.string(), authRevision: try reader.unsigned())
            let inner = try decode(try reader.blob())
            guard !inner.isAuthorized else { throw reader.failure("nested authorized command") }
            command = .authorized(identity, inner)
        }
        guard reader.isAtEnd else { throw reader.failure("\(reader.remaining) trailing bytes") }
        return command
    }
}

fileprivate typealias Tag = KVCommandCodec.Tag
fileprivate typealias OpTag = KVCommandCodec.OpTag
fileprivate typealias CompareTag = KVCommandCodec.CompareTag
fileprivate typealias AuthTag = KVCommandCodec.AuthTag

extension KVCommand {
    var isAuthorized: Bool {
        if case .authorized = self { return true }
        return false
    }
}

fileprivate extension BinaryWriter {
    mutating func string(_ value: String) { blob(Array(value.utf8)) }

    mutating func auth(_ command: AuthCommand) {
        switch command {
        case .enable: byte(AuthTag.enable.rawValue)
        case .disable: byte(AuthTag.disable.rawValue)
        case .userAdd(let name, let passwordHash, let noPassword):
            byte(AuthTag.userAdd.rawValue)
            string(name)
            blob(passwordHash)
            bool(noPassword)
        case .userDelete(let name):
            byte(AuthTag.userDelete.rawValue)
            string(name)
        case .userChangePassword(let name, let passwordHash):
            byte(AuthTag.userChangePassword.rawValue)
            string(name)
            blob(passwordHash)
        case .userGrantRole(let user, let role):
            byte(AuthTag.userGrantRole.rawValue)
            string(user)
            string(role)
        case .userRevokeRole(let user, let role):
            byte(AuthTag.userRevokeRole.rawValue)
            string(user)
            string(role)
        case .roleAdd(let name):
            byte(AuthTag.roleAdd.rawValue)
            string(name)
        case .roleDelete(let name):
            byte(AuthTag.roleDelete.rawValue)
            string(name)
        case .roleGrantPermission(let role, let permission):
            byte(AuthTag.roleGrantPermission.rawValue)
            string(role)
            blob(permission.key)
            blob(permission.rangeEnd)
            byte(permission.type.rawValue)
        case .roleRevokePermission(let role, let key, let rangeEnd):
            byte(AuthTag.roleRevokePermission.rawValue)
            string(role)
            blob(key)
            blob(rangeEnd)
        case .authenticate(let user, let tokenPrefix):
            byte(AuthTag.authenticate.rawValue)
            string(user)
            string(tokenPrefix)
        }
    }
}

fileprivate extension BinaryReader {
    mutating func auth() throws(KVCodecError) -> AuthCommand {
        let raw = try byte()
        switch AuthTag(rawValue: raw) {
        case .enable: return .enable
        case .disable: return .disable
        case .userAdd: return .userAdd(name: try string(), passwordHash: try blob(), noPassword: try bool())
        case .userDelete: return .userDelete(name: try string())
        case .userChangePassword: return .userChangePassword(name: try string(), passwordHash: try blob())
        case .userGrantRole: return .userGrantRole(user: try string(), role: try string())
        case .userRevokeRole: return .userRevokeRole(user: try string(), role: try string())
        case .roleAdd: return .roleAdd(name: try string())
        case .roleDelete: return .roleDelete(name: try string())
        case .roleGrantPermission:
            let role = try string()
            let key = try blob()
            let rangeEnd = try blob()
            let typeRaw = try byte()
            guard let type = PermissionType(rawValue: typeRaw) else { throw failure("unknown permission type \(typeRaw)") }
            return .roleGrantPermission(role: role, permission: KeyPermission(key: key, rangeEnd: rangeEnd, type: type))
        case .roleRevokePermission:
            return .roleRevokePermission(role: try string(), key: try blob(), rangeEnd: try blob())
        case .authenticate: return .authenticate(user: try string(), tokenPrefix: try string())
        case nil: throw failure("unknown auth command \(raw)")
        }
    }
}

fileprivate extension BinaryWriter {
    mutating func range(_ request: RangeRequest) {
        blob(request.key)
        blob(request.rangeEnd)
        signed(request.limit)
        signed(request.revision)
        byte(request.sortOrder.rawValue)
        byte(request.sortTarget.rawValue)
        // Both flags share a byte.
        byte((request.keysOnly ? 1 : 0) | (request.countOnly ? 2 : 0))
        signed(request.minModRevision)
        signed(request.maxModRevision)
        signed(request.minCreateRevision)
        signed(request.maxCreateRevision)
    }

    mutating func put(_ request: PutRequest) {
        blob(request.key)
        blob(request.value)
        signed(request.lease)
        byte((request.prevKv ? 1 : 0) | (request.ignoreValue ? 2 : 0) | (request.ignoreLease ? 4 : 0))
    }

    mutating func deleteRange(_ request: DeleteRangeRequest) {
        blob(request.key)
        blob(request.rangeEnd)
        bool(request.prevKv)
    }

    mutating func txn(_ request: TxnRequest) {
        unsigned(UInt64(request.compare.count))
        for compare in request.compare {
            blob(compare.key)
            blob(compare.rangeEnd)
            byte(compare.result.rawValue)
            switch compare.target {
            case .version(let value):
                byte(CompareTag.version.rawValue)
                signed(value)
            case .createRevision(let value):
                byte(CompareTag.createRevision.rawValue)
                signed(value)
            case .modRevision(let value):
                byte(CompareTag.modRevision.rawValue)
                signed(value)
            case .value(let value):
                byte(CompareTag.value.rawValue)
                blob(value)
            case .lease(let value):
                byte(CompareTag.lease.rawValue)
                signed(value)
            }
        }
        ops(request.success)
        ops(request.failure)
    }

    mutating func ops(_ ops: [RequestOp]) {
        unsigned(UInt64(ops.count))
        for op in ops {
            switch op {
            case .range(let request):
                byte(OpTag.range.rawValue)
                range(request)
            case .put(let request):
                byte(OpTag.put.rawValue)
                put(request)
            case .deleteRange(let request):
                byte(OpTag.deleteRange.rawValue)
                deleteRange(request)
            case .txn(let request):
                byte(OpTag.txn.rawValue)
                txn(request)
            }
        }
    }
}

fileprivate extension BinaryReader {
    mutating func flags(allowed: UInt8) throws(KVCodecError) -> UInt8 {
        let raw = try byte()
        guard raw & ~allowed == 0 else { throw failure("unknown flag bits \(raw)") }
        return raw
    }

    mutating func range() throws(KVCodecError) -> RangeRequest {
        let key = try blob()
        let rangeEnd = try blob()
        let limit = try signed()
        let revision = try signed()
        let orderRaw = try byte()
        guard let sortOrder = RangeRequest.SortOrder(rawValue: orderRaw) else { throw failure("unknown sort order \(orderRaw)") }
        let targetRaw = try byte()
        guard let sortTarget = RangeRequest.SortTarget(rawValue: targetRaw) else { throw failure("unknown sort target \(targetRaw)") }
        let flags = try flags(allowed: 3)
        return RangeRequest(key: key, rangeEnd: rangeEnd, limit: limit, revision: revision, sortOrder: sortOrder,
                            sortTarget: sortTarget, keysOnly: flags & 1 != 0, countOnly: flags & 2 != 0,
                            minModRevision: try signed(), maxModRevision: try signed(),
                            minCreateRevision: try signed(), maxCreateRevision: try signed())
    }

    mutating func put() throws(KVCodecError) -> PutRequest {
        let key = try blob()
        let value = try blob()
        let lease = try signed()
        let flags = try flags(allowed: 7)
        return PutRequest(key: key, value: value, lease: lease, prevKv: flags & 1 != 0,
                          ignoreValue: flags & 2 != 0, ignoreLease: flags & 4 != 0)
    }

    mutating func deleteRange() throws(KVCodecError) -> DeleteRangeRequest {
        DeleteRangeRequest(key: try blob(), rangeEnd: try blob(), prevKv: try bool())
    }

    mutating func txn(depth: Int) throws(KVCodecError) -> TxnRequest {
        guard depth < KVCommandCodec.maxTxnDepth else { throw failure("transactions nested deeper than \(KVCommandCodec.maxTxnDepth)") }
        // A compare takes at least 5 bytes: two lengths, result, tag, operand.
        let compareCount = try count(minimumBytesEach: 5)
        var compares: [Compare] = []
        compares.reserveCapacity(compareCount)
        for _ in 0..<compareCount {
            let key = try blob()
            let rangeEnd = try blob()
            let resultRaw = try byte()
            guard let result = Compare.Result(rawValue: resultRaw) else {
                throw failure("unknown compare result \(resultRaw)")
            }
            let tagRaw = try byte()
            let target: Compare.Target
            switch CompareTag(rawValue: tagRaw) {
            case .version: target = .version(try signed())
            case .createRevision: target = .createRevision(try signed())
            case .modRevision: target = .modRevision(try signed())
            case .value: target = .value(try blob())
            case .lease: target = .lease(try signed())
            case nil: throw failure("unknown compare target \(tagRaw)")
            }
            compares.append(Compare(key: key, rangeEnd: rangeEnd, target: target, result: result))
        }
        let success = try ops(depth: depth)
        let failure = try ops(depth: depth)
        return TxnRequest(compare: compares, success: success, failure: failure)
    }

    mutating func ops(depth: Int) throws(KVCodecError) -> [RequestOp] {
        // Every op takes at least 4 bytes (a nested txn: tag and three counts).
        let opCount = try count(minimumBytesEach: 4)
        var ops: [RequestOp] = []
        ops.reserveCapacity(opCount)
        for _ in 0..<opCount {
            let tagRaw = try byte()
            switch OpTag(rawValue: tagRaw) {
            case .range: ops.append(.range(try range()))
            case .put: ops.append(.put(try put()))
            case .deleteRange: ops.append(.deleteRange(try deleteRange()))
            case .txn: ops.append(.txn(try txn(depth: depth + 1)))
            case nil: throw failure("unknown operation tag \(tagRaw)")
            }
        }
        return ops
    }
}

fileprivate extension BinaryWriter {
    mutating func strings(_ values: [String]) {
        unsigned(UInt64(values.count))
        for value in values { string(value) }
    }
}

fileprivate extension BinaryReader {
    mutating func string() throws(BinaryDecodingError) -> String {
        let raw = try blob()
        guard let text = String(validating: raw, as: UTF8.self) else { throw failure("invalid UTF-8") }
        return text
    }

    mutating func strings() throws(BinaryDecodingError) -> [String] {
        let count = try count(minimumBytesEach: 1)
        var values: [String] = []
        values.reserveCapacity(count)
        for _ in 0..<count { values.append(try string()) }
        return values
    }
}
