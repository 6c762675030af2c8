import HistoryCheck

/// Hand-written histories, with times in milliseconds: `put(1, "x", "a", 0...10, revision: 2)` is client 1 putting
/// x=a, invoked at 0 ms and acknowledged at 10 ms with revision 2.
struct HistoryBuilder {
    var history = History()

    private mutating func add(_ client: Int, _ call: Call, _ time: ClosedRange<UInt64>, _ outcome: Outcome) {
        history.record(client: client, call, invokedAt: time.lowerBound * 1_000_000,
                       completedAt: time.upperBound * 1_000_000, outcome)
    }

    mutating func put(_ client: Int, _ key: String, _ value: String, _ time: ClosedRange<UInt64>, revision: Revision,
                      previous: PreviousValue = .notRequested) {
        add(client, .put(key: key, value: value), time, .ok(.put(revision: revision, previous: previous)))
    }

    mutating func put(_ client: Int, _ key: String, _ value: String, _ time: ClosedRange<UInt64>, _ outcome: Outcome) {
        add(client, .put(key: key, value: value), time, outcome)
    }

    mutating func get(_ client: Int, _ key: String, _ time: ClosedRange<UInt64>, value: String?, modRevision: Revision,
                      at header: Revision) {
        add(client, .get(key: key), time, .ok(.get(value: value, modRevision: modRevision, headerRevision: header)))
    }

    mutating func delete(_ client: Int, _ key: String, _ time: ClosedRange<UInt64>, deleted: Int, revision: Revision) {
        add(client, .delete(key: key), time, .ok(.delete(deleted: deleted, revision: revision)))
    }

    mutating func delete(_ client: Int, _ key: String, _ time: ClosedRange<UInt64>, _ outcome: Outcome) {
        add(client, .delete(key: key), time, outcome)
    }

    mutating func compareAndPut(_ client: Int, _ key: String, ifModRevision expected: Revision, _ value: String,
                                _ time: ClosedRange<UInt64>, succeeded: Bool, revision: Revision) {
        add(client, .compareAndPut(key: key, expectedModRevision: expected, value: value), time,
            .ok(.compareAndPut(succeeded: succeeded, revision: revision)))
    }

    mutating func compareAndPut(_ client: Int, _ key: String, ifModRevision expected: Revision, _ value: String,
                                _ time: ClosedRange<UInt64>, _ outcome: Outcome) {
        add(client, .compareAndPut(key: key, expectedModRevision: expected, value: value), time, outcome)
    }

    func check(stepBudgetPerKey: Int = 100_000) -> LinearizabilityChecker.Report {
        LinearizabilityChecker(stepBudgetPerKey: stepBudgetPerKey).check(history)
    }
}
