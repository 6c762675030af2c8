import Foundation
import RaftKV

/// A typed watch event, as Kubernetes' `watch.Event`.
public enum WatchEvent<Object: KubeObject>: Sendable, Hashable {
    case added(Object)
    case modified(Object)
    /// The object as it last was, with the resourceVersion of its deletion.
    case deleted(Object)
    /// Nothing changed up to this resourceVersion: a client resuming from it misses nothing.
    case bookmark(resourceVersion: String)

    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`.
    public var type: String {
        switch self {
        case .added: return "ADDED"
        case .modified: return "MODIFIED"
        case .deleted: return "DELETED"
        case .bookmark: return "BOOKMARK"
        }
    }

    public var object: Object? {
        switch self {
        case .added(let object), .modified(let object), .deleted(let object): return object
        case .bookmark: return nil
        }
    }

    public var resourceVersion: String {
        switch self {
        case .added(let object), .modified(let object), .deleted(let object): return object.metadata.resourceVersion ?? ""
        case .bookmark(let version): return version
        }
    }
}

public struct WatchOptions: Sendable {
    /// nil or "0": start with ADDED events for every current object, then changes. "N": changes after
    /// revision N (410 Gone if N is compacted).
    public var resourceVersion: String?
    public var labelSelector: String?
    public var fieldSelector: String?
    /// Deliver BOOKMARK events (from etcd's progress notifications and ``ObjectWatch/requestProgress()``).
    public var allowBookmarks: Bool

    public init(resourceVersion: String? = nil, labelSelector: String? = nil, fieldSelector: String? = nil,
                allowBookmarks: Bool = false) {
        self.resourceVersion = resourceVersion
        self.labelSelector = labelSelector
        self.fieldSelector = fieldSelector
        self.allowBookmarks = allowBookmarks
    }
}

extension Registry {
    /// Watches one namespace (or all) from a resourceVersion, as kube-apiserver's etcd3 watcher: an etcd watch
    /// on the prefix from rv+1 with prev_kv and progress notifications. With selectors, an object that starts
    /// matching is ADDED and one that stops matching is DELETED, so a client's cache stays exact.
    public func watch(namespace: String? = nil, _ options: WatchOptions = WatchOptions()) async throws -> ObjectWatch<Object> {
        let labels = try LabelSelectorExpression(parsing: options.labelSelector ?? "")
        let fields = try FieldSelectorExpression(parsing: options.fieldSelector ?? "")
        try fields.validate(for: Object.self)
        let namespace = Object.storage.isNamespaced ? namespace.flatMap { $0.isEmpty ? nil : $0 } : nil
        let prefix = Array(store.keys.listPrefix(Object.storage, namespace: namespace).utf8)

        var initial: [WatchEvent<Object>] = []
        let requested: Revision
        if let version = options.resourceVersion, !version.isEmpty, version != "0" {
            guard let revision = Int64(version), revision > 0 else {
                throw ObjectError.badRequest("invalid resource version: \(version)")
            }
            requested = revision
        } else {
            // Kubernetes' "current state, then changes": the list as ADDED events, then the watch after it.
            let list = try await self.list(namespace: namespace, ListOptions(labelSelector: options.labelSelector,
                                                                             fieldSelector: options.fieldSelector))
            initial = list.items.map { .added($0) }
            requested = Int64(list.resourceVersion) ?? 0
        }
        let backendWatch = try await backend.watch(WatchCreateRequest(
            key: prefix, rangeEnd: KeyRange.prefixEnd(prefix), startRevision: requested + 1,
            progressNotify: true, prevKv: true))
        return ObjectWatch(registry: self, watch: backendWatch, requested: requested, pending: initial,
                           labels: labels, fields: fields, allowBookmarks: options.allowBookmarks)
    }
}

/// An open watch. Read it with ``next()`` (or as an AsyncSequence) from one task; ``close()`` when done.
public final class ObjectWatch<Object: KubeObject>: AsyncSequence, @unchecked Sendable {
    public typealias Element = WatchEvent<Object>

    let registry: Registry<Object>
    let watch: any BackendWatch
    let requested: Revision
    let labels: LabelSelectorExpression
    let fields: FieldSelectorExpression
    let allowBookmarks: Bool
    // Touched only by the single reader.
    private var pending: [WatchEvent<Object>]
    private var finished = false

    init(registry: Registry<Object>, watch: any BackendWatch, requested: Revision, pending: [WatchEvent<Object>],
         labels: LabelSelectorExpression, fields: FieldSelectorExpression, allowBookmarks: Bool) {
        self.registry = registry
        self.watch = watch
        self.requested = requested
        self.pending = pending
        self.labels = labels
        self.fields = fields
        self.allowBookmarks = allowBookmarks
    }

    deinit { watch.close() }

    /// The next event; nil once closed. Throws 410 Gone (`too old resource version: N (compacted)`) when the
    /// requested revision has been compacted: list again and watch from the list's resourceVersion.
    public func next() async throws -> WatchEvent<Object>? {
        while true {
            if !pending.isEmpty { return pending.removeFirst() }
            if finished { return nil }
            guard let response = try await watch.next() else {
                finished = true
                return nil
            }
            if response.canceled {
                finished = true
                watch.close()
                if response.compactRevision > 0 {
                    throw ObjectError.tooOldResourceVersion(requested, response.compactRevision)
                }
                throw ObjectError.internalError(response.cancelReason.isEmpty ? "watch canceled" : response.cancelReason)
            }
            if response.created { continue }
            if response.events.isEmpty {
                if allowBookmarks && response.headerRevision > 0 {
                    return .bookmark(resourceVersion: String(response.headerRevision))
                }
                continue
            }
            for event in response.events {
                if let converted = try convert(event) { pending.append(converted) }
            }
        }
    }

    /// Asks for a BOOKMARK at the current revision (delivered once every earlier event has been).
    public func requestProgress() async { await watch.requestProgress() }

    public func close() {
        finished = true
        pending.removeAll()
        watch.close()
    }

    func matches(_ object: Object) -> Bool { labels.matches(object.metadata.labels) && fields.matches(object) }

    /// etcd event → Kubernetes event, with selector transitions (k8s.io/apiserver etcd3 watcher's transform).
    func convert(_ event: RaftKV.Event) throws -> WatchEvent<Object>? {
        let revision = String(event.kv.modRevision)
        var old: Object?
        if let prevKv = event.prevKv, !(event.kind == .put && event.kv.createRevision == event.kv.modRevision) {
            var object = try registry.decode(prevKv).0
            object.metadata.resourceVersion = revision
            old = object
        }
        switch event.kind {
        case .delete:
            guard let old, matches(old) else { return nil }
            return .deleted(old)
        case .put:
            let current = try registry.decode(event.kv).0
            let currentMatches = matches(current)
            let oldMatches = old.map(matches) ?? false
            switch (currentMatches, oldMatches) {
            case (true, true): return .modified(current)
            case (true, false): return .added(current)
            case (false, true): return .deleted(old!)
            case (false, false): return nil
            }
        }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let watch: ObjectWatch<Object>
        public mutating func next() async throws -> WatchEvent<Object>? { try await watch.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(watch: self) }
}
