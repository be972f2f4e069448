/// Saving a feature table beside a model, and reading it back with every part checked.
///
/// `PREFIX.json`: the schema (format, source, id column, counts, and per column its name, type,
/// whether it was inferred, its number of features and a numeric column's buckets);
/// `PREFIX.vocab.txt`: one feature name a line, in feature order; `PREFIX.ids.txt`: one id a
/// line, in row order; `PREFIX.safetensors`: `row_start` (I32, rows + 1), `feature_index` (I32),
/// `weight` (F32) and `idf` (F32, one per feature; 1 for features that are not text tokens).
extension FeatureTable {
  /// The `format` of the schema file.
  public static let storageFormat = "recserve-features-1"

  /// The names of the files `write(to:prefix:)` writes.
  public static func storedFileNames(prefix: String) -> [String] {
    ["\(prefix).json", "\(prefix).vocab.txt", "\(prefix).ids.txt", "\(prefix).safetensors"]
  }

  /// The files of `write(to:prefix:)`, by name, for a caller that writes them itself (e.g. into
  /// a model version folder with checksums).
  public func serialized(prefix: String = "item_features") -> [String: [UInt8]] {
    let names = Self.storedFileNames(prefix: prefix)
    var idf = [Float](repeating: 1, count: vocabulary.count)
    for column in columns where column.type == .text {
      for (k, value) in column.idf.enumerated() { idf[column.features.lowerBound + k] = value }
    }
    var tensors = SafeTensors.Writer()
    tensors.add("row_start", shape: [rowStart.count], rowStart)
    tensors.add("feature_index", shape: [featureIndex.count], featureIndex)
    tensors.add("weight", shape: [weight.count], weight)
    tensors.add("idf", shape: [idf.count], idf)
    tensors.metadata = ["format": Self.storageFormat]
    return [
      names[0]: Array((schema().serialized(pretty: true) + "\n").utf8),
      names[1]: ModelStore.idFile(vocabulary),
      names[2]: ModelStore.idFile(ids),
      names[3]: tensors.serialize(),
    ]
  }

  /// Writes the table into `directory` (which must exist) as `PREFIX.json`, `PREFIX.vocab.txt`,
  /// `PREFIX.ids.txt` and `PREFIX.safetensors`, each synced; returns their names.
  @discardableResult
  public func write(to directory: String, prefix: String = "item_features") throws -> [String] {
    try Self.checkPrefix(prefix, directory: directory)
    let files = serialized(prefix: prefix)
    for name in Self.storedFileNames(prefix: prefix) {
      do {
        try FileIO.writeSynced(files[name]!, to: ModelStore.join(directory, name))
      } catch let e as FileError {
        throw DataError(file: e.path, message: "cannot \(e.operation): \(e.reason)")
      }
    }
    FileIO.fsyncDirectory(directory)
    return Self.storedFileNames(prefix: prefix)
  }

  /// Reads what `write(to:prefix:)` wrote, checking it all: the schema's fields and counts,
  /// every feature name against its column, ids non-empty and unique, `row_start` from 0, never
  /// decreasing, ending at the number of entries, feature indexes in range and increasing within
  /// a row, weights and IDFs finite and positive. Throws a `DataError` naming the bad file.
  public static func load(directory: String, prefix: String = "item_features") throws
    -> FeatureTable
  {
    try checkPrefix(prefix, directory: directory)
    let paths = storedFileNames(prefix: prefix).map { ModelStore.join(directory, $0) }
    let schema = try StoredSchema.read(paths[0])
    let vocabulary = try readLines(paths[1], expected: schema.features, what: "feature names")
    try checkVocabulary(vocabulary, columns: schema.columns, file: paths[1])
    let ids = try readLines(paths[2], expected: schema.rows, what: "ids")
    var firstLine: [String: Int] = [:]
    for (i, id) in ids.enumerated() {
      if let first = firstLine.updateValue(i + 1, forKey: id) {
        throw DataError(
          file: paths[2], line: i + 1, message: "id '\(id)' again (first on line \(first))")
      }
    }
    let matrix = try StoredMatrix.read(paths[3], schema: schema)
    var columns = schema.columns
    for c in columns.indices where columns[c].type == .text {
      columns[c].idf = Array(matrix.idf[columns[c].features])
    }
    return FeatureTable(
      source: schema.source, idColumn: schema.idColumn, ids: ids, vocabulary: vocabulary,
      columns: columns, rowStart: matrix.rowStart, featureIndex: matrix.featureIndex,
      weight: matrix.weight)
  }

  private static func checkPrefix(_ prefix: String, directory: String) throws {
    if prefix.isEmpty || prefix.hasPrefix(".") || prefix.contains("/") {
      throw DataError(
        file: directory,
        message:
          "feature file prefix '\(prefix)' must be a plain file name (no '/', no leading '.')"
      )
    }
  }

  /// The schema file's JSON.
  private func schema() -> JSONValue {
    let cols: [JSONValue] = columns.map { c in
      var o: [String: JSONValue] = [
        "name": .string(c.name), "type": .string(c.type.rawValue), "inferred": .bool(c.inferred),
        "features": .int(Int64(c.featureCount)),
      ]
      if c.type == .numeric {
        o["buckets"] = .array(c.buckets.map { .array([.double($0.min), .double($0.max)]) })
      }
      return .object(o)
    }
    return .object([
      "format": .string(Self.storageFormat), "source": .string(source),
      "id_column": .string(idColumn), "rows": .int(Int64(rowCount)),
      "features": .int(Int64(featureCount)), "nonzeros": .int(Int64(weight.count)),
      "columns": .array(cols),
    ])
  }

  /// The lines of a text file of names (one a line, none empty), which must number `expected`.
  static func readLines(_ path: String, expected: Int, what: String) throws -> [String] {
    let file: MappedFile
    do {
      file = try MappedFile(path: path)
    } catch let e as FileError {
      throw DataError(file: path, message: "cannot read: \(e.reason)")
    }
    let bytes = file.bytes
    guard let raw = bytes.baseAddress, bytes.count > 0 else {
      throw DataError(file: path, message: "file is empty (expected \(expected) \(what))")
    }
    let base = raw.assumingMemoryBound(to: UInt8.self)
    if let problem = ByteParsing.firstTextProblem(base, bytes.count) {
      let (offset, what) =
        switch problem {
        case .nul(let o): (o, "contains a NUL byte")
        case .invalidUTF8(let o): (o, "is not valid UTF-8")
        }
      throw DataError(file: path, line: ByteParsing.lineNumber(base, offset: offset), message: what)
    }
    var lines = String(decoding: bytes, as: UTF8.self).split(
      separator: "\n", omittingEmptySubsequences: false
    ).map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }
    if lines.last == "" { lines.removeLast() }
    if let empty = lines.firstIndex(of: "") {
      throw DataError(file: path, line: empty + 1, message: "empty line (one name a line)")
    }
    if lines.count != expected {
      throw DataError(
        file: path, message: "\(lines.count) lines, but the schema says \(expected) \(what)")
    }
    return lines
  }

  /// Every feature name is its column's: `name=VALUE` (categorical, multi), `name#k` (numeric,
  /// k its position), `name:TOKEN` (text).
  private static func checkVocabulary(_ vocabulary: [String], columns: [Column], file: String)
    throws
  {
    for column in columns {
      for f in column.features {
        let name = vocabulary[f]
        let ok: Bool
        let expected: String
        switch column.type {
        case .numeric:
          expected = "\(column.name)#\(f - column.features.lowerBound)"
          ok = name == expected
        case .categorical, .multi, .text:
          expected = column.name + (column.type == .text ? ":TOKEN" : "=VALUE")
          let prefix = column.name + (column.type == .text ? ":" : "=")
          ok = name.hasPrefix(prefix) && name.count > prefix.count
        case .ignore:
          expected = "no feature"
          ok = false
        }
        if !ok {
          throw DataError(
            file: file, line: f + 1,
            message:
              "'\(FeatureFileReader.short(name))' is not a feature of column '\(column.name)' (\(column.type): expected '\(expected)')"
          )
        }
      }
    }
  }
}
