import Foundation
import EtcdAPI
import GRPCCore
import RaftKV
import SwiftProtobuf

/// etcd's `Auth` service. Changes go through the leader's log (checked there, at apply time, against the caller's
/// identity); reads are linearizable reads of the auth state. Passwords are hashed here, on the member that
/// receives them, and never enter the log.
struct AuthService: Etcdserverpb_Auth.SimpleServiceProtocol {
    let server: EtcdServer

    // MARK: Switch and tokens

    func authEnable(request: Etcdserverpb_AuthEnableRequest,
                    context: ServerContext) async throws -> Etcdserverpb_AuthEnableResponse {
        try await answering { try await authEnable(request) }
    }

    func authEnable(_ request: Etcdserverpb_AuthEnableRequest) async throws -> Etcdserverpb_AuthEnableResponse {
        try await change(.authEnable, request) { .enable }
    }

    func authDisable(request: Etcdserverpb_AuthDisableRequest,
                     context: ServerContext) async throws -> Etcdserverpb_AuthDisableResponse {
        try await answering { try await authDisable(request) }
    }

    func authDisable(_ request: Etcdserverpb_AuthDisableRequest) async throws -> Etcdserverpb_AuthDisableResponse {
        try await change(.authDisable, request) { .disable }
    }

    func authStatus(request: Etcdserverpb_AuthStatusRequest,
                    context: ServerContext) async throws -> Etcdserverpb_AuthStatusResponse {
        try await answering {
            try await server.store.linearizableBarrier()
            let state = server.store.authState
            var message = Etcdserverpb_AuthStatusResponse()
            message.header = server.header()
            message.enabled = state.isEnabled
            message.authRevision = state.revision
            return message
        }
    }

    func authenticate(request: Etcdserverpb_AuthenticateRequest,
                      context: ServerContext) async throws -> Etcdserverpb_AuthenticateResponse {
        try await answering { try await authenticate(request) }
    }

    func authenticate(_ request: Etcdserverpb_AuthenticateRequest) async throws -> Etcdserverpb_AuthenticateResponse {
        try await server.servedByLeader(.authenticate, request, waitForRevision: false) {
            let issued = try await server.store.authenticate(user: request.name) { user in
                PasswordHashing.verify(request.password, against: user.passwordHash)
            }
            var message = Etcdserverpb_AuthenticateResponse()
            message.header = server.header(revision: issued.revision)
            message.token = issued.token
            return message
        }
    }

    // MARK: Users

    func userAdd(request: Etcdserverpb_AuthUserAddRequest,
                 context: ServerContext) async throws -> Etcdserverpb_AuthUserAddResponse {
        try await answering { try await userAdd(request) }
    }

    func userAdd(_ request: Etcdserverpb_AuthUserAddRequest) async throws -> Etcdserverpb_AuthUserAddResponse {
        try await change(.userAdd, request) {
            let noPassword = request.options.noPassword
            return .userAdd(name: request.name, passwordHash: noPassword ? [] : try passwordHash(request.password,
                                                                                              request.hashedPassword),
                            noPassword: noPassword)
        }
    }

    func userGet(request: Etcdserverpb_AuthUserGetRequest,
                 context: ServerContext) async throws -> Etcdserverpb_AuthUserGetResponse {
        try await answering {
            let user = try await server.store.authUser(request.name)
            var message = Etcdserverpb_AuthUserGetResponse()
            message.header = server.header()
            message.roles = user.roles
            return message
        }
    }

    func userList(request: Etcdserverpb_AuthUserListRequest,
                  context: ServerContext) async throws -> Etcdserverpb_AuthUserListResponse {
        try await answering {
            let users = try await server.store.authUsers()
            var message = Etcdserverpb_AuthUserListResponse()
            message.header = server.header()
            message.users = users.map(\.name)
            return message
        }
    }

    func userDelete(request: Etcdserverpb_AuthUserDeleteRequest,
                    context: ServerContext) async throws -> Etcdserverpb_AuthUserDeleteResponse {
        try await answering { try await userDelete(request) }
    }

    func userDelete(_ request: Etcdserverpb_AuthUserDeleteRequest) async throws -> Etcdserverpb_AuthUserDeleteResponse {
        try await change(.userDelete, request) { .userDelete(name: request.name) }
    }

    func userChangePassword(request: Etcdserverpb_AuthUserChangePasswordRequest,
                            context: ServerContext) async throws -> Etcdserverpb_AuthUserChangePasswordResponse {
        try await answering { try await userChangePassword(request) }
    }

    func userChangePassword(
        _ request: Etcdserverpb_AuthUserChangePasswordRequest
    ) async throws -> Etcdserverpb_AuthUserChangePasswordResponse {
        try await change(.userChangePassword, request) {
            .userChangePassword(name: request.name, passwordHash: try passwordHash(request.password, request.hashedPassword))
        }
    }

    func userGrantRole(request: Etcdserverpb_AuthUserGrantRoleRequest,
                       context: ServerContext) async throws -> Etcdserverpb_AuthUserGrantRoleResponse {
        try await answering { try await userGrantRole(request) }
    }

    func userGrantRole(_ request: Etcdserverpb_AuthUserGrantRoleRequest) async throws -> Etcdserverpb_AuthUserGrantRoleResponse {
        try await change(.userGrantRole, request) { .userGrantRole(user: request.user, role: request.role) }
    }

    func userRevokeRole(request: Etcdserverpb_AuthUserRevokeRoleRequest,
                        context: ServerContext) async throws -> Etcdserverpb_AuthUserRevokeRoleResponse {
        try await answering { try await userRevokeRole(request) }
    }

    func userRevokeRole(
        _ request: Etcdserverpb_AuthUserRevokeRoleRequest
    ) async throws -> Etcdserverpb_AuthUserRevokeRoleResponse {
        try await change(.userRevokeRole, request) { .userRevokeRole(user: request.name, role: request.role) }
    }

    // MARK: Roles

    func roleAdd(request: Etcdserverpb_AuthRoleAddRequest,
                 context: ServerContext) async throws -> Etcdserverpb_AuthRoleAddResponse {
        try await answering { try await roleAdd(request) }
    }

    func roleAdd(_ request: Etcdserverpb_AuthRoleAddRequest) async throws -> Etcdserverpb_AuthRoleAddResponse {
        try await change(.roleAdd, request) { .roleAdd(name: request.name) }
    }

    func roleGet(request: Etcdserverpb_AuthRoleGetRequest,
                 context: ServerContext) async throws -> Etcdserverpb_AuthRoleGetResponse {
        try await answering {
            let role = try await server.store.authRole(request.role)
            var message = Etcdserverpb_AuthRoleGetResponse()
            message.header = server.header()
            message.perm = role.permissions.map(Authpb_Permission.init)
            return message
        }
    }

    func roleList(request: Etcdserverpb_AuthRoleListRequest,
                  context: ServerContext) async throws -> Etcdserverpb_AuthRoleListResponse {
        try await answering {
            let roles = try await server.store.authRoles()
            var message = Etcdserverpb_AuthRoleListResponse()
            message.header = server.header()
            message.roles = roles.map(\.name)
            return message
        }
    }

    func roleDelete(request: Etcdserverpb_AuthRoleDeleteRequest,
                    context: ServerContext) async throws -> Etcdserverpb_AuthRoleDeleteResponse {
        try await answering { try await roleDelete(request) }
    }

    func roleDelete(_ request: Etcdserverpb_AuthRoleDeleteRequest) async throws -> Etcdserverpb_AuthRoleDeleteResponse {
        try await change(.roleDelete, request) { .roleDelete(name: request.role) }
    }

    func roleGrantPermission(request: Etcdserverpb_AuthRoleGrantPermissionRequest,
                             context: ServerContext) async throws -> Etcdserverpb_AuthRoleGrantPermissionResponse {
        try await answering { try await roleGrantPermission(request) }
    }

    func roleGrantPermission(
        _ request: Etcdserverpb_AuthRoleGrantPermissionRequest
    ) async throws -> Etcdserverpb_AuthRoleGrantPermissionResponse {
        try await change(.roleGrantPermission, request) {
            guard request.hasPerm else { throw APIError.invalidArgument("etcdserver: permission not given") }
            guard let type = PermissionType(rawValue: UInt8(clamping: request.perm.permType.rawValue)),
                  request.perm.permType.rawValue >= 0 else {
                throw APIError.invalidArgument("etcdserver: invalid permission type")
            }
            return .roleGrantPermission(role: request.name,
                                        permission: KeyPermission(key: Array(request.perm.key),
                                                                  rangeEnd: Array(request.perm.rangeEnd), type: type))
        }
    }

    func roleRevokePermission(request: Etcdserverpb_AuthRoleRevokePermissionRequest,
                              context: ServerContext) async throws -> Etcdserverpb_AuthRoleRevokePermissionResponse {
        try await answering { try await roleRevokePermission(request) }
    }

    func roleRevokePermission(
        _ request: Etcdserverpb_AuthRoleRevokePermissionRequest
    ) async throws -> Etcdserverpb_AuthRoleRevokePermissionResponse {
        try await change(.roleRevokePermission, request) {
            .roleRevokePermission(role: request.role, key: Array(request.key), rangeEnd: Array(request.rangeEnd))
        }
    }

    // MARK: Helpers

    /// Proposes the change `command` makes (on the leader; a follower forwards the request), answering with the
    /// header only, as every etcd auth change does.
    private func change<Response: ResponseWithHeader>(
        _ kind: ForwardedRequest.Kind, _ request: some SwiftProtobuf.Message,
        _ command: () throws -> AuthCommand
    ) async throws -> Response {
        try await server.servedByLeader(kind, request, waitForRevision: false) {
            let applied = try await server.store.changeAuth(try command())
            var message = Response()
            message.header = server.header(revision: applied.revision)
            return message
        }
    }

    /// etcd 3.5's clients may send a bcrypt hash instead of the password; this server keeps scrypt hashes only.
    private func passwordHash(_ password: String, _ clientHash: String) throws -> [UInt8] {
        guard clientHash.isEmpty else {
            throw APIError.invalidArgument("etcdserver: hashed passwords are not supported; send the password")
        }
        return try server.passwordHashing.hash(password)
    }
}

extension Authpb_Permission {
    init(_ permission: KeyPermission) {
        self.init()
        key = Data(permission.key)
        rangeEnd = Data(permission.rangeEnd)
        permType = Authpb_Permission.TypeEnum(rawValue: Int(permission.type.rawValue)) ?? .read
    }
}

extension Etcdserverpb_AuthEnableResponse: ResponseWithHeader {}
extension Etcdserverpb_AuthDisableResponse: ResponseWithHeader {}
extension Etcdserverpb_AuthenticateResponse: ResponseWithHeader {}
extension Etcdserverpb_AuthUserAddResponse: ResponseWithHeader {}
extension Etcdserverpb_AuthUserDeleteResponse: ResponseWithHeader {}
extension Etcdserverpb_AuthUserChangePasswordResponse: ResponseWithHeader {}
extension Etcdserverpb_AuthUserGrantRoleResponse: ResponseWithHeader {}
extension Etcdserverpb_AuthUserRevokeRoleResponse: ResponseWithHeader {}
extension Etcdserverpb_AuthRoleAddResponse: ResponseWithHeader {}
extension Etcdserverpb_AuthRoleDeleteResponse: ResponseWithHeader {}
extension Etcdserverpb_AuthRoleGrantPermissionResponse: ResponseWithHeader {}
extension Etcdserverpb_AuthRoleRevokePermissionResponse: ResponseWithHeader {}
