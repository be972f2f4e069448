/// Comparison whose time depends on the lengths only, not on where the bytes differ.
enum ConstantTime {
  static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    // The lengths are compared in full: folded into a byte, lengths that differ by a multiple
    // of 256 would look equal, and a token padded with 256 zero bytes would pass.
    var difference = a.count == b.count ? 0 : 1
    let count = max(a.count, b.count)
    for index in 0..<count {
      let x = index < a.count ? a[index] : 0
      let y = index < b.count ? b[index] : 0
      difference |= Int(x ^ y)
    }
    return difference == 0
  }
}
