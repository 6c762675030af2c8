import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Loopback ports for the kvserver and etcd processes the tests start.
public enum LoopbackPorts {
    /// Ports handed out in this process (every test target runs in one): never given twice, so a member that is
    /// down keeps its ports.
    private static let handedOut = Mutex<Set<Int>>([])

    /// Free loopback ports below the kernel's ephemeral range. A port the kernel picked (bind to port 0) would do
    /// while the member runs, but once the member is killed the kernel may hand the port to another socket (an
    /// outgoing connection, another test's process), and the restarted member then finds its port taken; a peer
    /// dialling a port in that range before its member listens can even connect to itself and hold it.
    public static func free(count: Int) throws -> [Int] {
        let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
        let ephemeralLow = Int(range.split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "") ?? 32_768
        let low = max(1_024, ephemeralLow - 12_000)
        var ports: [Int] = []
        for _ in 0..<10_000 where ports.count < count {
            let port = Int.random(in: low..<ephemeralLow)
            guard isFree(port), handedOut.withLock({ $0.insert(port).inserted }) else { continue }
            ports.append(port)
        }
        guard ports.count == count else { throw POSIXError(.EADDRINUSE) }
        return ports
    }

    private static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}
