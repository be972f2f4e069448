/// Exact top-k over a whole catalog for one or several queries at once: the item matrix is read
/// in blocks that stay in cache (`blockItems` rows), each block scored for every query by one
/// matrix product (`scoreBlock`), and each query keeps only its best k in a heap as the blocks go
/// by. No catalog-sized score buffer, and the item matrix is read once for all the queries, which
/// is what makes batching concurrent requests pay: one query alone is bound by memory bandwidth.
public enum BlockedScan {
  /// Items per block: 4,096 rows of dim 64 are 1 MiB, half of this machine's L2.
  public static let blockItems = 4096

  /// What one query keeps and leaves out.
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
  public static func select(
    model: any RecommendationModel, queries: UnsafePointer<Float>, offsets: UnsafePointer<Float>,
    selections: [Selection], penalties: UnsafeBufferPointer<Float>?,
    skip: (Int, Int32) -> Bool, check: () throws -> Void
  ) throws -> [[TopK.Entry]] {
    let n = selections.count
    let itemCount = model.itemCount
    let block = min(blockItems, max(1, itemCount))
    let scores = ThreadScratch.current.floats(n * block, slot: 5)
    var heaps = selections.map { TopK.Heap(capacity: max(1, min($0.k, itemCount))) }
    defer { for h in heaps { h.free() } }
    var lo = 0
    while lo < itemCount {
      let hi = min(itemCount, lo + block)
      model.scoreBlock(
        queries: queries, count: n, offsets: offsets, items: lo..<hi, into: scores, ld: block)
      for j in 0..<n {
        let row = scores + j * block
        let selection = selections[j]
        let k = min(selection.k, itemCount)
        if k <= 0 { continue }
        if selection.penalty > 0, let penalties {
          for i in lo..<hi { row[i - lo] -= selection.penalty * penalties[i] }
        }
        let minScore = selection.minScore
        var heap = heaps[j]
        for i in lo..<hi {
          let s = row[i - lo]
          if s.isNaN || s < minScore { continue }
          if heap.count < k {
            if skip(j, Int32(i)) { continue }
            heap.push(Int32(i), s)
          } else if s > heap.rootScore {
            if skip(j, Int32(i)) { continue }
            heap.replaceRoot(Int32(i), s)
          }
        }
        heaps[j] = heap
      }
      lo = hi
      try check()
    }
    return heaps.map { $0.sortedDescending() }
  }
}
