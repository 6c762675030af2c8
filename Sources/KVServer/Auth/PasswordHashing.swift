import _CryptoExtras
import Crypto
import Foundation

/// Salted, deliberately slow password hashes (scrypt), made by the server that receives a password so that neither
/// the Raft log nor the state database ever holds one in clear.
///
/// etcd hashes with bcrypt at `--bcrypt-cost` (default 10); here the same flag sets scrypt's work factor,
/// N = 2^(cost + 4) with r = 8, p = 1 (16 MiB and tens of milliseconds at the default), capped at N = 2^17.
/// A hash records its own parameters, so changing the flag leaves existing passwords valid.
struct PasswordHashing: Sendable, Hashable {
    /// log2 of scrypt's N.
    let logRounds: Int

    static let formatVersion: UInt8 = 1
    static let saltBytes = 16
    static let keyBytes = 32
    static let blockSize = 8
    static let maxLogRounds = 17

    init(bcryptCost: Int) {
        precondition((4...31).contains(bcryptCost), "bcrypt cost \(bcryptCost) outside 4...31")
        logRounds = min(bcryptCost + 4, Self.maxLogRounds)
    }

    /// `version, log2 N, salt, derived key`.
    func hash(_ password: String) throws -> [UInt8] {
        var salt = [UInt8](repeating: 0, count: Self.saltBytes)
        var generator = SystemRandomNumberGenerator()
        for index in salt.indices { salt[index] = generator.next() }
        let key = try Self.derive(password, salt: salt, logRounds: logRounds)
        return [Self.formatVersion, UInt8(logRounds)] + salt + key
    }

    /// Whether `password` is the one `hash` was made from. Malformed hashes match nothing.
    static func verify(_ password: String, against hash: [UInt8]) -> Bool {
        guard hash.count == 2 + saltBytes + keyBytes, hash[0] == formatVersion,
              (1...maxLogRounds).contains(Int(hash[1])) else { return false }
        let salt = Array(hash[2..<(2 + saltBytes)])
        guard let key = try? derive(password, salt: salt, logRounds: Int(hash[1])) else { return false }
        // Constant time: every byte is compared whatever the first difference.
        return zip(key, hash[(2 + saltBytes)...]).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    private static func derive(_ password: String, salt: [UInt8], logRounds: Int) throws -> [UInt8] {
        let key = try KDF.Scrypt.deriveKey(from: Array(password.utf8), salt: salt, outputByteCount: keyBytes,
                                           rounds: 1 << logRounds, blockSize: blockSize, parallelism: 1)
        return key.withUnsafeBytes { Array($0) }
    }
}
