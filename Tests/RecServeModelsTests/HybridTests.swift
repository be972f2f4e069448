import Foundation
import Testing

@testable import RecServeModels

/// The hybrid model on a log with planted structure: every item has a genre (a content
/// feature), every user a favourite genre most of their items come from, and a tenth of the
/// items nobody has touched. Trained, the model must rank a user's favourite-genre items first
/// among those cold items, which only their features can tell apart.
@Suite struct HybridTests {
  struct Planted {
    var data: Interactions
    var coldIds: [String]
    var features: FeatureRows
    var favourite: [String: Int]
    var genreOf: [String: Int]
  }

  static func planted(
    users: Int = 150, items: Int = 400, genres: Int = 8, perUser: Int = 20, seed: UInt64 = 5
  ) throws -> Planted {
    var rng = Xoshiro256(seed: seed)
    let genreOf = (0..<items).map { _ in rng.nextInt(below: genres) }
    let cold = Set((0..<items).filter { $0 % 10 == 0 })
    var byGenre = [[Int]](repeating: [], count: genres)
    for i in 0..<items where !cold.contains(i) { byGenre[genreOf[i]].append(i) }
    var rows: [InteractionRow] = []
    var favourite: [String: Int] = [:]
    for u in 0..<users {
      let g = rng.nextInt(below: genres)
      favourite["u\(u)"] = g
      for _ in 0..<perUser {
        let pool = rng.nextFloat() < 0.9 ? byGenre[g] : byGenre[rng.nextInt(below: genres)]
        rows.append(InteractionRow(user: "u\(u)", item: "i\(pool[rng.nextInt(below: pool.count)])"))
      }
    }
    let data = try Interactions(rows: rows)
    let coldIds = cold.sorted().map { "i\($0)" }
    // One feature per genre, weight 1, in the model's item order (data's items, then cold).
    let order = data.itemIds + coldIds
    var start: [Int32] = [0]
    var index: [Int32] = []
    for id in order {
      index.append(Int32(genreOf[Int(id.dropFirst())!]))
      start.append(Int32(index.count))
    }
    let features = FeatureRows(
      start: start, index: index, weight: [Float](repeating: 1, count: index.count),
      features: genres)
    var genreById: [String: Int] = [:]
    for i in 0..<items { genreById["i\(i)"] = genreOf[i] }
    return Planted(
      data: data, coldIds: coldIds, features: features, favourite: favourite, genreOf: genreById)
  }

  /// Mean over users of the fraction of their top 5 cold items in their favourite genre.
  static func coldPrecision(_ model: MFModel, _ p: Planted) -> Double {
    let cold = p.coldIds.map { model.itemIndex($0)! }
    var total = 0.0
    for u in 0..<model.userCount {
      let user = model.userIds[u]
      var query = [Float](repeating: 0, count: model.dim)
      let offset = query.withUnsafeMutableBufferPointer {
        model.query(
          user: Int32(u), recentItems: UnsafeBufferPointer(start: nil, count: 0),
          into: $0.baseAddress!) ?? 0
      }
      var scores = [Float](repeating: 0, count: cold.count)
      cold.withUnsafeBufferPointer { items in
        scores.withUnsafeMutableBufferPointer { out in
          model.scoreItems(
            query: query, offset: offset, items: items, into: out.baseAddress!)
        }
      }
      let top = cold.indices.sorted { scores[$0] > scores[$1] }.prefix(5)
      let hits = top.filter { p.genreOf[model.itemIds[Int(cold[$0])]] == p.favourite[user] }
      total += Double(hits.count) / 5
    }
    return total / Double(model.userCount)
  }

  @Test(arguments: [HybridConfig.Loss.warp, .bpr])
  func coldItemsOfAUsersTasteRankFirst(loss: HybridConfig.Loss) throws {
    let p = try Self.planted()
    let trained = try HybridTrainer.train(
      p.data, coldItemIds: p.coldIds, itemFeatures: p.features,
      config: HybridConfig(dim: 16, epochs: 15, loss: loss, threads: 1))
    let model = trained.model
    #expect(model.kind == "hybrid")
    #expect(model.itemCount == p.data.itemCount + p.coldIds.count)
    #expect(trained.featureEmbeddings.count == 8 * 16 && trained.featureBiases.count == 8)
    // Chance is about 1/8 (a genre's share of the cold items).
    let precision = Self.coldPrecision(model, p)
    #expect(precision > 0.8, "precision@5 over cold items \(precision)")
    // Cold items were never trained as positives and are not anyone's history.
    #expect(p.coldIds.allSatisfy { model.itemPopularity[Int(model.itemIndex($0)!)] == 0 })
  }

  @Test func sameSeedSameModelOnOneThread() throws {
    let p = try Self.planted(users: 40, items: 100)
    let config = HybridConfig(dim: 8, epochs: 3, threads: 1)
    let a = try HybridTrainer.train(
      p.data, coldItemIds: p.coldIds, itemFeatures: p.features, config: config)
    let b = try HybridTrainer.train(
      p.data, coldItemIds: p.coldIds, itemFeatures: p.features, config: config)
    #expect(a.featureEmbeddings == b.featureEmbeddings)
    let n = a.model.itemCount * a.model.dim
    #expect(
      Array(UnsafeBufferPointer(start: a.model.itemFactors, count: n))
        == Array(UnsafeBufferPointer(start: b.model.itemFactors, count: n)))
  }

  @Test func refusesRowsThatDoNotLineUp() throws {
    let p = try Self.planted(users: 20, items: 50)
    let short = FeatureRows.empty(rows: p.data.itemCount)
    let error = #expect(throws: TrainingError.self) {
      try HybridTrainer.train(
        p.data, coldItemIds: p.coldIds, itemFeatures: short, config: HybridConfig(epochs: 1))
    }
    #expect("\(error!)".contains("item features have \(p.data.itemCount) rows"))
    let twice = #expect(throws: TrainingError.self) {
      try HybridTrainer.train(
        p.data, coldItemIds: [p.data.itemIds[0]],
        itemFeatures: FeatureRows.empty(rows: p.data.itemCount + 1), config: HybridConfig(epochs: 1)
      )
    }
    #expect("\(twice!)".contains("listed twice"))
    #expect(throws: TrainingError.self) {
      try HybridTrainer.train(
        p.data, itemFeatures: FeatureRows.empty(rows: p.data.itemCount),
        config: HybridConfig(identityWeight: 2))
    }
  }
}

/// New items after training: the encoder reads raw values as the table did, and an item added
/// with the same values as an item that was cold in training gets that item's vector and bias.
@Suite struct HybridAdditionsTests {
  static let features = """
    id,genres,title,year
    a,Action|Comedy,The Big Fight,1990
    b,Drama,A Quiet Night,2001
    c,Comedy,The Big Laugh,1995
    d,Action,Night Fight,2010
    e,Drama|Comedy,Quiet Laugh,1990
    cold,Action|Drama,The Quiet Fight,2005

    """

  @Test func theEncoderReadsARowAsTheTableDid() throws {
    let table = try FeatureTable.parse(text: Self.features, source: "items.csv")
    let encoder = FeatureEncoder(table)
    let row = 5
    let encoded = try encoder.encode(
      ["genres": "Action|Drama", "title": "The Quiet Fight", "year": "2005"], what: "new")
    let expected = table.entries(ofRow: row).map { (table.featureIndex[$0], table.weight[$0]) }
    #expect(encoded.map(\.feature) == expected.map(\.0))
    for (a, b) in zip(encoded.map(\.weight), expected.map(\.1)) { #expect(abs(a - b) < 1e-6) }
    // Unknown values have no feature; an unknown column or a non-number is named.
    #expect(try encoder.encode(["genres": "Western"], what: "x").isEmpty)
    let column = #expect(throws: DataError.self) {
      try encoder.encode(["colour": "red"], what: "x")
    }
    #expect("\(column!)".contains("no feature column 'colour'"))
    let number = #expect(throws: DataError.self) { try encoder.encode(["year": "soon"], what: "x") }
    #expect("\(number!)".contains("'soon' is not a finite number"))
  }

  @Test func anAddedItemIsPlacedAsATrainedColdItem() throws {
    let table = try FeatureTable.parse(text: Self.features, source: "items.csv")
    let data = try Interactions(rows: [
      InteractionRow(user: "u1", item: "a"), InteractionRow(user: "u1", item: "c"),
      InteractionRow(user: "u2", item: "b"), InteractionRow(user: "u2", item: "e"),
      InteractionRow(user: "u3", item: "d"), InteractionRow(user: "u3", item: "a"),
    ])
    let (trained, itemTable) = try HybridTrainer.train(
      data, inputs: HybridInputs(items: table), config: HybridConfig(dim: 4, epochs: 3, threads: 1))
    let files = HybridFiles(
      itemTable: itemTable, dim: 4, embeddings: trained.featureEmbeddings,
      biases: trained.featureBiases)
    let item = HybridAdditions.NewItem(
      id: "again", features: ["genres": "Action|Drama", "title": "The Quiet Fight", "year": "2005"])
    let (extended, unmatched) = try HybridAdditions.extend(
      trained.model, files: files,
      items: [item, HybridAdditions.NewItem(id: "bare", features: [:])])
    #expect(unmatched == ["bare"])
    #expect(extended.itemCount == trained.model.itemCount + 2)
    let cold = Int(extended.itemIndex("cold")!)
    let again = Int(extended.itemIndex("again")!)
    let d = extended.dim
    for c in 0..<d {
      #expect(abs(extended.itemFactors[cold * d + c] - extended.itemFactors[again * d + c]) < 1e-6)
    }
    #expect(abs(extended.itemBias[cold] - extended.itemBias[again]) < 1e-6)
    #expect(extended.itemPopularity[again] == 0)
    let twice = #expect(throws: DataError.self) {
      try HybridAdditions.extend(trained.model, files: files, items: [item, item])
    }
    #expect("\(twice!)".contains("'again' is already in the model"))
  }

  @Test func theFileKeepsWholeLinesAndNamesBadOnes() throws {
    let dir = TempDir()
    let items = [
      HybridAdditions.NewItem(id: "x", features: ["genres": "Drama"]),
      HybridAdditions.NewItem(id: "y", features: [:]),
    ]
    try HybridAdditions.append(items, directory: dir.path)
    #expect(try HybridAdditions.read(directory: dir.path).items == items)
    // An append that did not finish (no newline) is left out, and its bytes are not counted.
    let path = dir.path + "/" + HybridAdditions.fileName
    let whole = try HybridAdditions.read(directory: dir.path).bytes
    let handle = FileHandle(forWritingAtPath: path)!
    handle.seekToEndOfFile()
    handle.write(Data("{\"id\": \"z\", \"feat".utf8))
    handle.closeFile()
    let torn = try HybridAdditions.read(directory: dir.path)
    #expect(torn.items == items && torn.bytes == whole)
    // The next append cuts the torn line off instead of running on from it.
    let more = [HybridAdditions.NewItem(id: "w", features: ["genres": "Comedy"])]
    let size = try HybridAdditions.append(more, directory: dir.path)
    let after = try HybridAdditions.read(directory: dir.path)
    #expect(after.items == items + more && after.bytes == size)
    #expect(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int == size)
    // A file that is one torn line (more than a read block long) is cut to nothing first.
    try Data(("{\"id\": \"" + String(repeating: "q", count: 9000)).utf8).write(
      to: URL(fileURLWithPath: path))
    let only = try HybridAdditions.append(more, directory: dir.path)
    #expect(try HybridAdditions.read(directory: dir.path).items == more)
    #expect(only == Array(more[0].jsonLine.utf8).count)
    try Data("{\"id\": \"ok\"}\n\n{\"features\": {}}\n".utf8).write(to: URL(fileURLWithPath: path))
    let error = #expect(throws: DataError.self) { try HybridAdditions.read(directory: dir.path) }
    #expect("\(error!)".contains("added_items.jsonl:3") && "\(error!)".contains("'id'"))
    #expect(try HybridAdditions.read(directory: dir.path + "/none").items.isEmpty)
  }
}
