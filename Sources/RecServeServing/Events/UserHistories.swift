import Foundation
import RecServeModels
import Synchronization

/// The latest events of each user, kept to `length` per user and to `memoryBytes` in memory:
/// past the budget, the users whose latest event is oldest are evicted to a spill file on disk
/// (`SpillFile`), from which a read takes them (without bringing them back into memory) and the
/// next append for them brings them back. Sharded by user, so lookups by Rank and appends by
/// the log's writer rarely wait for each other.
public final class UserHistories: Sendable {
  public let length: Int
  public let memoryBytes: Int
  private static let shardCount = 64
  private let shards: [ShardBox]
  private let bytes = Atomic<Int>(0)
  private let evictedUsers = Atomic<Int>(0)
  private let spilledUsers = Atomic<Int>(0)
  /// Where evicted histories go (nil: they are dropped, e.g. in tests without a folder).
  private let spill: Mutex<SpillFile?>
  /// Spilled histories that could not be read back or written, for the log.
  let spillErrors = Atomic<Int>(0)

  struct Shard {
    var users: [String: UserEvents] = [:]
    /// Evicted users: which file and where.
    var spilled: [String: Spilled] = [:]
  }

  struct Spilled: Sendable {
    let file: SpillFile
    let range: Range<Int>
  }

  final class ShardBox: Sendable {
    let lock = Mutex(Shard())
    func withLock<R: Sendable>(_ body: (inout sending Shard) throws -> sending R) rethrows -> R {
      try lock.withLock(body)
    }
  }

  /// One user's latest events, oldest first, and when the user was last active.
  struct UserEvents {
    var events: [StoredEvent] = []
    var lastSequence: Int64 = 0
  }

  public init(length: Int, memoryBytes: Int, spillFile: SpillFile? = nil) {
    self.length = max(1, length)
    self.memoryBytes = memoryBytes
    shards = (0..<Self.shardCount).map { _ in ShardBox() }
    spill = Mutex(spillFile)
  }

  /// About what one kept event costs in memory.
  static func cost(_ e: StoredEvent) -> Int { 96 + e.item.utf8.count + e.type.utf8.count }
  static func userCost(_ user: String) -> Int { 128 + user.utf8.count }
  static func cost(_ user: String, _ events: [StoredEvent]) -> Int {
    events.reduce(userCost(user)) { $0 + cost($1) }
  }

  @inline(__always)
  private func shard(_ user: String) -> Int {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in user.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    return Int(h % UInt64(Self.shardCount))
  }

  /// Adds a batch (events in sequence order), bringing evicted users back, then evicts while
  /// over the memory budget.
  func add(_ batch: some Sequence<StoredEvent>) {
    var grouped: [Int: [StoredEvent]] = [:]
    for e in batch { grouped[shard(e.user), default: []].append(e) }
    var delta = 0
    for (s, events) in grouped {
      shards[s].withLock { shard in
        for e in events {
          var user = shard.users.removeValue(forKey: e.user) ?? restore(e.user, &shard, &delta)
          user.events.append(e)
          delta += Self.cost(e)
          if user.events.count > length {
            let drop = user.events.count - length
            for old in user.events[..<drop] { delta -= Self.cost(old) }
            user.events.removeFirst(drop)
          }
          user.lastSequence = e.sequence
          shard.users[e.user] = user
        }
      }
    }
    let now = bytes.add(delta, ordering: .relaxed).newValue
    if now > memoryBytes { evict() }
  }

  /// A user not in memory: from the spill file when evicted there, else new.
  private func restore(_ id: String, _ shard: inout Shard, _ delta: inout Int) -> UserEvents {
    var user = UserEvents()
    if let spilled = shard.spilled.removeValue(forKey: id) {
      spilledUsers.subtract(1, ordering: .relaxed)
      do {
        user.events = try spilled.file.read(spilled.range)
        user.lastSequence = user.events.last?.sequence ?? 0
      } catch {
        spillErrors.add(1, ordering: .relaxed)
      }
    }
    delta += Self.cost(id, user.events)
    return user
  }

  /// Evicts the least recently active users until 75% of the budget is used (a quarter of
  /// slack, so that a busy server does not do this on every batch). The users to go are those
  /// last active before a threshold sequence, chosen from every user's last sequence as the
  /// share of users that matches the share of bytes to free (sizes differ, so a second round
  /// follows when that was not enough); each shard's leavers go to the spill file in one write.
  private func evict() {
    let target = memoryBytes / 4 * 3
    for _ in 0..<16 {
      let used = bytes.load(ordering: .relaxed)
      guard used > target else { return }
      var sequences: [Int64] = []
      for shard in shards {
        shard.withLock { shard in
          for user in shard.users.values { sequences.append(user.lastSequence) }
        }
      }
      guard !sequences.isEmpty else { return }
      sequences.sort()
      let share = Double(used - target) / Double(used)
      let index = min(sequences.count - 1, max(0, Int(Double(sequences.count) * share)))
      evict(lastActiveUpTo: sequences[index])
    }
  }

  /// Moves every user whose last event is at or before `threshold` to the spill file.
  private func evict(lastActiveUpTo threshold: Int64) {
    let file = spill.withLock { $0 }
    for shard in shards {
      let (freed, count) = shard.withLock { shard -> (Int, Int) in
        let leaving = Array(shard.users.filter { $0.value.lastSequence <= threshold })
        guard !leaving.isEmpty else { return (0, 0) }
        var freed = 0
        for (id, user) in leaving {
          shard.users.removeValue(forKey: id)
          freed += Self.cost(id, user.events)
        }
        if let file {
          do {
            let ranges = try file.write(many: leaving.map(\.value.events))
            for ((id, _), range) in zip(leaving, ranges) {
              shard.spilled[id] = Spilled(file: file, range: range)
            }
            spilledUsers.add(leaving.count, ordering: .relaxed)
          } catch {
            spillErrors.add(1, ordering: .relaxed)
          }
        }
        return (freed, leaving.count)
      }
      if count > 0 {
        bytes.subtract(freed, ordering: .relaxed)
        evictedUsers.add(count, ordering: .relaxed)
      }
    }
  }

  /// The user's latest `limit` events (0: all kept), oldest first.
  public func events(of user: String, limit: Int = 0) -> [StoredEvent] {
    let events = shards[shard(user)].withLock { shard -> [StoredEvent] in
      if let kept = shard.users[user] { return kept.events }
      return read(shard.spilled[user])
    }
    return limit > 0 && events.count > limit ? Array(events.suffix(limit)) : events
  }

  /// The items of the user's latest events, oldest first (nil when none).
  public func items(of user: String) -> [String]? {
    shards[shard(user)].withLock { shard -> [String]? in
      if let kept = shard.users[user] { return kept.events.map(\.item) }
      guard let spilled = shard.spilled[user] else { return nil }
      return read(spilled).map(\.item)
    }
  }

  private func read(_ spilled: Spilled?) -> [StoredEvent] {
    guard let spilled else { return [] }
    do {
      return try spilled.file.read(spilled.range)
    } catch {
      spillErrors.add(1, ordering: .relaxed)
      return []
    }
  }

  /// What a snapshot holds, taken under each shard's lock in turn: the histories in memory,
  /// and where the evicted ones are (their records do not change, and the spill files they are
  /// in live as long as this refers to them).
  struct Capture: Sendable {
    var inMemory: [[StoredEvent]] = []
    var evicted: [(shard: Int, id: String, at: Spilled)] = []
  }

  /// Takes a snapshot's contents at once: no disk reads, so the log's writer (which calls it
  /// at a roll-over) waits only for copies of array references.
  func capture() -> Capture {
    var capture = Capture()
    for (index, shard) in shards.enumerated() {
      shard.withLock { s in
        for user in s.users.values { capture.inMemory.append(user.events) }
        for (id, spilled) in s.spilled { capture.evicted.append((index, id, spilled)) }
      }
    }
    return capture
  }

  /// Every history of `capture`, reading the evicted ones from their spill files (on the
  /// snapshot's thread). With `compactInto`, those are rewritten there, in batches, and a user
  /// still evicted where the capture found them is pointed at the new copy; the new file takes
  /// further evictions, and an old one goes when nothing refers to it any more, so replaced
  /// records do not pile up.
  func histories(of capture: Capture, compactInto newFile: SpillFile? = nil) -> [[StoredEvent]] {
    var out = capture.inMemory
    let batch = 4096
    var start = 0
    while start < capture.evicted.count {
      let part = capture.evicted[start..<min(start + batch, capture.evicted.count)]
      let found = part.map { read($0.at) }
      out.append(contentsOf: found)
      if let newFile, let ranges = try? newFile.write(many: found) {
        for (entry, range) in zip(part, ranges) {
          shards[entry.shard].withLock { s in
            if let now = s.spilled[entry.id], now.file === entry.at.file,
              now.range == entry.at.range
            {
              s.spilled[entry.id] = Spilled(file: newFile, range: range)
            }
          }
        }
      }
      start += batch
    }
    if let newFile { spill.withLock { $0 = newFile } }
    return out
  }

  /// Every user's history, in memory or evicted.
  func allUsers() -> [[StoredEvent]] { histories(of: capture()) }

  public var usedBytes: Int { bytes.load(ordering: .relaxed) }
  public var evicted: Int { evictedUsers.load(ordering: .relaxed) }
  public var spilledCount: Int { spilledUsers.load(ordering: .relaxed) }
  public var userCount: Int { shards.reduce(0) { n, s in n + s.withLock { $0.users.count } } }
}
