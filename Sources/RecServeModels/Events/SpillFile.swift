import Foundation
import Synchronization

/// Users' histories evicted from memory, one record each (`EventSnapshot`'s record format),
/// appended to a scratch file that lives as long as this object: the file is removed when the
/// last reference goes (a newer file took over its records) or the process ends. Not durable
/// and need not be: the log and the snapshots hold the same events, and a start rebuilds it.
public final class SpillFile: Sendable {
  public let path: String
  private let fd: Int32
  private let end = Mutex(0)

  /// A new, empty file in `directory`.
  public init(directory: String) throws {
    path = directory + "/.evicted-\(getpid())-\(UUID().uuidString.prefix(8)).tmp"
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    if fd < 0 { throw FileError(path: path, code: errno, operation: "create") }
  }

  deinit {
    close(fd)
    unlink(path)
  }

  /// Bytes written so far (live records and those another record replaced).
  public var bytes: Int { end.withLock { $0 } }

  /// Appends one user's events; returns where they are.
  public func write(_ events: [StoredEvent]) throws -> Range<Int> {
    try write(many: [events])[0]
  }

  /// Appends several users' events in one write; returns where each one's are.
  public func write(many histories: [[StoredEvent]]) throws -> [Range<Int>] {
    var records: [UInt8] = []
    var bounds: [Range<Int>] = []
    bounds.reserveCapacity(histories.count)
    for events in histories {
      let start = records.count
      EventSnapshot.appendRecord(events, to: &records)
      bounds.append(start..<records.count)
    }
    return try end.withLock { end in
      var done = 0
      while done < records.count {
        let n = records.withUnsafeBytes {
          pwrite(fd, $0.baseAddress! + done, $0.count - done, off_t(end + done))
        }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else {
          throw FileError(path: path, code: n < 0 ? errno : EIO, operation: "write")
        }
        done += n
      }
      defer { end += records.count }
      return bounds.map { (end + $0.lowerBound)..<(end + $0.upperBound) }
    }
  }

  /// The events of the record at `range`.
  public func read(_ range: Range<Int>) throws -> [StoredEvent] {
    var record = [UInt8](repeating: 0, count: range.count)
    var done = 0
    while done < range.count {
      let n = record.withUnsafeMutableBytes {
        pread(fd, $0.baseAddress! + done, range.count - done, off_t(range.lowerBound + done))
      }
      if n < 0 && errno == EINTR { continue }
      guard n > 0 else { throw FileError(path: path, code: n < 0 ? errno : EIO, operation: "read") }
      done += n
    }
    let body = 8..<record.count
    guard EventLogFormat.checksumHolds(record, header: 0, body: body),
      let events = EventSnapshot.parse(record, body)
    else {
      throw DataError(file: path, message: "the record at byte \(range.lowerBound) is damaged")
    }
    return events
  }
}
