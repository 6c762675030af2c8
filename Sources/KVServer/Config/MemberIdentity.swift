import Crypto
import Foundation
import RaftKV

/// etcd's member and cluster IDs, computed the same way so that the same flags give the same IDs as etcd
/// (etcdserver/api/membership: `computeMemberID`, `genID`).
enum MemberIdentity {
    /// SHA-1 of the sorted peer URLs, joined, then the cluster token (and, for members added at runtime, the
    /// time in Unix seconds); the ID is the digest's first 8 bytes, big-endian.
    static func memberID(peerURLs: [String], clusterToken: String, unixTime: Int64? = nil) -> NodeID {
        var text = peerURLs.sorted().joined() + clusterToken
        if let unixTime { text += String(unixTime) }
        return firstEightBytes(Insecure.SHA1.hash(data: Array(text.utf8)))
    }

    /// SHA-1 of the sorted member IDs, each 8 bytes big-endian; the first 8 bytes of the digest.
    static func clusterID(memberIDs: [NodeID]) -> UInt64 {
        var bytes: [UInt8] = []
        for id in memberIDs.sorted() {
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: id >> UInt64(shift))) }
        }
        return firstEightBytes(Insecure.SHA1.hash(data: bytes))
    }

    private static func firstEightBytes(_ digest: Insecure.SHA1.Digest) -> UInt64 {
        var value: UInt64 = 0
        for byte in Array(digest).prefix(8) { value = value << 8 | UInt64(byte) }
        return value
    }
}
