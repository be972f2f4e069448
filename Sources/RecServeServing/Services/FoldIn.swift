import CBLAS
import Foundation
import RecServeModels

/// Scores for a user the model never saw, from the items they just interacted with: solve the
/// user's vector against those items' factors (ridge regression, as one ALS half-step does), then
/// score the catalog with it.
enum FoldIn {
  /// Regularization of the solve, per recent item.
  static let lambda: Float = 0.1

  static func scoreAll(
    model: MFModel, recentItems: [Int32], into scores: UnsafeMutablePointer<Float>
  ) {
    let dim = model.dim
    let items = Array(Set(recentItems))
    // Each recent item counts as liked: the target is how far a top rating lies above the
    // item's baseline.
    let top = model.ratingRange?.upperBound ?? (model.globalMean + 1)
    var gram = [Float](repeating: 0, count: dim * dim)
    var rhs = [Float](repeating: 0, count: dim)
    for item in items {
      let row = model.itemFactors + Int(item) * dim
      let target = top - model.globalMean - model.itemBias[Int(item)]
      gram.withUnsafeMutableBufferPointer { gram in
        cblas_ssyr(CblasRowMajor, CblasUpper, Int32(dim), 1, row, 1, gram.baseAddress, Int32(dim))
      }
      for d in 0..<dim { rhs[d] += target * row[d] }
    }
    let ridge = lambda * Float(items.count)
    for d in 0..<dim { gram[d * dim + d] += ridge }
    let vector = Cholesky.solve(upper: &gram, rhs: rhs, dim: dim)
    vector.withUnsafeBufferPointer { vector in
      model.scoreAll(userVector: vector.baseAddress!, userBias: 0, into: scores)
    }
  }
}

/// Solves A x = b for a symmetric positive-definite A given by its upper triangle (row-major).
enum Cholesky {
  static func solve(upper a: inout [Float], rhs: [Float], dim n: Int) -> [Float] {
    // Factor A = Uᵀ U in place (upper triangle), in Double for stability.
    var u = [Double](repeating: 0, count: n * n)
    for i in 0..<n {
      for j in i..<n { u[i * n + j] = Double(a[i * n + j]) }
    }
    for i in 0..<n {
      var diagonal = u[i * n + i]
      for k in 0..<i { diagonal -= u[k * n + i] * u[k * n + i] }
      let root = diagonal > 1e-12 ? diagonal.squareRoot() : 1e-6
      u[i * n + i] = root
      for j in (i + 1)..<max(i + 1, n) {
        var value = u[i * n + j]
        for k in 0..<i { value -= u[k * n + i] * u[k * n + j] }
        u[i * n + j] = value / root
      }
    }
    // Uᵀ y = b, then U x = y.
    var y = [Double](repeating: 0, count: n)
    for i in 0..<n {
      var value = Double(rhs[i])
      for k in 0..<i { value -= u[k * n + i] * y[k] }
      y[i] = value / u[i * n + i]
    }
    var x = [Double](repeating: 0, count: n)
    for i in stride(from: n - 1, through: 0, by: -1) {
      var value = y[i]
      for k in (i + 1)..<max(i + 1, n) { value -= u[i * n + k] * x[k] }
      x[i] = value / u[i * n + i]
    }
    return x.map { Float($0) }
  }
}

/// Maximal-marginal-relevance re-ranking over item embeddings.
enum Diversity {
  /// Picks `k` of `pool` greedily by (1 - λ)·relevance − λ·(highest cosine similarity to an item
  /// already picked), relevance scaled to 0...1 within the pool. Scores returned are the original ones.
  static func rerank(pool: [TopK.Entry], k: Int, lambda: Float, served: ServedVersion) -> [TopK
    .Entry]
  {
    let model = served.model
    let dim = model.dim
    let factors = model.itemFactors
    let highest = pool.map(\.score).max() ?? 0
    let lowest = pool.map(\.score).min() ?? 0
    let span = highest - lowest
    var remaining = pool
    var picked: [TopK.Entry] = []
    var maxSimilarity = [Float](repeating: -1, count: pool.count)
    while picked.count < k && !remaining.isEmpty {
      var best = 0
      var bestValue = -Float.infinity
      for (index, entry) in remaining.enumerated() {
        let relevance = span > 0 ? (entry.score - lowest) / span : 1
        let penalty = picked.isEmpty ? 0 : max(0, maxSimilarity[index])
        let value = (1 - lambda) * relevance - lambda * penalty
        if value > bestValue {
          bestValue = value
          best = index
        }
      }
      let chosen = remaining.remove(at: best)
      maxSimilarity.remove(at: best)
      picked.append(chosen)
      let chosenRow = factors + Int(chosen.index) * dim
      let chosenNorm = served.itemNorms[Int(chosen.index)]
      for (index, entry) in remaining.enumerated() {
        let row = factors + Int(entry.index) * dim
        var dot: Float = 0
        for d in 0..<dim { dot += row[d] * chosenRow[d] }
        let denominator = chosenNorm * served.itemNorms[Int(entry.index)]
        let similarity = denominator > 0 ? dot / denominator : 0
        if similarity > maxSimilarity[index] { maxSimilarity[index] = similarity }
      }
    }
    return picked
  }
}
