/// Kubernetes' name and label rules (k8s.io/apimachinery/pkg/util/validation) with their exact messages, which
/// operators and tests recognise.
public enum NameValidation {
    static let dns1123LabelFormat = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    static let dns1123LabelMessage = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
    static let dns1123SubdomainFormat = dns1123LabelFormat + "(\\." + dns1123LabelFormat + ")*"
    static let dns1123SubdomainMessage = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
    static let qualifiedNameFormat = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
    static let qualifiedNameMessage = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
    static let labelValueFormat = "(" + qualifiedNameFormat + ")?"
    static let labelValueMessage = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
    static let configKeyFormat = "[-._a-zA-Z0-9]+"
    static let configKeyMessage = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"

    /// Go's `RegexError`: the message, examples (joined with Go's quirky "',  or '"), and the regex.
    static func regexError(_ message: String, _ format: String, _ examples: String...) -> String {
        guard !examples.isEmpty else { return message + " (regex used for validation is '" + format + "')" }
        var text = message + " (e.g. "
        for (index, example) in examples.enumerated() {
            if index > 0 { text += " or " }
            text += "'" + example + "', "
        }
        return text + "regex used for validation is '" + format + "')"
    }

    static func maxLength(_ length: Int) -> String { "must be no more than \(length) characters" }

    // Character-class checks equivalent to the regexes above (no regex engine needed).
    private static func isLowerAlnum(_ c: Character) -> Bool { c.isASCII && (c.isLowercase || c.isNumber) }
    private static func isAlnum(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c.isNumber) }

    static func matchesDNS1123Label(_ value: String) -> Bool {
        guard let first = value.first, let last = value.last, isLowerAlnum(first), isLowerAlnum(last) else { return false }
        return value.allSatisfy { isLowerAlnum($0) || $0 == "-" }
    }

    static func matchesQualifiedName(_ value: String) -> Bool {
        guard let first = value.first, let last = value.last, isAlnum(first), isAlnum(last) else { return false }
        return value.allSatisfy { isAlnum($0) || $0 == "-" || $0 == "_" || $0 == "." }
    }

    /// `IsDNS1123Label`: namespace names, container names.
    public static func dns1123Label(_ value: String) -> [String] {
        var errors: [String] = []
        if value.utf8.count > 63 { errors.append(maxLength(63)) }
        if !matchesDNS1123Label(value) {
            errors.append(regexError(dns1123LabelMessage, dns1123LabelFormat, "my-name", "123-abc"))
        }
        return errors
    }

    /// `IsDNS1123Subdomain`: most object names.
    public static func dns1123Subdomain(_ value: String) -> [String] {
        var errors: [String] = []
        if value.utf8.count > 253 { errors.append(maxLength(253)) }
        let labels = value.split(separator: ".", omittingEmptySubsequences: false)
        if !labels.allSatisfy({ matchesDNS1123Label(String($0)) }) {
            errors.append(regexError(dns1123SubdomainMessage, dns1123SubdomainFormat, "example.com"))
        }
        return errors
    }

    /// `IsValidPathSegmentName`: RBAC object names.
    public static func pathSegmentName(_ value: String) -> [String] {
        if value == "." || value == ".." { return ["may not be '\(value)'"] }
        var errors: [String] = []
        for illegal in ["/", "%"] where value.contains(illegal) { errors.append("may not contain '\(illegal)'") }
        return errors
    }

    /// `IsQualifiedName`: label and annotation keys (`[prefix/]name`).
    public static func qualifiedName(_ value: String) -> [String] {
        var errors: [String] = []
        let parts = value.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let name: String
        switch parts.count {
        case 1:
            name = parts[0]
        case 2:
            name = parts[1]
            if parts[0].isEmpty {
                errors.append("prefix part must be non-empty")
            } else {
                errors += dns1123Subdomain(parts[0]).map { "prefix part " + $0 }
            }
        default:
            return ["a qualified name " + regexError(qualifiedNameMessage, qualifiedNameFormat, "MyName", "my.name", "123-abc")
                    + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
        }
        if name.isEmpty {
            errors.append("name part must be non-empty")
        } else if name.utf8.count > 63 {
            errors.append("name part " + maxLength(63))
        }
        if !matchesQualifiedName(name) {
            errors.append("name part " + regexError(qualifiedNameMessage, qualifiedNameFormat, "MyName", "my.name", "123-abc"))
        }
        return errors
    }

    /// `IsValidLabelValue`.
    public static func labelValue(_ value: String) -> [String] {
        var errors: [String] = []
        if value.utf8.count > 63 { errors.append(maxLength(63)) }
        if !value.isEmpty && !matchesQualifiedName(value) {
            errors.append(regexError(labelValueMessage, labelValueFormat, "MyValue", "my_value", "12345"))
        }
        return errors
    }

    /// `IsConfigMapKey`: Secret data keys.
    public static func configKey(_ value: String) -> [String] {
        var errors: [String] = []
        if value.utf8.count > 253 { errors.append(maxLength(253)) }
        if value.isEmpty || !value.allSatisfy({ isAlnum($0) || $0 == "-" || $0 == "_" || $0 == "." }) {
            errors.append(regexError(configKeyMessage, configKeyFormat, "key.name", "KEY_NAME", "key-name"))
        }
        if value == "." { errors.append("must not be '.'") } else if value == ".." { errors.append("must not be '..'") }
        else if value.hasPrefix("..") { errors.append("must not start with '..'") }
        return errors
    }
}
