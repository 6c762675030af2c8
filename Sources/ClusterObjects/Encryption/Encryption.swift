import Crypto
import Foundation

/// Encryption at rest, like kube-apiserver's `EncryptionConfiguration`: per resource, an ordered list of providers.
/// The first provider writes; every listed provider can read, which is how keys are rotated (put the new key
/// first, rewrite every object, then drop the old key).
public struct EncryptionConfiguration: Sendable {
    public var rules: [Rule]

    public struct Rule: Sendable {
        /// Storage names of the resources covered (`secrets`), as `ResourceKind.storageName`.
        public var resources: [String]
        public var providers: [EncryptionProvider]

        public init(resources: [String], providers: [EncryptionProvider]) {
            self.resources = resources
            self.providers = providers
        }
    }

    public init(rules: [Rule] = []) { self.rules = rules }

    /// No encryption: values are stored as written.
    public static let identity = EncryptionConfiguration()

    /// Secrets encrypted with AES-GCM under `keys` (the first writes), plaintext secrets still readable.
    public static func secrets(aesgcm keys: [EncryptionKey]) -> EncryptionConfiguration {
        EncryptionConfiguration(rules: [Rule(resources: [ResourceKind.secrets.storageName],
                                             providers: [.aesgcm(keys), .identity])])
    }

    func transformer(for resource: ResourceKind) -> ValueTransformer {
        let providers = rules.first { $0.resources.contains(resource.storageName) }?.providers ?? [.identity]
        return ValueTransformer(providers: providers.isEmpty ? [.identity] : providers)
    }
}

/// A named 32-, 24- or 16-byte AES key.
public struct EncryptionKey: Sendable {
    public var name: String
    /// The raw key (SymmetricKey is not Sendable; one is made per use).
    public var secretBytes: [UInt8]
    var secret: SymmetricKey { SymmetricKey(data: secretBytes) }

    public init(name: String, secret: [UInt8]) {
        precondition([16, 24, 32].contains(secret.count), "AES keys are 16, 24 or 32 bytes")
        precondition(!name.isEmpty && !name.contains(":"), "key names are non-empty and have no ':'")
        self.name = name
        self.secretBytes = secret
    }

    /// The form of EncryptionConfiguration files: the secret in base64.
    public init(name: String, base64Secret: String) throws {
        guard let bytes = Data(base64Encoded: base64Secret) else {
            throw ObjectError.badRequest("the secret of key \(name) is not base64")
        }
        self.init(name: name, secret: Array(bytes))
    }
}

public enum EncryptionProvider: Sendable {
    /// `k8s:enc:aesgcm:v1:<keyName>:` + 12-byte nonce + ciphertext + 16-byte tag, the etcd key authenticated.
    case aesgcm([EncryptionKey])
    /// Stored as written.
    case identity
}

/// Turns stored bytes into the plaintext JSON and back for one resource.
struct ValueTransformer: Sendable {
    let providers: [EncryptionProvider]

    static func prefix(_ keyName: String) -> [UInt8] { Array("k8s:enc:aesgcm:v1:\(keyName):".utf8) }

    var isIdentity: Bool {
        if case .identity = providers.first { return true }
        return false
    }

    func toStorage(_ plaintext: [UInt8], key etcdKey: [UInt8]) throws -> [UInt8] {
        switch providers.first ?? .identity {
        case .identity:
            return plaintext
        case .aesgcm(let keys):
            guard let key = keys.first else { return plaintext }
            let sealed = try AES.GCM.seal(plaintext, using: key.secret, authenticating: etcdKey)
            guard let combined = sealed.combined else { throw ObjectError.internalError("AES-GCM produced no output") }
            return Self.prefix(key.name) + Array(combined)
        }
    }

    /// Decrypts with whichever listed key wrote the value; a value with no `k8s:enc:` prefix is plaintext and is
    /// accepted when `identity` is listed. `stale` is true when the value was not written the way a write would
    /// write it now (an older key, or plaintext): rewriting it completes a rotation, as Kubernetes' transformers.
    func fromStorage(_ stored: [UInt8], key etcdKey: [UInt8]) throws -> (plaintext: [UInt8], stale: Bool) {
        for (providerIndex, provider) in providers.enumerated() {
            guard case .aesgcm(let keys) = provider else { continue }
            for (keyIndex, key) in keys.enumerated() {
                let prefix = Self.prefix(key.name)
                guard stored.starts(with: prefix) else { continue }
                do {
                    let box = try AES.GCM.SealedBox(combined: stored[prefix.count...])
                    let plaintext = Array(try AES.GCM.open(box, using: key.secret, authenticating: etcdKey))
                    return (plaintext, providerIndex != 0 || keyIndex != 0)
                } catch {
                    throw ObjectError.internalError("unable to transform key \"\(String(decoding: etcdKey, as: UTF8.self))\": cipher: message authentication failed")
                }
            }
        }
        let isEncrypted = stored.starts(with: Array("k8s:enc:".utf8))
        if !isEncrypted, providers.contains(where: { if case .identity = $0 { return true } else { return false } }) {
            return (stored, !isIdentity)
        }
        throw ObjectError.internalError("unable to transform key \"\(String(decoding: etcdKey, as: UTF8.self))\": no matching prefix found")
    }
}
