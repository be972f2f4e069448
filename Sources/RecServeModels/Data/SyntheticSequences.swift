/// Synthetic interaction logs with planted sequential structure, for sequence models: the
/// catalog is cut into chains of `chainLength` consecutive items (i1..iC, iC+1..i2C, ...), and
/// each user walks chains forward: from a random starting point of a random chain, each next
/// event is the chain's next item, until the chain ends (or, with probability `jump` at every
/// step, earlier) and the walk restarts on another random chain. With probability `noise` an
/// event is a uniformly random item instead (the walk then carries on where it was). So what a
/// user did last says what comes next, while which items a user touches says little. Ratings
/// are 1 (implicit feedback), timestamps increase along each user's log. Deterministic for a
/// seed.
public enum SyntheticSequences {
  public struct Config: Sendable, Equatable {
    public var users: Int
    public var items: Int
    public var seed: UInt64
    public var chainLength: Int
    /// Events per user: uniform in this range.
    public var events: ClosedRange<Int>
    public var noise: Double
    public var jump: Double

    public init(
      users: Int, items: Int, seed: UInt64 = 1, chainLength: Int = 20,
      events: ClosedRange<Int> = 20...40, noise: Double = 0.05, jump: Double = 0.15
    ) {
      self.users = users
      self.items = items
      self.seed = seed
      self.chainLength = chainLength
      self.events = events
      self.noise = noise
      self.jump = jump
    }
  }

  /// The item (index) that follows `item` in its chain, or nil for the last of a chain.
  public static func successor(of item: Int, config: Config) -> Int? {
    let next = item + 1
    if next % config.chainLength == 0 || next >= config.items { return nil }
    return next
  }

  public static func generate(_ config: Config) throws -> Interactions {
    let source =
      "synthetic sequences(users: \(config.users), items: \(config.items), chains of \(config.chainLength), seed: \(config.seed))"
    guard config.users >= 1, config.users <= 10_000_000 else {
      throw DataError(file: source, message: "users must be in 1...10000000")
    }
    guard config.items >= 2, config.items <= 10_000_000 else {
      throw DataError(file: source, message: "items must be in 2...10000000")
    }
    guard config.chainLength >= 2, config.chainLength <= config.items else {
      throw DataError(file: source, message: "chain length must be in 2...items")
    }
    guard config.events.lowerBound >= 1, config.events.upperBound <= 100_000 else {
      throw DataError(file: source, message: "events per user must be in 1...100000")
    }
    guard (0...1).contains(config.noise), (0...1).contains(config.jump) else {
      throw DataError(file: source, message: "noise and jump must be in [0, 1]")
    }
    let I = config.items
    let C = config.chainLength
    let chains = (I + C - 1) / C
    var rng = Xoshiro256(seed: config.seed, stream: 0x5E9)
    var users = [Int32]()
    var items = [Int32]()
    var timestamps = [Int64]()
    let start: Int64 = 1_600_000_000
    func restart() -> Int {
      let chain = rng.nextInt(below: chains)
      let length = min(C, I - chain * C)
      // Start early in the chain so that walks have room to go.
      return chain * C + rng.nextInt(below: max(1, length / 2))
    }
    for u in 0..<config.users {
      let n = config.events.lowerBound + rng.nextInt(below: config.events.count)
      var current = restart()
      var t = start + Int64(rng.nextInt(below: 365 * 86_400))
      for step in 0..<n {
        if step > 0 {
          if let next = successor(of: current, config: config), rng.nextDouble() >= config.jump {
            current = next
          } else {
            current = restart()
          }
        }
        let item = rng.nextDouble() < config.noise ? rng.nextInt(below: I) : current
        users.append(Int32(u))
        items.append(Int32(item))
        timestamps.append(t)
        t += 60 + Int64(rng.nextInt(below: 3600))
      }
    }
    let all = try Interactions(
      source: source, users: users, items: items,
      ratings: [Float](repeating: 1, count: users.count), timestamps: timestamps,
      userIds: (1...config.users).map { "u\($0)" }, itemIds: (1...I).map { "i\($0)" })
    // Compact the id maps to what occurs.
    return all.subset(rows: 0..<all.count)
  }
}
