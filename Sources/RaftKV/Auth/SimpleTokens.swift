import Foundation
import Synchronization

/// etcd's simple tokens: `"<16 random letters>.<log index>"`, issued on every member when the `authenticate`
/// entry is applied, held in memory only, and dropped after `ttl` without use (each use renews it) — so a restart
/// or a long pause means signing in again, as with etcd ("etcdserver: invalid auth token").
public final class SimpleTokens: Sendable {
    public struct Configuration: Sendable {
        /// etcd's `--auth-token-ttl` (300 s).
        public var ttl: Duration = .seconds(300)
        /// Tokens kept at most; beyond it the ones closest to expiry go first. Bounds memory against a client
        /// that signs in in a loop.
        public var capacity: Int = 100_000

        public init() {}
    }

    private struct Entry {
        var user: String
        var expiresAt: ContinuousClock.Instant
    }

    private let clock: any LeaseClock
    private let configuration: Configuration
    private let tokens = Mutex<[String: Entry]>([:])

    public init(clock: any LeaseClock = SystemLeaseClock(), configuration: Configuration = Configuration()) {
        precondition(configuration.capacity > 0 && configuration.ttl > .zero, "token table needs room and a lifetime")
        self.clock = clock
        self.configuration = configuration
    }

    /// The 16 random letters a proposing member puts in front of the entry index (etcd's `genTokenPrefix`).
    public static func makePrefix() -> String {
        let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
        var generator = SystemRandomNumberGenerator()
        return String((0..<16).map { _ in letters.randomElement(using: &generator)! })
    }

    /// The log index a token names, or nil when it is not a simple token at all.
    public static func index(of token: String) -> LogIndex? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty else { return nil }
        return LogIndex(parts[1])
    }

    func assign(_ token: String, to user: String) {
        let now = clock.now()
        tokens.withLock { tokens in
            if tokens.count >= configuration.capacity {
                tokens = tokens.filter { $0.value.expiresAt > now }
                while tokens.count >= configuration.capacity,
                      let soonest = tokens.min(by: { $0.value.expiresAt < $1.value.expiresAt }) {
                    tokens.removeValue(forKey: soonest.key)
                }
            }
            tokens[token] = Entry(user: user, expiresAt: now + configuration.ttl)
        }
    }

    /// The user `token` stands for, renewing it; nil when unknown or expired.
    func user(for token: String) -> String? {
        let now = clock.now()
        return tokens.withLock { tokens in
            guard let entry = tokens[token] else { return nil }
            guard entry.expiresAt > now else {
                tokens.removeValue(forKey: token)
                return nil
            }
            tokens[token]?.expiresAt = now + configuration.ttl
            return entry.user
        }
    }

    func invalidate(user: String) {
        tokens.withLock { tokens in tokens = tokens.filter { $0.value.user != user } }
    }

    func invalidateAll() {
        tokens.withLock { $0.removeAll() }
    }

    /// Applies what an applied auth change says about tokens.
    func follow(_ change: AuthChangeResponse) {
        if change.invalidatesAllTokens { invalidateAll() }
        if !change.invalidatedUser.isEmpty { invalidate(user: change.invalidatedUser) }
        if !change.token.isEmpty { assign(change.token, to: change.tokenUser) }
    }

    public var count: Int { tokens.withLock { $0.count } }
}
