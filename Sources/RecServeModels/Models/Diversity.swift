import CBLAS

/// Maximal-marginal-relevance re-ranking and cosine similarity over item embeddings.
public enum Diversity {
  /// Picks `k` of `pool` greedily by (1 - λ)·relevance − λ·(highest cosine similarity to an item
  /// already picked), relevance scaled to 0...1 within the pool. Scores returned are the original
  /// ones. Each pick updates every pool item's highest similarity with one `sgemv` over the
  /// pool's unit embeddings (k × pool × dim multiply-adds in all, which the caller bounds);
  /// `check` runs every few picks and may throw to stop.
  /// `norms` holds each item's embedding norm (`Diversity.norms`).
  public static func rerank(
    pool: [TopK.Entry], k: Int, lambda: Float, model: any RecommendationModel,
    norms: UnsafeBufferPointer<Float>, check: () throws -> Void
  ) throws -> [TopK.Entry] {
    let dim = model.dim
    let n = pool.count
    let factors = model.itemFactors
    let scratch = ThreadScratch.current
    // Unit rows of the pool (zero rows stay zero: similarity 0), their similarity to the last
    // pick, each item's highest similarity so far, its relevance.
    let rows = scratch.floats(n * dim, slot: 1)
    let similarity = scratch.floats(n, slot: 2)
    let highest = scratch.floats(n, slot: 3)
    let relevance = scratch.floats(n, slot: 4)
    var top = -Float.infinity
    var bottom = Float.infinity
    for entry in pool {
      top = max(top, entry.score)
      bottom = min(bottom, entry.score)
    }
    let span = top - bottom
    do {
      for (j, entry) in pool.enumerated() {
        let item = Int(entry.index)
        let norm = norms[item]
        let scale: Float = norm > 0 ? 1 / norm : 0
        let source = factors + item * dim
        let target = rows + j * dim
        for d in 0..<dim { target[d] = source[d] * scale }
        relevance[j] = span > 0 ? (entry.score - bottom) / span : 1
        highest[j] = -1
      }
    }
    var picked: [TopK.Entry] = []
    picked.reserveCapacity(min(k, n))
    // The pool's order breaks ties, as a scan of it would; a picked item is marked by -inf.
    while picked.count < min(k, n) {
      if picked.count % 16 == 15 { try check() }
      var best = -1
      var bestValue = -Float.infinity
      let penalise = !picked.isEmpty
      for j in 0..<n where relevance[j] > -.infinity {
        let penalty = penalise ? max(0, highest[j]) : 0
        let value = (1 - lambda) * relevance[j] - lambda * penalty
        if best < 0 || value > bestValue {
          bestValue = value
          best = j
        }
      }
      guard best >= 0 else { break }
      picked.append(pool[best])
      relevance[best] = -.infinity
      if picked.count < min(k, n) {
        cblas_sgemv(
          CblasRowMajor, CblasNoTrans, Int32(n), Int32(dim), 1, rows, Int32(dim),
          rows + best * dim, 1, 0, similarity, 1)
        for j in 0..<n where similarity[j] > highest[j] { highest[j] = similarity[j] }
      }
    }
    return picked
  }

  /// The Euclidean norm of every item embedding.
  public static func norms(_ model: any RecommendationModel) -> [Float] {
    let dim = model.dim
    let factors = model.itemFactors
    return (0..<model.itemCount).map { item in
      VectorMath.dot(factors + item * dim, factors + item * dim, dim).squareRoot()
    }
  }

  /// out[i] = cosine similarity of item i's embedding with `item`'s (0 where a norm is 0), for
  /// every item, by one `sgemv`.
  public static func cosine(
    to item: Int32, model: any RecommendationModel, norms: UnsafeBufferPointer<Float>,
    into out: UnsafeMutablePointer<Float>
  ) {
    let itemCount = model.itemCount
    let dim = model.dim
    let factors = model.itemFactors
    cblas_sgemv(
      CblasRowMajor, CblasNoTrans, Int32(itemCount), Int32(dim), 1, factors, Int32(dim),
      factors + Int(item) * dim, 1, 0, out, 1)
    let queryNorm = norms[Int(item)]
    for other in 0..<itemCount {
      let denominator = norms[other] * queryNorm
      out[other] = denominator > 0 ? out[other] / denominator : 0
    }
  }
}
