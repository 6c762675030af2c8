/// The wire form of Raft messages between members: a version byte, then the header and the body, all varints
/// and length-prefixed blobs. Decoding validates everything, so a corrupt or hostile peer gets an error, not a
/// crash.
public enum MessageCodec {
    static let version: UInt8 = 1
    /// Bound on entries in one append: far above what `maxMessageBytes` produces, far below a memory bomb.
    static let maxEntriesPerMessage = 1 << 20

    public static func encode(_ message: Message) -> [UInt8] {
        var writer = BinaryWriter(capacity: message.sizeBytes + 16)
        writer.byte(version)
        writer.unsigned(message.from)
        writer.unsigned(message.to)
        writer.unsigned(message.term)
        switch message.body {
        case .preVote(let lastIndex, let lastTerm):
            writer.byte(1); writer.unsigned(lastIndex); writer.unsigned(lastTerm)
        case .preVoteResponse(let granted):
            writer.byte(2); writer.bool(granted)
        case .vote(let lastIndex, let lastTerm, let transfer):
            writer.byte(3); writer.unsigned(lastIndex); writer.unsigned(lastTerm); writer.bool(transfer)
        case .voteResponse(let granted):
            writer.byte(4); writer.bool(granted)
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            writer.byte(5); writer.unsigned(prevIndex); writer.unsigned(prevTerm); writer.unsigned(commit)
            writer.unsigned(UInt64(entries.count))
            for entry in entries {
                writer.unsigned(entry.term); writer.unsigned(entry.index); writer.byte(entry.kind.rawValue); writer.blob(entry.data)
            }
        case .appendResponse(let accepted, let matchIndex, let rejectedIndex, let hintIndex, let hintTerm):
            writer.byte(6); writer.bool(accepted); writer.unsigned(matchIndex); writer.unsigned(rejectedIndex)
            writer.unsigned(hintIndex); writer.unsigned(hintTerm)
        case .heartbeat(let commit, let sequence):
            writer.byte(7); writer.unsigned(commit); writer.unsigned(sequence)
        case .heartbeatResponse(let sequence):
            writer.byte(8); writer.unsigned(sequence)
        case .snapshot(let chunk):
            writer.byte(9); encodeMetadata(chunk.metadata, into: &writer)
            writer.unsigned(chunk.offset); writer.blob(chunk.data); writer.bool(chunk.isLast)
        case .snapshotResponse(let nextOffset, let done, let snapshotIndex):
            writer.byte(10); writer.unsigned(nextOffset); writer.bool(done); writer.unsigned(snapshotIndex)
        case .timeoutNow:
            writer.byte(11)
        case .readIndex(let requestID):
            writer.byte(12); writer.unsigned(requestID)
        case .readIndexResponse(let requestID, let index):
            writer.byte(13); writer.unsigned(requestID); writer.unsigned(index)
        }
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(BinaryDecodingError) -> Message {
        var reader = BinaryReader(bytes)
        guard try reader.byte() == version else { throw reader.failure("unknown message version") }
        let from = try reader.unsigned()
        let to = try reader.unsigned()
        let term = try reader.unsigned()
        guard from != 0, to != 0 else { throw reader.failure("member ID 0") }
        let body: Message.Body
        switch try reader.byte() {
        case 1: body = .preVote(lastIndex: try reader.unsigned(), lastTerm: try reader.unsigned())
        case 2: body = .preVoteResponse(granted: try reader.bool())
        case 3: body = .vote(lastIndex: try reader.unsigned(), lastTerm: try reader.unsigned(), leadershipTransfer: try reader.bool())
        case 4: body = .voteResponse(granted: try reader.bool())
        case 5:
            let prevIndex = try reader.unsigned()
            let prevTerm = try reader.unsigned()
            let commit = try reader.unsigned()
            let count = try reader.count(minimumBytesEach: 4)
            guard count <= maxEntriesPerMessage else { throw reader.failure("\(count) entries in one message") }
            var entries: [Entry] = []
            entries.reserveCapacity(count)
            for position in 0..<count {
                let entryTerm = try reader.unsigned()
                let index = try reader.unsigned()
                guard let kind = EntryKind(rawValue: try reader.byte()) else { throw reader.failure("unknown entry kind") }
                guard index == prevIndex &+ 1 &+ UInt64(position) else { throw reader.failure("non-contiguous entries") }
                entries.append(Entry(term: entryTerm, index: index, kind: kind, data: try reader.blob()))
            }
            body = .append(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit)
        case 6:
            body = .appendResponse(accepted: try reader.bool(), matchIndex: try reader.unsigned(), rejectedIndex: try reader.unsigned(),
                                   hintIndex: try reader.unsigned(), hintTerm: try reader.unsigned())
        case 7: body = .heartbeat(commit: try reader.unsigned(), readSequence: try reader.unsigned())
        case 8: body = .heartbeatResponse(readSequence: try reader.unsigned())
        case 9:
            let metadata = try decodeMetadata(&reader)
            body = .snapshot(SnapshotChunk(metadata: metadata, offset: try reader.unsigned(), data: try reader.blob(), isLast: try reader.bool()))
        case 10: body = .snapshotResponse(nextOffset: try reader.unsigned(), done: try reader.bool(), snapshotIndex: try reader.unsigned())
        case 11: body = .timeoutNow
        case 12: body = .readIndex(requestID: try reader.unsigned())
        case 13: body = .readIndexResponse(requestID: try reader.unsigned(), index: try reader.unsigned())
        default: throw reader.failure("unknown message kind")
        }
        try reader.expectEnd()
        return Message(from: from, to: to, term: term, body: body)
    }

    static func encodeMetadata(_ metadata: SnapshotMetadata, into writer: inout BinaryWriter) {
        writer.unsigned(metadata.index)
        writer.unsigned(metadata.term)
        for group in [metadata.membership.voters, metadata.membership.learners] {
            writer.unsigned(UInt64(group.count))
            for id in group.sorted() { writer.unsigned(id) }
        }
    }

    static func decodeMetadata(_ reader: inout BinaryReader) throws(BinaryDecodingError) -> SnapshotMetadata {
        let index = try reader.unsigned()
        let term = try reader.unsigned()
        var groups: [Set<NodeID>] = []
        for _ in 0..<2 {
            let count = try reader.count(minimumBytesEach: 1)
            var group = Set<NodeID>()
            for _ in 0..<count {
                let id = try reader.unsigned()
                guard id != 0 else { throw reader.failure("member ID 0") }
                group.insert(id)
            }
            groups.append(group)
        }
        guard groups[0].isDisjoint(with: groups[1]) else { throw reader.failure("a member is both voter and learner") }
        return SnapshotMetadata(index: index, term: term, membership: Membership(voters: groups[0], learners: groups[1]))
    }
}
