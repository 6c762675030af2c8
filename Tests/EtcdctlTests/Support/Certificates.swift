import Foundation

/// A throwaway CA and certificates made with `/usr/bin/openssl` (as Tests/ServerTests/Support/TLSMaterial.swift):
/// `ca.crt`; `server`, `client` signed by it for 127.0.0.1 and localhost; `stranger` signed by `other-ca.crt`, a CA
/// the server does not trust.
struct Certificates {
    let directory: URL

    func path(_ file: String) -> String { directory.appendingPathComponent(file).path }

    struct OpenSSLFailed: Error, CustomStringConvertible {
        var description: String
    }

    static func make(in directory: URL) throws -> Certificates {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let made = Certificates(directory: directory)
        for ca in ["ca", "other-ca"] {
            try made.openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(ca).key", "-out", "\(ca).crt",
                              "-days", "2", "-subj", "/CN=etcdctl-test-\(ca)"])
        }
        for (name, ca) in [("server", "ca"), ("client", "ca"), ("stranger", "other-ca")] {
            try made.openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(name).key", "-out", "\(name).csr",
                              "-subj", "/CN=\(name)"])
            try "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
                .write(to: directory.appendingPathComponent("\(name).ext"), atomically: true, encoding: .utf8)
            try made.openssl(["x509", "-req", "-in", "\(name).csr", "-CA", "\(ca).crt", "-CAkey", "\(ca).key",
                              "-CAcreateserial", "-out", "\(name).crt", "-days", "2", "-extfile", "\(name).ext"])
        }
        return made
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
