import Foundation

// etcdctl (API v3), output-compatible with etcd 3.4's etcdctl: see docs/etcdctl.md.

func notImplemented(_ name: String) -> (Invocation) async throws -> Void {
    { _ in exitWithError(ExitCode.badFeature, "\(name) is not implemented by this etcdctl") }
}

func stub(_ use: String, _ short: String, _ children: [CommandSpec] = []) -> CommandSpec {
    let command = CommandSpec(use, short, run: children.isEmpty ? notImplemented(String(use.split(separator: " ")[0])) : nil)
    for child in children { command.add(child) }
    return command
}

func buildRoot() -> CommandSpec {
    let root = CommandSpec("etcdctl", "A simple command line client for etcd3.", persistent: globalFlags)
    let get = CommandSpec("get [options] <key> [range_end]", "Gets the key or a range of keys", flags: getFlags, run: runGet)
    let put = CommandSpec("put [options] <key> <value> (<value> can also be given from stdin)", "Puts the given key into the store",
                          long: putLong, flags: putFlags, run: runPut)
    let del = CommandSpec("del [options] <key> [range_end]", "Removes the specified key or range of keys [key, range_end)",
                          flags: delFlags, run: runDel)
    let txn = CommandSpec("txn [options]", "Txn processes all the requests in one transaction",
                          flags: [.bool("interactive", "i", false, "Input transaction in interactive mode")], run: runTxn)
    let compaction = CommandSpec("compaction [options] <revision>", "Compacts the event history in etcd",
                                 flags: [.bool("physical", nil, false, "'true' to wait for compaction to physically remove all old revisions")],
                                 run: runCompaction)
    let alarm = CommandSpec("alarm <subcommand>", "Alarm related commands")
    alarm.add(CommandSpec("disarm", "Disarms all alarms", run: { await runAlarm($0, disarm: true) }),
              CommandSpec("list", "Lists all alarms", run: { await runAlarm($0, disarm: false) }))
    let clusterFlag = FlagSpec.bool("cluster", nil, false, "use all endpoints from the cluster member list")
    let defrag = CommandSpec("defrag", "Defragments the storage of the etcd members with given endpoints",
                             flags: [.string("data-dir", nil, "", "Optional. If present, defragments a data directory not in use by etcd.")],
                             persistent: [clusterFlag], run: runDefrag)
    let endpoint = CommandSpec("endpoint <subcommand>", "Endpoint related commands", persistent: [clusterFlag])
    endpoint.add(CommandSpec("health", "Checks the healthiness of endpoints specified in `--endpoints` flag", run: runEndpointHealth),
                 CommandSpec("status", "Prints out the status of endpoints specified in `--endpoints` flag", long: """
                    When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.
                    The items in the lists are endpoint, ID, version, db size, is leader, is learner, raft term, raft index, raft applied index, errors.

                    """, run: runEndpointStatus),
                 CommandSpec("hashkv", "Prints the KV history hash for each endpoint in --endpoints",
                             persistent: [.int("rev", 0, "maximum revision to hash (default: all revisions)")], run: runEndpointHashKV))
    let moveLeader = CommandSpec("move-leader <transferee-member-id>", "Transfers leadership to another etcd cluster member.",
                                 run: runMoveLeader)
    let watch = CommandSpec("watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]",
                            "Watches events stream on keys or prefixes", flags: watchFlags, run: runWatch)
    let version = CommandSpec("version", "Prints the version of etcdctl", run: { _ in
        out("etcdctl version: \(etcdctlVersion)\nAPI version: \(etcdctlAPIVersion)\n")
    })
    let lease = CommandSpec("lease <subcommand>", "Lease related commands")
    lease.add(CommandSpec("grant <ttl>", "Creates leases", run: runLeaseGrant),
              CommandSpec("revoke <leaseID>", "Revokes leases", run: runLeaseRevoke),
              CommandSpec("timetolive <leaseID> [options]", "Get lease information",
                          flags: [.bool("keys", nil, false, "Get keys attached to this lease")], run: runLeaseTimeToLive),
              CommandSpec("list", "List all active leases", run: runLeaseList),
              CommandSpec("keep-alive [options] <leaseID>", "Keeps leases alive (renew)",
                          flags: [.bool("once", nil, false, "Resets the keep-alive time to its original value and exits immediately")],
                          run: runLeaseKeepAlive))
    let member = CommandSpec("member <subcommand>", "Membership related commands")
    member.add(CommandSpec("add <memberName> [options]", "Adds a member into the cluster",
                           flags: [.string("peer-urls", nil, "", "comma separated peer URLs for the new member."),
                                   .bool("learner", nil, false, "indicates if the new member is raft learner")], run: runMemberAdd),
               CommandSpec("remove <memberID>", "Removes a member from the cluster", run: runMemberRemove),
               CommandSpec("update <memberID> [options]", "Updates a member in the cluster",
                           flags: [.string("peer-urls", nil, "", "comma separated peer URLs for the updated member.")], run: runMemberUpdate),
               CommandSpec("list", "Lists all members in the cluster", long: """
                    When --write-out is set to simple, this command prints out comma-separated member lists for each endpoint.
                    The items in the lists are ID, Status, Name, Peer Addrs, Client Addrs, Is Learner.

                    """, run: runMemberList),
               CommandSpec("promote <memberID>", "Promotes a non-voting member in the cluster", long: """
                    Promotes a non-voting learner member to a voting one in the cluster.

                    """, run: runMemberPromote))
    let snapshot = CommandSpec("snapshot <subcommand>", "Manages etcd node snapshots")
    snapshot.add(CommandSpec("save <filename>", "Stores an etcd node backend snapshot to a given file", run: runSnapshotSave),
                 CommandSpec("restore <filename> [options]", "Restores an etcd member snapshot to an etcd directory",
                             flags: snapshotRestoreFlags, run: runSnapshotRestore),
                 CommandSpec("status <filename>", "Gets backend snapshot status of a given file", long: """
                    When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.
                    The items in the lists are hash, revision, total keys, total size.

                    """, run: runSnapshotStatus))
    let auth = CommandSpec("auth <enable or disable>", "Enable or disable authentication")
    auth.add(CommandSpec("enable", "Enables authentication", run: runAuthEnable),
             CommandSpec("disable", "Disables authentication", run: runAuthDisable))
    let user = CommandSpec("user <subcommand>", "User related commands")
    user.add(CommandSpec("add <user name or user:password> [options]", "Adds a new user", flags: userAddFlags, run: runUserAdd),
             CommandSpec("delete <user name>", "Deletes a user", run: runUserDelete),
             CommandSpec("get <user name> [options]", "Gets detailed information of a user",
                         flags: [.bool("detail", nil, false, "Show permissions of roles granted to the user")], run: runUserGet),
             CommandSpec("list", "Lists all users", run: runUserList),
             CommandSpec("passwd <user name> [options]", "Changes password of user", flags: userPasswdFlags, run: runUserPasswd),
             CommandSpec("grant-role <user name> <role name>", "Grants a role to a user", run: runUserGrantRole),
             CommandSpec("revoke-role <user name> <role name>", "Revokes a role from a user", run: runUserRevokeRole))
    let role = CommandSpec("role <subcommand>", "Role related commands")
    role.add(CommandSpec("add <role name>", "Adds a new role", run: runRoleAdd),
             CommandSpec("delete <role name>", "Deletes a role", run: runRoleDelete),
             CommandSpec("get <role name>", "Gets detailed information of a role", run: runRoleGet),
             CommandSpec("list", "Lists all roles", run: runRoleList),
             CommandSpec("grant-permission [options] <role name> <permission type> <key> [endkey]", "Grants a key to a role",
                         flags: grantPermissionFlags("grant"), run: runRoleGrantPermission),
             CommandSpec("revoke-permission <role name> <key> [endkey]", "Revokes a key from a role",
                         flags: grantPermissionFlags("revoke"), run: runRoleRevokePermission))
    root.add(get, put, del, txn, compaction, alarm, defrag, endpoint, moveLeader, watch, version, lease, member, snapshot,
             CommandSpec("make-mirror [options] <destination>", "Makes a mirror at the destination etcd cluster",
                         flags: makeMirrorFlags, run: runMakeMirror),
             stub("migrate", "Migrates keys in a v2 store to a mvcc store"),
             CommandSpec("lock <lockname> [exec-command arg1 arg2 ...]", "Acquires a named lock", flags: lockFlags, run: runLock),
             CommandSpec("elect <election-name> [proposal]", "Observes and participates in leader election",
                         flags: electFlags, run: runElect),
             auth, user, role,
             stub("check <subcommand>", "commands for checking properties of the etcd cluster", [
                CommandSpec("datascale [options]", "Check the memory usage of holding data for different workloads on a given server endpoint.",
                            long: "If no endpoint is provided, localhost will be used. If multiple endpoints are provided, first endpoint will be used.",
                            flags: checkFlags("datascale", prefix: "/etcdctl-check-datascale/"), run: runCheckDatascale),
                CommandSpec("perf [options]", "Check the performance of the etcd cluster",
                            flags: checkFlags("performance", prefix: "/etcdctl-check-perf/"), run: runCheckPerf)]),
             CommandSpec("help [command]", "Help about any command", run: { _ in }),
             completionCommand(root: "etcdctl"))
    root.child(named: "help")?.completeArguments = Completion.helpArguments(root: root)
    return root
}

func main() async {
    let environment = ProcessInfo.processInfo.environment
    if let api = environment["ETCDCTL_API"], !api.isEmpty, api != "3" {
        writeErr("unsupported API version \(api)\n")
        exit(1)
    }
    unsetenv("ETCDCTL_API")
    let root = buildRoot()
    let arguments = Array(CommandLine.arguments.dropFirst())
    if let first = arguments.first, first == Completion.requestCommand || first == Completion.noDescRequestCommand,
       arguments.count > 1 {
        Completion.run(Array(arguments.dropFirst()), root: root, withDescriptions: first == Completion.requestCommand)
    }
    switch Parser.parse(Array(CommandLine.arguments.dropFirst()), root: root) {
    case .help(let command):
        out(command.usage())
    case .findError(let command, let message):
        writeErr("Error: \(message)\nRun '\(command.path) --help' for usage.\n")
        exitWithError(ExitCode.error, message)
    case .flagError(let command, let message):
        writeErr("Error: \(message)\n")
        out(command.usage())
        writeErr("\n")
        exitWithError(ExitCode.error, message)
    case .run(let invocation):
        if invocation.command.name == "help" {
            var target = root
            for word in invocation.args {
                guard let child = target.child(named: word) else { break }
                target = child
            }
            out(target.usage())
        } else if let run = invocation.command.run {
            try? await run(invocation)
        }
    }
    flushOut()
    exit(0)
}

await main()
