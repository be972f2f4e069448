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
    var order = Array(0..<n)
    var rng = Xoshiro256(seed: seed, stream: 0x5B17)
    var isTest = [Bool](repeating: false, count: n)
    for k in 0..<nTest {
      let j = k + rng.nextInt(below: n - k)
      order.swapAt(k, j)
      isTest[order[k]] = true
    }
    var testRows = [Int]()
    var trainRows = [Int]()
    testRows.reserveCapacity(nTest)
    trainRows.reserveCapacity(n - nTest)
    for r in 0..<n {
      if isTest[r] { testRows.append(r) } else { trainRows.append(r) }
    }
    return (subset(rows: trainRows), subset(rows: testRows))
  }
}
