import EtcdAPI
import Foundation
import GRPCCore
import Synchronization

// clientv3/concurrency for lock and elect: a session (a lease kept alive), a mutex and an election, each the same
// requests as etcd's recipes so that our lockers and electors interoperate with etcd's.

/// Set by the SIGINT/SIGTERM handler.
private let interruptFlag = Atomic<Bool>(false)

/// SIGINT and SIGTERM as an event, as etcdctl's signal.Notify: once installed they no longer end the process.
/// A handler rather than SIG_IGN, so that a command run by `lock` gets the default dispositions back at exec.
final class Interrupts: Sendable {
    private init() {}

    /// Installs the handlers; call before the first request, as etcdctl does.
    static func install() -> Interrupts {
        for number in [SIGINT, SIGTERM] {
            signal(number) { _ in interruptFlag.store(true, ordering: .sequentiallyConsistent) }
        }
        return Interrupts()
    }

    var hasFired: Bool { interruptFlag.load(ordering: .sequentiallyConsistent) }

    /// Returns once a signal came; throws CancellationError when the waiting task is cancelled.
    func wait() async throws {
        while !hasFired { try await Task.sleep(for: .milliseconds(20)) }
    }
}

/// How a race between some work and a signal ended.
enum Raced<T: Sendable>: Sendable {
    case done(T)
    case interrupted
}

/// Runs `body` until it returns or a signal comes (then `body`'s task is cancelled), as etcdctl's context that a
/// signal cancels.
func untilInterrupted<T: Sendable>(_ interrupts: Interrupts, _ body: @Sendable @escaping () async throws -> T) async throws -> Raced<T> {
    try await withThrowingTaskGroup(of: Raced<T>.self) { group in
        group.addTask { .done(try await body()) }
        group.addTask {
            try await interrupts.wait()
            return .interrupted
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { return .interrupted }
        return first
    }
}

/// The error text clientv3 gives for a cancelled context.
struct ContextCanceled: Error {}

func concurrencyErrorText(_ error: Error) -> String {
    if error is ContextCanceled || error is CancellationError { return "context canceled" }
    if let failure = error as? RPCFailure { return failure.text }
    if let rpc = error as? RPCError {
        return rpc.code == .cancelled ? "context canceled" : RPCFailure(rpc).text
    }
    if let message = error as? ConcurrencyError { return message.text }
    return "\(error)"
}

struct ConcurrencyError: Error {
    var text: String
}

// MARK: session

/// concurrency.Session: a lease granted with `ttl` and kept alive until the process ends; `isDone` once the
/// keep-alive ends (the lease expired or was revoked, or no renewal came for a TTL).
final class ConcurrencySession: Sendable {
    let client: GRPCClient<Transport>
    let leaseID: Int64
    let ttl: Int64
    private let done = Atomic<Bool>(false)

    private init(client: GRPCClient<Transport>, leaseID: Int64, ttl: Int64) {
        self.client = client
        self.leaseID = leaseID
        self.ttl = ttl
    }

    static func grant(_ client: GRPCClient<Transport>, ttl: Int64) async throws -> ConcurrencySession {
        var request = Etcdserverpb_LeaseGrantRequest()
        request.ttl = ttl
        let response = try await Etcdserverpb_Lease.Client(wrapping: client).leaseGrant(request)
        if !response.error.isEmpty { throw ConcurrencyError(text: response.error) }
        return ConcurrencySession(client: client, leaseID: response.id, ttl: response.ttl > 0 ? response.ttl : ttl)
    }

    var isDone: Bool { done.load(ordering: .sequentiallyConsistent) }

    /// Session.Done as a wait: returns once the keep-alive has ended.
    func waitDone() async throws {
        while !isDone { try await Task.sleep(for: .milliseconds(50)) }
    }

    /// The keep-alive loop (clientv3 renews at a third of the TTL and resumes a broken stream until the lease's
    /// deadline); run it in a child task for the session's life.
    func keepAlive() async {
        let id = leaseID
        let lastRenewal = Mutex(Date())
        let currentTTL = Mutex(ttl)
        defer { done.store(true, ordering: .sequentiallyConsistent) }
        while !Task.isCancelled {
            let expired = Atomic<Bool>(false)
            do {
                try await Etcdserverpb_Lease.Client(wrapping: client).leaseKeepAlive(
                    requestProducer: { writer in
                        var request = Etcdserverpb_LeaseKeepAliveRequest()
                        request.id = id
                        while true {
                            try await writer.write(request)
                            let seconds = max(1, currentTTL.withLock { $0 }) * 1000 / 3
                            try await Task.sleep(for: .milliseconds(Int(seconds)))
                        }
                    },
                    onResponse: { response in
                        for try await message in response.messages {
                            if message.ttl <= 0 {
                                expired.store(true, ordering: .sequentiallyConsistent)
                                return
                            }
                            lastRenewal.withLock { $0 = Date() }
                            currentTTL.withLock { $0 = message.ttl }
                        }
                    })
            } catch {}
            if expired.load(ordering: .sequentiallyConsistent) { return }
            let deadline = lastRenewal.withLock { $0 }.addingTimeInterval(Double(currentTTL.withLock { $0 }))
            if Date() >= deadline { return }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }

    var kv: Etcdserverpb_KV.Client<Transport> { Etcdserverpb_KV.Client(wrapping: client) }
}

// MARK: requests

extension Etcdserverpb_RangeRequest {
    /// clientv3's Get(prefix, withTop(target, order)): the first key of the prefix by `target`.
    static func top(prefix: String, target: SortTarget, order: SortOrder, maxCreateRevision: Int64 = 0) -> Self {
        var request = Self()
        request.key = Data(prefix.utf8)
        request.rangeEnd = prefixRangeEnd(request.key)
        request.sortTarget = target
        request.sortOrder = order
        request.limit = 1
        request.maxCreateRevision = maxCreateRevision
        return request
    }

    static func single(_ key: String) -> Self {
        var request = Self()
        request.key = Data(key.utf8)
        return request
    }
}

func createRevisionIs(_ key: String, _ revision: Int64) -> Etcdserverpb_Compare {
    var compare = Etcdserverpb_Compare()
    compare.key = Data(key.utf8)
    compare.target = .create
    compare.result = .equal
    compare.createRevision = revision
    return compare
}

func putOp(_ key: String, _ value: String, lease: Int64) -> Etcdserverpb_RequestOp {
    var put = Etcdserverpb_PutRequest()
    put.key = Data(key.utf8)
    put.value = Data(value.utf8)
    put.lease = lease
    var op = Etcdserverpb_RequestOp()
    op.requestPut = put
    return op
}

func rangeOp(_ request: Etcdserverpb_RangeRequest) -> Etcdserverpb_RequestOp {
    var op = Etcdserverpb_RequestOp()
    op.requestRange = request
    return op
}

func deleteOp(_ key: String) -> Etcdserverpb_RequestOp {
    var delete = Etcdserverpb_DeleteRangeRequest()
    delete.key = Data(key.utf8)
    var op = Etcdserverpb_RequestOp()
    op.requestDeleteRange = delete
    return op
}

/// Watches `key` (with `rangeEnd`) from `revision`, giving each response to `handle` until it returns false.
/// A watch the server cancels throws its reason, as clientv3's WatchResponse.Err.
func watchUntil(_ client: GRPCClient<Transport>, key: String, rangeEnd: Data? = nil, revision: Int64,
                _ handle: @Sendable @escaping (Etcdserverpb_WatchResponse) async throws -> Bool) async throws {
    var create = Etcdserverpb_WatchCreateRequest()
    create.key = Data(key.utf8)
    if let rangeEnd { create.rangeEnd = rangeEnd }
    create.startRevision = revision
    var request = Etcdserverpb_WatchRequest()
    request.createRequest = create
    let first = request
    try await Etcdserverpb_Watch.Client(wrapping: client).watch(
        requestProducer: { writer in
            try await writer.write(first)
            while !Task.isCancelled { try await Task.sleep(for: .seconds(3600)) }
        },
        onResponse: { response in
            for try await message in response.messages {
                if message.canceled {
                    if message.compactRevision > 0 {
                        throw ConcurrencyError(text: "etcdserver: mvcc: required revision has been compacted")
                    }
                    throw ConcurrencyError(text: message.cancelReason.isEmpty ? "watch canceled" : message.cancelReason)
                }
                if message.created { continue }
                if try await !handle(message) { return }
            }
            throw ConcurrencyError(text: "lost watcher waiting for delete")
        })
}

/// concurrency.waitDelete: until `key` is deleted at or after `revision`.
func waitDelete(_ client: GRPCClient<Transport>, key: String, revision: Int64) async throws {
    try await watchUntil(client, key: key, revision: revision) { message in
        !message.events.contains { $0.type == .delete }
    }
}

/// concurrency.waitDeletes: until no key of `prefix` was created at or below `maxCreateRevision`.
func waitDeletes(_ client: GRPCClient<Transport>, prefix: String, maxCreateRevision: Int64) async throws -> Etcdserverpb_ResponseHeader {
    let kv = Etcdserverpb_KV.Client(wrapping: client)
    while true {
        try Task.checkCancellation()
        let response = try await kv.range(.top(prefix: prefix, target: .create, order: .descend, maxCreateRevision: maxCreateRevision))
        guard let last = response.kvs.first else { return response.header }
        try await waitDelete(client, key: String(decoding: last.key, as: UTF8.self), revision: response.header.revision)
    }
}

// MARK: mutex

/// concurrency.Mutex: the key `<prefix>/<lease in hex>`, created in a txn if absent; the holder is the key of
/// the prefix with the lowest create revision.
final class LockMutex: Sendable {
    let session: ConcurrencySession
    let prefix: String
    private struct State {
        var key = ""
        var revision: Int64 = -1
        var header: Etcdserverpb_ResponseHeader?
    }
    private let state = Mutex(State())

    init(session: ConcurrencySession, name: String) {
        self.session = session
        self.prefix = name + "/"
    }

    var key: String { state.withLock { $0.key } }
    var header: Etcdserverpb_ResponseHeader? { state.withLock { $0.header } }

    func lock() async throws {
        let key = prefix + String(session.leaseID, radix: 16)
        state.withLock { $0.key = key }
        var txn = Etcdserverpb_TxnRequest()
        txn.compare = [createRevisionIs(key, 0)]
        let owner = rangeOp(.top(prefix: prefix, target: .create, order: .ascend))
        txn.success = [putOp(key, "", lease: session.leaseID), owner]
        txn.failure = [rangeOp(.single(key)), owner]
        let response = try await session.kv.txn(txn)
        var revision = response.header.revision
        if !response.succeeded, let kv = response.responses.first?.responseRange.kvs.first {
            revision = kv.createRevision
        }
        state.withLock { $0.revision = revision }
        let ownerKVs = response.responses.count > 1 ? response.responses[1].responseRange.kvs : []
        if ownerKVs.isEmpty || ownerKVs[0].createRevision == revision {
            state.withLock { $0.header = response.header }
            return
        }
        let header = try await waitDeletes(session.client, prefix: prefix, maxCreateRevision: revision - 1)
        state.withLock { $0.header = header }
    }

    func unlock() async throws {
        var request = Etcdserverpb_DeleteRangeRequest()
        request.key = Data(key.utf8)
        _ = try await session.kv.deleteRange(request)
        state.withLock {
            $0.key = "\0"
            $0.revision = -1
        }
    }
}

// MARK: election

/// concurrency.Election on the prefix `<name>/`.
final class Election: Sendable {
    let session: ConcurrencySession
    let prefix: String
    private struct State {
        var leaderKey = ""
        var leaderRevision: Int64 = 0
        var isLeader = false
    }
    private let state = Mutex(State())

    init(session: ConcurrencySession, name: String) {
        self.session = session
        self.prefix = name + "/"
    }

    var key: String { state.withLock { $0.leaderKey } }

    /// Campaign: put the proposal under our lease's key, then wait until every older candidate is gone.
    /// Cancelled, it resigns; another failure forgets leadership.
    func campaign(_ value: String) async throws {
        let key = prefix + String(session.leaseID, radix: 16)
        var txn = Etcdserverpb_TxnRequest()
        txn.compare = [createRevisionIs(key, 0)]
        txn.success = [putOp(key, value, lease: session.leaseID)]
        txn.failure = [rangeOp(.single(key))]
        let response = try await session.kv.txn(txn)
        state.withLock { $0 = State(leaderKey: key, leaderRevision: response.header.revision, isLeader: true) }
        if !response.succeeded, let kv = response.responses.first?.responseRange.kvs.first {
            state.withLock { $0.leaderRevision = kv.createRevision }
            if kv.value != Data(value.utf8) {
                do {
                    try await proclaim(value)
                } catch {
                    try? await resign()
                    throw error
                }
            }
        }
        do {
            _ = try await waitDeletes(session.client, prefix: prefix, maxCreateRevision: state.withLock { $0.leaderRevision } - 1)
        } catch {
            if Task.isCancelled || error is CancellationError {
                // Resign outside the cancelled task: the caller does it (see runElect).
                throw ContextCanceled()
            }
            state.withLock { $0.isLeader = false }
            throw error
        }
    }

    func proclaim(_ value: String) async throws {
        let (key, revision, isLeader) = state.withLock { ($0.leaderKey, $0.leaderRevision, $0.isLeader) }
        guard isLeader else { throw ConcurrencyError(text: "election: not leader") }
        var txn = Etcdserverpb_TxnRequest()
        txn.compare = [createRevisionIs(key, revision)]
        txn.success = [putOp(key, value, lease: session.leaseID)]
        let response = try await session.kv.txn(txn)
        if !response.succeeded {
            state.withLock { $0.leaderKey = "" }
            throw ConcurrencyError(text: "election: not leader")
        }
    }

    func resign() async throws {
        let (key, revision, isLeader) = state.withLock { ($0.leaderKey, $0.leaderRevision, $0.isLeader) }
        guard isLeader else { return }
        var txn = Etcdserverpb_TxnRequest()
        txn.compare = [createRevisionIs(key, revision)]
        txn.success = [deleteOp(key)]
        defer { state.withLock { $0.leaderKey = ""; $0.isLeader = false } }
        _ = try await session.kv.txn(txn)
    }

    /// Observe: each leader's proposal, as the GetResponse clientv3 hands on (its header and count included),
    /// until a request fails.
    func observe(_ deliver: @Sendable @escaping (Etcdserverpb_RangeResponse) -> Void) async {
        let client = session.client
        let prefix = self.prefix
        let prefixEnd = prefixRangeEnd(Data(prefix.utf8))
        while !Task.isCancelled {
            guard let response = try? await session.kv.range(.top(prefix: prefix, target: .create, order: .ascend)) else { return }
            var header = response.header
            var leader: Mvccpb_KeyValue
            if let first = response.kvs.first {
                leader = first
            } else {
                let found = Mutex<(Etcdserverpb_ResponseHeader, Mvccpb_KeyValue)?>(nil)
                do {
                    try await watchUntil(client, key: prefix, rangeEnd: prefixEnd, revision: response.header.revision) { message in
                        // Only a put elects; a delete would make the loop spin.
                        guard let put = message.events.first(where: { $0.type == .put }) else { return true }
                        var header = message.header
                        header.revision = put.kv.modRevision
                        found.withLock { $0 = (header, put.kv) }
                        return false
                    }
                } catch { return }
                guard let (watchHeader, kv) = found.withLock({ $0 }) else { return }
                header = watchHeader
                leader = kv
            }
            var first = Etcdserverpb_RangeResponse()
            first.header = header
            first.kvs = [leader]
            deliver(first)
            // Later proposals reuse the Get's response (its count and more), as clientv3 does.
            let changes = Mutex(response)
            do {
                try await watchUntil(client, key: String(decoding: leader.key, as: UTF8.self), revision: header.revision + 1) { message in
                    for event in message.events {
                        if event.type == .delete { return false }
                        let update = changes.withLock {
                            $0.header = message.header
                            $0.kvs = [event.kv]
                            return $0
                        }
                        deliver(update)
                    }
                    return true
                }
            } catch { return }
        }
    }
}
