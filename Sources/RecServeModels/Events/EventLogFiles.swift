import Foundation

/// The event log's segments on disk, for its one writer (not thread-safe): replays them when
/// opened, cutting off a torn last record, then appends records to the newest segment and
/// starts a new one when it passes `segmentBytes`.
public final class EventLogFiles {
  public let directory: String
  public let segmentBytes: Int
  private var fd: Int32 = -1
  private var segmentPath = ""
  private var segmentSize = 0
  /// The sequence the next event gets.
  public private(set) var nextSequence: Int64 = 1
  /// Bytes of every segment.
  public private(set) var totalBytes = 0
  public private(set) var segmentCount = 0
  /// What opening found and repaired, in words (nil when nothing).
  public private(set) var repaired: String?

  /// Opens (creating) the log in `directory` and hands every recorded batch, oldest first, to
  /// `replay`. A torn last record of the newest segment is cut off; damage anywhere else is a
  /// `DataError` naming the file and offset.
  public init(
    directory: String, segmentBytes: Int = 64 << 20, replay: ([StoredEvent]) throws -> Void
  ) throws {
    self.directory = directory
    self.segmentBytes = max(4096, segmentBytes)
    do {
      try FileIO.makeDirectories(directory)
    } catch {
      throw DataError(file: directory, message: "cannot create the event log folder: \(error)")
    }
    let segments = try EventLogFormat.segments(in: directory)
    for (k, segment) in segments.enumerated() {
      let scan = try EventLogFormat.scan(path: segment.path, expectedFirst: segment.first)
      let last = k == segments.count - 1
      if let why = scan.stoppedBecause {
        guard last else {
          throw DataError(
            file: segment.path,
            message:
              "\(why), and later segments follow: the log is damaged (move the damaged segment and those after it aside to start without them)"
          )
        }
        repaired =
          "\(segment.path): \(why); cut off at byte \(scan.validBytes) (an append a crash tore, never acknowledged)"
        try truncate(segment.path, to: max(scan.validBytes, 0))
      }
      if segment.first != nextSequence && !(k == 0 && nextSequence == 1) {
        throw DataError(
          file: segment.path,
          message:
            "starts at sequence \(segment.first) but the log before it ends at \(nextSequence - 1)")
      }
      nextSequence = segment.first
      for batch in scan.batches {
        try replay(batch)
        nextSequence += Int64(batch.count)
      }
      totalBytes += last ? max(scan.validBytes, EventLogFormat.magic.count) : scan.fileBytes
      if last {
        try openSegment(path: segment.path, create: scan.validBytes < EventLogFormat.magic.count)
      }
    }
    segmentCount = segments.count
    if segments.isEmpty { try startSegment() }
  }

  deinit {
    if fd >= 0 { close(fd) }
  }

  private func truncate(_ path: String, to size: Int) throws {
    if Glibc.truncate(path, off_t(size)) != 0 {
      throw FileError(path: path, code: errno, operation: "truncate")
    }
  }

  private func openSegment(path: String, create: Bool) throws {
    if fd >= 0 { close(fd) }
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    if fd < 0 { throw FileError(path: path, code: errno, operation: "open for appending") }
    segmentPath = path
    if create {
      _ = ftruncate(fd, 0)
      try EventLogFormat.magic.withUnsafeBytes {
        try FileIO.writeAll(fd, $0, path: path, operation: "write")
      }
      if fsync(fd) != 0 { throw FileError(path: path, code: errno, operation: "fsync") }
      FileIO.fsyncDirectory(directory)
    }
    segmentSize = Int(lseek(fd, 0, SEEK_END))
  }

  /// A new segment starting at `nextSequence`.
  private func startSegment() throws {
    let path = directory + "/" + EventLogFormat.segmentName(firstSequence: nextSequence)
    if fd >= 0, fsync(fd) != 0 {
      throw FileError(path: segmentPath, code: errno, operation: "fsync")
    }
    try openSegment(path: path, create: true)
    totalBytes += segmentSize
    segmentCount += 1
  }

  /// Writes `records` (encoded by `EventLogFormat.appendRecord` from `nextSequence` on, `count`
  /// events in all) to the newest segment, after starting a new one when it is full. Not synced:
  /// the bytes are in the kernel (they survive the process, not the machine) until `sync`. A
  /// failed write cuts the segment back, so no partial record stays.
  public func write(_ records: [UInt8], events count: Int) throws {
    if segmentSize >= segmentBytes { try startSegment() }
    let before = segmentSize
    do {
      try records.withUnsafeBytes {
        try FileIO.writeAll(fd, $0, path: segmentPath, operation: "append")
      }
    } catch {
      _ = ftruncate(fd, off_t(before))
      throw error
    }
    segmentSize += records.count
    totalBytes += records.count
    nextSequence += Int64(count)
  }

  /// Makes what was written durable.
  public func sync() throws {
    if fdatasync(fd) != 0 { throw FileError(path: segmentPath, code: errno, operation: "fsync") }
  }
}
