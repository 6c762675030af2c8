import Foundation

/// Where lease timing reads the time. Injected so that tests (and simulations) control it.
public protocol LeaseClock: Sendable {
    func now() -> ContinuousClock.Instant
}

/// The monotonic system clock.
public struct SystemLeaseClock: LeaseClock {
    public init() {}
    public func now() -> ContinuousClock.Instant { ContinuousClock.now }
}

/// A clock that moves only when told to, for tests.
public final class ManualLeaseClock: LeaseClock, @unchecked Sendable {
    private let lock = NSLock()
    private var current: ContinuousClock.Instant

    public init(start: ContinuousClock.Instant = ContinuousClock.now) { current = start }

    public func now() -> ContinuousClock.Instant { lock.withLock { current } }

    public func advance(by duration: Duration) {
        lock.withLock { current = current.advanced(by: duration) }
    }
}

/// Leader-side lease timing, after etcd's `lessor`.
///
/// Which leases exist, their granted TTLs and their checkpointed remaining TTLs are replicated state (the MVCC
/// store's `lease` table); this type only keeps the *timers*, fed by the applied entries (``LeaseChange``) and by
/// leadership changes:
///
/// - Only the **primary** (the leader, once it has applied its term's first entry) has expiries. Followers keep
///   every lease "forever": they never expire a lease on their own.
/// - The primary reports expired leases (``expiredLeases(limit:)``); the store revokes each **through Raft**, so every
///   member deletes the attached keys at one revision. A lease reported expired is reported again after
///   ``Configuration/expiredRetryInterval`` if its revocation did not go through (etcd's
///   `expiredLeaseRetryInterval`).
/// - ``renew(_:)`` (keep-alive) resets the expiry to a full TTL, on the primary only.
/// - **Checkpointing**: every ``Configuration/checkpointInterval`` the primary reports each lease's remaining TTL
///   (``dueCheckpoints(limit:)``), which the store proposes as `leaseCheckpoint`. ``promote(extend:)`` then starts a
///   new primary from the checkpointed remaining TTL instead of the full TTL, so leader changes do not keep
///   long-lived leases alive forever. A renew clears the checkpoint (``RenewOutcome/clearCheckpoint``).
/// - ``promote(extend:)`` refreshes every lease to its remaining TTL plus `extend` (etcd passes the election
///   timeout), then spreads expiries that pile up beyond the revoke rate, as etcd's `Promote` does.
///
/// Thread-safe: one lock around plain state; the time comes from the injected ``LeaseClock``.
public final class LeaseManager: @unchecked Sendable {
    public struct Configuration: Sendable {
        /// How often the primary records remaining TTLs through Raft (etcd: 5 minutes).
        public var checkpointInterval: Duration = .seconds(300)
        /// When a reported expired lease is reported again if it still exists (etcd: 3 s).
        public var expiredRetryInterval: Duration = .seconds(3)
        /// etcd's `leaseRevokeRate`: leases revoked per second at most; also the pile-up threshold of promotion.
        public var revokeRatePerSecond: Int = 1000
        public init() {}
    }

    /// Why a renew failed.
    public enum RenewError: Error, Sendable, Equatable {
        /// This member is not the primary lessor: the request belongs to the leader.
        case notPrimary
        /// No such lease, or it expired (its revocation is on its way).
        case leaseNotFound
    }

    public struct RenewOutcome: Sendable, Equatable {
        /// The granted TTL, which the lease now has left again.
        public var ttlSeconds: Int64
        /// The lease had a checkpointed remaining TTL: the caller should propose a checkpoint of 0 for it, or a
        /// future leader would resume from the stale, shorter remaining TTL (etcd does the same).
        public var clearCheckpoint: Bool
    }

    private struct Lease {
        var ttlSeconds: Int64
        /// The last checkpointed remaining TTL; 0 = none (the full TTL applies).
        var remainingTTLSeconds: Int64
        /// nil = forever (not primary).
        var expiry: ContinuousClock.Instant?
        var nextCheckpoint: ContinuousClock.Instant?
        /// When a lease already reported expired may be reported again.
        var revokeRetryAt: ContinuousClock.Instant?

        /// etcd's `Lease.RemainingTTL`: the checkpointed remaining TTL when there is one, else the granted TTL.
        var effectiveRemainingTTLSeconds: Int64 { remainingTTLSeconds > 0 ? remainingTTLSeconds : ttlSeconds }
    }

    public let configuration: Configuration
    private let clock: any LeaseClock
    private let lock = NSLock()
    private var leases: [LeaseID: Lease] = [:]
    private var primary = false

    public init(clock: any LeaseClock = SystemLeaseClock(), configuration: Configuration = Configuration()) {
        self.clock = clock
        self.configuration = configuration
    }

    /// True while this member is the primary lessor (it expires leases and serves renewals).
    public var isPrimary: Bool { lock.withLock { primary } }

    /// The leases currently tracked.
    public var count: Int { lock.withLock { leases.count } }

    // MARK: Replicated state

    /// Replaces the tracked leases with `leases` (the store's table at open or after a snapshot restore). Leases
    /// already tracked keep their timers; new ones start from their remaining TTL when primary.
    public func reset(to infos: [LeaseInfo]) {
        lock.withLock {
            let now = clock.now()
            var next: [LeaseID: Lease] = [:]
            for info in infos {
                var lease = leases[info.id] ?? Lease(ttlSeconds: info.grantedTTLSeconds, remainingTTLSeconds: 0)
                lease.ttlSeconds = info.grantedTTLSeconds
                lease.remainingTTLSeconds = info.remainingTTLSeconds
                if primary && lease.expiry == nil { refresh(&lease, extend: .zero, now: now) }
                next[info.id] = lease
            }
            leases = next
        }
    }

    /// Follows applied entries.
    func apply(_ changes: [LeaseChange]) {
        lock.withLock {
            let now = clock.now()
            for change in changes {
                switch change {
                case .granted(let id, let ttlSeconds):
                    var lease = Lease(ttlSeconds: ttlSeconds, remainingTTLSeconds: 0)
                    if primary { refresh(&lease, extend: .zero, now: now) }
                    leases[id] = lease
                case .revoked(let id):
                    leases[id] = nil
                case .checkpointed(let id, let remaining):
                    // As etcd: only the remaining TTL changes; promotion applies it to the expiry.
                    guard var lease = leases[id] else { continue }
                    lease.remainingTTLSeconds = remaining
                    if primary { scheduleCheckpoint(&lease, now: now) }
                    leases[id] = lease
                }
            }
        }
    }

    // MARK: Leadership

    /// Makes this member the primary: every lease expires `extend` after its remaining TTL from now.
    public func promote(extend: Duration) {
        lock.withLock {
            let now = clock.now()
            primary = true
            for id in leases.keys {
                refresh(&leases[id]!, extend: extend, now: now)
            }
            spreadPiledUpExpiries(extend: extend, now: now)
        }
    }

    /// Stops expiring leases: a follower keeps them forever until it is promoted again.
    public func demote() {
        lock.withLock {
            primary = false
            for id in leases.keys {
                leases[id]!.expiry = nil
                leases[id]!.nextCheckpoint = nil
                leases[id]!.revokeRetryAt = nil
            }
        }
    }

    /// etcd's pile-up avoidance: at most 3/4 of the revoke rate expire in any one-second window after promotion.
    private func spreadPiledUpExpiries(extend: Duration, now: ContinuousClock.Instant) {
        guard leases.count >= configuration.revokeRatePerSecond else { return }
        // Ties go by ID, so that which leases are pushed back does not depend on dictionary order.
        let byExpiry = leases.sorted { a, b in
            let (left, right) = (a.value.expiry ?? now, b.value.expiry ?? now)
            return left != right ? left < right : a.key < b.key
        }
        guard let first = byExpiry.first?.value.expiry else { return }
        var baseWindow = now.duration(to: first)
        var nextWindow = baseWindow + .seconds(1)
        var expires = 0
        let targetPerSecond = max(1, (3 * configuration.revokeRatePerSecond) / 4)
        for (id, lease) in byExpiry {
            guard let expiry = lease.expiry else { continue }
            let remaining = now.duration(to: expiry)
            if remaining > nextWindow {
                baseWindow = remaining
                nextWindow = baseWindow + .seconds(1)
                expires = 1
                continue
            }
            expires += 1
            if expires <= targetPerSecond { continue }
            // Leases already `remaining - baseWindow` ahead of the window need only the rest of the delay.
            let delay = Duration.seconds(1) * (Double(expires) / Double(targetPerSecond)) - (remaining - baseWindow)
            nextWindow = baseWindow + delay
            refresh(&leases[id]!, extend: delay + extend, now: now)
        }
    }

    // MARK: Leader requests

    /// Keep-alive: the lease gets its whole granted TTL again.
    public func renew(_ id: LeaseID) throws(RenewError) -> RenewOutcome {
        lock.lock()
        defer { lock.unlock() }
        do {
            guard primary else { throw .notPrimary }
            guard var lease = leases[id] else { throw .leaseNotFound }
            let now = clock.now()
            // An expired lease is being revoked; etcd waits for that and then answers "not found".
            if let expiry = lease.expiry, expiry <= now { throw .leaseNotFound }
            let clear = lease.remainingTTLSeconds > 0
            // The clearing checkpoint is about to be proposed; use the full TTL from now on already.
            lease.remainingTTLSeconds = 0
            refresh(&lease, extend: .zero, now: now)
            leases[id] = lease
            return RenewOutcome(ttlSeconds: lease.ttlSeconds, clearCheckpoint: clear)
        }
    }

    /// The remaining and granted TTL of `id` as the primary sees them: nil when the lease is unknown; a remaining
    /// TTL of -1 when it has expired (its revocation is on its way). Seconds are truncated, as etcd's.
    public func timeToLive(_ id: LeaseID) throws(RenewError) -> (remainingSeconds: Int64, grantedSeconds: Int64)? {
        lock.lock()
        defer { lock.unlock() }
        do {
            guard primary else { throw .notPrimary }
            guard let lease = leases[id] else { return nil }
            guard let expiry = lease.expiry else { return (Int64.max, lease.ttlSeconds) }
            let remaining = clock.now().duration(to: expiry)
            guard remaining > .zero else { return (-1, lease.ttlSeconds) }
            return (remaining.components.seconds, lease.ttlSeconds)
        }
    }

    // MARK: Timer work of the primary

    /// Leases past their expiry that are not already being revoked, at most `limit`; each is reported again only
    /// after the retry interval.
    public func expiredLeases(limit: Int) -> [LeaseID] {
        lock.withLock {
            guard primary else { return [] }
            let now = clock.now()
            var expired: [LeaseID] = []
            for (id, lease) in leases where expired.count < limit {
                guard let expiry = lease.expiry, expiry <= now else { continue }
                if let retry = lease.revokeRetryAt, retry > now { continue }
                leases[id]!.revokeRetryAt = now.advanced(by: configuration.expiredRetryInterval)
                expired.append(id)
            }
            return expired.sorted()
        }
    }

    /// Remaining TTLs due to be checkpointed, at most `limit` (etcd's `findDueScheduledCheckpoints`): leases whose
    /// checkpoint time passed, still alive, with less than their whole TTL left (rounded up to seconds).
    public func dueCheckpoints(limit: Int) -> [LeaseCheckpoint] {
        lock.withLock {
            guard primary else { return [] }
            let now = clock.now()
            var due: [LeaseCheckpoint] = []
            for (id, lease) in leases where due.count < limit {
                guard let time = lease.nextCheckpoint, time <= now else { continue }
                leases[id]!.nextCheckpoint = nil
                guard let expiry = lease.expiry, now < expiry else { continue }
                let remaining = now.duration(to: expiry)
                let seconds = remaining.components.seconds + (remaining.components.attoseconds > 0 ? 1 : 0)
                if seconds >= lease.ttlSeconds { continue }
                due.append(LeaseCheckpoint(id: id, remainingTTLSeconds: seconds))
            }
            return due.sorted { $0.id < $1.id }
        }
    }

    // MARK: Helpers (lock held)

    /// etcd's `refresh(extend)` plus scheduling the next checkpoint.
    private func refresh(_ lease: inout Lease, extend: Duration, now: ContinuousClock.Instant) {
        lease.expiry = now.advanced(by: extend + .seconds(lease.effectiveRemainingTTLSeconds))
        lease.revokeRetryAt = nil
        scheduleCheckpoint(&lease, now: now)
    }

    /// etcd's `scheduleCheckpointIfNeeded`: only leases with more than one interval left get a checkpoint.
    private func scheduleCheckpoint(_ lease: inout Lease, now: ContinuousClock.Instant) {
        let intervalSeconds = configuration.checkpointInterval.components.seconds
        if lease.effectiveRemainingTTLSeconds > intervalSeconds {
            lease.nextCheckpoint = now.advanced(by: configuration.checkpointInterval)
        }
    }
}
