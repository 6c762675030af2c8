import NIOCore
import NIOSSL
import Synchronization
import X509

/// The users that TLS client certificates prove (their subject's common name, as etcd takes it with
/// `--client-cert-auth`), by the client connection each came on.
///
/// grpc-swift tells a call only its peer's address, not the connection's certificate: ``ClientListener`` records
/// the common name under the connection's remote address before it passes a byte to gRPC, and
/// ``AuthInterceptor`` finds it from the call's remote peer.
final class ClientCertificateIdentities: Sendable {
    private struct Entry {
        var connection: ObjectIdentifier
        var user: String
    }

    private let entries = Mutex<[String: Entry]>([:])

    /// Remembers `user` for the client connection `connection` until it closes.
    func register(user: String, connection: any Channel) {
        guard let peer = connection.remoteAddress.flatMap(Self.peerDescription) else { return }
        let id = ObjectIdentifier(connection)
        entries.withLock { $0[peer] = Entry(connection: id, user: user) }
        connection.closeFuture.whenComplete { _ in
            // Only this connection's entry: its address may already belong to a newer one.
            self.entries.withLock { entries in
                if entries[peer]?.connection == id { entries.removeValue(forKey: peer) }
            }
        }
    }

    /// The user of the gRPC call whose remote peer grpc-swift describes as `peer` (`ipv4:127.0.0.1:54321`).
    func user(forPeer peer: String) -> String? {
        entries.withLock { $0[peer]?.user }
    }

    /// An address as grpc-swift's `ServerContext.remotePeer` gives it.
    static func peerDescription(_ address: SocketAddress) -> String? {
        switch address {
        case .v4(let ipv4): address.port.map { "ipv4:\(ipv4.host):\($0)" }
        case .v6(let ipv6): address.port.map { "ipv6:[\(ipv6.host)]:\($0)" }
        case .unixDomainSocket: nil
        }
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
