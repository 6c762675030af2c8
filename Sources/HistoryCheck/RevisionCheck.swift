/// Checks that tie keys together through etcd's global revision, which the per-key search cannot see.
///
/// Checked, over operations the store answered:
/// - every acknowledged write (put, delete that deleted, compare-and-put that succeeded) has its own revision;
/// - real time: when A completed before B was invoked, B's revision is at least A's, and strictly greater when B
///   is an acknowledged write (a read's revision is its header revision: the store revision it was served at);
/// - a read is the state at its header revision: its mod revision is not after the header revision; no
///   acknowledged write of the same key has a revision in (mod revision, header revision]; and the write with the
///   read's mod revision, when acknowledged, is a write of that key with that value.
///
/// Not checked: that revisions have no gaps (writes with unknown or failed outcome may consume revisions), and
/// reads of absent keys against unknown-outcome deletes (the per-key search covers what can be decided there).
enum RevisionCheck {
    static func violations(in operations: [Operation]) -> [String] {
        var problems: [String] = []
        let answered = operations.filter { $0.reply != nil }

        var writerOfRevision: [Revision: Operation] = [:]
        for operation in answered {
            guard let revision = operation.acknowledgedWriteRevision else { continue }
            if let other = writerOfRevision[revision] {
                problems.append("two acknowledged writes have revision \(revision):\n    \(other)\n    \(operation)")
            } else {
                writerOfRevision[revision] = operation
            }
        }

        problems += realTimeViolations(answered)

        var writesByKey: [String: [Operation]] = [:]
        for operation in writerOfRevision.values { writesByKey[operation.call.key, default: []].append(operation) }
        for operation in answered {
            guard case .get(let key) = operation.call,
                  case .ok(.get(let value, let modRevision, let header)) = operation.outcome else { continue }
            if modRevision > header {
                problems.append("a read's mod revision is after its own revision:\n    \(operation)")
                continue
            }
            guard value != nil else { continue }
            if let newer = writesByKey[key, default: []].first(where: {
                $0.acknowledgedWriteRevision.map { $0 > modRevision && $0 <= header } ?? false
            }) {
                problems.append("stale read of \(key): at revision \(header) it returns the value of revision "
                    + "\(modRevision), but an acknowledged write changed the key in between:\n    \(newer)\n    \(operation)")
            }
            if let writer = writerOfRevision[modRevision] {
                let wrote: String?
                switch writer.call {
                case .put(let writtenKey, let written), .compareAndPut(let writtenKey, _, let written):
                    wrote = writtenKey == key ? written : nil
                case .delete, .get: wrote = nil
                }
                if wrote != value {
                    problems.append("a read's mod revision \(modRevision) belongs to another write:\n    \(writer)\n    "
                        + "\(operation)")
                }
            }
        }
        return problems
    }

    /// One sweep in invocation order, keeping the highest revision among operations completed before it.
    private static func realTimeViolations(_ answered: [Operation]) -> [String] {
        let byInvocation = answered.sorted { $0.invokedAtNanoseconds < $1.invokedAtNanoseconds }
        let byCompletion = answered.sorted { $0.completedAtNanoseconds < $1.completedAtNanoseconds }
        var problems: [String] = []
        var completed = 0
        var highest: Operation?
        for operation in byInvocation {
            while completed < byCompletion.count
                && byCompletion[completed].completedAtNanoseconds < operation.invokedAtNanoseconds {
                let candidate = byCompletion[completed]
                if highest.map({ candidate.reply!.revision > $0.reply!.revision }) ?? true { highest = candidate }
                completed += 1
            }
            guard let earlier = highest, let reply = operation.reply else { continue }
            let earlierRevision = earlier.reply!.revision
            let consistent = reply.createdRevision ? reply.revision > earlierRevision : reply.revision >= earlierRevision
            if !consistent {
                problems.append("revision goes back in real time: the second operation began after the first "
                    + "completed:\n    \(earlier)\n    \(operation)")
                if problems.count >= 10 { break }
            }
        }
        return problems
    }
}
