import Testing
@testable import RaftKV

@Suite struct KVResultCodecTests {
    static let kv = KeyValue(key: u8("k"), createRevision: 2, modRevision: 9, version: 3, value: [0, 0xff, 7], lease: -5)
    static let bigKV = KeyValue(key: [UInt8](repeating: 0x61, count: 300), createRevision: .max, modRevision: .min,
                                version: 1 << 40, value: [UInt8](repeating: 0, count: 1000), lease: .max)

    static let responses: [KVResponse] = [
        .range(RangeResponse(revision: 10, kvs: [kv, bigKV, KeyValue()], more: true, count: 42)),
        .range(RangeResponse(revision: 1)),
        .put(PutResponse(revision: 3)),
        .put(PutResponse(revision: 3, prevKv: kv)),
        .deleteRange(DeleteRangeResponse(revision: 4, deleted: 2, prevKvs: [kv, kv])),
        .txn(TxnResponse(revision: 7, succeeded: false, responses: [
            .range(RangeResponse(revision: 7, kvs: [kv], count: 1)),
            .put(PutResponse(revision: 7, prevKv: kv)),
            .deleteRange(DeleteRangeResponse(revision: 7, deleted: 0)),
            .txn(TxnResponse(revision: 0, succeeded: true, responses: [
                .txn(TxnResponse(revision: 0, succeeded: false)),
            ])),
        ])),
        .compaction(CompactionResponse(revision: 5)),
        .leaseGrant(LeaseGrantResponse(revision: 5, id: 0x1234_5678_9abc, ttlSeconds: 60)),
        .leaseRevoke(LeaseRevokeResponse(revision: 6)),
        .leaseCheckpoint(revision: 6),
        .alarm(AlarmResponse(revision: 6, noSpaceArmed: true)),
        .alarm(AlarmResponse(revision: 6, noSpaceArmed: false)),
        .none,
    ]

    static let errors: [KVError] = [
        .compacted, .futureRevision, .noSpace, .tooManyOperations, .emptyKey, .keyNotFound, .valueProvided,
        .leaseProvided, .duplicateKey, .leaseNotFound, .leaseExists, .leaseTTLTooLarge, .requestTooLarge,
        .malformedCommand("bad tag é"), .noLeader, .notLeader(leader: 0xabcdef), .leaderChanged, .timeout, .stopped,
        .tooManyRequests,
    ]

    static var allResults: [Result<KVResponse, KVError>] {
        responses.map { .success($0) } + errors.map { .failure($0) }
    }

    @Test func roundTripsEveryResponseAndError() throws {
        for result in Self.allResults {
            let encoded = KVResultCodec.encode(result)
            #expect(try KVResultCodec.decode(encoded) == result)
        }
    }

    @Test func smallResultsStaySmall() {
        #expect(KVResultCodec.encode(.success(.put(PutResponse(revision: 100)))).count == 6)
        #expect(KVResultCodec.encode(.failure(.compacted)).count == 3)
    }

    @Test func everyTruncationAndTrailingByteIsRefused() {
        for result in Self.allResults {
            let encoded = KVResultCodec.encode(result)
            for length in 0..<encoded.count {
                #expect(throws: KVCodecError.self) { try KVResultCodec.decode(Array(encoded.prefix(length))) }
            }
            #expect(throws: KVCodecError.self) { try KVResultCodec.decode(encoded + [0]) }
        }
    }

    @Test func unknownTagsAndVersionsAreRefused() {
        #expect(throws: KVCodecError.self) { try KVResultCodec.decode([2, 1, 10]) }
        #expect(throws: KVCodecError.self) { try KVResultCodec.decode([1, 2]) }
        #expect(throws: KVCodecError.self) { try KVResultCodec.decode([1, 1, 99]) }
        #expect(throws: KVCodecError.self) { try KVResultCodec.decode([1, 0, 99]) }
        // A huge claimed element count does not allocate: it is checked against the remaining bytes.
        #expect(throws: KVCodecError.self) { try KVResultCodec.decode([1, 1, 1, 2, 0xff, 0xff, 0xff, 0xff, 0x0f]) }
    }

    @Test func deeplyNestedTransactionResponsesAreRefused() {
        var response = TxnResponse(revision: 0, succeeded: true)
        for _ in 0...KVCommandCodec.maxTxnDepth { response = TxnResponse(revision: 0, succeeded: true, responses: [.txn(response)]) }
        let encoded = KVResultCodec.encode(.success(.txn(response)))
        #expect(throws: KVCodecError.self) { try KVResultCodec.decode(encoded) }
    }

    @Test func randomBytesNeverTrap() {
        var random = SeededRandom(seed: 7)
        for _ in 0..<5_000 {
            let length = Int.random(in: 0..<24, using: &random)
            let input = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
            _ = try? KVResultCodec.decode([1] + input)
        }
    }
}
