import EtcdAPI
import GRPCCore
import RaftKV

/// etcd's `Watch` service: one ``WatchStream`` of the store's watch hub per gRPC stream; requests create, cancel
/// and ask for progress, responses flow back in the hub's order.
struct WatchService: Etcdserverpb_Watch.ServiceProtocol {
    let server: EtcdServer

    func watch(request: StreamingServerRequest<Etcdserverpb_WatchRequest>,
               context: ServerContext) async throws -> StreamingServerResponse<Etcdserverpb_WatchResponse> {
        // clientv3's WithRequireLeader: refuse the stream while this member knows no leader.
        let requiresLeader = request.metadata[stringValues: "hasleader"].contains("true")
        if requiresLeader && server.raftStatus.leader == 0 {
            return StreamingServerResponse(error: RPCError(mapping: KVError.noLeader))
        }
        return StreamingServerResponse { writer in
            guard requiresLeader else {
                try await serve(request.messages, writer)
                return [:]
            }
            // Whichever ends first ends the other: the stream, or the monitor finding no leader.
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await serve(request.messages, writer) }
                group.addTask {
                    do {
                        try await monitorLeader()
                    } catch KVError.noLeader {
                        throw RPCError(mapping: KVError.noLeader)
                    }
                }
                defer { group.cancelAll() }
                try await group.next()
            }
            return [:]
        }
    }

    /// etcd's `monitorLeader`: a stream that asked for a leader fails once this member has had none for three
    /// election timeouts, so that the client can move to a member that is still part of a quorum.
    private func monitorLeader() async throws {
        let electionTimeout = server.store.configuration.electionTimeout
        var leaderlessSince: ContinuousClock.Instant?
        while true {
            try await Task.sleep(for: electionTimeout)
            if server.raftStatus.leader != 0 {
                leaderlessSince = nil
                continue
            }
            let since = leaderlessSince ?? .now
            leaderlessSince = since
            if since.duration(to: .now) >= electionTimeout * 3 { throw KVError.noLeader }
        }
    }

    private func serve(_ requests: RPCAsyncSequence<Etcdserverpb_WatchRequest, any Error>,
                       _ writer: RPCWriter<Etcdserverpb_WatchResponse>) async throws {
        let stream = server.store.watch()
        defer { stream.close() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await response in stream.responses {
                    // etcd's watcher canceled by compaction answers with no revision in its header.
                    let revision = response.canceled && response.compactRevision != 0 ? 0 : response.headerRevision
                    try await writer.write(Etcdserverpb_WatchResponse(response, header: server.header(revision: revision)))
                }
            }
            group.addTask {
                // The client closing its side ends the stream, as etcd's receive loop does.
                defer { stream.close() }
                for try await message in requests {
                    switch message.requestUnion {
                    case .createRequest(let create):
                        let request = WatchCreateRequest(create)
                        do {
                            // As etcd: an empty key is the smallest key.
                            try server.store.checkRead(key: request.key.isEmpty ? [0] : request.key,
                                                       rangeEnd: request.rangeEnd)
                            await stream.create(request)
                        } catch let error as KVError {
                            // etcd puts its gRPC status error's text in the reason, which etcdctl prints as is.
                            await stream.create(request, refusal: RPCError(mapping: error).goDescription)
                        }
                    case .cancelRequest(let cancel): await stream.cancel(watchID: cancel.watchID)
                    case .progressRequest: await stream.requestProgress()
                    case nil: continue
                    }
                }
            }
            // Both must end: a bad request fails the reader (and closes the stream, which ends the writer); its
            // error has to reach the client even when the writer finishes first.
            defer { group.cancelAll() }
            try await group.waitForAll()
        }
    }
}
