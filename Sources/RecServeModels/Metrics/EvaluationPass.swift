/// One `RankingEvaluator.evaluate` run over the evaluated users: the facts every thread reads
/// and the tallies each writes. Users are summed in fixed blocks of `blockSize` (block b by
/// thread b mod threads), so sums are reduced in the same order at any thread count; up to
/// `BlockedScan.maxQueries` users of a block share one pass over the items (the batch kernel,
/// as concurrent Rank requests do), each keeping its own top K without its history.
final class EvaluationPass {
  static let blockSize = 64

  let model: any RecommendationModel
  let ks: [Int]
  let maxK: Int
  let config: RankingEvaluationConfig
  let targets: RankingEvaluator.Targets
  /// Each user's training history (model user index), or nil for the model's own.
  let seen: [[Int32]]?
  let items: RankingEvaluator.ItemFacts
  let blockCount: Int
  let threads: Int
  /// Each block's sums, each evaluated user's NDCG at the smallest cutoff, and per thread the
  /// best rank each item reached in any of its users' lists (coverage).
  let blocks: UnsafeMutableBufferPointer<BlockSums>
  let userNDCG: UnsafeMutableBufferPointer<Double>
  let firstRank: UnsafeMutableBufferPointer<Int32>

  init(
    model: any RecommendationModel, ks: [Int], config: RankingEvaluationConfig,
    targets: RankingEvaluator.Targets, seen: [[Int32]]?
  ) {
    self.model = model
    self.ks = ks
    maxK = ks.last ?? 0
    self.config = config
    self.targets = targets
    self.seen = seen
    let I = model.itemCount
    // Item embedding norms for diversity.
    let dim = model.dim
    let factors = model.itemFactors
    var norms = [Double](repeating: 0, count: config.fullRanking ? I : 0)
    for i in 0..<norms.count {
      norms[i] = Double(VectorMath.dot(factors + i * dim, factors + i * dim, dim)).squareRoot()
    }
    items = RankingEvaluator.ItemFacts(
      popularity: model.itemPopularity, trainUsers: model.userCount, norms: norms,
      factors: factors, dim: dim)
    blockCount = (targets.users.count + Self.blockSize - 1) / Self.blockSize
    threads = max(1, min(config.threads, blockCount))
    blocks = .allocate(capacity: max(1, blockCount))
    blocks.initialize(repeating: BlockSums(nk: ks.count))
    userNDCG = .allocate(capacity: max(1, targets.users.count))
    userNDCG.initialize(repeating: 0)
    firstRank = .allocate(capacity: max(1, threads * I))
    firstRank.initialize(repeating: Int32.max)
  }

  deinit {
    _ = blocks.deinitialize()  // BlockSums holds arrays
    blocks.deallocate()
    userNDCG.deallocate()
    firstRank.deallocate()
  }

  /// Evaluates every user on `threads` threads.
  func run() {
    Parallel.run(threads) { t in
      var scratch = Scratch(pass: self, thread: t)
      var b = t
      while b < blockCount {
        blocks[b] = sumBlock(b, &scratch)
        b += threads
      }
    }
  }

  /// The sums over all blocks, and each item's best rank over the threads' tallies.
  func totals() -> (sums: BlockSums, bestRank: [Int32]) {
    var total = BlockSums(nk: ks.count)
    for b in 0..<blockCount { total.add(blocks[b]) }
    let I = model.itemCount
    var best = [Int32](repeating: Int32.max, count: I)
    for t in 0..<threads {
      for i in 0..<I { best[i] = min(best[i], firstRank[t * I + i]) }
    }
    return (total, best)
  }

  /// One thread's buffers.
  struct Scratch {
    /// Scores of the few items the sampled protocol reads (a user's relevant items and
    /// negatives), at their item index; the full ranking never needs all scores at once.
    var scores: [Float]
    /// Up to `batch` query vectors and offsets, and the users' histories.
    var queries: [Float]
    var offsets: [Float]
    var histories: [[Int32]]
    var picked: [Float]
    /// excluded[i] == u when item i may not be a negative for user u.
    var excluded: [Int32]
    var flags: [Bool]
    var negatives: [Int32] = []
    let firstRank: UnsafeMutablePointer<Int32>

    init(pass: EvaluationPass, thread: Int) {
      let I = pass.model.itemCount
      let batch = BlockedScan.maxQueries
      scores = [Float](repeating: 0, count: max(1, I))
      queries = [Float](repeating: 0, count: batch * max(1, pass.model.dim))
      offsets = [Float](repeating: 0, count: batch)
      histories = [[Int32]](repeating: [], count: batch)
      picked = [Float](repeating: 0, count: max(1, pass.config.sampledNegatives) + 64)
      excluded = [Int32](repeating: -1, count: max(1, I))
      flags = [Bool](repeating: false, count: pass.maxK)
      firstRank = pass.firstRank.baseAddress! + thread * I
    }
  }

  /// The sums of block `b`'s users (in batches of up to `BlockedScan.maxQueries`).
  private func sumBlock(_ b: Int, _ scratch: inout Scratch) -> BlockSums {
    var sums = BlockSums(nk: ks.count)
    let blockEnd = min(targets.users.count, (b + 1) * Self.blockSize)
    var first = b * Self.blockSize
    while first < blockEnd {
      let last = min(blockEnd, first + BlockedScan.maxQueries)
      loadQueries(first..<last, &scratch)
      let tops = config.fullRanking && maxK > 0 ? rankFull(count: last - first, &scratch) : []
      for e in first..<last {
        sums.users += 1
        if config.fullRanking && maxK > 0 {
          userNDCG[e] = RankingEvaluator.addFullRanking(
            tops[e - first].map { $0.index }, relevant: targets.relevant[e], ks: ks,
            flags: &scratch.flags, firstRank: scratch.firstRank, items: items, sums: &sums)
        }
        if config.sampled { addSampled(user: e, slot: e - first, &scratch, sums: &sums) }
      }
      first = last
    }
    return sums
  }

  /// Writes the query vector and offset of evaluated users `range` (a zero query for a user the
  /// model cannot build one for) and their histories into the scratch slots.
  private func loadQueries(_ range: Range<Int>, _ scratch: inout Scratch) {
    let dim = model.dim
    scratch.queries.withUnsafeMutableBufferPointer { queries in
      for e in range {
        let u = targets.users[e]
        let row = queries.baseAddress! + (e - range.lowerBound) * dim
        scratch.offsets[e - range.lowerBound] =
          model.query(user: u, recentItems: UnsafeBufferPointer(start: nil, count: 0), into: row)
          ?? {
            row.update(repeating: 0, count: dim)
            return 0
          }()
        scratch.histories[e - range.lowerBound] =
          seen?[Int(u)] ?? Array(model.seenItems(user: u))
      }
    }
  }

  /// The top K of the first `count` scratch queries, each without its history, by
  /// `BlockedScan.select` (the same floats as the Rank RPC).
  private func rankFull(count n: Int, _ scratch: inout Scratch) -> [[TopK.Entry]] {
    let selections = [BlockedScan.Selection](
      repeating: .init(k: min(maxK, model.itemCount)), count: n)
    let histories = scratch.histories
    return scratch.queries.withUnsafeBufferPointer { queries in
      scratch.offsets.withUnsafeBufferPointer { offsets in
        // No `check` that throws, so this cannot fail.
        (try? BlockedScan.select(
          model: model, queries: queries.baseAddress!, offsets: offsets.baseAddress!,
          selections: selections, penalties: nil,
          skip: { j, item in RankingEvaluator.binarySearch(histories[j], item) }, check: {}))
          ?? []
      }
    }
  }

  /// Adds evaluated user `e`'s sampled-protocol scores (its query in scratch slot `j`): its
  /// relevant items ranked among negatives it has neither in its history nor in the test set,
  /// drawn from the user's own seeded stream.
  private func addSampled(user e: Int, slot j: Int, _ s: inout Scratch, sums: inout BlockSums) {
    let u = targets.users[e]
    let relevant = targets.relevant[e]
    let I = model.itemCount
    for i in s.histories[j] { s.excluded[Int(i)] = u }
    if let all = targets.anyTest[u] { for i in all { s.excluded[Int(i)] = u } }
    var rng = Xoshiro256(seed: config.seed, stream: 0x5A3D_0000_0000 &+ UInt64(u))
    s.excluded.withUnsafeMutableBufferPointer { excluded in
      RankingEvaluator.sampleNegatives(
        count: max(0, config.sampledNegatives), itemCount: I, excluded: excluded.baseAddress!,
        stamp: u, rng: &rng, into: &s.negatives)
    }
    // The scores the ranks read: the relevant items' and the negatives'.
    let wanted = relevant + s.negatives
    if s.picked.count < wanted.count { s.picked = [Float](repeating: 0, count: wanted.count) }
    let offset = s.offsets[j]
    s.queries.withUnsafeBufferPointer { queries in
      wanted.withUnsafeBufferPointer { items in
        s.picked.withUnsafeMutableBufferPointer { out in
          model.scoreItems(
            query: queries.baseAddress! + j * model.dim, offset: offset, items: items,
            into: out.baseAddress!)
        }
      }
    }
    for (x, i) in wanted.enumerated() { s.scores[Int(i)] = s.picked[x] }
    s.scores.withUnsafeMutableBufferPointer { scores in
      RankingEvaluator.addSampled(
        relevant: relevant, negatives: s.negatives, scores: scores.baseAddress!, ks: ks,
        sums: &sums)
    }
  }
}
