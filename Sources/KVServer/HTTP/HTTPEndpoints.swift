import Foundation

/// What the client port answers over HTTP/1.1, as closures so that the listener knows nothing of Raft or the
/// store and tests can stub each answer.
struct HTTPEndpoints: Sendable {
    /// The query parameters of etcd 3.5's `/health`.
    struct HealthQuery: Sendable, Equatable {
        /// Alarms named in `?exclude=` (e.g. `NOSPACE`) that must not make the member unhealthy.
        var excludedAlarms: Set<String> = []
        /// `?serializable=true`: judge this member alone, without asking for a leader or a quorum read.
        var serializable = false
    }

    /// Answers `GET /health`. It should bound its own wait (etcd's check gives its read one second): the
    /// connection waits for it.
    var health: @Sendable (HealthQuery) async -> (healthy: Bool, reason: String)
    /// The body of `GET /version`, e.g. ``HTTPEndpoints/versionJSON(server:cluster:)``.
    var versionJSON: @Sendable () -> String
    /// The body of `GET /metrics`, in the Prometheus text format 0.0.4.
    var metrics: @Sendable () -> String

    init(
        health: @escaping @Sendable (HealthQuery) async -> (healthy: Bool, reason: String),
        versionJSON: @escaping @Sendable () -> String,
        metrics: @escaping @Sendable () -> String
    ) {
        self.health = health
        self.versionJSON = versionJSON
        self.metrics = metrics
    }

    /// For a health check that ignores the query parameters.
    init(
        health: @escaping @Sendable () async -> (healthy: Bool, reason: String),
        versionJSON: @escaping @Sendable () -> String,
        metrics: @escaping @Sendable () -> String
    ) {
        self.init(health: { _ in await health() }, versionJSON: versionJSON, metrics: metrics)
    }
}

extension HTTPEndpoints {
    /// etcd's `Health.Reason` strings (server/etcdserver/api/etcdhttp in 3.5), which operators grep for.
    enum HealthReason {
        static let noLeader = "RAFT NO LEADER"
        static let alarmNoSpace = "ALARM NOSPACE"
        static let alarmCorrupt = "ALARM CORRUPT"
        static let alarmUnknown = "ALARM UNKNOWN"

        /// The linearizable (or, with `?serializable=true`, local) read that etcd's v3 check makes failed.
        static func rangeError(_ message: String) -> String { "RANGE ERROR:\(message)" }
    }

    /// etcd 3.5's `/health` body: `json.Marshal` of `{Health string; Reason string}`.
    static func healthJSON(healthy: Bool, reason: String) -> String {
        #"{"health":"\#(healthy ? "true" : "false")","reason":\#(goJSONString(reason))}"#
    }

    /// etcd's `/version` body; the cluster version is `not_decided` until the members agree on one.
    static func versionJSON(server: String = "3.5.13", cluster: String = "3.5.0") -> String {
        #"{"etcdserver":\#(goJSONString(server)),"etcdcluster":\#(goJSONString(cluster))}"#
    }

    /// A JSON string literal escaped as Go's `encoding/json` escapes it (HTML-safe: `<`, `>` and `&` as
    /// `\u003c`…, and U+2028/U+2029), so that bodies match etcd's byte for byte.
    static func goJSONString(_ string: String) -> String {
        var out = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "<", ">", "&", "\u{2028}", "\u{2029}":
                out += "\\u" + hex4(scalar.value)
            default:
                if scalar.value < 0x20 {
                    out += "\\u" + hex4(scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    private static func hex4(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    /// Parses `/health`'s query string as Go's `url.ParseQuery` would for the two parameters etcd reads.
    static func healthQuery(from query: Substring?) -> HealthQuery {
        var result = HealthQuery()
        var sawSerializable = false
        guard let query else { return result }
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = decodeQueryComponent(parts[0])
            let value = parts.count > 1 ? decodeQueryComponent(parts[1]) : ""
            switch name {
            case "exclude":
                result.excludedAlarms.insert(value)
            case "serializable" where !sawSerializable:
                // etcd reads it with `Query().Get`, which takes the first value.
                sawSerializable = true
                result.serializable = value == "true"
            default:
                break
            }
        }
        return result
    }

    private static func decodeQueryComponent(_ component: Substring) -> String {
        let plusDecoded = component.replacingOccurrences(of: "+", with: " ")
        return plusDecoded.removingPercentEncoding ?? plusDecoded
    }
}
