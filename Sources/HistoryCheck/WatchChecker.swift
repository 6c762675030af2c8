/// One event a watcher received.
public struct WatchEvent: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable { case put, delete }

    public var revision: Revision
    public var kind: Kind
    public var key: String
    /// The value written by a put; nil for a delete.
    public var value: String?
    /// `prev_kv`: `.notRequested` when the watch did not ask for it.
    public var previous: PreviousValue

    public init(revision: Revision, kind: Kind, key: String, value: String?, previous: PreviousValue = .notRequested) {
        precondition((kind == .put) == (value != nil), "a put event has a value and a delete event has none")
        self.revision = revision
        self.kind = kind
        self.key = key
        self.value = value
        self.previous = previous
    }

    public var description: String {
        var text = "\(kind == .put ? "PUT" : "DELETE") \(key)"
        if let value { text += " = \(value.debugDescription)" }
        text += " at revision \(revision)"
        switch previous {
        case .notRequested: break
        case .absent: text += " (prev_kv: none)"
        case .value(let previous): text += " (prev_kv: \(previous.debugDescription))"
        }
        return text
    }
}

/// The keys a watch covers.
public enum WatchedKeys: Hashable, Sendable {
    case key(String)
    case prefix(String)

    public func contains(_ key: String) -> Bool {
        switch self {
        case .key(let watched): key == watched
        case .prefix(let prefix): key.hasPrefix(prefix)
        }
    }
}

/// What one watcher received, across resumptions: each segment is one watch, created at `startRevision`
/// (etcd's inclusive `start_revision`; for a watch created "from now", the created response's header revision + 1).
public struct WatchHistory: Sendable {
    public struct Segment: Sendable {
        public var startRevision: Revision
        /// Events in the order received, grouped by the watch response that carried them.
        public var responses: [[WatchEvent]]
        /// The highest header revision of a progress response (no events) on this watch: etcd promises that no
        /// later event undercuts it, so every write up to it must have been delivered. nil: none received.
        public var progressRevision: Revision?

        public init(startRevision: Revision, responses: [[WatchEvent]] = [], progressRevision: Revision? = nil) {
            precondition(startRevision > 0, "an effective start revision is positive")
            self.startRevision = startRevision
            self.responses = responses
            self.progressRevision = progressRevision
        }
    }

    public var name: String
    public var keys: WatchedKeys
    public var previousValues: Bool
    public var segments: [Segment]

    public init(name: String, keys: WatchedKeys, previousValues: Bool, segments: [Segment]) {
        self.name = name
        self.keys = keys
        self.previousValues = previousValues
        self.segments = segments
    }
}

/// Checks watch streams against the writes a KV history acknowledged.
///
/// Checked, per watcher (all its segments as one stream):
/// - every event is in the watched keys, at or after the segment's start revision;
/// - ordered and atomic: revisions increase from one response to the next (one revision's events are never split
///   across responses), never decrease within a response, and no key appears twice in one revision;
/// - a resumed segment starts at the last revision seen + 1 (or where the previous segment started, if it saw
///   nothing), so the stream continues exactly;
/// - each event is an acknowledged write with that revision, key, kind and value, or (when no acknowledged write
///   has that revision) a write of that key, kind and value whose outcome was unknown;
/// - no gaps: every acknowledged write of a watched key with a revision from the first start revision up to the
///   last revision delivered (or the highest progress revision, if higher) was delivered; resumptions are meant
///   to be contiguous, so a resumption that starts late leaves a gap too;
/// - `prev_kv`, when requested, is the key's value before the event: the latest known change of the key before the
///   event's revision (known = acknowledged, or seen by any watcher), or the value of an unknown-outcome write of
///   the key (which may have committed in between unseen).
///
/// Across watchers: two watchers never disagree about the event at one revision of one key.
///
/// Not checked: that writes after the last revision a watcher saw were delivered (the stream may simply have
/// ended), compaction, progress notifications, fragments.
public struct WatchChecker: Sendable {
    public init() {}

    public struct Report: Sendable, CustomStringConvertible {
        public var problems: [String]
        public var eventsChecked: Int
        public var watchersChecked: Int
        public var isValid: Bool { problems.isEmpty }

        public var description: String {
            var text = "\(isValid ? "valid" : "violation"): \(eventsChecked) events from \(watchersChecked) watchers"
            for problem in problems { text += "\n" + problem }
            return text
        }
    }

    private struct Change: Equatable {
        var kind: WatchEvent.Kind
        var value: String?
    }

    public func check(_ watches: [WatchHistory], against history: History) -> Report {
        // Acknowledged writes by revision, and the writes that may have committed at a revision nobody knows.
        var acknowledged: [Revision: (key: String, change: Change, operation: Operation)] = [:]
        var unknownWrites: [String: [Change]] = [:]
        for operation in history.operations {
            let change: Change
            switch operation.call {
            case .put(_, let value), .compareAndPut(_, _, let value): change = Change(kind: .put, value: value)
            case .delete: change = Change(kind: .delete, value: nil)
            case .get: continue
            }
            if operation.outcome == .unknown {
                unknownWrites[operation.call.key, default: []].append(change)
            } else if let revision = operation.acknowledgedWriteRevision {
                acknowledged[revision] = (operation.call.key, change, operation)
            }
        }

        var problems: [String] = []
        var eventsChecked = 0
        // Every change known to have committed: acknowledged, or delivered by a watch.
        var known: [String: [Revision: (change: Change, source: String)]] = [:]
        for (revision, write) in acknowledged {
            known[write.key, default: [:]][revision] = (write.change, "acknowledged \(write.operation)")
        }

        for watch in watches {
            var lastRevision: Revision?
            var seen: Set<Revision> = []
            var coveredThrough: Revision = 0
            precondition(!watch.segments.isEmpty, "watch \(watch.name) has no segment")
            for (segmentIndex, segment) in watch.segments.enumerated() {
                if segmentIndex > 0 {
                    let expected = lastRevision.map { $0 + 1 } ?? watch.segments[segmentIndex - 1].startRevision
                    if segment.startRevision != expected {
                        problems.append("watch \(watch.name): resumption \(segmentIndex) starts at revision "
                            + "\(segment.startRevision), not \(expected) (the revision after the last one seen)")
                    }
                }
                coveredThrough = max(coveredThrough, segment.progressRevision ?? 0)
                for (responseIndex, response) in segment.responses.enumerated() {
                    var keysInRevision: Set<String> = []
                    for (eventIndex, event) in response.enumerated() {
                        eventsChecked += 1
                        let place = "watch \(watch.name) segment \(segmentIndex) response \(responseIndex) event "
                            + "\(eventIndex): \(event)"
                        if !watch.keys.contains(event.key) {
                            problems.append("\(place): key outside the watched keys \(watch.keys)")
                        }
                        if event.revision < segment.startRevision {
                            problems.append("\(place): before the watch's start revision \(segment.startRevision)")
                        }
                        if let last = lastRevision {
                            if eventIndex == 0 && event.revision == last {
                                problems.append("\(place): revision \(last) continues in a new response (split "
                                    + "across responses) or is delivered twice")
                            } else if event.revision < last {
                                problems.append("\(place): revision goes back from \(last) (reordered or duplicated)")
                            }
                        }
                        if event.revision != lastRevision { keysInRevision = [] }
                        if !keysInRevision.insert(event.key).inserted {
                            problems.append("\(place): key \(event.key) twice in revision \(event.revision) (duplicated)")
                        }
                        lastRevision = max(lastRevision ?? event.revision, event.revision)
                        seen.insert(event.revision)

                        let change = Change(kind: event.kind, value: event.value)
                        if let write = acknowledged[event.revision] {
                            if write.key != event.key || write.change != change {
                                problems.append("\(place): revision \(event.revision) was \(write.operation)")
                            }
                        } else if !(unknownWrites[event.key] ?? []).contains(change) {
                            problems.append("\(place): no write produced this event (no acknowledged write has "
                                + "revision \(event.revision), no unknown-outcome write matches)")
                        }
                        if let other = known[event.key]?[event.revision] {
                            if other.change != change {
                                problems.append("\(place): disagrees with \(other.source)")
                            }
                        } else {
                            known[event.key, default: [:]][event.revision] = (change, "watch \(watch.name)")
                        }
                    }
                }
            }
            coveredThrough = max(coveredThrough, lastRevision ?? 0)
            problems += gaps(in: watch, seen: seen, through: coveredThrough, acknowledged: acknowledged)
        }

        // prev_kv needs every watcher's events first: an event seen by one watcher may be the previous value of
        // an event another watcher reported.
        let sortedKnown = known.mapValues { changes in changes.sorted { $0.key < $1.key } }
        for watch in watches where watch.previousValues {
            for (segmentIndex, segment) in watch.segments.enumerated() {
                for response in segment.responses {
                    for event in response {
                        let allowed = allowedPreviousValues(of: event, known: sortedKnown[event.key] ?? [],
                                                            unknownWrites: unknownWrites[event.key] ?? [])
                        if !allowed.contains(event.previous) {
                            let expected = allowed.map { "\($0)" }.joined(separator: " or ")
                            problems.append("watch \(watch.name) segment \(segmentIndex): \(event): wrong prev_kv, "
                                + "expected \(expected)")
                        }
                    }
                }
            }
        }
        return Report(problems: problems, eventsChecked: eventsChecked, watchersChecked: watches.count)
    }

    private func gaps(in watch: WatchHistory, seen: Set<Revision>, through last: Revision,
                      acknowledged: [Revision: (key: String, change: Change, operation: Operation)]) -> [String] {
        guard let first = watch.segments.first?.startRevision, first <= last else { return [] }
        var missing: [Revision] = []
        for (revision, write) in acknowledged
        where revision >= first && revision <= last && watch.keys.contains(write.key) && !seen.contains(revision) {
            missing.append(revision)
        }
        return missing.sorted().prefix(5).map { revision in
            "watch \(watch.name): gap: never delivered revision \(revision) (\(acknowledged[revision]!.operation)), "
                + "though it covered revisions \(first) to \(last)"
        }
    }

    private func allowedPreviousValues(of event: WatchEvent, known: [(key: Revision, value: (change: Change, source: String))],
                                       unknownWrites: [Change]) -> Set<PreviousValue> {
        var allowed: Set<PreviousValue> = []
        if let before = known.last(where: { $0.key < event.revision }) {
            allowed.insert(before.value.change.value.map(PreviousValue.value) ?? .absent)
        } else {
            allowed.insert(.absent)
        }
        for change in unknownWrites {
            allowed.insert(change.value.map(PreviousValue.value) ?? .absent)
        }
        if event.kind == .delete { allowed.remove(.absent) }
        return allowed
    }
}
