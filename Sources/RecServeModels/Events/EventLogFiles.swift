import Foundation
import Synchronization

/// The event log's files, for its one writer (not thread-safe): opening replays the newest
/// snapshot and the segments after it, cutting off a torn last record; then records are
/// appended to the newest segment. When a segment passes `segmentBytes` a new one starts, and a
/// snapshot of the histories (`snapshotSource`, taken at once) is written on a thread of its
/// own, so that appends do not wait for it; once it is on disk, retention removes the oldest
/// segments it covers while the log is over `retention.maxBytes` or they are older than
/// `retention.maxAgeSeconds`. One snapshot is written at a time: a roll-over while one is
/// being written takes none.
public final class EventLogFiles {
  public struct Retention: Sendable, Equatable {
    /// Bytes of segments kept at most (the newest segment is always kept); nil: no limit.
    public var maxBytes: Int?
    /// Segments whose last write is older than this are removed; nil: no limit.
    public var maxAgeSeconds: Double?

    public init(maxBytes: Int? = nil, maxAgeSeconds: Double? = nil) {
      self.maxBytes = maxBytes
      self.maxAgeSeconds = maxAgeSeconds
    }
  }

  struct Segment {
    var first: Int64
    var path: String
    var bytes: Int
  }

  public let directory: String
  public let segmentBytes: Int
  public let retention: Retention
  /// For a snapshot: called on the writer's thread at a roll-over, it takes what the snapshot
  /// holds at once (quickly: the appends wait) and returns the work that reads every user's
  /// history (each oldest first) from it, which runs on the snapshot's thread; nil: no
  /// snapshots.
  public var snapshotSource: (() -> @Sendable () -> [[StoredEvent]])?
  /// Writes a snapshot (histories, next sequence, folder) on the snapshot thread; tests may
  /// wrap it to hold a snapshot back.
  public var snapshotWriter: @Sendable ([[StoredEvent]], Int64, String) throws -> Void = {
    _ = try EventSnapshot.write($0, next: $1, directory: $2)
  }
  private var fd: Int32 = -1
  private var segments: [Segment] = []
  /// The sequence the next event gets.
  public private(set) var nextSequence: Int64 = 1
  /// Where the newest snapshot starts (1: none).
  public private(set) var snapshotNext: Int64 = 1
  /// What opening found and repaired, in words (nil when nothing).
  public private(set) var repaired: String?
  /// What the last roll-over did (snapshot, segments removed), in words, or its error.
  public private(set) var lastRollOver: String?
  private let snapshotJob = SnapshotJob()

  /// The snapshot being written on its own thread, and what came of it.
  private final class SnapshotJob: Sendable {
    /// Whether one is being written; its `next` once written, or why it failed.
    let state = Mutex<(running: Bool, result: Result<Int64, any Error>?)>((false, nil))
    let idle = DispatchGroup()

    /// Reads `histories` and writes them on a thread of its own, unless a snapshot is being
    /// written already.
    func start(
      _ histories: @escaping @Sendable () -> [[StoredEvent]], next: Int64, directory: String,
      writer: @escaping @Sendable ([[StoredEvent]], Int64, String) throws -> Void
    ) -> Bool {
      let started = state.withLock { state -> Bool in
        if state.running { return false }
        state.running = true
        return true
      }
      guard started else { return false }
      idle.enter()
      let thread = Thread { [self] in
        let result = Result { try writer(histories(), next, directory) }
        state.withLock { $0 = (false, result.map { next }) }
        idle.leave()
      }
      thread.name = "recserve-events-snapshot"
      thread.start()
      return true
    }

    /// The result of the snapshot written since the last call, if one was.
    func take() -> Result<Int64, any Error>? {
      state.withLock { state in
        defer { state.result = nil }
        return state.result
      }
    }
  }

  public var totalBytes: Int { segments.reduce(0) { $0 + $1.bytes } }
  public var segmentCount: Int { segments.count }

  /// Opens (creating) the log in `directory` and hands the histories of the newest snapshot
  /// (one call per user) and then every batch recorded after it, oldest first, to `replay`. A
  /// torn last record of the newest segment is cut off; damage anywhere else is a `DataError`
  /// naming the file and offset.
  public init(
    directory: String, segmentBytes: Int = 64 << 20, retention: Retention = Retention(),
    replay: ([StoredEvent]) throws -> Void
  ) throws {
    self.directory = directory
    self.segmentBytes = max(4096, segmentBytes)
    self.retention = retention
    do {
      try FileIO.makeDirectories(directory)
    } catch {
      throw DataError(file: directory, message: "cannot create the event log folder: \(error)")
    }
    if let newest = try EventSnapshot.snapshots(in: directory).last {
      let snapshot = try EventSnapshot.read(path: newest.path)
      for user in snapshot.users { try replay(user) }
      snapshotNext = snapshot.next
    }
    try replaySegments(replay)
    if segments.isEmpty {
      nextSequence = max(nextSequence, snapshotNext)
      try startSegment()
    }
  }

  deinit {
    if fd >= 0 { close(fd) }
  }

  private func replaySegments(_ replay: ([StoredEvent]) throws -> Void) throws {
    let found = try EventLogFormat.segments(in: directory)
    if let first = found.first?.first, first > snapshotNext {
      throw DataError(
        file: found[0].path,
        message:
          "the log starts at sequence \(first), but \(snapshotNext > 1 ? "the newest snapshot ends at \(snapshotNext - 1)" : "there is no snapshot of the events before it"): segments are missing"
      )
    }
    for (k, segment) in found.enumerated() {
      let last = k == found.count - 1
      if k > 0 && segment.first != nextSequence {
        throw DataError(
          file: segment.path,
          message:
            "starts at sequence \(segment.first) but the log before it ends at \(nextSequence - 1)")
      }
      // A segment the snapshot covers whole is not read.
      if !last && found[k + 1].first <= snapshotNext {
        segments.append(
          Segment(first: segment.first, path: segment.path, bytes: fileSize(segment.path)))
        nextSequence = found[k + 1].first
        continue
      }
      let scan = try EventLogFormat.scan(path: segment.path, expectedFirst: segment.first)
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
        if Glibc.truncate(segment.path, off_t(scan.validBytes)) != 0 {
          throw FileError(path: segment.path, code: errno, operation: "truncate")
        }
      }
      nextSequence = segment.first
      for batch in scan.batches {
        let fresh = batch.filter { $0.sequence >= snapshotNext }
        if !fresh.isEmpty { try replay(fresh) }
        nextSequence += Int64(batch.count)
      }
      segments.append(Segment(first: segment.first, path: segment.path, bytes: scan.validBytes))
      if last {
        try openSegment(path: segment.path, create: scan.validBytes < EventLogFormat.magic.count)
        segments[segments.count - 1].bytes = max(scan.validBytes, EventLogFormat.magic.count)
      }
    }
  }

  private func fileSize(_ path: String) -> Int {
    var info = stat()
    return stat(path, &info) == 0 ? Int(info.st_size) : 0
  }

  private func openSegment(path: String, create: Bool) throws {
    if fd >= 0 { close(fd) }
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    if fd < 0 { throw FileError(path: path, code: errno, operation: "open for appending") }
    if create {
      _ = ftruncate(fd, 0)
      try EventLogFormat.magic.withUnsafeBytes {
        try FileIO.writeAll(fd, $0, path: path, operation: "write")
      }
      if fsync(fd) != 0 { throw FileError(path: path, code: errno, operation: "fsync") }
      FileIO.fsyncDirectory(directory)
    }
  }

  /// A new segment starting at `nextSequence`.
  private func startSegment() throws {
    if fd >= 0, let current = segments.last, fsync(fd) != 0 {
      throw FileError(path: current.path, code: errno, operation: "fsync")
    }
    let path = directory + "/" + EventLogFormat.segmentName(firstSequence: nextSequence)
    try openSegment(path: path, create: true)
    segments.append(Segment(first: nextSequence, path: path, bytes: EventLogFormat.magic.count))
  }

  /// Writes `records` (encoded by `EventLogFormat.appendRecord` from `nextSequence` on, `count`
  /// events in all) to the newest segment, after rolling over to a new one when it is full.
  /// Not synced: the bytes are in the kernel (they survive the process, not the machine) until
  /// `sync`. A failed write cuts the segment back, so no partial record stays.
  public func write(_ records: [UInt8], events count: Int) throws {
    if segments[segments.count - 1].bytes >= segmentBytes {
      try rollOver()
    } else {
      absorbSnapshot()
    }
    let before = segments[segments.count - 1].bytes
    do {
      try records.withUnsafeBytes {
        try FileIO.writeAll(fd, $0, path: segments[segments.count - 1].path, operation: "append")
      }
    } catch {
      _ = ftruncate(fd, off_t(before))
      throw error
    }
    segments[segments.count - 1].bytes += records.count
    nextSequence += Int64(count)
  }

  /// A new segment, and a snapshot of the histories as they are now, written on its own thread.
  private func rollOver() throws {
    try startSegment()
    absorbSnapshot()
    guard let snapshotSource else { return }
    let histories = snapshotSource()
    if !snapshotJob.start(
      histories, next: nextSequence, directory: directory, writer: snapshotWriter)
    {
      lastRollOver =
        "no snapshot at sequence \(nextSequence): the previous one is still being written"
    }
  }

  /// Takes in a snapshot written since the last call: retention may now remove what it covers.
  /// A failed snapshot leaves every segment in place (reported in `lastRollOver`), so nothing is
  /// lost.
  private func absorbSnapshot() {
    switch snapshotJob.take() {
    case nil:
      return
    case .failure(let error):
      lastRollOver = "snapshot failed, no segment removed: \(error)"
    case .success(let next):
      snapshotNext = next
      let removed = applyRetention()
      lastRollOver =
        "snapshot before sequence \(next)"
        + (removed > 0 ? "; \(removed) old segments removed by retention" : "")
    }
  }

  /// Waits for the snapshot being written, if any, and takes it in (before closing).
  public func finishSnapshot() {
    snapshotJob.idle.wait()
    absorbSnapshot()
  }

  /// Removes the oldest segments the snapshot covers while over the limits; returns how many.
  private func applyRetention() -> Int {
    var removed = 0
    let now = Date().timeIntervalSince1970
    while segments.count > 1, segments[1].first <= snapshotNext {
      let oldest = segments[0]
      let overSize = retention.maxBytes.map { totalBytes > $0 } ?? false
      var info = stat()
      let age = stat(oldest.path, &info) == 0 ? now - Double(info.st_mtim.tv_sec) : 0
      let overAge = retention.maxAgeSeconds.map { age > $0 } ?? false
      guard overSize || overAge else { break }
      if unlink(oldest.path) != 0 && errno != ENOENT { break }
      segments.removeFirst()
      removed += 1
    }
    if removed > 0 { FileIO.fsyncDirectory(directory) }
    return removed
  }

  /// Makes what was written durable.
  public func sync() throws {
    if fdatasync(fd) != 0 {
      throw FileError(path: segments[segments.count - 1].path, code: errno, operation: "fsync")
    }
  }
}
