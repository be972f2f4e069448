import Foundation
import Testing

@testable import RecServeModels

/// Writes `text` as `name` in `dir` and parses it.
private func table(
  _ dir: TempDir, _ text: String, name: String = "features.csv",
  options: FeatureTable.Options = FeatureTable.Options()
) throws -> FeatureTable {
  try FeatureTable.load(path: dir.write(name, text), options: options)
}

/// The `DataError` parsing `text` raises.
private func parseError(
  _ dir: TempDir, _ text: String, name: String = "bad.csv",
  options: FeatureTable.Options = FeatureTable.Options()
) -> DataError? {
  errorOf { try table(dir, text, name: name, options: options) } as? DataError
}

/// Row r's features by name with their weights.
private func rowFeatures(_ t: FeatureTable, _ r: Int) -> [String: Float] {
  var out: [String: Float] = [:]
  for k in t.entries(ofRow: r) { out[t.vocabulary[Int(t.featureIndex[k])]] = t.weight[k] }
  return out
}

private func rowFeatures(_ t: FeatureTable, id: String) -> [String: Float] {
  rowFeatures(t, t.ids.firstIndex(of: id)!)
}

/// A small movies file: 6 rows, quoting, multi-valued genres, titles with years.
private let movies = """
  movieId,title,genres
  1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
  2,Jumanji (1995),Adventure|Children|Fantasy
  3,"American President, The (1995)",Comedy|Drama|Romance
  4,"Say ""Hello"" Story (1996)",(no genres listed)
  5,Heat (1995),Action|Crime|Thriller
  6,Toy Soldiers (1996),Action|Drama

  """

@Suite struct FeatureTableParsing {
  @Test func moviesWithQuotesYearsAndGenres() throws {
    let dir = TempDir()
    let t = try table(dir, movies)
    #expect(t.ids == ["1", "2", "3", "4", "5", "6"])
    #expect(t.idColumn == "movieId")
    #expect(t.columns.map(\.name) == ["title", "genres"])
    #expect(t.columns.map(\.type) == [.text, .multi])
    #expect(t.columns.map(\.inferred) == [true, true])
    // Tokens in at least 2 rows: toy, story, 1995, 1996.
    let title = t.columns[0]
    #expect(
      Set(t.vocabulary[title.features]) == ["title:toy", "title:story", "title:1995", "title:1996"])
    #expect(
      Set(rowFeatures(t, id: "4").keys) == [
        "title:story", "title:1996", "genres=(no genres listed)",
      ])
    #expect(
      Set(rowFeatures(t, id: "3").keys)
        == ["title:1995", "genres=Comedy", "genres=Drama", "genres=Romance"])
    #expect(t.columns[1].featureCount == 11)
    #expect(t.vocabulary[t.columns[1].features.lowerBound] == "genres=Adventure")
  }

  @Test func quotedValuesKeepDelimitersAndDoubledQuotes() throws {
    let dir = TempDir()
    let t = try table(
      dir,
      "id,studio\n\"a,1\",\"Big \"\"Q\"\" Films, Inc\"\n  b  , \"Big \"\"Q\"\" Films, Inc\" \nc,Other\n",
      options: .init(types: ["studio": .categorical]))
    #expect(t.ids == ["a,1", "b", "c"])
    #expect(t.vocabulary == ["studio=Big \"Q\" Films, Inc", "studio=Other"])
    #expect(rowFeatures(t, 1) == ["studio=Big \"Q\" Films, Inc": 1])
  }

  @Test func byteOrderMarkCRLFBlankLinesAndTabs() throws {
    let dir = TempDir()
    let t = try table(
      dir, "\u{FEFF}item_id\tcolor\tsize\r\na\tred\tS\r\n\r\nb\tdark blue, navy\tM\r\nc\tred\t\r\n",
      name: "items.tsv", options: .init(types: ["color": .categorical]))
    #expect(t.idColumn == "item_id")
    #expect(t.ids == ["a", "b", "c"])
    #expect(t.columns.map(\.name) == ["color", "size"])
    #expect(rowFeatures(t, 1) == ["color=dark blue, navy": 0.5, "size=M": 0.5])
    // An empty value: the row lacks that column's feature.
    #expect(rowFeatures(t, 2) == ["color=red": 1])
  }

  @Test func commaHeaderWithTabsInsideStaysCSV() throws {
    let dir = TempDir()
    let t = try table(dir, "id,tag\n1,a\tb\n2,a\tb\n", options: .init(types: ["tag": .categorical]))
    #expect(t.vocabulary == ["tag=a\tb"])
  }

  @Test func idsAreKeptLikeTheRatingsLoaderKeepsThem() throws {
    let dir = TempDir()
    let features = try table(
      dir, "movieId,color\n 10 ,red\n\"x y\",blue\n", options: .init(types: ["color": .categorical])
    )
    let ratings = try Interactions.load(
      path: dir.write("r.csv", "user,item\nu1, 10 \nu1,\"x y\"\n"))
    #expect(features.ids == ratings.itemIds)
  }
}

@Suite struct FeatureTableTypes {
  /// 40 rows: year numeric, tags multi, title text (spaces), color categorical, code text
  /// (single words, mostly distinct), note empty except once.
  static func mixed() -> String {
    var s = "id,year,tags,title,color,code\n"
    let colors = ["red", "green", "blue"]
    for i in 0..<40 {
      let tags = i % 4 == 0 ? "a|b" : "a"
      s += "i\(i),\(1990 + i % 7),\(tags),The movie number \(i),\(colors[i % 3]),c\(i % 30)x\n"
    }
    return s
  }

  @Test func inferredPerColumn() throws {
    let dir = TempDir()
    let t = try table(dir, Self.mixed())
    #expect(t.columns.map(\.type) == [.numeric, .multi, .text, .categorical, .text])
  }

  @Test func inferenceRules() {
    #expect(FeatureTable.inferType(["1", "2.5", "", "-3e2"]) == .numeric)
    #expect(FeatureTable.inferType(["1", "nan"]) == .categorical)
    #expect(FeatureTable.inferType(["1", "inf"]) == .categorical)
    // One value in 20 with a '|' is enough for multi.
    #expect(FeatureTable.inferType(["a|b"] + Array(repeating: "a", count: 19)) == .multi)
    #expect(FeatureTable.inferType(["a|b"] + Array(repeating: "a", count: 20)) == .categorical)
    #expect(FeatureTable.inferType(["big red", "small blue", "x"]) == .text)
    #expect(FeatureTable.inferType((0..<20).map { "w\($0 % 11)" }) == .text)
    #expect(FeatureTable.inferType((0..<20).map { "w\($0 % 10)" }) == .categorical)
    #expect(FeatureTable.inferType((0..<19).map { "w\($0)" }) == .categorical)
  }

  @Test func overridesWinAndIgnoreDropsAColumn() throws {
    let dir = TempDir()
    let types = try FeatureTable.ColumnType.parseOverrides(
      "year:categorical, TITLE:ignore,code:multi")
    #expect(types == ["year": .categorical, "TITLE": .ignore, "code": .multi])
    let t = try table(dir, Self.mixed(), options: .init(types: types))
    #expect(t.columns.map(\.type) == [.categorical, .multi, .ignore, .categorical, .multi])
    #expect(t.columns.map(\.inferred) == [false, true, false, true, false])
    #expect(t.columns[2].featureCount == 0)
    #expect(t.vocabulary.contains("year=1990"))
    #expect(!t.vocabulary.contains { $0.hasPrefix("title") })
  }

  @Test func overrideSpecErrorsNameTheEntry() {
    for (spec, words) in [
      (
        "genres:multi,title:txt", ["'txt'", "'title'", "categorical, multi, numeric, text, ignore"]
      ),
      ("genres", ["'genres'", "COLUMN:TYPE"]),
      ("a:text,a:multi", ["'a'", "twice"]),
      (":text", ["no column"]),
    ] {
      let e = errorOf { try FeatureTable.ColumnType.parseOverrides(spec) } as? DataError
      #expect(e?.file == "--feature-types", "\(spec)")
      for w in words { #expect(e?.message.contains(w) == true, "\(spec): \(e?.message ?? "nil")") }
    }
  }
}

@Suite struct FeatureTableWeights {
  @Test func numericQuantileBuckets() throws {
    let dir = TempDir()
    var s = "id,price\n"
    for i in 1...100 { s += "p\(i),\(i)\n" }
    s += "p0,\n"
    let t = try table(dir, s, options: .init(numericBuckets: 4))
    let c = t.columns[0]
    #expect(c.type == .numeric)
    #expect(t.vocabulary == ["price#0", "price#1", "price#2", "price#3"])
    #expect(
      c.buckets == [
        .init(min: 1, max: 25), .init(min: 26, max: 50), .init(min: 51, max: 75),
        .init(min: 76, max: 100),
      ])
    #expect(rowFeatures(t, id: "p26") == ["price#1": 1])
    #expect(rowFeatures(t, id: "p100") == ["price#3": 1])
    #expect(rowFeatures(t, id: "p0").isEmpty)
    #expect(FeatureTable.bucket(of: -5, mins: [1, 26, 51, 76]) == 0)
    #expect(FeatureTable.bucket(of: 50.5, mins: [1, 26, 51, 76]) == 1)
  }

  @Test func fewDistinctValuesGetABucketEach() throws {
    #expect(FeatureTable.bucketMins([1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3], buckets: 10) == [1, 2, 3])
    // Skewed values with more distinct values than buckets: no empty bucket.
    let mins = FeatureTable.bucketMins(
      Array(repeating: 0, count: 90) + (1...10).map(Double.init), buckets: 4)
    #expect(mins == [0, 1, 5, 8])
    #expect(FeatureTable.bucketMins([5], buckets: 10) == [5])
  }

  @Test func rarerTokensWeighMoreAndRowsSumToOne() throws {
    let dir = TempDir()
    // "common" is in 4 rows, "rare" in 2, "x" is too short, "once" in one row only.
    let t = try table(
      dir,
      "id,text\n1,common rare x once\n2,common rare\n3,common thing\n4,common thing\n5,\n",
      options: .init(types: ["text": .text]))
    #expect(Set(t.vocabulary) == ["text:common", "text:rare", "text:thing"])
    #expect(t.vocabulary[0] == "text:common")
    let row = rowFeatures(t, id: "1")
    #expect(Set(row.keys) == ["text:common", "text:rare"])
    #expect(row["text:rare"]! > row["text:common"]!)
    let idf = t.columns[0].idf
    #expect(abs(idf[0] - Float(log(6.0 / 5.0) + 1)) < 1e-6)
    for r in 0..<t.rowCount where !t.entries(ofRow: r).isEmpty {
      let sum = t.entries(ofRow: r).reduce(Float(0)) { $0 + t.weight[$1] }
      #expect(abs(sum - 1) < 1e-6)
    }
    #expect(t.entries(ofRow: 4).isEmpty)
  }

  @Test func repeatedTokensCountAndTheVocabularyIsCapped() throws {
    let dir = TempDir()
    let text = "id,d\n1,aa aa bb cc\n2,aa bb cc\n3,aa bb\n"
    let t = try table(dir, text, options: .init(types: ["d": .text]))
    let idf = t.columns[0].idf
    #expect(t.vocabulary == ["d:aa", "d:bb", "d:cc"])
    let row = rowFeatures(t, id: "1")
    let raw = [2 * idf[0], idf[1], idf[2]]
    let sum = raw.reduce(0, +)
    #expect(abs(row["d:aa"]! - raw[0] / sum) < 1e-6)
    let capped = try table(
      dir, text, name: "capped.csv", options: .init(types: ["d": .text], textVocabulary: 2))
    #expect(capped.vocabulary == ["d:aa", "d:bb"])
  }

  @Test func tokensAreLowerCasedAlphanumericRuns() {
    #expect(FeatureTable.tokens("Toy Story (1995)") == ["toy", "story", "1995"])
    #expect(
      FeatureTable.tokens("Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)") == [
        "amélie", "fabuleux", "destin", "amélie", "poulain", "le", "2001",
      ])
    #expect(FeatureTable.tokens("a-b  C3PO") == ["c3po"])
  }

  /// Each column with features takes an equal share of the row: three genres do not outweigh
  /// one number, and a column a row lacks leaves the whole row to the others.
  @Test func mixedRowsShareTheWeightEquallyByColumn() throws {
    let dir = TempDir()
    let t = try table(
      dir, "id,g,n\n1,a|b|c,1\n2,a,2\n3,b,\n", options: .init(types: ["g": .multi]))
    let third = Float(0.5) / 3
    #expect(rowFeatures(t, id: "1") == ["g=a": third, "g=b": third, "g=c": third, "n#0": 0.5])
    #expect(rowFeatures(t, id: "2") == ["g=a": 0.5, "n#1": 0.5])
    #expect(rowFeatures(t, id: "3") == ["g=b": 1])
  }
}

@Suite struct FeatureTableBadInput {
  /// Parsing `text` fails with a `DataError` naming bad.csv, `line` and every word of `words`.
  private func expectError(
    _ text: String, line: Int?, _ words: [String],
    options: FeatureTable.Options = FeatureTable.Options(),
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    let dir = TempDir()
    let e = parseError(dir, text, options: options)
    #expect(e != nil, "no error for \(text.debugDescription)", sourceLocation: sourceLocation)
    guard let e else { return }
    #expect(e.file == dir.file("bad.csv"), sourceLocation: sourceLocation)
    #expect(e.line == line, "\(e)", sourceLocation: sourceLocation)
    for w in words {
      #expect(e.description.contains(w), "\(e) lacks \(w)", sourceLocation: sourceLocation)
    }
  }

  @Test func missingAndEmptyFiles() {
    let dir = TempDir()
    let missing = errorOf { try FeatureTable.load(path: dir.file("nope.csv")) } as? DataError
    #expect(missing?.file == dir.file("nope.csv"))
    #expect(missing?.message.contains("No such file") == true)
    expectError("", line: nil, ["empty"])
    expectError("\n  \r\n\n", line: nil, ["no header", "blank"])
  }

  @Test func badHeaders() {
    expectError("1,Toy Story (1995),Comedy\n2,Heat (1995),Action\n", line: 1, ["no header", "'1'"])
    expectError(",title\n1,a\n", line: 1, ["first column", "id column", "no name"])
    expectError("\n\nmovieId\n1\n2\n", line: 3, ["only an id column", "'movieId'", "no features"])
    expectError("id,a,,b\n1,x,y,z\n", line: 1, ["column 3 has no name"])
    expectError("id,a,a\n1,x,y\n", line: 1, ["'a'", "twice", "columns 2 and 3"])
    expectError("id,a\n", line: 1, ["no data rows"])
  }

  @Test func badRows() {
    expectError(
      "movieId,title,genres\n1,Toy Story (1995),Comedy\n2,American President, The (1995),Drama\n",
      line: 3, ["expected 3 fields", "movieId, title, genres", "found 4", "quoted"])
    expectError("id,a,b\n1,x,y\n2,x\n", line: 3, ["expected 3 fields", "found 2"])
    expectError("id,a\n1,x\n2,y\n\n1,z\n", line: 5, ["duplicate id '1'", "line 2"])
    expectError("id,a\n1,x\n  ,y\n", line: 3, ["empty id", "'id'"])
    expectError(
      "id,title\n1,\"ok\"\n2,\"Toy Story\n3,x\n", line: 3, ["unterminated", "field 2 ('title')"])
    expectError("id,title\n1,\"To\"y\n", line: 2, ["after the closing quote", "field 2 ('title')"])
    expectError(
      "id,a\n1,\"x\ry\"\n2,\"x\ry\"\n", line: 2, ["'a'", "carriage return"],
      options: .init(types: ["a": .categorical]))
  }

  @Test func badText() {
    let dir = TempDir()
    let nul = dir.write("bad.csv", bytes: Array("id,a\n1,x\n2,\0\n".utf8))
    let e1 = errorOf { try FeatureTable.load(path: nul) } as? DataError
    #expect(e1?.line == 3 && e1?.message.contains("NUL") == true)
    let latin1 = dir.write("latin1.csv", bytes: Array("id,a\n1,".utf8) + [0xE9] + [10])
    let e2 = errorOf { try FeatureTable.load(path: latin1) } as? DataError
    #expect(e2?.line == 2 && e2?.message.contains("UTF-8") == true)
  }

  @Test func emptyColumnsAndValues() throws {
    expectError("id,a,b\n1,x,\n2,y,\n", line: 1, ["column 'b'", "empty in every row"])
    // Ignored, the empty column is fine; an empty value elsewhere just lacks the feature.
    let dir = TempDir()
    let t = try table(dir, "id,a,b\n1,x,\n2,,\n", options: .init(types: ["b": .ignore]))
    #expect(rowFeatures(t, 0) == ["a=x": 1])
    #expect(t.entries(ofRow: 1).isEmpty)
  }

  @Test func overridesForUnknownColumnsAndTheIdColumn() {
    expectError(
      "id,a\n1,x\n", line: 1, ["'genres'", "not in the header", "id, a"],
      options: .init(types: ["genres": .multi]))
    expectError(
      "id,a\n1,x\n", line: 1, ["'id'", "id column"], options: .init(types: ["id": .text]))
  }

  @Test func numbersInANumericColumn() {
    expectError(
      "id,year\n1,1995\n2,n/a\n", line: 3, ["'year'", "'n/a'", "not a finite number"],
      options: .init(types: ["year": .numeric]))
    expectError(
      "id,year\n1,1995\n2,nan\n", line: 3, ["'nan'"], options: .init(types: ["year": .numeric]))
  }

  @Test func nothingToUse() {
    // Every column ignored, or only tokens found once.
    expectError(
      "id,a\n1,x\n", line: 1, ["no features", "a: ignore"],
      options: .init(types: ["a": .ignore]))
    expectError("id,t\n1,hello there\n2,good night\n", line: 1, ["no features", "t: text"])
  }

  @Test func limits() {
    let long = "id,a\n1," + String(repeating: "x", count: FeatureTable.maxLineBytes) + "\n"
    expectError(long, line: 2, ["longer than the \(FeatureTable.maxLineBytes)"])
    for options in [
      FeatureTable.Options(numericBuckets: 0), .init(textVocabulary: 0),
      .init(textVocabulary: FeatureTable.maxFeatures + 1),
    ] {
      expectError("id,a\n1,x\n", line: nil, ["must be in 1..."], options: options)
    }
  }
}

@Suite struct FeatureTableAlignment {
  @Test func modelOrderThenNewIds() throws {
    let dir = TempDir()
    let t = try table(dir, "id,c\na,x\nb,y\nc,x\nd,y\n", options: .init(types: ["c": .categorical]))
    let aligned = try t.aligned(to: ["c", "zz", "a"])
    #expect(aligned.table.ids == ["c", "zz", "a", "b", "d"])
    #expect(aligned.newIds == ["b", "d"])
    #expect(aligned.modelIdsWithoutFeatures == 1)
    #expect(aligned.table.vocabulary == t.vocabulary && aligned.table.columns == t.columns)
    let a = aligned.table
    #expect(rowFeatures(a, 0) == ["c=x": 1])
    #expect(a.entries(ofRow: 1).isEmpty)
    #expect(rowFeatures(a, 3) == ["c=y": 1])
    #expect(a.rowStart.count == 6 && Int(a.rowStart[5]) == a.featureIndex.count)
    // A model without ids: every row is new.
    let fresh = try t.aligned(to: [])
    #expect(fresh.newIds == t.ids && fresh.table == t)
  }

  @Test func anotherModelsFileIsRefused() throws {
    let dir = TempDir()
    let t = try table(
      dir, "movieId,c\n1,x\n2,y\n3,x\n4,y\n", options: .init(types: ["c": .categorical]))
    let e = errorOf { try t.aligned(to: ["u1", "u2", "u3", "u4"], kind: "user") } as? DataError
    #expect(e?.file == dir.file("features.csv"))
    for w in ["none of the 4 ids", "4 user ids", "another model", "'1', '2', '3', …", "'u1'"] {
      #expect(e?.message.contains(w) == true, "\(e?.message ?? "nil") lacks \(w)")
    }
  }
}

@Suite struct FeatureTableStorage {
  static func saved() throws -> (TempDir, FeatureTable) {
    let dir = TempDir()
    var s = "id,year,tags,title,color\n"
    for i in 0..<30 {
      s +=
        "i\(i),\(1990 + i % 13),\(i % 3 == 0 ? "a|b" : "c"),Movie \(i % 5) part \(i % 4),\(i % 2 == 0 ? "red" : "")\n"
    }
    let t = try table(dir, s, options: .init(types: ["color": .categorical]))
    try t.write(to: dir.path, prefix: "item_features")
    return (dir, t)
  }

  @Test func roundTrip() throws {
    let (dir, t) = try Self.saved()
    #expect(t.columns.map(\.type) == [.numeric, .multi, .text, .categorical])
    let back = try FeatureTable.load(directory: dir.path, prefix: "item_features")
    #expect(back == t)
    let names = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path))
    #expect(names.isSuperset(of: FeatureTable.storedFileNames(prefix: "item_features")))
  }

  /// Replaces `file` in the saved table by `edit` of its text and expects a load error naming it.
  private func expectRefused(
    _ file: String, _ words: [String], line: Int? = nil,
    sourceLocation: SourceLocation = #_sourceLocation, edit: (String) -> String
  ) throws {
    let (dir, _) = try Self.saved()
    let path = dir.file("item_features.\(file)")
    let text = try String(contentsOfFile: path, encoding: .utf8)
    dir.write("item_features.\(file)", edit(text))
    let e = errorOf { try FeatureTable.load(directory: dir.path) } as? DataError
    #expect(e?.file == path, "\(String(describing: e))", sourceLocation: sourceLocation)
    #expect(e?.line == line, "\(String(describing: e))", sourceLocation: sourceLocation)
    for w in words {
      #expect(
        e?.message.contains(w) == true, "\(String(describing: e)) lacks \(w)",
        sourceLocation: sourceLocation)
    }
  }

  @Test func corruptTextFilesAreRefused() throws {
    try expectRefused("json", ["not valid JSON"]) { String($0.dropLast(5)) }
    try expectRefused("json", ["format"]) {
      $0.replacingOccurrences(of: "recserve-features-1", with: "x")
    }
    try expectRefused("json", ["columns[2]", "type"]) {
      $0.replacingOccurrences(of: "\"text\"", with: "\"txt\"")
    }
    try expectRefused("json", ["features"]) {
      $0.replacingOccurrences(of: "\"features\": 2,", with: "\"features\": 3,")
    }
    try expectRefused("json", ["buckets[1]"]) {
      $0.replacingOccurrences(of: "[1991.0, 1991.0]", with: "[1989.0, 1989.0]")
    }
    try expectRefused("vocab.txt", ["lines", "schema says"]) { $0 + "extra\n" }
    try expectRefused("vocab.txt", ["'tags=a'", "column 'year'"], line: 1) {
      "tags=a\n" + $0.split(separator: "\n").dropFirst().joined(separator: "\n") + "\n"
    }
    try expectRefused("vocab.txt", ["empty line"], line: 2) {
      $0.replacingOccurrences(of: "year#1\n", with: "\n")
    }
    try expectRefused("ids.txt", ["'i0' again", "line 1"], line: 2) {
      $0.replacingOccurrences(of: "i1\n", with: "i0\n")
    }
    try expectRefused("ids.txt", ["empty"]) { _ in "" }
  }

  /// Rewrites the saved safetensors with `change` applied to its arrays and expects a load error.
  private func expectMatrixRefused(
    _ words: [String], sourceLocation: SourceLocation = #_sourceLocation,
    change: (inout [Int32], inout [Int32], inout [Float]) -> Void
  ) throws {
    let (dir, t) = try Self.saved()
    var (start, index, weight) = (t.rowStart, t.featureIndex, t.weight)
    change(&start, &index, &weight)
    var w = SafeTensors.Writer()
    w.add("row_start", shape: [start.count], start)
    w.add("feature_index", shape: [index.count], index)
    w.add("weight", shape: [weight.count], weight)
    w.add("idf", shape: [t.featureCount], [Float](repeating: 1, count: t.featureCount))
    let path = dir.write("item_features.safetensors", bytes: w.serialize())
    let e = errorOf { try FeatureTable.load(directory: dir.path) } as? DataError
    #expect(e?.file == path, "\(String(describing: e))", sourceLocation: sourceLocation)
    for w in words {
      #expect(
        e?.message.contains(w) == true, "\(String(describing: e)) lacks \(w)",
        sourceLocation: sourceLocation)
    }
  }

  @Test func corruptMatrixIsRefused() throws {
    try expectMatrixRefused(["feature_index[3]", "out of range"]) { _, i, _ in i[3] = 99_999 }
    try expectMatrixRefused(["feature_index[1]", "does not increase"]) { _, i, _ in i[1] = i[0] }
    try expectMatrixRefused(["weight[2]", "finite positive"]) { _, _, w in w[2] = .nan }
    try expectMatrixRefused(["row_start[2]", "less than"]) { s, _, _ in s[2] = s[1] - 1 }
    try expectMatrixRefused(["row_start must start at 0"]) { s, _, _ in s[0] = 1 }
    try expectMatrixRefused(["'weight'", "F32 [", "expected F32"]) { _, _, w in w.removeLast() }
    let (dir, _) = try Self.saved()
    dir.write("item_features.safetensors", bytes: [1, 2, 3])
    let e = errorOf { try FeatureTable.load(directory: dir.path) } as? DataError
    #expect(e?.file == dir.file("item_features.safetensors"))
    #expect(e?.message.contains("truncated") == true, "\(String(describing: e))")
  }

  @Test func missingFilesAndBadPrefixes() throws {
    let (dir, t) = try Self.saved()
    let e =
      errorOf { try FeatureTable.load(directory: dir.path, prefix: "user_features") } as? DataError
    #expect(e?.file == dir.file("user_features.json") && e?.message.contains("cannot read") == true)
    for prefix in ["", ".hidden", "a/b"] {
      #expect(errorOf { try t.write(to: dir.path, prefix: prefix) } is DataError)
    }
  }
}
