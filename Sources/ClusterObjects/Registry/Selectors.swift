import Foundation

/// A label selector in Kubernetes' string syntax (`app=web,tier!=db,env in (a,b),env notin (c),gpu,!spot`):
/// requirements ANDed, as `labels.Parse`. The empty selector matches everything.
public struct LabelSelectorExpression: Sendable, Hashable, CustomStringConvertible {
    public enum Operator: Sendable, Hashable {
        case equals, notEquals, `in`, notIn, exists, doesNotExist
    }

    public struct Requirement: Sendable, Hashable {
        public var key: String
        public var op: Operator
        public var values: [String]

        public init(key: String, op: Operator, values: [String] = []) {
            self.key = key
            self.op = op
            self.values = values
        }

        public func matches(_ labels: [String: String]) -> Bool {
            let value = labels[key]
            switch op {
            case .equals: return value == values.first
            // Kubernetes: `!=` and `notin` also match objects without the label.
            case .notEquals: return value != values.first
            case .in: return value.map { values.contains($0) } ?? false
            case .notIn: return value.map { !values.contains($0) } ?? true
            case .exists: return value != nil
            case .doesNotExist: return value == nil
            }
        }
    }

    public var requirements: [Requirement]

    public init(_ requirements: [Requirement] = []) { self.requirements = requirements }

    public static let everything = LabelSelectorExpression()

    public var isEmpty: Bool { requirements.isEmpty }

    public func matches(_ labels: [String: String]?) -> Bool {
        let labels = labels ?? [:]
        return requirements.allSatisfy { $0.matches(labels) }
    }

    /// Parses the string syntax. Errors are BadRequest, worded as `labels.Parse`'s.
    public init(parsing text: String) throws {
        var parser = SelectorParser(text)
        requirements = try parser.parse()
    }

    /// `metav1.LabelSelectorAsSelector`: matchLabels as `=`, matchExpressions by operator.
    public init(_ selector: LabelSelector) throws {
        var requirements: [Requirement] = []
        for key in (selector.matchLabels ?? [:]).keys.sorted() {
            requirements.append(Requirement(key: key, op: .equals, values: [selector.matchLabels![key]!]))
        }
        for expression in selector.matchExpressions ?? [] {
            let values = expression.values ?? []
            switch expression.operator {
            case "In": requirements.append(Requirement(key: expression.key, op: .in, values: values))
            case "NotIn": requirements.append(Requirement(key: expression.key, op: .notIn, values: values))
            case "Exists": requirements.append(Requirement(key: expression.key, op: .exists))
            case "DoesNotExist": requirements.append(Requirement(key: expression.key, op: .doesNotExist))
            default: throw ObjectError.badRequest("\"\(expression.operator)\" is not a valid label selector operator")
            }
            if ["In", "NotIn"].contains(expression.operator) && values.isEmpty {
                throw ObjectError.badRequest("for 'in', 'notin' operators, values set can't be empty")
            }
        }
        self.requirements = requirements
    }

    public var description: String {
        requirements.map { requirement in
            switch requirement.op {
            case .equals: return "\(requirement.key)=\(requirement.values.first ?? "")"
            case .notEquals: return "\(requirement.key)!=\(requirement.values.first ?? "")"
            case .in: return "\(requirement.key) in (\(requirement.values.joined(separator: ",")))"
            case .notIn: return "\(requirement.key) notin (\(requirement.values.joined(separator: ",")))"
            case .exists: return requirement.key
            case .doesNotExist: return "!\(requirement.key)"
            }
        }.joined(separator: ",")
    }
}

/// A small hand-written lexer/parser for the selector grammar (identifiers, `=`, `==`, `!=`, `in`, `notin`,
/// `!`, parentheses and commas).
private struct SelectorParser {
    let characters: [Character]
    var position = 0

    init(_ text: String) { characters = Array(text) }

    mutating func skipSpaces() {
        while position < characters.count, characters[position] == " " { position += 1 }
    }

    mutating func word() -> String {
        skipSpaces()
        var out = ""
        while position < characters.count {
            let c = characters[position]
            if c == " " || c == "," || c == "=" || c == "!" || c == "(" || c == ")" { break }
            out.append(c)
            position += 1
        }
        return out
    }

    func peek() -> Character? { position < characters.count ? characters[position] : nil }

    mutating func parse() throws -> [LabelSelectorExpression.Requirement] {
        var requirements: [LabelSelectorExpression.Requirement] = []
        skipSpaces()
        if position == characters.count { return [] }
        while true {
            requirements.append(try requirement())
            skipSpaces()
            guard let next = peek() else { break }
            guard next == "," else { throw error("found '\(next)', expected: ',' or 'end of string'") }
            position += 1
        }
        return requirements
    }

    func error(_ detail: String) -> ObjectError {
        ObjectError.badRequest("unable to parse requirement: \(detail)")
    }

    mutating func requirement() throws -> LabelSelectorExpression.Requirement {
        skipSpaces()
        if peek() == "!" {
            position += 1
            let key = word()
            try check(key: key)
            return .init(key: key, op: .doesNotExist)
        }
        let key = word()
        try check(key: key)
        skipSpaces()
        guard let next = peek(), next != "," else { return .init(key: key, op: .exists) }
        if next == "=" {
            position += 1
            if peek() == "=" { position += 1 }
            return .init(key: key, op: .equals, values: [try value()])
        }
        if next == "!" {
            position += 1
            guard peek() == "=" else { throw error("found '!', expected: '!='") }
            position += 1
            return .init(key: key, op: .notEquals, values: [try value()])
        }
        let op = word()
        switch op {
        case "in": return .init(key: key, op: .in, values: try valueSet())
        case "notin": return .init(key: key, op: .notIn, values: try valueSet())
        default: throw error("found '\(op)', expected: in, notin, =, ==, !=")
        }
    }

    mutating func value() throws -> String {
        let value = word()
        if let message = NameValidation.labelValue(value).first {
            throw error("invalid label value: \"\(value)\": at key: " + message)
        }
        return value
    }

    mutating func valueSet() throws -> [String] {
        skipSpaces()
        guard peek() == "(" else { throw error("found '\(peek().map(String.init) ?? "")', expected: '('") }
        position += 1
        var values: [String] = []
        while true {
            values.append(try value())
            skipSpaces()
            if peek() == "," { position += 1; continue }
            if peek() == ")" { position += 1; break }
            throw error("found '\(peek().map(String.init) ?? "")', expected: ',' or ')'")
        }
        if values.allSatisfy(\.isEmpty) { throw error("for 'in', 'notin' operators, values set can't be empty") }
        return values
    }

    func check(key: String) throws {
        if key.isEmpty { throw error("found '', expected: identifier") }
        if let message = NameValidation.qualifiedName(key).first {
            throw error("invalid label key \"\(key)\": \(message)")
        }
    }
}

/// A field selector (`metadata.name=web-0,spec.nodeName!=`, `=`, `==`, `!=`), ANDed. Only the labels a type
/// supports are accepted, as the API server's field label conversion.
public struct FieldSelectorExpression: Sendable, Hashable {
    public struct Requirement: Sendable, Hashable {
        public var field: String
        public var value: String
        public var equals: Bool
    }

    public var requirements: [Requirement]

    public init(_ requirements: [Requirement] = []) { self.requirements = requirements }

    public init(parsing text: String) throws {
        var requirements: [Requirement] = []
        for term in text.split(separator: ",") {
            let term = String(term).trimmingSpaces()
            if let range = term.range(of: "!=") {
                requirements.append(Requirement(field: String(term[..<range.lowerBound]), value: String(term[range.upperBound...]), equals: false))
            } else if let range = term.range(of: "==") ?? term.range(of: "=") {
                requirements.append(Requirement(field: String(term[..<range.lowerBound]), value: String(term[range.upperBound...]), equals: true))
            } else {
                throw ObjectError.badRequest("invalid selector: '\(text)'; can't understand '\(term)'")
            }
        }
        self.requirements = requirements
    }

    public var isEmpty: Bool { requirements.isEmpty }

    /// Checks every label against the type's supported ones.
    func validate<Object: KubeObject>(for type: Object.Type) throws {
        for requirement in requirements
        where !["metadata.name", "metadata.namespace"].contains(requirement.field) && !type.selectableFields.contains(requirement.field) {
            throw ObjectError.badRequest("field label not supported: \(requirement.field)")
        }
    }

    func matches<Object: KubeObject>(_ object: Object) -> Bool {
        requirements.allSatisfy { requirement in
            let value = object.fieldValue(requirement.field) ?? ""
            return (value == requirement.value) == requirement.equals
        }
    }
}

extension String {
    func trimmingSpaces() -> String {
        var text = Substring(self)
        while text.first == " " { text.removeFirst() }
        while text.last == " " { text.removeLast() }
        return String(text)
    }
}
