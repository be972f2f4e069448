/// One user-item interaction given in memory (e.g. the Train RPC's inline interactions).
public struct InteractionRow: Sendable, Equatable {
  public var user: String
  public var item: String
  public var rating: Float
  public var timestamp: Int64

  public init(user: String, item: String, rating: Float = 1, timestamp: Int64 = 0) {
    self.user = user
    self.item = item
    self.rating = rating
    self.timestamp = timestamp
  }
}

/// Interaction data in compact columnar form: row r is (users[r], items[r], ratings[r],
/// timestamps[r]); users and items are dense indices into `userIds` / `itemIds`, the external ids.
public struct Interactions: Sendable {
  /// Where the data came from (a path, or a name such as "inline interactions").
  public var source: String
  public private(set) var users: [Int32]
  public private(set) var items: [Int32]
  public private(set) var ratings: [Float]
  public private(set) var timestamps: [Int64]
  /// External ids; index i is the id of user (item) i.
  public private(set) var userIds: [String]
  public private(set) var itemIds: [String]
  public private(set) var userLookup: [String: Int32]
  public private(set) var itemLookup: [String: Int32]
  /// Lines skipped because they were bad (only when loading with `skipBadLines`).
  public var skippedLines: Int = 0
  /// The first few reasons lines were skipped, each naming file and line.
  public var skippedExamples: [String] = []

  public var count: Int { users.count }
  public var isEmpty: Bool { users.isEmpty }
  public var userCount: Int { userIds.count }
  public var itemCount: Int { itemIds.count }

  public func userIndex(_ id: String) -> Int32? { userLookup[id] }
  public func itemIndex(_ id: String) -> Int32? { itemLookup[id] }

  /// Builds interactions from in-memory rows. Throws a `DataError` naming the 1-based row for
  /// an empty id or a rating that is not finite, and for an empty list.
  public init(rows: [InteractionRow], source: String = "inline interactions") throws {
    if rows.isEmpty { throw DataError(file: source, message: "no interactions given") }
    var users = [Int32]()
    var items = [Int32]()
    var ratings = [Float]()
    var timestamps = [Int64]()
    users.reserveCapacity(rows.count)
    items.reserveCapacity(rows.count)
    ratings.reserveCapacity(rows.count)
    timestamps.reserveCapacity(rows.count)
    var userIds = [String]()
    var itemIds = [String]()
    var userLookup = [String: Int32]()
    var itemLookup = [String: Int32]()
    for (i, row) in rows.enumerated() {
      if row.user.isEmpty {
        throw DataError(file: source, line: i + 1, message: "user id is empty", unit: "row")
      }
      if row.item.isEmpty {
        throw DataError(file: source, line: i + 1, message: "item id is empty", unit: "row")
      }
      if !row.rating.isFinite {
        throw DataError(
          file: source, line: i + 1, message: "rating \(row.rating) is not finite", unit: "row")
      }
      let u: Int32
      if let known = userLookup[row.user] {
        u = known
      } else {
        u = Int32(userIds.count)
        userIds.append(row.user)
        userLookup[row.user] = u
      }
      let it: Int32
      if let known = itemLookup[row.item] {
        it = known
      } else {
        it = Int32(itemIds.count)
        itemIds.append(row.item)
        itemLookup[row.item] = it
      }
      users.append(u)
      items.append(it)
      ratings.append(row.rating)
      timestamps.append(row.timestamp)
    }
    self.init(
      source: source, users: users, items: items, ratings: ratings, timestamps: timestamps,
      userIds: userIds, itemIds: itemIds, userLookup: userLookup, itemLookup: itemLookup)
  }

  /// Columnar initializer; indices must be in range of the id arrays (checked).
  public init(
    source: String, users: [Int32], items: [Int32], ratings: [Float], timestamps: [Int64],
    userIds: [String], itemIds: [String]
  ) throws {
    guard users.count == items.count, users.count == ratings.count,
      users.count == timestamps.count
    else {
      throw DataError(file: source, message: "column lengths differ")
    }
    var userLookup = [String: Int32](minimumCapacity: userIds.count)
    for (i, id) in userIds.enumerated() {
      if userLookup.updateValue(Int32(i), forKey: id) != nil {
        throw DataError(file: source, message: "user id '\(id)' appears twice in the id list")
      }
    }
    var itemLookup = [String: Int32](minimumCapacity: itemIds.count)
    for (i, id) in itemIds.enumerated() {
      if itemLookup.updateValue(Int32(i), forKey: id) != nil {
        throw DataError(file: source, message: "item id '\(id)' appears twice in the id list")
      }
    }
    for r in 0..<users.count {
      if users[r] < 0 || Int(users[r]) >= userIds.count || items[r] < 0
        || Int(items[r]) >= itemIds.count
      {
        throw DataError(file: source, line: r + 1, message: "index out of range", unit: "row")
      }
      if !ratings[r].isFinite {
        throw DataError(
          file: source, line: r + 1, message: "rating \(ratings[r]) is not finite", unit: "row")
      }
    }
    self.init(
      source: source, users: users, items: items, ratings: ratings, timestamps: timestamps,
      userIds: userIds, itemIds: itemIds, userLookup: userLookup, itemLookup: itemLookup)
  }

  init(
    source: String, users: [Int32], items: [Int32], ratings: [Float], timestamps: [Int64],
    userIds: [String], itemIds: [String], userLookup: [String: Int32],
    itemLookup: [String: Int32]
  ) {
    self.source = source
    self.users = users
    self.items = items
    self.ratings = ratings
    self.timestamps = timestamps
    self.userIds = userIds
    self.itemIds = itemIds
    self.userLookup = userLookup
    self.itemLookup = itemLookup
  }

  /// The rows at `rows` (in that order), with id maps reduced to the users and items that occur
  /// in them (keeping their relative order).
  public func subset<C: Collection>(rows: C) -> Interactions where C.Element == Int {
    subset(rows: rows, count: rows.count)
  }

  /// `subset(rows:)` for a sequence of `n` row indices that can be walked twice (e.g. a lazy
  /// filter over the row range, so that no list of row indices is built).
  func subset<S: Sequence>(rows: S, count n: Int) -> Interactions where S.Element == Int {
    var userMap = [Int32](repeating: -1, count: userIds.count)
    var itemMap = [Int32](repeating: -1, count: itemIds.count)
    for r in rows {
      userMap[Int(users[r])] = 0
      itemMap[Int(items[r])] = 0
    }
    var newUserIds = [String]()
    var newItemIds = [String]()
    var newUserLookup = [String: Int32]()
    var newItemLookup = [String: Int32]()
    for u in 0..<userIds.count where userMap[u] == 0 {
      userMap[u] = Int32(newUserIds.count)
      newUserLookup[userIds[u]] = userMap[u]
      newUserIds.append(userIds[u])
    }
    for i in 0..<itemIds.count where itemMap[i] == 0 {
      itemMap[i] = Int32(newItemIds.count)
      newItemLookup[itemIds[i]] = itemMap[i]
      newItemIds.append(itemIds[i])
    }
    var u = [Int32]()
    var it = [Int32]()
    var ra = [Float]()
    var ts = [Int64]()
    u.reserveCapacity(n)
    it.reserveCapacity(n)
    ra.reserveCapacity(n)
    ts.reserveCapacity(n)
    for r in rows {
      u.append(userMap[Int(users[r])])
      it.append(itemMap[Int(items[r])])
      ra.append(ratings[r])
      ts.append(timestamps[r])
    }
    var result = Interactions(
      source: source, users: u, items: it, ratings: ra, timestamps: ts, userIds: newUserIds,
      itemIds: newItemIds, userLookup: newUserLookup, itemLookup: newItemLookup)
    result.skippedLines = skippedLines
    result.skippedExamples = skippedExamples
    return result
  }

  /// A summary for model.json and reports.
  public var summary: DataSummary {
    var lo = Float.infinity
    var hi = -Float.infinity
    var sum = 0.0
    for r in ratings {
      lo = Swift.min(lo, r)
      hi = Swift.max(hi, r)
      sum += Double(r)
    }
    var tlo = Int64.max
    var thi = Int64.min
    for t in timestamps {
      tlo = Swift.min(tlo, t)
      thi = Swift.max(thi, t)
    }
    return DataSummary(
      source: source, rows: count, users: userCount, items: itemCount,
      skippedLines: skippedLines,
      ratingMin: count > 0 ? Double(lo) : 0, ratingMax: count > 0 ? Double(hi) : 0,
      ratingMean: count > 0 ? sum / Double(count) : 0,
      timestampMin: count > 0 ? tlo : 0, timestampMax: count > 0 ? thi : 0)
  }

  /// Writes `user_id,item_id,rating,timestamp` CSV with a header.
  public func writeCSV(to path: String) throws {
    var out = [UInt8]()
    out.reserveCapacity(count * 24 + 64)
    out.append(contentsOf: "user_id,item_id,rating,timestamp\n".utf8)
    for r in 0..<count {
      appendCSVField(userIds[Int(users[r])], to: &out)
      out.append(UInt8(ascii: ","))
      appendCSVField(itemIds[Int(items[r])], to: &out)
      out.append(UInt8(ascii: ","))
      out.append(contentsOf: formatRating(ratings[r]).utf8)
      out.append(UInt8(ascii: ","))
      out.append(contentsOf: String(timestamps[r]).utf8)
      out.append(UInt8(ascii: "\n"))
    }
    try FileIO.writeSynced(out, to: path)
  }
}

/// Counts and ranges of a data set, recorded in model.json's training data summary.
public struct DataSummary: Sendable, Equatable {
  public var source: String
  public var rows: Int
  public var users: Int
  public var items: Int
  public var skippedLines: Int
  public var ratingMin: Double
  public var ratingMax: Double
  public var ratingMean: Double
  public var timestampMin: Int64
  public var timestampMax: Int64
}

/// Shortest text for a rating: "4", "3.5", "0.123".
func formatRating(_ x: Float) -> String {
  if x == x.rounded() && abs(x) < 1e9 { return String(Int64(x)) }
  return "\(x)"
}

private func appendCSVField(_ s: String, to out: inout [UInt8]) {
  var needsQuotes = false
  for b in s.utf8
  where b == UInt8(ascii: ",") || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\n")
    || b == UInt8(ascii: "\r")
  {
    needsQuotes = true
    break
  }
  if !needsQuotes {
    out.append(contentsOf: s.utf8)
    return
  }
  out.append(UInt8(ascii: "\""))
  for b in s.utf8 {
    if b == UInt8(ascii: "\"") { out.append(b) }
    out.append(b)
  }
  out.append(UInt8(ascii: "\""))
}
