import Foundation
import Testing

@testable import RecServeModels

/// The blocked scan of many queries at once (what batching concurrent Ranks uses) selects
/// exactly what scoring each query alone over the whole catalog and `TopK.select` would.
@Suite struct BlockedScanTests {
  static func model(items: Int, dim: Int, seed: UInt64) throws -> MFModel {
    var rng = Xoshiro256(seed: seed)
    let users = 40
    func normal(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.nextGaussian()) } }
    var itemFactors = normal(items * dim)
    // A few exact ties, to check that equal scores keep the lower index.
    for d in 0..<dim { itemFactors[7 * dim + d] = itemFactors[3 * dim + d] }
    return try MFModel(
      kind: "bpr", userIds: (0..<users).map { "u\($0)" }, itemIds: (0..<items).map { "i\($0)" },
      dim: dim, globalMean: 0.5, userFactors: normal(users * dim), itemFactors: itemFactors,
      userBias: normal(users), itemBias: normal(items),
      seen: (0..<users).map { u in (0..<20).map { Int32((u * 37 + $0 * 11) % items) } })
  }

  @Test(arguments: [(items: 10_000, dim: 64, queries: 13), (items: 5_003, dim: 24, queries: 40)])
  func batchEqualsEachQueryAlone(shape: (items: Int, dim: Int, queries: Int)) throws {
    let model = try Self.model(items: shape.items, dim: shape.dim, seed: 4)
    let n = shape.queries
    var rng = Xoshiro256(seed: 9)
    let queries = (0..<(n * shape.dim)).map { _ in Float(rng.nextGaussian()) }
    let offsets = (0..<n).map { Float($0) * 0.1 }
    let penalties = (0..<shape.items).map { Float(($0 * 13) % 7) * 0.1 }
    // Mixed k, penalties, minimum scores and filters.
    let selections = (0..<n).map { j in
      BlockedScan.Selection(
        k: [1, 10, 100, 5_000, 20_000][j % 5], penalty: j % 3 == 0 ? 0.5 : 0,
        minScore: j % 4 == 1 ? 2 : -.infinity)
    }
    let excluded = (0..<n).map { j in Set((0..<50).map { Int32(($0 * 97 + j) % shape.items) }) }
    let batch = try queries.withUnsafeBufferPointer { q in
      try offsets.withUnsafeBufferPointer { o in
        try penalties.withUnsafeBufferPointer { p in
          try BlockedScan.select(
            model: model, queries: q.baseAddress!, offsets: o.baseAddress!,
            selections: selections, penalties: p, skip: { j, item in excluded[j].contains(item) },
            check: {})
        }
      }
    }
    for j in 0..<n {
      // The same query alone (what a request finding no other in flight gets).
      let alone = try queries.withUnsafeBufferPointer { q in
        try penalties.withUnsafeBufferPointer { p in
          var offset = offsets[j]
          return try BlockedScan.select(
            model: model, queries: q.baseAddress! + j * shape.dim, offsets: &offset,
            selections: [selections[j]], penalties: p,
            skip: { _, item in excluded[j].contains(item) }, check: {})
        }
      }[0]
      #expect(batch[j].map(\.index) == alone.map(\.index), "query \(j)")
      #expect(batch[j].map(\.score) == alone.map(\.score), "query \(j): scores differ")
      #expect(!batch[j].contains { excluded[j].contains($0.index) })
      // And what scoring the whole catalog and selecting gives, up to float rounding.
      var scores = [Float](repeating: 0, count: shape.items)
      queries.withUnsafeBufferPointer { q in
        scores.withUnsafeMutableBufferPointer {
          model.scoreAll(
            query: q.baseAddress! + j * shape.dim, offset: offsets[j], into: $0.baseAddress!)
        }
      }
      let selection = selections[j]
      for i in 0..<shape.items { scores[i] -= selection.penalty * penalties[i] }
      let reference = scores.withUnsafeBufferPointer { s in
        TopK.select(scores: s.baseAddress!, count: shape.items, k: min(selection.k, 50)) { item in
          s[Int(item)] < selection.minScore || excluded[j].contains(item)
        }
      }
      let head = Array(batch[j].prefix(reference.count))
      #expect(head.count == reference.count, "query \(j)")
      for (a, b) in zip(head, reference) {
        #expect(abs(a.score - b.score) <= 1e-4 * max(1, abs(b.score)), "query \(j)")
      }
    }
  }
}
