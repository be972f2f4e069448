/// Vectorised exp for the softmax of the sequence model: Cephes' single-precision polynomial
/// (relative error below 2e-7 over the range a softmax uses), eight lanes at a time.
public enum FastMath {
  public typealias V = SIMD8<Float>

  /// e^x per lane; inputs below −87.3 give (nearly) 0, above 88.3 are clamped.
  @inlinable @inline(__always)
  public static func exp(_ x: V) -> V {
    let clamped = x.clamped(lowerBound: V(repeating: -87.3), upperBound: V(repeating: 88.3))
    let n = (clamped * 1.442_695_04).rounded(.toNearestOrEven)
    // r = x − n·ln2, in two parts for precision.
    let r = clamped - n * 0.693_359_375 + n * 2.121_944_4e-4
    var y = V(repeating: 1.987_569_15e-4)
    y = y * r + 1.398_199_95e-3
    y = y * r + 8.333_451_9e-3
    y = y * r + 4.166_579_59e-2
    y = y * r + 1.666_666_55e-1
    y = y * r + 5.000_000_1e-1
    y = y * (r * r) + r + 1
    // 2^n from the bits: adding 1.5·2^23 puts the integer n in the low mantissa bits (a
    // lane-wise conversion that the generic SIMD initialiser does one lane at a time).
    let magic = V(repeating: 12_582_912)
    let integer =
      unsafeBitCast(n + magic, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
    let scale = unsafeBitCast((integer &+ 127) &<< 23, to: V.self)
    return y * scale
  }

  /// e^x for one value, by the same polynomial (so that a lane and a scalar agree).
  @inlinable
  public static func exp(_ x: Float) -> Float { exp(V(repeating: x))[0] }

  /// p[j] = e^(p[j] − shift) for j in 0..<count; returns Σ p[j].
  @inlinable
  public static func expShiftInPlace(
    _ p: UnsafeMutablePointer<Float>, count: Int, shift: Float
  ) -> Float {
    let s = V(repeating: shift)
    var acc = V()
    var k = 0
    let raw = UnsafeMutableRawPointer(p)
    while k + 8 <= count {
      let e = exp(raw.loadUnaligned(fromByteOffset: k * 4, as: V.self) - s)
      raw.storeBytes(of: e, toByteOffset: k * 4, as: V.self)
      acc += e
      k += 8
    }
    var sum = acc.sum()
    if k < count {
      var tail = V(repeating: -.infinity)
      for j in k..<count { tail[j - k] = p[j] - shift }
      let e = exp(tail)
      for j in k..<count {
        p[j] = e[j - k]
        sum += e[j - k]
      }
    }
    return sum
  }
}
