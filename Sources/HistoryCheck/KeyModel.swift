/// The sequential specification of one key, as far as operations on that key alone can tell.
///
/// Revisions are global in etcd, so one key's operations do not know every revision: a write whose outcome is
/// unknown leaves the key's mod revision known only as "greater than the last revision we knew" until a later
/// read reveals it. `lastChangeRevision` is therefore exact or a strict lower bound, as `revisionIsExact` says.
struct KeyState: Hashable, Sendable, CustomStringConvertible {
    /// nil: the key is absent.
    var value: String?
    /// The revision of the last put or delete of the key (0: never changed), or a strict lower bound of it.
    var lastChangeRevision: Revision
    var revisionIsExact: Bool

    static let initial = KeyState(value: nil, lastChangeRevision: 0, revisionIsExact: true)

    var description: String {
        let revision = revisionIsExact ? "\(lastChangeRevision)" : "> \(lastChangeRevision)"
        return "\(value.map(\.debugDescription) ?? "absent") (last change at revision \(revision))"
    }

    /// Whether a revision observed after this state (a header revision, or a new write's revision) is
    /// consistent with it: at least the last change, strictly above when `strictlyAfter`. With an inexact
    /// revision both are "above the lower bound" (we cannot tell by how much).
    func admits(laterRevision revision: Revision, strictlyAfter: Bool) -> Bool {
        if !revisionIsExact || strictlyAfter { return revision > lastChangeRevision }
        return revision >= lastChangeRevision
    }

    /// Whether `mod_revision(key) == expected` can hold, must hold, or cannot hold in this state.
    func compare(modRevisionEquals expected: Revision) -> Comparison {
        if value == nil { return expected == 0 ? .true : .false }
        if revisionIsExact { return expected == lastChangeRevision ? .true : .false }
        return expected > lastChangeRevision ? .unknown : .false
    }

    enum Comparison { case `true`, `false`, unknown }
}

/// What linearizing one operation at one point does to the key: the possible next states, or why it cannot go here.
enum Transition {
    case next([KeyState])
    case rejected(String)
}

extension KeyState {
    /// Applies `operation` (on this key) at this point of a candidate linearization.
    ///
    /// Acknowledged operations have one result that must match; operations with unknown outcome take effect here
    /// (their "never took effect" branch is the search linearizing them after everything else, which their
    /// unbounded completion time always allows).
    func apply(_ operation: Operation) -> Transition {
        switch (operation.call, operation.outcome) {
        case (_, .failed):
            preconditionFailure("failed operations are removed before the search: op \(operation.id)")

        case (.get, .unknown):
            preconditionFailure("reads with unknown outcome are removed before the search: op \(operation.id)")

        case (.get, .ok(.get(let value, let modRevision, let header))):
            guard value == self.value else {
                return .rejected("reads \(value.map(\.debugDescription) ?? "absent"), but the key is \(self)")
            }
            guard modRevision <= header else {
                return .rejected("mod revision \(modRevision) is after the read's revision \(header)")
            }
            guard admits(laterRevision: header, strictlyAfter: false) else {
                return .rejected("read at revision \(header), before the key's last change: the key is \(self)")
            }
            if value == nil {
                guard modRevision == 0 else { return .rejected("absent key with mod revision \(modRevision)") }
                return .next([self])
            }
            if revisionIsExact {
                guard modRevision == lastChangeRevision else {
                    return .rejected("mod revision \(modRevision), but the key is \(self)")
                }
                return .next([self])
            }
            guard modRevision > lastChangeRevision else {
                return .rejected("mod revision \(modRevision), but the key is \(self)")
            }
            // The read reveals the revision of the unknown-outcome write that set this value.
            return .next([KeyState(value: value, lastChangeRevision: modRevision, revisionIsExact: true)])

        case (.put(_, let value), .ok(.put(let revision, let previous))):
            guard admits(laterRevision: revision, strictlyAfter: true) else {
                return .rejected("writes revision \(revision), not after the key's last change: the key is \(self)")
            }
            switch previous {
            case .notRequested: break
            case .absent where self.value != nil, .value where self.value == nil:
                return .rejected("returned previous value \(previous), but the key was \(self)")
            case .value(let previousValue) where previousValue != self.value:
                return .rejected("returned previous value \(previousValue.debugDescription), but the key was \(self)")
            default: break
            }
            return .next([KeyState(value: value, lastChangeRevision: revision, revisionIsExact: true)])

        case (.put(_, let value), .unknown):
            return .next([KeyState(value: value, lastChangeRevision: lastChangeRevision, revisionIsExact: false)])

        case (.delete, .ok(.delete(let deleted, let revision))):
            let expected = self.value == nil ? 0 : 1
            guard deleted == expected else {
                return .rejected("deleted \(deleted), but the key was \(self)")
            }
            guard admits(laterRevision: revision, strictlyAfter: deleted == 1) else {
                return .rejected("revision \(revision) is not after the key's last change: the key was \(self)")
            }
            if deleted == 0 { return .next([self]) }
            return .next([KeyState(value: nil, lastChangeRevision: revision, revisionIsExact: true)])

        case (.delete, .unknown):
            if value == nil { return .next([self]) }
            return .next([KeyState(value: nil, lastChangeRevision: lastChangeRevision, revisionIsExact: false)])

        case (.compareAndPut(_, let expected, let value), .ok(.compareAndPut(let succeeded, let revision))):
            let comparison = compare(modRevisionEquals: expected)
            if succeeded {
                guard comparison != .false else {
                    return .rejected("succeeded, but mod_revision == \(expected) is false: the key was \(self)")
                }
                guard admits(laterRevision: revision, strictlyAfter: true) else {
                    return .rejected("writes revision \(revision), not after the key's last change: the key was \(self)")
                }
                return .next([KeyState(value: value, lastChangeRevision: revision, revisionIsExact: true)])
            }
            guard comparison != .true else {
                return .rejected("compare false, but mod_revision == \(expected) holds: the key was \(self)")
            }
            guard admits(laterRevision: revision, strictlyAfter: false) else {
                return .rejected("answered at revision \(revision), before the key's last change: the key was \(self)")
            }
            return .next([self])

        case (.compareAndPut(_, let expected, let value), .unknown):
            let applied = KeyState(value: value, lastChangeRevision: max(lastChangeRevision, expected),
                                   revisionIsExact: false)
            switch compare(modRevisionEquals: expected) {
            case .true: return .next([applied])
            case .false: return .next([self])
            case .unknown: return .next([applied, self])
            }

        case (_, .ok(let reply)):
            preconditionFailure("op \(operation.id): reply \(reply) does not answer \(operation.call)")
        }
    }
}
