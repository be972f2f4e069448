/// The second level of `IVFIndex`'s two-level k-means: the coarse cells' members, each cell's
/// share of the lists, and the two steps run on them: splitting every cell into its share by
/// its own k-means, and placing every point in the nearest list among those of its `m` nearest
/// cells. Both spread the cells over the threads (largest first); neither result depends on how
/// the cells fall to the threads.
struct CoarseCells {
  let count: Int
  let points: UnsafePointer<Float>
  let pointCount: Int
  let dim: Int
  let lists: Int
  /// Members of cell c (the points nearest it): members[memberStarts[c]..<memberStarts[c+1]].
  private var memberStarts: [Int]
  private var members: [Int32]
  /// The points that have cell c among their m nearest: slots[slotStarts[c]..<slotStarts[c+1]].
  private var slotStarts: [Int]
  private var slots: [Int32]
  /// Members per cell, lists per cell, and cell c's first list.
  let sizes: [Int]
  let shares: [Int]
  private let firstList: [Int]
  /// Cells by decreasing size (ties by index): the order the threads take them in.
  private let byWork: [Int]

  /// Groups the points by their nearest coarse centroids (`m` per point, the first being its
  /// cell) and apportions `lists` over the cells by their members.
  init(
    points: UnsafePointer<Float>, count n: Int, dim: Int, coarse: [Float], coarseCount: Int,
    m: Int, lists: Int, threads: Int
  ) {
    self.count = coarseCount
    self.points = points
    self.pointCount = n
    self.dim = dim
    self.lists = lists
    var nearCells = [Int32](repeating: 0, count: n * m)
    coarse.withUnsafeBufferPointer { c in
      nearCells.withUnsafeMutableBufferPointer { near in
        KMeans.nearest(
          points: points, count: n, dim: dim, centroids: c.baseAddress!, k: coarseCount, m: m,
          labels: near.baseAddress!, distances: nil, threads: threads)
      }
    }
    var memberStarts = [Int](repeating: 0, count: coarseCount + 1)
    var slotStarts = [Int](repeating: 0, count: coarseCount + 1)
    for i in 0..<n { memberStarts[Int(nearCells[i * m]) + 1] += 1 }
    for e in nearCells { slotStarts[Int(e) + 1] += 1 }
    for c in 0..<coarseCount {
      memberStarts[c + 1] += memberStarts[c]
      slotStarts[c + 1] += slotStarts[c]
    }
    var members = [Int32](repeating: 0, count: n)
    var slots = [Int32](repeating: 0, count: n * m)
    var fill = Array(memberStarts[0..<coarseCount])
    var slotFill = Array(slotStarts[0..<coarseCount])
    for i in 0..<n {
      let c = Int(nearCells[i * m])
      members[fill[c]] = Int32(i)
      fill[c] += 1
      for r in 0..<m {
        let cell = Int(nearCells[i * m + r])
        slots[slotFill[cell]] = Int32(i)
        slotFill[cell] += 1
      }
    }
    self.memberStarts = memberStarts
    self.members = members
    self.slotStarts = slotStarts
    self.slots = slots
    let sizes = (0..<coarseCount).map { memberStarts[$0 + 1] - memberStarts[$0] }
    self.sizes = sizes
    let shares = IVFIndex.apportion(lists, sizes: sizes)
    self.shares = shares
    var firstList = [Int](repeating: 0, count: coarseCount + 1)
    for c in 0..<coarseCount { firstList[c + 1] = firstList[c] + shares[c] }
    self.firstList = firstList
    byWork = (0..<coarseCount).sorted {
      sizes[$0] > sizes[$1] || (sizes[$0] == sizes[$1] && $0 < $1)
    }
  }

  /// Threads used: one per cell at most.
  private func parts(_ threads: Int) -> Int { max(1, min(threads, count)) }

  /// Runs `body` for every cell with lists, the cells dealt round-robin (largest first) to
  /// `parts` threads; `body` gets the thread's part and the cell.
  private func forEachCell(parts: Int, _ body: (_ part: Int, _ cell: Int) -> Void) {
    Parallel.run(parts) { part in
      var position = part
      while position < count {
        let c = byWork[position]
        position += parts
        if shares[c] > 0 { body(part, c) }
      }
    }
  }

  /// lists x dim centroids: each cell split into its share of the lists by a k-means of its own
  /// members (seeded by `seed` and the cell, so the same whatever thread runs it).
  func splitEach(seed: UInt64, threads: Int) -> [Float] {
    var centroids = [Float](repeating: 0, count: lists * dim)
    centroids.withUnsafeMutableBufferPointer { centroids in
      forEachCell(parts: parts(threads)) { _, c in
        let size = sizes[c]
        let local = UnsafeMutablePointer<Float>.allocate(capacity: size * dim)
        defer { local.deallocate() }
        for j in 0..<size {
          (local + j * dim).update(
            from: points + Int(members[memberStarts[c] + j]) * dim, count: dim)
        }
        var cellRng = Xoshiro256(seed: seed, stream: UInt64(c + 1))
        let sub = IVFIndex.flat(
          points: local, count: size, dim: dim, k: shares[c], rng: &cellRng, threads: 1)
        (centroids.baseAddress! + firstList[c] * dim).update(from: sub, count: shares[c] * dim)
      }
    }
    return centroids
  }

  /// Writes to `labels` each point's nearest list among those of its m nearest cells (ties to
  /// the lower list): each thread keeps the best it saw for each point, then the threads' bests
  /// are merged.
  func placeInNearestList(
    centroids: [Float], labels: UnsafeMutablePointer<Int32>, threads: Int
  ) {
    let n = pointCount
    let parts = parts(threads)
    var bestLabels = [Int32](repeating: 0, count: parts * n)
    var bestDistances = [Float](repeating: .infinity, count: parts * n)
    centroids.withUnsafeBufferPointer { centroids in
      bestLabels.withUnsafeMutableBufferPointer { bestLabels in
        bestDistances.withUnsafeMutableBufferPointer { bestDistances in
          forEachCell(parts: parts) { part, c in
            nearestInCell(
              c, centroids: centroids.baseAddress! + firstList[c] * dim,
              bestLabels: bestLabels.baseAddress! + part * n,
              bestDistances: bestDistances.baseAddress! + part * n)
          }
        }
      }
    }
    for i in 0..<n {
      var best = i
      for part in 1..<parts {
        let s = part * n + i
        if bestDistances[s] < bestDistances[best]
          || (bestDistances[s] == bestDistances[best] && bestLabels[s] < bestLabels[best])
        {
          best = s
        }
      }
      labels[i] = bestLabels[best]
    }
  }

  /// For every point that has cell `c` among its nearest, the nearest of c's lists, kept in
  /// `bestLabels`/`bestDistances` (indexed by point) when nearer than what is there.
  private func nearestInCell(
    _ c: Int, centroids cellCentroids: UnsafePointer<Float>,
    bestLabels: UnsafeMutablePointer<Int32>, bestDistances: UnsafeMutablePointer<Float>
  ) {
    let block = KMeans.blockRows
    let local = UnsafeMutablePointer<Float>.allocate(capacity: block * dim)
    let label = UnsafeMutablePointer<Int32>.allocate(capacity: block)
    let distance = UnsafeMutablePointer<Float>.allocate(capacity: block)
    defer {
      local.deallocate()
      label.deallocate()
      distance.deallocate()
    }
    var lo = slotStarts[c]
    while lo < slotStarts[c + 1] {
      let hi = min(slotStarts[c + 1], lo + block)
      for j in lo..<hi {
        (local + (j - lo) * dim).update(from: points + Int(slots[j]) * dim, count: dim)
      }
      KMeans.nearest(
        points: local, count: hi - lo, dim: dim, centroids: cellCentroids, k: shares[c],
        m: 1, labels: label, distances: distance, threads: 1)
      for j in lo..<hi {
        let i = Int(slots[j])
        let l = Int32(firstList[c]) + label[j - lo]
        let d = distance[j - lo]
        if d < bestDistances[i] || (d == bestDistances[i] && l < bestLabels[i]) {
          bestDistances[i] = d
          bestLabels[i] = l
        }
      }
      lo = hi
    }
  }

  /// A Lloyd step restricted to the current placement: each list's centroid moves to its
  /// members' mean (a list without members keeps its centroid).
  static func moveToMeans(
    _ centroids: inout [Float], points: UnsafePointer<Float>, count n: Int, dim: Int,
    lists: Int, labels: UnsafePointer<Int32>
  ) {
    var sums = [Double](repeating: 0, count: lists * dim)
    var counts = [Int](repeating: 0, count: lists)
    for i in 0..<n {
      let l = Int(labels[i])
      counts[l] += 1
      let row = points + i * dim
      for d in 0..<dim { sums[l * dim + d] += Double(row[d]) }
    }
    for l in 0..<lists where counts[l] > 0 {
      for d in 0..<dim { centroids[l * dim + d] = Float(sums[l * dim + d] / Double(counts[l])) }
    }
  }
}
