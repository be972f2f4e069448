/// The content a hybrid model trains on besides the interactions: the item feature table
/// (required) and a user feature table (optional). Rows are matched to the training data by
/// id when training starts: items only in the feature file join the model as new (cold) items,
/// ranked by their features alone.
public struct HybridInputs: Sendable, Equatable {
  public var items: FeatureTable
  public var users: FeatureTable?

  public init(items: FeatureTable, users: FeatureTable? = nil) {
    self.items = items
    self.users = users
  }
}

extension FeatureTable {
  /// The table's rows as `FeatureRows` (the first `rows` rows, or all).
  public func featureRows(rows: Int? = nil) -> FeatureRows {
    let n = min(rows ?? rowCount, rowCount)
    let end = Int(rowStart[n])
    return FeatureRows(
      start: Array(rowStart[0...n]), index: Array(featureIndex[0..<end]),
      weight: Array(weight[0..<end]), features: featureCount)
  }
}

extension HybridTrainer {
  /// Trains on `data` (positives) with `inputs` matched to its ids; see `train`.
  public static func train(
    _ data: Interactions, inputs: HybridInputs, config: HybridConfig,
    progress: TrainingProgressHandler? = nil, isCancelled: (@Sendable () -> Bool)? = nil
  ) throws -> (trained: HybridTrained, itemTable: FeatureTable) {
    let items = try inputs.items.aligned(to: data.itemIds, kind: "item")
    let users = try inputs.users.map { try $0.aligned(to: data.userIds, kind: "user") }
    let trained = try train(
      data, coldItemIds: items.newIds, itemFeatures: items.table.featureRows(),
      userFeatures: users?.table.featureRows(rows: data.userCount), config: config,
      progress: progress, isCancelled: isCancelled)
    return (trained, items.table)
  }
}
