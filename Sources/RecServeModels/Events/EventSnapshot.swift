import Foundation

/// A snapshot of the users' histories as they stood before sequence `next`: with it, starting
/// replays only the segments from `next` on, and retention may delete the segments before it.
/// File `snapshot-<next, 20 digits>.bin`: the magic `RSEVSNP1`, `u64 next`, then one record per
/// user framed as the log's (`u32 length, u32 CRC-32C, payload`), the payload `u32 count` and
/// per event `u64 sequence, i64 timestamp_ms, f32 value` and user, item, type as `u32 byte
/// count + UTF-8`; last, an empty record (count 0) marking the file complete. Written to a
/// temporary name, synced and renamed, so a snapshot file is whole or absent.
public enum EventSnapshot {
  public static let magic: [UInt8] = Array("RSEVSNP1".utf8)

  public static func fileName(next: Int64) -> String {
    let digits = String(next)
    return "snapshot-" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".bin"
  }

  /// The snapshots in `directory`, oldest first, as (next, path).
  public static func snapshots(in directory: String) throws -> [(next: Int64, path: String)] {
    try FileIO.listDirectory(directory).compactMap { name -> (Int64, String)? in
      guard name.hasPrefix("snapshot-"), name.hasSuffix(".bin") else { return nil }
      let digits = name.dropFirst(9).dropLast(4)
      guard digits.count == 20, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
        let next = Int64(digits)
      else { return nil }
      return (next, directory + "/" + name)
    }.sorted { $0.0 < $1.0 }
  }

  /// Writes the snapshot of `histories` (each one user's events, oldest first) before `next`,
  /// then removes older snapshots. Returns its path.
  @discardableResult
  public static func write(_ histories: [[StoredEvent]], next: Int64, directory: String) throws
    -> String
  {
    var out = magic
    EventLogFormat.put(UInt64(bitPattern: next), &out)
    for events in histories where !events.isEmpty { appendRecord(events, to: &out) }
    appendRecord([], to: &out)
    let path = directory + "/" + fileName(next: next)
    let temporary = directory + "/.snapshot-writing.tmp"
    try FileIO.writeSynced(out, to: temporary)
    if rename(temporary, path) != 0 {
      let code = errno
      unlink(temporary)
      throw FileError(path: path, code: code, operation: "rename")
    }
    FileIO.fsyncDirectory(directory)
    for older in try snapshots(in: directory) where older.next < next { unlink(older.path) }
    return path
  }

  static func appendRecord(_ events: [StoredEvent], to out: inout [UInt8]) {
    EventLogFormat.framed(&out) { out in
      EventLogFormat.put(UInt32(events.count), &out)
      for event in events {
        EventLogFormat.put(UInt64(bitPattern: event.sequence), &out)
        EventLogFormat.put(UInt64(bitPattern: event.timestampMs), &out)
        EventLogFormat.put(event.value.bitPattern, &out)
        EventLogFormat.putTexts(event, &out)
      }
    }
  }

  /// The snapshot at `path`: `next` and each user's events. Any damage (it is written whole or
  /// not at all) is a `DataError` naming the file and offset.
  public static func read(path: String) throws -> (next: Int64, users: [[StoredEvent]]) {
    let b: [UInt8]
    do {
      b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    } catch {
      throw DataError(file: path, message: "cannot read: \(error.localizedDescription)")
    }
    func bad(_ at: Int, _ m: String) -> DataError {
      DataError(
        file: path,
        message:
          "\(m) at byte \(at): the snapshot is damaged (move it aside to replay the segments instead, when the log still has them all)"
      )
    }
    guard b.count >= 16, Array(b[0..<8]) == magic else { throw bad(0, "no RSEVSNP1 header") }
    let next = Int64(bitPattern: EventLogFormat.read64(b, 8))
    var users: [[StoredEvent]] = []
    var offset = 16
    while true {
      guard b.count - offset >= 8 else { throw bad(offset, "the file ends before its last record") }
      let length = Int(EventLogFormat.read32(b, offset))
      guard length >= 4, length <= b.count - offset - 8 else {
        throw bad(offset, "a record is cut short")
      }
      let body = offset + 8..<offset + 8 + length
      guard EventLogFormat.checksumHolds(b, header: offset, body: body) else {
        throw bad(offset, "a record fails its checksum")
      }
      let events = try parse(b, body) ?? { throw bad(offset, "a record does not parse") }()
      if events.isEmpty { break }
      users.append(events)
      offset = body.upperBound
    }
    return (next, users)
  }

  static func parse(_ b: [UInt8], _ body: Range<Int>) -> [StoredEvent]? {
    var at = body.lowerBound
    let count = Int(EventLogFormat.read32(b, at))
    at += 4
    guard count <= (body.count - 4) / 32 else { return nil }
    var events: [StoredEvent] = []
    for _ in 0..<count {
      guard body.upperBound - at >= 20 else { return nil }
      let sequence = Int64(bitPattern: EventLogFormat.read64(b, at))
      let timestamp = Int64(bitPattern: EventLogFormat.read64(b, at + 8))
      let value = Float(bitPattern: EventLogFormat.read32(b, at + 16))
      at += 20
      var texts: [String] = []
      for _ in 0..<3 {
        guard body.upperBound - at >= 4 else { return nil }
        let n = Int(EventLogFormat.read32(b, at))
        at += 4
        guard body.upperBound - at >= n else { return nil }
        texts.append(String(decoding: b[at..<at + n], as: UTF8.self))
        at += n
      }
      events.append(
        StoredEvent(
          sequence: sequence, user: texts[0], item: texts[1], type: texts[2], value: value,
          timestampMs: timestamp))
    }
    return at == body.upperBound ? events : nil
  }
}
