import Foundation

/// A client or peer URL as etcd's flags take them: `http://host:port` (https once TLS lands), no path.
struct EndpointURL: Sendable, Hashable, CustomStringConvertible {
    var scheme: String
    var host: String
    var port: Int

    var description: String { "\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(port)" }

    /// The address to bind or dial: etcd's `localhost` is the IPv4 loopback here, as etcdctl's default endpoint.
    var socketHost: String { host == "localhost" ? "127.0.0.1" : host }

    /// Parses `text`, failing with etcd's wording for what is wrong.
    init(parsing text: String) throws {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              let host = components.host, !host.isEmpty else {
            throw ConfigurationError("URL address does not have the form \"host:port\": \(text)")
        }
        guard scheme == "http" || scheme == "https" else {
            throw ConfigurationError("URL scheme must be http, https, unix, or unixs: \(text)")
        }
        guard let port = components.port else {
            throw ConfigurationError("URL address does not have the form \"host:port\": \(text)")
        }
        guard components.path.isEmpty || components.path == "/" else {
            throw ConfigurationError("URL must not contain a path: \(text)")
        }
        guard components.query == nil, components.fragment == nil else {
            throw ConfigurationError("URL must not contain a query or fragment: \(text)")
        }
        self.scheme = scheme
        self.host = host
        self.port = port
    }

    /// A comma-separated list of URLs, as etcd's URL flags take them.
    static func list(_ text: String) throws -> [EndpointURL] {
        let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !parts.isEmpty else { throw ConfigurationError("no URL given") }
        return try parts.map(EndpointURL.init(parsing:))
    }
}

/// A bad flag or environment value; the server prints it and exits with status 1, as etcd does.
struct ConfigurationError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
