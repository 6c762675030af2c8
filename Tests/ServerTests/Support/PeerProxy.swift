import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Fault-injecting TCP proxies on the members' peer links (loopback only).
///
/// Each member listens for peers on its real peer port but advertises a proxy port (`--initial-advertise-peer-urls`
/// and `--initial-cluster`), so every peer connection to member B — Raft streams, forwarded requests, cluster
/// queries — goes through B's proxy. One proxy per member would only see "someone → B"; to cut single pairs the proxy
/// finds out which member opened each connection: the connecting socket's inode in `/proc/net/tcp`, then which
/// member process holds that inode among its file descriptors (`/proc/<pid>/fd`). A connection whose owner cannot be
/// found (the lookup raced a close) is from an unknown member: only rules about its destination apply to it.
///
/// Faults, each on ordered pairs (bytes from → to), healed by ``heal()``:
/// - a **partition**: in `.refuse` mode the matching connections are cut and new ones closed as soon as they are
///   accepted (a peer that is down or firewalled with REJECT); in `.stall` mode bytes stop moving, connections stay
///   open and nothing is lost, so the backlog arrives when the partition heals (a blackhole: DROP, TCP retransmits);
/// - a **delay** added to every chunk forwarded on a pair;
/// - **cuts**: every open connection closed at once, mid-stream (both ends see a reset or EOF), then reconnection is
///   allowed.
/// - a **one-way partition** (``blockSending(_:mode:)``): the connections a member opens to another carry nothing
///   (refused, or stalled both ways), while the connections the other opens to it work. A member sends its Raft
///   messages and forwarded requests only on connections it opened (one `Stream` RPC per peer), so this is "A's
///   messages to B are lost, B's to A arrive". Blocking the bytes of one direction would not do: TCP and HTTP/2
///   need the other direction (acks, window updates, pings) on the same connection, so the link would die both ways.
///
/// The same machinery proxies the clients' links to the members' client ports (``init(proxyPorts:targetPorts:fixedOrigin:label:)``
/// with ``clientOrigin``): every connection then comes from `clientOrigin`, and ``armRequestCuts(probability:holdMilliseconds:)``
/// cuts connections right after they carry a request, before its answer gets back.
final class PeerNetwork: @unchecked Sendable {
    enum PartitionMode: String, Sendable { case refuse, stall }

    struct Link: Hashable, CustomStringConvertible {
        var from: Int
        var to: Int
        var description: String { "\(Self.name(from))→\(Self.name(to))" }
        private static func name(_ member: Int) -> String { member == PeerNetwork.clientOrigin ? "clients" : "\(member)" }
    }

    /// The origin of every connection through a client-link network: the workload's clients, not a member.
    static let clientOrigin = -1

    private let lock = NSLock()
    private var blocked: Set<Link> = []
    private var mode = PartitionMode.refuse
    private var delays: [Link: Int] = [:]
    /// Links whose opener's connections are blocked (``blockSending(_:mode:)``): Link(from: opener, to: destination).
    private var sendBlocked: Set<Link> = []
    /// Request cuts (``armRequestCuts(probability:holdMilliseconds:)``): nil when disarmed.
    private var requestCuts: (probability: Double, hold: ClosedRange<Int>)?
    /// Bytes delivered (both directions) on connections by (opener, destination): what a one-way partition must
    /// stop on its blocked links and leave flowing on the others.
    private var bytesByOpener: [Link: Int] = [:]
    private var processIDs: [Int: Int32] = [:]
    private var proxies: [PeerProxy] = []
    /// Set for a client-link network: every connection comes from it, no `/proc` lookup.
    let fixedOrigin: Int?
    let label: String
    /// Member i's proxy port.
    let listenPorts: [Int]
    private(set) var unidentifiedConnections = 0
    private(set) var requestsCut = 0
    private(set) var acceptedConnections = 0
    private(set) var refusedConnections = 0
    private(set) var cutConnections = 0

    /// Proxies for `count` members: member i's proxy listens on `proxyPorts[i]` and forwards to `targetPorts[i]`.
    /// - Parameter fixedOrigin: the origin of every connection (``clientOrigin`` for client links); nil: found per
    ///   connection among the member processes.
    init(proxyPorts: [Int], targetPorts: [Int], fixedOrigin: Int? = nil, label: String = "peer") throws {
        self.fixedOrigin = fixedOrigin
        self.label = label
        listenPorts = proxyPorts
        for (index, (proxyPort, targetPort)) in zip(proxyPorts, targetPorts).enumerated() {
            proxies.append(try PeerProxy(member: index, listenPort: proxyPort, targetPort: targetPort, network: self))
        }
        for proxy in proxies { proxy.start() }
    }

    convenience init(proxyPorts: [Int], peerPorts: [Int]) throws {
        try self.init(proxyPorts: proxyPorts, targetPorts: peerPorts)
    }

    deinit { stop() }

    func stop() {
        let all = lock.withLock { () -> [PeerProxy] in let all = proxies; proxies = []; return all }
        for proxy in all { proxy.stop() }
    }

    /// Which process is member `index` now (nil: not running); kept by ``TestCluster``.
    func setProcess(_ index: Int, _ pid: Int32?) {
        lock.withLock { processIDs[index] = pid }
    }

    // MARK: Faults

    /// Blocks every link between `members` and the rest (both directions).
    func isolate(_ member: Int, from others: [Int], mode: PartitionMode) {
        partition(Set(others.flatMap { [Link(from: member, to: $0), Link(from: $0, to: member)] }), mode: mode)
    }

    /// Blocks the given directed links.
    func partition(_ links: Set<Link>, mode: PartitionMode) {
        lock.withLock {
            blocked.formUnion(links)
            self.mode = mode
        }
        if mode == .refuse {
            cut(where: { origin, destination in
                guard let origin else { return self.isBlocked(from: nil, to: destination) }
                return self.isBlocked(from: origin, to: destination) || self.isBlocked(from: destination, to: origin)
            })
        }
    }

    /// A one-way partition: the connections `link.from` opens to `link.to` are refused (cut, and closed on accept)
    /// or stalled (no byte moves either way on them); connections `link.to` opens to `link.from` are untouched.
    func blockSending(_ links: Set<Link>, mode: PartitionMode) {
        lock.withLock {
            sendBlocked.formUnion(links)
            self.mode = mode
        }
        if mode == .refuse {
            cut(where: { origin, destination in self.isSendBlocked(opener: origin, destination: destination) })
        }
    }

    /// From now until ``heal()``, each connection that forwards bytes toward a member is, with `probability` per
    /// chunk, doomed: nothing more comes back on it, and it is cut a random `holdMilliseconds` later, while what
    /// the client sends still goes through. The requests reached the member and may be applied; the client never
    /// hears. Only connections that have already answered something (the server's HTTP/2 SETTINGS) are doomed: a
    /// gRPC client sends no request before that, so dooming earlier would cut connections that never carried one.
    func armRequestCuts(probability: Double, holdMilliseconds: ClosedRange<Int>) {
        lock.withLock { requestCuts = (probability, holdMilliseconds) }
    }

    func delay(_ links: Set<Link>, milliseconds: Int) {
        lock.withLock { for link in links { delays[link] = milliseconds } }
    }

    /// Closes every open connection mid-stream; reconnections are accepted as usual.
    func cutAll() {
        cut(where: { _, _ in true })
    }

    /// Removes every partition and delay. Stalled bytes then flow.
    func heal() {
        lock.withLock {
            blocked = []
            sendBlocked = []
            delays = [:]
            requestCuts = nil
        }
    }

    var statistics: String {
        lock.withLock {
            "\(acceptedConnections) \(label) connections proxied"
                + (fixedOrigin == nil ? " (\(unidentifiedConnections) of unknown origin)" : "")
                + ", \(refusedConnections) refused, \(cutConnections) cut"
                + (requestsCut > 0 ? ", \(requestsCut) cut after carrying a request" : "")
        }
    }

    /// Cumulative bytes delivered on connections by (opener, destination).
    var deliveredBytes: [Link: Int] { lock.withLock { bytesByOpener } }

    // MARK: For the connections

    func countDelivered(_ bytes: Int, opener: Int?, destination: Int) {
        guard let opener else { return }
        lock.withLock { bytesByOpener[Link(from: opener, to: destination), default: 0] += bytes }
    }

    /// Whether a connection opened by `opener` (nil: unknown) to `destination` is blocked by a one-way partition.
    /// An unknown opener is blocked when anything is blocked toward the destination.
    func isSendBlocked(opener: Int?, destination: Int) -> Bool {
        lock.withLock {
            guard let opener else { return sendBlocked.contains { $0.to == destination } }
            return sendBlocked.contains(Link(from: opener, to: destination))
        }
    }

    /// Whether a chunk just forwarded should doom its connection; the hold before the cut if so.
    func requestCutHold() -> Int? {
        lock.withLock { () -> Int? in
            guard let requestCuts, Double.random(in: 0..<1) < requestCuts.probability else { return nil }
            requestsCut += 1
            return Int.random(in: requestCuts.hold)
        }
    }

    // MARK: For the proxies

    private func cut(where matches: @escaping (Int?, Int) -> Bool) {
        let all = lock.withLock { proxies }
        var count = 0
        for proxy in all { count += proxy.cut(where: matches) }
        lock.withLock { cutConnections += count }
    }

    /// Whether bytes from `from` (nil: unknown) to `to` may not pass now.
    func isBlocked(from: Int?, to: Int) -> Bool {
        lock.withLock {
            guard let from else { return blocked.contains { $0.to == to } }
            return blocked.contains(Link(from: from, to: to))
        }
    }

    var stalls: Bool { lock.withLock { mode == .stall } }

    func delayMilliseconds(from: Int?, to: Int) -> Int {
        lock.withLock {
            guard let from else { return 0 }
            return delays[Link(from: from, to: to)] ?? 0
        }
    }

    /// Called by a proxy for each accepted connection; returns whether it may proceed.
    func admit(from: Int?, to: Int) -> Bool {
        let refused = lock.withLock { () -> Bool in
            acceptedConnections += 1
            if from == nil { unidentifiedConnections += 1 }
            var blockedNow: Bool
            if let from {
                blockedNow = blocked.contains(Link(from: from, to: to)) || blocked.contains(Link(from: to, to: from))
                    || sendBlocked.contains(Link(from: from, to: to))
            } else {
                blockedNow = blocked.contains { $0.to == to || $0.from == to } || sendBlocked.contains { $0.to == to }
            }
            let refused = blockedNow && mode == .refuse
            if refused { refusedConnections += 1 }
            return refused
        }
        return !refused
    }

    /// The member whose process holds the TCP socket 127.0.0.1:`localPort` → 127.0.0.1:`remotePort`.
    func member(owningLocalPort localPort: UInt16, remotePort: UInt16) -> Int? {
        let table = lock.withLock { processIDs }
        guard let inode = Self.socketInode(localPort: localPort, remotePort: remotePort) else { return nil }
        let target = "socket:[\(inode)]"
        for (member, pid) in table {
            let directory = "/proc/\(pid)/fd"
            guard let descriptors = try? FileManager.default.contentsOfDirectory(atPath: directory) else { continue }
            for descriptor in descriptors {
                var buffer = [CChar](repeating: 0, count: 64)
                let length = readlink("\(directory)/\(descriptor)", &buffer, buffer.count - 1)
                guard length > 0 else { continue }
                buffer[length] = 0
                if String(cString: buffer) == target { return member }
            }
        }
        return nil
    }

    private static func socketInode(localPort: UInt16, remotePort: UInt16) -> String? {
        guard let text = readProcFile("/proc/net/tcp") else { return nil }
        let local = String(format: "0100007F:%04X", localPort)
        let remote = String(format: "0100007F:%04X", remotePort)
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 9, fields[1] == local, fields[2] == remote else { continue }
            return String(fields[9])
        }
        return nil
    }

    /// `/proc` files report size 0, so they are read to EOF.
    private static func readProcFile(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var data = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while data.count < 64 << 20 {
            let count = read(descriptor, &chunk, chunk.count)
            if count <= 0 { break }
            data.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// One member's inbound proxy: an accept thread, and two pump threads per connection.
final class PeerProxy: @unchecked Sendable {
    let member: Int
    let listenPort: Int
    let targetPort: Int
    // Strong: the network holds its proxies until stop(), which breaks the cycle; the accept thread may still be
    // admitting a connection when the network is dropped.
    private let network: PeerNetwork
    private let listener: Int32
    private let lock = NSLock()
    private var connections: [ObjectIdentifier: ProxiedConnection] = [:]
    private var stopped = false

    init(member: Int, listenPort: Int, targetPort: Int, network: PeerNetwork) throws {
        self.member = member
        self.listenPort = listenPort
        self.targetPort = targetPort
        self.network = network
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw POSIXError(.EMFILE) }
        var reuse: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: listenPort)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 64) == 0 else {
            close(listener)
            throw POSIXError(.EADDRINUSE)
        }
    }

    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    func start() {
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "peer-proxy-\(member)"
        thread.start()
    }

    func stop() {
        let open = lock.withLock { () -> [ProxiedConnection] in
            stopped = true
            return Array(connections.values)
        }
        // Wakes the accept thread, which closes the listener.
        shutdown(listener, Int32(SHUT_RDWR))
        for connection in open { connection.cut() }
    }

    /// Cuts the connections whose (origin, this member) matches; returns how many.
    func cut(where matches: (Int?, Int) -> Bool) -> Int {
        let chosen = lock.withLock { connections.values.filter { matches($0.origin, member) } }
        for connection in chosen { connection.cut() }
        return chosen.count
    }

    private func acceptLoop() {
        defer { close(listener) }
        while true {
            var address = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let client = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(listener, $0, &length) }
            }
            if lock.withLock({ stopped }) {
                if client >= 0 { close(client) }
                return
            }
            guard client >= 0 else {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            let origin = network.fixedOrigin
                ?? network.member(owningLocalPort: UInt16(bigEndian: address.sin_port), remotePort: UInt16(listenPort))
            guard network.admit(from: origin, to: member) else {
                close(client)
                continue
            }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var target = Self.loopback(port: targetPort)
            let connected = upstream >= 0 && withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            } == 0
            guard connected else {
                // The member is down: its peers see the refusal they would see without a proxy.
                if upstream >= 0 { close(upstream) }
                close(client)
                continue
            }
            var noDelay: Int32 = 1
            setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(upstream, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, socklen_t(MemoryLayout<Int32>.size))
            let connection = ProxiedConnection(client: client, upstream: upstream, origin: origin)
            let key = ObjectIdentifier(connection)
            lock.withLock { connections[key] = connection }
            let network = self.network
            let member = self.member
            connection.run(network: network, destination: member) { [weak self] in
                _ = self?.lock.withLock { self?.connections.removeValue(forKey: key) }
            }
        }
    }
}

/// A client socket and its upstream socket, pumped both ways by two threads; closed when both have ended.
final class ProxiedConnection: @unchecked Sendable {
    let client: Int32
    let upstream: Int32
    /// The member that opened the connection, nil when unknown.
    let origin: Int?
    private let lock = NSLock()
    private var isCut = false
    /// Chosen for a request cut: answers are held back until the cut.
    private var isDoomed = false
    private var answeredSomething = false
    private var pumpsRunning = 2

    init(client: Int32, upstream: Int32, origin: Int?) {
        self.client = client
        self.upstream = upstream
        self.origin = origin
    }

    var wasCut: Bool { lock.withLock { isCut } }
    private var doomed: Bool { lock.withLock { isDoomed } }

    private func doom(cutAfterMilliseconds hold: Int) {
        lock.withLock { isDoomed = true }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(hold)) { [self] in cut() }
    }

    /// Shuts both sockets down; the pumps then end and the last one closes them (closing earlier could let a
    /// reused descriptor number be shut down later).
    func cut() {
        lock.withLock {
            guard !isCut else { return }
            isCut = true
            shutdown(client, Int32(SHUT_RDWR))
            shutdown(upstream, Int32(SHUT_RDWR))
        }
    }

    func run(network: PeerNetwork, destination: Int, onClose: @escaping @Sendable () -> Void) {
        let finish: @Sendable () -> Void = { [self] in
            cut()
            let last = lock.withLock { () -> Bool in
                pumpsRunning -= 1
                return pumpsRunning == 0
            }
            if last {
                close(client)
                close(upstream)
                onClose()
            }
        }
        let origin = self.origin
        let forward = Thread { [self] in
            pump(from: client, to: upstream, network: network, sender: origin, receiver: destination,
                 destination: destination, isForward: true)
            finish()
        }
        let backward = Thread { [self] in
            // Bytes back from the destination to the connection's origin.
            pump(from: upstream, to: client, network: network, sender: destination, receiver: origin,
                 destination: destination, isForward: false)
            finish()
        }
        forward.start()
        backward.start()
    }

    private func pump(from source: Int32, to sink: Int32, network: PeerNetwork, sender: Int?, receiver: Int?,
                      destination: Int, isForward: Bool) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = read(source, &buffer, buffer.count)
            if count <= 0 { return }
            let arrived = DispatchTime.now().uptimeNanoseconds
            // A stalled link holds its bytes (bounded by the kernel's buffers behind it) until the partition heals
            // or the connection is cut.
            while blocked(network, sender, receiver)
                || network.isSendBlocked(opener: origin, destination: destination)
                || (!isForward && doomed) {
                if wasCut { return }
                usleep(10_000)
            }
            let delay = receiver.map { network.delayMilliseconds(from: sender, to: $0) } ?? 0
            if delay > 0 {
                let due = arrived + UInt64(delay) * 1_000_000
                let now = DispatchTime.now().uptimeNanoseconds
                if due > now { usleep(useconds_t((due - now) / 1_000)) }
            }
            var written = 0
            while written < count {
                let result = buffer[written..<count].withUnsafeBytes { write(sink, $0.baseAddress, $0.count) }
                if result <= 0 {
                    if result < 0 && errno == EINTR { continue }
                    return
                }
                written += result
            }
            network.countDelivered(count, opener: origin, destination: destination)
            if !isForward {
                lock.withLock { answeredSomething = true }
            } else if !doomed && lock.withLock({ answeredSomething }), let hold = network.requestCutHold() {
                doom(cutAfterMilliseconds: hold)
            }
        }
    }

    private func blocked(_ network: PeerNetwork, _ sender: Int?, _ receiver: Int?) -> Bool {
        if let receiver { return network.isBlocked(from: sender, to: receiver) }
        // Bytes to an unknown origin: blocked when anything to or from the sender is.
        guard let sender else { return false }
        return network.isBlocked(from: nil, to: sender)
    }
}
