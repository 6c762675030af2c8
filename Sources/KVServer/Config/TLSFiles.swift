import Foundation

/// One side's TLS material as etcd's flags name it (`--cert-file`/`--key-file`/`--trusted-ca-file`/
/// `--client-cert-auth`, and the `--peer-` ones).
struct TLSFiles: Sendable, Hashable {
    var certificateFile: String
    var keyFile: String
    /// The CA that signs the other side's certificates (and, with `clientCertificateAuth`, the only one accepted).
    var trustedCAFile: String?
    /// Refuse connections that do not present a certificate signed by `trustedCAFile` (etcd's
    /// `--client-cert-auth` / `--peer-client-cert-auth`).
    var clientCertificateAuth: Bool

    /// The files from flags; nil when neither certificate nor key is given. Files must exist and be readable,
    /// and client-certificate checking needs a CA to check against.
    static func from(certificate: String, key: String, trustedCA: String, clientCertificateAuth: Bool,
                     prefix: String) throws -> TLSFiles? {
        if certificate.isEmpty && key.isEmpty {
            if clientCertificateAuth {
                throw ConfigurationError("--\(prefix)client-cert-auth needs --\(prefix)cert-file and --\(prefix)key-file")
            }
            return nil
        }
        guard !certificate.isEmpty, !key.isEmpty else {
            throw ConfigurationError("--\(prefix)cert-file and --\(prefix)key-file must be given together")
        }
        if clientCertificateAuth && trustedCA.isEmpty {
            throw ConfigurationError("--\(prefix)client-cert-auth needs --\(prefix)trusted-ca-file")
        }
        for (flag, path) in [("cert-file", certificate), ("key-file", key), ("trusted-ca-file", trustedCA)]
        where !path.isEmpty && !FileManager.default.isReadableFile(atPath: path) {
            throw ConfigurationError("--\(prefix)\(flag) \(path): no such file or not readable")
        }
        return TLSFiles(certificateFile: certificate, keyFile: key, trustedCAFile: trustedCA.isEmpty ? nil : trustedCA,
                        clientCertificateAuth: clientCertificateAuth)
    }
}

// MARK: - What the transports take

import GRPCNIOTransportHTTP2Posix
import NIOSSL

extension TLSFiles {
    /// A listener's TLS context, offering `applicationProtocols` by ALPN: the client port offers HTTP/2 (gRPC) and
    /// HTTP/1.1 (health, metrics), the peer port HTTP/2 (its gRPC calls; Raft streams use no ALPN).
    func serverContext(applicationProtocols: [String]) throws -> NIOSSLContext {
        let chain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { NIOSSLCertificateSource.certificate($0) }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem)))
        configuration.applicationProtocols = applicationProtocols
        if let trustedCAFile { configuration.trustRoots = .file(trustedCAFile) }
        // Clients are not named by host: any certificate the CA signed is a client.
        if clientCertificateAuth { configuration.certificateVerification = .noHostnameVerification }
        return try NIOSSLContext(configuration: configuration)
    }

    /// How a member opens Raft streams to its peers: as ``peerClientSecurity``, for a raw TLS connection.
    func peerStreamClientContext() throws -> NIOSSLContext {
        let chain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { NIOSSLCertificateSource.certificate($0) }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateChain = chain
        configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
        if let trustedCAFile { configuration.trustRoots = .file(trustedCAFile) }
        configuration.certificateVerification = .noHostnameVerification
        return try NIOSSLContext(configuration: configuration)
    }

    /// How a member dials its peers: with its own certificate (for peers that check clients), trusting the peer CA.
    /// Members are named by the CA that signed them, not by host name (peer URLs are often bare IP addresses).
    var peerClientSecurity: HTTP2ClientTransport.Posix.TransportSecurity {
        .tls(HTTP2ClientTransport.Posix.TransportSecurity.TLS(
            certificateChain: [.file(path: certificateFile, format: .pem)],
            privateKey: .file(path: keyFile, format: .pem),
            serverCertificateVerification: .noHostnameVerification,
            trustRoots: trustedCAFile.map { .certificates([.file(path: $0, format: .pem)]) } ?? .systemDefault))
    }
}
