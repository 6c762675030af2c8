/// A history of client operations on an etcd-like key-value store, as observed by the clients.
///
/// Keys and values are strings (the harness that records a history turns etcd's bytes into strings); revisions are
/// etcd's global store revisions. Times are a monotonic clock in nanoseconds, shared by every client of one history.
public typealias Revision = Int64

/// What a client asked for. Each call touches exactly one key, so one acknowledged write owns one revision.
public enum Call: Hashable, Sendable {
    /// `Range(key)`: the single key.
    case get(key: String)
    /// `Put(key, value)`.
    case put(key: String, value: String)
    /// `DeleteRange(key)`: the single key.
    case delete(key: String)
    /// `Txn(compare: [mod_revision(key) == expectedModRevision], success: [Put(key, value)], failure: [])`.
    /// `expectedModRevision == 0` means "the key is absent", as in etcd (a missing key compares as all zeros).
    case compareAndPut(key: String, expectedModRevision: Revision, value: String)

    public var key: String {
        switch self {
        case .get(let key), .put(let key, _), .delete(let key), .compareAndPut(let key, _, _): key
        }
    }

    /// Whether the call may change the store (an unknown outcome matters only for these).
    public var mayWrite: Bool {
        if case .get = self { return false }
        return true
    }
}

/// The previous value a put returned, when it asked for it (`prev_kv`).
public enum PreviousValue: Hashable, Sendable {
    case notRequested
    case absent
    case value(String)
}

/// What the store answered to a call that succeeded.
public enum Reply: Hashable, Sendable {
    /// `value == nil` means the key was absent; then etcd reports no kv, which we record as `modRevision == 0`.
    /// `headerRevision` is the store revision the read was served at.
    case get(value: String?, modRevision: Revision, headerRevision: Revision)
    /// `revision` is the header revision: the revision this put created.
    case put(revision: Revision, previous: PreviousValue)
    /// `revision` is the header revision: the deletion's own revision when `deleted == 1`, otherwise the store
    /// revision at the time (a delete of an absent key creates no revision).
    case delete(deleted: Int, revision: Revision)
    /// `revision` is the header revision: the put's revision when `succeeded`, otherwise the store revision.
    case compareAndPut(succeeded: Bool, revision: Revision)

    /// The revision the reply reports: the one it created, or the store revision it observed.
    public var revision: Revision {
        switch self {
        case .get(_, _, let header): header
        case .put(let revision, _), .delete(_, let revision), .compareAndPut(_, let revision): revision
        }
    }

    /// Whether this reply acknowledges a write that created a new store revision.
    public var createdRevision: Bool {
        switch self {
        case .get: false
        case .put: true
        case .delete(let deleted, _): deleted > 0
        case .compareAndPut(let succeeded, _): succeeded
        }
    }
}

/// How a call ended, as far as the client knows.
public enum Outcome: Hashable, Sendable {
    /// The store answered.
    case ok(Reply)
    /// The store definitely did not apply the call (e.g. etcd rejected it before proposing it).
    case failed
    /// Timeout, connection lost, leader changed mid-request: the call may or may not have taken effect, at any
    /// point after its invocation (possibly after the client gave up).
    case unknown
}

/// One call by one client, with the times the client sent it and saw its end.
public struct Operation: Hashable, Sendable, CustomStringConvertible {
    /// Position in the history; used only to name operations in explanations.
    public var id: Int
    public var client: Int
    public var call: Call
    public var invokedAtNanoseconds: UInt64
    /// When the client saw the reply, or gave up (for `.unknown`, the effect may come later than this).
    public var completedAtNanoseconds: UInt64
    public var outcome: Outcome

    public init(id: Int, client: Int, call: Call, invokedAtNanoseconds: UInt64, completedAtNanoseconds: UInt64,
                outcome: Outcome) {
        precondition(invokedAtNanoseconds <= completedAtNanoseconds, "op \(id) completes before it is invoked")
        if case .ok(let reply) = outcome {
            switch (call, reply) {
            case (.get, .get), (.put, .put), (.delete, .delete), (.compareAndPut, .compareAndPut): break
            default: preconditionFailure("op \(id): reply \(reply) does not answer call \(call)")
            }
        }
        self.id = id
        self.client = client
        self.call = call
        self.invokedAtNanoseconds = invokedAtNanoseconds
        self.completedAtNanoseconds = completedAtNanoseconds
        self.outcome = outcome
    }

    /// The reply, when the store answered.
    public var reply: Reply? {
        if case .ok(let reply) = outcome { return reply }
        return nil
    }

    /// The revision of the write this operation is known to have committed, if any.
    public var acknowledgedWriteRevision: Revision? {
        guard let reply, reply.createdRevision else { return nil }
        return reply.revision
    }

    public var description: String {
        let callText: String
        switch call {
        case .get(let key): callText = "get(\(key))"
        case .put(let key, let value): callText = "put(\(key), \(value.debugDescription))"
        case .delete(let key): callText = "delete(\(key))"
        case .compareAndPut(let key, let expected, let value):
            callText = "if mod_revision(\(key)) == \(expected) then put(\(key), \(value.debugDescription))"
        }
        let outcomeText: String
        switch outcome {
        case .failed: outcomeText = "failed"
        case .unknown: outcomeText = "unknown outcome"
        case .ok(let reply):
            switch reply {
            case .get(let value, let mod, let header):
                outcomeText = "\(value.map(\.debugDescription) ?? "absent") mod_revision \(mod) at revision \(header)"
            case .put(let revision, let previous):
                switch previous {
                case .notRequested: outcomeText = "revision \(revision)"
                case .absent: outcomeText = "revision \(revision), previously absent"
                case .value(let value): outcomeText = "revision \(revision), previously \(value.debugDescription)"
                }
            case .delete(let deleted, let revision): outcomeText = "deleted \(deleted) at revision \(revision)"
            case .compareAndPut(let succeeded, let revision):
                outcomeText = "\(succeeded ? "succeeded" : "compare false") at revision \(revision)"
            }
        }
        let interval = "[\(Self.milliseconds(invokedAtNanoseconds)), \(Self.milliseconds(completedAtNanoseconds))] ms"
        return "op \(id) client \(client) \(interval): \(callText) → \(outcomeText)"
    }

    private static func milliseconds(_ nanoseconds: UInt64) -> String {
        let tenths = nanoseconds / 100_000
        return "\(tenths / 10).\(tenths % 10)"
    }
}

/// Operations in the order they were recorded (any order is accepted; the checkers sort by time).
public struct History: Sendable {
    public private(set) var operations: [Operation] = []

    public init() {}

    public init(_ operations: [Operation]) {
        for operation in operations { append(operation) }
    }

    /// Appends an operation, renumbering it to its position so explanations name operations uniquely.
    public mutating func append(_ operation: Operation) {
        var numbered = operation
        numbered.id = operations.count
        operations.append(numbered)
    }

    /// Appends a call and its outcome; returns the operation's id.
    @discardableResult
    public mutating func record(client: Int, _ call: Call, invokedAt: UInt64, completedAt: UInt64,
                                _ outcome: Outcome) -> Int {
        append(Operation(id: operations.count, client: client, call: call, invokedAtNanoseconds: invokedAt,
                         completedAtNanoseconds: completedAt, outcome: outcome))
        return operations.count - 1
    }
}
