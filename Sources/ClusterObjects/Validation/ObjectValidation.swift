import Foundation

/// Which rule a type's names follow (Kubernetes picks one per resource).
public enum NameRule: Sendable {
    case dns1123Subdomain, dns1123Label, pathSegment

    func check(_ name: String) -> [String] {
        switch self {
        case .dns1123Subdomain: return NameValidation.dns1123Subdomain(name)
        case .dns1123Label: return NameValidation.dns1123Label(name)
        case .pathSegment: return NameValidation.pathSegmentName(name)
        }
    }
}

extension KubeObject {
    /// Namespaces are DNS labels and RBAC objects path segments; everything else here is a DNS subdomain.
    static var nameRule: NameRule {
        switch storage {
        case .namespaces: return .dns1123Label
        case .roles, .clusterRoles, .roleBindings, .clusterRoleBindings: return .pathSegment
        default: return .dns1123Subdomain
        }
    }
}

public enum ObjectValidation {
    /// `ValidateObjectMeta`: name, namespace (required exactly when the type is namespaced), labels, annotations.
    public static func validateMetadata<Object: KubeObject>(_ object: Object) -> [FieldError] {
        var errors: [FieldError] = []
        let meta = object.metadata
        if let name = meta.name, !name.isEmpty {
            errors += Object.nameRule.check(name).map { FieldError.invalid("metadata.name", name, $0) }
        } else {
            errors.append(.required("metadata.name", "name or generateName is required"))
        }
        if Object.storage.isNamespaced {
            if let namespace = meta.namespace, !namespace.isEmpty {
                errors += NameValidation.dns1123Label(namespace).map { FieldError.invalid("metadata.namespace", namespace, $0) }
            } else {
                errors.append(.required("metadata.namespace"))
            }
        } else if let namespace = meta.namespace, !namespace.isEmpty {
            errors.append(.forbidden("metadata.namespace", "not allowed on this type"))
        }
        errors += validateLabels(meta.labels, field: "metadata.labels")
        for key in (meta.annotations ?? [:]).keys.sorted() {
            errors += NameValidation.qualifiedName(key.lowercased()).map { FieldError.invalid("metadata.annotations", key, $0) }
        }
        if let generation = meta.generation, generation < 0 {
            errors.append(.invalid("metadata.generation", number: generation, "must be greater than or equal to 0"))
        }
        return errors
    }

    /// `ValidateLabels`: each key a qualified name, each value a label value.
    public static func validateLabels(_ labels: [String: String]?, field: String) -> [FieldError] {
        var errors: [FieldError] = []
        for key in (labels ?? [:]).keys.sorted() {
            errors += NameValidation.qualifiedName(key).map { FieldError.invalid(field, key, $0) }
            errors += NameValidation.labelValue(labels![key]!).map { FieldError.invalid(field, labels![key]!, $0) }
        }
        return errors
    }

    /// Everything checked before a write: metadata and the type's own rules.
    public static func validate<Object: KubeObject>(_ object: Object) -> [FieldError] {
        validateMetadata(object) + object.validate()
    }

    /// Go's `%#v` of a `map[string]string`, used in Invalid values.
    static func goMap(_ map: [String: String]?) -> String {
        let entries = (map ?? [:]).keys.sorted().map { "\(FieldError.quoted($0)):\(FieldError.quoted(map![$0]!))" }
        return "map[string]string{" + entries.joined(separator: ", ") + "}"
    }

    static func notSupported(_ field: String, _ value: String, _ supported: [String]) -> FieldError {
        FieldError(.notSupported, field, value: FieldError.quoted(value),
                   "supported values: " + supported.map { FieldError.quoted($0) }.joined(separator: ", "))
    }

    /// `validateContainers` + the pod spec rules this layer enforces.
    static func validatePodSpec(_ spec: PodSpec, field: String, requireAlways: Bool = false) -> [FieldError] {
        var errors: [FieldError] = []
        if spec.containers.isEmpty { errors.append(.required("\(field).containers")) }
        var seen = Set<String>()
        for (index, container) in spec.containers.enumerated() {
            let path = "\(field).containers[\(index)]"
            if container.name.isEmpty {
                errors.append(.required("\(path).name"))
            } else {
                errors += NameValidation.dns1123Label(container.name).map { FieldError.invalid("\(path).name", container.name, $0) }
                if !seen.insert(container.name).inserted {
                    errors.append(FieldError(.duplicate, "\(path).name", value: FieldError.quoted(container.name)))
                }
            }
            if (container.image ?? "").trimmingSpaces().isEmpty { errors.append(.required("\(path).image")) }
        }
        let policies = ["Always", "OnFailure", "Never"]
        if let policy = spec.restartPolicy, !policies.contains(policy) {
            errors.append(notSupported("\(field).restartPolicy", policy, policies))
        } else if requireAlways, let policy = spec.restartPolicy, policy != "Always" {
            errors.append(notSupported("\(field).restartPolicy", policy, ["Always"]))
        }
        for (index, toleration) in (spec.tolerations ?? []).enumerated() {
            if let op = toleration.operator, !["Exists", "Equal"].contains(op) {
                errors.append(notSupported("\(field).tolerations[\(index)].operator", op, ["Equal", "Exists"]))
            }
            if toleration.operator == "Exists", let value = toleration.value, !value.isEmpty {
                errors.append(.invalid("\(field).tolerations[\(index)].operator", toleration.operator!,
                                       "value must be empty when `operator` is 'Exists'"))
            }
        }
        errors += validateLabels(spec.nodeSelector, field: "\(field).nodeSelector")
        return errors
    }

    /// `ValidatePolicyRule`.
    static func validateRules(_ rules: [PolicyRule]?, namespaced: Bool) -> [FieldError] {
        var errors: [FieldError] = []
        for (index, rule) in (rules ?? []).enumerated() {
            let path = "rules[\(index)]"
            if rule.verbs.isEmpty { errors.append(.required("\(path).verbs", "verbs must contain at least one value")) }
            if let urls = rule.nonResourceURLs, !urls.isEmpty {
                let value = "[]string{" + urls.map(FieldError.quoted).joined(separator: ", ") + "}"
                if namespaced {
                    errors.append(FieldError(.invalid, "\(path).nonResourceURLs", value: value, "namespaced rules cannot apply to non-resource URLs"))
                }
                if !(rule.apiGroups ?? []).isEmpty || !(rule.resources ?? []).isEmpty || !(rule.resourceNames ?? []).isEmpty {
                    errors.append(FieldError(.invalid, "\(path).nonResourceURLs", value: value, "rules cannot apply to both regular resources and non-resource URLs"))
                }
                continue
            }
            if (rule.apiGroups ?? []).isEmpty {
                errors.append(.required("\(path).apiGroups", "resource rules must supply at least one api group"))
            }
            if (rule.resources ?? []).isEmpty {
                errors.append(.required("\(path).resources", "resource rules must supply at least one resource"))
            }
        }
        return errors
    }

    /// `ValidateRoleBinding` / `ValidateClusterRoleBinding`.
    static func validateBinding(roleRef: RoleRef, subjects: [Subject]?, allowedKinds: [String]) -> [FieldError] {
        var errors: [FieldError] = []
        if roleRef.apiGroup != "rbac.authorization.k8s.io" {
            errors.append(notSupported("roleRef.apiGroup", roleRef.apiGroup, ["rbac.authorization.k8s.io"]))
        }
        if !allowedKinds.contains(roleRef.kind) { errors.append(notSupported("roleRef.kind", roleRef.kind, allowedKinds)) }
        if roleRef.name.isEmpty {
            errors.append(.required("roleRef.name"))
        } else {
            errors += NameValidation.pathSegmentName(roleRef.name).map { FieldError.invalid("roleRef.name", roleRef.name, $0) }
        }
        for (index, subject) in (subjects ?? []).enumerated() {
            let path = "subjects[\(index)]"
            if subject.name.isEmpty { errors.append(.required("\(path).name")) }
            switch subject.kind {
            case "ServiceAccount":
                if subject.namespace?.isEmpty ?? true { errors.append(.required("\(path).namespace")) }
            case "User", "Group":
                break
            default:
                errors.append(notSupported("\(path).kind", subject.kind, ["ServiceAccount", "User", "Group"]))
            }
        }
        return errors
    }
}

// MARK: - Per-type rules

extension Pod {
    public func validate() -> [FieldError] { ObjectValidation.validatePodSpec(spec, field: "spec") }
}

extension ReplicaSet {
    /// `ValidateReplicaSetSpec`: replicas ≥ 0, a non-empty selector that matches the template's labels, a valid
    /// template whose restart policy is Always.
    public func validate() -> [FieldError] {
        var errors: [FieldError] = []
        if let replicas = spec.replicas, replicas < 0 {
            errors.append(.invalid("spec.replicas", number: Int64(replicas), "must be greater than or equal to 0"))
        }
        var selector: LabelSelectorExpression?
        if let labelSelector = spec.selector {
            if (labelSelector.matchLabels ?? [:]).isEmpty && (labelSelector.matchExpressions ?? []).isEmpty {
                errors.append(FieldError(.invalid, "spec.selector", value: "{}", "empty selector is invalid for deployment"))
            }
            errors += ObjectValidation.validateLabels(labelSelector.matchLabels, field: "spec.selector.matchLabels")
            do {
                selector = try LabelSelectorExpression(labelSelector)
            } catch {
                errors.append(FieldError(.invalid, "spec.selector", value: "{}", "invalid label selector"))
            }
        } else {
            errors.append(.required("spec.selector"))
        }
        guard let template = spec.template else {
            errors.append(.required("spec.template"))
            return errors
        }
        let labels = template.metadata?.labels
        if let selector, !selector.isEmpty, !selector.matches(labels) {
            errors.append(FieldError(.invalid, "spec.template.metadata.labels", value: ObjectValidation.goMap(labels),
                                     "`selector` does not match template `labels`"))
        }
        errors += ObjectValidation.validateLabels(labels, field: "spec.template.metadata.labels")
        if let podSpec = template.spec {
            errors += ObjectValidation.validatePodSpec(podSpec, field: "spec.template.spec", requireAlways: true)
        } else {
            errors.append(.required("spec.template.spec.containers"))
        }
        return errors
    }
}

extension Secret {
    public func validate() -> [FieldError] {
        var errors: [FieldError] = []
        for key in (data ?? [:]).keys.sorted() {
            errors += NameValidation.configKey(key).map { FieldError.invalid("data[\(key)]", key, $0) }
        }
        let total = (data ?? [:]).values.reduce(0) { $0 + $1.count }
        if total > 1024 * 1024 {
            errors.append(FieldError(.tooLong, "data", "may not be more than 1048576 bytes"))
        }
        return errors
    }
}

extension Role {
    public func validate() -> [FieldError] { ObjectValidation.validateRules(rules, namespaced: true) }
}

extension ClusterRole {
    public func validate() -> [FieldError] {
        // An aggregated ClusterRole's rules are filled in by its controller.
        aggregationRule != nil ? [] : ObjectValidation.validateRules(rules, namespaced: false)
    }
}

extension RoleBinding {
    public func validate() -> [FieldError] {
        ObjectValidation.validateBinding(roleRef: roleRef, subjects: subjects, allowedKinds: ["Role", "ClusterRole"])
    }
}

extension ClusterRoleBinding {
    public func validate() -> [FieldError] {
        ObjectValidation.validateBinding(roleRef: roleRef, subjects: subjects, allowedKinds: ["ClusterRole"])
    }
}

extension Node {
    public func validate() -> [FieldError] {
        var errors: [FieldError] = []
        for (index, taint) in (spec?.taints ?? []).enumerated() {
            errors += NameValidation.qualifiedName(taint.key).map { FieldError.invalid("spec.taints[\(index)].key", taint.key, $0) }
            let effects = ["NoSchedule", "PreferNoSchedule", "NoExecute"]
            if !effects.contains(taint.effect) {
                errors.append(ObjectValidation.notSupported("spec.taints[\(index)].effect", taint.effect, effects))
            }
        }
        return errors
    }
}

extension Lease {
    public func validate() -> [FieldError] {
        if let duration = spec?.leaseDurationSeconds, duration <= 0 {
            return [.invalid("spec.leaseDurationSeconds", number: Int64(duration), "must be greater than 0")]
        }
        return []
    }
}

extension Event {
    public func validate() -> [FieldError] {
        var errors: [FieldError] = []
        if let namespace = involvedObject.namespace, namespace != (metadata.namespace ?? "") {
            errors.append(FieldError(.invalid, "involvedObject.namespace", value: FieldError.quoted(namespace),
                                     "does not match event.namespace"))
        }
        return errors
    }
}
