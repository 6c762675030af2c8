extension MVCCStore {
    // MARK: Apply path

    /// Applies one log entry (`command` nil for an empty entry or a membership change). See ``apply(_:)``.
    @discardableResult
    public func apply(index: LogIndex, command: KVCommand?) throws -> AppliedEntry? {
        try apply([(index, command)]).first
    }

    /// Applies Raft entries: normal entries carry an encoded ``KVCommand`` (empty = the leader's no-op), other
    /// kinds only advance the applied index. An entry whose bytes do not decode fails with
    /// ``KVError/malformedCommand(_:)`` on every member alike.
    public func apply(entries: [Entry]) throws -> [AppliedEntry] {
        var decodeFailures: [LogIndex: KVError] = [:]
        let batch: [(index: LogIndex, command: KVCommand?)] = entries.map { entry in
            guard entry.kind == .normal, !entry.data.isEmpty else { return (entry.index, nil) }
            do throws(KVCodecError) {
                return (entry.index, try KVCommandCodec.decode(entry.data))
            } catch {
                decodeFailures[entry.index] = .malformedCommand(error.description)
                return (entry.index, nil)
            }
        }
        var applied = try apply(batch)
        for position in applied.indices {
            if let failure = decodeFailures[applied[position].index] { applied[position].result = .failure(failure) }
        }
        return applied
    }

    /// Applies a batch of consecutive log entries in one SQLite transaction, together with the new applied index.
    ///
    /// Entries at or below ``appliedIndex`` are skipped (they were applied before a restart), so delivering an
    /// entry again never applies it twice. Returns one ``AppliedEntry`` per entry actually applied. Request errors
    /// are results, not throws; a throw means the database failed, nothing of the batch is kept, and the caller
    /// must stop applying (and retry after a restart).
    public func apply(_ batch: [(index: LogIndex, command: KVCommand?)]) throws -> [AppliedEntry] {
        let pending = batch.filter { $0.index > appliedIndex }
        guard let last = pending.last else { return [] }
        for (offset, entry) in pending.enumerated() {
            precondition(entry.index == appliedIndex + 1 + LogIndex(offset),
                         "entries must follow applied index \(appliedIndex) without gaps; got \(entry.index) at \(offset)")
        }
        var applied: [AppliedEntry] = []
        applied.reserveCapacity(pending.count)
        let started = ContinuousClock.now
        do {
            try db.transaction {
                for entry in pending {
                    applied.append(try applyInSavepoint(index: entry.index, command: entry.command))
                }
                try setMeta("applied_index", Int64(last.index))
                try setMeta("current_rev", currentRevision)
                try setMeta("compact_rev", compactedRevision)
                try setMeta("alarm_nospace", isNoSpaceAlarmArmed ? 1 : 0)
                try failurePoint?(.beforeApplyCommit)
            }
        } catch {
            // The transaction rolled back: forget what the batch did to the in-memory counters.
            try loadState()
            throw error
        }
        appliedIndex = last.index
        commitObserver?(ContinuousClock.now - started)
        try failurePoint?(.afterApplyCommit)
        return applied
    }

    /// Applies one command inside its own savepoint, so that a request error leaves no partial write behind.
    private func applyInSavepoint(index: LogIndex, command: KVCommand?) throws -> AppliedEntry {
        guard let command else { return AppliedEntry(index: index, result: .success(.none)) }
        let saved = (currentRevision, compactedRevision, isNoSpaceAlarmArmed, authState)
        try db.run("SAVEPOINT apply_entry")
        beginWrite()
        do {
            let outcome = try dispatch(command, index: index)
            endWrite()
            try db.run("RELEASE apply_entry")
            let events = pendingEvents
            pendingEvents = []
            return AppliedEntry(index: index, result: outcome, events: events)
        } catch let error as KVError {
            try db.run("ROLLBACK TO apply_entry")
            try db.run("RELEASE apply_entry")
            (currentRevision, compactedRevision, isNoSpaceAlarmArmed, authState) = saved
            pendingEvents = []
            valuesBeforeWrite = [:]
            return AppliedEntry(index: index, result: .failure(error))
        }
    }

    /// Runs one command. A thrown ``KVError`` undoes the command; a returned failure keeps its writes (the quota
    /// case, where etcd applies the write and still reports the error).
    private func dispatch(_ command: KVCommand, index: LogIndex) throws -> Result<KVResponse, KVError> {
        switch command {
        case .authorized(let identity, let inner):
            try authorize(inner, identity: identity)
            return try dispatch(inner, index: index)

        case .auth(let change):
            return .success(.auth(try applyAuth(change, index: index)))

        case .range(let request):
            return .success(.range(try range(request, readRevision: currentRevision)))

        case .put(let request):
            if isNoSpaceAlarmArmed { throw KVError.noSpace }
            let fits = try quotaAvailable(costBytes: Self.cost(of: request))
            if request.lease != 0, try !leaseExists(request.lease) { throw KVError.leaseNotFound }
            let response = KVResponse.put(try put(request))
            return fits ? .success(response) : .failure(.noSpace)

        case .deleteRange(let request):
            return .success(.deleteRange(try deleteRange(request)))

        case .txn(let request):
            let cost = Self.cost(of: request)
            if isNoSpaceAlarmArmed && cost > 0 { throw KVError.noSpace }
            let fits = try quotaAvailable(costBytes: cost)
            let response = KVResponse.txn(try txn(request))
            return fits ? .success(response) : .failure(.noSpace)

        case .compact(let revision, _):
            try compact(revision)
            return .success(.compaction(CompactionResponse(revision: currentRevision)))

        case .leaseGrant(let id, let ttlSeconds):
            if isNoSpaceAlarmArmed { throw KVError.noSpace }
            let fits = try quotaAvailable(costBytes: Self.leaseOverheadBytes)
            if id == 0 { throw KVError.leaseNotFound }
            if ttlSeconds > KVValidation.maxLeaseTTLSeconds { throw KVError.leaseTTLTooLarge }
            if try leaseExists(id) { throw KVError.leaseExists }
            try withStatement("INSERT INTO lease (id, ttl, remaining_ttl) VALUES (?1, ?2, 0)") { statement in
                try statement.bind(1, id).bind(2, ttlSeconds).run()
            }
            let response = KVResponse.leaseGrant(LeaseGrantResponse(revision: currentRevision, id: id, ttlSeconds: ttlSeconds))
            return fits ? .success(response) : .failure(.noSpace)

        case .leaseRevoke(let id):
            guard try leaseExists(id) else { throw KVError.leaseNotFound }
            // Sorted, so that every member deletes in the same order and hashes alike.
            for key in try attachedKeys(id) { try writeDelete(key) }
            try withStatement("DELETE FROM lease WHERE id = ?1") { statement in try statement.bind(1, id).run() }
            return .success(.leaseRevoke(LeaseRevokeResponse(revision: beginRevision + (changeCount > 0 ? 1 : 0))))

        case .leaseCheckpoint(let checkpoints):
            for checkpoint in checkpoints {
                // Unknown leases are ignored, as in etcd: they may have been revoked since the leader measured.
                try withStatement("UPDATE lease SET remaining_ttl = ?2 WHERE id = ?1") { statement in
                    try statement.bind(1, checkpoint.id).bind(2, checkpoint.remainingTTLSeconds).run()
                }
            }
            return .success(.leaseCheckpoint(revision: currentRevision))

        case .alarm(let action):
            isNoSpaceAlarmArmed = action == .activate
            return .success(.alarm(AlarmResponse(revision: currentRevision, noSpaceArmed: isNoSpaceAlarmArmed)))

        // Member records are metadata beside the keyspace: no revision, no event.
        case .publishMember(let id, let name, let clientURLs):
            try withStatement("""
                INSERT INTO member (id, name, client_urls) VALUES (?1, ?2, ?3)
                ON CONFLICT (id) DO UPDATE SET name = excluded.name, client_urls = excluded.client_urls
                """) { statement in
                try statement.bind(1, Int64(bitPattern: id)).bind(2, name).bind(3, MemberRecord.joined(clientURLs)).run()
            }
            return .success(.none)

        case .setMemberPeerURLs(let id, let peerURLs):
            try withStatement("""
                INSERT INTO member (id, peer_urls) VALUES (?1, ?2)
                ON CONFLICT (id) DO UPDATE SET peer_urls = excluded.peer_urls
                """) { statement in
                try statement.bind(1, Int64(bitPattern: id)).bind(2, MemberRecord.joined(peerURLs)).run()
            }
            return .success(.none)

        case .forgetMember(let id):
            try withStatement("DELETE FROM member WHERE id = ?1") { statement in
                try statement.bind(1, Int64(bitPattern: id)).run()
            }
            // Remembered, as etcd does, so that the member can be told it was removed rather than unknown.
            try withStatement("INSERT OR IGNORE INTO removed_member (id) VALUES (?1)") { statement in
                try statement.bind(1, Int64(bitPattern: id)).run()
            }
            return .success(.none)
        }
    }

    /// Serves a transaction that only reads (``TxnRequest/isReadOnly``) from the local state, outside the log, as
    /// etcd serves read-only transactions like ranges. Takes no revision and writes nothing.
    public func readOnlyTxn(_ request: TxnRequest) throws -> TxnResponse {
        precondition(request.isReadOnly, "only read-only transactions are served outside the log")
        beginWrite()
        defer {
            pendingEvents = []
            valuesBeforeWrite = [:]
        }
        let response = try txn(request)
        precondition(changeCount == 0, "a read-only transaction changed the store")
        return response
    }

    static func cost(of request: PutRequest) -> Int {
        putOverheadBytes + request.key.count + request.value.count
    }

    /// etcd's `costTxn`: the larger branch's top-level puts (nested transactions count nothing, as in etcd).
    static func cost(of request: TxnRequest) -> Int {
        func branch(_ ops: [RequestOp]) -> Int {
            ops.reduce(0) { total, op in
                if case .put(let put) = op { return total + cost(of: put) }
                return total
            }
        }
        return max(branch(request.success), branch(request.failure))
    }

    // MARK: Write transaction state

    private func beginWrite() {
        beginRevision = currentRevision
        changeCount = 0
        pendingEvents = []
        valuesBeforeWrite = [:]
    }

    private func endWrite() {
        // Only a request that changed something takes a revision.
        if changeCount > 0 { currentRevision = beginRevision + 1 }
        valuesBeforeWrite = [:]
    }

    /// The revision reads inside the current write see: its own writes once there are any.
    private var writeReadRevision: Revision { beginRevision + (changeCount > 0 ? 1 : 0) }

    private func rememberValueBeforeWrite(_ key: [UInt8], _ value: KeyValue?) {
        if valuesBeforeWrite.index(forKey: key) == nil { valuesBeforeWrite[key] = .some(value) }
    }

    private func insertHistory(_ kv: KeyValue, sub: Int64, tombstone: Bool) throws {
        let sql = """
            INSERT INTO kv (rev, sub, key, value, create_rev, version, lease, tombstone)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
            """
        try withStatement(sql) { statement in
            try statement.bind(1, kv.modRevision).bind(2, sub).bind(3, kv.key).bind(4, kv.value)
                .bind(5, kv.createRevision).bind(6, kv.version).bind(7, kv.lease).bind(8, Int64(tombstone ? 1 : 0))
                .run()
        }
    }

    /// etcd's `storeTxnWrite.put`. The lease must exist (checked by the caller).
    private func writePut(_ key: [UInt8], value: [UInt8], lease: LeaseID, previous: KeyValue?) throws {
        let revision = beginRevision + 1
        let kv = KeyValue(key: key, createRevision: previous?.createRevision ?? revision, modRevision: revision,
                          version: (previous?.version ?? 0) + 1, value: value, lease: lease)
        try insertHistory(kv, sub: changeCount, tombstone: false)
        let sql = """
            INSERT OR REPLACE INTO latest (key, value, create_rev, mod_rev, version, lease)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6)
            """
        try withStatement(sql) { statement in
            try statement.bind(1, key).bind(2, value).bind(3, kv.createRevision).bind(4, revision)
                .bind(5, kv.version).bind(6, lease).run()
        }
        rememberValueBeforeWrite(key, previous)
        changeCount += 1
        pendingEvents.append(Event(kind: .put, kv: kv, prevKv: valuesBeforeWrite[key] ?? nil))
    }

    /// etcd's `storeTxnWrite.delete` of a live key; detaching its lease is implied by removing it from `latest`.
    private func writeDelete(_ key: [UInt8]) throws {
        let previous = try latestValue(key)
        precondition(previous != nil, "only live keys are deleted")
        let revision = beginRevision + 1
        try insertHistory(KeyValue(key: key, modRevision: revision), sub: changeCount, tombstone: true)
        try withStatement("DELETE FROM latest WHERE key = ?1") { statement in try statement.bind(1, key).run() }
        rememberValueBeforeWrite(key, previous)
        changeCount += 1
        pendingEvents.append(Event(kind: .delete, kv: KeyValue(key: key, modRevision: revision),
                                   prevKv: valuesBeforeWrite[key] ?? nil))
    }

    // MARK: Requests

    /// etcd's `applierV3backend.Put` inside the current write (lease existence is checked by the caller).
    private func put(_ request: PutRequest) throws -> PutResponse {
        let previous = try latestValue(request.key)
        if (request.ignoreValue || request.ignoreLease) && previous == nil { throw KVError.keyNotFound }
        let value = request.ignoreValue ? previous!.value : request.value
        let lease = request.ignoreLease ? previous!.lease : request.lease
        try writePut(request.key, value: value, lease: lease, previous: previous)
        return PutResponse(revision: beginRevision + 1, prevKv: request.prevKv ? previous : nil)
    }

    /// etcd's `applierV3backend.DeleteRange` inside the current write.
    private func deleteRange(_ request: DeleteRangeRequest) throws -> DeleteRangeResponse {
        let keyRange = request.keyRange
        let (live, _) = try fetch(keyRange, at: writeReadRevision, readRevision: writeReadRevision, limit: 0)
        for kv in live { try writeDelete(kv.key) }
        return DeleteRangeResponse(revision: writeReadRevision, deleted: Int64(live.count),
                                   prevKvs: request.prevKv ? live : [])
    }

    /// The branch every transaction level takes, decided before any write (etcd's `compareToPath`).
    private struct TxnPath {
        var succeeded: Bool
        /// One path per nested transaction of the taken branch, in order.
        var nested: [TxnPath]
    }

    private func path(_ request: TxnRequest) throws -> TxnPath {
        var succeeded = true
        for compare in request.compare where try !holds(compare) {
            succeeded = false
            break
        }
        var nested: [TxnPath] = []
        for case .txn(let inner) in succeeded ? request.success : request.failure {
            nested.append(try path(inner))
        }
        return TxnPath(succeeded: succeeded, nested: nested)
    }

    /// etcd's `applyCompare`: every key in the range must satisfy it; no key compares as an all-zero KeyValue,
    /// except that a value compare on no key fails.
    private func holds(_ compare: Compare) throws -> Bool {
        let (kvs, _) = try fetch(KeyRange(key: compare.key, rangeEnd: compare.rangeEnd),
                                 at: currentRevision, readRevision: currentRevision, limit: 0)
        if kvs.isEmpty {
            if case .value = compare.target { return false }
            return Self.satisfies(KeyValue(), compare)
        }
        return kvs.allSatisfy { Self.satisfies($0, compare) }
    }

    static func satisfies(_ kv: KeyValue, _ compare: Compare) -> Bool {
        let order: Int
        func sign(_ a: Int64, _ b: Int64) -> Int { a < b ? -1 : (a > b ? 1 : 0) }
        switch compare.target {
        case .version(let operand): order = sign(kv.version, operand)
        case .createRevision(let operand): order = sign(kv.createRevision, operand)
        case .modRevision(let operand): order = sign(kv.modRevision, operand)
        case .lease(let operand): order = sign(kv.lease, operand)
        case .value(let operand):
            order = kv.value == operand ? 0 : (kv.value.lexicographicallyPrecedes(operand) ? -1 : 1)
        }
        switch compare.result {
        case .equal: return order == 0
        case .notEqual: return order != 0
        case .greater: return order > 0
        case .less: return order < 0
        }
    }

    /// Visits the operations of the taken branches, depth first, in order.
    private func forEachOp(_ request: TxnRequest, _ path: TxnPath, _ body: (RequestOp) throws -> Void) rethrows {
        var nested = path.nested.makeIterator()
        for op in path.succeeded ? request.success : request.failure {
            if case .txn(let inner) = op {
                guard let innerPath = nested.next() else { preconditionFailure("one path per nested txn") }
                try forEachOp(inner, innerPath, body)
            } else {
                try body(op)
            }
        }
    }

    /// etcd's `applierV3backend.Txn`: decide the path, check it whole, then run it at one revision.
    private func txn(_ request: TxnRequest) throws -> TxnResponse {
        let txnPath = try path(request)
        if !request.isReadOnly {
            try forEachOp(request, txnPath) { op in
                guard case .put(let put) = op else { return }
                if put.ignoreValue || put.ignoreLease, try latestValue(put.key) == nil { throw KVError.keyNotFound }
                if put.lease != 0, try !leaseExists(put.lease) { throw KVError.leaseNotFound }
            }
        }
        try forEachOp(request, txnPath) { op in
            guard case .range(let range) = op else { return }
            // etcd compares against the compacted revision without first mapping ≤ 0 to "latest".
            if range.revision == 0 { return }
            if range.revision > currentRevision { throw KVError.futureRevision }
            if range.revision < compactedRevision { throw KVError.compacted }
        }
        let responses = try run(request, txnPath)
        return TxnResponse(revision: writeReadRevision, succeeded: txnPath.succeeded, responses: responses)
    }

    private func run(_ request: TxnRequest, _ path: TxnPath) throws -> [ResponseOp] {
        var nested = path.nested.makeIterator()
        var responses: [ResponseOp] = []
        for op in path.succeeded ? request.success : request.failure {
            switch op {
            case .range(let range):
                responses.append(.range(try self.range(range, readRevision: writeReadRevision)))
            case .put(let put):
                responses.append(.put(try self.put(put)))
            case .deleteRange(let delete):
                responses.append(.deleteRange(try deleteRange(delete)))
            case .txn(let inner):
                guard let innerPath = nested.next() else { preconditionFailure("one path per nested txn") }
                let innerResponses = try run(inner, innerPath)
                // etcd leaves a nested response's header revision unset.
                responses.append(.txn(TxnResponse(revision: 0, succeeded: innerPath.succeeded, responses: innerResponses)))
            }
        }
        return responses
    }

    // MARK: Compaction

    /// Records a compaction at `revision`: reads below it fail from now on, and ``compactStep(maxRows:)`` removes
    /// the superseded history physically, resuming after a restart.
    private func compact(_ revision: Revision) throws {
        if revision <= compactedRevision { throw KVError.compacted }
        if revision > currentRevision { throw KVError.futureRevision }
        compactedRevision = revision
        try setMeta("compact_target", revision)
        // A later target can supersede rows an earlier pass kept, so the scan starts over.
        try setMeta("compact_cursor_rev", 0)
        try setMeta("compact_cursor_sub", -1)
    }

    /// True while a recorded compaction has not yet removed all superseded history.
    public var isCompactionPending: Bool {
        get throws { try meta("compact_done") < meta("compact_target") }
    }

    /// Removes up to `maxRows` rows of history superseded at the compaction target, in one short transaction.
    /// Returns true once nothing is left to remove. Results of reads are the same before, during and after.
    ///
    /// Below the target, a row goes when a newer row of its key exists at or below the target, or when it is a
    /// tombstone that is the key's last word. Rows at the target itself all stay, so a watch may still start there.
    @discardableResult
    public func compactStep(maxRows: Int = 10_000) throws -> Bool {
        precondition(maxRows > 0, "a compaction step must make progress")
        let target = try meta("compact_target")
        if try meta("compact_done") >= target { return true }
        return try db.transaction {
            var cursor = (try meta("compact_cursor_rev"), try meta("compact_cursor_sub"))
            var scanned = 0
            var doomed: [(Int64, Int64)] = []
            let sql = """
                SELECT rev, sub, key, tombstone FROM kv WHERE (rev, sub) > (?1, ?2) AND rev < ?3
                ORDER BY rev, sub LIMIT ?4
                """
            var candidates: [(Int64, Int64, [UInt8], Bool)] = []
            try withStatement(sql) { statement in
                statement.bind(1, cursor.0).bind(2, cursor.1).bind(3, target).bind(4, Int64(maxRows))
                while try statement.step() {
                    candidates.append((statement.int64(0), statement.int64(1), statement.bytes(2), statement.int64(3) != 0))
                }
            }
            for (revision, sub, key, tombstone) in candidates {
                scanned += 1
                cursor = (revision, sub)
                let superseded = try withStatement(
                    "SELECT 1 FROM kv WHERE key = ?1 AND rev <= ?2 AND (rev, sub) > (?3, ?4) LIMIT 1"
                ) { statement in
                    statement.bind(1, key).bind(2, target).bind(3, revision).bind(4, sub)
                    return try statement.step()
                }
                if superseded || tombstone { doomed.append((revision, sub)) }
            }
            for (revision, sub) in doomed {
                try withStatement("DELETE FROM kv WHERE rev = ?1 AND sub = ?2") { statement in
                    try statement.bind(1, revision).bind(2, sub).run()
                }
            }
            try setMeta("compact_cursor_rev", cursor.0)
            try setMeta("compact_cursor_sub", cursor.1)
            let finished = scanned < maxRows
            if finished { try setMeta("compact_done", target) }
            try failurePoint?(.beforeCompactionCommit)
            return finished
        }
    }

    /// Runs ``compactStep(maxRows:)`` until the recorded compaction is complete.
    public func finishCompaction(batchRows: Int = 10_000) throws {
        while try !compactStep(maxRows: batchRows) {}
    }
}
