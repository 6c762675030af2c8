import NIOCore
import NIOSSL
import Synchronization
import X509

/// The users that TLS client certificates prove (their subject's common name, as etcd takes it with
/// `--client-cert-auth`), by the internal connection that carries each client's proxied gRPC traffic.
///
/// Client connections reach the gRPC server through ``ClientListener``'s proxy over loopback, so the gRPC layer
/// sees the proxy's socket, not the client's certificate: the listener records the common name under the local
/// port of its upstream connection before it forwards a byte, and ``AuthInterceptor`` finds it from the call's
/// remote peer.
final class ClientCertificateIdentities: Sendable {
    private struct Entry {
        var connection: ObjectIdentifier
        var user: String
    }

    private let entries = Mutex<[Int: Entry]>([:])

    /// Remembers `user` for the upstream connection `upstream` until it closes.
    func register(user: String, upstream: any Channel) {
        guard let port = upstream.localAddress?.port else { return }
        let connection = ObjectIdentifier(upstream)
        entries.withLock { $0[port] = Entry(connection: connection, user: user) }
        upstream.closeFuture.whenComplete { _ in
            // Only this connection's entry: the port may already serve a newer one.
            self.entries.withLock { entries in
                if entries[port]?.connection == connection { entries.removeValue(forKey: port) }
            }
        }
    }

    /// The user of the gRPC call whose remote peer grpc-swift describes as `peer` (`ipv4:127.0.0.1:54321`).
    func user(forPeer peer: String) -> String? {
        guard let colon = peer.lastIndex(of: ":"), let port = Int(peer[peer.index(after: colon)...]) else { return nil }
        return entries.withLock { $0[port]?.user }
    }

    /// The last common name in a certificate's subject (the most significant, as Go's `Subject.CommonName`).
    static func commonName(of certificate: NIOSSLCertificate) -> String? {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else { return nil }
        var name: String?
        for relativeName in parsed.subject {
            for attribute in relativeName where attribute.type == .RDNAttributeType.commonName {
                name = String(attribute.value)
            }
        }
        return name
    }
}
