/// A parsed feature file (item or user features) as a sparse matrix: one row per id, in file
/// order, over a vocabulary of named features.
///
/// The file is CSV with a header whose first column is the id (kept as a string, as the ratings
/// loader keeps ids); see `load(path:options:)`. Every other column is one of `ColumnType`:
/// inferred from its values unless `Options.types` names it. Each column owns a contiguous range
/// of the vocabulary (`Column.features`), in column order:
/// - `categorical`: one feature `column=value` per row;
/// - `multi`: values split on `|`, one feature `column=value` each;
/// - `numeric`: at most `Options.numericBuckets` quantile buckets over the file, feature
///   `column#k` (k from 0, in increasing value; `Column.buckets[k]` holds its range);
/// - `text`: lower-cased, split on anything that is not a letter or a digit, tokens shorter
///   than 2 characters or found in fewer than 2 rows dropped, the `Options.textVocabulary`
///   tokens in most rows kept; feature `column:token`, weighted TF-IDF (`Column.idf`);
/// - `ignore`: no features.
///
/// The matrix is CSR: row r's features are `featureIndex[rowStart[r]..<rowStart[r + 1]]`
/// (increasing) with `weight[...]` at the same positions. Categorical, multi and numeric features
/// weigh 1 and text tokens their count times their IDF before each row is normalised to sum to 1
/// (as LightFM does by default), each column with features in the row taking an equal share
/// (a title of many tokens would otherwise drown the genres); a row without any feature has no
/// entries.
public struct FeatureTable: Sendable, Equatable {
  /// How a column turns into features.
  public enum ColumnType: String, Sendable, Equatable, CaseIterable, CustomStringConvertible {
    case categorical, multi, numeric, text, ignore

    public var description: String { rawValue }
  }

  /// The values a numeric bucket holds in the file it was computed from: a value v falls in the
  /// last bucket whose `min` is at most v (the first bucket when v is below every `min`).
  public struct Bucket: Sendable, Equatable {
    public var min: Double
    public var max: Double

    public init(min: Double, max: Double) {
      self.min = min
      self.max = max
    }
  }

  /// One feature column of the file (the id column is not one).
  public struct Column: Sendable, Equatable {
    public var name: String
    public var type: ColumnType
    /// True when the type was inferred from the values, false when `Options.types` gave it.
    public var inferred: Bool
    /// The column's features: `vocabulary[features]`.
    public var features: Range<Int>
    /// `numeric`: one bucket per feature, in order; empty for other types.
    public var buckets: [Bucket]
    /// `text`: the inverse document frequency of each feature, ln((1 + rows) / (1 + rows with
    /// the token)) + 1; empty for other types.
    public var idf: [Float]

    public var featureCount: Int { features.count }
  }

  /// What `load(path:options:)` may be told.
  public struct Options: Sendable, Equatable {
    /// Column name → type, overriding inference. A name not in the header is an error.
    public var types: [String: ColumnType]
    /// The most buckets a numeric column gets, 1...`maxNumericBuckets`.
    public var numericBuckets: Int
    /// The most tokens a text column keeps (those in most rows), 1...`maxFeatures`.
    public var textVocabulary: Int

    public init(
      types: [String: ColumnType] = [:], numericBuckets: Int = 10, textVocabulary: Int = 20_000
    ) {
      self.types = types
      self.numericBuckets = numericBuckets
      self.textVocabulary = textVocabulary
    }
  }

  /// Lines longer than this many bytes are refused.
  public static let maxLineBytes = 1 << 20
  /// The most features a table may have (all columns together); a categorical column with more
  /// distinct values is refused.
  public static let maxFeatures = 1_000_000
  /// The most buckets `Options.numericBuckets` may ask for.
  public static let maxNumericBuckets = 1_000

  /// The file the table was parsed from, for messages.
  public let source: String
  /// The header's name of the id column.
  public let idColumn: String
  /// One id per row, in file order.
  public let ids: [String]
  /// Feature names, indexed by `featureIndex`.
  public let vocabulary: [String]
  public let columns: [Column]
  /// Row r's entries are `rowStart[r]..<rowStart[r + 1]`; `rowCount + 1` values from 0.
  public let rowStart: [Int32]
  /// Each entry's feature, increasing within a row.
  public let featureIndex: [Int32]
  /// Each entry's weight (positive; a row's weights sum to 1).
  public let weight: [Float]

  public var rowCount: Int { ids.count }
  public var featureCount: Int { vocabulary.count }

  /// Row r's entries: indexes into `featureIndex` and `weight`.
  public func entries(ofRow r: Int) -> Range<Int> {
    Int(rowStart[r])..<Int(rowStart[r + 1])
  }

  init(
    source: String, idColumn: String, ids: [String], vocabulary: [String], columns: [Column],
    rowStart: [Int32], featureIndex: [Int32], weight: [Float]
  ) {
    self.source = source
    self.idColumn = idColumn
    self.ids = ids
    self.vocabulary = vocabulary
    self.columns = columns
    self.rowStart = rowStart
    self.featureIndex = featureIndex
    self.weight = weight
  }

  /// Parses a feature file: CSV with a header whose first column is the id, RFC 4180 quoting
  /// (a quoted value cannot span lines), or tab-separated when the header has tabs and no commas;
  /// an optional UTF-8 byte-order mark; LF or CRLF line ends. Values are trimmed of spaces;
  /// an empty value means the row lacks that column's features.
  ///
  /// Types are inferred per column unless `options.types` gives them: every non-empty value a
  /// finite number → numeric; `|` in at least 5% of the values → multi; more than half the
  /// values holding a space, or (with 20 values or more) more than half of them distinct → text;
  /// otherwise categorical.
  ///
  /// Throws a `DataError` naming the file and line: a missing or empty file, no header, an id
  /// column without a name, no feature column, a row with the wrong number of fields, an empty or
  /// repeated id, an unterminated quote, a column empty in every row, an override naming no
  /// column, a non-number in a numeric column, a line or vocabulary over the limits.
  public static func load(path: String, options: Options = Options()) throws -> FeatureTable {
    try options.check(source: path)
    return try build(FeatureFileReader.read(path: path), options: options)
  }

  /// `load(path:options:)` over text in memory; `source` names it in errors.
  public static func parse(text: String, source: String, options: Options = Options()) throws
    -> FeatureTable
  {
    try options.check(source: source)
    var text = text
    let rows = try text.withUTF8 { u in
      try FeatureFileReader.read(bytes: UnsafeRawBufferPointer(u), source: source)
    }
    return try build(rows, options: options)
  }

  /// Types, features per column, then the rows put together and normalised.
  static func build(_ file: FeatureFileRows, options: Options) throws -> FeatureTable {
    let types = try resolveTypes(file, overrides: options.types)
    var encoded: [EncodedColumn] = []
    var total = 0
    for c in 0..<types.count {
      let column = try encode(file, column: c, type: types[c].type, options: options)
      total += column.names.count
      if total > maxFeatures {
        throw DataError(
          file: file.source,
          message:
            "more than \(maxFeatures) features (reached at column '\(file.header[c + 1])'); give a column with many distinct values type text or ignore"
        )
      }
      encoded.append(column)
    }
    if total == 0 {
      throw DataError(
        file: file.source, line: file.headerLine,
        message:
          "no features: no column yields any (\(describe(types, header: file.header)))")
    }
    return try assemble(file, types: types, encoded: encoded)
  }

  private static func describe(
    _ types: [(type: ColumnType, inferred: Bool)], header: [String]
  ) -> String {
    types.enumerated().map { "\(header[$0.offset + 1]): \($0.element.type)" }.joined(
      separator: ", ")
  }
}

extension FeatureTable.Options {
  func check(source: String) throws {
    if !(1...FeatureTable.maxNumericBuckets).contains(numericBuckets) {
      throw DataError(
        file: source,
        message:
          "numeric buckets must be in 1...\(FeatureTable.maxNumericBuckets), got \(numericBuckets)")
    }
    if !(1...FeatureTable.maxFeatures).contains(textVocabulary) {
      throw DataError(
        file: source,
        message:
          "the text vocabulary must be in 1...\(FeatureTable.maxFeatures) tokens, got \(textVocabulary)"
      )
    }
  }
}
