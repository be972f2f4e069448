#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Low-level helpers for parsing text files straight from their bytes.
enum ByteParsing {
  /// The offset of the first NUL byte or invalid UTF-8 sequence, with which one it is.
  enum TextProblem {
    case nul(offset: Int)
    case invalidUTF8(offset: Int)
  }

  /// Scans the whole buffer once: ASCII runs 8 bytes at a time, multi-byte sequences validated.
  static func firstTextProblem(_ p: UnsafePointer<UInt8>, _ n: Int) -> TextProblem? {
    var i = 0
    let high: UInt64 = 0x8080_8080_8080_8080
    let ones: UInt64 = 0x0101_0101_0101_0101
    while i < n {
      // Fast path: 8 ASCII bytes without a NUL.
      if i + 8 <= n {
        let w = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)
        let hasZero = (w &- ones) & ~w & high
        if (w & high) == 0 && hasZero == 0 {
          i += 8
          continue
        }
      }
      let b = p[i]
      if b == 0 { return .nul(offset: i) }
      if b < 0x80 {
        i += 1
        continue
      }
      var need = 0
      var minCode: UInt32 = 0
      var code: UInt32 = 0
      if b & 0xE0 == 0xC0 {
        need = 1
        minCode = 0x80
        code = UInt32(b & 0x1F)
      } else if b & 0xF0 == 0xE0 {
        need = 2
        minCode = 0x800
        code = UInt32(b & 0x0F)
      } else if b & 0xF8 == 0xF0 {
        need = 3
        minCode = 0x10000
        code = UInt32(b & 0x07)
      } else {
        return .invalidUTF8(offset: i)
      }
      if i + need >= n { return .invalidUTF8(offset: i) }
      for k in 1...need {
        let c = p[i + k]
        if c & 0xC0 != 0x80 { return .invalidUTF8(offset: i) }
        code = (code << 6) | UInt32(c & 0x3F)
      }
      if code < minCode || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF) {
        return .invalidUTF8(offset: i)
      }
      i += need + 1
    }
    return nil
  }

  /// Number of '\n' in p[0..<end], plus one: the 1-based line of offset `end`.
  static func lineNumber(_ p: UnsafePointer<UInt8>, offset end: Int) -> Int {
    var line = 1
    var i = 0
    while i < end {
      if p[i] == 10 { line += 1 }
      i += 1
    }
    return line
  }

  @usableFromInline static let powersOfTen: [Double] = (0...22).map { e in
    var x = 1.0
    for _ in 0..<e { x *= 10 }
    return x
  }

  enum NumberResult {
    case value(Double)
    case notANumber
  }

  /// Parses a decimal number occupying exactly p[0..<n]. Simple decimals ("4", "3.5", "-0.25")
  /// take a fast exact path; anything else (exponents, long mantissas, "nan", "inf") goes through
  /// strtod, which must consume every byte.
  static func parseDouble(_ p: UnsafePointer<UInt8>, _ n: Int) -> NumberResult {
    if n == 0 { return .notANumber }
    var i = 0
    var negative = false
    if p[0] == UInt8(ascii: "-") || p[0] == UInt8(ascii: "+") {
      negative = p[0] == UInt8(ascii: "-")
      i = 1
    }
    var mantissa: UInt64 = 0
    var digits = 0
    var fraction = 0
    var sawDot = false
    var simple = true
    while i < n {
      let c = p[i]
      if c >= 48 && c <= 57 {
        if digits >= 18 {
          simple = false
          break
        }
        mantissa = mantissa * 10 + UInt64(c - 48)
        digits += 1
        if sawDot { fraction += 1 }
      } else if c == UInt8(ascii: ".") && !sawDot {
        sawDot = true
      } else {
        simple = false
        break
      }
      i += 1
    }
    if simple {
      if digits == 0 { return .notANumber }
      var v = Double(mantissa)
      if fraction > 0 { v /= powersOfTen[fraction] }
      return .value(negative ? -v : v)
    }
    // Slow path.
    if n > 126 { return .notANumber }
    return withUnsafeTemporaryAllocation(of: CChar.self, capacity: n + 1) { buf in
      for k in 0..<n { buf[k] = CChar(bitPattern: p[k]) }
      buf[n] = 0
      var end: UnsafeMutablePointer<CChar>? = nil
      let v = strtod(buf.baseAddress!, &end)
      guard let end, end - buf.baseAddress! == n else { return .notANumber }
      // strtod skips leading whitespace; we trimmed already, so a space here means junk.
      if p[0] == 32 || p[0] == 9 { return .notANumber }
      return .value(v)
    }
  }

  /// `parseDouble` over the whole of `s`.
  static func parseDouble(_ s: String) -> NumberResult {
    var s = s
    return s.withUTF8 { u in
      guard let p = u.baseAddress else { return .notANumber }
      return parseDouble(p, u.count)
    }
  }

  /// Parses an integer occupying p[0..<n]; a fractional part ("964982703.0") is truncated.
  /// Returns nil when it is not a number or does not fit in Int64.
  static func parseInt64(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int64? {
    if n == 0 { return nil }
    var i = 0
    var negative = false
    if p[0] == UInt8(ascii: "-") || p[0] == UInt8(ascii: "+") {
      negative = p[0] == UInt8(ascii: "-")
      i = 1
    }
    if i >= n { return nil }
    var v: Int64 = 0
    var digits = 0
    while i < n {
      let c = p[i]
      if c >= 48 && c <= 57 {
        let (m, o1) = v.multipliedReportingOverflow(by: 10)
        let (a, o2) = m.addingReportingOverflow(Int64(c - 48))
        if o1 || o2 { return nil }
        v = a
        digits += 1
        i += 1
      } else {
        break
      }
    }
    if digits == 0 { return nil }
    if i < n {
      // Allow a fractional part made of digits only.
      guard p[i] == UInt8(ascii: ".") else { return nil }
      i += 1
      while i < n {
        let c = p[i]
        if c < 48 || c > 57 { return nil }
        i += 1
      }
    }
    return negative ? -v : v
  }

  @inline(__always)
  static func hashBytes(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
    // FNV-1a with a final avalanche; ids are short, so this is fast enough.
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    var i = 0
    while i < n {
      h = (h ^ UInt64(p[i])) &* 0x0000_0100_0000_01B3
      i += 1
    }
    h ^= h >> 33
    h = h &* 0xFF51_AFD7_ED55_8CCD
    h ^= h >> 33
    return h
  }
}

/// Maps byte strings to dense indices without creating a `String` per row: a String is made only
/// once per distinct id at the end. Ids of up to 7 bytes (MovieLens' numeric ids, most others)
/// are compared and hashed as one packed 64-bit key, without touching the byte arena.
struct IdInterner {
  private var arena: [UInt8] = []
  private var starts: [Int] = []
  private var lengths: [Int32] = []
  private var hashes: [UInt64] = []
  /// The packed key of a short id (bytes in the low 56 bits, length in the top 8); `longKey`
  /// for ids of 8 bytes or more.
  private var keys: [UInt64] = []
  private var table: [Int32]
  private var mask: Int

  /// Remember the last id: rating files are usually grouped by user, so most rows repeat it.
  private let cacheLast: Bool
  private var last: Int32 = -1

  /// Never the key of a short id, whose top byte is its length (0...7).
  private static let longKey = UInt64.max

  init(capacity: Int = 1024, cacheLast: Bool = false) {
    self.cacheLast = cacheLast
    var size = 16
    while size < capacity * 2 { size <<= 1 }
    table = [Int32](repeating: -1, count: size)
    mask = size - 1
    arena.reserveCapacity(capacity * 8)
  }

  var count: Int { starts.count }

  /// The packed key of p[0..<n] for n <= 7.
  @inline(__always)
  private static func shortKey(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
    var k = UInt64(n) << 56
    var i = 0
    while i < n {
      k |= UInt64(p[i]) << (8 * UInt64(i))
      i += 1
    }
    return k
  }

  @inline(__always)
  private static func hashKey(_ k: UInt64) -> UInt64 {
    var h = k &* 0x9E37_79B9_7F4A_7C15
    h ^= h >> 29
    h = h &* 0xBF58_476D_1CE4_E5B9
    h ^= h >> 32
    return h
  }

  mutating func intern(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int32 {
    if n <= 7 {
      let k = IdInterner.shortKey(p, n)
      if cacheLast && last >= 0 && keys[Int(last)] == k { return last }
      let found = lookupShort(k, p, n)
      if cacheLast { last = found }
      return found
    }
    if cacheLast {
      let l = last
      if l >= 0 && Int(lengths[Int(l)]) == n {
        let start = starts[Int(l)]
        let same = arena.withUnsafeBufferPointer { a in
          memcmp(a.baseAddress! + start, p, n) == 0
        }
        if same { return l }
      }
      last = lookupLong(p, n)
      return last
    }
    return lookupLong(p, n)
  }

  private mutating func lookupShort(_ k: UInt64, _ p: UnsafePointer<UInt8>, _ n: Int) -> Int32 {
    let h = IdInterner.hashKey(k)
    var slot = Int(truncatingIfNeeded: h) & mask
    while true {
      let e = table[slot]
      if e < 0 { break }
      if keys[Int(e)] == k { return e }
      slot = (slot + 1) & mask
    }
    return insert(p, n, hash: h, key: k, slot: slot)
  }

  private mutating func lookupLong(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int32 {
    let h = ByteParsing.hashBytes(p, n)
    var slot = Int(truncatingIfNeeded: h) & mask
    while true {
      let e = table[slot]
      if e < 0 { break }
      let idx = Int(e)
      if hashes[idx] == h && Int(lengths[idx]) == n {
        let start = starts[idx]
        let equal = arena.withUnsafeBufferPointer { a in
          memcmp(a.baseAddress! + start, p, n) == 0
        }
        if equal { return e }
      }
      slot = (slot + 1) & mask
    }
    return insert(p, n, hash: h, key: IdInterner.longKey, slot: slot)
  }

  private mutating func insert(
    _ p: UnsafePointer<UInt8>, _ n: Int, hash h: UInt64, key: UInt64, slot: Int
  ) -> Int32 {
    let index = Int32(starts.count)
    starts.append(arena.count)
    lengths.append(Int32(n))
    hashes.append(h)
    keys.append(key)
    arena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
    table[slot] = index
    if starts.count * 2 > table.count { grow() }
    return index
  }

  private mutating func grow() {
    let size = table.count * 2
    var newTable = [Int32](repeating: -1, count: size)
    let newMask = size - 1
    for (i, h) in hashes.enumerated() {
      var slot = Int(truncatingIfNeeded: h) & newMask
      while newTable[slot] >= 0 { slot = (slot + 1) & newMask }
      newTable[slot] = Int32(i)
    }
    table = newTable
    mask = newMask
  }

  /// The interned ids as Strings (bytes were validated as UTF-8 beforehand).
  func strings() -> [String] {
    arena.withUnsafeBufferPointer { a in
      (0..<starts.count).map { i in
        String(
          decoding: UnsafeBufferPointer(rebasing: a[starts[i]..<(starts[i] + Int(lengths[i]))]),
          as: UTF8.self)
      }
    }
  }
}
