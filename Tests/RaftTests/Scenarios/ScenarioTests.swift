import Foundation
import Testing
@testable import RaftKV

/// Scripted scenarios over `ScenarioNetwork`: each test drives a small cluster step by step and asserts on the
/// resulting state and on the trace of delivered messages.
///
/// Every cluster is bootstrapped: the initial members are entries 1...N at term 1, committed, so the first
/// election is for term 2 and the first leader's no-op lands at index N+1.
@Suite struct ScenarioTests {
    static func describe(_ messages: [Message]) -> [String] { messages.map(ScenarioNetwork.describe) }

    // MARK: - Election

    @Test func nodeCampaignsAndWins() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        for id: NodeID in [1, 2, 3] {
            #expect(net[id].term == 1)
            #expect(net[id].role == .follower)
            #expect(net[id].membership.voters == [1, 2, 3])
            #expect(net[id].commitIndex == 3)
        }
        net.campaign(1)
        #expect(net[1].role == .preCandidate)
        #expect(net[1].term == 1, "pre-vote does not bump the term")
        #expect(Self.describe(net.queue) == [
            "1->2 MsgPreVote term=2 last=3/1",
            "1->3 MsgPreVote term=2 last=3/1",
        ])
        net.stabilize()
        #expect(Array(net.trace.prefix(10)) == [
            "1->2 MsgPreVote term=2 last=3/1",
            "1->3 MsgPreVote term=2 last=3/1",
            "2->1 MsgPreVoteResp term=2 granted",
            "3->1 MsgPreVoteResp term=2 granted",
            "1->2 MsgVote term=2 last=3/1",
            "1->3 MsgVote term=2 last=3/1",
            "2->1 MsgVoteResp term=2 granted",
            "3->1 MsgVoteResp term=2 granted",
            "1->2 MsgApp term=2 prev=3/1 entries=[4/2] commit=3",
            "1->3 MsgApp term=2 prev=3/1 entries=[4/2] commit=3",
        ])
        #expect(net[1].role == .leader)
        #expect(net[1].term == 2)
        #expect(net[1].commitIndex == 4, "the leader commits its no-op once a follower has it")
        for id: NodeID in [2, 3] {
            #expect(net[id].role == .follower)
            #expect(net[id].leader == 1)
            #expect(net[id].term == 2)
            #expect(net[id].vote == 1)
            #expect(net.logTerms(id) == ["1/1", "2/1", "3/1", "4/2"])
        }
        #expect(net.harnessErrors.isEmpty)
    }

    /// After the election round, with no tick at all, every follower knows that the no-op is committed: a
    /// follower that was still being probed when the commit happened is sent an (empty) append carrying the new
    /// commit index when its own acknowledgement arrives, rather than waiting for the next heartbeat.
    @Test func everyFollowerLearnsTheCommitWithoutWaitingForAHeartbeat() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.elect(1)
        #expect(net[2].commitIndex == 4)
        #expect(net[3].commitIndex == 4)
        net.tick(1)
        net.stabilize()
        #expect(net[3].commitIndex == 4)
        #expect(net.node(3).machine.appliedIndex == 4)
    }

    /// A leader's appends leave before its own copy of the entries is persisted (Ready.earlyMessages) — but not
    /// in the Ready that makes it leader of a term it has not persisted yet: a crash could make it forget that
    /// term, win it again, and number different entries with it. Acknowledgements never leave early.
    @Test func aLeaderSendsAppendsEarlyOnlyOnceItsTermIsDurable() throws {
        func isAppend(_ message: Message) -> Bool {
            if case .append = message.body { return true }
            return false
        }
        let net = try ScenarioNetwork(voters: [1], learners: [2])
        net.campaign(1)
        #expect(net[1].role == .leader, "a single voter wins at once")
        let electing = try #require(net.node(1).readies.first { $0.hardState?.term == 2 })
        #expect(electing.earlyMessages.isEmpty)
        #expect(electing.messages.contains(where: isAppend))
        net.stabilize()

        let before = net.node(1).readies.count
        try net.propose(1, "x")
        let proposing = try #require(net.node(1).readies[before...].first { !$0.entries.isEmpty })
        #expect(proposing.entries.map(\.index) == [net[1].lastIndex])
        #expect(!proposing.earlyMessages.isEmpty && proposing.earlyMessages.allSatisfy(isAppend))
        #expect(!proposing.messages.contains(where: isAppend))
        #expect(net[1].commitIndex < net[1].lastIndex || net.node(1).readies.count > before + 1,
                "the leader's own copy counts only after advance")
        net.stabilize()
        #expect(net.node(2).machine.appliedIndex == net[1].lastIndex)
        #expect(net.node(2).readies.allSatisfy { $0.earlyMessages.isEmpty }, "followers' acknowledgements wait for their disk")
        #expect(net.harnessErrors.isEmpty)
    }

    @Test func splitVoteThenResolves() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3, 4, 5]) { $0.preVote = false }
        net.isolate(5)
        net.campaign(1)
        net.campaign(2)
        #expect(net[1].role == .candidate && net[1].term == 2)
        #expect(net[2].role == .candidate && net[2].term == 2)
        // 3 hears from 1 first and 4 from 2 first: each candidate has two of five votes.
        net.deliverOnly(from: 1, to: 3)
        net.deliverOnly(from: 2, to: 4)
        net.stabilize()
        #expect(net.traceLines("MsgVoteResp term=2 granted").sorted() == [
            "3->1 MsgVoteResp term=2 granted",
            "4->2 MsgVoteResp term=2 granted",
        ])
        #expect(net.leaders.isEmpty, "nobody has a quorum of three")
        #expect(net[1].role == .candidate && net[2].role == .candidate)
        #expect(net[3].vote == 1 && net[4].vote == 2)

        // Heal and let time pass: randomized timeouts make one node campaign first, in term 3, and win.
        net.heal()
        var ticks = 0
        while net.leaders.isEmpty && ticks < 40 {
            net.tickAll()
            ticks += 1
        }
        #expect(net.leaders.count == 1)
        let leader = try #require(net.leaders.first)
        #expect(net[leader].term == 3, "the first election after the split resolves it")
        for id: NodeID in 1...5 {
            #expect(net[id].term == 3)
            #expect(net[id].leader == leader)
        }
    }

    /// Raft §5.4.1: a voter refuses a candidate whose log is behind its own. Node 3 misses entry 5; once the
    /// leader is gone, 3 cannot win (2 refuses it), and 2 wins instead, keeping the entry.
    @Test(arguments: [false, true])
    func candidateWithStaleLogLoses(preVote: Bool) throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3]) {
            $0.preVote = preVote
            $0.checkQuorum = false
        }
        net.elect(1)
        net.isolate(3)
        try net.propose(1, "x")
        net.stabilize()
        #expect(net.logTerms(2).last == "5/2")
        #expect(net.logTerms(3).last == "4/2")
        net.crash(1)
        net.heal()

        net.campaign(3)
        net.stabilize()
        if preVote {
            #expect(net.trace.suffix(2) == [
                "3->2 MsgPreVote term=3 last=4/2",
                "2->3 MsgPreVoteResp term=2 rejected",
            ])
            #expect(net[2].term == 2, "a refused pre-vote leaves no trace")
        } else {
            #expect(net.trace.suffix(2) == [
                "3->2 MsgVote term=3 last=4/2",
                "2->3 MsgVoteResp term=3 rejected",
            ])
            #expect(net[2].term == 3)
            #expect(net[2].vote == 0, "2 did not vote for 3")
        }
        #expect(net[3].role != .leader)

        net.campaign(2)
        net.stabilize()
        #expect(net[2].role == .leader)
        #expect(net[3].leader == 2)
        #expect(net.logTerms(3, from: 5).first == "5/2", "the entry only 1 and 2 had survives")
        #expect(net.node(3).machine.values == ["x"])
    }

    // MARK: - Pre-vote

    /// A node cut off from the cluster times out again and again. With pre-vote its term stays put, and on
    /// rejoining it simply follows the leader; without pre-vote its term races ahead and, on rejoining, it
    /// forces the healthy leader to step down.
    @Test(arguments: [true, false])
    func rejoiningNodeDisruptsOnlyWithoutPreVote(preVote: Bool) throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3]) { $0.preVote = preVote }
        net.elect(1)
        net.tickAll(times: 2)
        net.isolate(3)
        net.tickAll(times: 50)
        #expect(net[1].role == .leader && net[1].term == 2, "1 and 2 are a quorum: nothing changes for them")
        if preVote {
            #expect(net[3].term == 2, "pre-candidacy does not bump the term")
            #expect(net.droppedTrace.contains { $0.hasPrefix("3->1 MsgPreVote term=3") })
        } else {
            #expect(net[3].term > 4, "3 campaigned several times, each in a new term")
        }
        let isolatedTerm = net[3].term
        net.heal()
        net.tickAll(times: 3)
        if preVote {
            #expect(net[1].role == .leader)
            #expect(net[1].term == 2)
            #expect(net[3].role == .follower && net[3].leader == 1)
            #expect(net.leaders == [1])
        } else {
            // The leader learned 3's higher term (from 3's answer to its heartbeat) and stepped down.
            #expect(net.delivered.contains { $0.from == 3 && $0.to == 1 && $0.term >= isolatedTerm && !$0.isVoteTraffic })
            #expect(net[1].term >= isolatedTerm)
            var ticks = 0
            while net.leaders.isEmpty && ticks < 60 { net.tickAll(); ticks += 1 }
            let leader = try #require(net.leaders.first)
            #expect(net[leader].term > isolatedTerm, "the cluster moved on to a term above the disrupter's")
        }
    }

    // MARK: - Check-quorum

    @Test func isolatedLeaderStepsDown() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.elect(1)
        // A leader that hears from its quorum stays.
        net.tickAll(times: 30)
        #expect(net[1].role == .leader && net[1].term == 2)

        net.isolate(1)
        var ticks = 0
        while net[1].role == .leader && ticks < 100 {
            net.tick(1)
            net.stabilize()
            ticks += 1
        }
        #expect(net[1].role == .follower)
        #expect(net[1].leader == 0)
        #expect(net[1].term == 2, "stepping down for lack of a quorum does not change the term")
        // The quorum check runs once per election timeout and looks at activity during the previous one, so the
        // leader steps down after one to two timeouts.
        #expect(ticks <= 20, "stepped down after \(ticks) ticks")
        #expect(ticks > 0)
        // Proposals are now refused.
        #expect(throws: RaftError.noLeader) { try net.propose(1, "late") }
    }

    /// Without pre-vote, a node that campaigns while the others hear from a live leader sends real votes; with
    /// check-quorum the others ignore them (no answer, no term change).
    @Test func followersIgnoreVotesDuringLeaderLease() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3]) { $0.preVote = false }
        net.elect(1)
        net.tickAll(times: 3)
        net.clearTrace()
        net.campaign(3)
        #expect(net[3].role == .candidate && net[3].term == 3)
        net.deliver(where: { $0.from == 3 })
        #expect(net.trace == ["3->1 MsgVote term=3 last=4/2", "3->2 MsgVote term=3 last=4/2"])
        #expect(net.queue.filter { $0.to == 3 }.isEmpty, "no vote response: the requests are ignored")
        #expect(net[2].term == 2 && net[2].leader == 1 && net[2].vote == 1)
        #expect(net[1].role == .leader && net[1].term == 2)

        // Once 2 has not heard from a leader for an election timeout, its lease is over and it answers.
        net.isolate(1)
        net.tick(2, times: 10)
        net.drop { $0.from == 2 }
        net.campaign(3)
        net.deliver(where: { ($0.from == 3 && $0.to == 2) || ($0.from == 2 && $0.to == 3) })
        #expect(net[2].term == 4)
        #expect(net[2].vote == 3)
        #expect(net[3].role == .leader)
    }

    // MARK: - Replication

    @Test func appendsRespectMaxMessageBytes() throws {
        // Each entry below costs 24 + 76 = 100 bytes: two fit in a 250-byte message, three do not.
        let net = try ScenarioNetwork(voters: [1, 2, 3]) { $0.maxMessageBytes = 250 }
        net.campaign(1)
        net.deliver(where: \.isVoteTraffic)
        #expect(net[1].role == .leader)
        // The followers are being probed (one append in flight): proposals wait and then go out in batches.
        let value = String(repeating: "v", count: 74)
        for i in 0..<10 { try net.propose(1, "\(value)\(i)\(i)") }
        net.stabilize()
        let appends = net.deliveredMessages { $0.from == 1 && $0.to == 2 && $0.isAppend && !$0.appendedEntries.isEmpty }
        #expect(appends.map(\.appendedEntries.count) == [1, 2, 2, 2, 2, 2], "\(Self.describe(appends))")
        for append in appends {
            #expect(append.appendedEntries.reduce(0) { $0 + $1.sizeBytes } <= 250)
        }
        #expect(net[1].commitIndex == 14)
        #expect(net.logTerms(2) == net.logTerms(1))
        net.tickAll()
        #expect(net.node(3).machine.values.count == 10)
    }

    @Test func pipeliningRespectsMaxInflightMessages() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3]) { $0.maxInflightMessages = 3 }
        net.elect(1)
        net.tickAll()
        for i in 1...10 { try net.propose(1, "p\(i)") }
        // Nothing is delivered: the leader has three appends in flight to each follower, no more.
        let toTwo = net.queue.filter { $0.to == 2 && $0.isAppend }
        #expect(Self.describe(toTwo) == [
            "1->2 MsgApp term=2 prev=4/2 entries=[5/2:p1] commit=4",
            "1->2 MsgApp term=2 prev=5/2 entries=[6/2:p2] commit=4",
            "1->2 MsgApp term=2 prev=6/2 entries=[7/2:p3] commit=4",
        ])
        #expect(net.queue.filter { $0.to == 3 && $0.isAppend }.count == 3)
        #expect(net[1].progress[2]!.inflight == [5, 6, 7])
        #expect(net[1].commitIndex == 4)

        // Deliver the appends but no response: the leader sends nothing more.
        #expect(net.deliver(where: { $0.to == 2 && $0.isAppend }) == 3)
        #expect(net.queue.filter { $0.to == 2 && $0.isAppend }.isEmpty)
        #expect(net[2].lastIndex == 7)
        // One acknowledgement frees one slot: exactly one more append (carrying the rest) goes out.
        net.deliverFirst { $0.from == 2 && $0.to == 1 }
        #expect(net[1].commitIndex == 5)
        #expect(Self.describe(net.queue.filter { $0.to == 2 && $0.isAppend }) == [
            "1->2 MsgApp term=2 prev=7/2 entries=[8/2:p4,9/2:p5,10/2:p6,11/2:p7,12/2:p8,13/2:p9,14/2:p10] commit=5",
        ])
        #expect(net[1].progress[2]!.inflight == [6, 7, 14])
        net.stabilize()
        #expect(net[1].commitIndex == 14)
        #expect(net.logTerms(2) == net.logTerms(1) && net.logTerms(3) == net.logTerms(1))
    }

    /// A deposed leader holds twenty entries of term 2 that never committed; the current leader's log has
    /// twenty-six entries of term 3 in their place. Fast backtracking finds the divergence in one rejection
    /// instead of one per entry.
    /// 1 led term 2 and, cut off, appended twenty entries (5...24, term 2) that never committed; meanwhile 2 led
    /// term 3 (entries 5...30 committed with 3) and handed leadership to 3 (term 4). 1 is still cut off.
    static func divergedFormerLeader(configure: @escaping (inout RaftConfiguration) -> Void = { _ in }) throws -> ScenarioNetwork {
        let net = try ScenarioNetwork(voters: [1, 2, 3]) {
            $0.preVote = false
            $0.checkQuorum = false
            configure(&$0)
        }
        net.elect(1)
        net.isolate(1)
        for i in 1...20 { try net.propose(1, "old\(i)") }
        net.stabilize()
        #expect(net[1].lastIndex == 24)

        net.elect(2)
        #expect(net[2].role == .leader && net[2].term == 3)
        for i in 1...25 { try net.propose(2, "new\(i)") }
        net.stabilize()
        #expect(net[2].commitIndex == 30)
        // Hand leadership to 3 so that the leader probes 1 from the end of its log.
        try net.transferLeadership(2, to: 3)
        net.stabilize()
        #expect(net[3].role == .leader && net[3].term == 4)
        #expect(net[1].role == .leader && net[1].term == 2, "1 is cut off and still believes it leads")

        return net
    }

    @Test func fastBacktrackingSkipsADivergentTermInOneRoundTrip() throws {
        let net = try Self.divergedFormerLeader()
        net.heal()
        net.clearTrace()
        net.tick(3)
        net.stabilize()
        #expect(net[1].role == .follower && net[1].leader == 3)
        let rejections = net.deliveredMessages { $0.from == 1 && $0.isRejectedAppend }
        #expect(rejections.count >= 1, "1's log diverged, so some append must be refused")
        #expect(rejections.count <= 2, "\(Self.describe(rejections))")
        #expect(net.logTerms(1) == net.logTerms(3))
        #expect(net[1].commitIndex == net[3].commitIndex)
        #expect(!net.node(1).machine.values.contains("old1"))
        #expect(net.node(1).machine.values.filter { $0.hasPrefix("new") }.count == 25)
    }

    // MARK: - Commit rule (Raft Figure 8)

    /// Raft paper Figure 8 replayed on five nodes (bootstrap entries 1...5, so the paper's index 2 is 6 here):
    /// (a) 1 leads term 2 and replicates 6/2 and 7/2 ("x") to 2 only. (b) 1 crashes; 5 wins term 3 with
    /// 3 and 4 and appends 6/3 on itself only; 5 crashes. (c) 1 restarts, wins term 4 and replicates 6/2 and 7/2
    /// to 3: they are now on a majority (1, 2, 3) but not of term 4; then 1 crashes. (d) 5 restarts and wins
    /// term 5 with 3 and 4 (its last term 3 beats their 2) and overwrites index 6 and 7 everywhere.
    ///
    /// Returns the network after (d).
    static func figure8(bug: Bool) throws -> (ScenarioNetwork, commitAfterC: LogIndex) {
        // 49 bytes: two small entries per append (6/2 and 7/2 together), never three.
        let net = try ScenarioNetwork(voters: [1, 2, 3, 4, 5]) {
            $0.preVote = false
            $0.checkQuorum = false
            $0.maxMessageBytes = 49
            #if DEBUG
            if bug { $0.injectedBugs = [.commitPreviousTermByCounting] }
            #endif
        }
        // (a)
        net.campaign(1)
        net.deliver(where: \.isVoteTraffic)
        #expect(net[1].role == .leader && net[1].term == 2)
        try net.propose(1, "x")
        net.deliver(where: { ($0.from == 1 && $0.to == 2) || ($0.from == 2 && $0.to == 1) })
        #expect(net.logTerms(2, from: 6) == ["6/2", "7/2"])
        #expect(net[1].commitIndex == 5)
        net.crash(1)

        // (b)
        net.campaign(5)
        net.deliver(where: \.isVoteTraffic)
        #expect(net[5].role == .leader && net[5].term == 3)
        #expect(net.logTerms(5, from: 6) == ["6/3"])
        net.crash(5)

        // (c)
        try net.restart(1)
        while net[1].role != .leader && net[1].term < 10 {
            net.campaign(1)
            net.deliver(where: \.isVoteTraffic)
        }
        #expect(net[1].role == .leader && net[1].term == 4)
        // 2 gets the term-4 no-op; 3 gets 6/2 and 7/2 only; 4 gets nothing.
        net.deliver(where: { ($0.from == 1 && $0.to == 2) || ($0.from == 2 && $0.to == 1) })
        net.isolate(4)
        net.deliverFirst { $0.from == 1 && $0.to == 3 }  // the probe after 7/2: refused, 3 ends at 5
        net.deliverFirst { $0.from == 3 && $0.to == 1 }
        net.deliverFirst { $0.from == 1 && $0.to == 3 }  // 6/2 and 7/2
        net.deliverFirst { $0.from == 3 && $0.to == 1 }
        #expect(net.logTerms(3, from: 6) == ["6/2", "7/2"])
        #expect(net.logTerms(2, from: 6) == ["6/2", "7/2", "8/4"])
        let commitAfterC = net[1].commitIndex
        net.crash(1)
        net.heal()

        // (d)
        try net.restart(5)
        while net[5].role != .leader && net[5].term < 10 {
            net.campaign(5)
            net.deliver(where: \.isVoteTraffic)
        }
        #expect(net[5].role == .leader && net[5].term == 5)
        net.stabilize()
        net.tick(5)
        net.stabilize()
        return (net, commitAfterC)
    }

    @Test func figure8OldTermEntryIsNotCommittedByCounting() throws {
        let (net, commitAfterC) = try Self.figure8(bug: false)
        #expect(commitAfterC == 5, "6/2 and 7/2 sit on a majority but are not of the leader's term: not committed")
        #expect(net.node(1).machine.appliedIndex == 5)
        for id: NodeID in 2...5 {
            #expect(net.logTerms(id, from: 6) == ["6/3", "7/5"])
            #expect(net[id].commitIndex == 7)
        }
        #expect(net.appliedConflicts().isEmpty)
        #expect(!net.nodes.values.contains { $0.machine.values.contains("x") }, "x was never committed, so losing it is fine")
        #expect(net.harnessErrors.isEmpty)
    }

    #if DEBUG
    @Test func figure8WithCommitByCountingLosesACommittedEntry() throws {
        let (net, commitAfterC) = try Self.figure8(bug: true)
        #expect(commitAfterC == 7, "the buggy leader commits 6/2 and 7/2 by counting replicas")
        #expect(net.node(1).machine.values == ["x"], "and applies x")
        for id: NodeID in 2...5 {
            #expect(net.logTerms(id, from: 6) == ["6/3", "7/5"], "but the next leader overwrites it")
            #expect(!net.node(id).machine.values.contains("x"))
        }
        let conflicts = net.appliedConflicts()
        #expect(conflicts.contains("index 7: node 1 applied 7/2:x, node 2 applied 7/5"), "\(conflicts)")
    }
    #endif
}

// MARK: - Injected bugs the scenarios catch

#if DEBUG
extension ScenarioTests {
    /// The fast-backtracking scenario with a follower that keeps its conflicting suffix: 1 answers the leader's
    /// append from 4/2 by keeping its own term-2 entries 5...24, so it applies them where everyone else
    /// applied the term-3 entries.
    @Test func keepConflictingSuffixMakesAFollowerApplyStaleEntries() throws {
        let net = try Self.divergedFormerLeader { $0.injectedBugs = [.keepConflictingSuffix] }
        net.heal()
        net.tick(3)
        net.stabilize()
        net.tick(3)
        net.stabilize()
        #expect(net.logTerms(1, from: 5).first == "5/2", "the bug: 1 kept its stale entry 5")
        #expect(net.node(1).machine.values.first == "old1")
        #expect(net.appliedConflicts().contains("index 5: node 1 applied 5/2:old1, node 2 applied 5/3"))
    }

    /// The stale-log scenario with votes granted without the log check: node 3, which lacks committed entry 5,
    /// wins and overwrites it, so two nodes apply different entries at index 5.
    @Test func voteWithoutLogCheckLetsAStaleCandidateOverwriteACommittedEntry() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3]) {
            $0.preVote = false
            $0.checkQuorum = false
            $0.injectedBugs = [.voteWithoutLogCheck]
        }
        net.elect(1)
        net.tickAll()
        net.isolate(3)
        try net.propose(1, "x")
        // 2 stores x and acknowledges it; 1 commits and applies x, then crashes before telling 2.
        net.deliverFirst { $0.from == 1 && $0.to == 2 && !$0.appendedEntries.isEmpty }
        net.deliverFirst { $0.from == 2 && $0.to == 1 }
        #expect(net[1].commitIndex == 5)
        #expect(net.node(1).machine.values == ["x"])
        net.crash(1)
        net.heal()
        net.campaign(3)
        net.stabilize()
        #expect(net[3].role == .leader, "the bug: 2 votes for a candidate whose log lacks entry 5")
        net.tick(3)
        net.stabilize()
        #expect(net.logTerms(2, from: 5) == ["5/3"], "x is gone from every live log")
        #expect(net.appliedConflicts() == ["index 5: node 1 applied 5/2:x, node 2 applied 5/3", "index 5: node 1 applied 5/2:x, node 3 applied 5/3"])
    }
}
#endif

// MARK: - Snapshots

extension ScenarioTests {
    /// A cluster whose leader 1 committed ten entries while 3 was down, then compacted its whole log.
    static func compactedClusterWithNodeThreeBehind() throws -> ScenarioNetwork {
        let net = try ScenarioNetwork(voters: [1, 2, 3]) { $0.maxSnapshotChunkBytes = 64 }
        net.snapshotPadding = 200
        net.elect(1)
        net.tickAll()
        net.crash(3)
        for i in 1...10 { try net.propose(1, "s\(i)") }
        net.stabilize()
        #expect(net[1].commitIndex == 14)
        try net.snapshot(1, retain: 0)
        #expect(net.node(1).storage.firstIndex == 15)
        #expect(net.node(1).storage.snapshotMetadata.index == 14)
        try net.restart(3)
        net.clearTrace()
        return net
    }

    /// Delivers everything except the first append to 3 once it has installed the snapshot (see
    /// `snapshotCompletionDoesNotPingPongEmptyAppends` for why the test holds it back).
    static func deliverUntilSnapshotInstalled(_ net: ScenarioNetwork) {
        net.deliver(where: { !($0.to == 3 && $0.isAppend && net.node(3).storage.snapshotMetadata.index == 14) })
    }

    @Test func laggingFollowerReceivesSnapshotInChunksThenCatchesUpByAppends() throws {
        let net = try Self.compactedClusterWithNodeThreeBehind()
        net.tick(1)
        Self.deliverUntilSnapshotInstalled(net)
        #expect(Array(net.trace.filter { $0.contains("1->3") || $0.contains("3->1") }.prefix(5)) == [
            "1->3 MsgHeartbeat term=2 commit=4 seq=0",
            "3->1 MsgHeartbeatResp term=2 seq=0",
            "1->3 MsgApp term=2 prev=14/2 entries=[] commit=14",
            "3->1 MsgAppResp term=2 reject=14 hint=4/2",
            "1->3 MsgSnap term=2 snap=14/2 offset=0 bytes=64",
        ])
        let chunks = net.deliveredMessages { $0.to == 3 && $0.isSnapshot }
        #expect(chunks.count > 1, "\(Self.describe(chunks))")
        var expectedOffset: UInt64 = 0
        for (position, message) in chunks.enumerated() {
            guard case .snapshot(let chunk) = message.body else { continue }
            #expect(chunk.data.count <= 64)
            #expect(chunk.offset == expectedOffset, "chunks arrive in order, each once")
            #expect(chunk.isLast == (position == chunks.count - 1))
            #expect(chunk.metadata.index == 14 && chunk.metadata.term == 2)
            expectedOffset += UInt64(chunk.data.count)
        }
        #expect(Int(expectedOffset) == net.node(1).storage.snapshotBytes.count)
        #expect(net.traceLines("3->1 MsgSnapResp term=2 snap=14").last?.hasSuffix("done") == true)
        #expect(net.node(3).storage.snapshotMetadata.index == 14)
        #expect(net.node(3).machine == net.node(1).machine)
        #expect(net[3].commitIndex == 14)

        // From now on 3 is replicated by appends.
        try net.propose(1, "after1")
        try net.propose(1, "after2")
        net.stabilize()
        net.tick(1)
        net.stabilize()
        #expect(!net.traceLines("1->3 MsgApp term=2 prev=14/2 entries=[15/2:after1").isEmpty)
        #expect(net.node(3).machine.values == (1...10).map { "s\($0)" } + ["after1", "after2"])
        #expect(net.logTerms(3, from: 15) == ["15/2", "16/2"])
        #expect(net.harnessErrors.isEmpty)
    }

    /// Once the last chunk is acknowledged, the leader marks the follower as matching the snapshot index and
    /// probes it with an empty append. The follower's acceptance does not raise `match` (it is already 14); the
    /// leader must take it as confirmation and move to replicate, not probe again: otherwise leader and follower
    /// would exchange empty appends until a new entry is proposed (a livelock this test caught).
    @Test func snapshotCompletionDoesNotPingPongEmptyAppends() throws {
        let net = try Self.compactedClusterWithNodeThreeBehind()
        net.tick(1)
        let quiet = net.quietens(within: 300)
        let emptyAppends = net.deliveredMessages { $0.to == 3 && $0.isAppend && $0.appendedEntries.isEmpty }.count
        #expect(quiet, "\(net.trace.suffix(4))")
        #expect(emptyAppends <= 2)
        #expect(net.node(3).storage.snapshotMetadata.index == 14)
        // Replication continues normally afterwards.
        try net.propose(1, "breaks the loop")
        #expect(net.quietens(within: 300))
        #expect(net[1].progress[3]?.state == .replicate)
        net.tick(1)
        net.stabilize()
        #expect(net.node(3).machine.values.last == "breaks the loop")
    }

    @Test func lostSnapshotChunkIsResentOnHeartbeatResponse() throws {
        let net = try Self.compactedClusterWithNodeThreeBehind()
        net.tick(1)
        net.deliver(where: { !$0.isSnapshot })
        #expect(net.deliverFirst { $0.to == 3 && $0.isSnapshot })  // offset 0
        #expect(net.deliverFirst { $0.from == 3 && $0.to == 1 })
        #expect(Self.describe(net.queue) == ["1->3 MsgSnap term=2 snap=14/2 offset=64 bytes=64"])
        #expect(net.drop { $0.isSnapshot } == 1)
        net.stabilize()
        #expect(net.queue.isEmpty, "nothing moves until the leader hears from 3 again")
        #expect(net[3].commitIndex < 14)

        net.clearTrace()
        net.tick(1)
        Self.deliverUntilSnapshotInstalled(net)
        #expect(Array(net.trace.filter { $0.contains("1->3") || $0.contains("3->1") }.prefix(3)) == [
            "1->3 MsgHeartbeat term=2 commit=4 seq=0",
            "3->1 MsgHeartbeatResp term=2 seq=0",
            "1->3 MsgSnap term=2 snap=14/2 offset=64 bytes=64",
        ])
        #expect(net.node(3).storage.snapshotMetadata.index == 14)
        #expect(net.node(3).machine == net.node(1).machine)
    }

    /// A node added to a cluster whose log is compacted starts from the leader's snapshot.
    @Test func newMemberJoinsFromSnapshot() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3]) { $0.maxSnapshotChunkBytes = 100 }
        net.elect(1)
        for i in 1...5 { try net.propose(1, "v\(i)") }
        net.stabilize()
        try net.snapshot(1, retain: 2)
        try net.addNode(4)
        let index = try net.proposeConfigChange(1, .addLearner(4))
        net.stabilize()
        net.tickAll(times: 2)
        #expect(net.node(4).storage.snapshotMetadata.index == 9)
        #expect(net.deliveredMessages { $0.to == 4 && $0.isSnapshot }.count > 1)
        #expect(net[4].membership == Membership(voters: [1, 2, 3], learners: [4]))
        #expect(net.node(4).machine.values == ["v1", "v2", "v3", "v4", "v5"])
        #expect(net[4].commitIndex == index)
        #expect(net.logTerms(4, from: 10) == ["10/2"])
    }
}

// MARK: - Membership

extension ScenarioTests {
    @Test func learnerReplicatesButNeitherVotesNorCounts() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.elect(1)
        net.tickAll()
        try net.addNode(4)
        #expect(net[4].membership == Membership(), "a joining node knows nothing yet")
        try net.proposeConfigChange(1, .addLearner(4))
        net.stabilize()
        net.tickAll()
        for id: NodeID in 1...4 {
            #expect(net[id].membership == Membership(voters: [1, 2, 3], learners: [4]), "node \(id)")
        }
        #expect(net.logTerms(4) == net.logTerms(1))

        // A learner never campaigns.
        net.campaign(4)
        #expect(net[4].role == .follower && net.queue.isEmpty)
        net.tick(4, times: 50)
        #expect(net[4].role == .follower && net.queue.filter { $0.from == 4 }.isEmpty)

        // Its acknowledgement does not count: with both other voters cut off, nothing commits.
        net.cut(1, 2)
        net.cut(1, 3)
        let commit = net[1].commitIndex
        let index = try net.propose(1, "L")
        net.stabilize()
        #expect(net[1].matchIndex(of: 4) == index)
        #expect(net[1].commitIndex == commit)

        // Promote it: now it counts. With 3 cut off, 1 and 2 are not a quorum of four; 1, 2 and 4 are.
        net.heal()
        net.stabilize()
        net.tickAll()
        try net.proposeConfigChange(1, .promoteLearner(4))
        net.stabilize()
        net.tickAll()
        for id: NodeID in 1...4 { #expect(net[id].membership == Membership(voters: [1, 2, 3, 4]), "node \(id)") }
        net.cut(1, 3)
        let promotedIndex = try net.propose(1, "P")
        net.deliver(where: { ($0.from == 1 && $0.to == 2) || ($0.from == 2 && $0.to == 1) })
        #expect(net[1].commitIndex == promotedIndex - 1, "two of four voters are no quorum")
        net.deliver(where: { ($0.from == 1 && $0.to == 4) || ($0.from == 4 && $0.to == 1) })
        #expect(net[1].commitIndex == promotedIndex, "the promoted learner's acknowledgement completes the quorum")
    }

    @Test func removedVoterIsNoLongerContactedAndCannotDisrupt() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3, 4])
        net.elect(1)
        net.tickAll()
        try net.proposeConfigChange(1, .removeMember(3))
        net.stabilize()
        #expect(net[1].membership == Membership(voters: [1, 2, 4]))
        #expect(net[1].matchIndex(of: 3) == nil)
        net.clearTrace()
        net.tickAll(times: 40)
        #expect(net.traceLines("1->3").isEmpty, "the leader no longer sends to 3")
        #expect(net.leaders == [1] && net[1].term == 2, "3's campaigns (if any) are ignored under the leader lease")
        // Commit now needs two of {1, 2, 4}.
        net.cut(1, 2)
        let index = try net.propose(1, "after removal")
        net.stabilize()
        #expect(net[1].commitIndex == index)
    }

    @Test func removingTheLeaderHandsOverLeadership() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.elect(1)
        net.tickAll()
        net.clearTrace()
        try net.proposeConfigChange(1, .removeMember(1))
        net.stabilize()
        #expect(net[1].role == .follower)
        #expect(net[1].membership == Membership(voters: [2, 3]))
        let timeoutNow = net.deliveredMessages { $0.from == 1 && $0.isTimeoutNow }
        #expect(timeoutNow.count == 1)
        let successor = try #require(timeoutNow.first?.to)
        #expect(net.leaders == [successor])
        #expect(net[successor].term == 3)
        net.tickAll(times: 3)
        for id: NodeID in [2, 3] { #expect(net[id].membership == Membership(voters: [2, 3])) }
        // The removed node never campaigns again, and the others commit without it.
        net.crash(1)
        let index = try net.propose(successor, "without 1")
        net.stabilize()
        #expect(net[successor].commitIndex == index)
    }

    @Test func secondConfigChangeWhilePendingIsRefused() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.elect(1)
        net.tickAll()
        try net.addNode(4)
        try net.addNode(5)
        try net.proposeConfigChange(1, .addLearner(4))
        #expect(throws: RaftError.configChangePending) { try net.proposeConfigChange(1, .addLearner(5)) }
        net.deliver(where: { $0.from == 1 && $0.to == 2 })
        #expect(throws: RaftError.configChangePending) { try net.proposeConfigChange(1, .addLearner(5)) }
        net.stabilize()
        // Applied: the next change is accepted.
        try net.proposeConfigChange(1, .addLearner(5))
        net.stabilize()
        #expect(net[1].membership.learners == [4, 5])
        #expect(throws: RaftError.invalidConfigChange("member 4 is already a member")) { try net.proposeConfigChange(1, .addLearner(4)) }
        #expect(throws: RaftError.unknownMember(9)) { try net.proposeConfigChange(1, .removeMember(9)) }
    }

    @Test func newLeaderRefusesConfigChangesUntilItCommitsInItsTerm() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.campaign(1)
        net.deliver(where: \.isVoteTraffic)
        #expect(net[1].role == .leader && net[1].commitIndex == 3)
        try net.addNode(4)
        #expect(throws: RaftError.configChangePending) { try net.proposeConfigChange(1, .addLearner(4)) }
        // Normal proposals are fine meanwhile.
        try net.propose(1, "early")
        net.stabilize()
        #expect(net[1].commitIndex == 5)
        try net.proposeConfigChange(1, .addLearner(4))
    }
}

// MARK: - Leadership transfer

extension ScenarioTests {
    @Test func transferToUpToDateFollower() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.elect(1)
        net.tickAll()
        net.clearTrace()
        try net.transferLeadership(1, to: 2)
        #expect(Self.describe(net.queue) == ["1->2 MsgTimeoutNow term=2"])
        net.stabilize()
        #expect(Array(net.trace.prefix(5)) == [
            "1->2 MsgTimeoutNow term=2",
            "2->1 MsgVote term=3 last=4/2 transfer",
            "2->3 MsgVote term=3 last=4/2 transfer",
            "1->2 MsgVoteResp term=3 granted",
            "3->2 MsgVoteResp term=3 granted",
        ])
        #expect(net.leaders == [2])
        #expect(net[2].term == 3)
        #expect(net[1].leader == 2 && net[3].leader == 2)
    }

    @Test func transferToLaggingFollowerCatchesItUpFirst() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.elect(1)
        net.tickAll()
        net.isolate(3)
        for i in 1...5 { try net.propose(1, "t\(i)") }
        net.stabilize()
        net.heal()
        net.clearTrace()
        try net.transferLeadership(1, to: 3)
        #expect(net[1].leadershipTransferee == 3)
        #expect(net.queue.filter(\.isTimeoutNow).isEmpty, "3 is behind: no TimeoutNow yet")
        #expect(throws: RaftError.leadershipTransferInProgress) { try net.propose(1, "refused") }
        net.stabilize()
        let catchUp = try #require(net.trace.firstIndex { $0.hasPrefix("1->3 MsgApp") && $0.contains("9/2:t5") })
        let timeoutNow = try #require(net.trace.firstIndex(of: "1->3 MsgTimeoutNow term=2"))
        #expect(catchUp < timeoutNow)
        #expect(net.leaders == [3])
        #expect(net[3].term == 3)
        #expect(net.logTerms(3, from: 5) == ["5/2", "6/2", "7/2", "8/2", "9/2", "10/3"])
        #expect(!net.trace.contains { $0.contains("refused") })
    }

    @Test func transferToUnreachableTargetIsAbandonedAfterAnElectionTimeout() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.elect(1)
        net.tickAll(times: 2)
        net.isolate(3)
        try net.transferLeadership(1, to: 3)
        #expect(throws: RaftError.leadershipTransferInProgress) { try net.propose(1, "refused") }
        for _ in 1...9 {
            net.tick(1)
            net.stabilize()
        }
        #expect(net[1].leadershipTransferee == 3)
        net.tick(1)
        net.stabilize()
        #expect(net[1].leadershipTransferee == 0)
        #expect(net[1].role == .leader && net[1].term == 2)
        let index = try net.propose(1, "accepted")
        net.stabilize()
        #expect(net[1].commitIndex == index)
    }
}

// MARK: - ReadIndex

extension ScenarioTests {
    @Test func leaderServesReadAfterOneHeartbeatRound() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.elect(1)
        net.tickAll()
        try net.readIndex(1, requestID: 7)
        #expect(Self.describe(net.queue) == [
            "1->2 MsgHeartbeat term=2 commit=4 seq=1",
            "1->3 MsgHeartbeat term=2 commit=4 seq=1",
        ])
        #expect(net.node(1).readStates.isEmpty)
        net.deliverFirst { $0.to == 2 }
        #expect(net.node(1).readStates.isEmpty)
        net.deliverFirst { $0.from == 2 }
        #expect(net.node(1).readStates == [ReadState(requestID: 7, index: 4)], "1 and 2 are a quorum")
        #expect(net[1].commitIndex == 4)
        net.stabilize()
        #expect(net.node(1).readStates.count == 1)
    }

    @Test func readsArrivingDuringARoundShareTheNextBroadcast() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.elect(1)
        net.tickAll()
        net.clearTrace()
        try net.readIndex(1, requestID: 1)
        for id: UInt64 in 2...10 { try net.readIndex(1, requestID: id) }
        #expect(net.queue.filter(\.isHeartbeat).count == 2, "one broadcast so far")
        net.stabilize()
        #expect(net.node(1).readStates.map(\.requestID) == Array(1...10))
        #expect(net.node(1).readStates.allSatisfy { $0.index == 4 })
        // Read 1 took round 1; reads 2...10 shared round 2: two broadcasts for ten reads.
        #expect(net.traceLines("MsgHeartbeat term=2").count == 4)
        #expect(net.traceLines("seq=2").count == 4, "2 heartbeats and 2 responses")
        #expect(net.traceLines("seq=3").isEmpty)
    }

    @Test func followerReadGoesThroughTheLeader() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.elect(1)
        net.tickAll()
        try net.propose(1, "w")
        net.stabilize()
        net.clearTrace()
        try net.readIndex(2, requestID: 42)
        #expect(Self.describe(net.queue) == ["2->1 MsgReadIndex term=2 req=42"])
        net.stabilize()
        #expect(net.trace.first == "2->1 MsgReadIndex term=2 req=42")
        #expect(net.trace.contains("1->2 MsgReadIndexResp term=2 req=42 index=5"))
        #expect(net.node(2).readStates == [ReadState(requestID: 42, index: 5)])
        #expect(net.node(1).readStates.isEmpty)
    }

    @Test func leaderWithoutQuorumNeverReturnsARead() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.elect(1)
        net.tickAll()
        net.isolate(1)
        try net.readIndex(1, requestID: 5)
        for _ in 0..<30 {
            net.tick(1)
            net.stabilize()
        }
        #expect(net[1].role == .follower)
        #expect(net.node(1).readStates.isEmpty)
        net.heal()
        net.tickAll(times: 40)
        #expect(net.leaders.count == 1)
        #expect(net.node(1).readStates.isEmpty, "the read is never answered; the client times out and retries")
    }

    @Test func newLeaderDefersReadsUntilItCommitsInItsTerm() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.campaign(1)
        net.deliver(where: \.isVoteTraffic)
        #expect(net[1].role == .leader && net[1].commitIndex == 3)
        net.clearTrace()
        try net.readIndex(1, requestID: 9)
        #expect(net.queue.filter(\.isHeartbeat).isEmpty, "no read round before the no-op commits")
        net.stabilize()
        #expect(net.node(1).readStates == [ReadState(requestID: 9, index: 4)])
        let commitAck = try #require(net.trace.firstIndex(of: "2->1 MsgAppResp term=2 match=4"))
        let firstRound = try #require(net.trace.firstIndex { $0.contains("MsgHeartbeat term=2") && $0.hasSuffix("seq=1") })
        #expect(commitAck < firstRound)
    }
}

// MARK: - Proposals and restarts

extension ScenarioTests {
    @Test func proposalsAreRefusedOffTheLeader() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        #expect(throws: RaftError.noLeader) { try net.propose(1, "a") }
        #expect(throws: RaftError.noLeader) { try net.readIndex(1, requestID: 1) }
        #expect(throws: RaftError.noLeader) { try net.proposeConfigChange(1, .addLearner(4)) }
        net.elect(1)
        #expect(throws: RaftError.notLeader(leader: 1)) { try net.propose(2, "a") }
        #expect(throws: RaftError.notLeader(leader: 1)) { try net.transferLeadership(3, to: 2) }
        #expect(throws: RaftError.unknownMember(7)) { try net.transferLeadership(1, to: 7) }
        #expect(net.queue.isEmpty)
    }

    @Test func restartKeepsTermVoteLogAndMembership() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3])
        net.elect(1)
        net.tickAll()
        try net.addNode(4)
        try net.proposeConfigChange(1, .addLearner(4))
        net.stabilize()
        try net.propose(1, "a")
        net.stabilize()
        net.tickAll()
        for id: NodeID in [1, 2, 4] {
            let term = net[id].term, vote = net[id].vote, log = net.logTerms(id), membership = net[id].membership
            let commit = net[id].commitIndex
            net.crash(id)
            try net.restart(id)
            #expect(net[id].term == term, "node \(id)")
            #expect(net[id].vote == vote, "node \(id)")
            #expect(net.logTerms(id) == log, "node \(id)")
            #expect(net[id].commitIndex == commit, "node \(id)")
            #expect(net[id].membership == membership, "node \(id): membership replayed from the log")
            #expect(net[id].membership == Membership(voters: [1, 2, 3], learners: [4]))
            #expect(net[id].role == .follower && net[id].leader == 0)
        }
        // With a snapshot: membership from the snapshot, then the changes applied after it.
        net.tickAll(times: 30)
        let leader = try #require(net.leaders.first)
        try net.snapshot(2, retain: 0)
        try net.proposeConfigChange(leader, .promoteLearner(4))
        net.stabilize()
        net.tickAll()
        #expect(net[2].membership == Membership(voters: [1, 2, 3, 4]))
        net.crash(2)
        try net.restart(2)
        #expect(net[2].membership == Membership(voters: [1, 2, 3, 4]))

        // A state machine that lost everything restarts from the snapshot and re-applies the committed rest,
        // membership changes included.
        let applied = net.node(3).machine
        net.crash(3)
        net.node(3).machine = RecordingStateMachine()
        try net.restart(3)
        #expect(net.node(3).machine == applied)
        #expect(net[3].membership == Membership(voters: [1, 2, 3, 4]))
        #expect(net.harnessErrors.isEmpty)
    }

    /// A vote survives a restart: a node that voted for 1 in term 2 refuses 3 in term 2 after restarting.
    @Test func restartedNodeKeepsItsVote() throws {
        let net = try ScenarioNetwork(voters: [1, 2, 3]) {
            $0.preVote = false
            $0.checkQuorum = false
        }
        net.campaign(1)
        net.deliverOnly(from: 1, to: 2)
        #expect(net[2].vote == 1 && net[2].term == 2)
        net.crash(2)
        try net.restart(2)
        #expect(net[2].vote == 1 && net[2].term == 2)
        net.crash(1)
        net.campaign(3)
        #expect(net[3].term == 2)
        net.stabilize()
        #expect(net.trace.contains("2->3 MsgVoteResp term=2 rejected"))
        #expect(net[3].role == .candidate)
    }
}
