// Written by hand (the generator replaces only *.pb.swift and *.grpc.swift): how etcd's Go side prints a gRPC
// status, which both the server (a watch's cancel reason) and etcdctl (its error lines) must reproduce.

public import GRPCCore

extension RPCError.Code {
    /// The name grpc-go gives this code (`codes.Code.String()`).
    public var goName: String {
        switch self {
        case .cancelled: "Canceled"
        case .unknown: "Unknown"
        case .invalidArgument: "InvalidArgument"
        case .deadlineExceeded: "DeadlineExceeded"
        case .notFound: "NotFound"
        case .alreadyExists: "AlreadyExists"
        case .permissionDenied: "PermissionDenied"
        case .resourceExhausted: "ResourceExhausted"
        case .failedPrecondition: "FailedPrecondition"
        case .aborted: "Aborted"
        case .outOfRange: "OutOfRange"
        case .unimplemented: "Unimplemented"
        case .internalError: "Internal"
        case .unavailable: "Unavailable"
        case .dataLoss: "DataLoss"
        case .unauthenticated: "Unauthenticated"
        default: "Unknown"
        }
    }
}

extension RPCError {
    /// grpc-go's status error text: `rpc error: code = NotFound desc = …`.
    public var goDescription: String {
        "rpc error: code = \(code.goName) desc = \(message)"
    }
}
