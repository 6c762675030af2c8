import Foundation
import RaftKV

/// Kubernetes' continue tokens: base64url (no padding) of `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\u0000"}`,
/// where `<key>` is the last returned key relative to the list's prefix and N the revision of the first page.
public enum ContinueToken {
    public static func encode(resourceVersion: Int64, startKey: String) -> String {
        var json = Array("{\"v\":\"meta.k8s.io/v1\",\"rv\":\(resourceVersion),\"start\":".utf8)
        JSONValue.writeString(startKey, to: &json)
        json.append(UInt8(ascii: "}"))
        return Data(json).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// The revision and the start key (relative to the prefix), checked as `storage.DecodeContinue`.
    public static func decode(_ token: String) throws -> (resourceVersion: Int64, startKey: String) {
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard !token.contains("="), let data = Data(base64Encoded: base64),
              case .object(let fields)? = try? JSONValue(parsing: Array(data)) else {
            throw ObjectError.badRequest("continue key is not valid: invalid continue token")
        }
        guard fields["v"]?.stringValue == "meta.k8s.io/v1" else {
            throw ObjectError.badRequest("continue key is not valid: got unrecognized encoded version \(fields["v"]?.stringValue ?? "")")
        }
        guard case .integer(let revision)? = fields["rv"], revision != 0 else {
            throw ObjectError.badRequest("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
        }
        guard let start = fields["start"]?.stringValue, !start.isEmpty else {
            throw ObjectError.badRequest("continue key is not valid: encoded start key empty (version meta.k8s.io/v1)")
        }
        // Kubernetes refuses a start key that path.Clean would change (no escaping the prefix with "..").
        let path = start.hasPrefix("/") ? start : "/" + start
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        if segments.contains(where: { $0 == ".." || $0 == "." }) || path.contains("//")
            || (path.hasSuffix("/") && path != "/") {
            throw ObjectError.badRequest("continue key is not valid: invalid continue token: \(start)")
        }
        return (revision, String(path.dropFirst()))
    }
}

extension Registry {
    static var continueTooOld: String {
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."
    }

    /// Lists the objects of one namespace (or all), filtered by label and field selectors, a page at a time.
    ///
    /// Every page of a paged list is read at the revision of the first page, so the pages together are one
    /// consistent snapshot even while others write; the snapshot lasts until compaction removes that revision
    /// (then 410 Gone). With selectors, a page is filled by reading further (as Kubernetes does), so a page may
    /// hold fewer than `limit` items only when it is the last one.
    public func list(namespace: String? = nil, _ options: ListOptions = ListOptions()) async throws -> ObjectList<Object> {
        let labels = try LabelSelectorExpression(parsing: options.labelSelector ?? "")
        let fields = try FieldSelectorExpression(parsing: options.fieldSelector ?? "")
        try fields.validate(for: Object.self)
        let namespace = Object.storage.isNamespaced ? namespace.flatMap { $0.isEmpty ? nil : $0 } : nil
        let prefixString = store.keys.listPrefix(Object.storage, namespace: namespace)
        let prefix = Array(prefixString.utf8)
        let rangeEnd = KeyRange.prefixEnd(prefix)

        var revision: Revision = 0
        var startKey = prefix
        if let token = options.continueToken, !token.isEmpty {
            let decoded = try ContinueToken.decode(token)
            revision = decoded.resourceVersion
            startKey = Array((prefixString + decoded.startKey).utf8)
        } else if let version = options.resourceVersion, !version.isEmpty, version != "0" {
            guard let exact = Int64(version), exact > 0 else {
                throw ObjectError.badRequest("invalid resource version: \(version)")
            }
            revision = exact
        }

        let filtering = !labels.isEmpty || !fields.isEmpty
        let limit = max(options.limit, 0)
        var fetch = limit
        var items: [Object] = []
        var lastKey: [UInt8]?
        var hasMore = false
        var remaining: Int64?
        pages: while true {
            let response: RangeResponse
            do {
                response = try await kvCall {
                    try await backend.range(RangeRequest(key: startKey, rangeEnd: rangeEnd, limit: fetch, revision: revision))
                }
            } catch KVError.compacted {
                if options.continueToken != nil {
                    throw ObjectError(reason: .expired, code: 410, message: Self.continueTooOld)
                }
                throw ObjectError(reason: .expired, code: 410, message: "The resourceVersion for the provided list is too old.")
            } catch KVError.futureRevision {
                let current = try await backend.currentRevision()
                throw ObjectError(reason: .timeout, code: 504, message: "Too large resource version: \(revision), current: \(current)")
            }
            if revision == 0 { revision = response.revision }
            for (index, kv) in response.kvs.enumerated() {
                lastKey = kv.key
                let (object, _) = try decode(kv)
                if labels.matches(object.metadata.labels) && fields.matches(object) { items.append(object) }
                if limit > 0 && Int64(items.count) == limit {
                    hasMore = index < response.kvs.count - 1 || response.more
                    if hasMore && !filtering { remaining = response.count - Int64(index + 1) }
                    break pages
                }
            }
            guard response.more, let last = lastKey else { break }
            startKey = last + [0]
            // Selective lists read ever bigger chunks, as kube-apiserver (up to 10,000 keys).
            if filtering { fetch = min(fetch * 2, 10_000) }
        }
        var token: String?
        if hasMore, let lastKey {
            let relative = String(decoding: lastKey.dropFirst(prefix.count), as: UTF8.self)
            token = ContinueToken.encode(resourceVersion: revision, startKey: relative + "\u{0}")
        }
        return ObjectList(items: items, resourceVersion: String(revision), continueToken: token,
                          remainingItemCount: remaining)
    }

    /// Every page of a list, following continue tokens (a convenience for callers that want everything but
    /// in bounded reads).
    public func listAll(namespace: String? = nil, _ options: ListOptions = ListOptions(), pageSize: Int64 = 500) async throws -> ObjectList<Object> {
        var options = options
        options.limit = pageSize
        var page = try await list(namespace: namespace, options)
        var items = page.items
        let resourceVersion = page.resourceVersion
        while let token = page.continueToken {
            options.continueToken = token
            page = try await list(namespace: namespace, options)
            items += page.items
        }
        return ObjectList(items: items, resourceVersion: resourceVersion, continueToken: nil, remainingItemCount: nil)
    }
}
