import Testing

@testable import RecServeModels

@Suite struct CholeskyTests {
  @Test func choleskySolvesASymmetricPositiveDefiniteSystem() {
    // A = Bᵀ B + I for a fixed B; check A x = b.
    let n = 6
    var a = [Float](repeating: 0, count: n * n)
    for i in 0..<n {
      for j in 0..<n {
        var sum: Float = i == j ? 1 : 0
        for k in 0..<n { sum += Float((i + 2 * k) % 5 - 2) * Float((j + 2 * k) % 5 - 2) }
        a[i * n + j] = sum
      }
    }
    let b: [Float] = [1, -2, 3, 0.5, 4, -1]
    var upper = a
    let x = Cholesky.solve(upper: &upper, rhs: b, dim: n)
    for i in 0..<n {
      var sum: Float = 0
      for j in 0..<n { sum += a[i * n + j] * x[j] }
      #expect(abs(sum - b[i]) < 1e-3, "row \(i): \(sum) vs \(b[i])")
    }
  }
}
