// docs/embedding.md shows the lines between "example:begin" and "example:end" verbatim; a test below checks it.
// example:begin
import Foundation
import RaftKV

/// Opens a single-member store in `directory`, writes, reads, uses a transaction and a lease, and closes it.
func embeddedStoreExample(directory: URL) async throws -> [String] {
    let store = try KVStore.open(directory: directory)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        // The store works while run() runs: the Raft node, the lease timers, background compaction.
        group.addTask { try await store.run() }

        // Writes go through Raft; each answers with the store revision it created.
        try await store.put("/config/color", "blue")
        let size = try await store.put("/config/size", "large")

        // Reads are linearizable by default; pass `consistency: .serializable` for a local read.
        let color = try await store.get("/config/color")
        let config = try await store.prefix(Array("/config/".utf8))

        // A transaction: take /lock only if nobody has created it.
        let lock = try await store.txn(TxnRequest(
            compare: [Compare(key: Array("/lock".utf8), target: .createRevision(0), result: .equal)],
            success: [.put(PutRequest(key: Array("/lock".utf8), value: Array("me".utf8)))]))

        // A key that lives only as long as its lease.
        let lease = try await store.grant(ttlSeconds: 10)
        try await store.put("/session", "alive", lease: lease.id)
        _ = try await store.keepAlive(lease.id)
        try await store.revoke(lease.id)  // deletes /session
        let session = try await store.get("/session")

        // Errors are KVError values carrying etcd's messages.
        var message = ""
        do {
            _ = try await store.range(RangeRequest(key: Array("/config/color".utf8), revision: size.revision + 100))
        } catch let error as KVError {
            message = error.description  // "etcdserver: mvcc: required revision is a future revision"
        }

        await store.close()  // run() returns
        try await group.waitForAll()
        return [String(decoding: color!.value, as: UTF8.self), "\(config.count)", "\(lock.succeeded)",
                "\(session == nil)", message]
    }
}
// example:end

import Testing

@Suite struct EmbeddingExampleTests {
    @Test func theDocumentedExampleRuns() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("embedding-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let answers = try await embeddedStoreExample(directory: directory)
        #expect(answers == ["blue", "2", "true", "true", "etcdserver: mvcc: required revision is a future revision"])
    }

    /// docs/embedding.md must show exactly the code the test above runs.
    @Test func theDocumentationShowsExactlyThisCode() throws {
        let sourceFile = URL(fileURLWithPath: #filePath)
        let source = try String(contentsOf: sourceFile, encoding: .utf8).components(separatedBy: "\n")
        guard let begin = source.firstIndex(of: "// example:begin"), let end = source.firstIndex(of: "// example:end") else {
            Issue.record("markers missing")
            return
        }
        let example = source[(begin + 1)..<end].joined(separator: "\n")

        let root = sourceFile.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let markdown = try String(contentsOf: root.appendingPathComponent("docs/embedding.md"), encoding: .utf8)
            .components(separatedBy: "\n")
        guard let marker = markdown.firstIndex(of: "<!-- example: Tests/RaftTests/Store/EmbeddingExampleTests.swift -->"),
              markdown.count > marker + 1, markdown[marker + 1] == "```swift",
              let close = markdown[(marker + 2)...].firstIndex(of: "```") else {
            Issue.record("docs/embedding.md has no example block after its marker")
            return
        }
        let documented = markdown[(marker + 2)..<close].joined(separator: "\n")
        #expect(documented == example)
    }
}
