import CKernels
import Foundation

/// An inverted-file index over a model's item vectors (SEARCH_IVF), as FAISS `IndexIVFFlat` with
/// inner-product search: an L2 k-means coarse quantiser cuts the catalog into `lists` cells, each
/// cell's items stored together (a reordered copy of their vectors, their per-item terms and
/// their original indices), and a query scans only the `nprobe` cells whose centroids score
/// highest for it.
///
/// The model's per-item term (an MF item bias) goes in as one more coordinate: the k-means runs
/// on (item vector, term) and a centroid scores offset + its mean term + q·centroid, which is
/// the inner product of (q, 1) with it. A probed cell is scored with the same kernel and the same
/// float operations as the exact scan (`scoreBlock` of one query), so the scores it returns are
/// exactly the model's, and `skip`, penalties and `minScore` apply to them as in
/// `BlockedScan.select`.
///
/// Building is bounded and off the request path: a two-level k-means (about √lists coarse cells,
/// each split by its own k-means into its share of the lists) trained on samples of at most
/// `pointsPerList` points a list, then every item placed in the nearest list among those of its
/// nearest coarse cells (a quarter of them, at least 8) and one restricted Lloyd step. A flat
/// k-means compares every sampled item with every centroid for each iteration; this compares
/// each item with about a quarter of the centroids twice (1M x 64 with 4,000 lists: a few
/// seconds on two cores, where FAISS takes about a minute to train and add).
public final class IVFIndex: @unchecked Sendable {
  /// Number of inverted lists (k-means cells).
  public let lists: Int
  /// Lists a request visits when it names no nprobe.
  public let defaultProbe: Int
  public let itemCount: Int
  public let dim: Int
  /// Seconds the build took.
  public let buildSeconds: Double

  /// lists x dim centroid vectors, and each centroid's term (its cell's mean per-item term;
  /// −∞ for an empty cell, so that it is never probed before a cell with items).
  private let centroids: UnsafeMutablePointer<Float>
  private let centroidTerms: UnsafeMutablePointer<Float>
  /// Cell c holds positions starts[c]..<starts[c+1] of `order`, `vectors` and `terms`.
  private let starts: [Int]
  private let order: UnsafeMutablePointer<Int32>
  private let vectors: UnsafeMutablePointer<Float>
  /// Per-item terms by position; nil when the model has none (all zero).
  private let terms: UnsafeMutablePointer<Float>?
  private let largestList: Int

  /// Iterations of each k-means.
  public static let iterations = 12
  /// Coarse cells whose lists a point may join (see `cluster`).
  /// A quarter of the coarse cells, at least 8, measured: on 250k clustered items (500 planted
  /// clusters, 1,000 lists) recall@10 at nprobe 10 is 0.954 with 3 cells, 0.993 with 8, 0.9995
  /// as a flat k-means; with 16 cells and one restricted Lloyd step, 1.000.
  static func refineCells(coarse: Int) -> Int { min(coarse, max(8, (coarse + 3) / 4)) }
  /// Restricted Lloyd steps after the first placement (see `cluster`).
  static let refineRounds = 1
  /// Sample size of a k-means, per cell it trains.
  public static let pointsPerList = 96

  /// Lists when none are asked for: about 4·√items (FAISS's rule of thumb), within 1...items.
  public static func defaultLists(items: Int) -> Int {
    max(1, min(items, Int((4 * Double(items).squareRoot()).rounded())))
  }

  /// nprobe when none is asked for: lists/80 (rounded up), at least 8, at most all lists. Measured
  /// (Benchmarks/ivf_vs_faiss.py, 1M x 64 items in 2,000 planted clusters, 4,000 lists): recall@10
  /// 0.995 at nprobe 10, 0.998 at 50 (this default), 0.999 at 200; so about 5x the probes that
  /// already reach 0.99 there, as margin for catalogs less clustered than that one.
  public static func defaultProbe(lists: Int) -> Int {
    min(lists, max(8, (lists + 79) / 80))
  }

  /// Builds the index for `model` (on the calling thread and, for the assignments, up to
  /// `threads` threads). `lists` 0 and `probe` 0 pick the defaults above.
  public init(
    model: any RecommendationModel, lists: Int = 0, probe: Int = 0, seed: UInt64 = 0x1F_1DE5,
    threads: Int = ProcessInfo.processInfo.activeProcessorCount
  ) {
    let start = DispatchTime.now().uptimeNanoseconds
    let n = model.itemCount
    let d = model.dim
    let threads = max(1, threads)
    itemCount = n
    dim = d
    let listCount = lists > 0 ? max(1, min(lists, n)) : Self.defaultLists(items: n)
    self.lists = listCount
    defaultProbe = probe > 0 ? min(probe, listCount) : Self.defaultProbe(lists: listCount)

    let itemTerms = Self.itemTerms(model)
    defer { itemTerms.deallocate() }
    var hasTerms = false
    for i in 0..<n where itemTerms[i] != 0 {
      hasTerms = true
      break
    }
    var labels = [Int32](repeating: 0, count: n)
    let cells = labels.withUnsafeMutableBufferPointer { labels in
      Self.clusterItems(
        model, terms: hasTerms ? itemTerms : nil, lists: listCount, seed: seed,
        labels: labels.baseAddress!, threads: threads)
    }

    // Cells in order, items in index order within a cell.
    var starts = [Int](repeating: 0, count: listCount + 1)
    for l in labels { starts[Int(l) + 1] += 1 }
    for c in 0..<listCount { starts[c + 1] += starts[c] }
    let order = UnsafeMutablePointer<Int32>.allocate(capacity: max(1, n))
    var next = Array(starts[0..<listCount])
    for i in 0..<n {
      let c = Int(labels[i])
      order[next[c]] = Int32(i)
      next[c] += 1
    }
    let vectors = UnsafeMutablePointer<Float>.allocate(capacity: max(1, n * d))
    let terms = hasTerms ? UnsafeMutablePointer<Float>.allocate(capacity: n) : nil
    let factors = model.itemFactors
    for p in 0..<n {
      let i = Int(order[p])
      (vectors + p * d).update(from: factors + i * d, count: d)
      terms?[p] = itemTerms[i]
    }
    let centroids = UnsafeMutablePointer<Float>.allocate(capacity: max(1, listCount * d))
    let centroidTerms = UnsafeMutablePointer<Float>.allocate(capacity: listCount)
    Self.cellMeans(
      starts: starts, vectors: vectors, terms: terms, dim: d, emptyCells: cells,
      centroids: centroids, centroidTerms: centroidTerms)
    self.starts = starts
    self.order = order
    self.vectors = vectors
    self.terms = terms
    self.centroids = centroids
    self.centroidTerms = centroidTerms
    self.largestList = (0..<listCount).map { starts[$0 + 1] - starts[$0] }.max() ?? 0
    buildSeconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
  }

  /// The per-item terms (an MF item bias): the scores of a zero query with offset 0.
  /// The caller deallocates them.
  private static func itemTerms(_ model: any RecommendationModel) -> UnsafeMutablePointer<Float> {
    let n = model.itemCount
    let itemTerms = UnsafeMutablePointer<Float>.allocate(capacity: max(1, n))
    let zero = [Float](repeating: 0, count: max(1, model.dim))
    var offset: Float = 0
    var lo = 0
    while lo < n {
      let hi = min(n, lo + BlockedScan.blockItems)
      model.scoreBlock(
        queries: zero, count: 1, offsets: &offset, items: lo..<hi, into: itemTerms + lo,
        stride: 1)
      lo = hi
    }
    return itemTerms
  }

  /// Clusters the model's items (their vectors, with the term as one more coordinate when
  /// there are terms) into `lists` cells: writes each item's cell to `labels` and returns the
  /// lists x (dim + 1 if terms) centroids.
  private static func clusterItems(
    _ model: any RecommendationModel, terms: UnsafeMutablePointer<Float>?, lists: Int,
    seed: UInt64, labels: UnsafeMutablePointer<Int32>, threads: Int
  ) -> [Float] {
    let n = model.itemCount
    let d = model.dim
    let width = d + (terms != nil ? 1 : 0)
    guard n > 0 else { return [Float](repeating: 0, count: lists * width) }
    let factors = model.itemFactors
    var augmented: UnsafeMutablePointer<Float>? = nil
    if let terms {
      let a = UnsafeMutablePointer<Float>.allocate(capacity: n * width)
      for i in 0..<n {
        (a + i * width).update(from: factors + i * d, count: d)
        a[i * width + d] = terms[i]
      }
      augmented = a
    }
    defer { augmented?.deallocate() }
    var rng = Xoshiro256(seed: seed)
    return cluster(
      points: UnsafePointer(augmented) ?? factors, count: n, dim: width, lists: lists,
      seed: seed, rng: &rng, labels: labels, threads: threads)
  }

  /// Each centroid: the mean of its cell's final members, and its term the mean of theirs (0
  /// without terms); an empty cell keeps its k-means centroid (from `emptyCells`, rows of
  /// dim or dim + 1) and gets term −∞, so that it is never probed before a cell with items.
  private static func cellMeans(
    starts: [Int], vectors: UnsafePointer<Float>, terms: UnsafePointer<Float>?, dim d: Int,
    emptyCells cells: [Float], centroids: UnsafeMutablePointer<Float>,
    centroidTerms: UnsafeMutablePointer<Float>
  ) {
    let width = d + (terms != nil ? 1 : 0)
    var sums = [Double](repeating: 0, count: width)
    for c in 0..<(starts.count - 1) {
      let size = starts[c + 1] - starts[c]
      if size == 0 {
        for k in 0..<d { centroids[c * d + k] = cells[c * width + k] }
        centroidTerms[c] = -.infinity
        continue
      }
      for k in 0..<width { sums[k] = 0 }
      for p in starts[c]..<starts[c + 1] {
        for k in 0..<d { sums[k] += Double(vectors[p * d + k]) }
        if let terms { sums[d] += Double(terms[p]) }
      }
      for k in 0..<d { centroids[c * d + k] = Float(sums[k] / Double(size)) }
      centroidTerms[c] = terms != nil ? Float(sums[d] / Double(size)) : 0
    }
  }

  deinit {
    order.deallocate()
    vectors.deallocate()
    terms?.deallocate()
    centroids.deallocate()
    centroidTerms.deallocate()
  }

  /// Items in each list (for tests and reports).
  public var listSizes: [Int] { (0..<lists).map { starts[$0 + 1] - starts[$0] } }

  /// The original item indices of list `list`, in the order stored.
  public func items(inList list: Int) -> [Int32] {
    (starts[list]..<starts[list + 1]).map { order[$0] }
  }

  /// The `nprobe` lists whose centroids score highest for `query` (offset + the centroid's mean
  /// term + query·centroid), best first; equal scores: the lower list first.
  public func probe(query: UnsafePointer<Float>, nprobe: Int) -> [TopK.Entry] {
    let centroidScores = ThreadScratch.current.floats(lists, slot: 10)
    ck_scores_single(query, centroids, Int32(lists), Int32(dim), centroidScores)
    for c in 0..<lists { centroidScores[c] += centroidTerms[c] }
    return TopK.select(scores: centroidScores, count: lists, k: min(max(1, nprobe), lists))
  }

  /// About how many multiply-adds one query with `nprobe` costs (for pricing a request): every
  /// centroid, then the average items of `nprobe` lists.
  public func work(nprobe: Int) -> Int {
    let probes = Double(min(max(1, nprobe), lists))
    return lists * dim + Int(probes * Double(itemCount) / Double(lists) * Double(dim))
  }

  /// The top `selection.k` items (exact f32 scores, as the exact scan computes them) among the
  /// items of the `nprobe` lists whose centroids score highest for the query. `skip`, the
  /// penalties and `selection.minScore` apply as in `BlockedScan.select`.
  public func select(
    model: any RecommendationModel, query: UnsafePointer<Float>, offset: Float,
    selection: BlockedScan.Selection, penalties: UnsafeBufferPointer<Float>?, nprobe: Int,
    skip: (Int32) -> Bool, check: () throws -> Void
  ) throws -> [TopK.Entry] {
    let k = min(selection.k, itemCount)
    if k <= 0 { return [] }
    precondition(model.itemCount == itemCount && model.dim == dim, "index of another model")
    let probed = probe(query: query, nprobe: nprobe)
    try check()

    let scores = ThreadScratch.current.floats(max(1, largestList), slot: 11)
    let penalty = selection.penalty
    let minScore = selection.minScore
    var heap = TopK.Heap(capacity: k)
    defer { heap.free() }
    for (list, _) in probed {
      let lo = starts[Int(list)]
      let count = starts[Int(list) + 1] - lo
      if count == 0 { continue }
      // The same sums as `scoreBlock` of one query: dot, + offset, + the item's term.
      ck_scores_single(query, vectors + lo * dim, Int32(count), Int32(dim), scores)
      for j in 0..<count {
        var s = scores[j] + offset
        if let terms { s = s + terms[lo + j] }
        let item = order[lo + j]
        if penalty > 0, let penalties { s -= penalty * penalties[Int(item)] }
        if s.isNaN || s < minScore { continue }
        if heap.count < k {
          if skip(item) { continue }
          heap.push(item, s)
        } else if TopK.Heap.worse(heap.rootIndex, heap.rootScore, item, s) {
          if skip(item) { continue }
          heap.replaceRoot(item, s)
        }
      }
      try check()
    }
    var top = heap.sortedDescending()

    // The model's own score of each item kept: equal to the scan's by construction; should a
    // model ever score otherwise, its scores win and the order and threshold follow them.
    var exact = true
    var one: Float = 0
    var o = offset
    for j in 0..<top.count {
      let i = Int(top[j].index)
      model.scoreBlock(
        queries: query, count: 1, offsets: &o, items: i..<(i + 1), into: &one, stride: 1)
      var s = one
      if penalty > 0, let penalties { s -= penalty * penalties[i] }
      if s != top[j].score && !(s.isNaN && top[j].score.isNaN) {
        top[j].score = s
        exact = false
      }
    }
    if !exact {
      top.removeAll { $0.score.isNaN || $0.score < minScore }
      top.sort { a, b in a.score > b.score || (a.score == b.score && a.index < b.index) }
    }
    return top
  }

  /// Two-level k-means: returns lists x dim centroids and writes each point's list to `labels`.
  /// Up to 64 lists (or as many points as lists): one k-means. Above: about √lists coarse
  /// cells; each coarse cell split by its own k-means (on the points nearest it) into a share
  /// of the lists proportional to its points (at least one, at most its points); and each point
  /// placed in the nearest list among those of its `refineCells` nearest coarse cells (in high
  /// dimensions a coarse centroid, the mean of many clusters, says little about which of its
  /// neighbours holds a point's nearest list: with 3 cells, points were left in lists of the
  /// wrong cluster where no probe found them), then `refineRounds` restricted Lloyd steps.
  private static func cluster(
    points: UnsafePointer<Float>, count n: Int, dim: Int, lists: Int, seed: UInt64,
    rng: inout Xoshiro256, labels: UnsafeMutablePointer<Int32>, threads: Int
  ) -> [Float] {
    if lists <= 64 || n <= lists {
      let centroids = flat(
        points: points, count: n, dim: dim, k: lists, rng: &rng, threads: threads)
      centroids.withUnsafeBufferPointer { c in
        KMeans.assign(
          points: points, count: n, dim: dim, centroids: c.baseAddress!, k: lists,
          labels: labels, threads: threads)
      }
      return centroids
    }
    let coarseCount = max(2, Int(Double(lists).squareRoot().rounded()))
    let coarse = flat(
      points: points, count: n, dim: dim, k: coarseCount, rng: &rng, threads: threads)
    // Each point's nearest coarse cells: the first trains that cell's lists, and all of them
    // are searched for the point's final list (a point near a coarse border belongs with
    // lists across it).
    let cells = CoarseCells(
      points: points, count: n, dim: dim, coarse: coarse, coarseCount: coarseCount,
      m: refineCells(coarse: coarseCount), lists: lists, threads: threads)
    var centroids = cells.splitEach(seed: seed, threads: threads)
    for round in 0...refineRounds {
      if round > 0 {
        CoarseCells.moveToMeans(
          &centroids, points: points, count: n, dim: dim, lists: lists, labels: labels)
      }
      cells.placeInNearestList(centroids: centroids, labels: labels, threads: threads)
    }
    return centroids
  }

  /// A k-means of `k` cells trained on a sample of at most `pointsPerList` points a cell.
  static func flat(
    points: UnsafePointer<Float>, count n: Int, dim: Int, k: Int, rng: inout Xoshiro256,
    threads: Int
  ) -> [Float] {
    let sampleCount = min(n, k * pointsPerList)
    if sampleCount == n {
      return KMeans.train(
        points: points, count: n, dim: dim, k: k, iterations: iterations, rng: &rng,
        threads: threads)
    }
    // A uniform sample without replacement (a partial Fisher-Yates shuffle), in index order.
    var pick = [Int32](0..<Int32(n))
    for j in 0..<sampleCount {
      pick.swapAt(j, j + rng.nextInt(below: n - j))
    }
    var chosen = Array(pick[0..<sampleCount])
    chosen.sort()
    let sample = UnsafeMutablePointer<Float>.allocate(capacity: sampleCount * dim)
    defer { sample.deallocate() }
    for j in 0..<sampleCount {
      (sample + j * dim).update(from: points + Int(chosen[j]) * dim, count: dim)
    }
    return KMeans.train(
      points: sample, count: sampleCount, dim: dim, k: k, iterations: iterations, rng: &rng,
      threads: threads)
  }

  /// `total` split over cells in proportion to `sizes` (largest remainders), every non-empty
  /// cell getting at least 1 and at most its size; sums to `total` when total <= sum(sizes).
  static func apportion(_ total: Int, sizes: [Int]) -> [Int] {
    let n = sizes.reduce(0, +)
    if n == 0 { return sizes.map { _ in 0 } }
    var shares = sizes.map { $0 == 0 ? 0 : max(1, min($0, total * $0 / n)) }
    var sum = shares.reduce(0, +)
    // Remainders, largest first, until the sum is reached (or cells are full / at 1).
    let byRemainder = sizes.indices.sorted { a, b in
      let ra = Double(total) * Double(sizes[a]) / Double(n) - Double(shares[a])
      let rb = Double(total) * Double(sizes[b]) / Double(n) - Double(shares[b])
      return ra > rb || (ra == rb && a < b)
    }
    var changed = true
    while sum < total && changed {
      changed = false
      for c in byRemainder where sum < total && shares[c] < sizes[c] {
        shares[c] += 1
        sum += 1
        changed = true
      }
    }
    changed = true
    while sum > total && changed {
      changed = false
      for c in byRemainder.reversed() where sum > total && shares[c] > 1 {
        shares[c] -= 1
        sum -= 1
        changed = true
      }
    }
    return shares
  }
}
