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
    let k = min(selection.k, count)
    if k <= 0 { return [] }
    // The query on the copy's scale (a power of two: exact, barring underflow far below any
    // score that matters, which the error bound's absolute part covers).
    let scratch = ThreadScratch.current
    let scaled = scratch.floats(paddedDim, slot: 8)
    var queryNorm: Float = 0
    for d in 0..<dim {
      scaled[d] = query[d] * inverseScale
      queryNorm += query[d] * query[d]
    }
    for d in dim..<paddedDim { scaled[d] = 0 }
    queryNorm = queryNorm.squareRoot()
    let penalty = selection.penalty
    var maxPenalty: Float = 0
    if penalty > 0, let penalties { maxPenalty = penalty * (penalties.max() ?? 0) }
    // E: half rounding (relative 2^-11 of each product, so 2^-11 |q| |v| in all), the f32 sums
    // of both scores (dim · 2^-24 relative each, doubled), and a few roundings of the
    // additions at the magnitude of the whole score.
    let dot = queryNorm * maxNorm
    let magnitude = abs(offset) + maxTerm + dot + maxPenalty
    let bound: Float =
      (0x1p-11 + Float(dim) * 0x1p-22) * dot * 1.01 + magnitude * 0x1p-19
      + Float.leastNormalMagnitude
    let margin = 2 * bound
    if !margin.isFinite { throw HalfItemsError.unbounded }

    let parts = max(1, min(parallel, count / BlockedScan.blockItems))
    var results = [Part](repeating: Part(), count: parts)
    var failure: Error? = nil
    if parts == 1 {
      do {
        results[0] = try scanPart(
          0..<count, query: scaled, offset: offset, k: k, selection: selection,
          penalties: penalties, bound: bound, margin: margin, skip: skip, check: check)
      } catch { failure = error }
    } else {
      let lock = NSLockLike()
      results.withUnsafeMutableBufferPointer { out in
        let out = Parallel.Confined(out)
        Parallel.run(parts) { part in
          let lo = count * part / parts
          let hi = count * (part + 1) / parts
          do {
            out.value[part] = try scanPart(
              lo..<hi, query: scaled, offset: offset, k: k, selection: selection,
              penalties: penalties, bound: bound, margin: margin, skip: skip,
              check: part == 0 ? check : {})
          } catch {
            lock.run { failure = error }
          }
        }
      }
    }
    if let failure { throw failure }

    // A: the k-th best approximate score over the whole catalog (each part kept its k best).
    var tops = results.flatMap(\.top)
    var bar = -Float.infinity
    if tops.count >= k {
      tops.sort(by: >)
      bar = tops[k - 1] - margin
    }
    var shortlist: [Int32] = []
    for part in results {
      for c in part.candidates where c.score >= bar { shortlist.append(c.index) }
    }
    try check()
    // The exact re-score, as the full scan computes it.
    let exact = scratch.floats(max(1, shortlist.count), slot: 9)
    shortlist.withUnsafeBufferPointer { list in
      model.scoreItems(query: query, offset: offset, items: list, into: exact)
    }
    var entries: [TopK.Entry] = []
    entries.reserveCapacity(shortlist.count)
    for (j, item) in shortlist.enumerated() {
      var s = exact[j]
      if penalty > 0, let penalties { s -= penalty * penalties[Int(item)] }
      if s.isNaN || s < selection.minScore { continue }
      entries.append((item, s))
    }
    entries.sort { a, b in a.score > b.score || (a.score == b.score && a.index < b.index) }
    return Array(entries.prefix(k))
  }

  /// One contiguous part of the catalog: its k best approximate scores and every item that
  /// could still be within `margin` of them.
  private func scanPart(
    _ items: Range<Int>, query: UnsafePointer<Float>, offset: Float, k: Int,
    selection: BlockedScan.Selection, penalties: UnsafeBufferPointer<Float>?, bound: Float,
    margin: Float, skip: (Int32) -> Bool, check: () throws -> Void
  ) throws -> Part {
    let block = BlockedScan.blockItems
    let scores = ThreadScratch.current.floats(block, slot: 12)
    var heap = TopK.Heap(capacity: k)
    defer { heap.free() }
    var candidates: [(index: Int32, score: Float)] = []
    candidates.reserveCapacity(4 * k + 64)
    let floor = selection.minScore - bound
    let penalty = selection.penalty
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

public enum HalfItemsError: Error, CustomStringConvertible {
  case unbounded
  public var description: String {
    "the query's scores are too large for the half-precision search to bound its error; use SEARCH_EXACT"
  }
}
