#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Top-K accuracy of one user's ranked list (or their mean over users), RecBole's definitions.
///
/// For a ranked list R̂ (truncated at K) and the user's relevant (held-out) items R, with
/// rel_j = 1 when the j-th ranked item is in R:
/// - `hit`:       1 if any of the top K is relevant, else 0 (RecBole `hit`, a.k.a. HR@K).
/// - `precision`: |R̂@K ∩ R| / K. A list shorter than K counts the missing positions as
///   misses, as RecBole's always-K-long top-k does.
/// - `recall`:    |R̂@K ∩ R| / |R|.
/// - `f1`:        2·P·R / (P + R) of this user's precision and recall (0 when both are 0).
///   RecBole has no F1 metric of its own; this is the per-user harmonic mean, averaged over
///   users like every other metric here (it is not the harmonic mean of the averages).
/// - `ndcg`:      Σ_{j≤K} rel_j / log2(j + 1), divided by the ideal Σ_{j≤min(|R|, K)} 1 / log2(j + 1).
/// - `mrr`:       1 / (rank of the first relevant item) if it is within K, else 0.
/// - `map`:       Σ_{j≤K} rel_j · Precision@j, divided by min(|R|, K) (RecBole's normalisation).
public struct RankingScores: Sendable, Equatable {
  public var hit: Double
  public var precision: Double
  public var recall: Double
  public var f1: Double
  public var ndcg: Double
  public var mrr: Double
  public var map: Double

  public init(
    hit: Double, precision: Double, recall: Double, f1: Double, ndcg: Double, mrr: Double,
    map: Double
  ) {
    self.hit = hit
    self.precision = precision
    self.recall = recall
    self.f1 = f1
    self.ndcg = ndcg
    self.mrr = mrr
    self.map = map
  }

  public static let zero = RankingScores(
    hit: 0, precision: 0, recall: 0, f1: 0, ndcg: 0, mrr: 0, map: 0)

  /// The metrics by their lowercase names with the `@k` suffix ("ndcg@10", "hr@10", ...).
  public func metrics(k: Int) -> [String: Double] {
    [
      "hr@\(k)": hit, "precision@\(k)": precision, "recall@\(k)": recall, "f1@\(k)": f1,
      "ndcg@\(k)": ndcg, "mrr@\(k)": mrr, "map@\(k)": map,
    ]
  }

  static func + (a: RankingScores, b: RankingScores) -> RankingScores {
    RankingScores(
      hit: a.hit + b.hit, precision: a.precision + b.precision, recall: a.recall + b.recall,
      f1: a.f1 + b.f1, ndcg: a.ndcg + b.ndcg, mrr: a.mrr + b.mrr, map: a.map + b.map)
  }

  static func / (a: RankingScores, d: Double) -> RankingScores {
    RankingScores(
      hit: a.hit / d, precision: a.precision / d, recall: a.recall / d, f1: a.f1 / d,
      ndcg: a.ndcg / d, mrr: a.mrr / d, map: a.map / d)
  }
}

/// Pure ranking metrics over (ranked list of item indices, set of relevant items). Ranked lists
/// are expected to hold distinct items, best first. A user with no relevant items has no
/// defined score: these functions return nil and evaluators skip (and count) such users.
public enum RankingMetrics {
  /// All seven metrics at cutoff `k` (k ≥ 1) for one user; nil when `relevant` is empty.
  public static func scores<C: Collection>(ranked: C, relevant: Set<Int32>, k: Int)
    -> RankingScores? where C.Element == Int32
  {
    precondition(k >= 1, "k must be at least 1")
    if relevant.isEmpty { return nil }
    var flags = [Bool]()
    flags.reserveCapacity(min(k, ranked.count))
    for item in ranked.prefix(k) { flags.append(relevant.contains(item)) }
    return flags.withUnsafeBufferPointer {
      scores(hitFlags: $0, relevantCount: relevant.count, k: k)
    }
  }

  /// All seven metrics at cutoff `k` from hit indicators: `hitFlags[j]` says whether the item at
  /// rank j + 1 is relevant (RecBole's `pos_index` row; positions past its end are misses), and
  /// `relevantCount` is |R| (RecBole's `pos_len`). nil when `relevantCount` is 0.
  public static func scores(hitFlags: UnsafeBufferPointer<Bool>, relevantCount: Int, k: Int)
    -> RankingScores?
  {
    precondition(k >= 1, "k must be at least 1")
    if relevantCount <= 0 { return nil }
    let n = min(k, hitFlags.count)
    var hits = 0
    var dcg = 0.0
    var firstRank = 0
    var sumPrecision = 0.0
    for j in 0..<n where hitFlags[j] {
      hits += 1
      dcg += 1 / log2(Double(j + 2))
      if firstRank == 0 { firstRank = j + 1 }
      sumPrecision += Double(hits) / Double(j + 1)
    }
    let idealCount = min(relevantCount, k)
    let precision = Double(hits) / Double(k)
    let recall = Double(hits) / Double(relevantCount)
    let f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0
    return RankingScores(
      hit: hits > 0 ? 1 : 0, precision: precision, recall: recall, f1: f1,
      ndcg: dcg / idealDCG(idealCount), mrr: firstRank > 0 ? 1 / Double(firstRank) : 0,
      map: sumPrecision / Double(idealCount))
  }

  /// Σ_{j=1}^{n} 1 / log2(j + 1): the DCG of n relevant items at the top.
  public static func idealDCG(_ n: Int) -> Double {
    var s = 0.0
    var j = 1
    while j <= n {
      s += 1 / log2(Double(j + 1))
      j += 1
    }
    return s
  }

  public static func hit<C: Collection>(ranked: C, relevant: Set<Int32>, k: Int) -> Double?
  where C.Element == Int32 { scores(ranked: ranked, relevant: relevant, k: k)?.hit }

  public static func precision<C: Collection>(ranked: C, relevant: Set<Int32>, k: Int) -> Double?
  where C.Element == Int32 { scores(ranked: ranked, relevant: relevant, k: k)?.precision }

  public static func recall<C: Collection>(ranked: C, relevant: Set<Int32>, k: Int) -> Double?
  where C.Element == Int32 { scores(ranked: ranked, relevant: relevant, k: k)?.recall }

  public static func f1<C: Collection>(ranked: C, relevant: Set<Int32>, k: Int) -> Double?
  where C.Element == Int32 { scores(ranked: ranked, relevant: relevant, k: k)?.f1 }

  public static func ndcg<C: Collection>(ranked: C, relevant: Set<Int32>, k: Int) -> Double?
  where C.Element == Int32 { scores(ranked: ranked, relevant: relevant, k: k)?.ndcg }

  public static func mrr<C: Collection>(ranked: C, relevant: Set<Int32>, k: Int) -> Double?
  where C.Element == Int32 { scores(ranked: ranked, relevant: relevant, k: k)?.mrr }

  public static func map<C: Collection>(ranked: C, relevant: Set<Int32>, k: Int) -> Double?
  where C.Element == Int32 { scores(ranked: ranked, relevant: relevant, k: k)?.map }

  /// Mean of per-user scores over the users that have relevant items (nil entries are skipped);
  /// nil when no user has any.
  public static func mean<S: Sequence>(_ perUser: S) -> RankingScores?
  where S.Element == RankingScores? {
    var sum = RankingScores.zero
    var n = 0
    for case let s? in perUser {
      sum = sum + s
      n += 1
    }
    return n > 0 ? sum / Double(n) : nil
  }

  // MARK: - Sampled protocol

  /// 1-based rank of a held-out item scored `positive` among negatives scored `negatives`, with
  /// ties ordered as `TopK` orders them (lower item index first): a negative ranks above the
  /// positive if its score is higher, or equal with a lower index. A NaN positive ranks last;
  /// NaN negatives never rank above it.
  public static func sampledRank(
    positive: (index: Int32, score: Float), negatives: UnsafeBufferPointer<Int32>,
    scores: UnsafePointer<Float>
  ) -> Int {
    if positive.score.isNaN { return negatives.count + 1 }
    var above = 0
    for c in negatives {
      let s = scores[Int(c)]
      if s > positive.score || (s == positive.score && c < positive.index) { above += 1 }
    }
    return above + 1
  }

  // MARK: - Beyond accuracy

  /// Catalog coverage: distinct items over all `lists` (each truncated to `k`) / `catalogSize`.
  public static func coverage(lists: [[Int32]], k: Int, catalogSize: Int) -> Double {
    guard catalogSize > 0 else { return 0 }
    var distinct = Set<Int32>()
    for l in lists { distinct.formUnion(l.prefix(k)) }
    return Double(distinct.count) / Double(catalogSize)
  }

  /// Self-information of recommending an item, in bits: -log2(share), where the item's
  /// popularity share is the fraction of training users who interacted with it,
  /// `popularity / userCount` (Zhou et al. 2010). An item with no recorded training user counts
  /// as having one, so the value stays finite (at most log2(userCount)).
  public static func selfInformation(popularity: Int32, userCount: Int) -> Double {
    let pop = Double(max(1, popularity))
    return -log2(pop / Double(max(1, userCount)))
  }

  /// Novelty of one list: the mean self-information (see `selfInformation`) of its first `k`
  /// items; nil for an empty list. Evaluators average it over users.
  public static func novelty(
    ranked: [Int32], k: Int, popularity: UnsafeBufferPointer<Int32>, userCount: Int
  ) -> Double? {
    let list = ranked.prefix(k)
    if list.isEmpty { return nil }
    var s = 0.0
    for i in list { s += selfInformation(popularity: popularity[Int(i)], userCount: userCount) }
    return s / Double(list.count)
  }

  /// Intra-list diversity of one list: the mean over pairs of its first `k` items of
  /// 1 − cos(e_i, e_j), with embeddings the rows of the row-major [items, dim] `embeddings`
  /// (a zero vector has cosine 0 with everything). nil for fewer than two items.
  public static func intraListDiversity(
    ranked: [Int32], k: Int, embeddings: UnsafePointer<Float>, dim: Int
  ) -> Double? {
    let list = Array(ranked.prefix(k))
    if list.count < 2 { return nil }
    let norms = list.map { i -> Double in
      Double(VectorMath.dot(embeddings + Int(i) * dim, embeddings + Int(i) * dim, dim))
        .squareRoot()
    }
    return pairwiseDistance(list, norms: norms, embeddings: embeddings, dim: dim)
  }

  static func pairwiseDistance(
    _ list: [Int32], norms: [Double], embeddings: UnsafePointer<Float>, dim: Int
  ) -> Double {
    var s = 0.0
    var pairs = 0
    for a in 0..<list.count {
      let ea = embeddings + Int(list[a]) * dim
      for b in (a + 1)..<list.count {
        let d = norms[a] * norms[b]
        var cos = 0.0
        if d > 0 {
          cos = Double(VectorMath.dot(ea, embeddings + Int(list[b]) * dim, dim)) / d
        }
        s += 1 - cos
        pairs += 1
      }
    }
    return s / Double(pairs)
  }
}
