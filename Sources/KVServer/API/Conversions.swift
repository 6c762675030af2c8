import EtcdAPI
import Foundation
import RaftKV

// Protobuf messages ↔ the store's types. Unknown enum values are refused with InvalidArgument rather than guessed.

extension RangeRequest {
    init(_ message: Etcdserverpb_RangeRequest) throws {
        let order: SortOrder
        switch message.sortOrder {
        case .none: order = .none
        case .ascend: order = .ascend
        case .descend: order = .descend
        case .UNRECOGNIZED(let raw): throw APIError.invalidArgument("unknown sort order \(raw)")
        }
        let target: SortTarget
        switch message.sortTarget {
        case .key: target = .key
        case .version: target = .version
        case .create: target = .create
        case .mod: target = .mod
        case .value: target = .value
        case .UNRECOGNIZED(let raw): throw APIError.invalidArgument("unknown sort target \(raw)")
        }
        self.init(key: [UInt8](message.key), rangeEnd: [UInt8](message.rangeEnd), limit: message.limit,
                  revision: message.revision, sortOrder: order, sortTarget: target, keysOnly: message.keysOnly,
                  countOnly: message.countOnly, minModRevision: message.minModRevision,
                  maxModRevision: message.maxModRevision, minCreateRevision: message.minCreateRevision,
                  maxCreateRevision: message.maxCreateRevision)
    }
}

extension PutRequest {
    init(_ message: Etcdserverpb_PutRequest) {
        self.init(key: [UInt8](message.key), value: [UInt8](message.value), lease: message.lease,
                  prevKv: message.prevKv, ignoreValue: message.ignoreValue, ignoreLease: message.ignoreLease)
    }
}

extension DeleteRangeRequest {
    init(_ message: Etcdserverpb_DeleteRangeRequest) {
        self.init(key: [UInt8](message.key), rangeEnd: [UInt8](message.rangeEnd), prevKv: message.prevKv)
    }
}

extension Compare {
    init(_ message: Etcdserverpb_Compare) throws {
        let result: Result
        switch message.result {
        case .equal: result = .equal
        case .greater: result = .greater
        case .less: result = .less
        case .notEqual: result = .notEqual
        case .UNRECOGNIZED(let raw): throw APIError.invalidArgument("unknown compare result \(raw)")
        }
        // The target names which member of the union is compared; a missing union member compares as zero.
        let target: Target
        switch message.target {
        case .version: target = .version(message.version)
        case .create: target = .createRevision(message.createRevision)
        case .mod: target = .modRevision(message.modRevision)
        case .value: target = .value([UInt8](message.value))
        case .lease: target = .lease(message.lease)
        case .UNRECOGNIZED(let raw): throw APIError.invalidArgument("unknown compare target \(raw)")
        }
        self.init(key: [UInt8](message.key), rangeEnd: [UInt8](message.rangeEnd), target: target, result: result)
    }
}

extension RequestOp {
    init(_ message: Etcdserverpb_RequestOp) throws {
        switch message.request {
        case .requestRange(let range): self = .range(try RangeRequest(range))
        case .requestPut(let put): self = .put(PutRequest(put))
        case .requestDeleteRange(let delete): self = .deleteRange(DeleteRangeRequest(delete))
        case .requestTxn(let txn): self = .txn(try TxnRequest(txn))
        // etcd answers an empty operation with "key not found".
        case nil: throw KVError.keyNotFound
        }
    }
}

extension TxnRequest {
    init(_ message: Etcdserverpb_TxnRequest) throws {
        self.init(compare: try message.compare.map(Compare.init), success: try message.success.map(RequestOp.init),
                  failure: try message.failure.map(RequestOp.init))
    }
}

extension WatchCreateRequest {
    init(_ message: Etcdserverpb_WatchCreateRequest) {
        let filters: [WatchFilter] = message.filters.compactMap {
            switch $0 {
            case .noput: return .noPut
            case .nodelete: return .noDelete
            case .UNRECOGNIZED: return nil
            }
        }
        self.init(key: [UInt8](message.key), rangeEnd: [UInt8](message.rangeEnd), startRevision: message.startRevision,
                  progressNotify: message.progressNotify, filters: filters, prevKv: message.prevKv,
                  watchID: message.watchID, fragment: message.fragment)
    }
}

// MARK: Responses

extension Mvccpb_KeyValue {
    init(_ kv: KeyValue) {
        self.init()
        key = Data(kv.key)
        createRevision = kv.createRevision
        modRevision = kv.modRevision
        version = kv.version
        value = Data(kv.value)
        lease = kv.lease
    }
}

extension Mvccpb_Event {
    init(_ event: Event) {
        self.init()
        type = event.kind == .put ? .put : .delete
        kv = Mvccpb_KeyValue(event.kv)
        if let prev = event.prevKv { prevKv = Mvccpb_KeyValue(prev) }
    }
}

extension Etcdserverpb_RangeResponse {
    init(_ response: RangeResponse) {
        self.init()
        kvs = response.kvs.map(Mvccpb_KeyValue.init)
        more = response.more
        count = response.count
    }
}

extension Etcdserverpb_PutResponse {
    init(_ response: PutResponse) {
        self.init()
        if let prev = response.prevKv { prevKv = Mvccpb_KeyValue(prev) }
    }
}

extension Etcdserverpb_DeleteRangeResponse {
    init(_ response: DeleteRangeResponse) {
        self.init()
        deleted = response.deleted
        prevKvs = response.prevKvs.map(Mvccpb_KeyValue.init)
    }
}

extension Etcdserverpb_TxnResponse {
    /// The responses inside carry a header too in etcd, with only the revision set.
    init(_ response: TxnResponse, header: Etcdserverpb_ResponseHeader) {
        self.init()
        self.header = header
        succeeded = response.succeeded
        var nestedHeader = Etcdserverpb_ResponseHeader()
        nestedHeader.revision = header.revision
        let header = nestedHeader
        responses = response.responses.map { op in
            var message = Etcdserverpb_ResponseOp()
            switch op {
            case .range(let inner):
                var range = Etcdserverpb_RangeResponse(inner)
                range.header = header
                message.responseRange = range
            case .put(let inner):
                var put = Etcdserverpb_PutResponse(inner)
                put.header = header
                message.responsePut = put
            case .deleteRange(let inner):
                var delete = Etcdserverpb_DeleteRangeResponse(inner)
                delete.header = header
                message.responseDeleteRange = delete
            case .txn(let inner):
                message.responseTxn = Etcdserverpb_TxnResponse(inner, header: header)
            }
            return message
        }
    }
}

extension Etcdserverpb_WatchResponse {
    init(_ response: WatchResponse, header: Etcdserverpb_ResponseHeader) {
        self.init()
        self.header = header
        watchID = response.watchID
        created = response.created
        canceled = response.canceled
        cancelReason = response.cancelReason
        compactRevision = response.compactRevision
        fragment = response.fragment
        events = response.events.map(Mvccpb_Event.init)
    }
}

extension Etcdserverpb_Member {
    init(_ member: ClusterMember) {
        self.init()
        id = member.id
        name = member.name
        peerUrls = member.peerURLs
        clientUrls = member.clientURLs
        isLearner = member.isLearner
    }
}
