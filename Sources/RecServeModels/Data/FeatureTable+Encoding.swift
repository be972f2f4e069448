extension FeatureTable {
  /// One column's features before the columns are put together: their names and, per row, the
  /// column-local feature indexes (increasing) with their weights before normalisation.
  struct EncodedColumn {
    var names: [String] = []
    var buckets: [Bucket] = []
    var idf: [Float] = []
    var rowStart: [Int] = [0]
    var index: [Int32] = []
    var weight: [Float] = []

    /// A column without features over `rows` rows.
    static func empty(rows: Int) -> EncodedColumn {
      var e = EncodedColumn()
      e.rowStart = [Int](repeating: 0, count: rows + 1)
      return e
    }

    /// Ends the current row with the features appended since the last one.
    mutating func endRow() { rowStart.append(index.count) }
  }

  /// Feature column c (header[c + 1]) as `type`.
  static func encode(_ file: FeatureFileRows, column c: Int, type: ColumnType, options: Options)
    throws -> EncodedColumn
  {
    switch type {
    case .ignore: return .empty(rows: file.ids.count)
    case .categorical: return try encodeValues(file, column: c, split: false)
    case .multi: return try encodeValues(file, column: c, split: true)
    case .numeric: return try encodeNumeric(file, column: c, buckets: options.numericBuckets)
    case .text: return encodeText(file, column: c, vocabularyCap: options.textVocabulary)
    }
  }

  /// Categorical (`split` false) or multi-valued (`split` on '|') values: feature
  /// `column=value` of weight 1 per distinct value, in order of first appearance.
  static func encodeValues(_ file: FeatureFileRows, column c: Int, split: Bool) throws
    -> EncodedColumn
  {
    let name = file.header[c + 1]
    var e = EncodedColumn()
    var lookup: [String: Int32] = [:]
    var local: [Int32] = []
    for (r, value) in file.values[c].enumerated() {
      local.removeAll(keepingCapacity: true)
      let parts = split ? value.split(separator: "|").map(trimmed) : [value]
      for part in parts where !part.isEmpty {
        if let k = lookup[part] {
          local.append(k)
          continue
        }
        if part.utf8.contains(13) {
          throw DataError(
            file: file.source, line: file.lines[r],
            message:
              "column '\(name)': a value contains a line break (carriage return); feature names are stored one a line"
          )
        }
        if e.names.count >= maxFeatures {
          throw DataError(
            file: file.source, line: file.lines[r],
            message:
              "column '\(name)' has more than \(maxFeatures) distinct values; give it type text or ignore"
          )
        }
        let k = Int32(e.names.count)
        lookup[part] = k
        e.names.append("\(name)=\(part)")
        local.append(k)
      }
      local.sort()
      var last: Int32 = -1
      for k in local where k != last {
        e.index.append(k)
        e.weight.append(1)
        last = k
      }
      e.endRow()
    }
    return e
  }

  static func trimmed(_ s: Substring) -> String {
    var s = s
    while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
    while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
    return String(s)
  }

  /// Numbers in at most `buckets` quantile buckets (each distinct value its own bucket when
  /// there are no more than `buckets` of them): feature `column#k` of weight 1.
  static func encodeNumeric(_ file: FeatureFileRows, column c: Int, buckets: Int) throws
    -> EncodedColumn
  {
    let name = file.header[c + 1]
    var numbers = [Double?](repeating: nil, count: file.ids.count)
    for (r, value) in file.values[c].enumerated() where !value.isEmpty {
      guard case .value(let x) = ByteParsing.parseDouble(value), x.isFinite else {
        throw DataError(
          file: file.source, line: file.lines[r],
          message:
            "column '\(name)' is numeric, but '\(FeatureFileReader.short(value))' is not a finite number (give the column another type, e.g. \(name):categorical)"
        )
      }
      numbers[r] = x
    }
    let mins = bucketMins(numbers.compactMap { $0 }.sorted(), buckets: buckets)
    var e = EncodedColumn()
    e.buckets = mins.map { Bucket(min: $0, max: $0) }
    e.names = mins.indices.map { "\(name)#\($0)" }
    for x in numbers {
      if let x {
        let k = bucket(of: x, mins: mins)
        e.buckets[k].max = Swift.max(e.buckets[k].max, x)
        e.index.append(Int32(k))
        e.weight.append(1)
      }
      e.endRow()
    }
    return e
  }

  /// The smallest value of each bucket, increasing, from the sorted values of a column: its
  /// distinct values when there are at most `buckets`, else equal-frequency buckets: each
  /// takes an equal share of the values not yet in a bucket, extended past ties (so a value is
  /// never split between buckets and no bucket is empty).
  static func bucketMins(_ sorted: [Double], buckets: Int) -> [Double] {
    var distinct: [Double] = []
    for x in sorted where x != distinct.last {
      distinct.append(x)
      if distinct.count > buckets { break }
    }
    if distinct.count <= buckets { return distinct }
    let n = sorted.count
    var mins = [sorted[0]]
    var start = 0
    while mins.count < buckets {
      let share = (n - start + (buckets - mins.count)) / (buckets - mins.count + 1)
      var next = start + Swift.max(share, 1)
      while next < n && sorted[next] == sorted[next - 1] { next += 1 }
      if next >= n { break }
      mins.append(sorted[next])
      start = next
    }
    return mins
  }

  /// The last bucket whose min is at most x (0 when x is below all).
  static func bucket(of x: Double, mins: [Double]) -> Int {
    var lo = 0
    var hi = mins.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if mins[mid] <= x { lo = mid + 1 } else { hi = mid }
    }
    return Swift.max(lo - 1, 0)
  }

  /// One row's features from its columns' (feature, weight) lists, weights normalised so that
  /// each column with features takes an equal share of 1 (a long title's many tokens do not
  /// drown its genres).
  static func balanced(_ columns: [[(Int32, Float)]]) -> [(Int32, Float)] {
    let present = columns.filter { !$0.isEmpty }.count
    var out: [(Int32, Float)] = []
    for column in columns where !column.isEmpty {
      let sum = column.reduce(0.0) { $0 + Double($1.1) }
      for (feature, w) in column {
        out.append((feature, Float(Double(w) / sum / Double(present))))
      }
    }
    return out
  }

  /// The columns side by side in one CSR matrix, each row's weights normalised to sum to 1
  /// with an equal share per column (see `balanced`).
  static func assemble(
    _ file: FeatureFileRows, types: [(type: ColumnType, inferred: Bool)],
    encoded: [EncodedColumn]
  ) throws -> FeatureTable {
    var vocabulary: [String] = []
    var columns: [Column] = []
    for (c, e) in encoded.enumerated() {
      let first = vocabulary.count
      vocabulary += e.names
      columns.append(
        Column(
          name: file.header[c + 1], type: types[c].type, inferred: types[c].inferred,
          features: first..<vocabulary.count, buckets: e.buckets, idf: e.idf))
    }
    let nonzeros = encoded.reduce(0) { $0 + $1.index.count }
    if nonzeros > Int(Int32.max) {
      throw DataError(
        file: file.source, message: "more than \(Int32.max) features over all rows")
    }
    var rowStart: [Int32] = [0]
    var featureIndex: [Int32] = []
    var weight: [Float] = []
    rowStart.reserveCapacity(file.ids.count + 1)
    featureIndex.reserveCapacity(nonzeros)
    weight.reserveCapacity(nonzeros)
    var row: [[(Int32, Float)]] = Array(repeating: [], count: encoded.count)
    for r in 0..<file.ids.count {
      for (c, e) in encoded.enumerated() {
        let offset = Int32(columns[c].features.lowerBound)
        row[c] = (e.rowStart[r]..<e.rowStart[r + 1]).map { (e.index[$0] + offset, e.weight[$0]) }
      }
      for (feature, w) in balanced(row) {
        featureIndex.append(feature)
        weight.append(w)
      }
      rowStart.append(Int32(weight.count))
    }
    return FeatureTable(
      source: file.source, idColumn: file.header[0], ids: file.ids, vocabulary: vocabulary,
      columns: columns, rowStart: rowStart, featureIndex: featureIndex, weight: weight)
  }
}
