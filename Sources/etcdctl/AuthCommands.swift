import EtcdAPI
import Foundation
import GRPCCore
import SwiftProtobuf

// auth, user and role (ctlv3/command/{auth,user,role}_command.go) and their printers.

private func authClient(_ client: GRPCClient<Transport>) -> Etcdserverpb_Auth.Client<Transport> {
    Etcdserverpb_Auth.Client(wrapping: client)
}

// MARK: auth

func runAuthEnable(_ inv: Invocation) async {
    if !inv.args.isEmpty { exitWithError(ExitCode.badArgs, "auth enable command does not accept any arguments") }
    let context = makeContext(inv)
    // One command context for the whole loop, as etcdctl's commandCtx.
    let deadline = Date().addingTimeInterval(context.commandTimeout)
    func remaining() -> Double?? { .some(max(0.001, deadline.timeIntervalSinceNow)) }
    while true {
        let enabled = await attempt(context, timeout: remaining()) { client in
            try await authClient(client).authEnable(Etcdserverpb_AuthEnableRequest(), options: .etcdctl)
        }
        guard case .failure(let error) = enabled else { break }
        // etcdctl makes the root role and grants it to root when that is all that is missing, then tries again.
        guard error.text == "etcdserver: root user does not have root role" else { exitWithError(ExitCode.error, error) }
        var role = Etcdserverpb_AuthRoleAddRequest()
        role.name = "root"
        if case .failure(let error) = await attempt(context, timeout: remaining(), { [role] client in
            try await authClient(client).roleAdd(role, options: .etcdctl)
        }) { exitWithError(ExitCode.error, error) }
        var grant = Etcdserverpb_AuthUserGrantRoleRequest()
        grant.user = "root"
        grant.role = "root"
        if case .failure(let error) = await attempt(context, timeout: remaining(), { [grant] client in
            try await authClient(client).userGrantRole(grant, options: .etcdctl)
        }) { exitWithError(ExitCode.error, error) }
    }
    out("Authentication Enabled\n")
}

func runAuthDisable(_ inv: Invocation) async {
    if !inv.args.isEmpty { exitWithError(ExitCode.badArgs, "auth disable command does not accept any arguments") }
    let context = makeContext(inv)
    _ = await unary(context) { client in
        try await authClient(client).authDisable(Etcdserverpb_AuthDisableRequest(), options: .etcdctl)
    }
    out("Authentication Disabled\n")
}

// MARK: user

let userAddFlags: [FlagSpec] = [
    .bool("interactive", nil, true, "Read password from stdin instead of interactive terminal"),
    .string("new-user-password", nil, "", "Supply password from the command line flag"),
    .bool("no-password", nil, false, "Create a user without password (CN based auth only)"),
]

let userPasswdFlags: [FlagSpec] = [
    .bool("interactive", nil, true, "If true, read password from stdin instead of interactive terminal"),
]

func runUserAdd(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "user add command requires user name as its argument") }
    var request = Etcdserverpb_AuthUserAddRequest()
    // clientv3's UserAddWithOptions always sends the options.
    request.options = Authpb_UserAddOptions()
    let arg = inv.args[0]
    if inv.bool("no-password") {
        request.name = arg
        request.options.noPassword = true
    } else if !inv.string("new-user-password").isEmpty {
        request.name = arg
        request.password = inv.string("new-user-password")
    } else if let colon = arg.firstIndex(of: ":") {
        request.name = String(arg[..<colon])
        request.password = String(arg[arg.index(after: colon)...])
        if request.name.isEmpty { exitWithError(ExitCode.badArgs, "empty user name is not allowed") }
    } else {
        request.name = arg
        request.password = inv.bool("interactive") ? readPasswordInteractive(arg) : StdinReader.shared.scanWord()
    }
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await authClient(client).userAdd(request, options: .etcdctl)
    }
    context.printer.userAdd(request.name, response)
}

func runUserDelete(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "user delete command requires user name as its argument") }
    var request = Etcdserverpb_AuthUserDeleteRequest()
    request.name = inv.args[0]
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await authClient(client).userDelete(request, options: .etcdctl)
    }
    context.printer.userDelete(inv.args[0], response)
}

func runUserGet(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "user get command requires user name as its argument") }
    let name = inv.args[0]
    var request = Etcdserverpb_AuthUserGetRequest()
    request.name = name
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await authClient(client).userGet(request, options: .etcdctl)
    }
    guard inv.bool("detail") else {
        context.printer.userGet(name, response)
        return
    }
    // Printed as it is whatever the output format, each role then in the format.
    out("User: \(name)\n")
    for role in response.roles {
        out("\n")
        var roleRequest = Etcdserverpb_AuthRoleGetRequest()
        roleRequest.role = role
        let roleResponse = await unary(context) { [roleRequest] client in
            try await authClient(client).roleGet(roleRequest, options: .etcdctl)
        }
        context.printer.roleGet(role, roleResponse)
    }
}

func runUserList(_ inv: Invocation) async {
    if !inv.args.isEmpty { exitWithError(ExitCode.badArgs, "user list command requires no arguments") }
    let context = makeContext(inv)
    let response = await unary(context) { client in
        try await authClient(client).userList(Etcdserverpb_AuthUserListRequest(), options: .etcdctl)
    }
    context.printer.userList(response)
}

func runUserPasswd(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "user passwd command requires user name as its argument") }
    var request = Etcdserverpb_AuthUserChangePasswordRequest()
    request.name = inv.args[0]
    request.password = inv.bool("interactive") ? readPasswordInteractive(inv.args[0]) : StdinReader.shared.scanWord()
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await authClient(client).userChangePassword(request, options: .etcdctl)
    }
    context.printer.userChangePassword(response)
}

func runUserGrantRole(_ inv: Invocation) async {
    if inv.args.count != 2 {
        exitWithError(ExitCode.badArgs, "user grant command requires user name and role name as its argument")
    }
    var request = Etcdserverpb_AuthUserGrantRoleRequest()
    request.user = inv.args[0]
    request.role = inv.args[1]
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await authClient(client).userGrantRole(request, options: .etcdctl)
    }
    context.printer.userGrantRole(inv.args[0], inv.args[1], response)
}

func runUserRevokeRole(_ inv: Invocation) async {
    if inv.args.count != 2 {
        exitWithError(ExitCode.badArgs, "user revoke-role requires user name and role name as its argument")
    }
    var request = Etcdserverpb_AuthUserRevokeRoleRequest()
    request.name = inv.args[0]
    request.role = inv.args[1]
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await authClient(client).userRevokeRole(request, options: .etcdctl)
    }
    context.printer.userRevokeRole(inv.args[0], inv.args[1], response)
}

// MARK: role

func grantPermissionFlags(_ verb: String) -> [FlagSpec] {
    [.bool("prefix", nil, false, "\(verb) a prefix permission"),
     .bool("from-key", nil, false, "\(verb) a permission of keys that are greater than or equal to the given key using byte compare")]
}

func runRoleAdd(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "role add command requires role name as its argument") }
    var request = Etcdserverpb_AuthRoleAddRequest()
    request.name = inv.args[0]
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await authClient(client).roleAdd(request, options: .etcdctl)
    }
    context.printer.roleAdd(inv.args[0], response)
}

func runRoleDelete(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "role delete command requires role name as its argument") }
    var request = Etcdserverpb_AuthRoleDeleteRequest()
    request.role = inv.args[0]
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await authClient(client).roleDelete(request, options: .etcdctl)
    }
    context.printer.roleDelete(inv.args[0], response)
}

func runRoleGet(_ inv: Invocation) async {
    if inv.args.count != 1 { exitWithError(ExitCode.badArgs, "role get command requires role name as its argument") }
    var request = Etcdserverpb_AuthRoleGetRequest()
    request.role = inv.args[0]
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await authClient(client).roleGet(request, options: .etcdctl)
    }
    context.printer.roleGet(inv.args[0], response)
}

func runRoleList(_ inv: Invocation) async {
    if !inv.args.isEmpty { exitWithError(ExitCode.badArgs, "role list command requires no arguments") }
    let context = makeContext(inv)
    let response = await unary(context) { client in
        try await authClient(client).roleList(Etcdserverpb_AuthRoleListRequest(), options: .etcdctl)
    }
    context.printer.roleList(response)
}

/// permRange: the key and range end of a permission from its arguments and --prefix/--from-key.
private func permissionRange(_ inv: Invocation, _ args: [String]) -> (key: Data, rangeEnd: Data) {
    let prefix = inv.bool("prefix"), fromKey = inv.bool("from-key")
    let key = Data(args[0].utf8)
    if key.isEmpty {
        if prefix && fromKey { exitWithError(ExitCode.badArgs, "--from-key and --prefix flags are mutually exclusive") }
        // A permission on "every key" starts at "\0"; with --prefix or --from-key it is open ended.
        return (Data([0]), prefix || fromKey ? Data([0]) : Data())
    }
    if args.count == 1 {
        if prefix {
            if fromKey { exitWithError(ExitCode.badArgs, "--from-key and --prefix flags are mutually exclusive") }
            return (key, prefixRangeEnd(key))
        }
        return (key, fromKey ? Data([0]) : Data())
    }
    if prefix { exitWithError(ExitCode.badArgs, "unexpected endkey argument with --prefix flag") }
    if fromKey { exitWithError(ExitCode.badArgs, "unexpected endkey argument with --from-key flag") }
    return (key, Data(args[1].utf8))
}

func runRoleGrantPermission(_ inv: Invocation) async {
    let args = inv.args
    if args.count < 3 {
        exitWithError(ExitCode.badArgs, "role grant command requires role name, permission type, and key [endkey] as its argument")
    }
    let permType: Authpb_Permission.TypeEnum
    switch args[1].uppercased() {
    case "READ": permType = .read
    case "WRITE": permType = .write
    case "READWRITE": permType = .readwrite
    default: exitWithError(ExitCode.badArgs, "invalid permission type: \(args[1])")
    }
    let (key, rangeEnd) = permissionRange(inv, Array(args[2...]))
    var request = Etcdserverpb_AuthRoleGrantPermissionRequest()
    request.name = args[0]
    request.perm.permType = permType
    request.perm.key = key
    request.perm.rangeEnd = rangeEnd
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await authClient(client).roleGrantPermission(request, options: .etcdctl)
    }
    context.printer.roleGrantPermission(args[0], response)
}

func runRoleRevokePermission(_ inv: Invocation) async {
    let args = inv.args
    if args.count < 2 {
        exitWithError(ExitCode.badArgs, "role revoke-permission command requires role name and key [endkey] as its argument")
    }
    let (key, rangeEnd) = permissionRange(inv, Array(args[1...]))
    var request = Etcdserverpb_AuthRoleRevokePermissionRequest()
    request.role = args[0]
    request.key = key
    request.rangeEnd = rangeEnd
    let context = makeContext(inv)
    let response = await unary(context) { [request] client in
        try await authClient(client).roleRevokePermission(request, options: .etcdctl)
    }
    // The key as typed, not the "\0" an empty key became.
    context.printer.roleRevokePermission(args[0], key: Data(args[1].utf8), end: rangeEnd, response)
}

// MARK: printers (printer_simple.go, printer_json.go, printer_fields.go, printer_protobuf.go)

extension Printer {
    /// The json printer's output of a response that is only a header: `{"header":{…}}`.
    private func headerOnlyJSON(_ header: Etcdserverpb_ResponseHeader, _ hasHeader: Bool) {
        var o = GoObject()
        o.omitEmpty("header", Self.headerJSON(header, present: hasHeader))
        printJSON(o.json)
    }

    /// Responses that simple prints as a sentence and fields as the header.
    private func headerResponse(_ sentence: String, _ header: Etcdserverpb_ResponseHeader, _ hasHeader: Bool,
                                _ message: some SwiftProtobuf.Message) {
        switch format {
        case .simple: out(sentence + "\n")
        case .json: headerOnlyJSON(header, hasHeader)
        case .fields: fieldsHeader(header)
        case .table: unsupportedFormat()
        case .protobuf: printProtobuf(message)
        }
    }

    func userAdd(_ name: String, _ r: Etcdserverpb_AuthUserAddResponse) {
        headerResponse("User \(name) created", r.header, r.hasHeader, r)
    }

    func userDelete(_ name: String, _ r: Etcdserverpb_AuthUserDeleteResponse) {
        headerResponse("User \(name) deleted", r.header, r.hasHeader, r)
    }

    func userChangePassword(_ r: Etcdserverpb_AuthUserChangePasswordResponse) {
        headerResponse("Password updated", r.header, r.hasHeader, r)
    }

    func userGrantRole(_ user: String, _ role: String, _ r: Etcdserverpb_AuthUserGrantRoleResponse) {
        headerResponse("Role \(role) is granted to user \(user)", r.header, r.hasHeader, r)
    }

    func userRevokeRole(_ user: String, _ role: String, _ r: Etcdserverpb_AuthUserRevokeRoleResponse) {
        headerResponse("Role \(role) is revoked from user \(user)", r.header, r.hasHeader, r)
    }

    func roleAdd(_ role: String, _ r: Etcdserverpb_AuthRoleAddResponse) {
        headerResponse("Role \(role) created", r.header, r.hasHeader, r)
    }

    func roleDelete(_ role: String, _ r: Etcdserverpb_AuthRoleDeleteResponse) {
        headerResponse("Role \(role) deleted", r.header, r.hasHeader, r)
    }

    func roleGrantPermission(_ role: String, _ r: Etcdserverpb_AuthRoleGrantPermissionResponse) {
        headerResponse("Role \(role) updated", r.header, r.hasHeader, r)
    }

    func roleRevokePermission(_ role: String, key: Data, end: Data, _ r: Etcdserverpb_AuthRoleRevokePermissionResponse) {
        guard format == .simple else { return headerResponse("", r.header, r.hasHeader, r) }
        if end.isEmpty {
            outBytes(Data("Permission of key ".utf8) + key + Data(" is revoked from role \(role)\n".utf8))
        } else if end != Data([0]) {
            outBytes(Data("Permission of range [".utf8) + key + Data(", ".utf8) + end + Data(") is revoked from role \(role)\n".utf8))
        } else {
            outBytes(Data("Permission of range [".utf8) + key + Data(", <open ended> is revoked from role \(role)\n".utf8))
        }
    }

    func userGet(_ name: String, _ r: Etcdserverpb_AuthUserGetResponse) {
        switch format {
        case .simple: out("User: \(name)\nRoles:" + r.roles.map { " " + $0 }.joined() + "\n")
        case .json:
            var o = GoObject()
            o.omitEmpty("header", Self.headerJSON(r.header, present: r.hasHeader))
            o.omitEmpty("roles", r.roles.map { .string($0) })
            printJSON(o.json)
        case .fields, .table: unsupportedFormat()
        case .protobuf: printProtobuf(r)
        }
    }

    func userList(_ r: Etcdserverpb_AuthUserListResponse) {
        switch format {
        case .simple: for user in r.users { out(user + "\n") }
        case .json:
            var o = GoObject()
            o.omitEmpty("header", Self.headerJSON(r.header, present: r.hasHeader))
            o.omitEmpty("users", r.users.map { .string($0) })
            printJSON(o.json)
        case .fields, .table: unsupportedFormat()
        case .protobuf: printProtobuf(r)
        }
    }

    func roleList(_ r: Etcdserverpb_AuthRoleListResponse) {
        switch format {
        case .simple: for role in r.roles { out(role + "\n") }
        case .json:
            var o = GoObject()
            o.omitEmpty("header", Self.headerJSON(r.header, present: r.hasHeader))
            o.omitEmpty("roles", r.roles.map { .string($0) })
            printJSON(o.json)
        case .fields:
            fieldsHeader(r.header)
            out("\"Roles\" :" + r.roles.map { " " + goQuote($0) }.joined() + "\n")
        case .table: unsupportedFormat()
        case .protobuf: printProtobuf(r)
        }
    }

    func roleGet(_ role: String, _ r: Etcdserverpb_AuthRoleGetResponse) {
        switch format {
        case .simple:
            out("Role \(role)\nKV Read:\n")
            for perm in r.perm where perm.permType == .read || perm.permType == .readwrite { simplePermission(perm) }
            out("KV Write:\n")
            for perm in r.perm where perm.permType == .write || perm.permType == .readwrite { simplePermission(perm) }
        case .json:
            var o = GoObject()
            o.omitEmpty("header", Self.headerJSON(r.header, present: r.hasHeader))
            o.omitEmpty("perm", r.perm.map { perm -> GoJSON in
                var p = GoObject()
                // gogo's enum has no MarshalJSON: its number, left out when READ (0).
                p.omitEmpty("permType", Int64(perm.permType.rawValue))
                p.omitEmpty("key", perm.key)
                p.omitEmpty("range_end", perm.rangeEnd)
                return p.json
            })
            printJSON(o.json)
        case .fields:
            fieldsHeader(r.header)
            for perm in r.perm {
                // fmt.Println with a trailing space in the first operand: two spaces.
                out("\"PermType\" :  \(Self.permissionTypeName(perm.permType))\n")
                out("\"Key\" : \(goQuote(bytes: Array(perm.key)))\n")
                out("\"RangeEnd\" : \(goQuote(bytes: Array(perm.rangeEnd)))\n")
            }
        case .table: unsupportedFormat()
        case .protobuf: printProtobuf(r)
        }
    }

    private func simplePermission(_ perm: Authpb_Permission) {
        if perm.rangeEnd.isEmpty {
            outBytes(Data("\t".utf8) + perm.key + Data("\n".utf8))
            return
        }
        var line = Data("\t[".utf8) + perm.key
        line += perm.rangeEnd != Data([0]) ? Data(", ".utf8) + perm.rangeEnd + Data(")".utf8) : Data(", <open ended>".utf8)
        if prefixRangeEnd(perm.key) == perm.rangeEnd { line += Data(" (prefix ".utf8) + perm.key + Data(")".utf8) }
        outBytes(line + Data("\n".utf8))
    }

    static func permissionTypeName(_ type: Authpb_Permission.TypeEnum) -> String {
        switch type {
        case .read: "READ"
        case .write: "WRITE"
        case .readwrite: "READWRITE"
        case .UNRECOGNIZED(let value): String(value)
        }
    }
}
