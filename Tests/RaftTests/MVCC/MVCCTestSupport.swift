import Foundation
import Testing
@testable import RaftKV

/// A scratch directory removed when the value goes away.
final class MVCCScratch {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("mvcc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    var storePath: String { url.appendingPathComponent("state.db").path }

    func open(_ configuration: MVCCStore.Configuration = .init()) throws -> MVCCStore {
        try MVCCStore(path: storePath, configuration: configuration)
    }
}

func b(_ text: String) -> [UInt8] { Array(text.utf8) }

extension MVCCStore {
    /// Applies `command` as the next log entry.
    @discardableResult
    func run(_ command: KVCommand) throws -> Result<KVResponse, KVError> {
        let applied = try apply(index: appliedIndex + 1, command: command)
        return try #require(applied).result
    }

    @discardableResult
    func put(_ key: String, _ value: String, lease: LeaseID = 0) throws -> PutResponse {
        guard case .put(let response) = try run(.put(PutRequest(key: b(key), value: b(value), lease: lease))).get() else {
            Issue.record("not a put response")
            return PutResponse(revision: 0)
        }
        return response
    }

    func txnResponse(_ request: TxnRequest) throws -> TxnResponse {
        guard case .txn(let response) = try run(.txn(request)).get() else {
            Issue.record("not a txn response")
            return TxnResponse(revision: 0, succeeded: false)
        }
        return response
    }

    func keys(_ request: RangeRequest) throws -> [String] {
        try range(request).kvs.map { String(decoding: $0.key, as: UTF8.self) }
    }

    /// The error `command` fails with, if any.
    func failure(_ command: KVCommand) throws -> KVError? {
        if case .failure(let error) = try run(command) { return error }
        return nil
    }
}

/// The error a throwing expression threw, as a KVError.
func kvError(_ body: () throws -> Void) -> KVError? {
    do {
        try body()
        return nil
    } catch let error as KVError {
        return error
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}
