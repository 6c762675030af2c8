/// The Wing & Gong search, with Lowe's memoisation as in Porcupine, over the operations on one key.
///
/// An operation may be linearized next exactly when no other operation still to be linearized completed before
/// it was invoked. Operations with unknown outcome never complete (their effect may come at any time after the
/// invocation), so they stay candidates until the search places them, possibly after everything else, which is
/// how "never took effect" is represented. The search is depth first; a configuration (set of linearized
/// operations, key state) that failed once is never explored again.
struct KeySearch {
    struct Result {
        enum Verdict: Equatable { case linearizable, violation, tooLarge }
        var verdict: Verdict
        var steps: Int
        /// For a violation: why the longest linearizable prefix cannot be extended.
        var explanation: String
    }

    let key: String
    /// Sorted by invocation time.
    let operations: [Operation]
    /// Completion time used by the search: `UInt64.max` for unknown outcomes.
    let deadlines: [UInt64]

    init(key: String, operations: [Operation]) {
        precondition(operations.allSatisfy { $0.call.key == key }, "operations on another key than \(key)")
        precondition(operations.allSatisfy { $0.outcome != .failed }, "failed operations are not searched")
        self.key = key
        self.operations = operations.sorted {
            ($0.invokedAtNanoseconds, $0.id) < ($1.invokedAtNanoseconds, $1.id)
        }
        deadlines = self.operations.map { $0.outcome == .unknown ? UInt64.max : $0.completedAtNanoseconds }
    }

    private struct Configuration: Hashable {
        var linearized: Bitset
        var state: KeyState
    }

    private struct Frame {
        var operation: Int
        var alternative: Int
        var previous: KeyState
    }

    func run(stepBudget: Int) -> Result {
        let count = operations.count
        var linearized = Bitset(count: count)
        var state = KeyState.initial
        var stack: [Frame] = []
        var seen: Set<Configuration> = []
        // The operations not yet placed, in invocation order and in deadline order, as dancing links: a step costs
        // the concurrency window, not the history's length. Removals are undone in reverse order (a stack).
        // Acknowledged operations are tried before unknown-outcome writes: those are optional (they may never have
        // taken effect), and placing them only when needed keeps the search near a valid order.
        let unknown = operations.map { $0.outcome == .unknown }
        var remainingKnown = LinkedSubset(count: count, order: operations.indices.filter { !unknown[$0] })
        var remainingUnknown = LinkedSubset(count: count, order: operations.indices.filter { unknown[$0] })
        var byDeadline = LinkedSubset(count: count, order: operations.indices.sorted { deadlines[$0] < deadlines[$1] })
        // Where to resume trying candidates at the current depth: (operation, alternative); nil: from the start.
        var resume: (operation: Int, alternative: Int)?
        var steps = 0
        var deepest: (frames: [Frame], state: KeyState) = ([], state)

        while stack.count < count {
            steps += 1
            if steps > stepBudget {
                return Result(verdict: .tooLarge, steps: steps,
                              explanation: "key \(key): \(count) operations, gave up after \(stepBudget) search steps "
                                  + "with \(deepest.frames.count) linearized at best")
            }
            let limit = byDeadline.first.map { deadlines[$0] } ?? UInt64.max
            var placed = false
            var candidate = resume?.operation ?? remainingKnown.first ?? remainingUnknown.first
            var alternative = resume?.alternative ?? 0
            while let index = candidate {
                if operations[index].invokedAtNanoseconds > limit {
                    // The rest of this list is invoked later still: go on with the unknown-outcome writes, or stop.
                    candidate = unknown[index] ? nil : remainingUnknown.first
                    alternative = 0
                    continue
                }
                if case .next(let successors) = state.apply(operations[index]) {
                    while alternative < successors.count {
                        let successor = successors[alternative]
                        var next = linearized
                        next.insert(index)
                        if seen.insert(Configuration(linearized: next, state: successor)).inserted {
                            stack.append(Frame(operation: index, alternative: alternative, previous: state))
                            linearized = next
                            state = successor
                            placed = true
                            break
                        }
                        alternative += 1
                    }
                }
                if placed {
                    if unknown[index] { remainingUnknown.remove(index) } else { remainingKnown.remove(index) }
                    byDeadline.remove(index)
                    break
                }
                candidate = unknown[index]
                    ? remainingUnknown.after(index) : (remainingKnown.after(index) ?? remainingUnknown.first)
                alternative = 0
            }
            if placed {
                resume = nil
                if stack.count > deepest.frames.count { deepest = (stack, state) }
                continue
            }
            guard let frame = stack.popLast() else {
                return Result(verdict: .violation, steps: steps, explanation: explain(deepest))
            }
            linearized.remove(frame.operation)
            if unknown[frame.operation] {
                remainingUnknown.restore(frame.operation)
            } else {
                remainingKnown.restore(frame.operation)
            }
            byDeadline.restore(frame.operation)
            state = frame.previous
            resume = (frame.operation, frame.alternative + 1)
        }
        return Result(verdict: .linearizable, steps: steps, explanation: "")
    }

    private func earliestDeadline(excluding linearized: Bitset) -> UInt64 {
        var earliest = UInt64.max
        for index in operations.indices where !linearized.contains(index) && deadlines[index] < earliest {
            earliest = deadlines[index]
        }
        return earliest
    }

    /// The witness: the end of the longest linearizable prefix found, and why no remaining candidate fits after it.
    private func explain(_ deepest: (frames: [Frame], state: KeyState)) -> String {
        var linearized = Bitset(count: operations.count)
        for frame in deepest.frames { linearized.insert(frame.operation) }
        var lines = ["key \(key): not linearizable (\(operations.count) operations; the longest linearizable "
            + "prefix has \(deepest.frames.count))"]
        // Unknown-outcome writes the search placed on its way say little about the contradiction: show the
        // acknowledged operations, and how many unknown writes are among them.
        let acknowledged = deepest.frames.filter { operations[$0.operation].outcome != .unknown }
        let shown = acknowledged.suffix(6)
        if !shown.isEmpty {
            let placedUnknown = deepest.frames.count - acknowledged.count
            lines.append("  end of the longest prefix (acknowledged operations, in linearization order"
                + (placedUnknown > 0 ? "; \(placedUnknown) unknown-outcome writes placed among all of them):" : "):"))
            for frame in shown { lines.append("    \(operations[frame.operation])") }
        }
        lines.append("  the key is then \(deepest.state); no operation can come next:")
        let limit = earliestDeadline(excluding: linearized)
        for index in operations.indices
        where !linearized.contains(index) && operations[index].invokedAtNanoseconds <= limit {
            let reason: String
            switch deepest.state.apply(operations[index]) {
            case .rejected(let why): reason = why
            case .next: reason = "fits here, but no linearization of the rest follows"
            }
            lines.append("    \(operations[index])\n      \(reason)")
        }
        if let blocking = operations.indices.first(where: { !linearized.contains($0) && deadlines[$0] == limit }) {
            lines.append("  (only operations invoked before op \(operations[blocking].id) completed can come next)")
        }
        return lines.joined(separator: "\n")
    }
}

/// Some of 0..<count kept in a fixed order, with Knuth's dancing links: removing an element and restoring it (in
/// reverse order of removal) are O(1), and iteration skips removed elements.
struct LinkedSubset {
    private var next: [Int]
    private var previous: [Int]
    /// The sentinel: `next[head]` is the first element, `previous[head]` the last.
    private let head: Int

    init(count: Int, order: [Int]) {
        head = count
        next = Array(repeating: head, count: count + 1)
        previous = Array(repeating: head, count: count + 1)
        var last = head
        for element in order {
            precondition(element >= 0 && element < count, "elements are 0..<count")
            next[last] = element
            previous[element] = last
            last = element
        }
        next[last] = head
        previous[head] = last
    }

    var first: Int? { next[head] == head ? nil : next[head] }

    func after(_ element: Int) -> Int? { next[element] == head ? nil : next[element] }

    mutating func remove(_ element: Int) {
        next[previous[element]] = next[element]
        previous[next[element]] = previous[element]
    }

    /// Undoes `remove(element)`; valid only while every removal after it has been undone already.
    mutating func restore(_ element: Int) {
        next[previous[element]] = element
        previous[next[element]] = element
    }
}

/// A fixed-size set of small integers.
struct Bitset: Hashable {
    private var words: [UInt64]

    init(count: Int) {
        words = Array(repeating: 0, count: (count + 63) / 64)
    }

    func contains(_ index: Int) -> Bool { words[index >> 6] & (1 << UInt64(index & 63)) != 0 }
    mutating func insert(_ index: Int) { words[index >> 6] |= 1 << UInt64(index & 63) }
    mutating func remove(_ index: Int) { words[index >> 6] &= ~(1 << UInt64(index & 63)) }
}
