import Foundation

/// An error message (written as a string literal).
struct Msg: Error, ExpressibleByStringInterpolation, CustomStringConvertible {
    var text: String
    init(stringLiteral value: String) { text = value }
    init(_ text: String) { self.text = text }
    var description: String { text }
}

/// JSON as Go's encoding/json writes etcdctl's structs: fields in declaration order, `omitempty` honoured by the
/// callers (they leave such fields out), []byte as base64, strings HTML-escaped, no spaces.
indirect enum GoJSON {
    case obj([String], [GoJSON])
    case array([GoJSON])
    case string(String)
    case bytes(Data)
    case int(Int64)
    case uint(UInt64)
    case bool(Bool)
    case null

    static func object(_ fields: [(String, GoJSON)]) -> GoJSON { .obj(fields.map(\.0), fields.map(\.1)) }

    var text: String {
        switch self {
        case .obj(let keys, let values):
            return "{" + zip(keys, values).map { Self.quote($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
        case .array(let items):
            return "[" + items.map(\.text).joined(separator: ",") + "]"
        case .string(let s): return Self.quote(s)
        case .bytes(let d): return "\"" + d.base64EncodedString() + "\""
        case .int(let v): return String(v)
        case .uint(let v): return String(v)
        case .bool(let v): return v ? "true" : "false"
        case .null: return "null"
        }
    }

    /// encoding/json's string encoding (with HTML escaping, as json.Marshal does).
    static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "<", ">", "&", "\u{2028}", "\u{2029}":
                out += String(format: "\\u%04x", scalar.value)
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

/// Builds an object leaving out zero values of `omitempty` fields.
struct GoObject {
    var fields: [(String, GoJSON)] = []

    mutating func add(_ key: String, _ value: GoJSON) { fields.append((key, value)) }
    mutating func omitEmpty(_ key: String, _ value: Int64) { if value != 0 { fields.append((key, .int(value))) } }
    mutating func omitEmpty(_ key: String, _ value: UInt64) { if value != 0 { fields.append((key, .uint(value))) } }
    mutating func omitEmpty(_ key: String, _ value: Bool) { if value { fields.append((key, .bool(true))) } }
    mutating func omitEmpty(_ key: String, _ value: String) { if !value.isEmpty { fields.append((key, .string(value))) } }
    mutating func omitEmpty(_ key: String, _ value: Data) { if !value.isEmpty { fields.append((key, .bytes(value))) } }
    mutating func omitEmpty(_ key: String, _ value: [GoJSON]) { if !value.isEmpty { fields.append((key, .array(value))) } }
    mutating func omitEmpty(_ key: String, _ value: GoJSON?) { if let value { fields.append((key, value)) } }

    var json: GoJSON { .object(fields) }
}
