import Synchronization

/// Exact top-k over a whole catalog for one or several queries at once: the item matrix is read
/// in blocks that stay in cache (`blockItems` rows), each block scored for every query by one
/// matrix product (`scoreBlock`), and each query keeps only its best k in a heap as the blocks go
/// by. No catalog-sized score buffer, and the item matrix is read once for all the queries, which
/// is what makes batching concurrent requests pay: one query alone is bound by memory bandwidth.
public enum BlockedScan {
  /// Items per block: 4,096 rows of dim 64 are 1 MiB, half of this machine's L2.
  public static let blockItems = 4096

  /// What one query keeps and leaves out.
  /// Queries that share one pass over the items (more are scanned in groups of this many).
  public static let maxQueries = 32

  public struct Selection {
    /// How many to keep.
    public var k: Int
    /// Subtracted from each score times the item's `penalties` entry (0: none).
    public var penalty: Float
    /// Scores below are left out.
    public var minScore: Float
    public init(k: Int, penalty: Float = 0, minScore: Float = -.infinity) {
      self.k = k
      self.penalty = penalty
      self.minScore = minScore
    }
  }

  /// For each query j (row j of `queries`, with `offsets[j]`), its top `selections[j].k` items,
  /// best first (equal scores: lower index first), as `TopK.select` over all scores would give.
  /// `skip(j, item)` leaves an item out (asked only of items good enough to enter the top);
  /// `penalties` (one per item) go with `Selection.penalty`. `check` runs between blocks.
  /// With `parallel` > 1 the catalog is cut into that many contiguous parts scanned on as many
  /// threads (for a request alone on an idle server), and the parts' tops merged: the same
  /// result, in less time.
  public static func select(
    model: any RecommendationModel, queries: UnsafePointer<Float>, offsets: UnsafePointer<Float>,
    selections: [Selection], penalties: UnsafeBufferPointer<Float>?, parallel: Int = 1,
    skip: (Int, Int32) -> Bool, check: () throws -> Void
  ) throws -> [[TopK.Entry]] {
    let itemCount = model.itemCount
    let results = try inParts(itemCount: itemCount, parallel: parallel, check: check) {
      items, check in
      try selectGroups(
        model: model, items: items, queries: queries, offsets: offsets, selections: selections,
        penalties: penalties, skip: skip, check: check)
    }
    if results.count == 1 { return results[0] }
    // Merged in the order one scan keeps: higher score first, then lower index.
    return (0..<selections.count).map { j in
      let all = results.flatMap { $0[j] }.sorted { a, b in
        a.score > b.score || (a.score == b.score && a.index < b.index)
      }
      return Array(all.prefix(selections[j].k))
    }
  }

  /// `body` over contiguous parts of `0..<itemCount`: one part, or with `parallel` > 1 as many
  /// as threads (at least a block each), run at once; `check` goes to the first part only.
  static func inParts<T>(
    itemCount: Int, parallel: Int, check: () throws -> Void,
    _ body: (Range<Int>, () throws -> Void) throws -> T
  ) throws -> [T] {
    let parts = max(1, min(parallel, itemCount / blockItems))
    return try withoutActuallyEscaping(check) { check in
      if parts == 1 { return [try body(0..<itemCount, check)] }
      var results = [T?](repeating: nil, count: parts)
      var failure: Error? = nil
      let lock = NSLockLike()
      results.withUnsafeMutableBufferPointer { out in
        let out = Parallel.Confined(out)
        Parallel.run(parts) { part in
          do {
            out.value[part] = try body(
              (itemCount * part / parts)..<(itemCount * (part + 1) / parts),
              part == 0 ? check : {})
          } catch {
            lock.run { failure = error }
          }
        }
      }
      if let failure { throw failure }
      return results.map { $0! }
    }
  }

  private static func selectGroups(
    model: any RecommendationModel, items: Range<Int>, queries: UnsafePointer<Float>,
    offsets: UnsafePointer<Float>, selections: [Selection],
    penalties: UnsafeBufferPointer<Float>?, skip: (Int, Int32) -> Bool, check: () throws -> Void
  ) throws -> [[TopK.Entry]] {
    // Groups of at most `maxQueries` share a scan (what the batch kernel takes).
    var results: [[TopK.Entry]] = []
    results.reserveCapacity(selections.count)
    var first = 0
    while first < selections.count {
      let last = min(selections.count, first + maxQueries)
      results += try scan(
        model: model, items: items, queries: queries + first * model.dim, offsets: offsets + first,
        selections: Array(selections[first..<last]), penalties: penalties,
        skip: { j, item in skip(first + j, item) }, check: check)
      first = last
    }
    return results
  }

  private static func scan(
    model: any RecommendationModel, items: Range<Int>, queries: UnsafePointer<Float>,
    offsets: UnsafePointer<Float>,
    selections: [Selection], penalties: UnsafeBufferPointer<Float>?,
    skip: (Int, Int32) -> Bool, check: () throws -> Void
  ) throws -> [[TopK.Entry]] {
    let n = selections.count
    let stride = n == 1 ? 1 : (n + 7) / 8 * 8
    let itemCount = model.itemCount
    let block = min(blockItems, max(1, itemCount))
    let scores = ThreadScratch.current.floats(stride * block, slot: 5)
    var heaps = selections.map { TopK.Heap(capacity: max(1, min($0.k, itemCount))) }
    defer { for h in heaps { h.free() } }
    var lo = items.lowerBound
    while lo < items.upperBound {
      let hi = min(items.upperBound, lo + block)
      model.scoreBlock(
        queries: queries, count: n, offsets: offsets, items: lo..<hi, into: scores,
        stride: stride)
      if n == 1 {
        // One query: a plain pass over its contiguous scores.
        let selection = selections[0]
        let k = min(selection.k, itemCount)
        if k > 0 {
          var heap = heaps[0]
          let penalty = selection.penalty
          let minScore = selection.minScore
          for i in lo..<hi {
            var s = scores[i - lo]
            if penalty > 0, let penalties { s -= penalty * penalties[i] }
            if s.isNaN || s < minScore { continue }
            if heap.count < k {
              if skip(0, Int32(i)) { continue }
              heap.push(Int32(i), s)
            } else if s > heap.rootScore {
              if skip(0, Int32(i)) { continue }
              heap.replaceRoot(Int32(i), s)
            }
          }
          heaps[0] = heap
        }
      } else {
        try offerBlock(
          scores: scores, stride: stride, items: lo..<hi, selections: selections, heaps: &heaps,
          penalties: penalties, itemCount: itemCount, skip: skip)
      }
      lo = hi
      try check()
    }
    return heaps.map { $0.sortedDescending() }
  }

  /// The block's scores of several queries (item-major, 8 queries a vector) offered to their
  /// heaps: one vector compare per item and 8 queries against each query's bar (the smallest
  /// score that could enter its heap), and the exact checks only for the lanes over it.
  private static func offerBlock(
    scores: UnsafeMutablePointer<Float>, stride: Int, items: Range<Int>, selections: [Selection],
    heaps: inout [TopK.Heap], penalties: UnsafeBufferPointer<Float>?, itemCount: Int,
    skip: (Int, Int32) -> Bool
  ) throws {
    typealias V = SIMD8<Float>
    let n = selections.count
    let groups = stride / 8
    let lo = items.lowerBound
    var penalty = [V](repeating: V(), count: groups)
    var anyPenalty = false
    for j in 0..<n where selections[j].penalty > 0 {
      penalty[j / 8][j % 8] = selections[j].penalty
      anyPenalty = true
    }
    // The bar: while a heap fills, its min score; then the next float above its root.
    func bar(_ j: Int) -> Float {
      let k = min(selections[j].k, itemCount)
      if k <= 0 { return .infinity }
      if heaps[j].count < k { return selections[j].minScore }
      return max(selections[j].minScore, heaps[j].rootScore.nextUp)
    }
    let bars = UnsafeMutablePointer<V>.allocate(capacity: groups)
    defer { bars.deallocate() }
    bars.initialize(repeating: V(repeating: .infinity), count: groups)
    for j in 0..<n { bars[j / 8][j % 8] = bar(j) }
    let raw = UnsafeMutableRawPointer(scores)
    // The common case first: no penalty, and most items under every bar (four rows a test).
    let fast = !anyPenalty && groups == 1
    var i = items.lowerBound
    var slowUntil = i
    while i < items.upperBound {
      if fast && i >= slowUntil && i + 4 <= items.upperBound {
        let row = raw + (i - lo) * 32
        let b = bars[0]
        let over =
          (row.loadUnaligned(as: V.self) .>= b)
          .| (row.loadUnaligned(fromByteOffset: 32, as: V.self) .>= b)
          .| (row.loadUnaligned(fromByteOffset: 64, as: V.self) .>= b)
          .| (row.loadUnaligned(fromByteOffset: 96, as: V.self) .>= b)
        if !any(over) {
          i += 4
          continue
        }
        // Those four one by one.
        slowUntil = i + 4
      }
      defer { i += 1 }
      let row = raw + (i - lo) * stride * 4
      for g in 0..<groups {
        var v = row.loadUnaligned(fromByteOffset: g * 32, as: V.self)
        if anyPenalty, let penalties {
          v -= penalty[g] * V(repeating: penalties[i])
        }
        let over = v .>= bars[g]
        if !any(over) { continue }
        for lane in 0..<8 where over[lane] {
          let j = g * 8 + lane
          let s = v[lane]
          let k = min(selections[j].k, itemCount)
          if heaps[j].count < k {
            if skip(j, Int32(i)) { continue }
            heaps[j].push(Int32(i), s)
          } else if s > heaps[j].rootScore {
            if skip(j, Int32(i)) { continue }
            heaps[j].replaceRoot(Int32(i), s)
          } else {
            continue
          }
          bars[g][lane] = bar(j)
        }
      }
    }
  }
}

/// A tiny lock for the rare error path of a parallel scan.
final class NSLockLike: Sendable {
  private let mutex = Mutex(())
  func run(_ body: () -> Void) { mutex.withLock { _ in body() } }
}
