import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import HistoryCheck
#if canImport(Glibc)
import Glibc
#endif

/// The clients, watchers and fault schedule of a fault-injection run on real kvserver processes. Everything that
/// can be chosen is chosen by a seeded generator; what the processes and the network then do is not seeded, so a
/// seed replays the schedule and the clients' choices, not the exact interleaving.

typealias EtcdClient = GRPCClient<HTTP2ClientTransport.Posix>

/// A monotonic clock shared by every client of a run (CLOCK_MONOTONIC through Dispatch).
func monotonicNanoseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// Operations recorded by concurrent clients.
final class HistoryRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var history = History()
    /// Times are kept relative to the recorder's creation, so that explanations read "at 4.2 s", not uptime.
    private let origin = monotonicNanoseconds()

    func record(client: Int, _ call: Call, invokedAt: UInt64, completedAt: UInt64, _ outcome: Outcome) {
        precondition(invokedAt >= origin, "an operation invoked before the recorder existed")
        lock.withLock {
            _ = history.record(client: client, call, invokedAt: invokedAt - origin, completedAt: completedAt - origin,
                               outcome)
        }
    }

    var snapshot: History { lock.withLock { history } }
}

/// etcd KV calls for the operations the checker knows, with a deadline; any error is an unknown outcome, because
/// a write may have been proposed before the error (a timeout, a lost connection, a leader change).
enum KVCalls {
    /// `serializableReads` answers gets from the member's local state (etcd's `serializable`): not linearizable,
    /// which is how a run shows the checker catching stale reads from a real server.
    static func perform(_ call: Call, previousValue: Bool, on client: EtcdClient, timeout: Duration,
                        serializableReads: Bool = false) async -> Outcome {
        var options = CallOptions.defaults
        options.timeout = timeout
        let kv = Etcdserverpb_KV.Client(wrapping: client)
        do {
            switch call {
            case .get(let key):
                var request = Etcdserverpb_RangeRequest()
                request.key = Data(key.utf8)
                request.serializable = serializableReads
                let response = try await kv.range(request, options: options)
                let found = response.kvs.first
                return .ok(.get(value: found.map { String(decoding: $0.value, as: UTF8.self) },
                                modRevision: found?.modRevision ?? 0, headerRevision: response.header.revision))
            case .put(let key, let value):
                var request = Etcdserverpb_PutRequest()
                request.key = Data(key.utf8)
                request.value = Data(value.utf8)
                request.prevKv = previousValue
                let response = try await kv.put(request, options: options)
                let previous: PreviousValue = !previousValue ? .notRequested
                    : (response.hasPrevKv ? .value(String(decoding: response.prevKv.value, as: UTF8.self)) : .absent)
                return .ok(.put(revision: response.header.revision, previous: previous))
            case .delete(let key):
                var request = Etcdserverpb_DeleteRangeRequest()
                request.key = Data(key.utf8)
                let response = try await kv.deleteRange(request, options: options)
                return .ok(.delete(deleted: Int(response.deleted), revision: response.header.revision))
            case .compareAndPut(let key, let expected, let value):
                var compare = Etcdserverpb_Compare()
                compare.key = Data(key.utf8)
                compare.target = .mod
                compare.result = .equal
                compare.modRevision = expected
                var put = Etcdserverpb_PutRequest()
                put.key = Data(key.utf8)
                put.value = Data(value.utf8)
                var operation = Etcdserverpb_RequestOp()
                operation.requestPut = put
                var request = Etcdserverpb_TxnRequest()
                request.compare = [compare]
                request.success = [operation]
                let response = try await kv.txn(request, options: options)
                return .ok(.compareAndPut(succeeded: response.succeeded, revision: response.header.revision))
            }
        } catch {
            return .unknown
        }
    }
}

/// One client: a sequence of get/put/delete/compare-and-put calls on a few keys, each to a member chosen at random,
/// until `deadline`.
struct WorkloadClient: Sendable {
    var id: Int
    var seed: UInt64
    var keys: [String]
    var timeout: Duration
    var serializableReads = false

    func run(clients: [EtcdClient], recorder: HistoryRecorder, until deadline: UInt64) async {
        var random = SeededRandom(seed: seed ^ (UInt64(id + 1) &* 0xA24B_AED4_963E_E407))
        // The mod revision this client last saw for each key: compare-and-put guesses from it, as Kubernetes does.
        var lastModRevision: [String: Revision] = [:]
        var sequence = 0
        while monotonicNanoseconds() < deadline && sequence < 100_000 {
            sequence += 1
            let key = keys.randomElement(using: &random)!
            let member = Int.random(in: 0..<clients.count, using: &random)
            let value = "c\(id)-\(sequence)"
            let call: Call
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<35: call = .get(key: key)
            case 35..<65: call = .put(key: key, value: value)
            case 65..<75: call = .delete(key: key)
            default: call = .compareAndPut(key: key, expectedModRevision: lastModRevision[key] ?? 0, value: value)
            }
            let previousValue = Bool.random(using: &random)
            let invoked = monotonicNanoseconds()
            let outcome = await KVCalls.perform(call, previousValue: previousValue, on: clients[member], timeout: timeout,
                                                serializableReads: serializableReads)
            recorder.record(client: id, call, invokedAt: invoked, completedAt: monotonicNanoseconds(), outcome)
            switch outcome {
            case .ok(.get(_, let modRevision, _)): lastModRevision[key] = modRevision
            case .ok(.put(let revision, _)): lastModRevision[key] = revision
            case .ok(.delete(let deleted, _)) where deleted > 0: lastModRevision[key] = 0
            case .ok(.compareAndPut(true, let revision)): lastModRevision[key] = revision
            case .unknown:
                // The member is likely down or frozen: do not spin on it. Each unknown write is also one more
                // operation the checker may have to place anywhere after its invocation.
                try? await Task.sleep(for: .milliseconds(150))
            default: break
            }
        }
    }
}

/// When watchers may stop: once they have seen (or been promised by a progress response) `target`, or at the
/// hard deadline.
final class WatchStop: @unchecked Sendable {
    private let lock = NSLock()
    private var target: Revision?
    private var hardDeadline = UInt64.max

    func set(target: Revision, hardDeadline: UInt64) {
        lock.withLock {
            self.target = target
            self.hardDeadline = hardDeadline
        }
    }

    func shouldStop(coveredThrough: Revision) -> Bool {
        lock.withLock {
            if monotonicNanoseconds() >= hardDeadline { return true }
            return target.map { coveredThrough >= $0 } ?? false
        }
    }
}

/// One watcher that resumes on another member after a failure or a stall, at the revision after the last one it
/// saw, and records every segment for the watch checker.
struct Watcher: Sendable {
    var name: String
    var keys: WatchedKeys
    var previousValues: Bool
    var seed: UInt64
    /// A stream silent this long (progress is requested more often) is abandoned for another member.
    var stallLimit: Duration = .seconds(2)

    private final class Segments: @unchecked Sendable {
        let lock = NSLock()
        var segments: [WatchHistory.Segment] = []
        var lastEventAt = monotonicNanoseconds()
        var coveredThrough: Revision = 0
        var lastRevision: Revision?
    }

    private struct Stalled: Error {}
    private struct Stopped: Error {}

    func run(clients: [EtcdClient], stop: WatchStop) async -> WatchHistory {
        var random = SeededRandom(seed: seed)
        let state = Segments()
        var member = Int.random(in: 0..<clients.count, using: &random)
        var attempts = 0
        while attempts < 1_000 {
            attempts += 1
            let (covered, last) = state.lock.withLock { (state.coveredThrough, state.lastRevision) }
            if stop.shouldStop(coveredThrough: covered) || Task.isCancelled { break }
            let start = last.map { $0 + 1 } ?? state.lock.withLock { state.segments.last?.startRevision ?? 1 }
            state.lock.withLock {
                state.segments.append(WatchHistory.Segment(startRevision: start))
                state.lastEventAt = monotonicNanoseconds()
            }
            await watchOnce(client: clients[member], start: start, state: state, stop: stop)
            member = (member + Int.random(in: 1..<clients.count, using: &random)) % clients.count
            try? await Task.sleep(for: .milliseconds(100))
        }
        let segments = state.lock.withLock { state.segments }
        return WatchHistory(name: name, keys: keys, previousValues: previousValues, segments: segments)
    }

    /// One watch stream until it fails, stalls, or the watcher may stop.
    private func watchOnce(client: EtcdClient, start: Revision, state: Segments, stop: WatchStop) async {
        var create = Etcdserverpb_WatchCreateRequest()
        switch keys {
        case .key(let key):
            create.key = Data(key.utf8)
        case .prefix(let prefix):
            create.key = Data(prefix.utf8)
            var end = Array(prefix.utf8)
            precondition(!end.isEmpty && end[end.count - 1] < 0xFF, "a prefix whose range end is the next byte")
            end[end.count - 1] += 1
            create.rangeEnd = Data(end)
        }
        create.startRevision = start
        create.prevKv = previousValues
        let createRequest = { () -> Etcdserverpb_WatchRequest in
            var request = Etcdserverpb_WatchRequest()
            request.createRequest = create
            return request
        }()
        let watch = Etcdserverpb_Watch.Client(wrapping: client)
        let stallNanoseconds = UInt64(stallLimit.components.seconds) * 1_000_000_000
        let watcherName = name
        _ = try? await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await watch.watch(request: StreamingClientRequest(of: Etcdserverpb_WatchRequest.self) { writer in
                    try await writer.write(createRequest)
                    // Progress responses keep a quiet stream audibly alive and promise what has been sent.
                    for _ in 0..<100_000 {
                        try await Task.sleep(for: .milliseconds(300))
                        var progress = Etcdserverpb_WatchRequest()
                        progress.progressRequest = Etcdserverpb_WatchProgressRequest()
                        try await writer.write(progress)
                    }
                }) { response in
                    for try await message in response.messages {
                        let events = message.events.map { Self.event($0, previousValues: previousValues) }
                        state.lock.withLock {
                            state.lastEventAt = monotonicNanoseconds()
                            let index = state.segments.count - 1
                            if !events.isEmpty {
                                state.segments[index].responses.append(events)
                                state.lastRevision = events.last!.revision
                                state.coveredThrough = max(state.coveredThrough, events.last!.revision)
                            } else if !message.created && !message.canceled && message.header.revision > 0 {
                                let progress = message.header.revision
                                state.segments[index].progressRevision = max(
                                    state.segments[index].progressRevision ?? 0, progress)
                                state.coveredThrough = max(state.coveredThrough, progress)
                            }
                        }
                        if message.canceled {
                            print("watch \(watcherName): canceled by the server: \(message.cancelReason)")
                            return
                        }
                    }
                }
            }
            group.addTask {
                while true {
                    try await Task.sleep(for: .milliseconds(100))
                    let (covered, quietSince) = state.lock.withLock { (state.coveredThrough, state.lastEventAt) }
                    if stop.shouldStop(coveredThrough: covered) { throw Stopped() }
                    if monotonicNanoseconds() - quietSince > stallNanoseconds { throw Stalled() }
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    private static func event(_ event: Mvccpb_Event, previousValues: Bool) -> WatchEvent {
        let key = String(decoding: event.kv.key, as: UTF8.self)
        let previous: PreviousValue = !previousValues ? .notRequested
            : (event.hasPrevKv ? .value(String(decoding: event.prevKv.value, as: UTF8.self)) : .absent)
        switch event.type {
        case .delete:
            return WatchEvent(revision: event.kv.modRevision, kind: .delete, key: key, value: nil, previous: previous)
        default:
            return WatchEvent(revision: event.kv.modRevision, kind: .put, key: key,
                              value: String(decoding: event.kv.value, as: UTF8.self), previous: previous)
        }
    }
}

/// A seeded schedule of faults, one at a time, each healed before the next.
struct FaultSchedule: CustomStringConvertible {
    /// Which faults a schedule draws from.
    enum Mix: String, Sendable {
        /// Process faults: kill -9, SIGSTOP, whole-cluster crash.
        case processes
        /// Peer-link faults through the proxies (partitions, delays, cut connections), with some kills.
        case network
        /// Leader transfer, member remove and re-add with an empty data dir, a lagging member caught up by
        /// snapshot, with some kills.
        case membership
        /// Faults on the links between the workload's clients and the members (through client-link proxies):
        /// requests cut after reaching a member, stalled and delayed links.
        case clientLinks
    }

    /// Which direction of which links a one-way partition blocks.
    enum OneWay: Sendable {
        /// The leader's messages to the follower `offset` places after it are lost; the follower's reach it.
        case leaderToFollower(offset: Int)
        /// A member's (the leader's when nil) messages to every other member are lost; theirs reach it.
        case fromMember(Int?)
    }

    enum Fault: CustomStringConvertible {
        /// SIGKILL a member (the leader when `member` is nil), restart it after `downMilliseconds`.
        case kill(member: Int?, downMilliseconds: Int)
        /// SIGSTOP a member (the leader when `member` is nil), SIGCONT it after `pausedMilliseconds`.
        case pause(member: Int?, pausedMilliseconds: Int)
        /// SIGKILL every member at once, restart them all after `downMilliseconds`: acknowledged writes must have
        /// been durable on a quorum.
        case killAll(downMilliseconds: Int)
        /// Blocks every peer link to and from a member (the leader when nil) for `milliseconds`.
        case isolate(member: Int?, mode: PeerNetwork.PartitionMode, milliseconds: Int)
        /// Blocks the links between the leader and one follower (`offset` 1 or 2 places after it) both ways; both
        /// still reach the third member.
        case partitionFromLeader(offset: Int, mode: PeerNetwork.PartitionMode, milliseconds: Int)
        /// A one-way partition for `milliseconds` (``PeerNetwork/blockSending(_:mode:)``).
        case oneWay(OneWay, mode: PeerNetwork.PartitionMode, milliseconds: Int)
        /// Delays every chunk on every peer link to and from a member (the leader when nil).
        case delay(member: Int?, delayMilliseconds: Int, milliseconds: Int)
        /// Cuts every open peer connection, `times` times, `intervalMilliseconds` apart.
        case cutConnections(times: Int, intervalMilliseconds: Int)
        /// For `milliseconds`, each client connection that carries a request is, with probability 1/2 per chunk,
        /// cut 0–`maxHoldMilliseconds` later with the answers held back: the request may be applied, the client
        /// sees a lost connection.
        case cutClientRequests(maxHoldMilliseconds: Int, milliseconds: Int)
        /// Stalls the client links of a member (the leader when nil): requests and answers stop, connections stay.
        case stallClientLinks(member: Int?, milliseconds: Int)
        /// Delays every chunk both ways on the client links of a member (the leader when nil).
        case delayClientLinks(member: Int?, delayMilliseconds: Int, milliseconds: Int)
        /// Maintenance.MoveLeader to the follower `offset` places after the leader.
        case moveLeader(offset: Int)
        /// MemberRemove a member (the leader when nil), wipe its data dir, MemberAdd it again and start it with
        /// `--initial-cluster-state existing`.
        case removeAndReAdd(member: Int?)
        /// SIGSTOP the follower `offset` places after the leader, write enough that the leader snapshots and
        /// compacts its log past it, SIGCONT: it must install a snapshot.
        case snapshotCatchUp(offset: Int)
        /// Makes `member` the leader (Maintenance.MoveLeader).
        case moveLeaderTo(member: Int)
        /// Waits for `member`, armed with failure point `point`, to die there; restarts it disarmed. With
        /// `viaSnapshot`, first makes it lag behind the leader's snapshot as ``snapshotCatchUp(offset:)`` does.
        case awaitFailPointCrash(member: Int, point: String, viaSnapshot: Bool)

        var description: String {
            switch self {
            case .kill(let member, let down):
                "kill -9 \(Self.name(member)), restart after \(down) ms"
            case .pause(let member, let paused):
                "SIGSTOP \(Self.name(member)), SIGCONT after \(paused) ms"
            case .killAll(let down):
                "kill -9 every member, restart after \(down) ms"
            case .isolate(let member, let mode, let length):
                "isolate \(Self.name(member)) (\(mode)) for \(length) ms"
            case .partitionFromLeader(let offset, let mode, let length):
                "partition the leader from the member \(offset) after it (\(mode)) for \(length) ms"
            case .oneWay(.leaderToFollower(let offset), let mode, let length):
                "one-way partition: the leader cannot send to the member \(offset) after it (\(mode)) for \(length) ms"
            case .oneWay(.fromMember(let member), let mode, let length):
                "one-way partition: \(Self.name(member)) cannot send to any member (\(mode)) for \(length) ms"
            case .cutClientRequests(let hold, let length):
                "cut client connections carrying requests (answers held 0–\(hold) ms) for \(length) ms"
            case .stallClientLinks(let member, let length):
                "stall \(Self.name(member))'s client links for \(length) ms"
            case .delayClientLinks(let member, let delay, let length):
                "delay \(Self.name(member))'s client links by \(delay) ms for \(length) ms"
            case .delay(let member, let delay, let length):
                "delay \(Self.name(member))'s peer links by \(delay) ms for \(length) ms"
            case .cutConnections(let times, let interval):
                "cut every peer connection \(times) times, \(interval) ms apart"
            case .moveLeader(let offset):
                "move the leader to the member \(offset) after it"
            case .removeAndReAdd(let member):
                "remove \(Self.name(member)) and add it back empty"
            case .snapshotCatchUp(let offset):
                "pause the member \(offset) after the leader, write past the snapshot, resume"
            case .moveLeaderTo(let member):
                "move the leader to member \(member)"
            case .awaitFailPointCrash(let member, let point, let viaSnapshot):
                "\(viaSnapshot ? "make member \(member) lag past a snapshot, " : "")wait for member \(member) to die at "
                    + "\(point), restart it"
            }
        }

        private static func name(_ member: Int?) -> String { member.map { "member \($0)" } ?? "the leader" }

        /// The fault's kind, for checking that the default schedules draw every kind of their mix.
        var kind: String {
            switch self {
            case .kill: "kill"
            case .pause: "pause"
            case .killAll: "killAll"
            case .isolate: "isolate"
            case .partitionFromLeader: "partition"
            case .oneWay(.leaderToFollower, _, _): "oneWayLeaderToFollower"
            case .oneWay(.fromMember, _, _): "oneWayFromMember"
            case .delay: "delay"
            case .cutConnections: "cut"
            case .cutClientRequests: "cutClientRequests"
            case .stallClientLinks: "stallClientLinks"
            case .delayClientLinks: "delayClientLinks"
            case .moveLeader, .moveLeaderTo: "moveLeader"
            case .removeAndReAdd: "removeAndReAdd"
            case .snapshotCatchUp: "snapshotCatchUp"
            case .awaitFailPointCrash: "failPoint"
            }
        }
    }

    /// (milliseconds after the workload starts, fault)
    var faults: [(atMilliseconds: Int, fault: Fault)]

    init(faults: [(atMilliseconds: Int, fault: Fault)]) {
        self.faults = faults
    }

    init(seed: UInt64, durationMilliseconds: Int, members: Int, mix: Mix = .processes) {
        var random = SeededRandom(seed: seed)
        var faults: [(Int, Fault)] = []
        var at = Int.random(in: 500...1_500, using: &random)
        while at < durationMilliseconds - 1_500 && faults.count < 50 {
            let member: Int? = Bool.random(using: &random) ? nil : Int.random(in: 0..<members, using: &random)
            let length = Int.random(in: 300...2_000, using: &random)
            let fault: Fault
            let roll = Int.random(in: 0..<100, using: &random)
            switch mix {
            case .processes:
                switch roll {
                case 0..<50: fault = .kill(member: member, downMilliseconds: length)
                case 50..<85: fault = .pause(member: member, pausedMilliseconds: length)
                default: fault = .killAll(downMilliseconds: length)
                }
            case .network:
                let mode: PeerNetwork.PartitionMode = Bool.random(using: &random) ? .refuse : .stall
                switch roll {
                case 0..<20: fault = .isolate(member: member, mode: mode, milliseconds: length)
                case 20..<34:
                    fault = .partitionFromLeader(offset: Int.random(in: 1...2, using: &random), mode: mode,
                                                 milliseconds: length)
                // Long enough (≥ 1.2 s) for the cut-off side to time out and act (a follower asks for votes, the
                // others elect a new leader), which is what the one-way faults are for.
                case 34..<46:
                    fault = .oneWay(.leaderToFollower(offset: Int.random(in: 1...2, using: &random)), mode: mode,
                                    milliseconds: max(length, 1_200))
                case 46..<58:
                    fault = .oneWay(.fromMember(member), mode: mode, milliseconds: max(length, 1_200))
                case 58..<74:
                    fault = .delay(member: member, delayMilliseconds: Int.random(in: 20...200, using: &random),
                                   milliseconds: length)
                case 74..<88:
                    fault = .cutConnections(times: Int.random(in: 2...8, using: &random),
                                            intervalMilliseconds: Int.random(in: 30...300, using: &random))
                default: fault = .kill(member: member, downMilliseconds: length)
                }
            case .membership:
                switch roll {
                case 0..<30: fault = .moveLeader(offset: Int.random(in: 1...2, using: &random))
                case 30..<60: fault = .removeAndReAdd(member: member)
                case 60..<90: fault = .snapshotCatchUp(offset: Int.random(in: 1...2, using: &random))
                default: fault = .kill(member: member, downMilliseconds: length)
                }
            case .clientLinks:
                // No kills: the other mixes have them, and a client link is cut by a kill as by a cut fault.
                switch roll {
                case 40..<65: fault = .stallClientLinks(member: member, milliseconds: length)
                case 65..<88:
                    fault = .delayClientLinks(member: member, delayMilliseconds: Int.random(in: 20...300, using: &random),
                                              milliseconds: length)
                // At least 0.5 s: a watcher's stream carries a progress request every 0.3 s, so it is cut too.
                default:
                    fault = .cutClientRequests(maxHoldMilliseconds: Int.random(in: 0...300, using: &random),
                                               milliseconds: max(length, 500))
                }
            }
            faults.append((at, fault))
            at += length + Int.random(in: 700...2_000, using: &random)
        }
        self.faults = faults
    }

    var description: String {
        faults.map { "at \($0.atMilliseconds) ms: \($0.fault)" }.joined(separator: "; ")
    }
}
