import CKernels

/// A half-precision copy of a model's item vectors (SEARCH_F16): a query reads half the bytes of
/// the f32 matrix to find a shortlist, and the shortlist is re-scored exactly in f32. The result
/// is the exact top k, not an approximation: the shortlist keeps every item whose half-precision
/// score comes within twice the largest possible rounding error of the k-th best, which provably
/// holds every item of the exact top k (see `select`).
///
/// The vectors are scaled by a power of two before rounding, so that the largest value sits near
/// the top of the half range: nothing overflows, little underflows, and the scale is undone
/// exactly on the query side.
public final class HalfItems: @unchecked Sendable {
  public let count: Int
  public let dim: Int
  /// dim rounded up to a multiple of 8 (rows are padded with zeros, for the vector kernel).
  private let paddedDim: Int
  /// Row-major [count, paddedDim] binary16 values of the item vectors times `scale`.
  private let rows: UnsafeMutablePointer<UInt16>
  /// The model's per-item term of each score (an MF item bias; 0 for a sequence model).
  private let terms: UnsafeMutablePointer<Float>
  /// 1 / scale, a power of two.
  private let inverseScale: Float
  /// The largest Euclidean norm of an item vector, and the largest |per-item term|.
  private let maxNorm: Float
  private let maxTerm: Float

  /// Bytes this copy holds.
  public var byteCount: Int { count * paddedDim * 2 + count * 4 }

  /// Nil when the vectors are not all finite (the model would not score sensibly anyway).
  public init?(model: any RecommendationModel) {
    let n = model.itemCount
    let dim = model.dim
    let items = model.itemFactors
    var maxAbs: Float = 0
    var maxNorm: Float = 0
    for i in 0..<n {
      var norm: Float = 0
      for d in 0..<dim {
        let x = items[i * dim + d]
        if !x.isFinite { return nil }
        maxAbs = max(maxAbs, abs(x))
        norm += x * x
      }
      maxNorm = max(maxNorm, norm.squareRoot())
    }
    // The scale: a power of two taking the largest value to [2^14, 2^15) (half's largest
    // finite value is 65504).
    var exponent = 0
    if maxAbs > 0 { exponent = 14 - Int(maxAbs.exponent) }
    exponent = max(-100, min(100, exponent))
    let scale = Float(sign: .plus, exponent: exponent, significand: 1)
    count = n
    self.dim = dim
    let padded = (dim + 7) / 8 * 8
    paddedDim = padded
    rows = .allocate(capacity: max(1, n * padded))
    rows.initialize(repeating: 0, count: max(1, n * padded))
    for i in 0..<n {
      for d in 0..<dim {
        rows[i * padded + d] = Float16(items[i * dim + d] * scale).bitPattern
      }
    }
    inverseScale = Float(sign: .plus, exponent: -exponent, significand: 1)
    self.maxNorm = maxNorm
    // The per-item terms, as the model adds them: its scores with a zero query and offset.
    terms = .allocate(capacity: max(1, n))
    let zero = [Float](repeating: 0, count: dim)
    var offset: Float = 0
    var lo = 0
    while lo < n {
      let hi = min(n, lo + BlockedScan.blockItems)
      model.scoreBlock(
        queries: zero, count: 1, offsets: &offset, items: lo..<hi, into: terms + lo, stride: 1)
      lo = hi
    }
    var maxTerm: Float = 0
    for i in 0..<n {
      if !terms[i].isFinite { return nil }
      maxTerm = max(maxTerm, abs(terms[i]))
    }
    self.maxTerm = maxTerm
  }

  deinit {
    rows.deallocate()
    terms.deallocate()
  }

  /// What one part of the catalog leaves for the exact re-score.
  private struct Part {
    var top: [Float] = []
    var candidates: [(index: Int32, score: Float)] = []
  }

  /// The exact top `selection.k` for one query, as `BlockedScan.select` returns it (same items,
  /// same f32 scores, same order), from a half-precision shortlist.
  ///
  /// Why nothing is lost: let E bound |approximate − exact| for every item (rounding to half,
  /// then the f32 sums), and A the k-th best approximate score. The k items scoring A or more
  /// approximately score at least A − E exactly, so the exact k-th best is at least A − E, and
  /// any item of the exact top k scores at least A − 2E approximately. Every item at A − 2E or
  /// above is re-scored.
  public func select(
    model: any RecommendationModel, query: UnsafePointer<Float>, offset: Float,
    selection: BlockedScan.Selection, penalties: UnsafeBufferPointer<Float>?, parallel: Int = 1,
    skip: (Int32) -> Bool, check: () throws -> Void
  ) throws -> [TopK.Entry] {
    var maxLogPopularity: Float = 0
    if selection.penalty > 0, let penalties { maxLogPopularity = penalties.max() ?? 0 }
    let scaled = ThreadScratch.current.floats(paddedDim, slot: 8)
    let limit = try prepare(
      query: query, offset: offset, selection: selection, maxLogPopularity: maxLogPopularity,
      into: scaled)
    if limit.k == 0 { return [] }
    let parts = try BlockedScan.inParts(itemCount: count, parallel: parallel, check: check) {
      items, check in
      try scanPart(
        items, query: scaled, offset: offset, limit: limit, penalties: penalties, skip: skip,
        check: check)
    }
    try check()
    return rescore(
      model: model, query: query, offset: offset, limit: limit, parts: parts,
      penalties: penalties)
  }

  /// What one query needs to keep a safe shortlist: its k (capped by the catalog), E, the
  /// margin 2E, the floor (min_score − E) and its penalty.
  struct Limits {
    var k: Int
    var bound: Float
    var margin: Float
    var floor: Float
    var penalty: Float
    var minScore: Float
  }

  /// Writes the query on the copy's scale to `scaled` (paddedDim floats; a power of two: exact,
  /// barring underflow far below any score that matters, which the bound's absolute part
  /// covers) and returns its limits. E: half rounding (relative 2^-11 of each product, so
  /// 2^-11 |q| |v| in all), the f32 sums of both scores (dim · 2^-24 relative each, doubled),
  /// and a few roundings of the additions at the magnitude of the whole score.
  private func prepare(
    query: UnsafePointer<Float>, offset: Float, selection: BlockedScan.Selection,
    maxLogPopularity: Float, into scaled: UnsafeMutablePointer<Float>
  ) throws -> Limits {
    var norm: Float = 0
    for d in 0..<dim {
      scaled[d] = query[d] * inverseScale
      norm += query[d] * query[d]
    }
    for d in dim..<paddedDim { scaled[d] = 0 }
    let dot = norm.squareRoot() * maxNorm
    let magnitude =
      abs(offset) + maxTerm + dot + max(0, selection.penalty) * maxLogPopularity
    let bound: Float =
      (0x1p-11 + Float(dim) * 0x1p-22) * dot * 1.01 + magnitude * 0x1p-19
      + Float.leastNormalMagnitude
    if !(2 * bound).isFinite { throw HalfItemsError.unbounded }
    return Limits(
      k: min(max(0, selection.k), count), bound: bound, margin: 2 * bound,
      floor: selection.minScore - bound, penalty: selection.penalty,
      minScore: selection.minScore)
  }

  /// The exact top k of one query from its parts: A, the k-th best approximate score over all
  /// of them (each part kept its k best); the candidates at A − 2E or above, re-scored as the
  /// full scan computes them; penalty and min_score applied; the scan's order.
  private func rescore(
    model: any RecommendationModel, query: UnsafePointer<Float>, offset: Float, limit: Limits,
    parts: [Part], penalties: UnsafeBufferPointer<Float>?
  ) -> [TopK.Entry] {
    var tops = parts.flatMap(\.top)
    var bar = -Float.infinity
    if tops.count >= limit.k {
      tops.sort(by: >)
      bar = tops[limit.k - 1] - limit.margin
    }
    var shortlist: [Int32] = []
    for part in parts {
      for c in part.candidates where c.score >= bar { shortlist.append(c.index) }
    }
    let exact = ThreadScratch.current.floats(max(1, shortlist.count), slot: 9)
    shortlist.withUnsafeBufferPointer { list in
      model.scoreItems(query: query, offset: offset, items: list, into: exact)
    }
    var entries: [TopK.Entry] = []
    entries.reserveCapacity(shortlist.count)
    for (j, item) in shortlist.enumerated() {
      var s = exact[j]
      if limit.penalty > 0, let penalties { s -= limit.penalty * penalties[Int(item)] }
      if s.isNaN || s < limit.minScore { continue }
      entries.append((item, s))
    }
    entries.sort { a, b in a.score > b.score || (a.score == b.score && a.index < b.index) }
    return Array(entries.prefix(limit.k))
  }

  /// One contiguous part of the catalog: its k best approximate scores and every item that
  /// could still be within `margin` of them.
  private func scanPart(
    _ items: Range<Int>, query: UnsafePointer<Float>, offset: Float, limit: Limits,
    penalties: UnsafeBufferPointer<Float>?, skip: (Int32) -> Bool, check: () throws -> Void
  ) throws -> Part {
    let k = limit.k
    let margin = limit.margin
    let block = BlockedScan.blockItems
    let scores = ThreadScratch.current.floats(block, slot: 12)
    var heap = TopK.Heap(capacity: k)
    defer { heap.free() }
    var candidates: [(index: Int32, score: Float)] = []
    candidates.reserveCapacity(4 * k + 64)
    let floor = limit.floor
    let penalty = limit.penalty
    var lo = items.lowerBound
    while lo < items.upperBound {
      let hi = min(items.upperBound, lo + block)
      ck_scores_half(query, rows + lo * paddedDim, Int32(hi - lo), Int32(paddedDim), scores)
      var bar = heap.count < k ? -Float.infinity : heap.rootScore - margin
      // Eight at a time against the bar (and the floor); the few over it one by one.
      typealias V = SIMD8<Float>
      let raw = UnsafeRawPointer(scores)
      let termsRaw = UnsafeRawPointer(terms)
      var i = lo
      while i < hi {
        if i + 8 <= hi && penalty == 0 {
          let v =
            raw.loadUnaligned(fromByteOffset: (i - lo) * 4, as: V.self) + V(repeating: offset)
            + termsRaw.loadUnaligned(fromByteOffset: i * 4, as: V.self)
          if !any(v .>= V(repeating: max(bar, floor))) {
            i += 8
            continue
          }
        }
        let end = min(hi, i + 8)
        while i < end {
          defer { i += 1 }
          var s = scores[i - lo] + offset + terms[i]
          if penalty > 0, let penalties { s -= penalty * penalties[i] }
          if !(s >= bar) || s < floor { continue }
          let item = Int32(i)
          if skip(item) { continue }
          candidates.append((item, s))
          if heap.count < k {
            heap.push(item, s)
            if heap.count == k { bar = heap.rootScore - margin }
          } else if s > heap.rootScore {
            heap.replaceRoot(item, s)
            bar = heap.rootScore - margin
          }
        }
      }
      // Drops what fell behind the bar, now and then.
      if candidates.count > 8 * k + 1024 {
        candidates.removeAll { !($0.score >= bar) }
      }
      lo = hi
      try check()
    }
    var part = Part()
    part.top = (0..<heap.count).map { heap.val[$0] }
    let bar = heap.count < k ? -Float.infinity : heap.rootScore - margin
    part.candidates = candidates.filter { $0.score >= bar }
    return part
  }
}

extension HalfItems {
  /// The exact top `selections[j].k` of several queries at once (rows of `queries`, with
  /// `offsets`), as `BlockedScan.select` returns them (same items, scores and order), from one
  /// pass over the half copy: each query keeps its shortlist as in `select`, re-scored exactly.
  /// Where the CPU has no batch kernel for the half copy (AVX2 with F16C, or AVX-512), each query
  /// runs `select`.
  public func selectBatch(
    model: any RecommendationModel, queries: UnsafePointer<Float>, offsets: UnsafePointer<Float>,
    selections: [BlockedScan.Selection], penalties: UnsafeBufferPointer<Float>?, parallel: Int = 1,
    skip: (Int, Int32) -> Bool, check: () throws -> Void
  ) throws -> [[TopK.Entry]] {
    var results: [[TopK.Entry]] = []
    results.reserveCapacity(selections.count)
    if ck_level() < 1 || paddedDim > 512 {
      for j in 0..<selections.count {
        results.append(
          try select(
            model: model, query: queries + j * dim, offset: offsets[j], selection: selections[j],
            penalties: penalties, parallel: parallel, skip: { skip(j, $0) }, check: check))
      }
      return results
    }
    var first = 0
    while first < selections.count {
      let last = min(selections.count, first + 32)
      results += try selectGroup(
        model: model, queries: queries + first * dim, offsets: offsets + first,
        selections: Array(selections[first..<last]), penalties: penalties, parallel: parallel,
        skip: { j, item in skip(first + j, item) }, check: check)
      first = last
    }
    return results
  }

  private func selectGroup(
    model: any RecommendationModel, queries: UnsafePointer<Float>, offsets: UnsafePointer<Float>,
    selections: [BlockedScan.Selection], penalties: UnsafeBufferPointer<Float>?, parallel: Int,
    skip: (Int, Int32) -> Bool, check: () throws -> Void
  ) throws -> [[TopK.Entry]] {
    let n = selections.count
    let scaled = ThreadScratch.current.floats(n * paddedDim, slot: 13)
    var maxLogPopularity: Float = 0
    if selections.contains(where: { $0.penalty > 0 }), let penalties {
      maxLogPopularity = penalties.max() ?? 0
    }
    var limits: [Limits] = []
    limits.reserveCapacity(n)
    for j in 0..<n {
      limits.append(
        try prepare(
          query: queries + j * dim, offset: offsets[j], selection: selections[j],
          maxLogPopularity: maxLogPopularity, into: scaled + j * paddedDim))
    }
    let parts = try BlockedScan.inParts(itemCount: count, parallel: parallel, check: check) {
      items, check in
      try scanBatchPart(
        items, queries: scaled, offsets: offsets, limits: limits, penalties: penalties,
        skip: skip, check: check)
    }
    try check()
    return (0..<n).map { j in
      limits[j].k == 0
        ? []
        : rescore(
          model: model, query: queries + j * dim, offset: offsets[j], limit: limits[j],
          parts: parts.map { $0[j] }, penalties: penalties)
    }
  }

  /// Per lane (query j is lane j % 8 of group j / 8): the floor its scores must reach to be
  /// kept (∞ for a query that wants nothing) and its popularity-penalty weight (when
  /// `penalized`). Returns whether any query has a penalty.
  private static func setLanes(
    _ limits: [Limits], penalized: Bool, thresholds: UnsafeMutablePointer<SIMD8<Float>>,
    penaltyLanes: inout [SIMD8<Float>]
  ) -> Bool {
    thresholds.initialize(repeating: SIMD8(repeating: .infinity), count: penaltyLanes.count)
    var anyPenalty = false
    for j in limits.indices {
      thresholds[j / 8][j % 8] = limits[j].k > 0 ? limits[j].floor : .infinity
      if limits[j].penalty > 0 && penalized {
        penaltyLanes[j / 8][j % 8] = limits[j].penalty
        anyPenalty = true
      }
    }
    return anyPenalty
  }

  /// One part of the catalog for a group of queries: per query, its k best approximate scores
  /// and the items within its margin of them.
  private func scanBatchPart(
    _ items: Range<Int>, queries: UnsafePointer<Float>, offsets: UnsafePointer<Float>,
    limits: [Limits], penalties: UnsafeBufferPointer<Float>?, skip: (Int, Int32) -> Bool,
    check: () throws -> Void
  ) throws -> [Part] {
    typealias V = SIMD8<Float>
    let n = limits.count
    let stride = (n + 7) / 8 * 8
    let groups = stride / 8
    let block = BlockedScan.blockItems
    let scores = ThreadScratch.current.floats(stride * block, slot: 14)
    var heaps = limits.map { TopK.Heap(capacity: max(1, $0.k)) }
    defer { for h in heaps { h.free() } }
    var candidates = [[(index: Int32, score: Float)]](repeating: [], count: n)
    // Per lane: what a score must reach to be kept (the floor, then the heap's bar).
    let thresholds = UnsafeMutablePointer<V>.allocate(capacity: groups)
    defer { thresholds.deallocate() }
    var penaltyLanes = [V](repeating: V(), count: groups)
    let anyPenalty = Self.setLanes(
      limits, penalized: penalties != nil, thresholds: thresholds, penaltyLanes: &penaltyLanes)
    func threshold(_ j: Int) -> Float {
      let limit = limits[j]
      if heaps[j].count < limit.k { return limit.floor }
      return max(limit.floor, heaps[j].rootScore - limit.margin)
    }
    let raw = UnsafeMutableRawPointer(scores)
    var lo = items.lowerBound
    while lo < items.upperBound {
      let hi = min(items.upperBound, lo + block)
      let done = ck_scores_half_batch(
        queries, Int32(n), offsets, rows + lo * paddedDim, terms + lo, Int32(hi - lo),
        Int32(paddedDim), scores, Int32(stride))
      precondition(done == 1, "half batch kernel unavailable")
      for i in lo..<hi {
        let row = raw + (i - lo) * stride * 4
        for g in 0..<groups {
          var v = row.loadUnaligned(fromByteOffset: g * 32, as: V.self)
          if anyPenalty, let penalties {
            v -= penaltyLanes[g] * V(repeating: penalties[i])
          }
          let over = v .>= thresholds[g]
          if !any(over) { continue }
          for lane in 0..<8 where over[lane] {
            let j = g * 8 + lane
            let s = v[lane]
            let item = Int32(i)
            if skip(j, item) { continue }
            candidates[j].append((item, s))
            let k = limits[j].k
            if heaps[j].count < k {
              heaps[j].push(item, s)
            } else if s > heaps[j].rootScore {
              heaps[j].replaceRoot(item, s)
            }
            thresholds[g][lane] = threshold(j)
          }
        }
      }
      // Drops what fell behind the bars, now and then.
      for j in 0..<n where candidates[j].count > 8 * limits[j].k + 1024 {
        let t = threshold(j)
        candidates[j].removeAll { !($0.score >= t) }
      }
      lo = hi
      try check()
    }
    return (0..<n).map { j in
      var part = Part()
      part.top = (0..<heaps[j].count).map { heaps[j].val[$0] }
      let t = heaps[j].count < limits[j].k ? -Float.infinity : heaps[j].rootScore - limits[j].margin
      part.candidates = candidates[j].filter { $0.score >= t }
      return part
    }
  }
}

public enum HalfItemsError: Error, CustomStringConvertible {
  case unbounded
  public var description: String {
    "the query's scores are too large for the half-precision search to bound its error; use SEARCH_EXACT"
  }
}
