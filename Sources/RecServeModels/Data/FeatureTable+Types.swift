extension FeatureTable.ColumnType {
  /// Parses `genres:multi,title:text` (the form of `--feature-types`) into overrides for
  /// `FeatureTable.Options.types`; the column name is what precedes the last ':'. Throws a
  /// `DataError` naming `source` for an entry without a type, an unknown type or a column named
  /// twice.
  public static func parseOverrides(_ spec: String, source: String = "--feature-types") throws
    -> [String: FeatureTable.ColumnType]
  {
    var out: [String: FeatureTable.ColumnType] = [:]
    for entry in spec.split(separator: ",", omittingEmptySubsequences: true) {
      let item = entry.trimmingSpaces()
      if item.isEmpty { continue }
      guard let colon = item.lastIndex(of: ":") else {
        throw DataError(file: source, message: "'\(item)' is not COLUMN:TYPE")
      }
      let column = String(item[..<colon]).trimmingSpaces()
      let typeName = String(item[item.index(after: colon)...]).trimmingSpaces()
      if column.isEmpty { throw DataError(file: source, message: "'\(item)' names no column") }
      guard let type = Self(rawValue: typeName.lowercased()) else {
        throw DataError(
          file: source,
          message:
            "unknown column type '\(typeName)' for column '\(column)' (known: \(allCases.map(\.rawValue).joined(separator: ", ")))"
        )
      }
      if out.updateValue(type, forKey: column) != nil {
        throw DataError(file: source, message: "column '\(column)' is given a type twice")
      }
    }
    return out
  }
}

extension StringProtocol {
  fileprivate func trimmingSpaces() -> String {
    var s = Substring(self)
    while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
    while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
    return String(s)
  }
}

extension FeatureTable {
  /// Each feature column's type (c = 0 is header[1]) and whether it was inferred: the overrides
  /// matched to the header (exactly, else ignoring case), the rest inferred. A column empty in
  /// every row is refused unless it is ignored.
  static func resolveTypes(_ file: FeatureFileRows, overrides: [String: ColumnType]) throws
    -> [(type: ColumnType, inferred: Bool)]
  {
    var given = [ColumnType?](repeating: nil, count: file.values.count)
    for (name, type) in overrides.sorted(by: { $0.key < $1.key }) {
      let c = try overriddenColumn(name, file)
      given[c] = type
    }
    var out: [(type: ColumnType, inferred: Bool)] = []
    for (c, values) in file.values.enumerated() {
      if given[c] == .ignore {
        out.append((.ignore, false))
        continue
      }
      if values.allSatisfy(\.isEmpty) {
        throw DataError(
          file: file.source, line: file.headerLine,
          message:
            "column '\(file.header[c + 1])' is empty in every row (give it type ignore to drop it)")
      }
      if let type = given[c] {
        out.append((type, false))
      } else {
        out.append((inferType(values), true))
      }
    }
    return out
  }

  /// The feature column (0 = header[1]) an override names.
  private static func overriddenColumn(_ name: String, _ file: FeatureFileRows) throws -> Int {
    let header = file.header
    var index = header.firstIndex(of: name)
    if index == nil {
      let matches = header.indices.filter { header[$0].lowercased() == name.lowercased() }
      if matches.count == 1 { index = matches[0] }
    }
    guard let index else {
      throw DataError(
        file: file.source, line: file.headerLine,
        message:
          "a type is given for column '\(name)', which is not in the header (columns: \(header.joined(separator: ", ")))"
      )
    }
    if index == 0 {
      throw DataError(
        file: file.source, line: file.headerLine,
        message: "column '\(header[0])' is the id column; it takes no feature type")
    }
    return index - 1
  }

  /// The type a column's values suggest (see `load(path:options:)`).
  static func inferType(_ values: [String]) -> ColumnType {
    let present = values.filter { !$0.isEmpty }
    if present.isEmpty { return .ignore }
    let allNumbers = present.allSatisfy { v in
      if case .value(let x) = ByteParsing.parseDouble(v) { return x.isFinite }
      return false
    }
    if allNumbers { return .numeric }
    let piped = present.reduce(0) { $0 + ($1.utf8.contains(124) ? 1 : 0) }
    if piped * 20 >= present.count { return .multi }
    let spaced = present.reduce(0) { $0 + ($1.utf8.contains(32) ? 1 : 0) }
    if spaced * 2 > present.count { return .text }
    if present.count >= 20 && Set(present).count * 2 > present.count { return .text }
    return .categorical
  }
}
