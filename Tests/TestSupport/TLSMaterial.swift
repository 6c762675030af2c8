import Foundation

/// A throwaway certificate authority and certificates made with Debian's `openssl` (installed by .ci/run): a
/// server certificate for 127.0.0.1 / localhost, client certificates whose common names are user names, and a
/// `stranger` certificate (common name `root`) signed by another CA, which the cluster must not trust.
public struct TLSMaterial: Sendable {
    public let directory: URL

    public struct OpenSSLFailed: Error, CustomStringConvertible {
        public var description: String
    }

    public func path(_ file: String) -> String { directory.appendingPathComponent(file).path }

    /// Makes `ca.crt`, `other-ca.crt`, `server.crt`/`.key`, `<name>.crt`/`.key` for each client name and
    /// `stranger.crt`/`.key`.
    public static func make(in directory: URL, clients: [String]) throws -> TLSMaterial {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let material = TLSMaterial(directory: directory)
        try material.openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                              "-days", "2", "-subj", "/CN=kvserver-test-ca"])
        try material.openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other-ca.key", "-out",
                              "other-ca.crt", "-days", "2", "-subj", "/CN=untrusted-ca"])
        try material.certificate("server", commonName: "server", ca: "ca")
        for client in clients { try material.certificate(client, commonName: client, ca: "ca") }
        try material.certificate("stranger", commonName: "root", ca: "other-ca")
        return material
    }

    private func certificate(_ name: String, commonName: String, ca: String) throws {
        try openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(name).key", "-out", "\(name).csr",
                     "-subj", "/CN=\(commonName)"])
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
            .write(to: directory.appendingPathComponent("\(name).ext"), atomically: true, encoding: .utf8)
        try openssl(["x509", "-req", "-in", "\(name).csr", "-CA", "\(ca).crt", "-CAkey", "\(ca).key", "-CAcreateserial",
                     "-out", "\(name).crt", "-days", "2", "-extfile", "\(name).ext"])
    }

    private func openssl(_ arguments: [String]) throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") else {
            throw OpenSSLFailed(description: "openssl is not installed (apt-get install openssl); .ci/run installs it")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw OpenSSLFailed(description: "openssl \(arguments.joined(separator: " ")) failed: "
                + String(decoding: message, as: UTF8.self))
        }
    }
}
