import Foundation
import Testing

@testable import RecServeModels

@Suite struct FastMathTests {
  @Test func expMatchesTheLibraryOverTheSoftmaxRange() {
    var worst: Double = 0
    var x: Float = -87
    while x <= 20 {
      let got = Double(FastMath.exp(x))
      let want = Foundation.exp(Double(x))
      worst = max(worst, abs(got - want) / want)
      x += 0.0137
    }
    #expect(worst < 5e-7, "largest relative error \(worst)")
    #expect(FastMath.exp(-200) < 1e-37)
    #expect(FastMath.exp(0) == 1)
  }

  @Test func expShiftInPlaceSumsWhatItWrites() {
    var values: [Float] = (0..<19).map { Float($0) * 0.37 - 3 }
    let original = values
    let sum = values.withUnsafeMutableBufferPointer {
      FastMath.expShiftInPlace($0.baseAddress!, count: $0.count, shift: 2)
    }
    for (v, o) in zip(values, original) {
      #expect(abs(v - Float(Foundation.exp(Double(o - 2)))) < 1e-6 * max(1, v))
    }
    #expect(abs(sum - values.reduce(0, +)) < 1e-5)
  }
}
