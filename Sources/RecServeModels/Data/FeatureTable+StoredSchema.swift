extension FeatureTable {
  /// The contents of a saved table's schema file (`PREFIX.json`), checked.
  struct StoredSchema {
    var source: String
    var idColumn: String
    var rows: Int
    var features: Int
    var nonzeros: Int
    /// With their feature ranges and buckets; `idf` is filled from the tensors.
    var columns: [Column]

    static func read(_ path: String) throws -> StoredSchema {
      let file: MappedFile
      do {
        file = try MappedFile(path: path)
      } catch let e as FileError {
        throw DataError(file: path, message: "cannot read: \(e.reason)")
      }
      let json: JSONValue
      do {
        json = try JSONValue.parse(file.bytes)
      } catch {
        throw DataError(file: path, message: "not valid JSON (\(error))")
      }
      func fail(_ message: String) -> DataError { DataError(file: path, message: message) }
      guard json["format"]?.stringValue == FeatureTable.storageFormat else {
        throw fail("format is not '\(FeatureTable.storageFormat)' (got \(json["format"] ?? .null))")
      }
      guard let source = json["source"]?.stringValue else { throw fail("source is missing") }
      guard let idColumn = json["id_column"]?.stringValue, !idColumn.isEmpty else {
        throw fail("id_column is missing or empty")
      }
      let rows = try count(json, "rows", in: 1...Int(Int32.max), fail)
      let features = try count(json, "features", in: 1...FeatureTable.maxFeatures, fail)
      let nonzeros = try count(json, "nonzeros", in: 0...Int(Int32.max), fail)
      guard let list = json["columns"]?.arrayValue, !list.isEmpty else {
        throw fail("columns is missing or empty")
      }
      var columns: [Column] = []
      for (i, value) in list.enumerated() {
        let first = columns.last?.features.upperBound ?? 0
        columns.append(
          try column(value, first: first, total: features, fail: { fail("columns[\(i)]: \($0)") }))
      }
      if columns.last!.features.upperBound != features {
        throw fail(
          "the columns have \(columns.last!.features.upperBound) features, but features is \(features)"
        )
      }
      return StoredSchema(
        source: source, idColumn: idColumn, rows: rows, features: features, nonzeros: nonzeros,
        columns: columns)
    }

    private static func count(
      _ json: JSONValue, _ key: String, in range: ClosedRange<Int>,
      _ fail: (String) -> DataError
    ) throws -> Int {
      guard let v = json[key]?.intValue, v >= range.lowerBound, v <= range.upperBound else {
        throw fail(
          "\(key) must be an integer in \(range.lowerBound)...\(range.upperBound) (got \(json[key] ?? .null))"
        )
      }
      return Int(v)
    }

    /// One entry of `columns`, whose features start at `first`.
    private static func column(
      _ value: JSONValue, first: Int, total: Int, fail: (String) -> DataError
    ) throws -> Column {
      guard let name = value["name"]?.stringValue, !name.isEmpty else {
        throw fail("name is missing or empty")
      }
      guard let typeName = value["type"]?.stringValue, let type = ColumnType(rawValue: typeName)
      else {
        throw fail("type \(value["type"] ?? .null) is not a column type")
      }
      guard case .bool(let inferred)? = value["inferred"] else {
        throw fail("inferred is not a boolean")
      }
      guard let n = value["features"]?.intValue, n >= 0, n <= total - first else {
        throw fail(
          "features \(value["features"] ?? .null) is not a count within the table's \(total)")
      }
      if type == .ignore && n != 0 { throw fail("an ignored column has \(n) features") }
      var result = Column(
        name: name, type: type, inferred: inferred, features: first..<(first + Int(n)), buckets: [],
        idf: [])
      if type == .numeric {
        result.buckets = try buckets(value["buckets"], count: Int(n), fail: fail)
      }
      return result
    }

    /// A numeric column's `[[min, max], ...]`: one per feature, finite, in increasing order.
    private static func buckets(_ value: JSONValue?, count: Int, fail: (String) -> DataError)
      throws -> [Bucket]
    {
      guard let list = value?.arrayValue, list.count == count else {
        throw fail("buckets must list \(count) [min, max] pairs")
      }
      var out: [Bucket] = []
      for (k, pair) in list.enumerated() {
        guard let p = pair.arrayValue, p.count == 2, let lo = p[0].doubleValue,
          let hi = p[1].doubleValue, lo.isFinite, hi.isFinite, lo <= hi
        else {
          throw fail("buckets[\(k)] is not a finite [min, max] with min <= max")
        }
        if let last = out.last, lo <= last.max {
          throw fail(
            "buckets[\(k)] starts at \(lo), not after the previous bucket's max \(last.max)")
        }
        out.append(Bucket(min: lo, max: hi))
      }
      return out
    }
  }
}
