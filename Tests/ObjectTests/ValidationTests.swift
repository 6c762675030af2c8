import ClusterObjects
import Foundation
import RaftKV
import Testing

/// Validation errors, worded as kube-apiserver's, refused before anything is written.
@Suite struct ValidationTests {
    static let subdomainRule = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    static let labelRule = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"

    @Test func namesAndLabels() {
        #expect(NameValidation.dns1123Subdomain("Foo") == [Self.subdomainRule])
        #expect(NameValidation.dns1123Subdomain("web-0.example").isEmpty)
        #expect(NameValidation.dns1123Subdomain("a..b") == [Self.subdomainRule])
        #expect(NameValidation.dns1123Subdomain(String(repeating: "a", count: 254)) == ["must be no more than 253 characters"])
        #expect(NameValidation.dns1123Label("kube-system").isEmpty)
        #expect(NameValidation.dns1123Label("a.b") == [Self.labelRule])
        #expect(NameValidation.qualifiedName("app.kubernetes.io/name").isEmpty)
        #expect(NameValidation.qualifiedName("bad key!") == ["name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"])
        #expect(NameValidation.qualifiedName("/x") == ["prefix part must be non-empty"])
        #expect(NameValidation.labelValue("").isEmpty)
        #expect(NameValidation.labelValue("-x") == ["a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"])
        #expect(NameValidation.pathSegmentName("system:nodes").isEmpty)
        #expect(NameValidation.pathSegmentName("a/b") == ["may not contain '/'"])
    }

    @Test func errorsNameTheFieldAsKubernetes() {
        #expect(ObjectValidation.validate(makePod("Foo", namespace: "default")).map(\.description)
                == ["metadata.name: Invalid value: \"Foo\": " + Self.subdomainRule])
        var noNamespace = makePod("web", namespace: "default")
        noNamespace.metadata.namespace = nil
        #expect(ObjectValidation.validate(noNamespace).map(\.description) == ["metadata.namespace: Required value"])
        var noName = makePod("", namespace: "default")
        noName.metadata.name = nil
        #expect(ObjectValidation.validate(noName).map(\.description) == ["metadata.name: Required value: name or generateName is required"])
        #expect(ObjectValidation.validate(Node(metadata: ObjectMeta(name: "n", namespace: "x"))).map(\.description)
                == ["metadata.namespace: Forbidden: not allowed on this type"])
        #expect(ObjectValidation.validate(makeNamespace("a.b")).map(\.description) == ["metadata.name: Invalid value: \"a.b\": " + Self.labelRule])
    }

    @Test func podRules() {
        let empty = Pod(metadata: ObjectMeta(name: "p", namespace: "d"), spec: PodSpec(containers: []))
        #expect(empty.validate().map(\.description) == ["spec.containers: Required value"])
        let bad = Pod(metadata: ObjectMeta(name: "p", namespace: "d"), spec: PodSpec(
            containers: [Container(name: "", image: "nginx"), Container(name: "app", image: nil), Container(name: "app", image: "x")],
            restartPolicy: "Sometimes"))
        #expect(bad.validate().map(\.description) == [
            "spec.containers[0].name: Required value",
            "spec.containers[1].image: Required value",
            "spec.containers[2].name: Duplicate value: \"app\"",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ])
    }

    @Test func replicaSetRules() {
        func replicaSet(replicas: Int32, selector: [String: String]?, labels: [String: String]) -> ReplicaSet {
            ReplicaSet(metadata: ObjectMeta(name: "rs", namespace: "d"),
                       spec: ReplicaSetSpec(replicas: replicas, selector: selector.map { LabelSelector(matchLabels: $0) },
                                            template: PodTemplateSpec(metadata: ObjectMeta(labels: labels),
                                                                      spec: PodSpec(containers: [Container(name: "a", image: "b")]))))
        }
        #expect(replicaSet(replicas: 2, selector: ["app": "web"], labels: ["app": "web", "x": "y"]).validate().isEmpty)
        #expect(replicaSet(replicas: -1, selector: ["app": "web"], labels: ["app": "db"]).validate().map(\.description) == [
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`",
        ])
        #expect(replicaSet(replicas: 1, selector: nil, labels: [:]).validate().map(\.description) == ["spec.selector: Required value"])
    }

    @Test func rbacRules() {
        let role = ClusterObjects.Role(metadata: ObjectMeta(name: "r", namespace: "d"),
                                       rules: [PolicyRule(verbs: [], apiGroups: [""], resources: ["pods"]), PolicyRule(verbs: ["get"])])
        #expect(role.validate().map(\.description) == [
            "rules[0].verbs: Required value: verbs must contain at least one value",
            "rules[1].apiGroups: Required value: resource rules must supply at least one api group",
            "rules[1].resources: Required value: resource rules must supply at least one resource",
        ])
        let binding = ClusterRoleBinding(metadata: ObjectMeta(name: "b"), subjects: [Subject(kind: "Robot", name: "")],
                                         roleRef: RoleRef(kind: "Role", name: "r"))
        #expect(binding.validate().map(\.description) == [
            "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
            "subjects[0].name: Required value",
            "subjects[0].kind: Unsupported value: \"Robot\": supported values: \"ServiceAccount\", \"User\", \"Group\"",
        ])
    }

    /// The registry refuses before writing, with the aggregate message of kube-apiserver.
    @Test func registryRefusesInvalidObjects() async throws {
        try await EmbeddedObjects.with { embedded in
            let objects = embedded.objects()
            await expectObjectError("Pod \"Foo\" is invalid: metadata.name: Invalid value: \"Foo\": " + Self.subdomainRule, code: 422) {
                _ = try await objects.pods.create(makePod("Foo", namespace: "default"))
            }
            let before = try await embedded.backend.currentRevision()
            await expectObjectError("Pod \"p\" is invalid: [metadata.labels: Invalid value: \"-x\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?'), spec.containers: Required value]") {
                _ = try await objects.pods.create(Pod(metadata: ObjectMeta(name: "p", namespace: "default", labels: ["app": "-x"]),
                                                      spec: PodSpec(containers: [])))
            }
            await expectObjectError("ReplicaSet.apps \"rs\" is invalid: spec.replicas: Invalid value: -3: must be greater than or equal to 0") {
                _ = try await objects.replicaSets.create(ReplicaSet(metadata: ObjectMeta(name: "rs", namespace: "default"),
                                                                    spec: ReplicaSetSpec(replicas: -3, selector: LabelSelector(matchLabels: ["a": "b"]),
                                                                                         template: PodTemplateSpec(metadata: ObjectMeta(labels: ["a": "b"]),
                                                                                                                   spec: PodSpec(containers: [Container(name: "a", image: "b")])))))
            }
            await expectObjectError("ClusterRole.rbac.authorization.k8s.io \"r\" is invalid: rules[0].verbs: Required value: verbs must contain at least one value") {
                _ = try await objects.clusterRoles.create(ClusterRole(metadata: ObjectMeta(name: "r"),
                                                                      rules: [PolicyRule(verbs: [], apiGroups: [""], resources: ["pods"])]))
            }
            #expect(try await embedded.backend.currentRevision() == before)
            // Updates are validated too.
            _ = try await objects.namespaces.create(makeNamespace("default"))
            _ = try await objects.pods.create(makePod("ok", namespace: "default"))
            await expectObjectError("Pod \"ok\" is invalid: spec.containers[0].image: Required value") {
                _ = try await objects.pods.guaranteedUpdate("ok", namespace: "default") { $0.spec.containers[0].image = "" }
            }
        }
    }
}
