import CKernels
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

  @Test(arguments: [
    (items: 10_000, dim: 64, queries: 13), (items: 5_003, dim: 24, queries: 40),
    (items: 3_001, dim: 50, queries: 7), (items: 8_191, dim: 32, queries: 6),
  ])
  func batchEqualsEachQueryAlone(shape: (items: Int, dim: Int, queries: Int)) throws {
    let model = try Self.model(items: shape.items, dim: shape.dim, seed: 4)
    let n = shape.queries
    var rng = Xoshiro256(seed: 9)
    let queries = (0..<(n * shape.dim)).map { _ in Float(rng.nextGaussian()) }
    let offsets = (0..<n).map { Float($0) * 0.1 }
    let penalties = (0..<shape.items).map { Float(($0 * 13) % 7) * 0.1 }
    // Mixed k, penalties, minimum scores and filters (a batch of 6 has no penalty: the scan's
    // fast path for up to 8 queries without one).
    let selections = (0..<n).map { j in
      BlockedScan.Selection(
        k: [1, 10, 100, 5_000, 20_000][j % 5], penalty: j % 3 == 0 && n != 6 ? 0.5 : 0,
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

/// The kernels' one summation order (CKernels.h), checked against a plain Swift statement of it
/// for every dim from 1 to 70 and every way in: alone, by index, and in batches of any size.
@Suite struct KernelOrderTests {
  static func reference(_ x: UnsafePointer<Float>, _ q: UnsafePointer<Float>, _ dim: Int) -> Float {
    var a = [Float](repeating: 0, count: 8)
    var d = 0
    while d < dim {
      for l in 0..<8 {
        let at = d + l
        // Fused multiply-add, as the kernels; zeros past dim.
        a[l] = at < dim ? a[l].addingProduct(x[at], q[at]) : a[l].addingProduct(0, 0)
      }
      d += 8
    }
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
  }

  /// At every kernel level this CPU offers (portable C, AVX2, AVX-512): other tests running
  /// meanwhile get the same floats from whichever level, which is the point.
  @Test func everyKernelSumsInTheDocumentedOrder() {
    let most = ck_level()
    defer { _ = ck_set_level(most) }
    var levels: [Int32] = []
    for level in Int32(0)...2 where ck_set_level(level) == level { levels.append(level) }
    #expect(levels.first == 0)
    for level in levels {
      _ = ck_set_level(level)
      checkEveryDim(level: level)
    }
  }

  func checkEveryDim(level: Int32) {
    var rng = Xoshiro256(seed: 77)
    for dim in 1...70 {
      let n = 37
      let count = 1 + (dim * 7) % 32
      let stride = (count + 7) / 8 * 8
      let items = (0..<(n * dim)).map { _ in Float(rng.nextGaussian()) }
      let queries = (0..<(count * dim)).map { _ in Float(rng.nextGaussian()) }
      var single = [Float](repeating: .nan, count: n)
      var indexed = [Float](repeating: .nan, count: n)
      var batch = [Float](repeating: .nan, count: n * stride)
      let order: [Int32] = (0..<Int32(n)).reversed()
      let offsets = (0..<count).map { _ in Float(rng.nextGaussian()) }
      let terms = (0..<n).map { _ in Float(rng.nextGaussian()) }
      items.withUnsafeBufferPointer { x in
        queries.withUnsafeBufferPointer { q in
          ck_scores_single(q.baseAddress!, x.baseAddress!, Int32(n), Int32(dim), &single)
          ck_scores_indexed(q.baseAddress!, x.baseAddress!, Int32(dim), order, Int32(n), &indexed)
          ck_scores_batch(
            q.baseAddress!, Int32(count), offsets, x.baseAddress!, terms, Int32(n), Int32(dim),
            &batch, Int32(stride))
          if dim % 8 == 0 { checkHalfBatch(level, dim, n, count, stride, x, q, offsets, terms) }
          for i in 0..<n {
            let row = x.baseAddress! + i * dim
            #expect(
              single[i] == Self.reference(row, q.baseAddress!, dim),
              "level \(level) dim \(dim) item \(i)")
            #expect(
              indexed[n - 1 - i] == Self.reference(row, q.baseAddress!, dim), "dim \(dim) item \(i)"
            )
            for j in 0..<stride {
              let want =
                j < count
                ? (Self.reference(row, q.baseAddress! + j * dim, dim) + offsets[j]) + terms[i] : 0
              #expect(
                batch[i * stride + j] == want, "level \(level) dim \(dim) item \(i) query \(j)")
            }
          }
        }
      }
    }
  }

  /// The half-precision batch kernel (where this level has one) sums the f16-rounded rows in the
  /// same documented order, so it matches the reference on those rows exactly.
  func checkHalfBatch(
    _ level: Int32, _ dim: Int, _ n: Int, _ count: Int, _ stride: Int,
    _ x: UnsafeBufferPointer<Float>, _ q: UnsafeBufferPointer<Float>, _ offsets: [Float],
    _ terms: [Float]
  ) {
    let halves = x.map { Float16($0).bitPattern }
    let rounded = halves.map { Float(Float16(bitPattern: $0)) }
    var out = [Float](repeating: .nan, count: n * stride)
    let done = ck_scores_half_batch(
      q.baseAddress!, Int32(count), offsets, halves, terms, Int32(n), Int32(dim), &out,
      Int32(stride))
    if done == 0 {
      #expect(level == 0, "level \(level) has a half batch kernel and did not use it")
      return
    }
    rounded.withUnsafeBufferPointer { r in
      for i in 0..<n {
        for j in 0..<stride {
          let want =
            j < count
            ? (Self.reference(r.baseAddress! + i * dim, q.baseAddress! + j * dim, dim) + offsets[j])
              + terms[i] : 0
          #expect(out[i * stride + j] == want, "half, level \(level) dim \(dim) item \(i) query \(j)")
        }
      }
    }
  }
}
