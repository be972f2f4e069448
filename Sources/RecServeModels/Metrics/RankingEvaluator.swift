import Dispatch

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// What `RankingEvaluator.evaluate` computes and how.
public struct RankingEvaluationConfig: Sendable, Equatable {
  /// Cutoffs, each ≥ 1 (duplicates are ignored; reported in ascending order).
  public var ks: [Int]
  /// Full ranking: every item not in the user's training history is a candidate.
  public var fullRanking: Bool
  /// Sampled protocol (SASRec): each held-out item against `sampledNegatives` items the user
  /// never interacted with, drawn uniformly without replacement (seeded).
  public var sampled: Bool
  public var sampledNegatives: Int
  /// Seed for the negative samples; each user draws from its own stream, so results do not
  /// depend on `threads`.
  public var seed: UInt64
  /// Worker threads over users (results are identical for any count).
  public var threads: Int
  /// Only test rows rated at least this count as relevant (nil: every test row).
  public var relevanceThreshold: Float?

  public init(
    ks: [Int] = [10], fullRanking: Bool = true, sampled: Bool = false,
    sampledNegatives: Int = 100, seed: UInt64 = 42, threads: Int = 2,
    relevanceThreshold: Float? = nil
  ) {
    self.ks = ks
    self.fullRanking = fullRanking
    self.sampled = sampled
    self.sampledNegatives = sampledNegatives
    self.seed = seed
    self.threads = threads
    self.relevanceThreshold = relevanceThreshold
  }
}

/// Sampled-protocol accuracy at one cutoff (the rank is that of the held-out item among itself
/// and the sampled negatives).
public struct SampledScores: Sendable, Equatable {
  /// Fraction of held-out items ranked within K (per user mean, then mean over users).
  public var hit: Double
  /// 1 / log2(rank + 1) within K, else 0.
  public var ndcg: Double
}

/// Ranking evaluation of a model on held-out data; metric values are means over evaluated users.
public struct RankingEvaluation: Sendable, Equatable {
  public var ks: [Int]
  /// Full-ranking accuracy by cutoff (empty when full ranking was not asked for or no user
  /// could be evaluated).
  public var full: [Int: RankingScores]
  /// Distinct items in all top-K lists / the model's catalogue size.
  public var coverage: [Int: Double]
  /// Mean over users of the mean self-information of their top-K items (bits; see
  /// `RankingMetrics.selfInformation`).
  public var novelty: [Int: Double]
  /// Mean over users (with at least two recommended items) of the mean pairwise 1 − cosine of
  /// the item embeddings in their top-K list.
  public var diversity: [Int: Double]
  /// Sampled-protocol accuracy by cutoff.
  public var sampled: [Int: SampledScores]
  /// Sampled-protocol mean reciprocal rank (no cutoff, as in the SASRec paper).
  public var sampledMRR: Double?
  /// Users evaluated (known to the model, with at least one relevant held-out item).
  public var users: Int
  /// Distinct test users the model has never seen (skipped).
  public var unknownUsers: Int
  /// Known test users left with no relevant item once unknown or already-seen items are
  /// dropped (or none rated above the threshold); skipped.
  public var usersWithoutTestItems: Int
  /// Relevant test rows whose item the model does not know (dropped: it cannot be ranked).
  public var unknownTestItems: Int
  /// Relevant test rows whose item is already in the user's training history (dropped: full
  /// ranking never recommends a seen item).
  public var seenTestItems: Int
  /// Held-out (user, item) pairs ranked in the sampled protocol.
  public var sampledPairs: Int
  /// Full-ranking NDCG at the smallest cutoff of each evaluated user (model user index), in
  /// ascending user order: for paired comparisons of two models on the same users (a
  /// difference of means has far less noise when each user is compared with itself). Empty
  /// without full ranking.
  public var userNDCG: [(user: Int32, ndcg: Double)] = []

  public static func == (a: RankingEvaluation, b: RankingEvaluation) -> Bool {
    a.ks == b.ks && a.full == b.full && a.coverage == b.coverage && a.novelty == b.novelty
      && a.diversity == b.diversity && a.sampled == b.sampled && a.sampledMRR == b.sampledMRR
      && a.users == b.users && a.unknownUsers == b.unknownUsers
      && a.usersWithoutTestItems == b.usersWithoutTestItems
      && a.unknownTestItems == b.unknownTestItems && a.seenTestItems == b.seenTestItems
      && a.sampledPairs == b.sampledPairs && a.userNDCG.elementsEqual(b.userNDCG, by: ==)
  }

  /// Lowercase metric names with `@k`: hr, precision, recall, f1, ndcg, mrr, map, coverage,
  /// novelty, ild (full ranking); sampled_hr, sampled_ndcg and sampled_mrr (sampled).
  public var metrics: [String: Double] {
    var m = [String: Double]()
    for k in ks {
      if let s = full[k] { m.merge(s.metrics(k: k)) { a, _ in a } }
      if let c = coverage[k] { m["coverage@\(k)"] = c }
      if let n = novelty[k] { m["novelty@\(k)"] = n }
      if let d = diversity[k] { m["ild@\(k)"] = d }
      if let s = sampled[k] {
        m["sampled_hr@\(k)"] = s.hit
        m["sampled_ndcg@\(k)"] = s.ndcg
      }
    }
    if let r = sampledMRR { m["sampled_mrr"] = r }
    return m
  }

  /// The counts behind the metrics, for reports.
  public var counts: [String: Int] {
    [
      "users": users, "unknown_users": unknownUsers,
      "users_without_test_items": usersWithoutTestItems,
      "unknown_test_items": unknownTestItems, "seen_test_items": seenTestItems,
      "sampled_pairs": sampledPairs,
    ]
  }
}

public enum RankingEvaluator {
  /// Ranks items for every test user the model knows and scores the lists against the user's
  /// held-out items.
  ///
  /// - Users and items are matched to the model by external id. A test user unknown to the
  ///   model is skipped and counted; a relevant test item unknown to the model, or already in
  ///   the user's training history, is dropped and counted; a user left with no relevant item
  ///   is skipped and counted.
  /// - The training history ("seen" items, never recommended in full ranking and never sampled
  ///   as negatives) is `train`'s rows when given, else the model's own `seenItems`.
  /// - Full ranking: the largest K scores of every item not seen in training (ties: lower item
  ///   index first), by `BlockedScan.select` for up to 32 users at once, which scores them as
  ///   the Rank RPC does (the same floats).
  /// - Sampled: negatives are items the user has neither in the history nor anywhere in `test`.
  public static func evaluate(
    model: any RecommendationModel, train: Interactions?, test: Interactions,
    config: RankingEvaluationConfig = RankingEvaluationConfig()
  ) -> RankingEvaluation {
    let ks = Array(Set(config.ks.filter { $0 >= 1 })).sorted()
    let seen = train.map { trainingHistory(model: model, train: $0) }
    let targets = Targets(model: model, test: test, seen: seen, config: config)
    let pass = EvaluationPass(model: model, ks: ks, config: config, targets: targets, seen: seen)
    pass.run()
    let (total, bestRank) = pass.totals()
    return evaluation(
      total, ks: ks, targets: targets, userNDCG: Array(pass.userNDCG.prefix(targets.users.count)),
      bestRank: bestRank, config: config)
  }

  /// What the beyond-accuracy metrics read about the items.
  struct ItemFacts {
    var popularity: UnsafeBufferPointer<Int32>
    var trainUsers: Int
    var norms: [Double]
    var factors: UnsafePointer<Float>
    var dim: Int
  }

  /// Adds one user's full ranking to `sums` (hits, novelty and diversity at every K) and each
  /// ranked item's best rank to `firstRank`; returns the user's NDCG at the smallest K.
  static func addFullRanking(
    _ ranked: [Int32], relevant rel: [Int32], ks: [Int], flags: inout [Bool],
    firstRank: UnsafeMutablePointer<Int32>, items: ItemFacts, sums: inout BlockSums
  ) -> Double {
    for x in flags.indices { flags[x] = x < ranked.count && binarySearch(rel, ranked[x]) }
    for (x, i) in ranked.enumerated() where Int32(x) < firstRank[Int(i)] {
      firstRank[Int(i)] = Int32(x)
    }
    var ndcg = 0.0
    flags.withUnsafeBufferPointer { f in
      for (x, k) in ks.enumerated() {
        let s = RankingMetrics.scores(hitFlags: f, relevantCount: rel.count, k: k)!
        sums.full[x] = sums.full[x] + s
        if x == 0 { ndcg = s.ndcg }
      }
    }
    for (x, k) in ks.enumerated() {
      let count = min(k, ranked.count)
      if count > 0 {
        var s = 0.0
        for r in 0..<count {
          s += RankingMetrics.selfInformation(
            popularity: items.popularity[Int(ranked[r])], userCount: items.trainUsers)
        }
        sums.novelty[x] += s / Double(count)
        sums.noveltyUsers[x] += 1
      }
      if count > 1 {
        let list = Array(ranked.prefix(count))
        sums.ild[x] += RankingMetrics.pairwiseDistance(
          list, norms: list.map { items.norms[Int($0)] }, embeddings: items.factors,
          dim: items.dim)
        sums.ildUsers[x] += 1
      }
    }
    return ndcg
  }

  /// Adds one user's sampled-protocol scores to `sums`: each relevant item ranked among the
  /// user's negatives by the scores at their item index.
  static func addSampled(
    relevant rel: [Int32], negatives negs: [Int32], scores: UnsafeMutablePointer<Float>,
    ks: [Int], sums: inout BlockSums
  ) {
    let nk = ks.count
    var hr = [Double](repeating: 0, count: nk)
    var nd = [Double](repeating: 0, count: nk)
    var rr = 0.0
    negs.withUnsafeBufferPointer { nb in
      for p in rel {
        let rank = RankingMetrics.sampledRank(
          positive: (p, scores[Int(p)]), negatives: nb, scores: scores)
        rr += 1 / Double(rank)
        for (x, k) in ks.enumerated() where rank <= k {
          hr[x] += 1
          nd[x] += 1 / log2(Double(rank + 1))
        }
      }
    }
    let c = Double(rel.count)
    for x in 0..<nk {
      sums.sampledHit[x] += hr[x] / c
      sums.sampledNDCG[x] += nd[x] / c
    }
    sums.sampledMRR += rr / c
    sums.sampledPairs += rel.count
  }

  /// Every known item of the model users' training rows, sorted and distinct, by model user.
  static func trainingHistory(model: any RecommendationModel, train: Interactions) -> [[Int32]] {
    let userMap = train.userIds.map { model.userIndex($0) ?? -1 }
    let itemMap = train.itemIds.map { model.itemIndex($0) ?? -1 }
    var seen = [[Int32]](repeating: [], count: model.userCount)
    for r in 0..<train.count {
      let u = userMap[Int(train.users[r])]
      let i = itemMap[Int(train.items[r])]
      if u >= 0 && i >= 0 { seen[Int(u)].append(i) }
    }
    for u in seen.indices where seen[u].count > 1 { seen[u] = sortedDistinct(seen[u]) }
    return seen
  }

  /// Who is evaluated against what: the test users the model knows with at least one relevant
  /// held-out item that is known and not in their history, and the counts of what was dropped.
  struct Targets {
    /// Evaluated model users, ascending, and each one's relevant items (sorted, distinct).
    var users: [Int32] = []
    var relevant: [[Int32]] = []
    /// Every known test item of each user, relevant or not (never sampled as a negative).
    var anyTest: [Int32: [Int32]] = [:]
    var unknownUsers = 0
    var unknownTestItems = 0
    var seenTestItems = 0
    var usersWithoutTestItems = 0

    init(
      model: any RecommendationModel, test: Interactions, seen: [[Int32]]?,
      config: RankingEvaluationConfig
    ) {
      let testUserMap = test.userIds.map { model.userIndex($0) ?? -1 }
      let testItemMap = test.itemIds.map { model.itemIndex($0) ?? -1 }
      for m in testUserMap where m < 0 { unknownUsers += 1 }
      var relevantRows = [Int32: [Int32]]()
      for r in 0..<test.count {
        let u = testUserMap[Int(test.users[r])]
        if u < 0 { continue }
        let i = testItemMap[Int(test.items[r])]
        let isRelevant = config.relevanceThreshold.map { test.ratings[r] >= $0 } ?? true
        if i < 0 {
          if isRelevant { unknownTestItems += 1 }
          continue
        }
        anyTest[u, default: []].append(i)
        if isRelevant { relevantRows[u, default: []].append(i) }
      }
      for u in Set(testUserMap.filter { $0 >= 0 }).sorted() {
        let rows = relevantRows[u] ?? []
        let history = seen.map { $0[Int(u)] } ?? Array(model.seenItems(user: u))
        var kept = [Int32]()
        kept.reserveCapacity(rows.count)
        for i in rows {
          if binarySearch(history, i) { seenTestItems += 1 } else { kept.append(i) }
        }
        if kept.isEmpty {
          usersWithoutTestItems += 1
          continue
        }
        users.append(u)
        relevant.append(sortedDistinct(kept))
      }
    }
  }

  /// The means of the summed scores, coverage from each item's best rank, and the counts.
  static func evaluation(
    _ total: BlockSums, ks: [Int], targets: Targets, userNDCG: [Double], bestRank: [Int32],
    config: RankingEvaluationConfig
  ) -> RankingEvaluation {
    var result = RankingEvaluation(
      ks: ks, full: [:], coverage: [:], novelty: [:], diversity: [:], sampled: [:],
      sampledMRR: nil, users: total.users, unknownUsers: targets.unknownUsers,
      usersWithoutTestItems: targets.usersWithoutTestItems,
      unknownTestItems: targets.unknownTestItems, seenTestItems: targets.seenTestItems,
      sampledPairs: total.sampledPairs)
    let n = Double(total.users)
    let I = bestRank.count
    if total.users > 0 && config.fullRanking {
      result.userNDCG = targets.users.indices.map { (targets.users[$0], userNDCG[$0]) }
      for (x, k) in ks.enumerated() {
        result.full[k] = total.full[x] / n
        var covered = 0
        for i in 0..<I where bestRank[i] < Int32(k) { covered += 1 }
        result.coverage[k] = I > 0 ? Double(covered) / Double(I) : 0
        if total.noveltyUsers[x] > 0 {
          result.novelty[k] = total.novelty[x] / Double(total.noveltyUsers[x])
        }
        if total.ildUsers[x] > 0 {
          result.diversity[k] = total.ild[x] / Double(total.ildUsers[x])
        }
      }
    }
    if total.users > 0 && config.sampled {
      for (x, k) in ks.enumerated() {
        result.sampled[k] = SampledScores(
          hit: total.sampledHit[x] / n, ndcg: total.sampledNDCG[x] / n)
      }
      result.sampledMRR = total.sampledMRR / n
    }
    return result
  }

  /// Draws up to `count` distinct items in 0..<itemCount with `excluded[i] != stamp`, uniformly
  /// without replacement; fewer (all of them) when fewer are available. Marks the chosen ones.
  static func sampleNegatives(
    count: Int, itemCount: Int, excluded: UnsafeMutablePointer<Int32>, stamp: Int32,
    rng: inout Xoshiro256, into out: inout [Int32]
  ) {
    out.removeAll(keepingCapacity: true)
    if count <= 0 || itemCount == 0 { return }
    var available = 0
    for i in 0..<itemCount where excluded[i] != stamp { available += 1 }
    if available <= 2 * count {
      // Dense case: enumerate the candidates and take a partial Fisher-Yates sample.
      var pool = [Int32]()
      pool.reserveCapacity(available)
      for i in 0..<itemCount where excluded[i] != stamp { pool.append(Int32(i)) }
      let n = min(count, pool.count)
      for j in 0..<n {
        let r = j + rng.nextInt(below: pool.count - j)
        pool.swapAt(j, r)
        out.append(pool[j])
      }
    } else {
      while out.count < count {
        let i = rng.nextInt(below: itemCount)
        if excluded[i] == stamp { continue }
        excluded[i] = stamp
        out.append(Int32(i))
      }
    }
  }

  static func sortedDistinct(_ a: [Int32]) -> [Int32] {
    if a.count < 2 { return a }
    var s = a.sorted()
    var w = 1
    for j in 1..<s.count where s[j] != s[w - 1] {
      s[w] = s[j]
      w += 1
    }
    s.removeLast(s.count - w)
    return s
  }

  static func binarySearch<C: RandomAccessCollection>(_ sorted: C, _ x: Int32) -> Bool
  where C.Element == Int32, C.Index == Int {
    var lo = sorted.startIndex
    var hi = sorted.endIndex
    while lo < hi {
      let mid = (lo + hi) >> 1
      if sorted[mid] < x { lo = mid + 1 } else { hi = mid }
    }
    return lo < sorted.endIndex && sorted[lo] == x
  }
}

/// Per-block sums, reduced in block order.
struct BlockSums {
  var users = 0
  var full: [RankingScores]
  var novelty: [Double]
  var noveltyUsers: [Int]
  var ild: [Double]
  var ildUsers: [Int]
  var sampledHit: [Double]
  var sampledNDCG: [Double]
  var sampledMRR = 0.0
  var sampledPairs = 0

  init(nk: Int) {
    full = Array(repeating: .zero, count: nk)
    novelty = Array(repeating: 0, count: nk)
    noveltyUsers = Array(repeating: 0, count: nk)
    ild = Array(repeating: 0, count: nk)
    ildUsers = Array(repeating: 0, count: nk)
    sampledHit = Array(repeating: 0, count: nk)
    sampledNDCG = Array(repeating: 0, count: nk)
  }

  mutating func add(_ o: BlockSums) {
    users += o.users
    for x in 0..<full.count {
      full[x] = full[x] + o.full[x]
      novelty[x] += o.novelty[x]
      noveltyUsers[x] += o.noveltyUsers[x]
      ild[x] += o.ild[x]
      ildUsers[x] += o.ildUsers[x]
      sampledHit[x] += o.sampledHit[x]
      sampledNDCG[x] += o.sampledNDCG[x]
    }
    sampledMRR += o.sampledMRR
    sampledPairs += o.sampledPairs
  }
}
