/// A compact, versioned binary encoding of what applying one entry answered: `Result<KVResponse, KVError>`.
///
/// It is the ``ApplyResult`` the state machine hands back through ``RaftNode/propose(_:)``. The layout follows
/// ``KVCommandCodec``: a format-version byte, a tag byte (0 = failure, 1 = success), then the error or the
/// response. Integers are LEB128 varints (signed ones zigzag-encoded); byte strings and lists carry a varint
/// length. Decoding checks every length against the remaining bytes and caps nesting, so corrupt input throws
/// ``KVCodecError`` instead of trapping.
public enum KVResultCodec {
    public static let formatVersion: UInt8 = 1

    fileprivate enum ErrorTag: UInt8 {
        case compacted = 1, futureRevision, noSpace, tooManyOperations, emptyKey, keyNotFound, valueProvided,
             leaseProvided, duplicateKey, leaseNotFound, leaseExists, leaseTTLTooLarge, requestTooLarge,
             malformedCommand, noLeader, notLeader, leaderChanged, timeout, stopped, tooManyRequests, auth
    }

    fileprivate enum ResponseTag: UInt8 {
        case range = 1, put, deleteRange, txn, compaction, leaseGrant, leaseRevoke, leaseCheckpoint, alarm, none, auth
    }

    fileprivate enum OpTag: UInt8 {
        case range = 1, put, deleteRange, txn
    }

    public static func encode(_ result: Result<KVResponse, KVError>) -> [UInt8] {
        var writer = BinaryWriter()
        writer.byte(formatVersion)
        switch result {
        case .failure(let error):
            writer.byte(0)
            writer.error(error)
        case .success(let response):
            writer.byte(1)
            writer.response(response)
        }
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(KVCodecError) -> Result<KVResponse, KVError> {
        var reader = BinaryReader(bytes)
        let version = try reader.byte()
        guard version == formatVersion else { throw reader.failure("unknown result format version \(version)") }
        let result: Result<KVResponse, KVError>
        switch try reader.byte() {
        case 0: result = .failure(try reader.error())
        case 1: result = .success(try reader.response())
        case let other: throw reader.failure("unknown result tag \(other)")
        }
        guard reader.isAtEnd else { throw reader.failure("\(reader.remaining) trailing bytes") }
        return result
    }
}

fileprivate typealias ErrorTag = KVResultCodec.ErrorTag
fileprivate typealias ResponseTag = KVResultCodec.ResponseTag
fileprivate typealias OpTag = KVResultCodec.OpTag

fileprivate extension BinaryWriter {
    mutating func error(_ error: KVError) {
        switch error {
        case .compacted: byte(ErrorTag.compacted.rawValue)
        case .futureRevision: byte(ErrorTag.futureRevision.rawValue)
        case .noSpace: byte(ErrorTag.noSpace.rawValue)
        case .tooManyOperations: byte(ErrorTag.tooManyOperations.rawValue)
        case .emptyKey: byte(ErrorTag.emptyKey.rawValue)
        case .keyNotFound: byte(ErrorTag.keyNotFound.rawValue)
        case .valueProvided: byte(ErrorTag.valueProvided.rawValue)
        case .leaseProvided: byte(ErrorTag.leaseProvided.rawValue)
        case .duplicateKey: byte(ErrorTag.duplicateKey.rawValue)
        case .leaseNotFound: byte(ErrorTag.leaseNotFound.rawValue)
        case .leaseExists: byte(ErrorTag.leaseExists.rawValue)
        case .leaseTTLTooLarge: byte(ErrorTag.leaseTTLTooLarge.rawValue)
        case .requestTooLarge: byte(ErrorTag.requestTooLarge.rawValue)
        case .malformedCommand(let why):
            byte(ErrorTag.malformedCommand.rawValue)
            blob(Array(why.utf8))
        case .noLeader: byte(ErrorTag.noLeader.rawValue)
        case .notLeader(let leader):
            byte(ErrorTag.notLeader.rawValue)
            unsigned(leader)
        case .leaderChanged: byte(ErrorTag.leaderChanged.rawValue)
        case .timeout: byte(ErrorTag.timeout.rawValue)
        case .stopped: byte(ErrorTag.stopped.rawValue)
        case .tooManyRequests: byte(ErrorTag.tooManyRequests.rawValue)
        case .auth(let inner):
            byte(ErrorTag.auth.rawValue)
            byte(inner.rawValue)
        }
    }

    mutating func keyValue(_ kv: KeyValue) {
        blob(kv.key)
        signed(kv.createRevision)
        signed(kv.modRevision)
        signed(kv.version)
        blob(kv.value)
        signed(kv.lease)
    }

    mutating func keyValues(_ kvs: [KeyValue]) {
        unsigned(UInt64(kvs.count))
        for kv in kvs { keyValue(kv) }
    }

    mutating func range(_ response: RangeResponse) {
        signed(response.revision)
        keyValues(response.kvs)
        bool(response.more)
        signed(response.count)
    }

    mutating func put(_ response: PutResponse) {
        signed(response.revision)
        bool(response.prevKv != nil)
        if let previous = response.prevKv { keyValue(previous) }
    }

    mutating func deleteRange(_ response: DeleteRangeResponse) {
        signed(response.revision)
        signed(response.deleted)
        keyValues(response.prevKvs)
    }

    mutating func txn(_ response: TxnResponse) {
        signed(response.revision)
        bool(response.succeeded)
        unsigned(UInt64(response.responses.count))
        for op in response.responses {
            switch op {
            case .range(let inner):
                byte(OpTag.range.rawValue)
                range(inner)
            case .put(let inner):
                byte(OpTag.put.rawValue)
                put(inner)
            case .deleteRange(let inner):
                byte(OpTag.deleteRange.rawValue)
                deleteRange(inner)
            case .txn(let inner):
                byte(OpTag.txn.rawValue)
                txn(inner)
            }
        }
    }

    mutating func response(_ response: KVResponse) {
        switch response {
        case .range(let inner):
            byte(ResponseTag.range.rawValue)
            range(inner)
        case .put(let inner):
            byte(ResponseTag.put.rawValue)
            put(inner)
        case .deleteRange(let inner):
            byte(ResponseTag.deleteRange.rawValue)
            deleteRange(inner)
        case .txn(let inner):
            byte(ResponseTag.txn.rawValue)
            txn(inner)
        case .compaction(let inner):
            byte(ResponseTag.compaction.rawValue)
            signed(inner.revision)
        case .leaseGrant(let inner):
            byte(ResponseTag.leaseGrant.rawValue)
            signed(inner.revision)
            signed(inner.id)
            signed(inner.ttlSeconds)
        case .leaseRevoke(let inner):
            byte(ResponseTag.leaseRevoke.rawValue)
            signed(inner.revision)
        case .leaseCheckpoint(let revision):
            byte(ResponseTag.leaseCheckpoint.rawValue)
            signed(revision)
        case .alarm(let inner):
            byte(ResponseTag.alarm.rawValue)
            signed(inner.revision)
            bool(inner.noSpaceArmed)
        case .none:
            byte(ResponseTag.none.rawValue)
        case .auth(let inner):
            byte(ResponseTag.auth.rawValue)
            signed(inner.revision)
            unsigned(inner.authRevision)
            blob(Array(inner.token.utf8))
            blob(Array(inner.tokenUser.utf8))
            blob(Array(inner.invalidatedUser.utf8))
            bool(inner.invalidatesAllTokens)
        }
    }
}

fileprivate extension BinaryReader {
    mutating func error() throws(KVCodecError) -> KVError {
        let raw = try byte()
        guard let tag = ErrorTag(rawValue: raw) else { throw failure("unknown error tag \(raw)") }
        switch tag {
        case .compacted: return .compacted
        case .futureRevision: return .futureRevision
        case .noSpace: return .noSpace
        case .tooManyOperations: return .tooManyOperations
        case .emptyKey: return .emptyKey
        case .keyNotFound: return .keyNotFound
        case .valueProvided: return .valueProvided
        case .leaseProvided: return .leaseProvided
        case .duplicateKey: return .duplicateKey
        case .leaseNotFound: return .leaseNotFound
        case .leaseExists: return .leaseExists
        case .leaseTTLTooLarge: return .leaseTTLTooLarge
        case .requestTooLarge: return .requestTooLarge
        case .malformedCommand:
            let text = try blob()
            return .malformedCommand(String(decoding: text, as: UTF8.self))
        case .noLeader: return .noLeader
        case .notLeader: return .notLeader(leader: try unsigned())
        case .leaderChanged: return .leaderChanged
        case .timeout: return .timeout
        case .stopped: return .stopped
        case .tooManyRequests: return .tooManyRequests
        case .auth:
            let raw = try byte()
            guard let inner = AuthError(rawValue: raw) else { throw failure("unknown auth error \(raw)") }
            return .auth(inner)
        }
    }

    mutating func keyValue() throws(KVCodecError) -> KeyValue {
        let key = try blob()
        let createRevision = try signed()
        let modRevision = try signed()
        let version = try signed()
        let value = try blob()
        return KeyValue(key: key, createRevision: createRevision, modRevision: modRevision, version: version,
                        value: value, lease: try signed())
    }

    mutating func keyValues() throws(KVCodecError) -> [KeyValue] {
        // A key-value takes at least 6 bytes: two lengths and four integers.
        let count = try count(minimumBytesEach: 6)
        var kvs: [KeyValue] = []
        kvs.reserveCapacity(count)
        for _ in 0..<count { kvs.append(try keyValue()) }
        return kvs
    }

    mutating func range() throws(KVCodecError) -> RangeResponse {
        let revision = try signed()
        let kvs = try keyValues()
        let more = try bool()
        return RangeResponse(revision: revision, kvs: kvs, more: more, count: try signed())
    }

    mutating func put() throws(KVCodecError) -> PutResponse {
        let revision = try signed()
        let hasPrevious = try bool()
        return PutResponse(revision: revision, prevKv: hasPrevious ? try keyValue() : nil)
    }

    mutating func deleteRange() throws(KVCodecError) -> DeleteRangeResponse {
        let revision = try signed()
        let deleted = try signed()
        return DeleteRangeResponse(revision: revision, deleted: deleted, prevKvs: try keyValues())
    }

    mutating func txn(depth: Int) throws(KVCodecError) -> TxnResponse {
        guard depth < KVCommandCodec.maxTxnDepth else {
            throw failure("transaction responses nested deeper than \(KVCommandCodec.maxTxnDepth)")
        }
        let revision = try signed()
        let succeeded = try bool()
        // Every response op takes at least 2 bytes: its tag and a revision.
        let count = try count(minimumBytesEach: 2)
        var responses: [ResponseOp] = []
        responses.reserveCapacity(count)
        for _ in 0..<count {
            let raw = try byte()
            switch OpTag(rawValue: raw) {
            case .range: responses.append(.range(try range()))
            case .put: responses.append(.put(try put()))
            case .deleteRange: responses.append(.deleteRange(try deleteRange()))
            case .txn: responses.append(.txn(try txn(depth: depth + 1)))
            case nil: throw failure("unknown response operation tag \(raw)")
            }
        }
        return TxnResponse(revision: revision, succeeded: succeeded, responses: responses)
    }

    mutating func response() throws(KVCodecError) -> KVResponse {
        let raw = try byte()
        guard let tag = ResponseTag(rawValue: raw) else { throw failure("unknown response tag \(raw)") }
        switch tag {
        case .range: return .range(try range())
        case .put: return .put(try put())
        case .deleteRange: return .deleteRange(try deleteRange())
        case .txn: return .txn(try txn(depth: 0))
        case .compaction: return .compaction(CompactionResponse(revision: try signed()))
        case .leaseGrant:
            let revision = try signed()
            let id = try signed()
            return .leaseGrant(LeaseGrantResponse(revision: revision, id: id, ttlSeconds: try signed()))
        case .leaseRevoke: return .leaseRevoke(LeaseRevokeResponse(revision: try signed()))
        case .leaseCheckpoint: return .leaseCheckpoint(revision: try signed())
        case .alarm:
            let revision = try signed()
            return .alarm(AlarmResponse(revision: revision, noSpaceArmed: try bool()))
        case .none: return .none
        case .auth:
            let revision = try signed()
            let authRevision = try unsigned()
            return .auth(AuthChangeResponse(revision: revision, authRevision: authRevision,
                                            token: String(decoding: try blob(), as: UTF8.self),
                                            tokenUser: String(decoding: try blob(), as: UTF8.self),
                                            invalidatedUser: String(decoding: try blob(), as: UTF8.self),
                                            invalidatesAllTokens: try bool()))
        }
    }
}
