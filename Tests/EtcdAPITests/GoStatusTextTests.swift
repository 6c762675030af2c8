import EtcdAPI
import GRPCCore
import Testing

/// grpc-go's names for status codes (google.golang.org/grpc/codes, `Code.String()`), as etcd prints them.
@Suite("grpc-go status text")
struct GoStatusTextTests {
    @Test(arguments: [
        (RPCError.Code.cancelled, "Canceled"), (.unknown, "Unknown"), (.invalidArgument, "InvalidArgument"),
        (.deadlineExceeded, "DeadlineExceeded"), (.notFound, "NotFound"), (.alreadyExists, "AlreadyExists"),
        (.permissionDenied, "PermissionDenied"), (.resourceExhausted, "ResourceExhausted"),
        (.failedPrecondition, "FailedPrecondition"), (.aborted, "Aborted"), (.outOfRange, "OutOfRange"),
        (.unimplemented, "Unimplemented"), (.internalError, "Internal"), (.unavailable, "Unavailable"),
        (.dataLoss, "DataLoss"), (.unauthenticated, "Unauthenticated"),
    ])
    func codeNames(code: RPCError.Code, name: String) {
        #expect(code.goName == name)
    }

    @Test func statusText() {
        let error = RPCError(code: .failedPrecondition, message: "etcdserver: mvcc: required revision has been compacted")
        #expect(error.goDescription
            == "rpc error: code = FailedPrecondition desc = etcdserver: mvcc: required revision has been compacted")
    }
}
