import CBLAS
import Foundation

/// L2 k-means over row-major float points, for the coarse quantiser of `IVFIndex`: Lloyd
/// iterations from k distinct random points, empty cells re-seeded by splitting a large one (as
/// FAISS does), nearest-centroid assignment by blocks of `cblas_sgemm`. Deterministic for a
/// seed, whatever the thread count.
enum KMeans {
  /// Rows per sgemm block of an assignment.
  static let blockRows = 256

  /// `k` centroids (row-major, k x dim) of `points[0..<count]` (count >= k >= 1).
  static func train(
    points: UnsafePointer<Float>, count: Int, dim: Int, k: Int, iterations: Int,
    rng: inout Xoshiro256, threads: Int
  ) -> [Float] {
    precondition(k >= 1 && count >= k)
    var centroids = [Float](repeating: 0, count: k * dim)
    // k distinct points to start from (a partial Fisher-Yates shuffle).
    var pick = [Int32](0..<Int32(count))
    for j in 0..<k {
      let r = j + rng.nextInt(below: count - j)
      pick.swapAt(j, r)
      for d in 0..<dim { centroids[j * dim + d] = points[Int(pick[j]) * dim + d] }
    }
    if k == 1 && iterations > 0 {
      mean(points: points, count: count, dim: dim, into: &centroids)
      return centroids
    }
    var labels = [Int32](repeating: 0, count: count)
    var sums = [Double](repeating: 0, count: k * dim)
    var sizes = [Int](repeating: 0, count: k)
    for _ in 0..<iterations {
      labels.withUnsafeMutableBufferPointer { l in
        centroids.withUnsafeBufferPointer { c in
          assign(
            points: points, count: count, dim: dim, centroids: c.baseAddress!, k: k,
            labels: l.baseAddress!, threads: threads)
        }
      }
      for j in 0..<(k * dim) { sums[j] = 0 }
      for j in 0..<k { sizes[j] = 0 }
      for i in 0..<count {
        let j = Int(labels[i])
        sizes[j] += 1
        let row = points + i * dim
        for d in 0..<dim { sums[j * dim + d] += Double(row[d]) }
      }
      for j in 0..<k where sizes[j] > 0 {
        let scale = 1 / Double(sizes[j])
        for d in 0..<dim { centroids[j * dim + d] = Float(sums[j * dim + d] * scale) }
      }
      // An empty cell takes half of a large one: a copy of its centroid nudged apart from it.
      for j in 0..<k where sizes[j] == 0 {
        var total = 0
        for s in sizes { total += max(0, s - 1) }
        if total == 0 { break }
        var r = rng.nextInt(below: total)
        var big = 0
        while r >= max(0, sizes[big] - 1) {
          r -= max(0, sizes[big] - 1)
          big += 1
        }
        let eps: Float = 1.0 / 1024
        for d in 0..<dim {
          let c = centroids[big * dim + d]
          let sign: Float = d % 2 == 0 ? 1 : -1
          centroids[j * dim + d] = c * (1 + sign * eps)
          centroids[big * dim + d] = c * (1 - sign * eps)
        }
        sizes[j] = sizes[big] / 2
        sizes[big] -= sizes[j]
      }
    }
    return centroids
  }

  private static func mean(
    points: UnsafePointer<Float>, count: Int, dim: Int, into centroids: inout [Float]
  ) {
    var sums = [Double](repeating: 0, count: dim)
    for i in 0..<count {
      for d in 0..<dim { sums[d] += Double(points[i * dim + d]) }
    }
    for d in 0..<dim { centroids[d] = Float(sums[d] / Double(count)) }
  }

  /// labels[i] = the centroid nearest to point i in L2 (ties: the lower index), from
  /// |c|² − 2 x·c with the products in sgemm blocks of `blockRows` points, on `threads`
  /// threads.
  static func assign(
    points: UnsafePointer<Float>, count: Int, dim: Int, centroids: UnsafePointer<Float>, k: Int,
    labels: UnsafeMutablePointer<Int32>, threads: Int
  ) {
    nearest(
      points: points, count: count, dim: dim, centroids: centroids, k: k, m: 1, labels: labels,
      distances: nil, threads: threads)
  }

  /// The `m` centroids nearest to each point, nearest first (ties: the lower index):
  /// labels[i·m + r] and, when asked, distances[i·m + r] = |c|² − 2 x·c (the squared distance
  /// less |x|², comparable between centroids for the same point).
  static func nearest(
    points: UnsafePointer<Float>, count: Int, dim: Int, centroids: UnsafePointer<Float>, k: Int,
    m: Int, labels: UnsafeMutablePointer<Int32>, distances: UnsafeMutablePointer<Float>?,
    threads: Int
  ) {
    if count == 0 { return }
    let m = min(m, k)
    var norms = [Float](repeating: 0, count: k)
    for j in 0..<k {
      var s: Float = 0
      for d in 0..<dim { s += centroids[j * dim + d] * centroids[j * dim + d] }
      norms[j] = s
    }
    let blocks = (count + blockRows - 1) / blockRows
    let parts = max(1, min(threads, blocks))
    norms.withUnsafeBufferPointer { norms in
      Parallel.run(parts) { part in
        let products = UnsafeMutablePointer<Float>.allocate(capacity: blockRows * k)
        defer { products.deallocate() }
        var topLabels = [Int32](repeating: 0, count: m)
        var topDistances = [Float](repeating: .infinity, count: m)
        var b = part
        while b < blocks {
          let lo = b * blockRows
          let rows = min(blockRows, count - lo)
          cblas_sgemm(
            CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(k), Int32(dim), 1,
            points + lo * dim, Int32(dim), centroids, Int32(dim), 0, products, Int32(k))
          for r in 0..<rows {
            let row = products + r * k
            if m == 1 {
              var best: Int32 = 0
              var bestDistance = Float.infinity
              for j in 0..<k {
                let distance = norms[j] - 2 * row[j]
                if distance < bestDistance {
                  bestDistance = distance
                  best = Int32(j)
                }
              }
              labels[lo + r] = best
              distances?[lo + r] = bestDistance
              continue
            }
            for t in 0..<m {
              topDistances[t] = .infinity
              topLabels[t] = Int32(t)
            }
            for j in 0..<k {
              let distance = norms[j] - 2 * row[j]
              if !(distance < topDistances[m - 1]) { continue }
              var t = m - 1
              while t > 0 && distance < topDistances[t - 1] {
                topDistances[t] = topDistances[t - 1]
                topLabels[t] = topLabels[t - 1]
                t -= 1
              }
              topDistances[t] = distance
              topLabels[t] = Int32(j)
            }
            for t in 0..<m {
              labels[(lo + r) * m + t] = topLabels[t]
              distances?[(lo + r) * m + t] = topDistances[t]
            }
          }
          b += parts
        }
      }
    }
  }
}
