extension ConfigChange {
    /// The entry payload of this change: a kind byte then the member ID, big-endian.
    public var encoded: [UInt8] {
        let kind: UInt8
        switch self {
        case .addVoter: kind = 1
        case .addLearner: kind = 2
        case .promoteLearner: kind = 3
        case .removeMember: kind = 4
        }
        var bytes: [UInt8] = [kind]
        bytes.reserveCapacity(9)
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: nodeID >> UInt64(shift))) }
        return bytes
    }

    /// Decodes a payload written by ``encoded``; nil when it is not one.
    public init?(encoded bytes: [UInt8]) {
        guard bytes.count == 9 else { return nil }
        var id: NodeID = 0
        for byte in bytes[1...] { id = id << 8 | NodeID(byte) }
        guard id != 0 else { return nil }
        switch bytes[0] {
        case 1: self = .addVoter(id)
        case 2: self = .addLearner(id)
        case 3: self = .promoteLearner(id)
        case 4: self = .removeMember(id)
        default: return nil
        }
    }
}
