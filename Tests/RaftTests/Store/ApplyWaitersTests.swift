import Foundation
import Synchronization
import Testing
@testable import RaftKV

@Suite struct ApplyWaitersTests {
    struct Late: Error {}

    final class Log: Sendable {
        private let lines = Mutex<[String]>([])
        func append(_ line: String) { lines.withLock { $0.append(line) } }
        var all: [String] { lines.withLock { $0 } }
    }

    @Test func aWaiterResumesWhenItsTargetIsAppliedNotBefore() async throws {
        let waiters = ApplyWaiters(revision: 5, index: 10)
        try await waiters.wait(for: .revision(5), timeout: .seconds(1), timeoutError: Late())
        try await waiters.wait(for: .index(10), timeout: .seconds(1), timeoutError: Late())

        let resumed = Log()
        async let revisionWaiter: Void = {
            try await waiters.wait(for: .revision(8), timeout: .seconds(10), timeoutError: Late())
            resumed.append("revision 8")
        }()
        async let indexWaiter: Void = {
            try await waiters.wait(for: .index(12), timeout: .seconds(10), timeoutError: Late())
            resumed.append("index 12")
        }()
        try await Task.sleep(for: .milliseconds(50))
        waiters.applied(revision: 7, index: 12)
        try await indexWaiter
        #expect(resumed.all == ["index 12"], "revision 7 is not 8")
        waiters.applied(revision: 8, index: 13)
        try await revisionWaiter
        #expect(resumed.all == ["index 12", "revision 8"])
    }

    @Test func aWaiterWhoseTargetNeverComesTimesOutWithTheGivenError() async throws {
        let waiters = ApplyWaiters(revision: 1, index: 1)
        let started = ContinuousClock.now
        await #expect(throws: Late.self) {
            try await waiters.wait(for: .revision(2), timeout: .milliseconds(100), timeoutError: Late())
        }
        #expect(ContinuousClock.now - started >= .milliseconds(100))
        // The timed-out waiter is gone: a later apply resumes nothing twice (that would trap).
        waiters.applied(revision: 2, index: 2)
    }

    @Test func aCancelledWaiterThrowsCancellation() async throws {
        let waiters = ApplyWaiters(revision: 1, index: 1)
        let task = Task { try await waiters.wait(for: .index(5), timeout: .seconds(30), timeoutError: Late()) }
        try await Task.sleep(for: .milliseconds(20))
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        waiters.applied(revision: 5, index: 5)
    }
}
