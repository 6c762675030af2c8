import EtcdAPI
import Foundation
import SwiftProtobuf

// etcdctl's printers (ctlv3/command/printer*.go): simple, json, fields and table.

enum OutputFormat: String {
    case simple, json, fields, table, protobuf
}

struct EndpointHealth {
    var endpoint: String
    var health: Bool
    var took: String
    var error: String
}

struct EndpointStatus {
    var endpoint: String
    var response: Etcdserverpb_StatusResponse
}

struct EndpointHash {
    var endpoint: String
    var response: Etcdserverpb_HashKVResponse
}

/// A watch response as clientv3 hands it to the printer.
struct WatchEvent {
    var header: Etcdserverpb_ResponseHeader
    var events: [Mvccpb_Event]
    var compactRevision: Int64
    var canceled: Bool
    var created: Bool
}

struct Printer {
    var format: OutputFormat
    var isHex: Bool
    var valueOnly = false

    private func unsupported() -> Never {
        exitWithError(ExitCode.badFeature, "\(format.rawValue) not supported as output format")
    }

    /// printerUnsupported: "<format> not supported as output format" (exit 4), after the call was made.
    func unsupportedFormat() -> Never { unsupported() }

    func printProtobuf(_ message: some SwiftProtobuf.Message) { printPB(message) }

    private func protobufUnsupported() -> Never {
        exitWithError(ExitCode.badFeature, "protobuf not supported as output format")
    }

    /// printPB: the message's wire bytes, as they are.
    private func printPB(_ message: some SwiftProtobuf.Message) {
        if let bytes: [UInt8] = try? message.serializedBytes() {
            outBytes(Data(bytes))
        }
    }

    // MARK: shared pieces

    func printKV(_ kv: Mvccpb_KeyValue) {
        var k = String(decoding: kv.key, as: UTF8.self)
        var v = String(decoding: kv.value, as: UTF8.self)
        if isHex {
            k = hexEscaped(kv.key)
            v = hexEscaped(kv.value)
        }
        if !valueOnly { outBytes(isHex ? Data(k.utf8) : kv.key); out("\n") } else { _ = k }
        outBytes(isHex ? Data(v.utf8) : kv.value)
        out("\n")
    }

    private func hexEscaped(_ data: Data) -> String {
        data.map { String(format: "\\x%02x", $0) }.joined()
    }

    /// gogo's compact text form of a header (its String()).
    static func compactText(_ h: Etcdserverpb_ResponseHeader) -> String {
        var text = ""
        if h.clusterID != 0 { text += "cluster_id:\(h.clusterID) " }
        if h.memberID != 0 { text += "member_id:\(h.memberID) " }
        if h.revision != 0 { text += "revision:\(h.revision) " }
        if h.raftTerm != 0 { text += "raft_term:\(h.raftTerm) " }
        return text
    }

    static func header(_ h: Etcdserverpb_ResponseHeader) -> GoObject {
        var o = GoObject()
        o.omitEmpty("cluster_id", h.clusterID)
        o.omitEmpty("member_id", h.memberID)
        o.omitEmpty("revision", h.revision)
        o.omitEmpty("raft_term", h.raftTerm)
        return o
    }

    static func headerJSON(_ h: Etcdserverpb_ResponseHeader, present: Bool = true) -> GoJSON? {
        present ? header(h).json : nil
    }

    static func kvJSON(_ kv: Mvccpb_KeyValue) -> GoJSON {
        var o = GoObject()
        o.omitEmpty("key", kv.key)
        o.omitEmpty("create_revision", kv.createRevision)
        o.omitEmpty("mod_revision", kv.modRevision)
        o.omitEmpty("version", kv.version)
        o.omitEmpty("value", kv.value)
        o.omitEmpty("lease", kv.lease)
        return o.json
    }

    static func rangeJSON(_ r: Etcdserverpb_RangeResponse) -> GoJSON {
        var o = GoObject()
        o.omitEmpty("header", headerJSON(r.header, present: r.hasHeader))
        o.omitEmpty("kvs", r.kvs.map(kvJSON))
        o.omitEmpty("more", r.more)
        o.omitEmpty("count", r.count)
        return o.json
    }

    static func putJSON(_ r: Etcdserverpb_PutResponse) -> GoJSON {
        var o = GoObject()
        o.omitEmpty("header", headerJSON(r.header, present: r.hasHeader))
        o.omitEmpty("prev_kv", r.hasPrevKv ? kvJSON(r.prevKv) : nil)
        return o.json
    }

    static func deleteJSON(_ r: Etcdserverpb_DeleteRangeResponse) -> GoJSON {
        var o = GoObject()
        o.omitEmpty("header", headerJSON(r.header, present: r.hasHeader))
        o.omitEmpty("deleted", r.deleted)
        o.omitEmpty("prev_kvs", r.prevKvs.map(kvJSON))
        return o.json
    }

    static func txnJSON(_ r: Etcdserverpb_TxnResponse) -> GoJSON {
        var o = GoObject()
        o.omitEmpty("header", headerJSON(r.header, present: r.hasHeader))
        o.omitEmpty("succeeded", r.succeeded)
        o.omitEmpty("responses", r.responses.map { op -> GoJSON in
            // gogo's oneof: an interface field named Response holding a wrapper struct (Go field names, no json tags).
            let inner: GoJSON
            switch op.response {
            case .responseRange(let v): inner = .object([("ResponseRange", rangeJSON(v))])
            case .responsePut(let v): inner = .object([("ResponsePut", putJSON(v))])
            case .responseDeleteRange(let v): inner = .object([("ResponseDeleteRange", deleteJSON(v))])
            case .responseTxn(let v): inner = .object([("ResponseTxn", txnJSON(v))])
            case nil: inner = .null
            }
            return .object([("Response", inner)])
        })
        return o.json
    }

    func printJSON(_ value: GoJSON) {
        out(value.text + "\n")
    }

    func fieldsHeader(_ h: Etcdserverpb_ResponseHeader) {
        out("\"ClusterID\" : \(h.clusterID)\n\"MemberID\" : \(h.memberID)\n\"Revision\" : \(h.revision)\n\"RaftTerm\" : \(h.raftTerm)\n")
    }

    private func fieldsKV(_ prefix: String, _ kv: Mvccpb_KeyValue) {
        out("\"\(prefix)Key\" : \(goQuote(bytes: Array(kv.key)))\n")
        out("\"\(prefix)CreateRevision\" : \(kv.createRevision)\n")
        out("\"\(prefix)ModRevision\" : \(kv.modRevision)\n")
        out("\"\(prefix)Version\" : \(kv.version)\n")
        out("\"\(prefix)Value\" : \(goQuote(bytes: Array(kv.value)))\n")
        out("\"\(prefix)Lease\" : \(kv.lease)\n")
    }

    // MARK: KV

    func get(_ r: Etcdserverpb_RangeResponse) {
        switch format {
        case .simple: r.kvs.forEach(printKV)
        case .json: printJSON(Self.rangeJSON(r))
        case .fields:
            fieldsHeader(r.header)
            for kv in r.kvs { fieldsKV("", kv) }
            out("\"More\" : \(r.more)\n\"Count\" : \(r.count)\n")
        case .table: unsupported()
        case .protobuf: printPB(r)
        }
    }

    func put(_ r: Etcdserverpb_PutResponse) {
        switch format {
        case .simple:
            out("OK\n")
            if r.hasPrevKv { printKV(r.prevKv) }
        case .json: printJSON(Self.putJSON(r))
        case .fields:
            fieldsHeader(r.header)
            if r.hasPrevKv { fieldsKV("Prev", r.prevKv) }
        case .table: unsupported()
        case .protobuf: printPB(r)
        }
    }

    func del(_ r: Etcdserverpb_DeleteRangeResponse) {
        switch format {
        case .simple:
            out("\(r.deleted)\n")
            r.prevKvs.forEach(printKV)
        case .json: printJSON(Self.deleteJSON(r))
        case .fields:
            fieldsHeader(r.header)
            out("\"Deleted\" : \(r.deleted)\n")
            for kv in r.prevKvs { fieldsKV("Prev", kv) }
        case .table: unsupported()
        case .protobuf: printPB(r)
        }
    }

    func txn(_ r: Etcdserverpb_TxnResponse) {
        switch format {
        case .simple:
            out(r.succeeded ? "SUCCESS\n" : "FAILURE\n")
            for op in r.responses {
                out("\n")
                switch op.response {
                case .responseDeleteRange(let v): del(v)
                case .responsePut(let v): put(v)
                case .responseRange(let v): get(v)
                default: out("unexpected response \(op)\n")
                }
            }
        case .json: printJSON(Self.txnJSON(r))
        case .fields:
            fieldsHeader(r.header)
            out("\"Succeeded\" : \(r.succeeded)\n")
            for op in r.responses {
                switch op.response {
                case .responseDeleteRange(let v): del(v)
                case .responsePut(let v): put(v)
                case .responseRange(let v): get(v)
                default: out("\"Unknown\" : \"\"\n")
                }
            }
        case .table: unsupported()
        case .protobuf: printPB(r)
        }
    }

    func watch(_ r: WatchEvent) {
        switch format {
        case .simple:
            for e in r.events {
                out(e.type == .delete ? "DELETE\n" : "PUT\n")
                if e.hasPrevKv { printKV(e.prevKv) }
                printKV(e.kv)
            }
        case .json:
            let events: GoJSON = r.events.isEmpty ? .null : .array(r.events.map { e in
                var o = GoObject()
                o.omitEmpty("type", Int64(e.type.rawValue))
                o.omitEmpty("kv", e.hasKv ? Self.kvJSON(e.kv) : nil)
                o.omitEmpty("prev_kv", e.hasPrevKv ? Self.kvJSON(e.prevKv) : nil)
                return o.json
            })
            printJSON(.object([("Header", Self.header(r.header).json), ("Events", events),
                               ("CompactRevision", .int(r.compactRevision)), ("Canceled", .bool(r.canceled)),
                               ("Created", .bool(r.created))]))
        case .fields:
            fieldsHeader(r.header)
            for e in r.events {
                out("\"Type\" : \(e.type == .delete ? "DELETE" : "PUT")\n")
                if e.hasPrevKv { fieldsKV("Prev", e.prevKv) }
                fieldsKV("", e.kv)
            }
        case .table: unsupported()
        case .protobuf:
            var message = Etcdserverpb_WatchResponse()
            message.header = r.header
            message.events = r.events
            message.compactRevision = r.compactRevision
            message.canceled = r.canceled
            message.created = r.created
            printPB(message)
        }
    }

    // MARK: Lease

    private static func flatHeader(_ h: Etcdserverpb_ResponseHeader) -> [(String, GoJSON)] {
        header(h).fields
    }

    func grant(_ r: Etcdserverpb_LeaseGrantResponse) {
        switch format {
        case .simple: out(String(format: "lease %016llx granted with TTL(%llds)\n", r.id, r.ttl))
        case .json:
            printJSON(.object(Self.flatHeader(r.header) + [("ID", .int(r.id)), ("TTL", .int(r.ttl)), ("Error", .string(r.error))]))
        case .fields:
            fieldsHeader(r.header)
            out("\"ID\" : \(r.id)\n\"TTL\" : \(r.ttl)\n")
        case .table: unsupported()
        case .protobuf: printPB(r.header)
        }
    }

    func revoke(_ id: Int64, _ r: Etcdserverpb_LeaseRevokeResponse) {
        switch format {
        case .simple: out(String(format: "lease %016llx revoked\n", id))
        case .json:
            var o = GoObject()
            o.omitEmpty("header", Self.headerJSON(r.header, present: r.hasHeader))
            printJSON(o.json)
        case .fields: fieldsHeader(r.header)
        case .table: unsupported()
        case .protobuf:
            // clientv3.LeaseRevokeResponse is printed by value, which has no Marshal method.
            exitWithError(ExitCode.badFeature, "marshal unsupported for type clientv3.LeaseRevokeResponse ({\(Self.compactText(r.header))})")
        }
    }

    func keepAlive(_ r: Etcdserverpb_LeaseKeepAliveResponse) {
        switch format {
        case .simple: out(String(format: "lease %016llx keepalived with TTL(%lld)\n", r.id, r.ttl))
        case .json: printJSON(.object(Self.flatHeader(r.header) + [("ID", .int(r.id)), ("TTL", .int(r.ttl))]))
        case .fields:
            fieldsHeader(r.header)
            out("\"ID\" : \(r.id)\n\"TTL\" : \(r.ttl)\n")
        case .table: unsupported()
        case .protobuf: printPB(r.header)
        }
    }

    func timeToLive(_ r: Etcdserverpb_LeaseTimeToLiveResponse, keys: Bool) {
        switch format {
        case .simple:
            if r.grantedTtl == 0 && r.ttl == -1 {
                out(String(format: "lease %016llx already expired\n", r.id))
                return
            }
            var text = String(format: "lease %016llx granted with TTL(%llds), remaining(%llds)", r.id, r.grantedTtl, r.ttl)
            if keys {
                text += ", attached keys([" + r.keys.map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ") + "])"
            }
            out(text + "\n")
        case .json:
            let keysJSON: GoJSON = r.keys.isEmpty ? .null : .array(r.keys.map { .bytes($0) })
            printJSON(.object(Self.flatHeader(r.header) + [("id", .int(r.id)), ("ttl", .int(r.ttl)),
                                                           ("granted-ttl", .int(r.grantedTtl)), ("keys", keysJSON)]))
        case .fields:
            fieldsHeader(r.header)
            out("\"ID\" : \(r.id)\n\"TTL\" : \(r.ttl)\n\"GrantedTTL\" : \(r.grantedTtl)\n")
            for k in r.keys { out("\"Key\" : \(goQuote(bytes: Array(k)))\n") }
        case .table: unsupported()
        case .protobuf: printPB(r.header)
        }
    }

    func leases(_ r: Etcdserverpb_LeaseLeasesResponse) {
        switch format {
        case .simple:
            out("found \(r.leases.count) leases\n")
            for l in r.leases { out(String(format: "%016llx\n", l.id)) }
        case .json:
            printJSON(.object(Self.flatHeader(r.header) + [("leases", .array(r.leases.map { .object([("id", .int($0.id))]) }))]))
        case .fields:
            fieldsHeader(r.header)
            for l in r.leases { out("\"ID\" : \(l.id)\n") }
        case .table: unsupported()
        case .protobuf: printPB(r.header)
        }
    }

    // MARK: Cluster

    static func memberJSON(_ m: Etcdserverpb_Member) -> GoJSON {
        var o = GoObject()
        o.omitEmpty("ID", m.id)
        o.omitEmpty("name", m.name)
        o.omitEmpty("peerURLs", m.peerUrls.map { .string($0) })
        o.omitEmpty("clientURLs", m.clientUrls.map { .string($0) })
        o.omitEmpty("isLearner", m.isLearner)
        return o.json
    }

    static func membersJSON(_ header: Etcdserverpb_ResponseHeader, _ hasHeader: Bool, member: Etcdserverpb_Member? = nil,
                            _ members: [Etcdserverpb_Member]) -> GoJSON {
        var o = GoObject()
        o.omitEmpty("header", headerJSON(header, present: hasHeader))
        o.omitEmpty("member", member.map(memberJSON))
        o.omitEmpty("members", members.map(memberJSON))
        return o.json
    }

    static func memberRows(_ members: [Etcdserverpb_Member]) -> [[String]] {
        members.map { m in
            [String(m.id, radix: 16), m.name.isEmpty ? "unstarted" : "started", m.name,
             m.peerUrls.joined(separator: ","), m.clientUrls.joined(separator: ","), m.isLearner ? "true" : "false"]
        }
    }

    func memberList(_ r: Etcdserverpb_MemberListResponse) {
        switch format {
        case .simple:
            for row in Self.memberRows(r.members) { out(row.joined(separator: ", ") + "\n") }
        case .json: printJSON(Self.membersJSON(r.header, r.hasHeader, r.members))
        case .fields:
            fieldsHeader(r.header)
            for m in r.members {
                out("\"ID\" : \(m.id)\n\"Name\" : \(goQuote(m.name))\n")
                for u in m.peerUrls { out("\"PeerURL\" : \(goQuote(u))\n") }
                for u in m.clientUrls { out("\"ClientURL\" : \(goQuote(u))\n") }
                out("\"IsLearner\" : \(m.isLearner)\n\n")
            }
        case .table:
            out(Table.render(header: ["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"],
                             rows: Self.memberRows(r.members)))
        case .protobuf: printPB(r)
        }
    }

    /// member add/remove/update/promote: simple prints a sentence; json the response; fields the header.
    func memberChange(_ sentence: String, header: Etcdserverpb_ResponseHeader, hasHeader: Bool,
                      member: Etcdserverpb_Member?, members: [Etcdserverpb_Member], message: (any SwiftProtobuf.Message)? = nil) {
        switch format {
        case .simple: out(sentence + "\n")
        case .json: printJSON(Self.membersJSON(header, hasHeader, member: member, members))
        case .fields:
            // fieldsPrinter has no member add/remove/update/promote: they fall to printerRPC → unsupported.
            unsupported()
        case .table: unsupported()
        case .protobuf:
            if let message { printPB(message) } else { protobufUnsupported() }
        }
    }

    // MARK: Endpoints

    static func healthRows(_ list: [EndpointHealth]) -> [[String]] {
        list.map { [$0.endpoint, $0.health ? "true" : "false", $0.took, $0.error] }
    }

    func endpointHealth(_ list: [EndpointHealth]) {
        switch format {
        case .simple:
            for h in list {
                if h.error.isEmpty {
                    writeErr("\(h.endpoint) is healthy: successfully committed proposal: took = \(h.took)\n")
                } else {
                    writeErr("\(h.endpoint) is unhealthy: failed to commit proposal: \(h.error)\n")
                }
            }
        case .json:
            printJSON(.array(list.map { h in
                var fields: [(String, GoJSON)] = [("endpoint", .string(h.endpoint)), ("health", .bool(h.health)), ("took", .string(h.took))]
                if !h.error.isEmpty { fields.append(("error", .string(h.error))) }
                return .object(fields)
            }))
        case .fields:
            for h in list {
                out("\"Endpoint\" : \(goQuote(h.endpoint))\n\"Health\" : \(h.health)\n\"Took\" : \(h.took)\n\"Error\" : \(h.error)\n\n")
            }
        case .table: out(Table.render(header: ["endpoint", "health", "took", "error"], rows: Self.healthRows(list)))
        case .protobuf: protobufUnsupported()
        }
    }

    static func statusRows(_ list: [EndpointStatus]) -> [[String]] {
        list.map { s in
            let r = s.response
            return [s.endpoint, String(r.header.memberID, radix: 16), r.version, humanizeBytes(UInt64(max(0, r.dbSize))),
                    String(r.leader == r.header.memberID), String(r.isLearner), String(r.raftTerm), String(r.raftIndex),
                    String(r.raftAppliedIndex), r.errors.joined(separator: ", ")]
        }
    }

    func endpointStatus(_ list: [EndpointStatus]) {
        switch format {
        case .simple:
            for row in Self.statusRows(list) { out(row.joined(separator: ", ") + "\n") }
        case .json:
            printJSON(.array(list.map { s in
                let r = s.response
                var o = GoObject()
                o.omitEmpty("header", Self.headerJSON(r.header, present: r.hasHeader))
                o.omitEmpty("version", r.version)
                o.omitEmpty("dbSize", r.dbSize)
                o.omitEmpty("leader", r.leader)
                o.omitEmpty("raftIndex", r.raftIndex)
                o.omitEmpty("raftTerm", r.raftTerm)
                o.omitEmpty("raftAppliedIndex", r.raftAppliedIndex)
                o.omitEmpty("errors", r.errors.map { .string($0) })
                o.omitEmpty("dbSizeInUse", r.dbSizeInUse)
                o.omitEmpty("isLearner", r.isLearner)
                return .object([("Endpoint", .string(s.endpoint)), ("Status", o.json)])
            }))
        case .fields:
            for s in list {
                let r = s.response
                fieldsHeader(r.header)
                out("\"Version\" : \(goQuote(r.version))\n\"DBSize\" : \(r.dbSize)\n\"Leader\" : \(r.leader)\n")
                out("\"IsLearner\" : \(r.isLearner)\n\"RaftIndex\" : \(r.raftIndex)\n\"RaftTerm\" : \(r.raftTerm)\n")
                out("\"RaftAppliedIndex\" : \(r.raftAppliedIndex)\n\"Errors\" : [\(r.errors.joined(separator: " "))]\n")
                out("\"Endpoint\" : \(goQuote(s.endpoint))\n\n")
            }
        case .table:
            out(Table.render(header: ["endpoint", "ID", "version", "db size", "is leader", "is learner", "raft term",
                                      "raft index", "raft applied index", "errors"], rows: Self.statusRows(list)))
        case .protobuf: protobufUnsupported()
        }
    }

    func endpointHashKV(_ list: [EndpointHash]) {
        let rows = list.map { [$0.endpoint, String($0.response.hash)] }
        switch format {
        case .simple:
            for row in rows { out(row.joined(separator: ", ") + "\n") }
        case .json:
            printJSON(.array(list.map { h in
                var o = GoObject()
                o.omitEmpty("header", Self.headerJSON(h.response.header, present: h.response.hasHeader))
                o.omitEmpty("hash", UInt64(h.response.hash))
                o.omitEmpty("compact_revision", h.response.compactRevision)
                return .object([("Endpoint", .string(h.endpoint)), ("HashKV", o.json)])
            }))
        case .fields:
            for h in list {
                fieldsHeader(h.response.header)
                out("\"Endpoint\" : \(goQuote(h.endpoint))\n\"Hash\" : \(h.response.hash)\n\n")
            }
        case .table: out(Table.render(header: ["endpoint", "hash"], rows: rows))
        case .protobuf: protobufUnsupported()
        }
    }

    func moveLeader(from leader: UInt64, to target: UInt64, _ r: Etcdserverpb_MoveLeaderResponse) {
        switch format {
        case .simple:
            out("Leadership transferred from \(String(leader, radix: 16)) to \(String(target, radix: 16))\n")
        case .json:
            var o = GoObject()
            o.omitEmpty("header", Self.headerJSON(r.header, present: r.hasHeader))
            printJSON(o.json)
        case .fields, .table: unsupported()
        case .protobuf: printPB(r)
        }
    }

    func alarm(_ r: Etcdserverpb_AlarmResponse) {
        switch format {
        case .simple:
            for a in r.alarms { out("memberID:\(a.memberID) alarm:\(alarmName(a.alarm)) \n") }
        case .json:
            var o = GoObject()
            o.omitEmpty("header", Self.headerJSON(r.header, present: r.hasHeader))
            o.omitEmpty("alarms", r.alarms.map { a in
                var m = GoObject()
                m.omitEmpty("memberID", a.memberID)
                m.omitEmpty("alarm", Int64(a.alarm.rawValue))
                return m.json
            })
            printJSON(o.json)
        case .fields:
            fieldsHeader(r.header)
            for a in r.alarms { out("\"MemberID\" : \(a.memberID)\n\"AlarmType\" : \(alarmName(a.alarm))\n\n") }
        case .table: unsupported()
        case .protobuf: printPB(r)
        }
    }

    private func alarmName(_ a: Etcdserverpb_AlarmType) -> String {
        switch a {
        case .none: "NONE"
        case .nospace: "NOSPACE"
        case .corrupt: "CORRUPT"
        default: String(a.rawValue)
        }
    }
}

/// go-humanize's Bytes (SI units).
func humanizeBytes(_ s: UInt64) -> String {
    if s < 10 { return "\(s) B" }
    let sizes = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    let e = floor(log(Double(s)) / log(1000))
    let suffix = sizes[Int(e)]
    let val = floor(Double(s) / pow(1000, e) * 10 + 0.5) / 10
    return val < 10 ? String(format: "%.1f %@", val, suffix) : String(format: "%.0f %@", val, suffix)
}

/// olekukonko/tablewriter as etcdctl configures it: upper-case centred headers, right-aligned cells, and cells wider
/// than 30 characters wrapped at spaces (auto-wrap with reflow: a cell's lines become one paragraph).
enum Table {
    /// tablewriter's MAX_ROW_WIDTH.
    static let maxCellWidth = 30

    static func render(header: [String], rows: [[String]]) -> String {
        let titles = header.map { $0.uppercased() }
        var widths = titles.map(\.count)
        let wrapped = rows.map { $0.map(wrap) }
        for (row, cells) in zip(wrapped, rows) {
            for (i, lines) in row.enumerated() {
                // The column is as wide as the cell's width capped at 30, or its widest wrapped line if wider.
                let capped = min(cells[i].components(separatedBy: "\n").map(\.count).max() ?? 0, maxCellWidth)
                widths[i] = max(widths[i], capped, lines.map(\.count).max() ?? 0)
            }
        }
        let border = "+" + widths.map { String(repeating: "-", count: $0 + 2) + "+" }.joined()
        var text = border + "\n"
        text += "|" + titles.enumerated().map { i, t in
            let gap = widths[i] - t.count
            let left = gap / 2
            return " " + String(repeating: " ", count: left) + t + String(repeating: " ", count: gap - left) + " |"
        }.joined() + "\n"
        text += border + "\n"
        for row in wrapped {
            // A row is as tall as its tallest cell; shorter cells are filled with "  " (printRow's padding lines).
            let height = row.map(\.count).max() ?? 1
            for line in 0..<height {
                text += "|" + row.enumerated().map { i, lines in
                    let cell = line < lines.count ? lines[line] : "  "
                    return " " + String(repeating: " ", count: max(0, widths[i] - cell.count)) + cell + " |"
                }.joined() + "\n"
            }
        }
        text += border + "\n"
        return text
    }

    /// parseDimension with autoWrap and reflowText: the width of the cell's widest line, at most 30, then the
    /// lines joined and wrapped to it.
    static func wrap(_ cell: String) -> [String] {
        let raw = cell.components(separatedBy: "\n")
        let width = min(raw.map(\.count).max() ?? 0, maxCellWidth)
        return wrapString(raw.joined(separator: " "), width)
    }

    /// tablewriter's WrapString: words split at spaces, the limit raised to the longest word, then WrapWords.
    static func wrapString(_ text: String, _ limit: Int) -> [String] {
        let words = text.replacingOccurrences(of: "\n", with: " ").components(separatedBy: " ")
        var limit = limit
        for word in words where word.count > limit { limit = word.count }
        return wrapWords(words, spacing: 1, limit: limit, penalty: 100_000).map { $0.joined(separator: " ") }
    }

    /// tablewriter's WrapWords: the line breaks of least raggedness (the squares of each line's shortfall).
    static func wrapWords(_ words: [String], spacing: Int, limit: Int, penalty: Int) -> [[String]] {
        let n = words.count
        var length = Array(repeating: Array(repeating: 0, count: n), count: n)
        for i in 0..<n {
            length[i][i] = words[i].count
            for j in (i + 1)..<max(n, i + 1) { length[i][j] = length[i][j - 1] + spacing + words[j].count }
        }
        var breaks = Array(repeating: 0, count: n)
        var cost = Array(repeating: Int(Int32.max), count: n)
        for i in stride(from: n - 1, through: 0, by: -1) {
            if length[i][n - 1] <= limit {
                cost[i] = 0
                breaks[i] = n
            } else {
                for j in (i + 1)..<n {
                    let shortfall = limit - length[i][j - 1]
                    var candidate = shortfall * shortfall + cost[j]
                    if length[i][j - 1] > limit { candidate += penalty }
                    if candidate < cost[i] {
                        cost[i] = candidate
                        breaks[i] = j
                    }
                }
            }
        }
        var lines: [[String]] = []
        var i = 0
        while i < n {
            lines.append(Array(words[i..<breaks[i]]))
            i = breaks[i]
        }
        return lines
    }
}

func outBytes(_ data: Data) {
    stdoutBuffer.append(data)
}
