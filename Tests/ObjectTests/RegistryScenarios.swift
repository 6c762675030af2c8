import ClusterObjects
import Foundation
import RaftKV
import Testing

/// The registry behaviours, written once against an `ObjectStore` and run over both backends
/// (EmbeddedRegistryTests: a KVStore in-process; RemoteRegistryTests: a real kvserver over gRPC).
/// Each scenario works in namespaces of its own, so scenarios can share a store.
enum RegistryScenarios {
    // MARK: CRUD and metadata

    static func createGetUpdateDelete(_ objects: ObjectStore) async throws {
        let namespace = try await objects.namespaces.create(makeNamespace("crud"))
        #expect(namespace.metadata.generation == 1)

        let created = try await objects.pods.create(makePod("web-0", namespace: "crud", labels: ["app": "web"]))
        let uid = try #require(created.metadata.uid)
        #expect(UUID(uuidString: uid) != nil && uid == uid.lowercased())
        #expect(created.metadata.generation == 1)
        let timestamp = try #require(created.metadata.creationTimestamp)
        #expect(KubeTime.parse(timestamp) != nil && timestamp.hasSuffix("Z"))
        let createdRV = try #require(created.metadata.revision)

        // resourceVersion is the key's mod_revision, never stored in the value.
        let kv = try #require(try await objects.backend.range(RangeRequest(key: u8("/registry/pods/crud/web-0"))).kvs.first)
        #expect(kv.modRevision == createdRV)
        let stored = String(decoding: kv.value, as: UTF8.self)
        #expect(stored.hasPrefix("{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"web-0\",\"namespace\":\"crud\",\"uid\":\"\(uid)\""))
        #expect(!stored.contains("resourceVersion"))
        #expect(stored.hasSuffix("}\n"))

        let fetched = try await objects.pods.get("web-0", namespace: "crud")
        #expect(fetched == created)

        await expectObjectError("pods \"web-0\" already exists", code: 409) {
            _ = try await objects.pods.create(makePod("web-0", namespace: "crud"))
        }
        await expectObjectError("resourceVersion should not be set on objects to be created", code: 400) {
            var pod = makePod("web-1", namespace: "crud")
            pod.metadata.resourceVersion = "5"
            _ = try await objects.pods.create(pod)
        }

        // A label change keeps the generation; a spec change bumps it.
        var relabeled = fetched
        relabeled.metadata.labels = ["app": "web", "tier": "front"]
        relabeled.metadata.uid = nil  // the registry keeps the stored uid
        let afterLabel = try await objects.pods.update(relabeled)
        #expect(afterLabel.metadata.generation == 1)
        #expect(afterLabel.metadata.uid == uid)
        #expect(afterLabel.metadata.creationTimestamp == timestamp)
        #expect(try #require(afterLabel.metadata.revision) > createdRV)

        var respecced = afterLabel
        respecced.spec.containers[0].image = "nginx:1.27"
        let afterSpec = try await objects.pods.update(respecced)
        #expect(afterSpec.metadata.generation == 2)

        // The status subresource: status changes through update are not written, through updateStatus only
        // the status is; neither bumps the generation.
        var restatused = afterSpec
        restatused.status = PodStatus(phase: "Running", podIP: "10.0.0.5")
        let ignored = try await objects.pods.update(restatused)
        #expect(ignored.status == afterSpec.status && ignored.metadata.resourceVersion == afterSpec.metadata.resourceVersion)
        restatused.spec.containers[0].image = "nginx:ignored"
        let afterStatus = try await objects.pods.updateStatus(restatused)
        #expect(afterStatus.metadata.generation == 2)
        #expect(afterStatus.status?.podIP == "10.0.0.5")
        #expect(afterStatus.spec.containers[0].image == "nginx:1.27", "updateStatus writes nothing but the status")
        #expect(try await objects.pods.get("web-0", namespace: "crud") == afterStatus)
        await expectObjectError("Operation cannot be fulfilled on pods \"web-0\": the object has been modified; please apply your changes to the latest version and try again", code: 409) {
            _ = try await objects.pods.updateStatus(afterSpec)
        }
        await expectObjectError("secrets/status \"\" not found", code: 404) {
            _ = try await objects.secrets.updateStatus(Secret(metadata: ObjectMeta(name: "s", namespace: "crud")))
        }

        // An update from a stale read: Kubernetes' Conflict.
        await expectObjectError("Operation cannot be fulfilled on pods \"web-0\": the object has been modified; please apply your changes to the latest version and try again", code: 409) {
            var stale = afterLabel
            stale.metadata.labels = ["app": "stale"]
            _ = try await objects.pods.update(stale)
        }

        // Changing nothing writes nothing.
        let unchanged = try await objects.pods.update(afterStatus)
        #expect(unchanged.metadata.resourceVersion == afterStatus.metadata.resourceVersion)

        // The uid is immutable.
        await expectObjectError("Pod \"web-0\" is invalid: metadata.uid: Invalid value: \"0000\": field is immutable", code: 422) {
            var other = afterStatus
            other.metadata.uid = "0000"
            _ = try await objects.pods.update(other)
        }

        // Delete preconditions.
        await expectObjectError("Operation cannot be fulfilled on pods \"web-0\": Precondition failed: UID in precondition: 1234, UID in object meta: \(uid)", code: 409) {
            try await objects.pods.delete("web-0", namespace: "crud", preconditions: Preconditions(uid: "1234"))
        }
        await expectObjectError("Operation cannot be fulfilled on pods \"web-0\": Precondition failed: ResourceVersion in precondition: \(createdRV), ResourceVersion in object meta: \(afterStatus.metadata.resourceVersion!)", code: 409) {
            try await objects.pods.delete("web-0", namespace: "crud", preconditions: Preconditions(resourceVersion: String(createdRV)))
        }
        let deleted = try await objects.pods.delete("web-0", namespace: "crud",
                                                    preconditions: Preconditions(uid: uid, resourceVersion: afterStatus.metadata.resourceVersion))
        #expect(try #require(deleted.metadata.revision) > afterStatus.metadata.revision!)
        await expectObjectError("pods \"web-0\" not found", code: 404) {
            _ = try await objects.pods.get("web-0", namespace: "crud")
        }
        await expectObjectError("pods \"web-0\" not found", code: 404) {
            try await objects.pods.delete("web-0", namespace: "crud")
        }
        await expectObjectError("pods \"web-0\" not found", code: 404) {
            _ = try await objects.pods.update(afterStatus)
        }

        // Cluster-scoped objects, nodes under /registry/minions, qualified resource names in errors.
        let node = try await objects.nodes.create(Node(metadata: ObjectMeta(name: "node-1", labels: ["zone": "a"]),
                                                       status: NodeStatus(capacity: ["cpu": "4", "memory": "8Gi"],
                                                                          conditions: [NodeCondition(type: "Ready", status: "True")])))
        #expect(node.isReady)
        #expect(try await objects.backend.range(RangeRequest(key: u8("/registry/minions/node-1"))).count == 1)
        await expectObjectError("replicasets.apps \"nope\" not found") {
            _ = try await objects.replicaSets.get("nope", namespace: "crud")
        }
        await expectObjectError("leases.coordination.k8s.io \"nope\" not found") {
            _ = try await objects.leases.get("nope", namespace: "crud")
        }

        // generateName.
        var generated = makePod("", namespace: "crud")
        generated.metadata.name = nil
        generated.metadata.generateName = "job-"
        let named = try await objects.pods.create(generated)
        #expect(named.name.hasPrefix("job-") && named.name.count == 9)
    }

    static func namespacesMustExist(_ objects: ObjectStore) async throws {
        await expectObjectError("namespaces \"missing\" not found", code: 404) {
            _ = try await objects.pods.create(makePod("web-0", namespace: "missing"))
        }
        var terminating = makeNamespace("going")
        terminating.status = NamespaceStatus(phase: "Terminating")
        _ = try await objects.namespaces.create(terminating)
        await expectObjectError("pods \"web-0\" is forbidden: unable to create new content in namespace going because it is being terminated", code: 403) {
            _ = try await objects.pods.create(makePod("web-0", namespace: "going"))
        }
    }

    /// Finalizers: delete marks; removing the last finalizer deletes.
    static func finalizers(_ objects: ObjectStore) async throws {
        _ = try await objects.namespaces.create(makeNamespace("fin"))
        var pod = makePod("guarded", namespace: "fin")
        pod.metadata.finalizers = ["example.com/cleanup"]
        _ = try await objects.pods.create(pod)
        let marked = try await objects.pods.delete("guarded", namespace: "fin")
        #expect(marked.metadata.deletionTimestamp != nil)
        #expect(marked.metadata.generation == 2)
        let still = try await objects.pods.get("guarded", namespace: "fin")
        #expect(still.metadata.deletionTimestamp == marked.metadata.deletionTimestamp)
        _ = try await objects.pods.guaranteedUpdate("guarded", namespace: "fin") { $0.metadata.finalizers = nil }
        await expectObjectError("pods \"guarded\" not found") { _ = try await objects.pods.get("guarded", namespace: "fin") }
    }

    /// Fields the Swift types do not model survive a get-modify-update.
    static func unknownFieldsSurvive(_ objects: ObjectStore) async throws {
        _ = try await objects.namespaces.create(makeNamespace("unknown"))
        let raw = """
        {"kind":"Pod","apiVersion":"v1","metadata":{"name":"legacy","namespace":"unknown","uid":"0f0e0d0c-0000-4000-8000-000000000001","creationTimestamp":"2024-01-01T00:00:00Z","generation":1,"managedFields":[{"manager":"kubectl"}]},"spec":{"containers":[{"name":"app","image":"nginx","livenessProbe":{"httpGet":{"path":"/healthz","port":8080}}}],"dnsPolicy":"ClusterFirst","futureField":{"a":[1,2.5,true,null]}},"status":{"phase":"Pending","qosClass":"BestEffort"}}

        """
        _ = try await objects.backend.txn(TxnRequest(success: [.put(PutRequest(key: u8("/registry/pods/unknown/legacy"), value: u8(raw)))]))
        var pod = try await objects.pods.get("legacy", namespace: "unknown")
        #expect(pod.spec.containers[0].image == "nginx")
        pod.spec.containers[0].image = "nginx:1.27"
        pod.status?.phase = "Running"
        pod.metadata.labels = ["app": "legacy"]
        let updated = try await objects.pods.update(pod)
        #expect(updated.metadata.generation == 2)
        #expect(updated.status?.phase == "Pending", "update keeps the stored status")
        var running = updated
        running.status?.phase = "Running"
        _ = try await objects.pods.updateStatus(running)

        let kv = try #require(try await objects.backend.range(RangeRequest(key: u8("/registry/pods/unknown/legacy"))).kvs.first)
        let json = try JSONValue(parsing: kv.value)
        #expect(json["metadata"]?["managedFields"] == .array([.object(["manager": .string("kubectl")])]))
        #expect(json["spec"]?["dnsPolicy"] == .string("ClusterFirst"))
        #expect(json["spec"]?["futureField"]?["a"] == .array([.integer(1), .number(2.5), .bool(true), .null]))
        guard case .array(let containers)? = json["spec"]?["containers"] else { Issue.record("no containers"); return }
        #expect(containers[0]["image"] == .string("nginx:1.27"))
        #expect(containers[0]["livenessProbe"]?["httpGet"]?["port"] == .integer(8080))
        #expect(json["status"]?["qosClass"] == .string("BestEffort"))
        #expect(json["status"]?["phase"] == .string("Running"))
        #expect(json["metadata"]?["labels"]?["app"] == .string("legacy"))
        #expect(json["metadata"]?["uid"] == .string("0f0e0d0c-0000-4000-8000-000000000001"))

        // Clearing a known field removes it (it is not "unknown").
        var cleared = try await objects.pods.get("legacy", namespace: "unknown")
        cleared.status = nil
        _ = try await objects.pods.updateStatus(cleared)
        let after = try JSONValue(parsing: try #require(try await objects.backend.range(RangeRequest(key: u8("/registry/pods/unknown/legacy"))).kvs.first).value)
        #expect(after["status"]?["phase"] == nil)
        #expect(after["status"]?["qosClass"] == .string("BestEffort"))
    }

    // MARK: Concurrency

    /// `writers` tasks each add `rounds` increments to one counter with guaranteedUpdate: every increment lands.
    /// Plain updates from one read: exactly one wins, the others get Conflict.
    static func concurrentUpdates(_ objects: ObjectStore, writers: Int = 8, rounds: Int = 10) async throws {
        _ = try await objects.namespaces.create(makeNamespace("race"))
        var pod = makePod("counter", namespace: "race")
        pod.metadata.annotations = ["count": "0"]
        let base = try await objects.pods.create(pod)
        let pods = objects.pods
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<writers {
                group.addTask {
                    for _ in 0..<rounds {
                        var registry = pods
                        registry.maxAttempts = 1_000
                        _ = try await registry.guaranteedUpdate("counter", namespace: "race") { pod in
                            let count = Int(pod.metadata.annotations?["count"] ?? "0")!
                            pod.metadata.annotations = ["count": String(count + 1)]
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let final = try await objects.pods.get("counter", namespace: "race")
        #expect(final.metadata.annotations?["count"] == String(writers * rounds))

        // Many writers from the same read: one succeeds.
        let read = try await objects.pods.get("counter", namespace: "race")
        let outcomes = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<writers {
                group.addTask {
                    var mine = read
                    mine.metadata.annotations = ["count": "x\(index)"]
                    do {
                        _ = try await pods.update(mine)
                        return true
                    } catch let error as ObjectError where error.isConflict {
                        return false
                    }
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == 1)
        _ = base
    }

    // MARK: Lists

    static func selectors(_ objects: ObjectStore) async throws {
        _ = try await objects.namespaces.create(makeNamespace("sel"))
        _ = try await objects.namespaces.create(makeNamespace("sel-other"))
        let specs: [(String, [String: String]?, String?)] = [
            ("a", ["app": "web", "env": "prod"], "node-1"),
            ("b", ["app": "web", "env": "dev"], "node-2"),
            ("c", ["app": "db", "env": "prod", "gpu": "true"], nil),
            ("d", nil, nil),
        ]
        for (name, labels, node) in specs {
            _ = try await objects.pods.create(makePod(name, namespace: "sel", labels: labels, nodeName: node))
        }
        _ = try await objects.pods.create(makePod("z", namespace: "sel-other", labels: ["app": "web"]))

        func names(_ labelSelector: String? = nil, _ fieldSelector: String? = nil, namespace: String? = "sel") async throws -> [String] {
            try await objects.pods.list(namespace: namespace, ListOptions(labelSelector: labelSelector, fieldSelector: fieldSelector)).items.map(\.name)
        }
        #expect(try await names() == ["a", "b", "c", "d"])
        #expect(try await names(namespace: nil).contains("z"))
        #expect(try await names("app=web") == ["a", "b"])
        #expect(try await names("app==web,env=prod") == ["a"])
        #expect(try await names("app!=web") == ["c", "d"])
        #expect(try await names("env in (prod, dev)") == ["a", "b", "c"])
        #expect(try await names("env notin (prod)") == ["b", "d"])
        #expect(try await names("gpu") == ["c"])
        #expect(try await names("!gpu") == ["a", "b", "d"])
        // Across namespaces, in key order: "sel-other/" sorts before "sel/" ('-' < '/').
        #expect(try await names("app=web", namespace: nil) == ["z", "a", "b"])
        #expect(try await names(nil, "spec.nodeName=node-1") == ["a"])
        #expect(try await names(nil, "spec.nodeName=") == ["c", "d"])
        #expect(try await names(nil, "spec.nodeName!=") == ["a", "b"])
        #expect(try await names("env=prod", "metadata.name=c") == ["c"])
        #expect(try await names(nil, "metadata.namespace=sel-other", namespace: nil) == ["z"])
        #expect(try await names(nil, "status.phase=Running").isEmpty)
        await expectObjectError("field label not supported: spec.bogus", code: 400) { _ = try await names(nil, "spec.bogus=x") }
        await expectObjectError("unable to parse requirement: found 'x', expected: in, notin, =, ==, !=", code: 400) {
            _ = try await names("app x")
        }
    }

    /// Pages of `pageSize` over `count` pods while another task writes: together the pages are exactly the
    /// list at the first page's revision — no duplicate, no gap, nothing newer.
    static func paginationWithConcurrentWriter(_ objects: ObjectStore, count: Int, pageSize: Int64 = 500) async throws {
        _ = try await objects.namespaces.create(makeNamespace("pages"))
        let pods = objects.pods
        try await createPods(pods, namespace: "pages", count: count, concurrency: 16)

        let writer = Task {
            var index = 0
            while !Task.isCancelled && index < 400 {
                _ = try await pods.create(makePod(String(format: "late-%05d", index), namespace: "pages"))
                if index % 3 == 0 {
                    try await pods.delete(String(format: "pod-%05d", index * 3), namespace: "pages")
                }
                index += 1
            }
        }
        var options = ListOptions(limit: pageSize)
        var page = try await pods.list(namespace: "pages", options)
        let revision = page.resourceVersion
        var names = page.items.map(\.name)
        var pages = 1
        #expect(page.remainingItemCount.map { $0 > 0 } ?? false)
        while let token = page.continueToken {
            // The token is Kubernetes': base64url JSON with v, rv and start.
            let decoded = try ContinueToken.decode(token)
            #expect(String(decoded.resourceVersion) == revision)
            #expect(decoded.startKey.hasSuffix("\u{0}"))
            options.continueToken = token
            page = try await pods.list(namespace: "pages", options)
            #expect(page.resourceVersion == revision)
            #expect(Int64(page.items.count) <= pageSize)
            names += page.items.map(\.name)
            pages += 1
        }
        writer.cancel()
        _ = try? await writer.value

        #expect(Set(names).count == names.count)
        #expect(names == names.sorted())
        let snapshot = try await pods.list(namespace: "pages", ListOptions(resourceVersion: revision))
        #expect(names == snapshot.items.map(\.name))
        #expect(names.count >= count - 200)
        #expect(pages == (names.count + Int(pageSize) - 1) / Int(pageSize))
        let all = try await pods.list(namespace: "pages").items.filter { $0.metadata.revision! <= Int64(revision)! }
        #expect(Set(all.map(\.name)).isSubset(of: Set(names)))

        // Selective paging fills pages from further reads.
        let even = try await pods.listAll(namespace: "pages", ListOptions(labelSelector: "parity=even"), pageSize: 100)
        #expect(even.items.allSatisfy { $0.metadata.labels?["parity"] == "even" })
        let evenAtOnce = try await pods.list(namespace: "pages", ListOptions(labelSelector: "parity=even"))
        #expect(even.items.count == evenAtOnce.items.count)
        let firstPage = try await pods.list(namespace: "pages", ListOptions(labelSelector: "parity=even", limit: 100))
        #expect(firstPage.items.count == 100 && firstPage.continueToken != nil && firstPage.remainingItemCount == nil)

        await expectObjectError("continue key is not valid: invalid continue token", code: 400) {
            _ = try await pods.list(namespace: "pages", ListOptions(continueToken: "!!"))
        }
        let traversal = ContinueToken.encode(resourceVersion: 5, startKey: "../secrets/x")
        await expectObjectError("continue key is not valid: invalid continue token: ../secrets/x", code: 400) {
            _ = try await pods.list(namespace: "pages", ListOptions(continueToken: traversal))
        }
    }

    static func createPods(_ pods: Registry<Pod>, namespace: String, count: Int, concurrency: Int) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<concurrency {
                group.addTask {
                    for index in stride(from: worker, to: count, by: concurrency) {
                        _ = try await pods.create(makePod(String(format: "pod-%05d", index), namespace: namespace,
                                                          labels: ["parity": index % 2 == 0 ? "even" : "odd"]))
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    // MARK: Watch

    static func watchEvents(_ objects: ObjectStore) async throws {
        _ = try await objects.namespaces.create(makeNamespace("watch"))
        _ = try await objects.namespaces.create(makeNamespace("watch-other"))
        let existing = try await objects.pods.create(makePod("before", namespace: "watch", labels: ["app": "web"]))

        // rv unset: the current state as ADDED, then changes.
        let initial = try await objects.pods.watch(namespace: "watch")
        let first = try await initial.next()
        #expect(first == .added(existing))
        initial.close()

        let from = try #require(existing.metadata.revision)
        let watch = try await objects.pods.watch(namespace: "watch", WatchOptions(resourceVersion: String(from), allowBookmarks: true))
        let selective = try await objects.pods.watch(namespace: "watch", WatchOptions(resourceVersion: String(from), labelSelector: "app=web"))

        let a = try await objects.pods.create(makePod("a", namespace: "watch", labels: ["app": "web"]))
        let a2 = try await objects.pods.guaranteedUpdateStatus("a", namespace: "watch") { $0.status = PodStatus(phase: "Running") }
        let a3 = try await objects.pods.guaranteedUpdate("a", namespace: "watch") { $0.metadata.labels = ["app": "db"] }
        let deleted = try await objects.pods.delete("a", namespace: "watch")
        // Another namespace's pods share the resource prefix but not the watch's.
        _ = try await objects.pods.create(makePod("other", namespace: "watch-other"))

        #expect(try await watch.next() == .added(a))
        #expect(try await watch.next() == .modified(a2))
        #expect(try await watch.next() == .modified(a3))
        let deletion = try await watch.next()
        #expect(deletion?.type == "DELETED")
        #expect(deletion?.object?.name == "a")
        #expect(deletion?.resourceVersion == deleted.metadata.resourceVersion)

        // With a selector: leaving the selection is a DELETED, and later changes are not seen.
        #expect(try await selective.next() == .added(a))
        #expect(try await selective.next() == .modified(a2))
        let left = try await selective.next()
        #expect(left?.type == "DELETED" && left?.object?.metadata.labels == ["app": "web"])
        #expect(left?.resourceVersion == a3.metadata.resourceVersion)
        selective.close()

        // A bookmark on request, at or after the last event.
        await watch.requestProgress()
        let bookmark = try await watch.next()
        #expect(bookmark?.type == "BOOKMARK")
        #expect(Int64(bookmark?.resourceVersion ?? "") ?? 0 >= deleted.metadata.revision!)
        watch.close()

        // Resume from the middle: what followed, in order.
        let resumed = try await objects.pods.watch(namespace: "watch", WatchOptions(resourceVersion: a2.metadata.resourceVersion))
        #expect(try await resumed.next() == .modified(a3))
        #expect(try await resumed.next()?.type == "DELETED")
        resumed.close()

        // After compaction, an old resourceVersion is Gone; list and watch again from the list's.
        let compactAt = try #require(deleted.metadata.revision)
        try await objects.backend.compact(revision: compactAt)
        do {
            let old = try await objects.pods.watch(namespace: "watch", WatchOptions(resourceVersion: String(from)))
            _ = try await old.next()
            Issue.record("a watch from a compacted revision must fail")
        } catch let error as ObjectError {
            #expect(error.code == 410)
            #expect(error.message == "too old resource version: \(from) (\(compactAt))")
        }
        await expectObjectError("The resourceVersion for the provided list is too old.", code: 410) {
            _ = try await objects.pods.list(namespace: "watch", ListOptions(resourceVersion: String(from)))
        }
        let relist = try await objects.pods.list(namespace: "watch")
        let again = try await objects.pods.watch(namespace: "watch", WatchOptions(resourceVersion: relist.resourceVersion))
        let b = try await objects.pods.create(makePod("b", namespace: "watch"))
        #expect(try await again.next() == .added(b))
        again.close()
    }

    /// A paged list whose revision is compacted between pages: 410 with Kubernetes' message.
    static func continueAfterCompaction(_ objects: ObjectStore) async throws {
        _ = try await objects.namespaces.create(makeNamespace("expire"))
        try await createPods(objects.pods, namespace: "expire", count: 6, concurrency: 2)
        let page = try await objects.pods.list(namespace: "expire", ListOptions(limit: 2))
        let token = try #require(page.continueToken)
        _ = try await objects.pods.create(makePod("newer", namespace: "expire"))
        try await objects.backend.compact(revision: try await objects.backend.currentRevision())
        do {
            _ = try await objects.pods.list(namespace: "expire", ListOptions(limit: 2, continueToken: token))
            Issue.record("expected 410")
        } catch let error as ObjectError {
            #expect(error.code == 410)
            #expect(error.message.hasPrefix("The provided continue parameter is too old to display a consistent list result."))
        }
    }

    // MARK: Events

    static func eventsUseLeases(_ objects: ObjectStore) async throws {
        _ = try await objects.namespaces.create(makeNamespace("events"))
        func event(_ name: String) -> ClusterObjects.Event {
            ClusterObjects.Event(metadata: ObjectMeta(name: name, namespace: "events"),
                                 involvedObject: ObjectReference(kind: "Pod", namespace: "events", name: "web-0"),
                                 reason: "Scheduled", message: "Successfully assigned events/web-0 to node-1",
                                 type: "Normal", source: EventSource(component: "default-scheduler"), count: 1)
        }
        _ = try await objects.events.create(event("web-0.1"))
        _ = try await objects.events.create(event("web-0.2"))
        let kvs = try await objects.backend.range(RangeRequest(key: u8("/registry/events/events/"),
                                                               rangeEnd: KeyRange.prefixEnd(u8("/registry/events/events/")))).kvs
        #expect(kvs.count == 2)
        #expect(kvs.allSatisfy { $0.lease != 0 })
        #expect(kvs[0].lease == kvs[1].lease)  // one lease for a burst of events
        #expect(try await objects.events.list(namespace: "events", ListOptions(fieldSelector: "involvedObject.name=web-0,reason=Scheduled")).items.count == 2)
    }

    // MARK: Encryption

    static let key1 = EncryptionKey(name: "key1", secret: Array(repeating: 1, count: 32))
    static let key2 = EncryptionKey(name: "key2", secret: Array(repeating: 2, count: 32))

    /// Secrets are `k8s:enc:aesgcm:v1:<key>:` + nonce + ciphertext in etcd and plaintext through the API; a new
    /// first key writes while the old one still reads; rewriting stale objects completes the rotation.
    static func encryptionRoundTripAndRotation(_ backend: any RegistryBackend) async throws {
        let plain = ObjectStore(backend: backend)
        _ = try await plain.namespaces.create(makeNamespace("vault"))
        let old = ObjectStore(backend: backend, encryption: .secrets(aesgcm: [key1]))
        let secret = Secret(metadata: ObjectMeta(name: "db", namespace: "vault"), data: ["password": Data("hunter2".utf8)],
                            stringData: ["user": "admin"])
        let created = try await old.secrets.create(secret)
        #expect(created.data == ["password": Data("hunter2".utf8), "user": Data("admin".utf8)])
        #expect(created.stringData == nil && created.type == "Opaque")

        let key = u8("/registry/secrets/vault/db")
        func stored() async throws -> [UInt8] { try #require(try await backend.range(RangeRequest(key: key)).kvs.first).value }
        let ciphertext = try await stored()
        let prefix = u8("k8s:enc:aesgcm:v1:key1:")
        #expect(ciphertext.starts(with: prefix))
        #expect(ciphertext.count > prefix.count + 12 + 16)
        #expect(!String(decoding: ciphertext, as: UTF8.self).contains("aHVudGVyMg"))  // base64 of hunter2
        #expect(try await old.secrets.get("db", namespace: "vault").data?["password"] == Data("hunter2".utf8))

        // Reading without the key fails; the etcd key is authenticated (a value moved to another key fails).
        await expectObjectError("Internal error occurred: unable to transform key \"/registry/secrets/vault/db\": no matching prefix found") {
            _ = try await plain.secrets.get("db", namespace: "vault")
        }
        _ = try await backend.txn(TxnRequest(success: [.put(PutRequest(key: u8("/registry/secrets/vault/copy"), value: ciphertext))]))
        await expectObjectError("Internal error occurred: unable to transform key \"/registry/secrets/vault/copy\": cipher: message authentication failed") {
            _ = try await old.secrets.get("copy", namespace: "vault")
        }
        _ = try await backend.txn(TxnRequest(success: [.deleteRange(DeleteRangeRequest(key: u8("/registry/secrets/vault/copy")))]))

        // A plaintext secret written before encryption was configured is still readable (identity fallback).
        _ = try await plain.secrets.create(Secret(metadata: ObjectMeta(name: "legacy", namespace: "vault"), stringData: ["k": "v"]))
        #expect(try await old.secrets.get("legacy", namespace: "vault").data?["k"] == Data("v".utf8))

        // Rotation: key2 first, key1 still listed.
        let rotated = ObjectStore(backend: backend, encryption: .secrets(aesgcm: [key2, key1]))
        #expect(try await rotated.secrets.get("db", namespace: "vault").data?["password"] == Data("hunter2".utf8))
        _ = try await rotated.secrets.create(Secret(metadata: ObjectMeta(name: "new", namespace: "vault"), stringData: ["a": "b"]))
        #expect(try #require(try await backend.range(RangeRequest(key: u8("/registry/secrets/vault/new"))).kvs.first).value.starts(with: u8("k8s:enc:aesgcm:v1:key2:")))
        #expect(try await rotated.secrets.rewriteStale(namespace: "vault") == 2)  // db (key1) and legacy (plaintext)
        #expect(try await stored().starts(with: u8("k8s:enc:aesgcm:v1:key2:")))
        #expect(try await rotated.secrets.rewriteStale(namespace: "vault") == 0)

        // key1 can now be dropped.
        let onlyKey2 = ObjectStore(backend: backend, encryption: EncryptionConfiguration(rules: [
            .init(resources: ["secrets"], providers: [.aesgcm([key2])])]))
        let all = try await onlyKey2.secrets.list(namespace: "vault").items
        #expect(all.map(\.name) == ["db", "legacy", "new"])
        #expect(all[0].data?["password"] == Data("hunter2".utf8))
        await expectObjectError("Internal error occurred: unable to transform key \"/registry/secrets/vault/db\": no matching prefix found") {
            _ = try await old.secrets.get("db", namespace: "vault")
        }
        // Other resources are unaffected by a secrets-only configuration.
        _ = try await onlyKey2.pods.create(makePod("clear", namespace: "vault"))
        #expect(try #require(try await backend.range(RangeRequest(key: u8("/registry/pods/vault/clear"))).kvs.first).value.starts(with: u8("{\"kind\":\"Pod\"")))
    }

    // MARK: Every type round-trips

    static func everyType(_ objects: ObjectStore) async throws {
        _ = try await objects.namespaces.create(makeNamespace("types"))
        let rs = try await objects.replicaSets.create(ReplicaSet(
            metadata: ObjectMeta(name: "web", namespace: "types"),
            spec: ReplicaSetSpec(selector: LabelSelector(matchLabels: ["app": "web"]),
                                 template: PodTemplateSpec(metadata: ObjectMeta(labels: ["app": "web"]),
                                                           spec: PodSpec(containers: [Container(name: "web", image: "nginx",
                                                                                                resources: ResourceRequirements(requests: ["cpu": "100m"], limits: ["memory": "128Mi"]))],
                                                                         affinity: Affinity(nodeAffinity: NodeAffinity(required: NodeSelector(nodeSelectorTerms: [
                                                                             NodeSelectorTerm(matchExpressions: [NodeSelectorRequirement(key: "zone", operator: "In", values: ["a"])])]))),
                                                                         tolerations: [Toleration(key: "gpu", operator: "Exists", effect: "NoSchedule")])))))
        #expect(rs.spec.replicas == 1)  // defaulted
        #expect(try await objects.replicaSets.get("web", namespace: "types") == rs)
        let kv = try #require(try await objects.backend.range(RangeRequest(key: u8("/registry/replicasets/types/web"))).kvs.first)
        #expect(String(decoding: kv.value, as: UTF8.self).hasPrefix("{\"kind\":\"ReplicaSet\",\"apiVersion\":\"apps/v1\""))

        _ = try await objects.serviceAccounts.create(ServiceAccount(metadata: ObjectMeta(name: "default", namespace: "types")))
        _ = try await objects.roles.create(ClusterObjects.Role(metadata: ObjectMeta(name: "pod-reader", namespace: "types"),
                                                               rules: [PolicyRule(verbs: ["get", "list", "watch"], apiGroups: [""], resources: ["pods"])]))
        _ = try await objects.roleBindings.create(RoleBinding(metadata: ObjectMeta(name: "read-pods", namespace: "types"),
                                                              subjects: [Subject(kind: "ServiceAccount", name: "default", namespace: "types")],
                                                              roleRef: RoleRef(kind: "Role", name: "pod-reader")))
        _ = try await objects.clusterRoles.create(ClusterRole(metadata: ObjectMeta(name: "system:node-reader"),
                                                              rules: [PolicyRule(verbs: ["get"], apiGroups: [""], resources: ["nodes"]),
                                                                      PolicyRule(verbs: ["get"], nonResourceURLs: ["/healthz"])]))
        _ = try await objects.clusterRoleBindings.create(ClusterRoleBinding(metadata: ObjectMeta(name: "nodes"),
                                                                            subjects: [Subject(kind: "Group", name: "system:nodes", apiGroup: "rbac.authorization.k8s.io")],
                                                                            roleRef: RoleRef(kind: "ClusterRole", name: "system:node-reader")))
        _ = try await objects.namespaces.create(makeNamespace("kube-node-lease"))
        let lease = try await objects.leases.create(Lease(metadata: ObjectMeta(name: "node-1", namespace: "kube-node-lease"),
                                                          spec: LeaseSpec(holderIdentity: "node-1", leaseDurationSeconds: 40,
                                                                          renewTime: "2024-05-01T12:00:00.000000Z")))
        let renewed = try await objects.leases.guaranteedUpdate("node-1", namespace: "kube-node-lease") {
            $0.spec?.renewTime = "2024-05-01T12:00:10.000000Z"
        }
        #expect(try #require(renewed.metadata.revision) > lease.metadata.revision!)
        for (key, prefix) in [("/registry/serviceaccounts/types/default", "{\"kind\":\"ServiceAccount\",\"apiVersion\":\"v1\""),
                              ("/registry/roles/types/pod-reader", "{\"kind\":\"Role\",\"apiVersion\":\"rbac.authorization.k8s.io/v1\""),
                              ("/registry/rolebindings/types/read-pods", "{\"kind\":\"RoleBinding\""),
                              ("/registry/clusterroles/system:node-reader", "{\"kind\":\"ClusterRole\""),
                              ("/registry/clusterrolebindings/nodes", "{\"kind\":\"ClusterRoleBinding\""),
                              ("/registry/leases/kube-node-lease/node-1", "{\"kind\":\"Lease\",\"apiVersion\":\"coordination.k8s.io/v1\"")] {
            let kv = try #require(try await objects.backend.range(RangeRequest(key: u8(key))).kvs.first, "\(key)")
            #expect(String(decoding: kv.value, as: UTF8.self).hasPrefix(prefix), "\(key)")
        }
    }
}
