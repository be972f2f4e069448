/// Turns a new row's raw values into features the way a `FeatureTable` was built: the same
/// vocabulary, numeric buckets, tokens and IDFs, and the same per-column balancing. A value the
/// table never saw (a new category, an unknown token) has no feature; a numeric value falls in
/// the bucket whose range holds it (the first or last beyond them).
public struct FeatureEncoder: Sendable {
  public let table: FeatureTable
  private let lookup: [String: Int32]
  private let columnsByName: [String: Int]

  public init(_ table: FeatureTable) {
    self.table = table
    var lookup: [String: Int32] = [:]
    lookup.reserveCapacity(table.featureCount)
    for (k, name) in table.vocabulary.enumerated() { lookup[name] = Int32(k) }
    self.lookup = lookup
    var columnsByName: [String: Int] = [:]
    for (c, column) in table.columns.enumerated() { columnsByName[column.name] = c }
    self.columnsByName = columnsByName
  }

  /// The features of a row given as column name → raw value (columns left out have none).
  /// `what` names the row in errors (e.g. "items[3] (id 'x')"): a column the table does not
  /// have, or a numeric column's value that is not a finite number.
  public func encode(_ values: [String: String], what: String) throws -> [(
    feature: Int32, weight: Float
  )] {
    var perColumn = [[(Int32, Float)]](repeating: [], count: table.columns.count)
    for (name, raw) in values.sorted(by: { $0.key < $1.key }) {
      guard let c = columnsByName[name] else {
        let known = table.columns.map(\.name).joined(separator: ", ")
        throw DataError(
          file: what,
          message: "no feature column '\(name)' in this model (its columns: \(known))")
      }
      let value = FeatureTable.trimmed(Substring(raw))
      if value.isEmpty { continue }
      perColumn[c] = try encode(value, column: table.columns[c], what: what)
    }
    return FeatureTable.balanced(perColumn).map { (feature: $0.0, weight: $0.1) }
  }

  private func encode(_ value: String, column: FeatureTable.Column, what: String) throws
    -> [(Int32, Float)]
  {
    let name = column.name
    switch column.type {
    case .ignore:
      return []
    case .categorical:
      return lookup["\(name)=\(value)"].map { [($0, Float(1))] } ?? []
    case .multi:
      let found = Set(
        value.split(separator: "|").compactMap { lookup["\(name)=\(FeatureTable.trimmed($0))"] })
      return found.sorted().map { ($0, 1) }
    case .numeric:
      guard case .value(let x) = ByteParsing.parseDouble(value), x.isFinite else {
        throw DataError(
          file: what, message: "column '\(name)' is numeric, but '\(value)' is not a finite number")
      }
      guard !column.buckets.isEmpty else { return [] }
      let k = FeatureTable.bucket(of: x, mins: column.buckets.map(\.min))
      return [(Int32(column.features.lowerBound + k), 1)]
    case .text:
      var counts: [Int32: Int] = [:]
      for token in FeatureTable.tokens(value) {
        if let k = lookup["\(name):\(token)"] { counts[k, default: 0] += 1 }
      }
      return counts.sorted { $0.key < $1.key }.map { k, n in
        (k, Float(n) * column.idf[Int(k) - column.features.lowerBound])
      }
    }
  }
}
