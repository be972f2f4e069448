/// Synthetic explicit ratings from a hidden low-rank model with planted structure: users and items
/// belong to latent clusters (factors = cluster centre + individual noise), with user and item
/// biases, popularity skew in which items get rated, varying user activity, Gaussian noise, and
/// half-star rounding clipped to 0.5...5. Deterministic for a seed.
public enum SyntheticData {
  public struct Config: Sendable, Equatable {
    public var users: Int
    public var items: Int
    public var seed: UInt64
    /// Rank of the hidden model.
    public var dim: Int
    /// Fraction of all user-item pairs that are rated (on average).
    public var density: Double
    /// Number of latent user clusters and of item clusters.
    public var clusters: Int
    /// Standard deviation of the rating noise.
    public var noise: Double
    public var globalMean: Double

    public init(
      users: Int, items: Int, seed: UInt64 = 1, dim: Int = 8, density: Double = 0.05,
      clusters: Int = 8, noise: Double = 0.3, globalMean: Double = 3.6
    ) {
      self.users = users
      self.items = items
      self.seed = seed
      self.dim = dim
      self.density = density
      self.clusters = clusters
      self.noise = noise
      self.globalMean = globalMean
    }
  }

  /// Generates ratings; user ids are "u1"..."uN", item ids "i1"..."iM" (only rated items appear).
  public static func generate(
    users: Int, items: Int, seed: UInt64 = 1, dim: Int = 8, density: Double = 0.05
  ) throws -> Interactions {
    try generate(Config(users: users, items: items, seed: seed, dim: dim, density: density))
  }

  public static func generate(_ config: Config) throws -> Interactions {
    let source = "synthetic(users: \(config.users), items: \(config.items), seed: \(config.seed))"
    let expected = try check(config, source: source)
    let U = config.users
    let I = config.items
    let D = config.dim
    let K = max(1, config.clusters)
    var rng = Xoshiro256(seed: config.seed, stream: 0x5EED)

    // Per-coordinate scale so that p·q has a standard deviation of about 0.9.
    let s = (0.9 / Double(D).squareRoot()).squareRoot()
    func centres() -> [Double] { (0..<(K * D)).map { _ in rng.nextGaussian() * s } }
    let userCentres = centres()
    let itemCentres = centres()
    let p = clustered(rows: U, centres: userCentres, clusters: K, dim: D, scale: s, rng: &rng)
    let q = clustered(rows: I, centres: itemCentres, clusters: K, dim: D, scale: s, rng: &rng)
    let bu = (0..<U).map { _ in Float(0.3 * rng.nextGaussian()) }
    let bi = (0..<I).map { _ in Float(0.4 * rng.nextGaussian()) }
    let cumulative = popularity(items: I, rng: &rng)
    let total = cumulative.last ?? 0

    var users = [Int32]()
    var items = [Int32]()
    var ratings = [Float]()
    var timestamps = [Int64]()
    let reserve = Int(expected * 1.1) + 16
    users.reserveCapacity(reserve)
    items.reserveCapacity(reserve)
    ratings.reserveCapacity(reserve)
    timestamps.reserveCapacity(reserve)
    var stamp = [Int32](repeating: -1, count: I)
    var chosen: [Int] = []
    let mean = Float(config.globalMean)
    let noise = config.noise
    let start: Int64 = 1_500_000_000
    for u in 0..<U {
      // Activity: log-normal with mean 1.
      let activity = _expD(0.6 * rng.nextGaussian() - 0.18)
      var nu = Int((config.density * Double(I) * activity).rounded())
      nu = min(I, max(min(3, I), nu))
      choose(
        nu, forUser: u, cumulative: cumulative, total: total, stamp: &stamp, rng: &rng,
        into: &chosen)
      var t = start + Int64(rng.nextInt(below: 2 * 365 * 86_400))
      for i in chosen {
        var dot: Float = 0
        for d in 0..<D { dot += p[u * D + d] * q[i * D + d] }
        var r = mean + bu[u] + bi[i] + dot + Float(noise * rng.nextGaussian())
        r = (r * 2).rounded() / 2
        r = min(5, max(0.5, r))
        users.append(Int32(u))
        items.append(Int32(i))
        ratings.append(r)
        t += 1 + Int64(-_logD(1 - rng.nextDouble()) * 86_400)
        timestamps.append(t)
      }
    }
    let all = try Interactions(
      source: source, users: users, items: items, ratings: ratings, timestamps: timestamps,
      userIds: (1...U).map { "u\($0)" }, itemIds: (1...I).map { "i\($0)" })
    return all.subset(rows: 0..<all.count)
  }

  /// Refuses a configuration it cannot honour; returns the expected number of ratings.
  static func check(_ config: Config, source: String) throws -> Double {
    guard config.users >= 1, config.items >= 1 else {
      throw DataError(file: source, message: "need at least one user and one item")
    }
    guard config.users <= 50_000_000, config.items <= 50_000_000 else {
      throw DataError(file: source, message: "at most 50,000,000 users and items")
    }
    guard config.dim >= 1, config.dim <= 1024 else {
      throw DataError(file: source, message: "dim must be in 1...1024")
    }
    guard config.density > 0, config.density <= 1, config.density.isFinite else {
      throw DataError(file: source, message: "density must be in (0, 1]")
    }
    let expected = Double(config.users) * Double(config.items) * config.density
    guard expected <= 200_000_000 else {
      throw DataError(
        file: source,
        message: "about \(Int(expected)) ratings would be generated; at most 200,000,000")
    }
    return expected
  }

  /// `rows` vectors, each its random cluster's centre plus Gaussian noise.
  static func clustered(
    rows: Int, centres: [Double], clusters K: Int, dim D: Int, scale s: Double,
    rng: inout Xoshiro256
  ) -> [Float] {
    var out = [Float](repeating: 0, count: rows * D)
    for r in 0..<rows {
      let k = rng.nextInt(below: K)
      for d in 0..<D {
        out[r * D + d] = Float(centres[k * D + d] + 0.35 * s * rng.nextGaussian())
      }
    }
    return out
  }

  /// Item popularity: cumulative Zipf-like weights over a random permutation of ranks.
  static func popularity(items I: Int, rng: inout Xoshiro256) -> [Double] {
    var ranks = Array(0..<I)
    ranks.withUnsafeMutableBufferPointer { rng.shuffle($0) }
    var cumulative = [Double](repeating: 0, count: I)
    var total = 0.0
    for i in 0..<I {
      total += 1.0 / _powD(Double(ranks[i]) + 10, 0.8)
      cumulative[i] = total
    }
    return cumulative
  }

  /// `nu` distinct items for user `u`: a random `nu` of all when that is over half of them,
  /// else drawn by popularity (then the first unchosen ones if draws keep repeating).
  static func choose(
    _ nu: Int, forUser u: Int, cumulative: [Double], total: Double, stamp: inout [Int32],
    rng: inout Xoshiro256, into chosen: inout [Int]
  ) {
    let I = cumulative.count
    chosen.removeAll(keepingCapacity: true)
    if nu * 2 > I {
      var all = Array(0..<I)
      all.withUnsafeMutableBufferPointer { rng.shuffle($0) }
      chosen.append(contentsOf: all[0..<nu])
      return
    }
    var attempts = 0
    while chosen.count < nu && attempts < nu * 50 {
      attempts += 1
      let x = rng.nextDouble() * total
      var lo = 0
      var hi = I - 1
      while lo < hi {
        let mid = (lo + hi) >> 1
        if cumulative[mid] <= x { lo = mid + 1 } else { hi = mid }
      }
      if stamp[lo] != Int32(u) {
        stamp[lo] = Int32(u)
        chosen.append(lo)
      }
    }
    var i = 0
    while chosen.count < nu && i < I {
      if stamp[i] != Int32(u) {
        stamp[i] = Int32(u)
        chosen.append(i)
      }
      i += 1
    }
  }

  /// Generates and writes `user_id,item_id,rating,timestamp` CSV; returns the data.
  @discardableResult
  public static func write(_ config: Config, to path: String) throws -> Interactions {
    let data = try generate(config)
    try data.writeCSV(to: path)
    return data
  }
}

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

func _powD(_ x: Double, _ y: Double) -> Double { pow(x, y) }
func _expD(_ x: Double) -> Double { exp(x) }
