/// Exact top-k selection with a binary min-heap of size k: O(n log k) worst case, and in practice
/// O(n) since most scores fail the cheap comparison against the heap's smallest entry before
/// `skip` is asked. Results are sorted by score descending; equal scores are ordered by lower
/// index first. NaN scores are never selected.
public enum TopK {
  public typealias Entry = (index: Int32, score: Float)

  /// Top `k` of `scores[0..<count]`, leaving out every index for which `skip` returns true.
  @inlinable
  public static func select(
    scores: UnsafePointer<Float>, count: Int, k: Int, skip: (Int32) -> Bool
  ) -> [Entry] {
    let k = min(k, count)
    if k <= 0 { return [] }
    var heap = Heap(capacity: k)
    defer { heap.free() }
    var i = 0
    // Fill phase.
    while i < count && heap.count < k {
      let s = scores[i]
      if !s.isNaN && !skip(Int32(i)) { heap.push(Int32(i), s) }
      i += 1
    }
    // Steady state: indices increase, so an equal score never beats the root.
    while i < count {
      let s = scores[i]
      if s > heap.rootScore && !skip(Int32(i)) {
        heap.replaceRoot(Int32(i), s)
      }
      i += 1
    }
    return heap.sortedDescending()
  }

  /// Convenience without a filter.
  @inlinable
  public static func select(scores: UnsafePointer<Float>, count: Int, k: Int) -> [Entry] {
    select(scores: scores, count: count, k: k, skip: { _ in false })
  }

  /// Top `k` among `candidates`, with `scores` indexed by item (scores[candidates[j]]).
  /// Duplicate candidates are counted once; out-of-range (negative) indices are ignored, and
  /// `count` (the length of `scores`) bounds them from above.
  @inlinable
  public static func select(
    scores: UnsafePointer<Float>, count: Int, candidates: UnsafeBufferPointer<Int32>, k: Int,
    skip: (Int32) -> Bool
  ) -> [Entry] {
    let k = min(k, candidates.count)
    if k <= 0 { return [] }
    var heap = Heap(capacity: k)
    defer { heap.free() }
    for c in candidates {
      if c < 0 || Int(c) >= count { continue }
      let s = scores[Int(c)]
      if s.isNaN { continue }
      if heap.count < k {
        if heap.contains(c) || skip(c) { continue }
        heap.push(c, s)
      } else if Heap.worse(heap.rootIndex, heap.rootScore, c, s) {
        if heap.contains(c) || skip(c) { continue }
        heap.replaceRoot(c, s)
      }
    }
    return heap.sortedDescending()
  }

  /// Top `k` of parallel arrays: `scores[j]` is the score of `indices[j]` (e.g. scores computed
  /// only for a candidate list). Duplicate indices are counted once.
  /// With `distinct` (the caller guarantees no index repeats) no search of the heap is made:
  /// O(n log k) whatever k is.
  @inlinable
  public static func select(
    indices: UnsafeBufferPointer<Int32>, scores: UnsafePointer<Float>, k: Int,
    distinct: Bool = false, skip: (Int32) -> Bool
  ) -> [Entry] {
    let k = min(k, indices.count)
    if k <= 0 { return [] }
    var heap = Heap(capacity: k)
    defer { heap.free() }
    for j in 0..<indices.count {
      let c = indices[j]
      let s = scores[j]
      if s.isNaN { continue }
      if heap.count < k {
        if (!distinct && heap.contains(c)) || skip(c) { continue }
        heap.push(c, s)
      } else if Heap.worse(heap.rootIndex, heap.rootScore, c, s) {
        if (!distinct && heap.contains(c)) || skip(c) { continue }
        heap.replaceRoot(c, s)
      }
    }
    return heap.sortedDescending()
  }

  /// A min-heap on (score, -index): the root is the worst entry kept.
  @usableFromInline
  struct Heap {
    @usableFromInline let idx: UnsafeMutablePointer<Int32>
    @usableFromInline let val: UnsafeMutablePointer<Float>
    @usableFromInline var count = 0

    @inlinable
    init(capacity: Int) {
      idx = .allocate(capacity: capacity)
      val = .allocate(capacity: capacity)
    }

    @inlinable
    func free() {
      idx.deallocate()
      val.deallocate()
    }

    @inlinable var rootScore: Float { val[0] }
    @inlinable var rootIndex: Int32 { idx[0] }

    /// Whether (ia, sa) ranks below (ib, sb).
    @inlinable @inline(__always)
    static func worse(_ ia: Int32, _ sa: Float, _ ib: Int32, _ sb: Float) -> Bool {
      sa < sb || (sa == sb && ia > ib)
    }

    @inlinable
    func contains(_ c: Int32) -> Bool {
      for j in 0..<count where idx[j] == c { return true }
      return false
    }

    @inlinable
    mutating func push(_ i: Int32, _ s: Float) {
      var j = count
      count += 1
      while j > 0 {
        let parent = (j - 1) >> 1
        if Heap.worse(i, s, idx[parent], val[parent]) {
          idx[j] = idx[parent]
          val[j] = val[parent]
          j = parent
        } else {
          break
        }
      }
      idx[j] = i
      val[j] = s
    }

    @inlinable
    mutating func replaceRoot(_ i: Int32, _ s: Float) {
      var j = 0
      let n = count
      while true {
        let l = 2 * j + 1
        if l >= n { break }
        var c = l
        let r = l + 1
        if r < n && Heap.worse(idx[r], val[r], idx[l], val[l]) { c = r }
        if Heap.worse(idx[c], val[c], i, s) {
          idx[j] = idx[c]
          val[j] = val[c]
          j = c
        } else {
          break
        }
      }
      idx[j] = i
      val[j] = s
    }

    @inlinable
    func sortedDescending() -> [Entry] {
      var out = [Entry]()
      out.reserveCapacity(count)
      for j in 0..<count { out.append((idx[j], val[j])) }
      out.sort { a, b in a.score > b.score || (a.score == b.score && a.index < b.index) }
      return out
    }
  }
}
