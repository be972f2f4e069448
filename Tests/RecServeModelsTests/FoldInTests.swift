import Foundation
import Testing

@testable import RecServeModels

@Suite struct FoldInSolverTests {
  /// The conjugate-gradient fold-in solves (Σ q qᵀ + λ·n·I) x = Σ t q as Gaussian elimination in
  /// Double does, at a dim above the number of recent items and below it.
  @Test(arguments: [(dim: 24, items: 9), (dim: 6, items: 30)])
  func matchesTheExactRidgeSolution(shape: (dim: Int, items: Int)) throws {
    let (dim, n) = shape
    let users = ["a"]
    let itemIds = (0..<40).map { "i\($0)" }
    var rng = Xoshiro256(seed: 3)
    let factors = (0..<(40 * dim)).map { _ in Float(rng.nextGaussian()) }
    let biases = (0..<40).map { _ in Float(rng.nextGaussian() * 0.3) }
    let model = try MFModel(
      userIds: users, itemIds: itemIds, dim: dim, globalMean: 3.5,
      userFactors: [Float](repeating: 0, count: dim), itemFactors: factors,
      userBias: [0], itemBias: biases, ratingRange: 0.5...5)
    let recent = (0..<n).map { Int32(($0 * 7) % 40) }
    var x = [Float](repeating: 0, count: dim)
    recent.withUnsafeBufferPointer { r in
      x.withUnsafeMutableBufferPointer {
        FoldIn.userVector(model: model, recentItems: r, into: $0.baseAddress!)
      }
    }
    // The same system, dense, solved exactly.
    let distinct = Array(Set(recent)).sorted()
    var a = [Double](repeating: 0, count: dim * dim)
    var b = [Double](repeating: 0, count: dim)
    for i in distinct {
      let row = (0..<dim).map { Double(factors[Int(i) * dim + $0]) }
      let t = 5 - 3.5 - Double(biases[Int(i)])
      for r in 0..<dim {
        b[r] += t * row[r]
        for c in 0..<dim { a[r * dim + c] += row[r] * row[c] }
      }
    }
    for d in 0..<dim { a[d * dim + d] += Double(FoldIn.lambda) * Double(distinct.count) }
    // Gaussian elimination with partial pivoting.
    for col in 0..<dim {
      let pivot = (col..<dim).max { abs(a[$0 * dim + col]) < abs(a[$1 * dim + col]) }!
      if pivot != col {
        for c in 0..<dim { a.swapAt(col * dim + c, pivot * dim + c) }
        b.swapAt(col, pivot)
      }
      for r in (col + 1)..<max(col + 1, dim) {
        let f = a[r * dim + col] / a[col * dim + col]
        for c in col..<dim { a[r * dim + c] -= f * a[col * dim + c] }
        b[r] -= f * b[col]
      }
    }
    var exact = [Double](repeating: 0, count: dim)
    for r in stride(from: dim - 1, through: 0, by: -1) {
      var v = b[r]
      for c in (r + 1)..<max(r + 1, dim) { v -= a[r * dim + c] * exact[c] }
      exact[r] = v / a[r * dim + r]
    }
    let scale = exact.map(abs).max()!
    for d in 0..<dim {
      #expect(abs(Double(x[d]) - exact[d]) < 1e-3 * scale, "x[\(d)] \(x[d]) vs \(exact[d])")
    }
    #expect(FoldIn.work(items: n, dim: dim) > 0)
  }
}
