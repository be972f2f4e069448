import Foundation
import RecServeModels
import Synchronization

/// The server's events: a durable log (`EventLogFiles`) written by one thread with group
/// commit, and every user's latest events in memory (`UserHistories`). An append is answered
/// once its batch is in the log (synced, with `Sync.always`) and in the histories, so a Rank
/// issued after the answer sees it.
public final class EventStore: Sendable {
  public enum Sync: Sendable, Equatable, CustomStringConvertible {
    /// fsync before answering: an acknowledged event survives a power cut.
    case always
    /// Answer once written (it survives the process being killed), fsync at most this often.
    case intervalMilliseconds(Int)

    /// "always", or "interval-ms=N" (also "interval-ms:N").
    public init?(_ text: String) {
      if text == "always" {
        self = .always
        return
      }
      for prefix in ["interval-ms=", "interval-ms:"] where text.hasPrefix(prefix) {
        guard let n = Int(text.dropFirst(prefix.count)), n >= 1, n <= 60_000 else { return nil }
        self = .intervalMilliseconds(n)
        return
      }
      return nil
    }

    public var description: String {
      switch self {
      case .always: return "always"
      case .intervalMilliseconds(let n): return "interval-ms=\(n)"
      }
    }
  }

  public struct Configuration: Sendable {
    public var directory: String
    public var sync: Sync = .always
    /// Events kept per user in memory.
    public var historyLength = 200
    public var memoryBytes = 512 << 20
    public var segmentBytes = 64 << 20
    /// Which old segments a roll-over removes (once a snapshot covers them).
    public var retention = EventLogFiles.Retention()
    /// Events waiting for the writer beyond which appends are refused (RESOURCE_EXHAUSTED).
    public var maxPendingEvents = 1_000_000
    public var types: Set<String> = EventStore.defaultTypes

    public init(directory: String) { self.directory = directory }
  }

  public static let defaultTypes: Set<String> = [
    "click", "view", "add_to_cart", "purchase", "like", "rating", "play",
  ]
  public static let maxBatch = 10_000
  public static let maxIdBytes = 1_024

  public let configuration: Configuration
  public let histories: UserHistories
  private let state: Mutex<State>
  private let wake = DispatchSemaphore(value: 0)
  private let stopped = DispatchSemaphore(value: 0)
  private let log: LogBox
  public let stats = Stats()
  /// What opening the log repaired, in words.
  public let repaired: String?
  /// Holds `events.lock` for the process's lifetime.
  private let lockFD: Int32

  /// Locks `directory/events.lock` (kept open: the lock goes with the process).
  private static func lock(_ directory: String) throws -> Int32 {
    let path = directory + "/events.lock"
    let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    if fd < 0 { throw FileError(path: path, code: errno, operation: "open") }
    if flock(fd, LOCK_EX | LOCK_NB) != 0 {
      Glibc.close(fd)
      throw DataError(
        file: path,
        message:
          "another process keeps its events in this folder (it holds the lock); one server per event log"
      )
    }
    return fd
  }

  /// Counters for metrics.
  public final class Stats: Sendable {
    public let events = Atomic<Int>(0)
    public let batches = Atomic<Int>(0)
    /// Group commits: writes of every batch waiting at once.
    public let commits = Atomic<Int>(0)
    public let syncs = Atomic<Int>(0)
    public let syncNanoseconds = Atomic<Int>(0)
    public let logBytes = Atomic<Int>(0)
    public let segments = Atomic<Int>(0)
    /// Upper bounds (seconds) of the fsync latency histogram's buckets, and the counts in each
    /// (not cumulative; the last one counts the rest).
    public static let syncBuckets: [Double] = [
      0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1,
    ]
    let syncCounts = Mutex([Int](repeating: 0, count: Stats.syncBuckets.count + 1))

    public var syncHistogram: [Int] { syncCounts.withLock { $0 } }

    func recordSync(nanoseconds: Int) {
      syncs.add(1, ordering: .relaxed)
      syncNanoseconds.add(nanoseconds, ordering: .relaxed)
      let seconds = Double(nanoseconds) / 1e9
      let bucket = Self.syncBuckets.firstIndex { seconds <= $0 } ?? Self.syncBuckets.count
      syncCounts.withLock { $0[bucket] += 1 }
    }
  }

  /// The log, touched by the writer thread only (and `init`).
  private final class LogBox: @unchecked Sendable {
    let files: EventLogFiles
    var lastSync = DispatchTime.now().uptimeNanoseconds
    var unsynced = false
    init(_ files: EventLogFiles) { self.files = files }
  }

  struct Pending {
    var events: [StoredEvent]
    var done: @Sendable (Result<ClosedRange<Int64>, any Error>) -> Void
  }

  struct State {
    var queue: [Pending] = []
    var queuedEvents = 0
    var stopping = false
    var failure: (any Error)?
  }

  /// Opens the log (replaying it into the histories) and starts the writer. One process at a
  /// time: a second one on the same folder is refused (`events.lock`).
  public init(configuration: Configuration) throws {
    self.configuration = configuration
    let directory = configuration.directory
    do {
      try FileManager.default.createDirectory(
        atPath: directory, withIntermediateDirectories: true)
    } catch {
      throw DataError(file: directory, message: "cannot create the event log folder: \(error)")
    }
    lockFD = try Self.lock(directory)
    // Spill files of a process that was killed.
    for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    where name.hasPrefix(".evicted-") && name.hasSuffix(".tmp") {
      unlink(directory + "/" + name)
    }
    let histories = UserHistories(
      length: configuration.historyLength, memoryBytes: configuration.memoryBytes,
      spillFile: try SpillFile(directory: directory))
    self.histories = histories
    let files = try EventLogFiles(
      directory: configuration.directory, segmentBytes: configuration.segmentBytes,
      retention: configuration.retention
    ) { histories.add($0) }
    files.snapshotSource = {
      let capture = histories.capture()
      return { histories.histories(of: capture, compactInto: try? SpillFile(directory: directory)) }
    }
    log = LogBox(files)
    repaired = files.repaired
    state = Mutex(State())
    stats.logBytes.store(files.totalBytes, ordering: .relaxed)
    stats.segments.store(files.segmentCount, ordering: .relaxed)
    let thread = Thread { [self] in writerLoop() }
    thread.name = "recserve-events"
    thread.start()
  }

  /// Queues `events` (checked already) for the log; `done` is called from the writer thread
  /// with their sequence numbers once they are recorded and in the histories, or with the
  /// error that kept them out (then none of them is recorded).
  public func append(
    _ events: [StoredEvent],
    done: @escaping @Sendable (Result<ClosedRange<Int64>, any Error>) -> Void
  ) {
    if events.isEmpty { return done(.failure(EventError.invalid("no events to append"))) }
    let refused: (any Error)? = state.withLock { state in
      if state.stopping { return EventError.unavailable("the server is shutting down") }
      if let failure = state.failure {
        return EventError.unavailable("the event log cannot be written: \(failure)")
      }
      if state.queuedEvents + events.count > configuration.maxPendingEvents {
        return EventError.busy(
          "\(state.queuedEvents) events are waiting for the log already; retry later")
      }
      state.queue.append(Pending(events: events, done: done))
      state.queuedEvents += events.count
      return nil
    }
    if let refused { return done(.failure(refused)) }
    wake.signal()
  }

  /// Appends and waits (tests, tools).
  public func appendAndWait(_ events: [StoredEvent]) throws -> ClosedRange<Int64> {
    let result = Mutex<Result<ClosedRange<Int64>, any Error>?>(nil)
    let signal = DispatchSemaphore(value: 0)
    append(events) { r in
      result.withLock { $0 = r }
      signal.signal()
    }
    signal.wait()
    return try result.withLock { $0! }.get()
  }

  /// Stops the writer after the queued batches.
  public func close() {
    let first = state.withLock { state -> Bool in
      defer { state.stopping = true }
      return !state.stopping
    }
    guard first else { return }
    wake.signal()
    stopped.wait()
    Glibc.close(lockFD)  // another store may open the folder now
  }

  private func writerLoop() {
    while true {
      let timeout: DispatchTime =
        log.unsynced ? .now() + .milliseconds(intervalMs) : .distantFuture
      _ = wake.wait(timeout: timeout)
      let (batches, stopping) = state.withLock { state in
        defer {
          state.queue.removeAll(keepingCapacity: true)
          state.queuedEvents = 0
        }
        return (state.queue, state.stopping)
      }
      if !batches.isEmpty { commit(batches) }
      if log.unsynced { syncIfDue(force: stopping) }
      if stopping && state.withLock({ $0.queue.isEmpty }) { break }
    }
    log.files.finishSnapshot()
    stopped.signal()
  }

  private var intervalMs: Int {
    if case .intervalMilliseconds(let n) = configuration.sync { return n }
    return 0
  }

  /// Writes the waiting batches as one write (and one fsync with `.always`), then applies and
  /// answers them.
  private func commit(_ batches: [Pending]) {
    var buffer: [UInt8] = []
    var numbered: [[StoredEvent]] = []
    var next = log.files.nextSequence
    for pending in batches {
      var events = pending.events
      for k in events.indices { events[k].sequence = next + Int64(k) }
      EventLogFormat.appendRecord(events, first: next, to: &buffer)
      next += Int64(events.count)
      numbered.append(events)
    }
    do {
      try log.files.write(buffer, events: numbered.reduce(0) { $0 + $1.count })
      log.unsynced = true
      if configuration.sync == .always { try sync() }
    } catch {
      state.withLock { $0.failure = error }
      for pending in batches { pending.done(.failure(EventError.unavailable("\(error)"))) }
      return
    }
    stats.logBytes.store(log.files.totalBytes, ordering: .relaxed)
    stats.segments.store(log.files.segmentCount, ordering: .relaxed)
    stats.commits.add(1, ordering: .relaxed)
    for (pending, events) in zip(batches, numbered) {
      histories.add(events)
      stats.events.add(events.count, ordering: .relaxed)
      stats.batches.add(1, ordering: .relaxed)
      pending.done(.success(events.first!.sequence...events.last!.sequence))
    }
  }

  private func syncIfDue(force: Bool) {
    let now = DispatchTime.now().uptimeNanoseconds
    guard force || now &- log.lastSync >= UInt64(intervalMs) * 1_000_000 else { return }
    do {
      try sync()
    } catch {
      state.withLock { $0.failure = error }
    }
  }

  private func sync() throws {
    let start = DispatchTime.now().uptimeNanoseconds
    try log.files.sync()
    let end = DispatchTime.now().uptimeNanoseconds
    log.lastSync = end
    log.unsynced = false
    stats.recordSync(nanoseconds: Int(end &- start))
  }
}

/// Why an append was refused.
public enum EventError: Error, CustomStringConvertible {
  case unavailable(String)
  case busy(String)
  case invalid(String)

  public var description: String {
    switch self {
    case .unavailable(let m), .busy(let m), .invalid(let m): return m
    }
  }
}
