/// A failed registry operation, shaped like Kubernetes' `metav1.Status`: a reason, the HTTP code the API server
/// would answer with, and Kubernetes' message (clients and operators match on these).
public struct ObjectError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: String, Sendable, Hashable {
        case notFound = "NotFound"
        case alreadyExists = "AlreadyExists"
        case conflict = "Conflict"
        case invalid = "Invalid"
        /// A resourceVersion older than the compacted history (410).
        case expired = "Expired"
        case gone = "Gone"
        case badRequest = "BadRequest"
        case forbidden = "Forbidden"
        case internalError = "InternalError"
        case timeout = "Timeout"
    }

    public var reason: Reason
    public var code: Int
    public var message: String
    /// The field errors of an Invalid error.
    public var causes: [FieldError]

    public init(reason: Reason, code: Int, message: String, causes: [FieldError] = []) {
        self.reason = reason
        self.code = code
        self.message = message
        self.causes = causes
    }

    public var description: String { message }

    // Constructors named after k8s.io/apimachinery/pkg/api/errors.

    public static func notFound(_ resource: String, _ name: String) -> ObjectError {
        ObjectError(reason: .notFound, code: 404, message: "\(resource) \"\(name)\" not found")
    }

    public static func alreadyExists(_ resource: String, _ name: String) -> ObjectError {
        ObjectError(reason: .alreadyExists, code: 409, message: "\(resource) \"\(name)\" already exists")
    }

    public static let modifiedMessage =
        "the object has been modified; please apply your changes to the latest version and try again"

    /// `Operation cannot be fulfilled on pods "x": <why>` (409).
    public static func conflict(_ resource: String, _ name: String, _ why: String = modifiedMessage) -> ObjectError {
        ObjectError(reason: .conflict, code: 409, message: "Operation cannot be fulfilled on \(resource) \"\(name)\": \(why)")
    }

    /// `Pod "x" is invalid: <field errors>` (422); several errors are listed in brackets.
    public static func invalid(_ kind: String, _ name: String, _ errors: [FieldError]) -> ObjectError {
        let body = errors.count == 1 ? errors[0].description : "[" + errors.map(\.description).joined(separator: ", ") + "]"
        return ObjectError(reason: .invalid, code: 422, message: "\(kind) \"\(name)\" is invalid: \(body)", causes: errors)
    }

    /// The watch cache's error for a watch from a compacted revision: `too old resource version: 5 (17)` (410).
    public static func tooOldResourceVersion(_ requested: Int64, _ oldest: Int64) -> ObjectError {
        ObjectError(reason: .expired, code: 410, message: "too old resource version: \(requested) (\(oldest))")
    }

    public static func badRequest(_ message: String) -> ObjectError {
        ObjectError(reason: .badRequest, code: 400, message: message)
    }

    public static func forbidden(_ message: String) -> ObjectError {
        ObjectError(reason: .forbidden, code: 403, message: message)
    }

    public static func internalError(_ message: String) -> ObjectError {
        ObjectError(reason: .internalError, code: 500, message: "Internal error occurred: \(message)")
    }

    public var isNotFound: Bool { reason == .notFound }
    public var isAlreadyExists: Bool { reason == .alreadyExists }
    public var isConflict: Bool { reason == .conflict }
    public var isInvalid: Bool { reason == .invalid }
    /// 410: the resourceVersion is too old; relist.
    public var isGone: Bool { code == 410 }
}

/// One validation error, written as Kubernetes' `field.Error`: `spec.replicas: Invalid value: -1: must be …`.
public struct FieldError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        case required = "Required value"
        case invalid = "Invalid value"
        case forbidden = "Forbidden"
        case duplicate = "Duplicate value"
        case notSupported = "Unsupported value"
        case tooLong = "Too long"
    }

    public var kind: Kind
    /// The field path, e.g. `spec.containers[0].image`.
    public var field: String
    /// The offending value as Go's `%#v`/`%q` prints it (strings quoted), or nil.
    public var value: String?
    public var detail: String

    public init(_ kind: Kind, _ field: String, value: String? = nil, _ detail: String = "") {
        self.kind = kind
        self.field = field
        self.value = value
        self.detail = detail
    }

    public static func required(_ field: String, _ detail: String = "") -> FieldError {
        FieldError(.required, field, detail)
    }

    public static func invalid(_ field: String, _ value: String, _ detail: String) -> FieldError {
        FieldError(.invalid, field, value: quoted(value), detail)
    }

    public static func invalid(_ field: String, number: Int64, _ detail: String) -> FieldError {
        FieldError(.invalid, field, value: String(number), detail)
    }

    public static func forbidden(_ field: String, _ detail: String) -> FieldError {
        FieldError(.forbidden, field, detail)
    }

    public var description: String {
        var body = kind.rawValue
        if let value { body += ": \(value)" }
        if !detail.isEmpty { body += ": \(detail)" }
        return "\(field): \(body)"
    }

    /// Go's `%q`.
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
