/// Checks a history of single-key operations against etcd's KV semantics.
///
/// Linearizability is compositional (Herlihy & Wing's locality, Porcupine's P-compositionality): a history is
/// linearizable when each object's sub-history is. In etcd the objects are not independent, because revisions are
/// global: a write's revision orders it against writes of *other* keys. So the check has two parts:
///
/// 1. Per key, a Wing & Gong search (`KeySearch`) against the key's sequential specification (`KeyState`): values,
///    presence, delete counts, compare-and-put outcomes, previous values, and the key's own revisions (each write
///    of the key has a higher revision than the one before it in the linearization; a read's mod revision is the
///    revision of the write it sees; a read's header revision is not before the key's last change).
/// 2. Across keys, `RevisionCheck`: acknowledged writes have distinct revisions; revisions never go back in real
///    time; a read returns the key's state at its header revision.
///
/// What this does not prove: that one total order exists for all keys at once that is also consistent with every
/// revision (e.g. two reads of different keys that each pass alone but imply contradictory orders through
/// revisions they do not share). Revision numbers make most such contradictions visible to part 2; the rest
/// would need a search over all keys together, which is exponentially larger.
///
/// Operations with outcome `.failed` did not happen and are ignored; reads with unknown outcome tell nothing and
/// are ignored; writes with unknown outcome may take effect at any point after their invocation, or never.
///
/// Ids must be unique within a history (`History` numbers operations as they are appended).
public struct LinearizabilityChecker: Sendable {
    /// Search steps allowed per key before the check gives up with `.tooLarge`.
    public var stepBudgetPerKey: Int

    public init(stepBudgetPerKey: Int = 2_000_000) {
        precondition(stepBudgetPerKey > 0, "a search needs at least one step")
        self.stepBudgetPerKey = stepBudgetPerKey
    }

    public struct Report: Sendable, CustomStringConvertible {
        public enum Verdict: Sendable, Equatable {
            case linearizable
            case violation
            /// Some key's search ran out of steps before deciding; nothing was found wrong elsewhere.
            case tooLarge
        }

        public var verdict: Verdict
        /// One explanation per problem found (per key, and per revision inconsistency).
        public var problems: [String]
        public var operationsChecked: Int
        public var keysChecked: Int
        public var searchSteps: Int

        public var description: String {
            var text = "\(verdict): \(operationsChecked) operations on \(keysChecked) keys, \(searchSteps) search steps"
            for problem in problems { text += "\n" + problem }
            return text
        }
    }

    public func check(_ history: History) -> Report {
        let relevant = history.operations.filter { operation in
            switch operation.outcome {
            case .failed: false
            case .unknown: operation.call.mayWrite
            case .ok: true
            }
        }
        var byKey: [String: [Operation]] = [:]
        for operation in relevant { byKey[operation.call.key, default: []].append(operation) }

        var problems: [String] = []
        var tooLarge: [String] = []
        var steps = 0
        for key in byKey.keys.sorted() {
            let operations = byKey[key]!
            // First without the unknown-outcome writes whose value no answer ever showed: "never took effect" is
            // always a legitimate choice for them, so success here is success. Only if that fails, all of them,
            // because an unseen write can still explain a delete count or a failed compare. The first pass keeps
            // searches small after a whole-cluster outage, when every client's writes end unknown at once.
            let unseen = Self.unseenUnknownWrites(operations)
            if !unseen.isEmpty {
                let first = KeySearch(key: key, operations: operations.filter { !unseen.contains($0.id) })
                    .run(stepBudget: stepBudgetPerKey)
                steps += first.steps
                if first.verdict == .linearizable { continue }
            }
            let result = KeySearch(key: key, operations: operations).run(stepBudget: stepBudgetPerKey)
            steps += result.steps
            switch result.verdict {
            case .linearizable: break
            case .violation: problems.append(result.explanation)
            case .tooLarge: tooLarge.append(result.explanation)
            }
        }
        problems += RevisionCheck.violations(in: relevant)

        let verdict: Report.Verdict = !problems.isEmpty ? .violation : (tooLarge.isEmpty ? .linearizable : .tooLarge)
        return Report(verdict: verdict, problems: problems + tooLarge, operationsChecked: relevant.count,
                      keysChecked: byKey.count, searchSteps: steps)
    }

    /// Ids of the unknown-outcome puts and compare-and-puts (on one key) whose value no acknowledged read or
    /// previous value returned.
    static func unseenUnknownWrites(_ operations: [Operation]) -> Set<Int> {
        var seenValues: Set<String> = []
        for operation in operations {
            switch operation.outcome {
            case .ok(.get(.some(let value), _, _)), .ok(.put(_, .value(let value))): seenValues.insert(value)
            default: break
            }
        }
        var unseen: Set<Int> = []
        for operation in operations where operation.outcome == .unknown {
            switch operation.call {
            case .put(_, let value), .compareAndPut(_, _, let value):
                if !seenValues.contains(value) { unseen.insert(operation.id) }
            case .get, .delete: break
            }
        }
        return unseen
    }
}
