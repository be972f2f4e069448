import Foundation
import RecServeModels

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
