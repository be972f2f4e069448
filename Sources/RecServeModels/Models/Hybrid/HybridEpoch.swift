import Foundation

/// One epoch of hybrid training: the pairs in `order`, cut into one contiguous share per
/// Hogwild thread, each thread with its own random stream and buffers.
struct HybridEpoch: @unchecked Sendable {
  let config: HybridConfig
  let users: HybridSide
  let items: HybridSide
  let matrix: ImplicitMatrix
  let rowOf: [Int32]
  let order: [Int32]
  /// Draws pairs by their recency weight; nil visits `order`.
  let alias: AliasTable?
  let epoch: Int

  struct Stats {
    var loss = 0.0
    var correct = 0
    var pairs = 0
  }

  /// WARP's weight for a violation found at draw `sampled`: log of the positive's estimated
  /// rank, at most 10 (LightFM's cap).
  static func warpWeight(items: Int, sampled: Int) -> Float {
    min(10, log(max(1, Float((items - 1) / sampled))))
  }

  func run(threads T: Int) -> Stats {
    var results = [Stats](repeating: Stats(), count: T)
    results.withUnsafeMutableBufferPointer { out in
      let out = out.baseAddress!
      Parallel.run(T) { t in
        let n = order.count
        let lo = n * t / T
        let hi = n * (t + 1) / T
        var rng = Xoshiro256(
          seed: config.seed, stream: UInt64(epoch) &* 0x1_0000 &+ UInt64(t) &+ 0x4B70)
        out[t] = steps(lo..<hi, rng: &rng)
      }
    }
    return results.reduce(into: Stats()) {
      $0.loss += $1.loss
      $0.correct += $1.correct
      $0.pairs += $1.pairs
    }
  }

  /// The steps for `order[range]`.
  func steps(_ range: Range<Int>, rng: inout Xoshiro256) -> Stats {
    let d = config.dim
    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: 6 * d)
    defer { buffer.deallocate() }
    let (uv, pv, nv) = (buffer, buffer + d, buffer + 2 * d)
    let (gu, gp, gn) = (buffer + 3 * d, buffer + 4 * d, buffer + 5 * d)
    let itemCount = items.entities
    var stats = Stats()
    for position in range {
      // Now and then the items are seen as if new, by their content alone, so that the content
      // features learn to rank on their own and not only what the ids leave to them. Those steps
      // draw pairs uniformly: the recency weight suits what follows a user's latest items, but
      // the content, which ranks new items, generalises better from every interaction alike.
      let cold = config.contentDropout > 0 && rng.nextFloat() < config.contentDropout
      let pair =
        cold || alias == nil
        ? (alias == nil ? Int(order[position]) : rng.nextInt(below: matrix.nnz))
        : alias!.draw(&rng)
      let u = Int(rowOf[pair])
      let i = Int(matrix.indices[pair])
      let positives = matrix.indptr[u]..<matrix.indptr[u + 1]
      _ = users.represent(u, into: uv)
      let pos = dot(uv, pv, bias: items.represent(i, into: pv, contentOnly: cold))
      stats.pairs += 1
      var weight: Float = 0
      var negative = -1
      let draws = config.loss == .warp ? config.maxSampled : 8
      for sampled in 1...draws {
        let j = rng.nextInt(below: itemCount)
        if isPositive(j, positives) { continue }
        let neg = dot(uv, nv, bias: items.represent(j, into: nv, contentOnly: cold))
        if negative < 0 && sampled == 1 && pos > neg { stats.correct += 1 }
        switch config.loss {
        case .warp:
          guard neg > pos - 1 else { continue }
          weight = Self.warpWeight(items: itemCount, sampled: sampled)
          stats.loss += Double(weight * (1 - pos + neg))
        case .bpr:
          let x = pos - neg
          weight = 1 / (1 + exp(x))
          stats.loss += Double(x > 0 ? log1p(exp(-x)) : -x + log1p(exp(x)))
        }
        negative = j
        break
      }
      guard negative >= 0, weight > 0 else { continue }
      for c in 0..<d {
        gu[c] = weight * (nv[c] - pv[c])
        gp[c] = -weight * uv[c]
        gn[c] = weight * uv[c]
      }
      let lr = config.learningRate
      users.update(
        u, gradient: gu, biasGradient: 0, learningRate: lr,
        regularization: config.userRegularization)
      items.update(
        i, gradient: gp, biasGradient: -weight, learningRate: lr,
        regularization: config.itemRegularization, contentOnly: cold)
      items.update(
        negative, gradient: gn, biasGradient: weight, learningRate: lr,
        regularization: config.itemRegularization, contentOnly: cold)
    }
    return stats
  }

  @inline(__always)
  func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, bias: Float) -> Float {
    var s = bias
    for c in 0..<config.dim { s += a[c] * b[c] }
    return s
  }

  /// Whether item j is among the user's positives (sorted columns of `positives`).
  @inline(__always)
  func isPositive(_ j: Int, _ positives: Range<Int>) -> Bool {
    var lo = positives.lowerBound
    var hi = positives.upperBound
    let target = Int32(j)
    while lo < hi {
      let mid = (lo + hi) / 2
      if matrix.indices[mid] < target { lo = mid + 1 } else { hi = mid }
    }
    return lo < positives.upperBound && matrix.indices[lo] == target
  }
}
