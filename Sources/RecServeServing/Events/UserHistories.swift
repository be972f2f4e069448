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

  struct Spilled {
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
  /// slack, so that a busy server does not sort its users on every batch).
  private func evict() {
    var candidates: [(Int64, Int, String)] = []
    for (s, shard) in shards.enumerated() {
      shard.withLock {
        for (id, user) in $0.users { candidates.append((user.lastSequence, s, id)) }
      }
    }
    candidates.sort { $0.0 < $1.0 }
    let target = memoryBytes / 4 * 3
    let file = spill.withLock { $0 }
    for (_, s, id) in candidates {
      guard bytes.load(ordering: .relaxed) > target else { break }
      let freed = shards[s].withLock { shard -> Int in
        guard let user = shard.users.removeValue(forKey: id) else { return 0 }
        if let file {
          do {
            shard.spilled[id] = Spilled(file: file, range: try file.write(user.events))
            spilledUsers.add(1, ordering: .relaxed)
          } catch {
            spillErrors.add(1, ordering: .relaxed)
          }
        }
        return Self.cost(id, user.events)
      }
      bytes.subtract(freed, ordering: .relaxed)
      evictedUsers.add(1, ordering: .relaxed)
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

  /// Every user's history, in memory or evicted, for a snapshot. With `compactInto`, the
  /// evicted ones are rewritten to that new spill file, which takes over (the old one goes
  /// when nothing refers to it), so replaced records do not pile up.
  func allUsers(compactInto newFile: SpillFile? = nil) -> [[StoredEvent]] {
    var out: [[StoredEvent]] = []
    for shard in shards {
      let part = shard.withLock { s -> [[StoredEvent]] in
        var part = s.users.values.map(\.events)
        for (id, spilled) in s.spilled {
          let events = read(spilled)
          part.append(events)
          if let newFile, let range = try? newFile.write(events) {
            s.spilled[id] = Spilled(file: newFile, range: range)
          }
        }
        return part
      }
      out.append(contentsOf: part)
    }
    if let newFile { spill.withLock { $0 = newFile } }
    return out
  }

  public var usedBytes: Int { bytes.load(ordering: .relaxed) }
  public var evicted: Int { evictedUsers.load(ordering: .relaxed) }
  public var spilledCount: Int { spilledUsers.load(ordering: .relaxed) }
  public var userCount: Int { shards.reduce(0) { n, s in n + s.withLock { $0.users.count } } }
}
