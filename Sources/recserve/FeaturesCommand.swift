import ArgumentParser
import Foundation
import RecServeModels

/// `recserve features FILE`: how a feature file is read (each column's type and features).
struct FeaturesCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "features",
    abstract: "Show how an item or user feature file is read: each column's type and features.",
    discussion: """
      FILE is CSV with a header whose first column is the id (tab-separated when the header has \
      tabs and no commas). Every other column is categorical (feature column=value), multi \
      (values split on '|'), numeric (quantile buckets, feature column#k), text (tokens, TF-IDF \
      weights, feature column:token) or ignore. Types are inferred from the values; \
      --feature-types overrides them. Prints per column its type, number of features and the \
      features in most rows, then the totals. A bad file prints `error: FILE:LINE: reason` and \
      exits with status 1.
      """)

  @Argument(help: "The feature file.")
  var file: String

  @Option(
    name: .customLong("feature-types"),
    help: ArgumentHelp(
      "Column types overriding inference, e.g. genres:multi,title:text (types: categorical, multi, numeric, text, ignore).",
      valueName: "column:type,..."))
  var featureTypes: String?

  @Option(name: .customLong("numeric-buckets"), help: "The most buckets of a numeric column.")
  var numericBuckets: Int = 10

  @Option(
    name: .customLong("text-vocabulary"), help: "The most tokens a text column keeps.")
  var textVocabulary: Int = 20_000

  @Option(help: "Features shown per column.")
  var examples: Int = 5

  @Flag(help: "Print one JSON object instead of text.")
  var json = false

  func validate() throws {
    if examples < 0 { throw ValidationError("--examples must be at least 0") }
    if !(1...FeatureTable.maxNumericBuckets).contains(numericBuckets) {
      throw ValidationError(
        "--numeric-buckets must be in 1...\(FeatureTable.maxNumericBuckets) (got \(numericBuckets))"
      )
    }
    if !(1...FeatureTable.maxFeatures).contains(textVocabulary) {
      throw ValidationError(
        "--text-vocabulary must be in 1...\(FeatureTable.maxFeatures) (got \(textVocabulary))")
    }
  }

  func run() throws {
    do {
      let types = try featureTypes.map { try FeatureTable.ColumnType.parseOverrides($0) } ?? [:]
      let table = try FeatureTable.load(
        path: file,
        options: FeatureTable.Options(
          types: types, numericBuckets: numericBuckets, textVocabulary: textVocabulary))
      let summary = FeatureSummary(table, examples: examples)
      print(json ? summary.json().serialized(pretty: true) : summary.text())
    } catch {
      throw CLI.failure(error)
    }
  }
}

/// What `recserve features` prints about a table.
struct FeatureSummary {
  let table: FeatureTable
  /// Rows holding each feature.
  let rowsWith: [Int]
  let examples: Int

  init(_ table: FeatureTable, examples: Int) {
    self.table = table
    self.examples = examples
    var counts = [Int](repeating: 0, count: table.featureCount)
    for f in table.featureIndex { counts[Int(f)] += 1 }
    rowsWith = counts
  }

  var rowsWithoutFeatures: Int {
    (0..<table.rowCount).reduce(0) { $0 + (table.entries(ofRow: $1).isEmpty ? 1 : 0) }
  }

  var averageFeatures: Double { Double(table.featureIndex.count) / Double(table.rowCount) }

  /// The column's features to show: numeric buckets in order, else those in most rows.
  func shown(_ column: FeatureTable.Column) -> [Int] {
    if column.type == .numeric { return Array(column.features.prefix(examples)) }
    let sorted = column.features.sorted {
      rowsWith[$0] != rowsWith[$1] ? rowsWith[$0] > rowsWith[$1] : $0 < $1
    }
    return Array(sorted.prefix(examples))
  }

  /// A feature without its column's name: the value, the token, or a bucket's range.
  func label(_ f: Int, in column: FeatureTable.Column) -> String {
    if column.type == .numeric {
      let b = column.buckets[f - column.features.lowerBound]
      let range =
        b.min == b.max ? Self.number(b.min) : "\(Self.number(b.min))…\(Self.number(b.max))"
      return "#\(f - column.features.lowerBound) \(range)"
    }
    return String(table.vocabulary[f].dropFirst(column.name.count + 1))
  }

  static func number(_ x: Double) -> String { String(format: "%g", x) }

  func text() -> String {
    var lines = [
      "\(table.source): \(table.rowCount) rows (ids in column '\(table.idColumn)'), \(table.columns.count) feature columns, \(table.featureCount) features"
    ]
    let typeWidth = 24
    let nameWidth = max(6, table.columns.map(\.name.count).max() ?? 0)
    lines.append(
      Self.pad("column", nameWidth) + "  " + Self.pad("type", typeWidth) + "  features  "
        + "examples (rows with it)")
    for column in table.columns {
      let type = "\(column.type) (\(column.inferred ? "inferred" : "given"))"
      let shownText = shown(column).map { "\(label($0, in: column)) (\(rowsWith[$0]))" }
        .joined(separator: ", ")
      let count = String(column.featureCount)
      lines.append(
        Self.pad(column.name, nameWidth) + "  " + Self.pad(type, typeWidth) + "  "
          + String(repeating: " ", count: max(0, 8 - count.count)) + count + "  " + shownText)
    }
    lines.append(
      "\(table.featureIndex.count) entries, \(CLI.fmt(averageFeatures, 2)) features per row on average, \(rowsWithoutFeatures) rows without any feature"
    )
    return lines.joined(separator: "\n")
  }

  static func pad(_ s: String, _ width: Int) -> String {
    s + String(repeating: " ", count: max(0, width - s.count))
  }

  func json() -> JSONValue {
    let columns: [JSONValue] = table.columns.map { column in
      var o: [String: JSONValue] = [
        "name": .string(column.name), "type": .string(column.type.rawValue),
        "inferred": .bool(column.inferred), "features": .int(Int64(column.featureCount)),
        "examples": .array(
          shown(column).map {
            .object(["feature": .string(table.vocabulary[$0]), "rows": .int(Int64(rowsWith[$0]))])
          }),
      ]
      if column.type == .numeric {
        o["buckets"] = .array(
          column.buckets.map { .object(["min": .double($0.min), "max": .double($0.max)]) })
      }
      return .object(o)
    }
    return .object([
      "file": .string(table.source), "rows": .int(Int64(table.rowCount)),
      "id_column": .string(table.idColumn), "features": .int(Int64(table.featureCount)),
      "entries": .int(Int64(table.featureIndex.count)),
      "avg_features_per_row": .double(averageFeatures),
      "rows_without_features": .int(Int64(rowsWithoutFeatures)), "columns": .array(columns),
    ])
  }
}
