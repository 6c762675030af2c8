import Foundation
import Testing
@testable import RaftKV

@Suite struct MVCCCodecTests {
    static let samples: [KVCommand] = [
        .put(PutRequest(key: b("k"), value: b("v"), lease: 7, prevKv: true)),
        .put(PutRequest(key: [0, 255], value: [], ignoreValue: true, ignoreLease: true)),
        .deleteRange(DeleteRangeRequest(key: b("a"), rangeEnd: [0], prevKv: true)),
        .range(RangeRequest(key: b("a"), rangeEnd: b("z"), limit: 10, revision: -3, sortOrder: .descend,
                            sortTarget: .value, keysOnly: true, countOnly: true, minModRevision: 1,
                            maxModRevision: Int64.max, minCreateRevision: Int64.min, maxCreateRevision: 4)),
        .txn(TxnRequest(
            compare: [Compare(key: b("a"), target: .version(1), result: .equal),
                      Compare(key: b("b"), rangeEnd: b("c"), target: .value(b("x")), result: .notEqual),
                      Compare(key: b("c"), target: .createRevision(-1), result: .greater),
                      Compare(key: b("d"), target: .modRevision(0), result: .less),
                      Compare(key: b("e"), target: .lease(123_456_789_012), result: .equal)],
            success: [.put(PutRequest(key: b("a"))), .txn(TxnRequest(failure: [.deleteRange(DeleteRangeRequest(key: b("q")))]))],
            failure: [.range(RangeRequest(key: b("a")))])),
        .txn(TxnRequest()),
        .compact(revision: 1 << 40, physical: true),
        .leaseGrant(id: -5, ttlSeconds: 60),
        .leaseRevoke(id: Int64.max),
        .leaseCheckpoint([LeaseCheckpoint(id: 1, remainingTTLSeconds: 2), LeaseCheckpoint(id: 3, remainingTTLSeconds: 0)]),
        .leaseCheckpoint([]),
        .alarm(.activate),
        .alarm(.deactivate),
        .auth(.enable),
        .auth(.userAdd(name: "root", passwordHash: [1, 2, 3], noPassword: false)),
        .auth(.roleGrantPermission(role: "r", permission: KeyPermission(key: b("a"), rangeEnd: [0], type: .readWrite))),
        .auth(.roleRevokePermission(role: "r", key: b("a"), rangeEnd: [])),
        .auth(.authenticate(user: "alice", tokenPrefix: "abcdefghijklmnop")),
        .authorized(AuthIdentity(user: "alice", authRevision: 7), .put(PutRequest(key: b("k"), value: b("v")))),
        .authorized(.anonymous, .auth(.disable)),
    ]

    @Test(arguments: samples)
    func roundTrips(_ command: KVCommand) throws {
        let encoded = KVCommandCodec.encode(command)
        #expect(encoded.first == KVCommandCodec.formatVersion)
        #expect(try KVCommandCodec.decode(encoded) == command)
    }

    @Test func rejectsEveryTruncationAndTrailingBytes() {
        for command in Self.samples {
            let encoded = KVCommandCodec.encode(command)
            for length in 0..<encoded.count {
                #expect(throws: KVCodecError.self) { try KVCommandCodec.decode(Array(encoded.prefix(length))) }
            }
            #expect(throws: KVCodecError.self) { try KVCommandCodec.decode(encoded + [0]) }
        }
    }

    @Test func rejectsUnknownVersionsTagsAndHugeLengths() {
        #expect(throws: KVCodecError.self) { try KVCommandCodec.decode([2, 1]) }
        #expect(throws: KVCodecError.self) { try KVCommandCodec.decode([1, 0]) }
        #expect(throws: KVCodecError.self) { try KVCommandCodec.decode([1, 200]) }
        // A key length of 2^63 must not allocate or trap.
        #expect(throws: KVCodecError.self) {
            try KVCommandCodec.decode([1, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
        }
        // An eleven-byte varint overflows.
        #expect(throws: KVCodecError.self) {
            try KVCommandCodec.decode([1, 7] + Array(repeating: 0xff, count: 10) + [1])
        }
        // Invalid booleans and flags.
        #expect(throws: KVCodecError.self) { try KVCommandCodec.decode([1, 5, 2, 7]) }
        #expect(throws: KVCodecError.self) { try KVCommandCodec.decode([1, 2, 1, 0x6b, 0, 0, 8]) }
    }

    @Test func nestingDepthIsBounded() {
        var txn = TxnRequest()
        for _ in 0..<(KVCommandCodec.maxTxnDepth + 1) { txn = TxnRequest(success: [.txn(txn)]) }
        #expect(throws: KVCodecError.self) { try KVCommandCodec.decode(KVCommandCodec.encode(.txn(txn))) }
        // A hostile run of "txn with one nested txn" headers throws instead of overflowing the stack.
        let hostile: [UInt8] = [1, 4] + Array(repeating: [0, 1, 4], count: 100_000).flatMap { $0 }
        #expect(throws: KVCodecError.self) { try KVCommandCodec.decode(hostile) }
    }

    @Test func randomBytesNeverCrash() {
        var generator = SeededRandom(seed: 42)
        var decoded = 0
        for _ in 0..<20_000 {
            let length = Int(generator.next() % 40)
            var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            if !bytes.isEmpty && generator.next() % 2 == 0 { bytes[0] = 1 }
            if (try? KVCommandCodec.decode(bytes)) != nil { decoded += 1 }
        }
        // Mutating valid encodings exercises the deeper paths.
        for command in Self.samples {
            let encoded = KVCommandCodec.encode(command)
            for _ in 0..<500 {
                var mutated = encoded
                let position = Int(generator.next() % UInt64(mutated.count))
                mutated[position] = UInt8(truncatingIfNeeded: generator.next())
                if let command = try? KVCommandCodec.decode(mutated) {
                    // Whatever decodes must re-encode to something that decodes the same.
                    #expect((try? KVCommandCodec.decode(KVCommandCodec.encode(command))) == command)
                }
            }
        }
        #expect(decoded >= 0)
    }
}

