import Foundation

/// Any JSON value. The registry works on stored objects in this form so that fields the Swift types do not model
/// (newer Kubernetes fields, other tools' additions) survive a read-modify-write, and so that it controls the
/// exact bytes written to etcd (Kubernetes' field order, Go's escaping, a trailing newline).
public enum JSONValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null; return }
        // Bool first: JSONDecoder refuses to read a number as a Bool, and true/false as numbers.
        if let value = try? container.decode(Bool.self) { self = .bool(value); return }
        if let value = try? container.decode(Int64.self) { self = .integer(value); return }
        if let value = try? container.decode(Double.self) { self = .number(value); return }
        if let value = try? container.decode(String.self) { self = .string(value); return }
        if let value = try? container.decode([JSONValue].self) { self = .array(value); return }
        self = .object(try container.decode([String: JSONValue].self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    public subscript(key: String) -> JSONValue? {
        get {
            if case .object(let fields) = self { return fields[key] }
            return nil
        }
        set {
            guard case .object(var fields) = self else { return }
            fields[key] = newValue
            self = .object(fields)
        }
    }

    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    // MARK: Conversions

    /// The JSON form of any Encodable value.
    public init(encoding value: some Encodable) throws {
        self = try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(value))
    }

    public init(parsing bytes: some Collection<UInt8>) throws {
        self = try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
    }

    public func decode<T: Decodable>(as type: T.Type) throws -> T {
        try JSONDecoder().decode(type, from: Data(serialized()))
    }

    // MARK: Unknown fields

    /// The parts of `original` that a decode-then-encode through a Swift type lost (`roundTrip`): whole fields
    /// the type does not know, and, inside fields it knows, their unknown sub-fields (array elements matched by
    /// position). A known field set to nothing is in `roundTrip` and so is not kept: clearing a field works.
    public static func unknownParts(of original: JSONValue, roundTrip: JSONValue) -> JSONValue? {
        switch (original, roundTrip) {
        case (.object(let fields), .object(let known)):
            var kept: [String: JSONValue] = [:]
            for (key, value) in fields {
                if let knownValue = known[key] {
                    if let inner = unknownParts(of: value, roundTrip: knownValue) { kept[key] = inner }
                } else {
                    kept[key] = value
                }
            }
            return kept.isEmpty ? nil : .object(kept)
        case (.array(let elements), .array(let known)):
            var any = false
            let kept: [JSONValue] = elements.indices.map { index in
                guard index < known.count, let inner = unknownParts(of: elements[index], roundTrip: known[index]) else {
                    return .null
                }
                any = true
                return inner
            }
            return any ? .array(kept) : nil
        default:
            return nil
        }
    }

    /// Puts `unknown` (from ``unknownParts(of:roundTrip:)``) back into `self`: fields `self` lacks are added, and
    /// objects present in both are merged. A field `self` has, or an array element it no longer has, wins.
    public func merging(unknown: JSONValue?) -> JSONValue {
        guard let unknown else { return self }
        switch (self, unknown) {
        case (.object(var fields), .object(let extra)):
            for (key, value) in extra {
                if let current = fields[key] {
                    fields[key] = current.merging(unknown: value)
                } else {
                    fields[key] = value
                }
            }
            return .object(fields)
        case (.array(var elements), .array(let extra)):
            for index in elements.indices where index < extra.count && extra[index] != .null {
                elements[index] = elements[index].merging(unknown: extra[index])
            }
            return .array(elements)
        default:
            return self
        }
    }

    // MARK: Serialization

    /// Keys a Kubernetes object writes first (Go writes struct fields in declaration order); the rest follow
    /// sorted, so the bytes are deterministic.
    static let leadingKeys = ["kind", "apiVersion", "metadata", "name", "generateName", "namespace", "uid",
                              "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
                              "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
                              "finalizers", "spec", "status"]

    /// Compact JSON as Go's encoding/json writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u00XX`.
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(to: &out)
        return out
    }

    private func write(to out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: Array("null".utf8))
        case .bool(let value): out.append(contentsOf: Array((value ? "true" : "false").utf8))
        case .integer(let value): out.append(contentsOf: Array(String(value).utf8))
        case .number(let value):
            if value.isFinite, value == value.rounded(), abs(value) < 1e15 {
                out.append(contentsOf: Array(String(Int64(value)).utf8))
            } else {
                out.append(contentsOf: Array("\(value)".utf8))
            }
        case .string(let value): Self.writeString(value, to: &out)
        case .array(let elements):
            out.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                element.write(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let fields):
            out.append(UInt8(ascii: "{"))
            var first = true
            for key in Self.orderedKeys(fields) {
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                Self.writeString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                fields[key]!.write(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    static func orderedKeys(_ fields: [String: JSONValue]) -> [String] {
        let leading = leadingKeys.filter { fields[$0] != nil }
        let rest = fields.keys.filter { !leadingKeys.contains($0) }.sorted()
        return leading + rest
    }

    static func writeString(_ value: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out.append(contentsOf: Array("\\\"".utf8))
            case "\\": out.append(contentsOf: Array("\\\\".utf8))
            case "\n": out.append(contentsOf: Array("\\n".utf8))
            case "\r": out.append(contentsOf: Array("\\r".utf8))
            case "\t": out.append(contentsOf: Array("\\t".utf8))
            case "<", ">", "&", "\u{2028}", "\u{2029}":
                out.append(contentsOf: Array(String(format: "\\u%04x", scalar.value).utf8))
            default:
                if scalar.value < 0x20 {
                    out.append(contentsOf: Array(String(format: "\\u%04x", scalar.value).utf8))
                } else {
                    out.append(contentsOf: Array(String(scalar).utf8))
                }
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
