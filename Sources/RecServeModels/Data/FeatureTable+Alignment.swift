extension FeatureTable {
  /// A feature table reordered to a model's ids; see `aligned(to:kind:)`.
  public struct Alignment: Sendable, Equatable {
    /// The same vocabulary and columns; `ids` is the model's ids followed by `newIds`, row i
    /// holding the features of `ids[i]` (none for a model id the file lacks).
    public let table: FeatureTable
    /// Ids only in the feature file (new, cold), in file order, after the model's ids.
    public let newIds: [String]
    /// How many of the model's ids have no row in the feature file.
    public let modelIdsWithoutFeatures: Int
  }

  /// The rows in the order of `modelIds` (index = the model's internal index), then the rows
  /// whose ids the model does not have. `kind` ("item" or "user") words the error: when the
  /// model has ids and none of them is in the file, the file is for another model or kind of
  /// id, and a `DataError` naming the file quotes a few ids of each side.
  public func aligned(to modelIds: [String], kind: String = "item") throws -> Alignment {
    var fileRow: [String: Int] = [:]
    fileRow.reserveCapacity(ids.count)
    for (r, id) in ids.enumerated() { fileRow[id] = r }
    var order: [Int?] = []
    order.reserveCapacity(modelIds.count + ids.count)
    var inModel = [Bool](repeating: false, count: ids.count)
    var missing = 0
    for id in modelIds {
      let r = fileRow[id]
      if let r { inModel[r] = true } else { missing += 1 }
      order.append(r)
    }
    if !modelIds.isEmpty && missing == modelIds.count {
      throw DataError(
        file: source,
        message:
          "none of the \(ids.count) ids in this file is among the model's \(modelIds.count) \(kind) ids: the file seems to be for another model or another kind of id (file: \(Self.sample(ids)); model: \(Self.sample(modelIds)))"
      )
    }
    var newIds: [String] = []
    for r in ids.indices where !inModel[r] {
      newIds.append(ids[r])
      order.append(r)
    }
    return Alignment(
      table: reordered(order, ids: modelIds + newIds), newIds: newIds,
      modelIdsWithoutFeatures: missing)
  }

  /// The rows `order` (nil: a row without features) under `ids`.
  private func reordered(_ order: [Int?], ids newOrderIds: [String]) -> FeatureTable {
    var start: [Int32] = [0]
    var index: [Int32] = []
    var weights: [Float] = []
    start.reserveCapacity(order.count + 1)
    index.reserveCapacity(featureIndex.count)
    weights.reserveCapacity(weight.count)
    for r in order {
      if let r {
        let range = entries(ofRow: r)
        index.append(contentsOf: featureIndex[range])
        weights.append(contentsOf: weight[range])
      }
      start.append(Int32(index.count))
    }
    return FeatureTable(
      source: source, idColumn: idColumn, ids: newOrderIds, vocabulary: vocabulary,
      columns: columns, rowStart: start, featureIndex: index, weight: weights)
  }

  /// The first few ids, quoted, for messages.
  static func sample(_ ids: [String]) -> String {
    let shown = ids.prefix(3).map { "'\(FeatureFileReader.short($0))'" }.joined(separator: ", ")
    return ids.count > 3 ? shown + ", …" : shown
  }
}
