import Foundation

/// What a hybrid training produces: the servable model (each user's and item's vector and
/// bias summed from its features, kind "hybrid") and the item content features' embeddings and
/// biases, which place items added later by their features alone.
public struct HybridTrained: @unchecked Sendable {
  public var model: MFModel
  /// featureCount x dim, and featureCount.
  public var featureEmbeddings: [Float]
  public var featureBiases: [Float]
}

/// Trains the hybrid model (LightFM's): score(u, i) = u·i + b_i, where a user's vector is the
/// sum of its feature embeddings (its id, and its content features when given) and an item's
/// the sum of its id's (when it has interactions) and its content features', each weighted
/// (see `HybridConfig.identityWeight`), with WARP or BPR on the distinct positive pairs and
/// Adagrad per element. Negatives are drawn among all items, those nobody has touched included
/// (as LightFM does: a catalog item without interactions is as much an implicit negative as
/// any other the user skipped; on MovieLens with a tenth of the movies held out, drawing them
/// raised the held-out movies' NDCG@10 by about 1.6x over drawing only items with
/// interactions). Items are seen by their content alone in `contentDropout` of the steps (see
/// `HybridConfig`). Each epoch visits as many pairs as there are, split
/// over `threads` Hogwild workers: each once in a seeded random order, or, with a recency
/// weight, drawn in proportion to it.
///
/// Items are `data`'s items (with interactions) followed by `coldItemIds`, and
/// `itemFeatures` has a row for each, in that order; `userFeatures` (optional) one per user of
/// `data`. Rows must be normalised (weights summing to 1, or empty).
///
/// The progress loss is the epoch's mean loss a pair (WARP: its weighted hinge, 0 when no
/// violating negative was found); `validation["correct"]` is the fraction of pairs whose
/// positive outscored the first negative drawn.
public enum HybridTrainer {
  public static func train(
    _ data: Interactions, coldItemIds: [String] = [], itemFeatures: FeatureRows,
    userFeatures: FeatureRows? = nil, config: HybridConfig,
    progress: TrainingProgressHandler? = nil, isCancelled: (@Sendable () -> Bool)? = nil
  ) throws -> HybridTrained {
    try config.validate()
    try check(
      data, coldItemIds: coldItemIds, itemFeatures: itemFeatures, userFeatures: userFeatures)
    let start = monotonicSeconds()
    let m = ImplicitMatrix(
      data, recencyBoost: config.recencyBoost, halfLife: config.recencyHalfLife)
    // With recency weights, pairs are drawn by an alias table over their strengths.
    let alias = config.recencyBoost > 0 ? AliasTable(weights: m.values) : nil
    var rng = Xoshiro256(seed: config.seed, stream: 0x4B7D)
    let items = HybridSide(
      content: itemFeatures, identities: data.itemCount, identityWeight: config.identityWeight,
      dim: config.dim, withBiases: true, rng: &rng)
    let users = HybridSide(
      content: userFeatures ?? .empty(rows: data.userCount), identities: data.userCount,
      identityWeight: config.identityWeight, dim: config.dim, withBiases: false, rng: &rng)
    var rowOf = [Int32](repeating: 0, count: m.nnz)
    for u in 0..<m.rows {
      for k in m.indptr[u]..<m.indptr[u + 1] { rowOf[k] = Int32(u) }
    }
    var order = [Int32](0..<Int32(m.nnz))
    var shuffle = Xoshiro256(seed: config.seed, stream: 0x5F1)
    let T = max(1, min(config.threads, m.nnz))
    for epoch in 1...config.epochs {
      if let isCancelled, isCancelled() { throw TrainingError.cancelled }
      for k in stride(from: order.count - 1, to: 0, by: -1) {
        order.swapAt(k, shuffle.nextInt(below: k + 1))
      }
      let epochSteps = HybridEpoch(
        config: config, users: users, items: items, matrix: m, rowOf: rowOf, order: order,
        alias: alias, epoch: epoch)
      let stats = epochSteps.run(threads: T)
      try finishEpoch(
        epoch, of: config.epochs, loss: stats.loss / Double(max(1, stats.pairs)),
        validation: ["correct": Double(stats.correct) / Double(max(1, stats.pairs))],
        started: start, learningRate: config.learningRate, progress: progress)
    }
    guard items.isFinite && users.isFinite else {
      throw TrainingError.invalidConfiguration(
        "training diverged (embeddings are not finite); use a lower learning rate than \(config.learningRate)"
      )
    }
    return trained(
      data, coldItemIds: coldItemIds, matrix: m, rowOf: rowOf, users: users, items: items)
  }

  /// Refuses inputs that do not line up.
  static func check(
    _ data: Interactions, coldItemIds: [String], itemFeatures: FeatureRows,
    userFeatures: FeatureRows?
  ) throws {
    if data.isEmpty {
      throw TrainingError.invalidData("\(data.source): no interactions to train on")
    }
    if data.itemCount < 2 {
      throw TrainingError.invalidData("\(data.source): the hybrid model needs at least two items")
    }
    guard itemFeatures.rows == data.itemCount + coldItemIds.count else {
      throw TrainingError.invalidData(
        "item features have \(itemFeatures.rows) rows for \(data.itemCount + coldItemIds.count) items"
      )
    }
    if let userFeatures, userFeatures.rows != data.userCount {
      throw TrainingError.invalidData(
        "user features have \(userFeatures.rows) rows for \(data.userCount) users")
    }
    var known = Set(data.itemIds)
    for id in coldItemIds where !known.insert(id).inserted {
      throw TrainingError.invalidData("item '\(id)' is listed twice (in the data or as a new item)")
    }
  }

  /// The servable model and the item content parameters.
  static func trained(
    _ data: Interactions, coldItemIds: [String], matrix m: ImplicitMatrix, rowOf: [Int32],
    users: HybridSide, items: HybridSide
  ) -> HybridTrained {
    let (itemVectors, itemBiases) = items.materialize()
    let (userVectors, _) = users.materialize()
    let itemCount = data.itemCount + coldItemIds.count
    // rowOf[k] is the user of entry k: the (user, item) pairs of the history.
    let csr = SeenItems.build(
      users: rowOf, items: m.indices, userCount: data.userCount, itemCount: itemCount)
    let model = MFModel(
      kind: "hybrid", dim: users.dim, userIds: data.userIds,
      itemIds: data.itemIds + coldItemIds, userLookup: data.userLookup, itemLookup: nil,
      globalMean: 0, ratingRange: nil, userFactors: userVectors, itemFactors: itemVectors,
      userBias: [Float](repeating: 0, count: data.userCount), itemBias: itemBiases, csr: csr)
    let content = items.contentParameters()
    return HybridTrained(
      model: model, featureEmbeddings: content.embeddings, featureBiases: content.biases)
  }
}
