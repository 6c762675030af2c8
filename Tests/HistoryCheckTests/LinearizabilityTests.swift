import HistoryCheck
import Testing

@Suite struct AcceptedHistoryTests {
    @Test func sequentialPutGetDelete() {
        var h = HistoryBuilder()
        h.get(1, "x", 0...1, value: nil, modRevision: 0, at: 1)
        h.put(1, "x", "a", 2...3, revision: 2, previous: .absent)
        h.get(2, "x", 4...5, value: "a", modRevision: 2, at: 2)
        h.put(2, "x", "b", 6...7, revision: 3, previous: .value("a"))
        h.delete(1, "x", 8...9, deleted: 1, revision: 4)
        h.delete(1, "x", 10...11, deleted: 0, revision: 4)
        h.get(2, "x", 12...13, value: nil, modRevision: 0, at: 4)
        let report = h.check()
        #expect(report.verdict == .linearizable, "\(report)")
        #expect(report.operationsChecked == 7)
    }

    /// Two overlapping puts; reads show b first, then a: only the order put(b), put(a) explains them, although
    /// put(a) was invoked first (a search trying invocation order must backtrack).
    @Test func concurrentPutsLinearizeInTheNonObviousOrder() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...100, revision: 3)
        h.put(2, "x", "b", 1...100, revision: 2)
        h.get(3, "x", 10...20, value: "b", modRevision: 2, at: 2)
        h.get(3, "x", 30...40, value: "a", modRevision: 3, at: 3)
        h.get(4, "x", 110...120, value: "a", modRevision: 3, at: 3)
        let report = h.check()
        #expect(report.verdict == .linearizable, "\(report)")
    }

    /// A read that overlaps a write may see either value; two overlapping readers may disagree as long as the one
    /// that sees the old value is not strictly after the one that sees the new value.
    @Test func overlappingReadsSeeEitherSideOfAWrite() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 2)
        h.put(1, "x", "b", 20...60, revision: 3)
        h.get(2, "x", 25...55, value: "b", modRevision: 3, at: 3)
        h.get(3, "x", 30...50, value: "a", modRevision: 2, at: 2)
        let report = h.check()
        #expect(report.verdict == .linearizable, "\(report)")
    }

    @Test func unknownOutcomeWriteThatTookEffectLaterThanTheClientGaveUp() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 2)
        h.put(2, "x", "b", 20...30, .unknown)
        h.get(3, "x", 40...50, value: "a", modRevision: 2, at: 2)
        // The read reveals the unknown write's revision; revision 3 went to another key meanwhile.
        h.put(3, "y", "other", 55...58, revision: 3)
        h.get(3, "x", 60...70, value: "b", modRevision: 4, at: 4)
        h.get(1, "x", 80...90, value: "b", modRevision: 4, at: 4)
        let report = h.check()
        #expect(report.verdict == .linearizable, "\(report)")
    }

    @Test func unknownOutcomeWritesThatNeverTookEffect() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 2)
        h.put(2, "x", "lost", 20...30, .unknown)
        h.delete(2, "x", 31...35, .unknown)
        h.compareAndPut(2, "x", ifModRevision: 2, "cas", 36...40, .unknown)
        h.put(2, "x", "refused", 41...45, .failed)
        h.get(3, "x", 100...110, value: "a", modRevision: 2, at: 2)
        let report = h.check()
        #expect(report.verdict == .linearizable, "\(report)")
        #expect(report.operationsChecked == 5, "the failed put is not checked")
    }

    /// A whole-cluster outage: every client's writes end unknown at once, all concurrent with everything after.
    /// Sixteen of them were never seen; the search must not have to try their subsets and orders.
    @Test func manyUnknownWritesAfterAnOutageStaySmall() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 2)
        for client in 0..<16 { h.put(client, "x", "lost\(client)", 20...30, .unknown) }
        h.put(20, "x", "seen", 20...30, .unknown)
        h.get(1, "x", 40...50, value: "a", modRevision: 2, at: 2)
        h.get(1, "x", 60...70, value: "seen", modRevision: 9, at: 9)
        h.delete(2, "x", 80...90, deleted: 1, revision: 12)
        let report = h.check(stepBudgetPerKey: 2_000)
        #expect(report.verdict == .linearizable, "\(report)")
    }

    /// An unknown-outcome put nobody read is still the only explanation of a delete that deleted something.
    @Test func unseenUnknownWriteExplainsADeleteCount() {
        var h = HistoryBuilder()
        h.put(1, "x", "unseen", 0...10, .unknown)
        h.delete(2, "x", 20...30, deleted: 1, revision: 3)
        h.get(2, "x", 40...50, value: nil, modRevision: 0, at: 3)
        let report = h.check()
        #expect(report.verdict == .linearizable, "\(report)")
    }

    @Test func compareAndPutRaces() {
        var h = HistoryBuilder()
        h.compareAndPut(1, "x", ifModRevision: 0, "created", 0...10, succeeded: true, revision: 2)
        // Two clients race to update revision 2: exactly one wins.
        h.compareAndPut(1, "x", ifModRevision: 2, "one", 20...40, succeeded: false, revision: 3)
        h.compareAndPut(2, "x", ifModRevision: 2, "two", 21...39, succeeded: true, revision: 3)
        h.compareAndPut(3, "x", ifModRevision: 0, "again", 45...50, succeeded: false, revision: 3)
        h.get(3, "x", 60...70, value: "two", modRevision: 3, at: 3)
        let report = h.check()
        #expect(report.verdict == .linearizable, "\(report)")
    }
}

@Suite struct RejectedHistoryTests {
    static func expectViolation(_ report: LinearizabilityChecker.Report, mentioning words: [String],
                                sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(report.verdict == .violation, "\(report)", sourceLocation: sourceLocation)
        let text = report.problems.joined(separator: "\n")
        for word in words {
            #expect(text.contains(word), "explanation lacks \(word.debugDescription):\n\(text)",
                    sourceLocation: sourceLocation)
        }
        print(report)
    }

    @Test func staleRead() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 2)
        h.put(1, "x", "b", 20...30, revision: 3)
        h.get(2, "x", 40...50, value: "a", modRevision: 2, at: 3)
        Self.expectViolation(h.check(), mentioning: ["key x", "stale read of x", "op 2 client 2"])
    }

    /// The stale read is only visible through revisions: the reader's header revision (2) is behind a write of
    /// another key that completed before the read began.
    @Test func staleReadAcrossKeys() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 2)
        h.put(1, "y", "b", 20...30, revision: 3)
        h.get(2, "x", 40...50, value: "a", modRevision: 2, at: 2)
        Self.expectViolation(h.check(), mentioning: ["revision goes back in real time", "op 1 ", "op 2 "])
    }

    @Test func lostAcknowledgedWrite() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 2)
        h.get(2, "x", 20...30, value: nil, modRevision: 0, at: 2)
        Self.expectViolation(h.check(), mentioning: ["key x", "reads absent", "\"a\""])
    }

    @Test func readOfAValueNeverWritten() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 2)
        h.put(3, "x", "maybe", 0...10, .unknown)
        h.get(2, "x", 20...30, value: "ghost", modRevision: 2, at: 2)
        Self.expectViolation(h.check(), mentioning: ["key x", "reads \"ghost\""])
    }

    @Test func revisionsGoBackInRealTime() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 5)
        h.put(2, "y", "b", 20...30, revision: 4)
        Self.expectViolation(h.check(), mentioning: ["revision goes back in real time"])
    }

    @Test func twoWritesWithOneRevision() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 2)
        h.put(2, "y", "b", 0...10, revision: 2)
        Self.expectViolation(h.check(), mentioning: ["two acknowledged writes have revision 2"])
    }

    @Test func compareAndPutSucceededThoughTheKeyHadChanged() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 2)
        h.put(1, "x", "b", 20...30, revision: 3)
        h.compareAndPut(2, "x", ifModRevision: 2, "c", 40...50, succeeded: true, revision: 4)
        Self.expectViolation(h.check(), mentioning: ["key x", "succeeded, but mod_revision == 2 is false"])
    }

    @Test func compareAndPutFailedThoughTheKeyWasUnchanged() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 2)
        h.compareAndPut(2, "x", ifModRevision: 2, "c", 40...50, succeeded: false, revision: 2)
        Self.expectViolation(h.check(), mentioning: ["compare false, but mod_revision == 2 holds"])
    }

    @Test func wrongPreviousValue() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 2)
        h.put(1, "x", "b", 20...30, revision: 3, previous: .absent)
        Self.expectViolation(h.check(), mentioning: ["previous value"])
    }

    @Test func readDoesNotMatchItsRevision() {
        var h = HistoryBuilder()
        h.put(1, "x", "a", 0...10, revision: 2)
        h.put(1, "y", "b", 0...10, revision: 3)
        // Value a with y's revision.
        h.get(2, "x", 20...30, value: "a", modRevision: 3, at: 3)
        Self.expectViolation(h.check(), mentioning: ["belongs to another write"])
    }

    /// Many overlapping unknown-outcome writes and an impossible read: the search space is large, and a tiny
    /// budget must end the search with "too large" rather than run on.
    @Test func searchBudgetEndsWithTooLarge() {
        var h = HistoryBuilder()
        for client in 0..<14 { h.put(client, "x", "v\(client)", 0...10, .unknown) }
        h.get(99, "x", 20...30, value: "never", modRevision: 9, at: 9)
        let report = h.check(stepBudgetPerKey: 1_000)
        #expect(report.verdict == .tooLarge, "\(report)")
        #expect(report.problems.first?.contains("gave up after 1000 search steps") == true, "\(report)")
    }
}
