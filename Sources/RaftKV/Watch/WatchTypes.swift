/// A server-side event filter of a watch (etcd's `WatchCreateRequest.FilterType`).
public enum WatchFilter: Int, Sendable, Hashable, CaseIterable {
    /// Drop put events.
    case noPut = 0
    /// Drop delete events.
    case noDelete = 1

    func drops(_ event: Event) -> Bool {
        switch self {
        case .noPut: return event.kind == .put
        case .noDelete: return event.kind == .delete
        }
    }
}

/// etcd's `WatchCreateRequest`.
public struct WatchCreateRequest: Sendable, Hashable {
    /// The key to watch; empty is etcd's smallest key `"\0"`.
    public var key: [UInt8]
    /// Empty = the single key; `"\0"` = every key ≥ `key`; otherwise `[key, rangeEnd)`.
    public var rangeEnd: [UInt8]
    /// First revision to report, inclusive; 0 = from the next revision.
    public var startRevision: Revision
    /// Ask for periodic progress notifications while no event is sent.
    public var progressNotify: Bool
    public var filters: [WatchFilter]
    /// Fill each event's `prevKv` (otherwise it is dropped).
    public var prevKv: Bool
    /// The client-chosen watch ID; 0 lets the stream choose one (etcd's `AutoWatchID`).
    public var watchID: Int64
    /// Split a response bigger than the hub's `maxResponseBytes` into fragments.
    public var fragment: Bool

    public init(key: [UInt8], rangeEnd: [UInt8] = [], startRevision: Revision = 0, progressNotify: Bool = false,
                filters: [WatchFilter] = [], prevKv: Bool = false, watchID: Int64 = 0, fragment: Bool = false) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.startRevision = startRevision
        self.progressNotify = progressNotify
        self.filters = filters
        self.prevKv = prevKv
        self.watchID = watchID
        self.fragment = fragment
    }
}

/// etcd's `WatchResponse`, without the header fields the RPC layer fills (cluster, member, term).
public struct WatchResponse: Sendable, Hashable {
    /// etcd's `clientv3.InvalidWatchID`: the ID of stream-wide progress responses and of failed creates.
    public static let invalidWatchID: Int64 = -1

    /// The header revision. For an event response, every event of the watcher up to this revision has been sent;
    /// for a progress response, no event of the watcher (or of the stream, for ``invalidWatchID``) at or below it
    /// is still to come.
    public var headerRevision: Revision
    public var watchID: Int64
    public var created: Bool
    public var canceled: Bool
    public var cancelReason: String
    /// Set, with `canceled`, when the watcher's next revision was compacted away.
    public var compactRevision: Revision
    /// True for every fragment of a split revision but the last.
    public var fragment: Bool
    public var events: [Event]

    public init(headerRevision: Revision, watchID: Int64, created: Bool = false, canceled: Bool = false,
                cancelReason: String = "", compactRevision: Revision = 0, fragment: Bool = false, events: [Event] = []) {
        self.headerRevision = headerRevision
        self.watchID = watchID
        self.created = created
        self.canceled = canceled
        self.cancelReason = cancelReason
        self.compactRevision = compactRevision
        self.fragment = fragment
        self.events = events
    }

    /// A progress notification: no events and no state change (clientv3's `IsProgressNotify`).
    public var isProgressNotify: Bool {
        events.isEmpty && !created && !canceled && compactRevision == 0 && !fragment
    }
}

/// etcd's cancel reasons, matched by clients.
public enum WatchCancelReason {
    public static let duplicateID = "mvcc: duplicate watch ID provided on the WatchStream"
    public static let emptyRange = "mvcc: watcher range is empty"
    /// Not in etcd, which has no per-stream limit.
    public static let tooManyWatchers = "etcdserver: too many watchers on the stream"
}

// MARK: Encoded sizes

/// Protobuf encoded sizes of the watch messages (etcd's `Size()`), so fragments are cut where etcd cuts them.
enum WatchEncodedSize {
    static func varint(_ value: UInt64) -> Int {
        var value = value
        var bytes = 1
        while value >= 0x80 {
            value >>= 7
            bytes += 1
        }
        return bytes
    }

    static func int64Field(_ value: Int64) -> Int { value == 0 ? 0 : 1 + varint(UInt64(bitPattern: value)) }
    static func bytesField(_ count: Int) -> Int { count == 0 ? 0 : 1 + varint(UInt64(count)) + count }
    static func messageField(_ size: Int) -> Int { 1 + varint(UInt64(size)) + size }

    static func keyValue(_ kv: KeyValue) -> Int {
        bytesField(kv.key.count) + int64Field(kv.createRevision) + int64Field(kv.modRevision)
            + int64Field(kv.version) + bytesField(kv.value.count) + int64Field(kv.lease)
    }

    static func event(_ event: Event) -> Int {
        var size = event.kind == .put ? 0 : 2
        size += messageField(keyValue(event.kv))
        if let prev = event.prevKv { size += messageField(keyValue(prev)) }
        return size
    }

    /// The header as the RPC layer fills it: cluster and member IDs and the term are unknown here, so they are
    /// counted at their largest.
    static let headerBound = messageField(4 * 11)

    /// The response without its events.
    static func envelope(_ response: WatchResponse) -> Int {
        var size = headerBound + int64Field(response.watchID)
        if response.created { size += 2 }
        if response.canceled { size += 2 }
        size += int64Field(response.compactRevision)
        size += bytesField(response.cancelReason.utf8.count)
        if response.fragment { size += 2 }
        return size
    }

    static func eventField(_ eventSize: Int) -> Int { messageField(eventSize) }
}
