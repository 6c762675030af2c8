import Foundation
import Testing
@testable import RaftKV

/// A deliberately naive in-memory reference of etcd's MVCC semantics: every row of history in one array, every
/// read a scan. Compaction only moves the floor; history is never removed, so reads at or above it are unaffected.
struct MVCCReference {
    struct Row {
        var revision: Revision
        var sub: Int64
        var key: [UInt8]
        /// nil for a tombstone.
        var kv: KeyValue?
    }

    var rows: [Row] = []
    /// The same rows by key, for speed.
    var history: [[UInt8]: [Row]] = [:]
    var currentRevision: Revision = 1
    var compactedRevision: Revision = -1
    var leases: [LeaseID: Int64] = [:]
    private var beginRevision: Revision = 0
    private var changes: Int64 = 0

    func value(_ key: [UInt8], at revision: Revision) -> KeyValue? {
        history[key]?.last { $0.revision <= revision }?.kv
    }

    func live(_ range: KeyRange, at revision: Revision) -> [KeyValue] {
        history.keys.filter(range.contains).compactMap { value($0, at: revision) }
            .sorted { $0.key.lexicographicallyPrecedes($1.key) }
    }

    private var readRevision: Revision { beginRevision + (changes > 0 ? 1 : 0) }

    mutating func apply(_ command: KVCommand) -> Result<KVResponse, KVError> {
        let rowCount = rows.count
        beginRevision = currentRevision
        changes = 0
        do {
            let response = try dispatch(command)
            if changes > 0 { currentRevision += 1 }
            return .success(response)
        } catch let error as KVError {
            // A txn can fail after writing (an ignore_value put after a "\0"-ended delete that etcd's duplicate
            // check misses; etcd panics there): the whole request is undone.
            for row in rows[rowCount...] { history[row.key]!.removeLast() }
            rows.removeLast(rows.count - rowCount)
            return .failure(error)
        } catch {
            preconditionFailure("the model only throws KVError")
        }
    }

    private mutating func dispatch(_ command: KVCommand) throws -> KVResponse {
        switch command {
        case .range(let request): return .range(try range(request, readRevision: currentRevision))
        case .put(let request):
            if request.lease != 0 && leases[request.lease] == nil { throw KVError.leaseNotFound }
            return .put(try put(request))
        case .deleteRange(let request): return .deleteRange(delete(request))
        case .txn(let request): return .txn(try txn(request))
        case .compact(let revision, _):
            if revision <= compactedRevision { throw KVError.compacted }
            if revision > currentRevision { throw KVError.futureRevision }
            compactedRevision = revision
            return .compaction(CompactionResponse(revision: currentRevision))
        case .leaseGrant(let id, let ttl):
            if id == 0 { throw KVError.leaseNotFound }
            if leases[id] != nil { throw KVError.leaseExists }
            leases[id] = ttl
            return .leaseGrant(LeaseGrantResponse(revision: currentRevision, id: id, ttlSeconds: ttl))
        case .leaseRevoke(let id):
            if leases[id] == nil { throw KVError.leaseNotFound }
            for kv in live(.from([]), at: currentRevision) where kv.lease == id { writeDelete(kv.key) }
            leases[id] = nil
            return .leaseRevoke(LeaseRevokeResponse(revision: readRevision))
        case .leaseCheckpoint: return .leaseCheckpoint(revision: currentRevision)
        case .alarm(let action): return .alarm(AlarmResponse(revision: currentRevision, noSpaceArmed: action == .activate))
        // Member records live beside the keyspace, which the model covers.
        case .publishMember, .setMemberPeerURLs, .forgetMember: return .none
        // Auth stays off in the model (AuthStateTests and AuthStoreTests cover it): identities change nothing.
        case .authorized(_, let inner): return try dispatch(inner)
        case .auth: preconditionFailure("the model's generator makes no auth commands")
        }
    }

    func range(_ request: RangeRequest, readRevision: Revision) throws -> RangeResponse {
        var revision = request.revision
        if revision > readRevision { throw KVError.futureRevision }
        if revision <= 0 { revision = readRevision }
        if revision < compactedRevision { throw KVError.compacted }
        let all = live(request.keyRange, at: revision)
        if request.countOnly { return RangeResponse(revision: readRevision, count: Int64(all.count)) }
        // etcd decides whether to fetch everything from the requested order, before defaulting NONE to ASCEND for
        // other targets: so NONE + limit sorts only the first limit+1 keys.
        let fetchAll = request.sortOrder != .none || request.minModRevision != 0 || request.maxModRevision != 0
            || request.minCreateRevision != 0 || request.maxCreateRevision != 0
        let fetched = !fetchAll && request.limit > 0 ? Array(all.prefix(Int(request.limit) + 1)) : all
        var kvs = fetched.filter { kv in
            (request.maxModRevision == 0 || kv.modRevision <= request.maxModRevision)
                && (request.minModRevision == 0 || kv.modRevision >= request.minModRevision)
                && (request.maxCreateRevision == 0 || kv.createRevision <= request.maxCreateRevision)
                && (request.minCreateRevision == 0 || kv.createRevision >= request.minCreateRevision)
        }
        var order = request.sortOrder
        if request.sortTarget != .key && order == .none { order = .ascend }
        if order != .none {
            func field(_ kv: KeyValue) -> [UInt8] {
                // Big-endian with the sign bit flipped orders like the integer.
                func bytes(_ value: Int64) -> [UInt8] {
                    withUnsafeBytes(of: (UInt64(bitPattern: value) ^ (1 << 63)).bigEndian, Array.init)
                }
                switch request.sortTarget {
                case .key: return kv.key
                case .version: return bytes(kv.version)
                case .create: return bytes(kv.createRevision)
                case .mod: return bytes(kv.modRevision)
                case .value: return kv.value
                }
            }
            // Input is in key order and the sort is stable, so ties stay in ascending key order.
            let decorated = kvs.enumerated().map { ($0.offset, field($0.element), $0.element) }
            kvs = decorated.sorted { a, b in
                if a.1 != b.1 {
                    return order == .descend ? b.1.lexicographicallyPrecedes(a.1) : a.1.lexicographicallyPrecedes(b.1)
                }
                return a.0 < b.0
            }.map(\.2)
        }
        var more = false
        if request.limit > 0 && kvs.count > request.limit {
            kvs = Array(kvs.prefix(Int(request.limit)))
            more = true
        }
        if request.keysOnly { kvs = kvs.map { var kv = $0; kv.value = []; return kv } }
        return RangeResponse(revision: readRevision, kvs: kvs, more: more, count: Int64(all.count))
    }

    private mutating func put(_ request: PutRequest) throws -> PutResponse {
        let previous = value(request.key, at: readRevision)
        if (request.ignoreValue || request.ignoreLease) && previous == nil { throw KVError.keyNotFound }
        let revision = beginRevision + 1
        let kv = KeyValue(key: request.key, createRevision: previous?.createRevision ?? revision, modRevision: revision,
                          version: (previous?.version ?? 0) + 1,
                          value: request.ignoreValue ? previous!.value : request.value,
                          lease: request.ignoreLease ? previous!.lease : request.lease)
        append(Row(revision: revision, sub: changes, key: request.key, kv: kv))
        changes += 1
        return PutResponse(revision: revision, prevKv: request.prevKv ? previous : nil)
    }

    private mutating func append(_ row: Row) {
        rows.append(row)
        history[row.key, default: []].append(row)
    }

    private mutating func writeDelete(_ key: [UInt8]) {
        append(Row(revision: beginRevision + 1, sub: changes, key: key, kv: nil))
        changes += 1
    }

    private mutating func delete(_ request: DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed = live(request.keyRange, at: readRevision)
        for kv in doomed { writeDelete(kv.key) }
        return DeleteRangeResponse(revision: readRevision, deleted: Int64(doomed.count), prevKvs: request.prevKv ? doomed : [])
    }

    private indirect enum Plan {
        case node(Bool, [Plan])
    }

    private func plan(_ request: TxnRequest) -> Plan {
        let succeeded = request.compare.allSatisfy { compare in
            let kvs = live(KeyRange(key: compare.key, rangeEnd: compare.rangeEnd), at: currentRevision)
            if kvs.isEmpty {
                if case .value = compare.target { return false }
                return MVCCReference.holds(KeyValue(), compare)
            }
            return kvs.allSatisfy { MVCCReference.holds($0, compare) }
        }
        var nested: [Plan] = []
        for case .txn(let inner) in succeeded ? request.success : request.failure { nested.append(plan(inner)) }
        return .node(succeeded, nested)
    }

    static func holds(_ kv: KeyValue, _ compare: Compare) -> Bool {
        let ordering: Int
        switch compare.target {
        case .version(let v): ordering = kv.version == v ? 0 : (kv.version < v ? -1 : 1)
        case .createRevision(let v): ordering = kv.createRevision == v ? 0 : (kv.createRevision < v ? -1 : 1)
        case .modRevision(let v): ordering = kv.modRevision == v ? 0 : (kv.modRevision < v ? -1 : 1)
        case .lease(let v): ordering = kv.lease == v ? 0 : (kv.lease < v ? -1 : 1)
        case .value(let v): ordering = kv.value == v ? 0 : (kv.value.lexicographicallyPrecedes(v) ? -1 : 1)
        }
        switch compare.result {
        case .equal: return ordering == 0
        case .notEqual: return ordering != 0
        case .greater: return ordering == 1
        case .less: return ordering == -1
        }
    }

    private func ops(_ request: TxnRequest, _ plan: Plan) -> [RequestOp] {
        guard case .node(let succeeded, let nested) = plan else { return [] }
        var inner = nested.makeIterator()
        return (succeeded ? request.success : request.failure).flatMap { op -> [RequestOp] in
            if case .txn(let child) = op { return ops(child, inner.next()!) }
            return [op]
        }
    }

    private mutating func txn(_ request: TxnRequest) throws -> TxnResponse {
        let path = plan(request)
        let flat = ops(request, path)
        if !request.isReadOnly {
            for case .put(let put) in flat {
                if (put.ignoreValue || put.ignoreLease) && value(put.key, at: currentRevision) == nil { throw KVError.keyNotFound }
                if put.lease != 0 && leases[put.lease] == nil { throw KVError.leaseNotFound }
            }
        }
        for case .range(let range) in flat where range.revision != 0 {
            if range.revision > currentRevision { throw KVError.futureRevision }
            if range.revision < compactedRevision { throw KVError.compacted }
        }
        let (succeeded, responses) = try run(request, path)
        return TxnResponse(revision: readRevision, succeeded: succeeded, responses: responses)
    }

    private mutating func run(_ request: TxnRequest, _ plan: Plan) throws -> (Bool, [ResponseOp]) {
        guard case .node(let succeeded, let nested) = plan else { return (false, []) }
        var inner = nested.makeIterator()
        var responses: [ResponseOp] = []
        for op in succeeded ? request.success : request.failure {
            switch op {
            case .range(let range): responses.append(.range(try self.range(range, readRevision: readRevision)))
            case .put(let put): responses.append(.put(try self.put(put)))
            case .deleteRange(let delete): responses.append(.deleteRange(self.delete(delete)))
            case .txn(let child):
                let (childSucceeded, childResponses) = try run(child, inner.next()!)
                responses.append(.txn(TxnResponse(revision: 0, succeeded: childSucceeded, responses: childResponses)))
            }
        }
        return (succeeded, responses)
    }

    func events(from start: Revision, _ range: KeyRange) throws -> [Event] {
        if start < compactedRevision { throw KVError.compacted }
        return rows.filter { $0.revision >= start && range.contains($0.key) }.map { row in
            var event = row.kv.map { Event(kind: .put, kv: $0) }
                ?? Event(kind: .delete, kv: KeyValue(key: row.key, modRevision: row.revision))
            let previous = row.revision - 1
            if previous >= compactedRevision && previous > 0 { event.prevKv = value(row.key, at: previous) }
            return event
        }
    }
}

/// Random etcd workloads over a small key space, so that keys collide, histories grow and compares hit.
struct MVCCWorkload {
    var random: SeededRandom
    static let keys: [[UInt8]] = [b("a"), b("ab"), b("abc"), b("b"), b("c"), [0, 1], [0xff], [0xff, 0xff]]
    static let values: [[UInt8]] = [[], [0], [1], [0xff], b("v1"), b("v2"), b("value")]

    mutating func int(_ range: ClosedRange<Int64>) -> Int64 { Int64.random(in: range, using: &random) }
    mutating func chance(_ percent: Int) -> Bool { Int.random(in: 0..<100, using: &random) < percent }
    mutating func key() -> [UInt8] { Self.keys.randomElement(using: &random)! }
    mutating func value() -> [UInt8] { Self.values.randomElement(using: &random)! }

    mutating func rangeEnd(for key: [UInt8]) -> [UInt8] {
        switch Int.random(in: 0..<5, using: &random) {
        case 0, 1: return []
        case 2: return [0]
        case 3: return KeyRange.prefixEnd(key)
        default: return self.key()
        }
    }

    mutating func lease() -> LeaseID { chance(60) ? 0 : int(1...4) }

    mutating func put() -> PutRequest {
        var request = PutRequest(key: key(), value: value(), lease: lease(), prevKv: chance(50))
        if chance(10) {
            request.ignoreValue = true
            request.value = []
        }
        if chance(10) {
            request.ignoreLease = true
            request.lease = 0
        }
        return request
    }

    mutating func delete() -> DeleteRangeRequest {
        let key = key()
        return DeleteRangeRequest(key: key, rangeEnd: rangeEnd(for: key), prevKv: chance(50))
    }

    mutating func range(current: Revision, compacted: Revision) -> RangeRequest {
        let key = key()
        var request = RangeRequest(key: key, rangeEnd: rangeEnd(for: key))
        if chance(40) { request.limit = int(1...4) }
        if chance(40) { request.revision = int(max(compacted - 1, -1)...current + 1) }
        if chance(30) {
            request.sortOrder = RangeRequest.SortOrder.allCases.randomElement(using: &random)!
            request.sortTarget = RangeRequest.SortTarget.allCases.randomElement(using: &random)!
        }
        request.keysOnly = chance(10)
        request.countOnly = chance(10)
        if chance(15) { request.minModRevision = int(0...current) }
        if chance(15) { request.maxModRevision = int(0...current) }
        if chance(15) { request.minCreateRevision = int(0...current) }
        if chance(15) { request.maxCreateRevision = int(0...current) }
        return request
    }

    mutating func compare(current: Revision) -> Compare {
        let key = key()
        let target: Compare.Target
        switch Int.random(in: 0..<5, using: &random) {
        case 0: target = .version(int(0...3))
        case 1: target = .createRevision(int(0...current + 1))
        case 2: target = .modRevision(int(0...current + 1))
        case 3: target = .value(value())
        default: target = .lease(int(0...4))
        }
        return Compare(key: key, rangeEnd: chance(70) ? [] : rangeEnd(for: key), target: target,
                       result: Compare.Result.allCases.randomElement(using: &random)!)
    }

    mutating func txn(current: Revision, compacted: Revision, depth: Int = 0) -> TxnRequest {
        func ops(_ workload: inout MVCCWorkload) -> [RequestOp] {
            (0..<Int.random(in: 0...3, using: &workload.random)).map { _ in
                switch Int.random(in: 0..<(depth < 2 ? 4 : 3), using: &workload.random) {
                case 0: return .put(workload.put())
                case 1: return .deleteRange(workload.delete())
                case 2: return .range(workload.range(current: current, compacted: compacted))
                default: return .txn(workload.txn(current: current, compacted: compacted, depth: depth + 1))
                }
            }
        }
        let compares = (0..<Int.random(in: 0...2, using: &random)).map { _ in compare(current: current) }
        return TxnRequest(compare: compares, success: ops(&self), failure: ops(&self))
    }

    /// A command that passes the gRPC layer's checks (the store only ever applies those).
    mutating func command(current: Revision, compacted: Revision) -> KVCommand {
        while true {
            let command: KVCommand
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<30: command = .put(put())
            case 30..<40: command = .deleteRange(delete())
            case 40..<60: command = .txn(txn(current: current, compacted: compacted))
            case 60..<68: command = .range(range(current: current, compacted: compacted))
            case 68..<75: command = .compact(revision: int(max(compacted - 1, 0)...current + 1), physical: chance(50))
            case 75..<85: command = .leaseGrant(id: int(0...4), ttlSeconds: int(1...100))
            case 85..<92: command = .leaseRevoke(id: int(0...4))
            default: command = .leaseCheckpoint([LeaseCheckpoint(id: int(0...4), remainingTTLSeconds: int(0...50))])
            }
            if (try? KVValidation.check(command)) != nil { return command }
        }
    }
}

@Suite struct MVCCModelTests {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }

    @Test func randomWorkloadsMatchTheModel() throws {
        let seeds: [UInt64]
        if let seed = Self.environment["MVCC_SEED"].flatMap(UInt64.init) {
            seeds = [seed]
        } else {
            let count = Self.environment["MVCC_SEEDS"].flatMap(UInt64.init) ?? 50
            seeds = Array(1...count)
        }
        let operations = Self.environment["MVCC_OPS"].flatMap(Int.init) ?? 300
        for seed in seeds {
            if let failure = try Self.run(seed: seed, operations: operations) {
                Issue.record("""
                    seed=\(seed): \(failure)
                    replay: MVCC_SEED=\(seed) swift test --filter MVCCModel
                    """)
                return
            }
        }
    }

    /// Runs one seeded workload; returns a description of the first divergence, if any.
    static func run(seed: UInt64, operations: Int) throws -> String? {
        let scratch = try MVCCScratch()
        var workload = MVCCWorkload(random: SeededRandom(seed: seed))
        var model = MVCCReference()
        var store = try scratch.open()
        for step in 0..<operations {
            let roll = Int.random(in: 0..<100, using: &workload.random)
            if roll < 3 {
                store = try scratch.open()
                continue
            }
            if roll < 8 {
                // Physical compaction must not change any answer.
                let before = try store.hashKV().hash
                try store.compactStep(maxRows: Int(workload.int(1...20)))
                if try store.hashKV().hash != before { return "step \(step): compactStep changed hashKV" }
                continue
            }
            if roll < 18 {
                let request = workload.range(current: model.currentRevision, compacted: model.compactedRevision)
                let expected = Result { try model.range(request, readRevision: model.currentRevision) }.mapError { $0 as! KVError }
                let actual = Result { try store.range(request) }.mapError { $0 as! KVError }
                if expected != actual { return "step \(step): range \(request)\n  model: \(expected)\n  store: \(actual)" }
                continue
            }
            if roll < 22 {
                let start = workload.int(max(model.compactedRevision - 1, 0)...model.currentRevision + 1)
                let key = workload.key()
                let range = KeyRange(key: key, rangeEnd: workload.rangeEnd(for: key))
                let expected = Result { try model.events(from: start, range) }.mapError { $0 as! KVError }
                let actual = Result { try store.events(from: start, keyRange: range, prevKv: true) }.mapError { $0 as! KVError }
                if expected != actual { return "step \(step): events from \(start) in \(range)\n  model: \(expected)\n  store: \(actual)" }
                continue
            }
            // A batch of log entries, sometimes lost to a crash before commit and then delivered again.
            let batchSize = Int(workload.int(1...4))
            var commands: [KVCommand] = []
            for _ in 0..<batchSize {
                commands.append(workload.command(current: model.currentRevision + Int64(commands.count),
                                                 compacted: model.compactedRevision))
            }
            let first = store.appliedIndex + 1
            let batch = commands.enumerated().map { (index: first + LogIndex($0.offset), command: Optional($0.element)) }
            if workload.chance(10) {
                store.failurePoint = { if $0 == .beforeApplyCommit { throw CancellationError() } }
                do {
                    _ = try store.apply(batch)
                    return "step \(step): the failure point did not fire"
                } catch is CancellationError {}
                store = try scratch.open()
                if store.appliedIndex != first - 1 { return "step \(step): a rolled-back batch moved the applied index" }
            }
            let applied = try store.apply(batch)
            if applied.count != commands.count { return "step \(step): \(applied.count) results for \(commands.count) entries" }
            for (command, entry) in zip(commands, applied) {
                let expected = model.apply(command)
                if expected != entry.result {
                    return "step \(step): \(command)\n  model: \(expected)\n  store: \(entry.result)"
                }
            }
            if store.currentRevision != model.currentRevision || store.compactedRevision != model.compactedRevision {
                return "step \(step): revisions store \(store.currentRevision)/\(store.compactedRevision) model \(model.currentRevision)/\(model.compactedRevision)"
            }
            // Applying the same entries again is a no-op.
            if try !store.apply(batch).isEmpty { return "step \(step): re-delivered entries were applied again" }
        }
        let expected = try model.range(RangeRequest(key: [0], rangeEnd: [0]), readRevision: model.currentRevision)
        if try store.range(RangeRequest(key: [0], rangeEnd: [0])) != expected { return "final state differs" }
        if try store.leases().map(\.id) != model.leases.keys.sorted() { return "final leases differ" }
        return nil
    }
}
