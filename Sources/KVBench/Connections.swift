import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix

typealias Transport = HTTP2ClientTransport.Posix
typealias Connection = GRPCClient<Transport>

/// A client endpoint as etcd's tools accept it: `host:port` or `http://host:port`.
struct Endpoint: Sendable, CustomStringConvertible {
    var host: String
    var port: Int

    init?(_ text: String) {
        var rest = Substring(text)
        for scheme in ["http://", "https://"] where rest.hasPrefix(scheme) { rest = rest.dropFirst(scheme.count) }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        host = String(rest[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.port = port
    }

    var description: String { "\(host):\(port)" }

    var target: any ResolvableTarget {
        if host == "localhost" { return .ipv4(address: "127.0.0.1", port: port) }
        if host.split(separator: ".").count == 4 && host.allSatisfy({ $0.isNumber || $0 == "." }) {
            return .ipv4(address: host, port: port)
        }
        return .dns(host: host, port: port)
    }
}

/// Everything a load run needs to know about the servers and its own bounds.
struct LoadSettings: Sendable {
    var endpoints: [Endpoint]
    var connectionCount: Int
    var clientCount: Int
    var requestTimeoutSeconds: Double
    var runTimeoutSeconds: Double

    var callOptions: CallOptions {
        var options = CallOptions.defaults
        options.timeout = .milliseconds(Int64(requestTimeoutSeconds * 1000))
        return options
    }
}

/// Runs `body` with `count` gRPC connections, connection i to endpoint i modulo the endpoint count (etcd's
/// benchmark pins each connection to one endpoint the same way, through its balancer), and shuts them down after.
func withConnections<Result: Sendable>(
    _ endpoints: [Endpoint], count: Int,
    _ body: @Sendable @escaping ([Connection]) async throws -> Result
) async throws -> Result {
    let connections = try (0..<count).map { index in
        Connection(transport: try HTTP2ClientTransport.Posix(
            target: endpoints[index % endpoints.count].target, transportSecurity: .plaintext))
    }
    return try await withThrowingTaskGroup(of: Result?.self) { group in
        for connection in connections {
            group.addTask {
                try await connection.runConnections()
                return nil
            }
        }
        group.addTask { try await body(connections) }
        var result: Result?
        do {
            while let finished = try await group.next() {
                guard let finished else { continue }
                result = finished
                // The body is done: let the connections close, which ends their runConnections tasks.
                for connection in connections { connection.beginGracefulShutdown() }
            }
        } catch {
            for connection in connections { connection.beginGracefulShutdown() }
            group.cancelAll()
            throw error
        }
        guard let result else { preconditionFailure("the body task always returns a value or throws") }
        return result
    }
}
