import Foundation
import RecServeModels
import Synchronization

/// The latest events of each user, in memory, kept to `length` per user and `memoryBytes` in
/// all: past the budget, the users whose latest event is oldest lose their history from memory
/// (it stays in the log; `train --events` still reads it). Sharded by user, so lookups by Rank
/// and appends by the log's writer rarely wait for each other.
public final class UserHistories: Sendable {
  public let length: Int
  public let memoryBytes: Int
  private static let shardCount = 64
  private let shards: [ShardBox]
  private let bytes = Atomic<Int>(0)
  private let evictedUsers = Atomic<Int>(0)

  struct Shard {
    var users: [String: UserEvents] = [:]
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

  public init(length: Int, memoryBytes: Int) {
    self.length = max(1, length)
    self.memoryBytes = memoryBytes
    shards = (0..<Self.shardCount).map { _ in ShardBox() }
  }

  /// About what one kept event costs in memory.
  static func cost(_ e: StoredEvent) -> Int { 96 + e.item.utf8.count + e.type.utf8.count }
  static func userCost(_ user: String) -> Int { 128 + user.utf8.count }

  @inline(__always)
  private func shard(_ user: String) -> Int {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in user.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    return Int(h % UInt64(Self.shardCount))
  }

  /// Adds a batch (events in sequence order), then evicts while over the memory budget.
  func add(_ batch: some Sequence<StoredEvent>) {
    var grouped: [Int: [StoredEvent]] = [:]
    for e in batch { grouped[shard(e.user), default: []].append(e) }
    var delta = 0
    for (s, events) in grouped {
      shards[s].withLock { shard in
        for e in events {
          var user =
            shard.users.removeValue(forKey: e.user)
            ?? {
              delta += Self.userCost(e.user)
              return UserEvents()
            }()
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

  /// Drops the least recently active users until 90% of the budget is used.
  private func evict() {
    var candidates: [(Int64, Int, String)] = []
    for (s, shard) in shards.enumerated() {
      shard.withLock {
        for (id, user) in $0.users { candidates.append((user.lastSequence, s, id)) }
      }
    }
    candidates.sort { $0.0 < $1.0 }
    let target = memoryBytes / 10 * 9
    for (_, s, id) in candidates {
      guard bytes.load(ordering: .relaxed) > target else { break }
      let freed = shards[s].withLock { shard -> Int in
        guard let user = shard.users.removeValue(forKey: id) else { return 0 }
        return user.events.reduce(Self.userCost(id)) { $0 + Self.cost($1) }
      }
      bytes.subtract(freed, ordering: .relaxed)
      evictedUsers.add(1, ordering: .relaxed)
    }
  }

  /// The user's latest `limit` events (0: all kept), oldest first.
  public func events(of user: String, limit: Int = 0) -> [StoredEvent] {
    shards[shard(user)].withLock { shard in
      guard let events = shard.users[user]?.events else { return [] }
      return limit > 0 && events.count > limit ? Array(events.suffix(limit)) : events
    }
  }

  /// Every user's history, for a snapshot.
  func allUsers() -> [[StoredEvent]] {
    var out: [[StoredEvent]] = []
    for shard in shards {
      shard.withLock { s in
        for user in s.users.values { out.append(user.events) }
      }
    }
    return out
  }

  /// The items of the user's latest events, oldest first (nil when none).
  public func items(of user: String) -> [String]? {
    shards[shard(user)].withLock { shard in
      shard.users[user].map { $0.events.map(\.item) }
    }
  }

  public var usedBytes: Int { bytes.load(ordering: .relaxed) }
  public var evicted: Int { evictedUsers.load(ordering: .relaxed) }
  public var userCount: Int { shards.reduce(0) { n, s in n + s.withLock { $0.users.count } } }
}
