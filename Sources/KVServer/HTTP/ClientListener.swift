import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// The client port's front door: one TCP listener serving both gRPC and etcd's plain-HTTP endpoints, as etcd
/// serves both on its client URL.
///
/// gRPC clients open with the HTTP/2 client preface (prior knowledge, no upgrade), which no HTTP/1.1 request can
/// begin with: after it the connection is handed to the gRPC server through ``GRPCHandoff``, on the same socket;
/// as soon as one byte differs it is parsed as HTTP/1.1 and answered from ``HTTPEndpoints`` (garbage is refused
/// there with a 400).
enum ClientListener {
    static let http2Preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    struct Configuration: Sendable {
        /// How long a new connection may take to show which protocol it speaks; silent or trickling clients
        /// would otherwise hold a socket for ever.
        var sniffTimeout: TimeAmount = .seconds(10)
        /// How long an HTTP/1.1 connection may take to deliver its next complete request (keep-alive idleness
        /// included); bounds slow-header clients.
        var httpRequestTimeout: TimeAmount = .seconds(60)
        /// Request bodies are ignored (no endpoint takes one); a connection sending more than this is closed.
        var maxRequestBodyBytes = 64 * 1024
        var backlog: Int32 = 256

        init() {}
    }

    /// Binds `host:port` and starts accepting connections.
    ///
    /// - Parameters:
    ///   - grpc: takes the connections that open with the HTTP/2 preface.
    ///   - certificateIdentities: set when client certificates name users: each gRPC connection's user is
    ///     recorded there.
    ///   - group: the event loops that run the listener and its connections.
    static func bind(
        host: String,
        port: Int,
        grpc: GRPCHandoff,
        endpoints: HTTPEndpoints,
        tls: NIOSSLContext? = nil,
        certificateIdentities: ClientCertificateIdentities? = nil,
        configuration: Configuration = Configuration(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "kvserver.client-listener")
    ) async throws -> SniffingListener {
        let listener = try await SniffingListener.bind(
            host: host, port: port, tls: tls, backlog: configuration.backlog,
            // HTTP/1.1 handles half-closure as the end of requests (the gRPC route turns it off).
            allowRemoteHalfClosure: true, group: group
        ) { _ in
            let grpcRoute = PrefaceSniffer.Route(preface: http2Preface) { context, _ in
                // Before any byte reaches gRPC, so the first call already knows its user.
                if let identities = certificateIdentities,
                   let tlsHandler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
                   let certificate = tlsHandler.peerCertificate,
                   let user = ClientCertificateIdentities.commonName(of: certificate) {
                    identities.register(user: user, connection: context.channel)
                }
                try grpc.serve(context.channel, tls: tls != nil)
            }
            let http1Route = PrefaceSniffer.Route(preface: []) { context, sniffDeadline in
                let pipeline = context.pipeline.syncOperations
                try pipeline.configureHTTPServerPipeline(
                    position: .after(context.handler), withPipeliningAssistance: true, withErrorHandling: true)
                // The request must complete within the time left for sniffing, not within a fresh period.
                try pipeline.addHandler(
                    HTTPEndpointHandler(
                        endpoints: endpoints,
                        requestTimeout: configuration.httpRequestTimeout,
                        maxRequestBodyBytes: configuration.maxRequestBodyBytes,
                        firstRequestDeadline: sniffDeadline
                    ),
                    position: .last
                )
            }
            return PrefaceSniffer(routes: [grpcRoute], fallback: http1Route, timeout: configuration.sniffTimeout,
                                  logger: logger)
        }
        logger.info("serving client requests", metadata: ["address": "\(listener.localAddress)"])
        return listener
    }
}
