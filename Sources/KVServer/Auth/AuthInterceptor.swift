import GRPCCore
import RaftKV

/// Binds each client RPC to the identity its credentials prove (``AuthIdentity/current``), for the whole call —
/// a streaming response's producer included, which runs after this returns.
///
/// A request without a token runs as ``AuthIdentity/anonymous``, never as the trusted nil: its writes are then
/// checked at apply time even if auth is switched on while they are in flight. A token that is not (or no
/// longer) valid fails the call with etcd's "invalid auth token", as etcd does whether or not auth is on.
struct AuthInterceptor: ServerInterceptor {
    let server: EtcdServer
    /// With `--client-cert-auth`: a call without a token runs as its TLS certificate's common name (etcd's
    /// `AuthInfoFromTLS`).
    var certificateIdentities: ClientCertificateIdentities?

    /// etcd reads the token from `token` (gRPC clients) or `authorization` (its HTTP gateway).
    static let tokenMetadataKeys = ["token", "authorization"]

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let identity: AuthIdentity
        do {
            identity = try await resolve(request.metadata, peer: context.remotePeer)
        } catch {
            return StreamingServerResponse(error: RPCError(mapping: error))
        }
        var response = try await AuthIdentity.$current.withValue(identity) { try await next(request, context) }
        if case .success(var contents) = response.accepted {
            let producer = contents.producer
            contents.producer = { writer in
                try await AuthIdentity.$current.withValue(identity) { try await producer(writer) }
            }
            response.accepted = .success(contents)
        }
        return response
    }

    private func resolve(_ metadata: Metadata, peer: String) async throws -> AuthIdentity {
        for key in Self.tokenMetadataKeys {
            if let token = metadata[stringValues: key].first(where: { _ in true }) {
                return try await server.store.identity(forToken: token)
            }
        }
        if let user = certificateIdentities?.user(forPeer: peer) { return server.store.identity(forUser: user) }
        return .anonymous
    }
}
