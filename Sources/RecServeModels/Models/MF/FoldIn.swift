/// The vector of a user the model never saw, from the items they just interacted with: the
/// ridge regression of one ALS half-step, (Σ q_i q_iᵀ + λ·n·I) x = Σ t_i q_i over the distinct
/// recent items i, where t_i is how far a top rating lies above item i's baseline. Solved by
/// conjugate gradient with the items' factor rows as they are (each step costs 2·n·dim
/// multiply-adds; no dim × dim matrix is formed), so a fold-in at dim 4096 costs what the
/// recent items cost, not dim³.
enum FoldIn {
  /// Regularization of the solve, per recent item.
  static let lambda: Float = 0.1
  /// Conjugate-gradient steps at most (exact after dim steps; the system is well conditioned,
  /// so far fewer reach float precision).
  static let maxSteps = 32

  /// Multiply-adds of a fold-in from `items` recent items at `dim`.
  static func work(items: Int, dim: Int) -> Int {
    (2 * min(maxSteps, dim) + 2) * items * dim
  }

  static func userVector(
    model: MFModel, recentItems: UnsafeBufferPointer<Int32>, into x: UnsafeMutablePointer<Float>
  ) {
    let dim = model.dim
    // Distinct items, in order of first appearance (so the sums do not depend on hashing).
    var items: [Int32] = []
    var seen = Set<Int32>()
    for item in recentItems where seen.insert(item).inserted { items.append(item) }
    let rows = items.map { model.itemFactors + Int($0) * dim }
    let top = model.ratingRange?.upperBound ?? (model.globalMean + 1)
    let ridge = lambda * Float(items.count)

    // A x for A = Σ q qᵀ + ridge·I.
    func apply(_ v: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
      for d in 0..<dim { out[d] = ridge * v[d] }
      for row in rows {
        let c = VectorMath.dot(row, v, dim)
        for d in 0..<dim { out[d] += c * row[d] }
      }
    }
    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: 3 * dim)
    defer { buffer.deallocate() }
    let r = buffer
    let p = buffer + dim
    let ap = buffer + 2 * dim
    // x = 0, r = p = b.
    for d in 0..<dim {
      x[d] = 0
      r[d] = 0
    }
    for (row, item) in zip(rows, items) {
      let target = top - model.globalMean - model.itemBias[Int(item)]
      for d in 0..<dim { r[d] += target * row[d] }
    }
    p.update(from: r, count: dim)
    var rr = Double(VectorMath.dot(r, r, dim))
    let tolerance = rr * 1e-12
    for _ in 0..<min(maxSteps, dim) {
      if rr <= tolerance || rr == 0 { break }
      apply(p, into: ap)
      let pAp = Double(VectorMath.dot(p, ap, dim))
      if !(pAp > 0) { break }
      let alpha = Float(rr / pAp)
      for d in 0..<dim {
        x[d] += alpha * p[d]
        r[d] -= alpha * ap[d]
      }
      let next = Double(VectorMath.dot(r, r, dim))
      let beta = Float(next / rr)
      rr = next
      for d in 0..<dim { p[d] = r[d] + beta * p[d] }
    }
  }
}
