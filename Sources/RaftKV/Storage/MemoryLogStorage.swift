import Foundation

/// A ``DurableLogStorage`` in memory, with the same contract as the SQLite one: for tests, simulations and
/// embedders that want a throwaway node. Everything saved is considered durable.
public final class MemoryLogStorage: DurableLogStorage, @unchecked Sendable {
    public private(set) var hardState = HardState()
    public private(set) var snapshotMetadata = SnapshotMetadata()
    /// Entries after `boundary.index`.
    private var log: [Entry] = []
    /// The compacted prefix ends here; its last term is still known.
    private var boundary: (index: LogIndex, term: Term) = (0, 0)
    public private(set) var snapshotBytes: [UInt8] = []
    private var staged: [UInt8] = []
    private var localSnapshots: [URL: [UInt8]] = [:]

    public init() {}

    public var firstIndex: LogIndex { boundary.index + 1 }
    public var lastIndex: LogIndex { boundary.index + LogIndex(log.count) }

    public func term(at index: LogIndex) -> Term? {
        if index == boundary.index { return boundary.term }
        guard index > boundary.index, index <= lastIndex else { return nil }
        return log[Int(index - boundary.index - 1)].term
    }

    public func entries(in range: Range<LogIndex>, maxBytes: Int) -> [Entry] {
        precondition(range.lowerBound >= firstIndex && range.upperBound <= lastIndex + 1, "entries \(range) outside \(firstIndex)...\(lastIndex)")
        var result: [Entry] = []
        var bytes = 0
        for index in range {
            let entry = log[Int(index - boundary.index - 1)]
            if !result.isEmpty && bytes + entry.sizeBytes > maxBytes { break }
            bytes += entry.sizeBytes
            result.append(entry)
        }
        return result
    }

    public func snapshotData(offset: UInt64, maxBytes: Int) -> (data: [UInt8], isLast: Bool) {
        let start = Int(min(offset, UInt64(snapshotBytes.count)))
        let end = min(snapshotBytes.count, start + maxBytes)
        return (Array(snapshotBytes[start..<end]), end == snapshotBytes.count)
    }

    public func save(hardState newHardState: HardState?, entries: [Entry], sync: Bool) throws {
        if let first = entries.first {
            precondition(first.index > boundary.index && first.index <= lastIndex + 1, "append at \(first.index) outside \(firstIndex)...\(lastIndex + 1)")
            log.removeSubrange(Int(first.index - boundary.index - 1)...)
            for (offset, entry) in entries.enumerated() {
                precondition(entry.index == first.index + LogIndex(offset), "entries must be contiguous")
                log.append(entry)
            }
        }
        if let newHardState {
            precondition(newHardState.term >= hardState.term, "term went back from \(hardState.term) to \(newHardState.term)")
            hardState = newHardState
        }
        precondition(hardState.commit <= lastIndex || hardState.commit <= snapshotMetadata.index, "commit \(hardState.commit) past the log's end \(lastIndex)")
    }

    public func stageSnapshotChunk(_ chunk: SnapshotChunk) throws {
        if chunk.offset == 0 { staged = [] }
        guard chunk.offset == UInt64(staged.count) else {
            throw RaftError.corruptState("snapshot chunk at \(chunk.offset) does not continue the staged \(staged.count) bytes")
        }
        staged.append(contentsOf: chunk.data)
    }

    public func installStagedSnapshot(_ metadata: SnapshotMetadata) throws {
        if term(at: metadata.index) == metadata.term && metadata.index <= lastIndex {
            log.removeFirst(Int(metadata.index - boundary.index))
        } else {
            log = []
        }
        boundary = (metadata.index, metadata.term)
        snapshotMetadata = metadata
        snapshotBytes = staged
        staged = []
        hardState.commit = max(hardState.commit, metadata.index)
    }

    public func adoptLocalSnapshot(_ metadata: SnapshotMetadata, file: URL, retainEntries: UInt64) throws {
        precondition(metadata.index <= lastIndex && term(at: metadata.index) == metadata.term, "snapshot at \(metadata.index) does not match the log")
        if let bytes = localSnapshots.removeValue(forKey: file) {
            snapshotBytes = bytes
        } else {
            snapshotBytes = try [UInt8](Data(contentsOf: file))
            try? FileManager.default.removeItem(at: file)
        }
        snapshotMetadata = metadata
        let compactTo = metadata.index > retainEntries ? metadata.index - retainEntries : 0
        if compactTo > boundary.index {
            let newBoundaryTerm = term(at: compactTo)!
            log.removeFirst(Int(compactTo - boundary.index))
            boundary = (compactTo, newBoundaryTerm)
        }
    }

    /// Records snapshot data written in memory, for ``adoptLocalSnapshot(_:file:retainEntries:)``.
    public func writeSnapshotData(_ bytes: [UInt8], to file: URL) { localSnapshots[file] = bytes }

    /// The current snapshot written out for a state machine to restore from; the driver needs a file.
    public var snapshotFile: URL? {
        guard snapshotMetadata.index > 0 else { return nil }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("raftkv-memory-snapshot-\(ObjectIdentifier(self).hashValue)-\(snapshotMetadata.index)")
        if !FileManager.default.fileExists(atPath: file.path) {
            FileManager.default.createFile(atPath: file.path, contents: Data(snapshotBytes))
        }
        return file
    }

    public func temporarySnapshotFile() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("raftkv-memory-snapshot-\(UUID().uuidString)")
    }
}
