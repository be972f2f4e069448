extension Interactions {
  /// A seeded random holdout split: `holdout` (0...1) of the rows go to `test`, the rest to
  /// `train`, each keeping file order. Both halves have compact id maps of their own (a test user
  /// that never occurs in `train` is unknown to a model trained on it, as in production).
  /// `holdout == 0` gives every row to `train` and an empty `test`.
  public func randomSplit(holdout: Double, seed: UInt64) -> (
    train: Interactions, test: Interactions
  ) {
    let h = holdout.isFinite ? min(1, max(0, holdout)) : 0
    let n = count
    let nTest = Int((Double(n) * h).rounded(.down))
    if nTest == 0 {
      return (self, subset(rows: EmptyCollection<Int>()))
    }
    // Partial Fisher-Yates: the first nTest positions of `order` become a uniform random sample.
    // `order` holds Int32 when the rows allow it (80 MB instead of 160 MB for 20M rows).
    var rng = Xoshiro256(seed: seed, stream: 0x5B17)
    var isTest = [Bool](repeating: false, count: n)
    func sample<T: BinaryInteger>(_ order: inout [T]) {
      for k in 0..<nTest {
        let j = k + rng.nextInt(below: n - k)
        order.swapAt(k, j)
        isTest[Int(order[k])] = true
      }
    }
    if n <= Int(Int32.max) {
      var order = Array(0..<Int32(n))
      sample(&order)
    } else {
      var order = Array(0..<n)
      sample(&order)
    }
    return split(isTest: isTest, testCount: nTest)
  }

  /// (rows r with !isTest[r], rows with isTest[r]), each in file order, without lists of row
  /// indices.
  func split(isTest: [Bool], testCount: Int) -> (train: Interactions, test: Interactions) {
    let train = subset(rows: (0..<count).lazy.filter { !isTest[$0] }, count: count - testCount)
    let test = subset(rows: (0..<count).lazy.filter { isTest[$0] }, count: testCount)
    return (train, test)
  }
}

extension Interactions {
  /// Per-user leave-last-out by timestamp (the sequential-recommendation protocol): for every user
  /// with at least two rows, the row with the latest timestamp goes to `test` and the others to
  /// `train`; a user with a single row keeps it in `train`. When several of a user's rows share
  /// the latest timestamp, one of them is chosen uniformly at random with a generator seeded by
  /// `seed`, so the split is deterministic for a seed. Both halves keep file order and have
  /// compact id maps of their own, as in `randomSplit`.
  public func leaveLastOutSplit(seed: UInt64) -> (train: Interactions, test: Interactions) {
    let n = count
    let U = userCount
    // Latest timestamp per user and how many rows share it.
    var latest = [Int64](repeating: .min, count: U)
    var rowsPerUser = [Int32](repeating: 0, count: U)
    var tiedAtLatest = [Int32](repeating: 0, count: U)
    for r in 0..<n {
      let u = Int(users[r])
      rowsPerUser[u] += 1
      let t = timestamps[r]
      if t > latest[u] {
        latest[u] = t
        tiedAtLatest[u] = 1
      } else if t == latest[u] {
        tiedAtLatest[u] += 1
      }
    }
    // Which of the tied rows (0-based, in file order) goes to test; -1 for none.
    var rng = Xoshiro256(seed: seed, stream: 0x1A57)
    var pick = [Int32](repeating: -1, count: U)
    for u in 0..<U where rowsPerUser[u] >= 2 {
      let ties = Int(tiedAtLatest[u])
      pick[u] = ties == 1 ? 0 : Int32(rng.nextInt(below: ties))
    }
    var seenTies = [Int32](repeating: 0, count: U)
    var isTest = [Bool](repeating: false, count: n)
    var testCount = 0
    for r in 0..<n {
      let u = Int(users[r])
      if pick[u] >= 0 && timestamps[r] == latest[u] {
        let j = seenTies[u]
        seenTies[u] += 1
        if j == pick[u] {
          isTest[r] = true
          testCount += 1
        }
      }
    }
    return split(isTest: isTest, testCount: testCount)
  }

  /// Each user's distinct items, sorted ascending, indexed by this data's user index: the
  /// held-out sets for ranking evaluation when called on a test split. With `minRating`, only
  /// rows rated at least that count (e.g. 4 on a 5-star scale for "relevant").
  public func itemsByUser(minRating: Float? = nil) -> [[Int32]] {
    var result = [[Int32]](repeating: [], count: userCount)
    for r in 0..<count {
      if let minRating, !(ratings[r] >= minRating) { continue }
      result[Int(users[r])].append(items[r])
    }
    for u in 0..<result.count where result[u].count > 1 {
      result[u].sort()
      var w = 1
      for j in 1..<result[u].count where result[u][j] != result[u][w - 1] {
        result[u][w] = result[u][j]
        w += 1
      }
      result[u].removeLast(result[u].count - w)
    }
    return result
  }
}
