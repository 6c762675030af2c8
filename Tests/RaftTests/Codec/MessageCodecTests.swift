import Foundation
import Testing
@testable import RaftKV

@Suite struct MessageCodecTests {
    static func randomMessage(_ random: inout SeededRandom) -> Message {
        func number() -> UInt64 {
            switch random.next() % 4 {
            case 0: return 0
            case 1: return random.next() % 200
            case 2: return UInt64.max - random.next() % 3
            default: return random.next()
            }
        }
        func bytes() -> [UInt8] { (0..<Int(random.next() % 40)).map { _ in UInt8.random(in: 0...255, using: &random) } }
        func flag() -> Bool { random.next() % 2 == 0 }
        let membership = Membership(voters: [1, 2, random.next() % 50 + 3], learners: [random.next() % 50 + 100])
        let body: Message.Body
        switch random.next() % 13 {
        case 0: body = .preVote(lastIndex: number(), lastTerm: number())
        case 1: body = .preVoteResponse(granted: flag())
        case 2: body = .vote(lastIndex: number(), lastTerm: number(), leadershipTransfer: flag())
        case 3: body = .voteResponse(granted: flag())
        case 4:
            let prev = random.next() % 1000
            let entries = (0..<Int(random.next() % 5)).map { offset in
                Entry(term: number(), index: prev + 1 + UInt64(offset), kind: flag() ? .normal : .configChange, data: bytes())
            }
            body = .append(prevIndex: prev, prevTerm: number(), entries: entries, commit: number())
        case 5: body = .appendResponse(accepted: flag(), matchIndex: number(), rejectedIndex: number(), hintIndex: number(), hintTerm: number())
        case 6: body = .heartbeat(commit: number(), readSequence: number())
        case 7: body = .heartbeatResponse(readSequence: number())
        case 8:
            body = .snapshot(SnapshotChunk(metadata: SnapshotMetadata(index: number(), term: number(), membership: membership),
                                           offset: number(), data: bytes(), isLast: flag()))
        case 9: body = .snapshotResponse(nextOffset: number(), done: flag(), snapshotIndex: number())
        case 10: body = .timeoutNow
        case 11: body = .readIndex(requestID: number())
        default: body = .readIndexResponse(requestID: number(), index: number())
        }
        return Message(from: random.next() % 9 + 1, to: random.next() % 9 + 1, term: number(), body: body)
    }

    @Test func everyMessageKindRoundTrips() throws {
        let seed = UInt64(ProcessInfo.processInfo.environment["CODEC_SEED"] ?? "") ?? 42
        var random = SeededRandom(seed: seed)
        for _ in 0..<2_000 {
            let message = Self.randomMessage(&random)
            let decoded = try MessageCodec.decode(MessageCodec.encode(message))
            #expect(decoded == message, "seed \(seed); replay: CODEC_SEED=\(seed) swift test --filter MessageCodecTests")
        }
    }

    @Test func truncatedMessagesAreRejected() {
        var random = SeededRandom(seed: 7)
        for _ in 0..<200 {
            let bytes = MessageCodec.encode(Self.randomMessage(&random))
            for length in 0..<bytes.count {
                #expect(throws: BinaryDecodingError.self) { try MessageCodec.decode(Array(bytes[..<length])) }
            }
        }
    }

    @Test func mutatedAndRandomBytesNeverCrash() {
        var random = SeededRandom(seed: 11)
        var rejected = 0
        for _ in 0..<5_000 {
            var bytes = MessageCodec.encode(Self.randomMessage(&random))
            let position = Int(random.next() % UInt64(bytes.count))
            bytes[position] = UInt8.random(in: 0...255, using: &random)
            if (try? MessageCodec.decode(bytes)) == nil { rejected += 1 }
            let noise = (0..<Int(random.next() % 64)).map { _ in UInt8.random(in: 0...255, using: &random) }
            if (try? MessageCodec.decode(noise)) == nil { rejected += 1 }
        }
        #expect(rejected > 0)
    }

    @Test func forgedCountsCannotAllocateBeyondTheInput() {
        var writer = BinaryWriter()
        writer.byte(1); writer.unsigned(1); writer.unsigned(2); writer.unsigned(3)
        writer.byte(5); writer.unsigned(0); writer.unsigned(0); writer.unsigned(0)
        writer.unsigned(UInt64.max >> 1)
        #expect(throws: BinaryDecodingError.self) { try MessageCodec.decode(writer.bytes) }
    }
}
