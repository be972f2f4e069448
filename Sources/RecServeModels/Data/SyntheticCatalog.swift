/// A synthetic catalog with planted content structure, for the hybrid model: every item has a
/// genre (sometimes a second one) and a title holding its genre's word and noise words; every
/// user a favourite genre that most of their interactions come from. A share of the items
/// (`newItems`, the highest ids) has no interactions at all: only their features say who will
/// like them. Interactions are implicit (rating 1) with increasing timestamps. Deterministic for
/// a seed.
public enum SyntheticCatalog {
  public static let genres = ["Action", "Comedy", "Drama", "Horror", "SciFi", "Romance"]
  /// Words of the genres' titles, one per genre, and the noise words every title may hold.
  static let genreWords = ["blast", "laugh", "tears", "fear", "star", "heart"]
  static let noiseWords = ["night", "city", "day", "the", "return", "last"]

  public struct Config: Sendable, Equatable {
    public var users: Int
    public var items: Int
    public var seed: UInt64
    /// Interactions per user.
    public var perUser: Int
    /// The share of a user's interactions in their favourite genre.
    public var loyalty: Double
    /// The share of the items (the last ids) nobody interacts with.
    public var newItems: Double

    public init(
      users: Int, items: Int, seed: UInt64 = 1, perUser: Int = 20, loyalty: Double = 0.85,
      newItems: Double = 0.1
    ) {
      self.users = users
      self.items = items
      self.seed = seed
      self.perUser = perUser
      self.loyalty = loyalty
      self.newItems = newItems
    }
  }

  public struct Catalog: Sendable {
    public var interactions: Interactions
    /// `item_id,title,genres` for every item, new ones included.
    public var featuresCSV: String
    /// Each item's genre (index into `genres`) and each user's favourite, by id.
    public var genreOf: [String: Int]
    public var favourite: [String: Int]
    /// Ids of the items nobody interacted with.
    public var newItemIds: [String]
  }

  public static func generate(_ config: Config) throws -> Catalog {
    let source =
      "synthetic catalog(users: \(config.users), items: \(config.items), seed: \(config.seed))"
    guard (1...1_000_000).contains(config.users) else {
      throw DataError(file: source, message: "users must be in 1...1000000")
    }
    guard (genres.count * 2...1_000_000).contains(config.items) else {
      throw DataError(file: source, message: "items must be in \(genres.count * 2)...1000000")
    }
    guard (1...10_000).contains(config.perUser), (0...1).contains(config.loyalty),
      (0..<0.9).contains(config.newItems)
    else {
      throw DataError(
        file: source,
        message:
          "per-user interactions must be in 1...10000, loyalty in [0, 1], new items in [0, 0.9)")
    }
    var rng = Xoshiro256(seed: config.seed, stream: 0xCA7)
    let newFrom = config.items - Int(Double(config.items) * config.newItems)
    var genreOf: [String: Int] = [:]
    var byGenre = [[String]](repeating: [], count: genres.count)
    var lines = ["item_id,title,genres"]
    for i in 0..<config.items {
      let id = "i\(i + 1)"
      // Items cycle through the genres so that every genre has old and new items.
      let g = i % genres.count
      genreOf[id] = g
      if i < newFrom { byGenre[g].append(id) }
      let noise = noiseWords[rng.nextInt(below: noiseWords.count)]
      let second = rng.nextFloat() < 0.2 ? "|" + genres[(g + 1) % genres.count] : ""
      lines.append("\(id),\"\(genreWords[g]) \(noise) \(id)\",\(genres[g])\(second)")
    }
    var rows: [InteractionRow] = []
    var favourite: [String: Int] = [:]
    for u in 0..<config.users {
      let user = "u\(u + 1)"
      let g = rng.nextInt(below: genres.count)
      favourite[user] = g
      for t in 0..<config.perUser {
        let pool =
          rng.nextDouble() < config.loyalty ? byGenre[g] : byGenre[rng.nextInt(below: genres.count)]
        rows.append(
          InteractionRow(
            user: user, item: pool[rng.nextInt(below: pool.count)], rating: 1,
            timestamp: Int64(1_000 + t)))
      }
    }
    return Catalog(
      interactions: try Interactions(rows: rows, source: source),
      featuresCSV: lines.joined(separator: "\n") + "\n", genreOf: genreOf, favourite: favourite,
      newItemIds: (newFrom..<config.items).map { "i\($0 + 1)" })
  }
}
