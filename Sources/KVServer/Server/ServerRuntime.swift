import Dispatch
import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOCore
import RaftKV
import Synchronization

/// One `kvserver` process: opens the store, serves peers and clients, and runs until SIGTERM/SIGINT.
struct ServerRuntime {
    let configuration: ServerConfiguration
    let logger: Logger

    /// gRPC's framing and the request's other fields may exceed the payload a little (etcd adds 512 KiB too).
    static let grpcOverheadBytes = 512 * 1024
    /// How long calls in flight get to finish at shutdown. etcd allows its request timeout (7 s by default), but
    /// its clients retry on another member at once, and open watch streams hold a connection for all of it.
    static let clientShutdownGrace = Duration.seconds(1)

    func run() async throws {
        let bootstrap = try await ClusterBootstrap.resolve(configuration, logger: logger) { url in
            let bytes = try await PeerTransport.clusterInfo(at: try PeerAddress(url: url.description,
                                                                                tls: configuration.peerTLS))
            return try JSONDecoder().decode(ClusterInfo.self, from: Data(bytes))
        }
        let identity = bootstrap.identity
        try FileManager.default.createDirectory(at: configuration.dataDirectory, withIntermediateDirectories: true)

        // The server is created after the store, which needs the transport, which resolves addresses through the
        // server: the box breaks the cycle.
        let serverBox = ServerBox()
        let initialByID = Dictionary(bootstrap.initialMembers.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let peerAddresses = PeerAddressCache(tls: configuration.peerTLS)
        let transport = PeerTransport(clusterID: identity.clusterID, localID: identity.memberID, resolve: { id in
            let urls = serverBox.server?.peerURLs(of: id) ?? initialByID[id]?.peerURLs ?? []
            return urls.first.flatMap(peerAddresses.address(of:))
        }, logger: logger)

        let metrics = ServerMetrics(serverVersion: EtcdServer.serverVersion)
        var storeConfiguration = configuration.storeConfiguration
        storeConfiguration.logger = logger
        storeConfiguration.logSyncObserver = { metrics.observeWALFsync(seconds: $0 / .seconds(1)) }
        storeConfiguration.stateCommitObserver = { metrics.observeBackendCommit(seconds: $0 / .seconds(1)) }
        let store = try KVStore(directory: configuration.dataDirectory, memberID: identity.memberID,
                                initialMembership: bootstrap.initialMembership, transport: transport,
                                configuration: storeConfiguration)
        try identity.save(in: configuration.dataDirectory)
        let server = EtcdServer(store: store, clusterID: identity.clusterID, name: configuration.name,
                                initialMembers: bootstrap.initialMembers,
                                passwordHashing: configuration.passwordHashing, logger: logger)
        serverBox.server = server
        server.setForwarder(transport)

        let kv = KVService(server: server)
        let lease = LeaseService(server: server)
        let cluster = ClusterService(server: server, clusterToken: configuration.clusterToken)
        let maintenance = MaintenanceService(server: server)
        let auth = AuthService(server: server)
        let forwarded = ForwardedRequestHandler(kv: kv, lease: lease, cluster: cluster, maintenance: maintenance,
                                                auth: auth)

        // With --client-cert-auth, a client certificate's common name is a user (when the call has no token).
        let certificateIdentities = configuration.clientTLS?.clientCertificateAuth == true ? ClientCertificateIdentities() : nil
        let clientTLSContext = try configuration.clientTLS?.serverContext(applicationProtocols: ["h2", "http/1.1"])

        // Clients: one listener per client URL serves gRPC and HTTP; gRPC connections go to this server.
        let grpcHandoff = GRPCHandoff()
        var grpcConfig = HTTP2ServerTransport.Custom<GRPCHandoff>.Config.defaults
        grpcConfig.rpc.maxRequestPayloadSize = configuration.maxRequestBytes + Self.grpcOverheadBytes
        // etcd's clients ping every few seconds (etcdctl: --keepalive-time=2s), with or without calls in flight;
        // grpc-swift's default policy would answer GOAWAY "too many pings" and close them.
        grpcConfig.connection.keepalive.clientBehavior = .init(minPingIntervalWithoutCalls: .seconds(1),
                                                               allowWithoutCalls: true)
        let grpcServer = GRPCServer(
            transport: HTTP2ServerTransport.Custom(listenerFactory: grpcHandoff, config: grpcConfig),
            services: [kv, WatchService(server: server), lease, cluster, maintenance, auth],
            interceptors: [AuthInterceptor(server: server, certificateIdentities: certificateIdentities)])

        // Peers.
        let peerService = PeerService(
            clusterID: identity.clusterID, localID: identity.memberID,
            isMember: { id in server.isPeerAccepted(id) },
            isRemoved: { id in (try? store.isRemovedMember(id)) ?? false },
            deliver: { message in store.deliver(message) },
            forward: { frame in try await forwarded.handle(frame) },
            clusterInfo: { try server.clusterInfoJSON() },
            logger: logger)
        let peerServers = try configuration.listenPeerURLs.map { url in
            try PeerServer(listeningOn: PeerAddress(url: url.description, tls: configuration.peerTLS), service: peerService)
        }

        let endpoints = HTTPEndpoints(
            health: { query in
                let health = await server.health(serializable: query.serializable, excludedAlarms: query.excludedAlarms)
                metrics.recordHealthCheck(healthy: health.healthy)
                return health
            },
            versionJSON: { HTTPEndpoints.versionJSON(server: EtcdServer.serverVersion, cluster: EtcdServer.clusterVersion) },
            metrics: {
                if let sizes = try? store.stateMachine.withStore({ (try $0.sizeBytes(), try $0.sizeInUseBytes()) }) {
                    metrics.setDatabaseSize(total: sizes.0, inUse: sizes.1)
                }
                return metrics.render()
            })

        // Once shutdown starts, the servers' and the store's errors are the shutdown's own (cancellation).
        let stopping = StoppingFlag()
        let shutdown = ShutdownSignal()
        @Sendable func untilShutdown(_ body: @Sendable () async throws -> Void) async throws {
            do {
                try await body()
            } catch where stopping.isSet {
                return
            } catch {
                // A server that could not bind, or a store that could not persist: stop everything, so that the
                // process exits with this error instead of running on half dead (the group rethrows it only once
                // its body returns, and the body waits for a shutdown).
                logger.critical("stopping: \(error)")
                shutdown.trigger()
                throw error
            }
        }
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                // A failed store (a storage write or fsync that failed, say) throws here and ends the process
                // through `untilShutdown`.
                try await untilShutdown { try await store.run() }
                // The node ends on its own only when this member applied its own removal (a removed leader
                // always does); it then sends nothing, so no peer will ever refuse it: stop here.
                if !stopping.isSet {
                    logger.error("the member has been permanently removed from the cluster (it applied its own removal); stopping")
                    // As etcd's stopWithDelay (ten ticks): the answer to the removal itself, and others in flight,
                    // still have to leave.
                    try? await Task.sleep(for: configuration.heartbeatInterval * 10)
                    shutdown.trigger()
                }
            }
            group.addTask { await transport.run() }
            for peerServer in peerServers { group.addTask { try await untilShutdown { try await peerServer.serve() } } }
            group.addTask { try await untilShutdown { try await grpcServer.serve() } }

            await grpcHandoff.waitUntilServing()
            var listeners: [SniffingListener] = []
            for url in configuration.listenClientURLs {
                listeners.append(try await ClientListener.bind(
                    host: url.socketHost, port: url.port, grpc: grpcHandoff,
                    endpoints: endpoints, tls: url.scheme == "https" ? clientTLSContext : nil,
                    certificateIdentities: certificateIdentities, logger: logger))
            }
            logger.info("serving", metadata: [
                "name": "\(configuration.name)", "member-id": "\(hex(identity.memberID))",
                "client-urls": "\(configuration.listenClientURLs.map(\.description).joined(separator: ","))",
                "peer-urls": "\(configuration.listenPeerURLs.map(\.description).joined(separator: ","))",
            ])

            group.addTask {
                await server.observeRaft(every: configuration.heartbeatInterval) { previous, status in
                    if status.leader != previous.leader && status.leader != 0 {
                        metrics.recordLeaderChange()
                        logger.info("leader is \(hex(status.leader)) at term \(status.term)")
                    }
                    metrics.setLeader(hasLeader: status.leader != 0, isLeader: status.role == .leader)
                    metrics.setProposals(committed: status.commitIndex, applied: status.appliedIndex, pending: 0)
                }
            }
            group.addTask {
                await server.publishUntilDone(name: configuration.name, clientURLs: configuration.advertiseClientURLs)
            }
            group.addTask { await AutoCompactor(server: server, policy: configuration.autoCompaction).run() }

            transport.onRemovedFromCluster {
                logger.error("the member has been permanently removed from the cluster")
                shutdown.trigger()
            }
            await shutdown.wait()
            logger.info("stopping")
            stopping.set()
            // Calls in flight finish (bounded, as etcd's graceful stop), before the store they need closes.
            await withDiscardingTaskGroup { closing in
                for listener in listeners { closing.addTask { await listener.close(grace: Self.clientShutdownGrace) } }
            }
            await grpcHandoff.close()
            grpcServer.beginGracefulShutdown()
            for peerServer in peerServers { peerServer.beginGracefulShutdown() }
            await store.close()
            group.cancelAll()
        }
        logger.info("stopped")
    }
}

/// Set once shutdown begins.
private final class StoppingFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}

/// Lets the transport's resolver reach the server, created later.
private final class ServerBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: EtcdServer?
    var server: EtcdServer? {
        get { lock.withLock { value } }
        set { lock.withLock { value = newValue } }
    }
}

/// SIGTERM, SIGINT or ``trigger()`` (the member was removed), as an awaitable event.
final class ShutdownSignal: Sendable {
    private let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func trigger() {
        continuation.yield()
    }

    func wait() async {
        var sources: [any DispatchSourceSignal] = []
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { [continuation] in
                FileHandle.standardError.write(Data("kvserver: received signal \(signalNumber)\n".utf8))
                continuation.yield()
            }
            source.resume()
            sources.append(source)
        }
        await withTaskCancellationHandler {
            for await _ in stream { break }
        } onCancel: { [continuation] in
            continuation.finish()
        }
        for source in sources { source.cancel() }
    }
}

extension PeerTransport: LeaderForwarding {
    func forward(to leader: NodeID, _ request: [UInt8]) async throws -> [UInt8] {
        try await forward(to: leader, request, timeout: nil)
    }
}
