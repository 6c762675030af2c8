/// Why bytes could not be decoded. Decoders never trap on bad input: peers and files may send anything.
public struct BinaryDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: String
    public var offset: Int

    public var description: String { "malformed encoding at byte \(offset): \(reason)" }
}

/// Appends primitives: LEB128 varints for unsigned integers, zigzag varints for signed ones, length-prefixed blobs.
public struct BinaryWriter {
    public var bytes: [UInt8] = []

    public init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    public mutating func byte(_ value: UInt8) { bytes.append(value) }
    public mutating func bool(_ value: Bool) { bytes.append(value ? 1 : 0) }

    public mutating func unsigned(_ value: UInt64) {
        var rest = value
        while rest >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    public mutating func signed(_ value: Int64) {
        unsigned(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    public mutating func blob(_ value: [UInt8]) {
        unsigned(UInt64(value.count))
        bytes.append(contentsOf: value)
    }
}

/// Reads what ``BinaryWriter`` wrote, checking every length against the bytes that remain.
public struct BinaryReader {
    public let bytes: [UInt8]
    public internal(set) var offset = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var isAtEnd: Bool { offset == bytes.count }
    public var remaining: Int { bytes.count - offset }

    public func failure(_ reason: String) -> BinaryDecodingError { BinaryDecodingError(reason: reason, offset: offset) }

    public mutating func byte() throws(BinaryDecodingError) -> UInt8 {
        guard offset < bytes.count else { throw failure("unexpected end") }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func bool() throws(BinaryDecodingError) -> Bool {
        switch try byte() {
        case 0: return false
        case 1: return true
        default: throw failure("invalid boolean")
        }
    }

    public mutating func unsigned() throws(BinaryDecodingError) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let next = try byte()
            guard shift < 64, !(shift == 63 && next > 1) else { throw failure("varint overflows 64 bits") }
            value |= UInt64(next & 0x7f) << shift
            if next & 0x80 == 0 { return value }
            shift += 7
        }
    }

    public mutating func signed() throws(BinaryDecodingError) -> Int64 {
        let raw = try unsigned()
        return Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    /// A count of items that each take at least `minimumBytesEach` bytes, so a forged count cannot make the
    /// decoder reserve more than the input could hold.
    public mutating func count(minimumBytesEach: Int) throws(BinaryDecodingError) -> Int {
        let value = try unsigned()
        guard value <= UInt64(remaining / max(1, minimumBytesEach)) else { throw failure("count \(value) exceeds the input") }
        return Int(value)
    }

    public mutating func blob() throws(BinaryDecodingError) -> [UInt8] {
        let length = try count(minimumBytesEach: 1)
        defer { offset += length }
        return Array(bytes[offset..<(offset + length)])
    }

    public func expectEnd() throws(BinaryDecodingError) {
        guard isAtEnd else { throw failure("\(remaining) trailing bytes") }
    }
}
