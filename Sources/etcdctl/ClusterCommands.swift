import EtcdAPI
import Foundation
import GRPCCore
import RaftKV

// lease, member, endpoint, move-leader, alarm, defrag, snapshot save.

// MARK: lease

func leaseFromArgs(_ arg: String) -> Int64 {
    switch parseHexInt64(arg) {
    case .success(let id): return id
    case .failure(let message): exitWithError(ExitCode.badArgs, "bad lease ID arg (\(message)), expecting ID in Hex")
    }
}

func runLeaseGrant(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "lease grant command needs TTL argument") }
    guard let ttl = Int64(inv.args[0]) else {
        exitWithError(ExitCode.badArgs, "bad TTL (strconv.ParseInt: parsing \(goQuote(inv.args[0])): invalid syntax)")
    }
    let context = makeContext(inv)
    var request = Etcdserverpb_LeaseGrantRequest()
    request.ttl = ttl
    let response = await unary(context, describe: { "failed to grant lease (\($0))" }) { [request] client in
        try await Etcdserverpb_Lease.Client(wrapping: client).leaseGrant(request, options: .etcdctl)
    }
    context.printer.grant(response)
}

func runLeaseRevoke(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "lease revoke command needs 1 argument") }
    let id = leaseFromArgs(inv.args[0])
    let context = makeContext(inv)
    var request = Etcdserverpb_LeaseRevokeRequest()
    request.id = id
    let response = await unary(context, describe: { "failed to revoke lease (\($0))" }) { [request] client in
        try await Etcdserverpb_Lease.Client(wrapping: client).leaseRevoke(request, options: .etcdctl)
    }
    context.printer.revoke(id, response)
}

func runLeaseTimeToLive(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "lease timetolive command needs lease ID as argument") }
    let context = makeContext(inv)
    var request = Etcdserverpb_LeaseTimeToLiveRequest()
    request.id = leaseFromArgs(inv.args[0])
    request.keys = inv.bool("keys")
    let finalRequest = request
    let response = await unary(context, code: ExitCode.badConnection, timeout: .some(nil)) { client in
        try await Etcdserverpb_Lease.Client(wrapping: client).leaseTimeToLive(finalRequest, options: .etcdctl)
    }
    context.printer.timeToLive(response, keys: inv.bool("keys"))
}

func runLeaseList(_ inv: Invocation) async {
    let context = makeContext(inv)
    let response = await unary(context, code: ExitCode.badConnection, timeout: .some(nil)) { client in
        try await Etcdserverpb_Lease.Client(wrapping: client).leaseLeases(Etcdserverpb_LeaseLeasesRequest(), options: .etcdctl)
    }
    context.printer.leases(response)
}

func runLeaseKeepAlive(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "lease keep-alive command needs lease ID as argument") }
    let id = leaseFromArgs(inv.args[0])
    let context = makeContext(inv)
    let once = inv.bool("once")
    let printer = context.printer
    let lastTTL = ExecTableTTL()
    do {
        try await Call.withClient(context.config, timeout: nil) { client in
            try await Etcdserverpb_Lease.Client(wrapping: client).leaseKeepAlive(
                requestProducer: { writer in
                    var request = Etcdserverpb_LeaseKeepAliveRequest()
                    request.id = id
                    while true {
                        try await writer.write(request)
                        if once { return }
                        // clientv3 renews at a third of the TTL.
                        try await Task.sleep(for: .milliseconds(max(500, lastTTL.value * 1000 / 3)))
                    }
                },
                onResponse: { response in
                    for try await message in response.messages {
                        if message.ttl <= 0 {
                            if once { throw RPCFailure(code: .notFound, message: "etcdserver: requested lease not found") }
                            return
                        }
                        printer.keepAlive(message)
                        flushOut()
                        if once { return }
                        lastTTL.value = message.ttl
                    }
                })
        }
    } catch let failure as RPCFailure {
        exitWithError(ExitCode.badConnection, failure.text)
    } catch let error as RPCError {
        exitWithError(ExitCode.badConnection, RPCFailure(error).text)
    } catch {
        exitWithError(ExitCode.badConnection, "\(error)")
    }
    if !once && printer.format == .simple {
        out(String(format: "lease %016llx expired or revoked.\n", id))
    }
}

// MARK: member

func parseMemberID(_ args: [String]) -> UInt64 {
    if args.count != 1 { exitWithError(ExitCode.badArgs, "member ID is not provided") }
    switch parseHexUInt64(args[0]) {
    case .success(let id): return id
    case .failure(let message): exitWithError(ExitCode.badArgs, "bad member ID arg (\(message)), expecting ID in Hex")
    }
}

func hex16(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: " ", count: max(0, 16 - s.count)) + s
}

func runMemberAdd(_ inv: Invocation) async {
    let args = inv.args
    if args.isEmpty { exitWithError(ExitCode.badArgs, "member name not provided") }
    if args.count > 1 {
        var message = "too many arguments"
        for s in args where s.lowercased().hasPrefix("http") {
            message += ", did you mean --peer-urls=\(s)"
        }
        exitWithError(ExitCode.badArgs, message)
    }
    let name = args[0]
    let peerURLs = inv.string("peer-urls")
    if peerURLs.isEmpty { exitWithError(ExitCode.badArgs, "member peer urls not provided") }
    let context = makeContext(inv)
    var request = Etcdserverpb_MemberAddRequest()
    request.peerUrls = peerURLs.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
    request.isLearner = inv.bool("learner")
    let finalRequest = request
    let response = await unary(context) { client in
        try await Etcdserverpb_Cluster.Client(wrapping: client).memberAdd(finalRequest, options: .etcdctl)
    }
    context.printer.memberChange("Member \(hex16(response.member.id)) added to cluster \(hex16(response.header.clusterID))",
                                 header: response.header, hasHeader: response.hasHeader,
                                 member: response.hasMember ? response.member : nil, members: response.members,
                                 message: response)
    if context.printer.format == .simple {
        var conf: [String] = []
        for member in response.members {
            for url in member.peerUrls {
                conf.append("\(member.id == response.member.id ? name : member.name)=\(url)")
            }
        }
        out("\n")
        out("ETCD_NAME=\(goQuote(name))\n")
        out("ETCD_INITIAL_CLUSTER=\(goQuote(conf.joined(separator: ",")))\n")
        out("ETCD_INITIAL_ADVERTISE_PEER_URLS=\(goQuote(peerURLs))\n")
        out("ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n")
    }
}

func runMemberRemove(_ inv: Invocation) async {
    let id = parseMemberID(inv.args)
    let context = makeContext(inv)
    var request = Etcdserverpb_MemberRemoveRequest()
    request.id = id
    let response = await unary(context) { [request] client in
        try await Etcdserverpb_Cluster.Client(wrapping: client).memberRemove(request, options: .etcdctl)
    }
    context.printer.memberChange("Member \(hex16(id)) removed from cluster \(hex16(response.header.clusterID))",
                                 header: response.header, hasHeader: response.hasHeader, member: nil, members: response.members,
                                 message: response)
}

func runMemberUpdate(_ inv: Invocation) async {
    let id = parseMemberID(inv.args)
    let peerURLs = inv.string("peer-urls")
    if peerURLs.isEmpty { exitWithError(ExitCode.badArgs, "member peer urls not provided") }
    let context = makeContext(inv)
    var request = Etcdserverpb_MemberUpdateRequest()
    request.id = id
    request.peerUrls = peerURLs.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
    let finalRequest = request
    let response = await unary(context) { client in
        try await Etcdserverpb_Cluster.Client(wrapping: client).memberUpdate(finalRequest, options: .etcdctl)
    }
    context.printer.memberChange("Member \(hex16(id)) updated in cluster \(hex16(response.header.clusterID))",
                                 header: response.header, hasHeader: response.hasHeader, member: nil, members: response.members,
                                 message: response)
}

func runMemberPromote(_ inv: Invocation) async {
    let id = parseMemberID(inv.args)
    let context = makeContext(inv)
    var request = Etcdserverpb_MemberPromoteRequest()
    request.id = id
    let response = await unary(context) { [request] client in
        try await Etcdserverpb_Cluster.Client(wrapping: client).memberPromote(request, options: .etcdctl)
    }
    context.printer.memberChange("Member \(hex16(id)) promoted in cluster \(hex16(response.header.clusterID))",
                                 header: response.header, hasHeader: response.hasHeader, member: nil, members: response.members)
}

func runMemberList(_ inv: Invocation) async {
    let context = makeContext(inv)
    let response = await unary(context) { client in
        try await Etcdserverpb_Cluster.Client(wrapping: client).memberList(Etcdserverpb_MemberListRequest(), options: .etcdctl)
    }
    context.printer.memberList(response)
}

// MARK: endpoint

/// endpointsFromCluster: the --endpoints, or with --cluster the client URLs of every member.
func endpointsFromCluster(_ context: Context) async -> [String] {
    guard context.invocation.bool("cluster") else { return context.config.endpoints }
    do {
        let response = try await Call.withClient(context.config, timeout: context.commandTimeout) { client in
            try await Etcdserverpb_Cluster.Client(wrapping: client).memberList(Etcdserverpb_MemberListRequest(), options: .etcdctl)
        }
        return response.members.flatMap(\.clientUrls)
    } catch {
        let text: String
        if let failure = error as? RPCFailure {
            text = failure.code == .deadlineExceeded ? "context deadline exceeded" : failure.text
        } else if let rpc = error as? RPCError {
            text = RPCFailure(rpc).text
        } else {
            text = "\(error)"
        }
        exitWithError(ExitCode.error, "failed to fetch endpoints from etcd cluster member list: \(text)")
    }
}

func runEndpointHealth(_ inv: Invocation) async {
    let context = makeContext(inv)
    let printer = context.printer
    let endpoints = await endpointsFromCluster(context)
    let baseConfig = context.config
    let commandTimeout = context.commandTimeout
    let results = await withTaskGroup(of: EndpointHealth.self) { group in
        for endpoint in endpoints {
            group.addTask {
                let start = Date()
                // A client per endpoint, signing in on its own: a refused sign-in makes that endpoint unhealthy.
                var single = baseConfig
                single.endpoints = [endpoint]
                single.session = AuthSession()
                single.signInFailureThrows = true
                do {
                    var request = Etcdserverpb_RangeRequest()
                    request.key = Data("health".utf8)
                    _ = try await Call.withClient(single, timeout: commandTimeout) { [request] client in
                        try await Etcdserverpb_KV.Client(wrapping: client).range(request, options: .etcdctl)
                    }
                    return EndpointHealth(endpoint: endpoint, health: true, took: tookString(start), error: "")
                } catch {
                    var text = "\(error)"
                    if let failure = error as? SignInFailure {
                        // The client was never made: no time taken (etcdctl's epHealth has no Took then).
                        return EndpointHealth(endpoint: endpoint, health: false, took: "", error: failure.message)
                    } else if let failure = error as? RPCFailure {
                        logRetryWarning(target: single.target, error: failure.grpcText)
                        text = failure.code == .deadlineExceeded ? "context deadline exceeded" : failure.text
                    } else if let rpc = error as? RPCError {
                        let failure = RPCFailure(rpc)
                        logRetryWarning(target: single.target, error: failure.grpcText)
                        if failure.message == "etcdserver: permission denied" {
                            return EndpointHealth(endpoint: endpoint, health: true, took: tookString(start), error: "")
                        }
                        text = failure.text
                    }
                    return EndpointHealth(endpoint: endpoint, health: false, took: tookString(start), error: text)
                }
            }
        }
        var all: [EndpointHealth] = []
        for await result in group { all.append(result) }
        return all
    }
    printer.endpointHealth(results)
    if results.contains(where: { !$0.error.isEmpty }) {
        exitWithError(ExitCode.error, "unhealthy cluster")
    }
}

func tookString(_ start: Date) -> String {
    goDurationString(nanoseconds: Int64(Date().timeIntervalSince(start) * 1e9))
}

func runEndpointStatus(_ inv: Invocation) async {
    let context = makeContext(inv)
    var list: [EndpointStatus] = []
    var failed = false
    for endpoint in await endpointsFromCluster(context) {
        do {
            let response = try await Call.withClient(context.config, endpoints: [endpoint], timeout: context.commandTimeout) { client in
                try await Etcdserverpb_Maintenance.Client(wrapping: client).status(Etcdserverpb_StatusRequest(), options: .etcdctl)
            }
            list.append(EndpointStatus(endpoint: endpoint, response: response))
        } catch {
            failed = true
            let (grpcText, text) = describeFailure(error)
            logRetryWarning(target: "passthrough:///\(endpoint)", error: grpcText)
            writeErr("Failed to get the status of endpoint \(endpoint) (\(text))\n")
        }
    }
    context.printer.endpointStatus(list)
    if failed {
        flushOut()
        exit(ExitCode.error)
    }
}

func describeFailure(_ error: Error) -> (grpc: String, text: String) {
    if let failure = error as? RPCFailure {
        return (failure.grpcText, failure.code == .deadlineExceeded ? "context deadline exceeded" : failure.text)
    }
    if let rpc = error as? RPCError {
        let failure = RPCFailure(rpc)
        return (failure.grpcText, failure.text)
    }
    return ("\(error)", "\(error)")
}

func runEndpointHashKV(_ inv: Invocation) async {
    let context = makeContext(inv)
    var list: [EndpointHash] = []
    var lastError: String?
    var request = Etcdserverpb_HashKVRequest()
    request.revision = inv.int64("rev")
    let finalRequest = request
    for endpoint in await endpointsFromCluster(context) {
        do {
            let response = try await Call.withClient(context.config, endpoints: [endpoint], timeout: context.commandTimeout) { client in
                try await Etcdserverpb_Maintenance.Client(wrapping: client).hashKV(finalRequest, options: .etcdctl)
            }
            list.append(EndpointHash(endpoint: endpoint, response: response))
        } catch {
            let (grpcText, text) = describeFailure(error)
            logRetryWarning(target: "passthrough:///\(endpoint)", error: grpcText)
            writeErr("Failed to get the hash of endpoint \(endpoint) (\(text))\n")
            lastError = text
        }
    }
    context.printer.endpointHashKV(list)
    if let lastError { exitWithError(ExitCode.error, lastError) }
}

// MARK: move-leader

func runMoveLeader(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "move-leader command needs 1 argument") }
    let target: UInt64
    switch parseHexUInt64(inv.args[0]) {
    case .success(let id): target = id
    case .failure(let message): exitWithError(ExitCode.badArgs, message)
    }
    let context = makeContext(inv)
    for endpoint in context.config.endpoints {
        let status = await unary(context, endpoints: [endpoint], target: "passthrough:///\(endpoint)") { client in
            try await Etcdserverpb_Maintenance.Client(wrapping: client).status(Etcdserverpb_StatusRequest(), options: .etcdctl)
        }
        if status.header.memberID == status.leader {
            var request = Etcdserverpb_MoveLeaderRequest()
            request.targetID = target
            let response = await unary(context, endpoints: [endpoint]) { [request] client in
                try await Etcdserverpb_Maintenance.Client(wrapping: client).moveLeader(request, options: .etcdctl)
            }
            context.printer.moveLeader(from: status.leader, to: target, response)
            return
        }
    }
    exitWithError(ExitCode.badArgs, "no leader endpoint given at [\(context.config.endpoints.joined(separator: " "))]")
}

// MARK: alarm

func runAlarm(_ inv: Invocation, disarm: Bool) async {
    if !inv.args.isEmpty {
        exitWithError(ExitCode.badArgs, "alarm \(disarm ? "disarm" : "list") command accepts no arguments")
    }
    let context = makeContext(inv)
    var request = Etcdserverpb_AlarmRequest()
    request.action = disarm ? .deactivate : .get
    let finalRequest = request
    let response = await unary(context) { client in
        let maintenance = Etcdserverpb_Maintenance.Client(wrapping: client)
        if !disarm { return try await maintenance.alarm(finalRequest, options: .etcdctl) }
        // clientv3.AlarmDisarm with an empty member: list the alarms, then deactivate each.
        var list = Etcdserverpb_AlarmRequest()
        list.action = .get
        let current = try await maintenance.alarm(list, options: .etcdctl)
        // The combined response has no header, only the disarmed alarms.
        var combined = Etcdserverpb_AlarmResponse()
        for alarm in current.alarms {
            var deactivate = Etcdserverpb_AlarmRequest()
            deactivate.action = .deactivate
            deactivate.memberID = alarm.memberID
            deactivate.alarm = alarm.alarm
            combined.alarms += try await maintenance.alarm(deactivate, options: .etcdctl).alarms
        }
        return combined
    }
    context.printer.alarm(response)
}

// MARK: defrag

func runDefrag(_ inv: Invocation) async {
    if !inv.string("data-dir").isEmpty {
        defragData(inv.string("data-dir"))
        return
    }
    let context = makeContext(inv)
    var failures = 0
    for endpoint in await endpointsFromCluster(context) {
        do {
            _ = try await Call.withClient(context.config, endpoints: [endpoint], timeout: context.commandTimeout) { client in
                try await Etcdserverpb_Maintenance.Client(wrapping: client).defragment(Etcdserverpb_DefragmentRequest(), options: .etcdctl)
            }
            out("Finished defragmenting etcd member[\(endpoint)]\n")
        } catch {
            let (grpcText, text) = describeFailure(error)
            logRetryWarning(target: "passthrough:///\(endpoint)", error: grpcText)
            writeErr("Failed to defragment etcd member[\(endpoint)] (\(text))\n")
            failures += 1
        }
    }
    if failures != 0 {
        flushOut()
        exit(ExitCode.error)
    }
}

/// etcd 3.4's defragData: silent on success; a database that does not open ends as its backend's panic does
/// (capnslog's critical line, then the panic's, exit 2), without Go's goroutine dump.
func defragData(_ dataDir: String) {
    do {
        try OfflineDefragment.run(dataDirectory: dataDir) {
            let path = OfflineDefragment.databasePath(inDataDirectory: dataDir)
            writeErr("waiting for etcd to close and release its lock on \(goQuote(path)). "
                     + "To defrag a running etcd instance, omit --data-dir.\n")
        }
    } catch OfflineDefragment.Failure.cannotOpen(let path, let reason) {
        let message = "cannot open database at \(path) (\(reason))"
        capnslog("C", message, package: "mvcc/backend")
        writeErr("panic: \(message)\n\n")
        flushOut()
        exit(2)
    } catch {
        writeErr("Failed to defragment etcd data[\(dataDir)] (\(error))\n")
        flushOut()
        exit(ExitCode.error)
    }
}

// MARK: snapshot save

func runSnapshotSave(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "snapshot save expects one argument") }
    let context = makeContext(inv)
    let path = inv.args[0]
    let partial = path + ".part"
    let timeout: Double? = inv.changed.contains("command-timeout") ? context.commandTimeout : nil
    guard let endpoint = context.config.endpoints.first, context.config.endpoints.count == 1 else {
        exitWithError(ExitCode.interrupted, "snapshot must be requested to one selected node, not multiple [\(context.config.endpoints.joined(separator: " "))]")
    }
    FileManager.default.createFile(atPath: partial, contents: nil)
    guard let handle = FileHandle(forWritingAtPath: partial) else {
        exitWithError(ExitCode.interrupted, "could not open \(partial)")
    }
    do {
        try await Call.withClient(context.config, endpoints: [endpoint], timeout: timeout) { client in
            try await Etcdserverpb_Maintenance.Client(wrapping: client).snapshot(Etcdserverpb_SnapshotRequest(), options: .etcdctl) { response in
                var progress = SnapshotProgress()
                for try await message in response.messages {
                    handle.write(message.blob)
                    progress.received(message.blob.count, remaining: message.remainingBytes)
                }
                progress.finish()
            }
        }
        try handle.close()
        _ = try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: partial, toPath: path)
    } catch {
        let (_, text) = describeFailure(error)
        exitWithError(ExitCode.interrupted, text)
    }
    out("Snapshot saved at \(path)\n")
}

/// A progress bar for `snapshot save` on stderr, drawn only when stderr is a terminal, so that scripts and pipes see
/// exactly etcdctl's output. Each message says how many bytes remain after it, which gives the total.
struct SnapshotProgress {
    private let isTerminal = isatty(STDERR_FILENO) != 0
    private var receivedBytes: UInt64 = 0
    private var lastDrawn = ContinuousClock.now - .seconds(1)
    private var drawn = false

    mutating func received(_ count: Int, remaining: UInt64) {
        receivedBytes += UInt64(count)
        guard isTerminal, ContinuousClock.now - lastDrawn >= .milliseconds(100) || remaining == 0 else { return }
        lastDrawn = ContinuousClock.now
        drawn = true
        FileHandle.standardError.write(Data(("\r" + Self.line(received: receivedBytes, total: receivedBytes + remaining)).utf8))
    }

    func finish() {
        if drawn { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    /// `Downloading snapshot [##########..........] 1.5 MiB / 3.0 MiB`
    static func line(received: UInt64, total: UInt64, width: Int = 40) -> String {
        let filled = total == 0 ? width : Int(min(received, total) * UInt64(width) / total)
        let mebibytes = { (bytes: UInt64) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
        return "Downloading snapshot [" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            + "] \(mebibytes(received)) / \(mebibytes(total))"
    }
}

/// The TTL last granted by a keep-alive, shared by the request and response sides.
final class ExecTableTTL: @unchecked Sendable {
    private let lock = NSLock()
    private var ttl: Int64 = 3
    var value: Int64 {
        get { lock.withLock { ttl } }
        set { lock.withLock { ttl = newValue } }
    }
}
