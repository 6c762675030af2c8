import EtcdAPI
import GRPCCore
import RaftKV

/// etcd's `KV` service: validate, call the store, map the error, fill the header.
struct KVService: Etcdserverpb_KV.SimpleServiceProtocol {
    let server: EtcdServer

    func range(request: Etcdserverpb_RangeRequest, context: ServerContext) async throws -> Etcdserverpb_RangeResponse {
        try await answering {
            let response = try await server.store.range(RangeRequest(request),
                                                        consistency: request.serializable ? .serializable : .linearizable)
            var message = Etcdserverpb_RangeResponse(response)
            message.header = server.header(revision: response.revision)
            return message
        }
    }

    func put(request: Etcdserverpb_PutRequest, context: ServerContext) async throws -> Etcdserverpb_PutResponse {
        try await answering { try await put(request) }
    }

    func put(_ request: Etcdserverpb_PutRequest) async throws -> Etcdserverpb_PutResponse {
        try await server.servedByLeader(.put, request, waitForRevision: true) {
            let response = try await server.store.put(PutRequest(request))
            var message = Etcdserverpb_PutResponse(response)
            message.header = server.header(revision: response.revision)
            return message
        }
    }

    func deleteRange(request: Etcdserverpb_DeleteRangeRequest,
                     context: ServerContext) async throws -> Etcdserverpb_DeleteRangeResponse {
        try await answering { try await deleteRange(request) }
    }

    func deleteRange(_ request: Etcdserverpb_DeleteRangeRequest) async throws -> Etcdserverpb_DeleteRangeResponse {
        try await server.servedByLeader(.deleteRange, request, waitForRevision: true) {
            let response = try await server.store.delete(DeleteRangeRequest(request))
            var message = Etcdserverpb_DeleteRangeResponse(response)
            message.header = server.header(revision: response.revision)
            return message
        }
    }

    func txn(request: Etcdserverpb_TxnRequest, context: ServerContext) async throws -> Etcdserverpb_TxnResponse {
        try await answering { try await txn(request) }
    }

    func txn(_ request: Etcdserverpb_TxnRequest) async throws -> Etcdserverpb_TxnResponse {
        let txn = try TxnRequest(request)
        // Read-only transactions are served locally, like ranges; the others go through the leader's log.
        if txn.isReadOnly {
            let response = try await server.store.txn(txn)
            return Etcdserverpb_TxnResponse(response, header: server.header(revision: response.revision))
        }
        return try await server.servedByLeader(.txn, request, waitForRevision: true) {
            let response = try await server.store.txn(txn)
            return Etcdserverpb_TxnResponse(response, header: server.header(revision: response.revision))
        }
    }

    func compact(request: Etcdserverpb_CompactionRequest,
                 context: ServerContext) async throws -> Etcdserverpb_CompactionResponse {
        try await answering { try await compact(request) }
    }

    func compact(_ request: Etcdserverpb_CompactionRequest) async throws -> Etcdserverpb_CompactionResponse {
        try await server.servedByLeader(.compact, request, waitForRevision: true) {
            let response = try await server.store.compact(revision: request.revision, physical: request.physical)
            var message = Etcdserverpb_CompactionResponse()
            message.header = server.header(revision: response.revision)
            return message
        }
    }
}
