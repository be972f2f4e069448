import Foundation

extension FeatureTable {
  /// Tokens found in fewer rows than this are dropped.
  static let minTokenRows = 2

  /// A text column: feature `column:token` for the `vocabularyCap` tokens in most rows (ties in
  /// token order) among those in at least `minTokenRows` rows, weighted count × IDF.
  static func encodeText(_ file: FeatureFileRows, column c: Int, vocabularyCap: Int)
    -> EncodedColumn
  {
    let name = file.header[c + 1]
    let values = file.values[c]
    var rowsWith: [String: Int] = [:]
    for value in values where !value.isEmpty {
      for token in Set(tokens(value)) { rowsWith[token, default: 0] += 1 }
    }
    let kept = rowsWith.filter { $0.value >= minTokenRows }
      .sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
      .prefix(vocabularyCap)
    var e = EncodedColumn()
    var lookup: [String: Int32] = [:]
    let rows = Double(values.count)
    for (token, count) in kept {
      lookup[token] = Int32(e.names.count)
      e.names.append("\(name):\(token)")
      e.idf.append(Float(log((1 + rows) / (1 + Double(count))) + 1))
    }
    var counts: [Int32: Int] = [:]
    for value in values {
      counts.removeAll(keepingCapacity: true)
      if !value.isEmpty {
        for token in tokens(value) {
          if let k = lookup[token] { counts[k, default: 0] += 1 }
        }
      }
      for (k, n) in counts.sorted(by: { $0.key < $1.key }) {
        e.index.append(k)
        e.weight.append(Float(n) * e.idf[Int(k)])
      }
      e.endRow()
    }
    return e
  }

  /// `text` lower-cased and split on everything that is not a letter or a digit, without the
  /// tokens shorter than 2 characters.
  static func tokens(_ text: String) -> [String] {
    if text.utf8.allSatisfy({ $0 < 0x80 }) { return asciiTokens(text) }
    var out: [String] = []
    var current = String.UnicodeScalarView()
    func flush() {
      let token = String(current)
      if token.count >= 2 { out.append(token) }
      current.removeAll()
    }
    for s in text.lowercased().unicodeScalars {
      if s.properties.isAlphabetic || s.properties.numericType != nil {
        current.append(s)
      } else if !current.isEmpty {
        flush()
      }
    }
    if !current.isEmpty { flush() }
    return out
  }

  private static func asciiTokens(_ text: String) -> [String] {
    var out: [String] = []
    var current: [UInt8] = []
    for var b in text.utf8 {
      let isDigit = b >= 48 && b <= 57
      let isUpper = b >= 65 && b <= 90
      let isLower = b >= 97 && b <= 122
      if isDigit || isUpper || isLower {
        if isUpper { b += 32 }
        current.append(b)
      } else {
        if current.count >= 2 { out.append(String(decoding: current, as: UTF8.self)) }
        current.removeAll(keepingCapacity: true)
      }
    }
    if current.count >= 2 { out.append(String(decoding: current, as: UTF8.self)) }
    return out
  }
}
