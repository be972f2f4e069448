/// Small dense-vector kernels for the training inner loop and single-pair predictions, where a
/// BLAS call costs more than the work. Whole-catalogue products go through CBLAS instead.
public enum VectorMath {
  /// Σ a[k]·b[k] for k in 0..<n.
  @inlinable @inline(__always)
  public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var k = 0
    var acc0 = SIMD8<Float>()
    var acc1 = SIMD8<Float>()
    let ra = UnsafeRawPointer(a)
    let rb = UnsafeRawPointer(b)
    while k + 16 <= n {
      acc0 +=
        ra.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
        * rb.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      acc1 +=
        ra.loadUnaligned(fromByteOffset: k * 4 + 32, as: SIMD8<Float>.self)
        * rb.loadUnaligned(fromByteOffset: k * 4 + 32, as: SIMD8<Float>.self)
      k += 16
    }
    if k + 8 <= n {
      acc0 +=
        ra.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
        * rb.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      k += 8
    }
    // Horizontal sum by halving (fewer dependent scalar adds than SIMD8.sum()).
    let v = acc0 + acc1
    let h = v.lowHalf + v.highHalf
    let q = h.lowHalf + h.highHalf
    var s = q[0] + q[1]
    while k < n {
      s += a[k] * b[k]
      k += 1
    }
    return s
  }

  /// The SGD step for one rating on factor vectors p and q (updated in place, simultaneously):
  /// p += lr·(e·q − reg·p), q += lr·(e·p − reg·q).
  @inlinable @inline(__always)
  public static func sgdStep(
    _ p: UnsafeMutablePointer<Float>, _ q: UnsafeMutablePointer<Float>, _ n: Int, error e: Float,
    lr: Float, reg: Float
  ) {
    var k = 0
    let rp = UnsafeMutableRawPointer(p)
    let rq = UnsafeMutableRawPointer(q)
    let ve = SIMD8<Float>(repeating: lr * e)
    let vr = SIMD8<Float>(repeating: 1 - lr * reg)
    while k + 8 <= n {
      let pv = rp.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      let qv = rq.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      rp.storeBytes(of: pv * vr + ve * qv, toByteOffset: k * 4, as: SIMD8<Float>.self)
      rq.storeBytes(of: qv * vr + ve * pv, toByteOffset: k * 4, as: SIMD8<Float>.self)
      k += 8
    }
    let le = lr * e
    let shrink = 1 - lr * reg
    while k < n {
      let pk = p[k]
      let qk = q[k]
      p[k] = pk * shrink + le * qk
      q[k] = qk * shrink + le * pk
      k += 1
    }
  }
}
