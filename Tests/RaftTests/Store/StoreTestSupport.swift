import Foundation
import Testing
@testable import RaftKV

func u8(_ text: String) -> [UInt8] { Array(text.utf8) }

/// A scratch directory removed at the end.
final class StoreScratch: @unchecked Sendable {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("kvstore-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func member(_ id: NodeID) -> URL { url.appendingPathComponent("m\(id)") }
}

/// Fast timings: 5 ms ticks, 150–300 ms elections (shorter ones depose leaders on a loaded machine), lease timers
/// every 10 ms.
func fastConfiguration(clock: ManualLeaseClock? = nil) -> KVStore.Configuration {
    var configuration = KVStore.Configuration()
    configuration.tickInterval = .milliseconds(5)
    configuration.electionTimeoutTicks = 30
    configuration.heartbeatTicks = 1
    configuration.requestTimeout = .seconds(3)
    configuration.leaseTickInterval = .milliseconds(10)
    configuration.logger.logLevel = .critical
    if let clock { configuration.clock = clock }
    return configuration
}

/// A store with its `run()` task.
final class RunningStore: @unchecked Sendable {
    let store: KVStore
    let task: Task<Void, any Error>

    init(_ store: KVStore) {
        self.store = store
        task = Task { try await store.run() }
    }

    /// Clean shutdown.
    func close() async {
        await store.close()
        _ = await task.result
    }
}

/// Polls `condition` every 10 ms, at most `seconds × 100` times. Counting polls rather than wall-clock time keeps
/// the tests from failing when CPU-bound tests of other suites hold the (2-thread) pool for seconds.
func eventually(_ what: String, seconds: Double = 5, _ condition: () async throws -> Bool) async throws {
    for _ in 0..<Int(seconds * 100) {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    Issue.record("not reached within \(seconds) s: \(what)")
    throw CancellationError()
}

/// Expects `body` to fail with a `KVError` whose message is `message`.
func expectKVError(_ message: String, sourceLocation: SourceLocation = #_sourceLocation,
                   _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("expected \"\(message)\", but it succeeded", sourceLocation: sourceLocation)
    } catch let error as KVError {
        #expect(error.description == message, sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \"\(message)\", got \(error)", sourceLocation: sourceLocation)
    }
}

/// A cluster of embedded stores in one process over a `LocalTransport`.
final class StoreCluster: @unchecked Sendable {
    let scratch: StoreScratch
    let transport = LocalTransport()
    let clock: ManualLeaseClock
    var members: [NodeID: RunningStore] = [:]
    var configuration: KVStore.Configuration

    init(size: Int, configure: (inout KVStore.Configuration) -> Void = { _ in }) throws {
        scratch = try StoreScratch()
        clock = ManualLeaseClock()
        configuration = fastConfiguration(clock: clock)
        configure(&configuration)
        let membership = Membership(voters: Set(1...NodeID(size)))
        for id in 1...NodeID(size) { try start(id, membership: membership) }
    }

    func start(_ id: NodeID, membership: Membership?) throws {
        let store = try KVStore(directory: scratch.member(id), memberID: id, initialMembership: membership,
                                transport: transport, configuration: configuration)
        transport.register(store.node)
        members[id] = RunningStore(store)
    }

    func store(_ id: NodeID) -> KVStore { members[id]!.store }

    func stop(_ id: NodeID) async {
        transport.unregister(id)
        await members[id]?.close()
        members[id] = nil
    }

    func shutdown() async {
        for id in Array(members.keys) { await stop(id) }
    }

    /// Waits for a leader among the running members that has promoted its lease manager and that every running
    /// member knows.
    func leader() async throws -> KVStore {
        var found: KVStore?
        try await eventually("a leader") {
            for member in members.values where await member.store.node.status.role == .leader {
                guard member.store.leaseManager.isPrimary else { return false }
                for other in members.values where await other.store.node.status.leader != member.store.memberID {
                    return false
                }
                found = member.store
                return true
            }
            return false
        }
        return found!
    }

    /// Runs `body` on the current leader, again on the next one when leadership moved under it (the request was
    /// then not applied: "leader changed" means a new leader's log replaced it).
    @discardableResult
    func onLeader<T>(_ body: (KVStore) async throws -> T) async throws -> T {
        for _ in 0..<20 {
            let leader = try await leader()
            do {
                return try await body(leader)
            } catch KVError.leaderChanged, KVError.notLeader, KVError.noLeader {
                continue
            }
        }
        throw KVError.noLeader
    }

    func followers(of leader: KVStore) -> [KVStore] {
        members.values.map(\.store).filter { $0.memberID != leader.memberID }
    }
}
