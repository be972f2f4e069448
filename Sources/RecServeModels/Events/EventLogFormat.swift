import Foundation

/// One event as the event log keeps it: user `user` did `type` to `item` (value `value`) at
/// `timestampMs` (milliseconds since 1970 UTC); `sequence` numbers events in the order the log
/// recorded them, from 1.
public struct StoredEvent: Sendable, Equatable {
  public var sequence: Int64
  public var user: String
  public var item: String
  public var type: String
  public var value: Float
  public var timestampMs: Int64

  public init(
    sequence: Int64 = 0, user: String, item: String, type: String, value: Float,
    timestampMs: Int64
  ) {
    self.sequence = sequence
    self.user = user
    self.item = item
    self.type = type
    self.value = value
    self.timestampMs = timestampMs
  }
}

/// The event log's files: a folder of segments `events-<first sequence, 20 digits>.log`, each
/// the 8-byte magic `RSEVLOG1` and then records. A record is one acknowledged batch, all or
/// nothing: `u32 length, u32 CRC-32C of the payload, payload`, little-endian; the payload is
/// `u64 first sequence, u32 count`, then per event `i64 timestamp_ms, f32 value` and the
/// user, item and type as `u32 byte count + UTF-8`. A crash can leave only the last record
/// of the last segment torn (short, or failing its CRC): it was never acknowledged, and
/// reading cuts it off. A bad record anywhere else is damage, reported with file and offset.
public enum EventLogFormat {
  public static let magic: [UInt8] = Array("RSEVLOG1".utf8)
  /// The most bytes one record may hold (a batch of 10,000 events of 1 KiB ids fits).
  public static let maxRecordBytes = 64 << 20

  public static func segmentName(firstSequence: Int64) -> String {
    let digits = String(firstSequence)
    return "events-" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".log"
  }

  /// The first sequence a segment's file name gives, or nil for a name that is not a segment.
  public static func firstSequence(ofSegment name: String) -> Int64? {
    guard name.hasPrefix("events-"), name.hasSuffix(".log") else { return nil }
    let digits = name.dropFirst(7).dropLast(4)
    guard digits.count == 20, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else {
      return nil
    }
    return Int64(digits)
  }

  /// The segments in `directory`, oldest first, as (first sequence, path).
  public static func segments(in directory: String) throws -> [(first: Int64, path: String)] {
    try FileIO.listDirectory(directory).compactMap { name in
      firstSequence(ofSegment: name).map { ($0, directory + "/" + name) }
    }.sorted { $0.first < $1.first }
  }

  /// Appends the record of `events` (numbered from `first`) to `out`.
  public static func appendRecord(
    _ events: some Collection<StoredEvent>, first: Int64, to out: inout [UInt8]
  ) {
    framed(&out) { out in
      put(UInt64(bitPattern: first), &out)
      put(UInt32(events.count), &out)
      for event in events {
        put(UInt64(bitPattern: event.timestampMs), &out)
        put(event.value.bitPattern, &out)
        putTexts(event, &out)
      }
    }
  }

  /// Appends a record whose payload `payload` writes: the `u32 length, u32 CRC-32C` header
  /// (the log's, the snapshot's and the spill file's framing), then the payload.
  static func framed(_ out: inout [UInt8], _ payload: (inout [UInt8]) -> Void) {
    let start = out.count
    out.append(contentsOf: [UInt8](repeating: 0, count: 8))
    payload(&out)
    let length = out.count - start - 8
    let crc = out.withUnsafeBytes {
      CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(start + 8)...]))
    }
    withUnsafeBytes(of: UInt32(length).littleEndian) {
      out.replaceSubrange(start..<start + 4, with: $0)
    }
    withUnsafeBytes(of: crc.littleEndian) { out.replaceSubrange(start + 4..<start + 8, with: $0) }
  }

  /// Whether the payload `body` of the record whose header starts at `header` matches the
  /// CRC-32C the header gives.
  static func checksumHolds(_ b: [UInt8], header: Int, body: Range<Int>) -> Bool {
    let crc = b.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[body])) }
    return crc == read32(b, header + 4)
  }

  /// An event's user, item and type, each `u32 byte count + UTF-8`.
  static func putTexts(_ event: StoredEvent, _ out: inout [UInt8]) {
    for text in [event.user, event.item, event.type] {
      put(UInt32(text.utf8.count), &out)
      out.append(contentsOf: text.utf8)
    }
  }

  @inline(__always)
  static func put<T: FixedWidthInteger>(_ value: T, _ out: inout [UInt8]) {
    withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
  }

  /// What reading one segment found.
  public struct SegmentScan: Sendable {
    /// The batches, in order.
    public var batches: [[StoredEvent]] = []
    /// Bytes of whole, valid records (with the magic): where the next record goes.
    public var validBytes = 0
    /// Why reading stopped before the end of the file (a torn or damaged record), if it did.
    public var stoppedBecause: String?
    public var fileBytes = 0
  }

  /// Reads the segment at `path`. Stops at the first record that is short or fails its CRC
  /// (`stoppedBecause` says which, with the offset); a record whose CRC holds but whose payload
  /// does not parse is a `DataError` (it was written wrong, not torn).
  public static func scan(path: String, expectedFirst: Int64? = nil) throws -> SegmentScan {
    let bytes: [UInt8]
    do {
      bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    } catch {
      throw DataError(file: path, message: "cannot read: \(error.localizedDescription)")
    }
    var scan = SegmentScan()
    scan.fileBytes = bytes.count
    if bytes.count < magic.count {
      scan.stoppedBecause = "the file is shorter than its header (\(bytes.count) bytes)"
      return scan
    }
    guard Array(bytes[0..<magic.count]) == magic else {
      throw DataError(file: path, message: "not an event log segment (no RSEVLOG1 header)")
    }
    var offset = magic.count
    scan.validBytes = offset
    var next = expectedFirst
    while offset < bytes.count {
      guard bytes.count - offset >= 8 else {
        scan.stoppedBecause = "a record header is cut short at byte \(offset)"
        break
      }
      let length = Int(read32(bytes, offset))
      guard length <= maxRecordBytes, length <= bytes.count - offset - 8 else {
        scan.stoppedBecause =
          "the record at byte \(offset) is cut short (\(length) bytes announced)"
        break
      }
      let body = offset + 8..<offset + 8 + length
      guard checksumHolds(bytes, header: offset, body: body) else {
        scan.stoppedBecause = "the record at byte \(offset) fails its checksum"
        break
      }
      let batch = try parsePayload(bytes, body, file: path, offset: offset)
      if let first = batch.first?.sequence, let expected = next, first != expected {
        throw DataError(
          file: path,
          message: "the record at byte \(offset) starts at sequence \(first), expected \(expected)")
      }
      next = (batch.last?.sequence).map { $0 + 1 } ?? next
      scan.batches.append(batch)
      offset = body.upperBound
      scan.validBytes = offset
    }
    return scan
  }

  static func read32(_ b: [UInt8], _ at: Int) -> UInt32 {
    UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
  }

  static func read64(_ b: [UInt8], _ at: Int) -> UInt64 {
    UInt64(read32(b, at)) | UInt64(read32(b, at + 4)) << 32
  }

  static func parsePayload(_ b: [UInt8], _ body: Range<Int>, file: String, offset: Int) throws
    -> [StoredEvent]
  {
    func bad(_ m: String) -> DataError {
      DataError(file: file, message: "the record at byte \(offset): \(m)")
    }
    var at = body.lowerBound
    func need(_ n: Int) throws {
      if n > body.upperBound - at { throw bad("its payload ends early") }
    }
    try need(12)
    let first = Int64(bitPattern: read64(b, at))
    let count = Int(read32(b, at + 8))
    at += 12
    if count > (body.count - 12) / 24 { throw bad("it claims \(count) events") }
    var events: [StoredEvent] = []
    events.reserveCapacity(count)
    for k in 0..<count {
      try need(12)
      let timestamp = Int64(bitPattern: read64(b, at))
      let value = Float(bitPattern: read32(b, at + 8))
      at += 12
      var texts: [String] = []
      for _ in 0..<3 {
        try need(4)
        let n = Int(read32(b, at))
        at += 4
        try need(n)
        texts.append(String(decoding: b[at..<at + n], as: UTF8.self))
        at += n
      }
      events.append(
        StoredEvent(
          sequence: first + Int64(k), user: texts[0], item: texts[1], type: texts[2],
          value: value, timestampMs: timestamp))
    }
    if at != body.upperBound { throw bad("\(body.upperBound - at) bytes follow its events") }
    return events
  }

  /// Every event of the log in `directory`, oldest first (a torn last record left out), for
  /// training: the segments, after the events of the newest snapshot from before the oldest
  /// segment (retention removed the segments that held them; a snapshot keeps each user's
  /// latest). Damage other than a torn tail is a `DataError` naming the file and offset.
  public static func readAll(directory: String) throws -> [StoredEvent] {
    guard FileIO.isDirectory(directory) else {
      throw DataError(file: directory, message: "no such event log folder")
    }
    let segments = try segments(in: directory)
    var events: [StoredEvent] = []
    let oldest = segments.first?.first ?? .max
    if oldest > 1, let newest = try EventSnapshot.snapshots(in: directory).last {
      let older = try EventSnapshot.read(path: newest.path).users.joined().filter {
        $0.sequence < oldest
      }
      events = older.sorted { $0.sequence < $1.sequence }
    }
    for (k, segment) in segments.enumerated() {
      let scan = try scan(path: segment.path, expectedFirst: segment.first)
      if let why = scan.stoppedBecause, k < segments.count - 1 {
        throw DataError(file: segment.path, message: "\(why), and later segments follow")
      }
      for batch in scan.batches { events.append(contentsOf: batch) }
    }
    return events
  }
}

/// CRC-32C (Castagnoli), the checksum of iSCSI, ext4 and LevelDB's logs.
public enum CRC32C {
  static let table: [UInt32] = (0..<256).map { n in
    var c = UInt32(n)
    for _ in 0..<8 { c = c & 1 != 0 ? 0x82F6_3B78 ^ (c >> 1) : c >> 1 }
    return c
  }

  public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    table.withUnsafeBufferPointer { t in
      for byte in bytes { c = t[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
    }
    return c ^ 0xFFFF_FFFF
  }

  public static func checksum(_ bytes: [UInt8]) -> UInt32 {
    bytes.withUnsafeBytes { checksum($0) }
  }
}
