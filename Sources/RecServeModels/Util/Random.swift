/// Seeded pseudo-random numbers for everything that must be reproducible (splits, initialisation,
/// shuffling, synthetic data). `SystemRandomNumberGenerator` is never used where a seed is given.

/// SplitMix64: used to expand one 64-bit seed into the state of `Xoshiro256`.
public struct SplitMix64: RandomNumberGenerator, Sendable {
  public var state: UInt64

  public init(seed: UInt64) { state = seed }

  @inlinable
  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

/// xoshiro256** (Blackman and Vigna): fast, good quality, 256-bit state.
public struct Xoshiro256: RandomNumberGenerator, Sendable {
  @usableFromInline var s0: UInt64
  @usableFromInline var s1: UInt64
  @usableFromInline var s2: UInt64
  @usableFromInline var s3: UInt64

  /// Seeds the state from `seed` through SplitMix64; `stream` gives independent generators for
  /// the same seed (e.g. one for the split, one for initialisation).
  public init(seed: UInt64, stream: UInt64 = 0) {
    var sm = SplitMix64(seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03))
    s0 = sm.next()
    s1 = sm.next()
    s2 = sm.next()
    s3 = sm.next()
    if s0 | s1 | s2 | s3 == 0 { s0 = 1 }
  }

  @inlinable
  public mutating func next() -> UInt64 {
    let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
    let t = s1 << 17
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = (s3 << 45) | (s3 >> 19)
    return result
  }

  /// Uniform in [0, 1) with 24 bits of precision.
  @inlinable
  public mutating func nextFloat() -> Float {
    Float(next() >> 40) * (1.0 / 16_777_216.0)
  }

  /// Uniform in [0, 1) with 53 bits of precision.
  @inlinable
  public mutating func nextDouble() -> Double {
    Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
  }

  /// Uniform integer in 0..<bound (Lemire's multiply-shift; bias is negligible for our sizes).
  @inlinable
  public mutating func nextInt(below bound: Int) -> Int {
    precondition(bound > 0)
    return Int(truncatingIfNeeded: next().multipliedFullWidth(by: UInt64(bound)).high)
  }

  /// Standard normal sample (Box-Muller).
  public mutating func nextGaussian() -> Double {
    var u1 = nextDouble()
    if u1 < 1e-300 { u1 = 1e-300 }
    let u2 = nextDouble()
    return (-2 * _logD(u1)).squareRoot() * _cosD(2 * Double.pi * u2)
  }

  /// Fisher-Yates shuffle of a buffer, deterministic for the generator's state.
  @inlinable
  public mutating func shuffle<T>(_ buffer: UnsafeMutableBufferPointer<T>) {
    var i = buffer.count
    while i > 1 {
      let j = nextInt(below: i)
      i -= 1
      buffer.swapAt(i, j)
    }
  }
}

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

@usableFromInline func _logD(_ x: Double) -> Double { log(x) }
@usableFromInline func _cosD(_ x: Double) -> Double { cos(x) }
