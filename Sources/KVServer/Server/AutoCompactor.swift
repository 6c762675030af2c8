import Foundation
import RaftKV

/// etcd's `--auto-compaction-*`: the leader compacts old history on a schedule.
struct AutoCompactor {
    let server: EtcdServer
    let policy: ServerConfiguration.AutoCompaction

    /// etcd's revision mode checks every 5 minutes.
    static let revisionCheckInterval: Duration = .seconds(300)
    /// Samples kept for periodic mode (one per tenth of the retention, as etcd samples).
    static let periodicSamples = 10

    func run() async {
        switch policy {
        case .disabled:
            return
        case .revision(let retained):
            while await sleep(Self.revisionCheckInterval) {
                await compact(to: server.currentRevision - retained)
            }
        case .periodic(let retention):
            // The revision seen `retention` ago is the one to compact to; sample every tenth of it.
            let interval = max(retention / Self.periodicSamples, .seconds(1))
            var samples: [Revision] = []
            while await sleep(interval) {
                samples.append(server.currentRevision)
                if samples.count > Self.periodicSamples {
                    await compact(to: samples.removeFirst())
                }
            }
        }
    }

    private func compact(to revision: Revision) async {
        guard server.raftStatus.role == .leader, revision > 0 else { return }
        let compacted = server.store.stateMachine.withStore { $0.compactedRevision }
        guard revision > compacted else { return }
        do {
            try await server.store.compact(revision: revision)
            server.logger.info("auto-compacted history", metadata: ["revision": "\(revision)"])
        } catch {
            server.logger.warning("auto-compaction to \(revision) failed: \(error)")
        }
    }

    private func sleep(_ duration: Duration) async -> Bool {
        do {
            try await Task.sleep(for: duration)
            return true
        } catch {
            return false
        }
    }
}
