import Foundation

FileHandle.standardError.write("etcdctl: not built yet (see the etcdctl issue)\n".data(using: .utf8)!)
exit(2)
