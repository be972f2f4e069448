import Foundation
import Testing

@testable import RecServeModels

/// SEARCH_F16: a half-precision shortlist re-scored in f32 returns exactly what the exact scan
/// returns (items, scores and order), for any k, filters, penalties and minimum scores.
@Suite struct HalfItemsTests {
  /// A catalog where half precision does lose order: near-duplicate items (differences far
  /// below half's resolution), norms spread over two orders of magnitude, biases.
  static func model(items: Int, dim: Int, seed: UInt64) throws -> MFModel {
    var rng = Xoshiro256(seed: seed)
    let users = 30
    func normal(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.nextGaussian()) } }
    var itemFactors = normal(items * dim)
    for i in 0..<items {
      let norm = Float(exp(rng.nextGaussian() * 1.2))
      for d in 0..<dim { itemFactors[i * dim + d] *= norm }
    }
    // Pairs that differ by one part in 10^5: the same half vector, different exact scores.
    for i in stride(from: 0, to: items - 1, by: 50) {
      for d in 0..<dim { itemFactors[(i + 1) * dim + d] = itemFactors[i * dim + d] * 1.00001 }
    }
    // Exact ties.
    for d in 0..<dim { itemFactors[9 * dim + d] = itemFactors[4 * dim + d] }
    return try MFModel(
      kind: "bpr", userIds: (0..<users).map { "u\($0)" }, itemIds: (0..<items).map { "i\($0)" },
      dim: dim, globalMean: 0.25, userFactors: normal(users * dim), itemFactors: itemFactors,
      userBias: normal(users), itemBias: normal(items).map { $0 * 0.1 },
      seen: (0..<users).map { _ in [] })
  }

  @Test(arguments: [(items: 20_000, dim: 64), (items: 9_001, dim: 20)])
  func shortlistThenExactEqualsTheExactScan(shape: (items: Int, dim: Int)) throws {
    let model = try Self.model(items: shape.items, dim: shape.dim, seed: 11)
    let half = try #require(HalfItems(model: model))
    var rng = Xoshiro256(seed: 5)
    let penalties = (0..<shape.items).map { Float(($0 * 31) % 9) * 0.05 }
    var shortlisted = 0
    for j in 0..<24 {
      // Queries of very different scales, some aimed at an item (many near-ties at the top).
      var query = (0..<shape.dim).map { _ in Float(rng.nextGaussian()) * [0.001, 1, 50][j % 3] }
      if j % 4 == 0 {
        let target = (j * 977) % shape.items
        for d in 0..<shape.dim { query[d] = model.itemFactors[target * shape.dim + d] }
      }
      let selection = BlockedScan.Selection(
        k: [1, 10, 100, 1_000][j % 4], penalty: j % 3 == 1 ? 0.3 : 0,
        minScore: j % 5 == 2 ? 1 : -.infinity)
      let excluded = Set((0..<40).map { Int32(($0 * 131 + j) % shape.items) })
      let offset = Float(j) * 0.05
      for parallel in [1, 2] {
        let exact = try query.withUnsafeBufferPointer { q in
          try penalties.withUnsafeBufferPointer { p in
            var o = offset
            return try BlockedScan.select(
              model: model, queries: q.baseAddress!, offsets: &o, selections: [selection],
              penalties: p, skip: { _, item in excluded.contains(item) }, check: {})
          }
        }[0]
        let fast = try query.withUnsafeBufferPointer { q in
          try penalties.withUnsafeBufferPointer { p in
            try half.select(
              model: model, query: q.baseAddress!, offset: offset, selection: selection,
              penalties: p, parallel: parallel, skip: { excluded.contains($0) }, check: {})
          }
        }
        // (Compared as one Bool: a failure prints where, not two lists of a thousand.)
        let same = fast.count == exact.count && zip(fast, exact).allSatisfy { $0 == $1 }
        let first = (0..<min(fast.count, exact.count)).first { fast[$0] != exact[$0] }
        #expect(
          same,
          "query \(j), parallel \(parallel): \(fast.count) vs \(exact.count) items, first difference at \(first.map(String.init) ?? "the end")"
        )
        #expect(!fast.contains { excluded.contains($0.index) })
        shortlisted += fast.count
      }
    }
    #expect(shortlisted > 0)
  }

  @Test func candidateScoresMatchTheScan() throws {
    // scoreItems (candidates, re-scoring) gives the scan's floats bit for bit.
    let model = try Self.model(items: 3_000, dim: 36, seed: 2)
    var rng = Xoshiro256(seed: 8)
    let query = (0..<36).map { _ in Float(rng.nextGaussian()) }
    var all = [Float](repeating: 0, count: 3_000)
    var offset: Float = 0.7
    query.withUnsafeBufferPointer { q in
      all.withUnsafeMutableBufferPointer {
        model.scoreBlock(
          queries: q.baseAddress!, count: 1, offsets: &offset, items: 0..<3_000,
          into: $0.baseAddress!, stride: 1)
      }
    }
    let picked: [Int32] = (0..<500).map { Int32(($0 * 7_919) % 3_000) }
    var some = [Float](repeating: 0, count: picked.count)
    query.withUnsafeBufferPointer { q in
      picked.withUnsafeBufferPointer { items in
        some.withUnsafeMutableBufferPointer {
          model.scoreItems(query: q.baseAddress!, offset: 0.7, items: items, into: $0.baseAddress!)
        }
      }
    }
    #expect(some == picked.map { all[Int($0)] })
  }

  @Test func nonFiniteVectorsGetNoCopy() throws {
    let model = try MFModel(
      kind: "bpr", userIds: ["u"], itemIds: ["a", "b"], dim: 2, globalMean: 0,
      userFactors: [1, 1], itemFactors: [1, .infinity, 0, 1], userBias: [0], itemBias: [0, 0],
      seen: [[]])
    #expect(HalfItems(model: model) == nil)
  }
}

extension HalfItemsTests {
  /// Many queries in one pass over the half copy (what a batch of f16 Ranks does): each gets the
  /// exact scan's answer, whatever its k, penalty, threshold and exclusions, whole or split.
  @Test(arguments: [(items: 9_001, dim: 20, queries: 13), (items: 20_000, dim: 64, queries: 40)])
  func batchShortlistsEqualTheExactScan(shape: (items: Int, dim: Int, queries: Int)) throws {
    let queryCount = shape.queries
    let itemCount = shape.items
    let model = try Self.model(items: itemCount, dim: shape.dim, seed: 11)
    let half = try #require(HalfItems(model: model))
    var rng = Xoshiro256(seed: 23)
    let dim = shape.dim
    var queries = (0..<(queryCount * dim)).map { j in
      Float(rng.nextGaussian()) * [0.001, 1, 50][(j / dim) % 3]
    }
    for j in stride(from: 0, to: queryCount, by: 4) {
      // Some aimed at an item (near-ties at the top); the others tiny, unit or large.
      let target = (j * 977) % itemCount
      for d in 0..<dim {
        queries[j * dim + d] = model.itemFactors[target * dim + d]
      }
    }
    let offsets = (0..<queryCount).map { Float($0) * 0.03 }
    let penalties = (0..<itemCount).map { Float(($0 * 7) % 11) * 0.04 }
    let selections = (0..<queryCount).map { j in
      BlockedScan.Selection(
        k: [1_000, 10, 1_000, 100, 0, 1][j % 6], penalty: j % 4 == 2 ? 0.25 : 0,
        minScore: j % 7 == 5 ? 1.5 : -.infinity)
    }
    var excluded: [Set<Int32>] = []
    for j in 0..<queryCount {
      var set = Set<Int32>()
      for t in 0..<30 { set.insert(Int32((t * 211 + j * 7) % itemCount)) }
      excluded.append(set)
    }
    let exact = try queries.withUnsafeBufferPointer { q in
      try offsets.withUnsafeBufferPointer { o in
        try penalties.withUnsafeBufferPointer { p in
          try BlockedScan.select(
            model: model, queries: q.baseAddress!, offsets: o.baseAddress!,
            selections: selections, penalties: p, skip: { j, item in excluded[j].contains(item) },
            check: {})
        }
      }
    }
    for parallel in [1, 2] {
      let fast = try queries.withUnsafeBufferPointer { q in
        try offsets.withUnsafeBufferPointer { o in
          try penalties.withUnsafeBufferPointer { p in
            try half.selectBatch(
              model: model, queries: q.baseAddress!, offsets: o.baseAddress!,
              selections: selections, penalties: p, parallel: parallel,
              skip: { j, item in excluded[j].contains(item) }, check: {})
          }
        }
      }
      #expect(fast.count == queryCount)
      for j in 0..<min(fast.count, exact.count) {
        let same =
          fast[j].count == exact[j].count && zip(fast[j], exact[j]).allSatisfy { $0 == $1 }
        #expect(same, "query \(j), parallel \(parallel): \(fast[j].count) vs \(exact[j].count)")
      }
    }
  }
}
