import Foundation

/// Items added to a hybrid version after training (`ModelAdmin.AddItems`, or lines an admin
/// appends to the file): each placed by its features alone, as training placed the items
/// nobody had touched. They live in `added_items.jsonl` in the version folder, one JSON object
/// a line: `{"id": "...", "features": {"column": "raw value", ...}}`, appended and synced
/// before an AddItems call answers, and applied again whenever the version loads (the
/// version's own files stay as published; this one is not in model.json).
public enum HybridAdditions {
  public static let fileName = "added_items.jsonl"
  /// The most items one AddItems call may add, and a version may hold beyond its trained ones.
  public static let maxItemsPerCall = 10_000
  public static let maxAddedItems = 1_000_000
  /// The longest id and raw value accepted, in bytes.
  public static let maxIdBytes = 1_024
  public static let maxValueBytes = 65_536

  public struct NewItem: Sendable, Equatable {
    public var id: String
    /// Raw values by feature column, as a row of the item feature file gives them.
    public var features: [String: String]

    public init(id: String, features: [String: String]) {
      self.id = id
      self.features = features
    }

    var jsonLine: String {
      JSONValue.object([
        "id": .string(id), "features": .object(features.mapValues { .string($0) }),
      ]).serialized(pretty: false) + "\n"
    }
  }

  /// The items in `directory`'s file (none when there is no file), and the bytes read. A last
  /// line without its newline is an append that did not finish (the call that made it failed):
  /// it is left out. Any other bad line is a `DataError` naming the file and line.
  public static func read(directory: String) throws -> (items: [NewItem], bytes: Int) {
    let path = ModelStore.join(directory, fileName)
    guard FileIO.exists(path) else { return ([], 0) }
    let data: Data
    do {
      data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
      throw DataError(file: path, message: "cannot read: \(error.localizedDescription)")
    }
    var items: [NewItem] = []
    var line = 0
    var offset = 0
    let bytes = [UInt8](data)
    while let end = bytes[offset...].firstIndex(of: 10) {
      line += 1
      let text = String(decoding: bytes[offset..<end], as: UTF8.self)
      offset = end + 1
      if text.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\r" }) { continue }
      items.append(try parse(text, file: path, line: line))
    }
    return (items, offset)
  }

  static func parse(_ text: String, file: String, line: Int) throws -> NewItem {
    func bad(_ m: String) -> DataError { DataError(file: file, line: line, message: m) }
    let json: JSONValue
    do {
      json = try JSONValue.parse(text)
    } catch {
      throw bad("not a JSON object (\(error))")
    }
    guard let id = json["id"]?.stringValue else { throw bad("no string field 'id'") }
    var features: [String: String] = [:]
    if let f = json["features"] {
      guard case .object(let object) = f else { throw bad("'features' is not an object") }
      for (column, value) in object {
        guard let s = value.stringValue else {
          throw bad("feature '\(column)' is not a string")
        }
        features[column] = s
      }
    }
    let item = NewItem(id: id, features: features)
    if let problem = problem(with: item) { throw bad(problem) }
    return item
  }

  /// What is wrong with an item's id or values, if anything.
  public static func problem(with item: NewItem) -> String? {
    if item.id.isEmpty { return "the id is empty" }
    if item.id.utf8.count > maxIdBytes { return "the id is longer than \(maxIdBytes) bytes" }
    if item.id.utf8.contains(where: { $0 == 0 || $0 == 10 || $0 == 13 }) {
      return "the id contains a NUL byte or a line break"
    }
    for (column, value) in item.features where value.utf8.count > maxValueBytes {
      return "feature '\(column)' is longer than \(maxValueBytes) bytes"
    }
    return nil
  }

  /// Appends `items` to the version's file, synced, after cutting off a last line a crash
  /// left without its newline (`read` leaves it out: its call never answered). Returns the
  /// file's size after, all of it whole lines (what `read` then reports as its bytes).
  @discardableResult
  public static func append(_ items: [NewItem], directory: String) throws -> Int {
    let text = items.map(\.jsonLine).joined()
    return try FileIO.appendSynced(
      Array(text.utf8), to: ModelStore.join(directory, fileName), wholeLines: true)
  }

  /// `model` with `items` appended after its items, each placed by `files` from its features
  /// (no history, popularity 0). Also returns the ids none of whose values matched a feature
  /// the model knows (they score by nothing: 0). Ids already in the model are an error naming
  /// them, as is a value the encoder refuses.
  public static func extend(_ model: MFModel, files: HybridFiles, items: [NewItem]) throws
    -> (model: MFModel, withoutKnownFeatures: [String])
  {
    let encoder = FeatureEncoder(files.itemTable)
    let d = model.dim
    var vectors = [Float](repeating: 0, count: items.count * d)
    var biases = [Float](repeating: 0, count: items.count)
    var unmatched: [String] = []
    var seen = Set<String>()
    for (k, item) in items.enumerated() {
      guard model.itemIndex(item.id) == nil, seen.insert(item.id).inserted else {
        throw DataError(file: "items[\(k)]", message: "item '\(item.id)' is already in the model")
      }
      let features = try encoder.encode(item.features, what: "items[\(k)] (id '\(item.id)')")
      if features.isEmpty { unmatched.append(item.id) }
      biases[k] = vectors.withUnsafeMutableBufferPointer {
        files.place(features, into: $0.baseAddress! + k * d)
      }
    }
    return (model.appendingItems(ids: items.map(\.id), factors: vectors, biases: biases), unmatched)
  }
}

extension MFModel {
  /// The same model with items appended: their ids, factors (count x dim) and biases; no
  /// history and popularity 0.
  public func appendingItems(ids: [String], factors: [Float], biases: [Float]) -> MFModel {
    let U = userCount
    let I = itemCount
    let users = Array(UnsafeBufferPointer(start: userFactors, count: U * dim))
    let items = Array(UnsafeBufferPointer(start: itemFactors, count: I * dim)) + factors
    let userBiases = Array(UnsafeBufferPointer(start: userBias, count: U))
    let itemBiases = Array(UnsafeBufferPointer(start: itemBias, count: I)) + biases
    let history = SeenItems(
      indptr: Array(UnsafeBufferPointer(start: seenIndptr, count: U + 1)),
      indices: Array(UnsafeBufferPointer(start: seenIndices, count: seenCount)),
      popularity: Array(itemPopularity) + [Int32](repeating: 0, count: ids.count))
    var lookup = itemLookup
    for (k, id) in ids.enumerated() { lookup[id] = Int32(I + k) }
    return MFModel(
      kind: kind, dim: dim, userIds: userIds, itemIds: itemIds + ids, userLookup: userLookup,
      itemLookup: lookup, globalMean: globalMean, ratingRange: ratingRange, userFactors: users,
      itemFactors: items, userBias: userBiases, itemBias: itemBiases, csr: history)
  }
}

extension LoadedModel {
  /// The same version with another model (items added after training).
  public func replacing(model: any RecommendationModel) -> LoadedModel {
    LoadedModel(directory: directory, manifest: manifest, model: model, sizeBytes: sizeBytes)
  }
}

extension HybridAdditions {
  /// The rows of a feature file (CSV with a header whose first column is the id, read as
  /// `FeatureTable.load` reads it) as new items: each row's non-empty values by column name.
  /// Throws a `DataError` naming the file and line.
  public static func items(fromFeatureFile path: String) throws -> [NewItem] {
    let file = try FeatureFileReader.read(path: path)
    return file.ids.indices.map { r in
      var features: [String: String] = [:]
      for c in file.values.indices where !file.values[c][r].isEmpty {
        features[file.header[c + 1]] = file.values[c][r]
      }
      return NewItem(id: file.ids[r], features: features)
    }
  }
}
