import CBLAS

/// The vector of a user the model never saw, from the items they just interacted with: solved
/// against those items' factors (ridge regression, as one ALS half-step does).
enum FoldIn {
  /// Regularization of the solve, per recent item.
  static let lambda: Float = 0.1

  static func userVector(
    model: MFModel, recentItems: UnsafeBufferPointer<Int32>, into out: UnsafeMutablePointer<Float>
  ) {
    let dim = model.dim
    let items = Array(Set(recentItems))
    // Each recent item counts as liked: the target is how far a top rating lies above the
    // item's baseline.
    let top = model.ratingRange?.upperBound ?? (model.globalMean + 1)
    var gram = [Float](repeating: 0, count: dim * dim)
    var rhs = [Float](repeating: 0, count: dim)
    for item in items {
      let row = model.itemFactors + Int(item) * dim
      let target = top - model.globalMean - model.itemBias[Int(item)]
      gram.withUnsafeMutableBufferPointer { gram in
        cblas_ssyr(CblasRowMajor, CblasUpper, Int32(dim), 1, row, 1, gram.baseAddress, Int32(dim))
      }
      for d in 0..<dim { rhs[d] += target * row[d] }
    }
    let ridge = lambda * Float(items.count)
    for d in 0..<dim { gram[d * dim + d] += ridge }
    let vector = Cholesky.solve(upper: &gram, rhs: rhs, dim: dim)
    for d in 0..<dim { out[d] = vector[d] }
  }
}

/// Solves A x = b for a symmetric positive-definite A given by its upper triangle (row-major).
enum Cholesky {
  static func solve(upper a: inout [Float], rhs: [Float], dim n: Int) -> [Float] {
    // Factor A = Uᵀ U in place (upper triangle), in Double for stability.
    var u = [Double](repeating: 0, count: n * n)
    for i in 0..<n {
      for j in i..<n { u[i * n + j] = Double(a[i * n + j]) }
    }
    for i in 0..<n {
      var diagonal = u[i * n + i]
      for k in 0..<i { diagonal -= u[k * n + i] * u[k * n + i] }
      let root = diagonal > 1e-12 ? diagonal.squareRoot() : 1e-6
      u[i * n + i] = root
      for j in (i + 1)..<max(i + 1, n) {
        var value = u[i * n + j]
        for k in 0..<i { value -= u[k * n + i] * u[k * n + j] }
        u[i * n + j] = value / root
      }
    }
    // Uᵀ y = b, then U x = y.
    var y = [Double](repeating: 0, count: n)
    for i in 0..<n {
      var value = Double(rhs[i])
      for k in 0..<i { value -= u[k * n + i] * y[k] }
      y[i] = value / u[i * n + i]
    }
    var x = [Double](repeating: 0, count: n)
    for i in stride(from: n - 1, through: 0, by: -1) {
      var value = y[i]
      for k in (i + 1)..<max(i + 1, n) { value -= u[i * n + k] * x[k] }
      x[i] = value / u[i * n + i]
    }
    return x.map { Float($0) }
  }
}
