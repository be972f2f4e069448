import CBLAS
import Foundation
import RecServeModels
import RecServeProto
import RecServeRPC
import SwiftProtobuf

/// `recserve.v1.Recommender`: Predict, Rank and SimilarItems on the registry's models.
public final class RecommenderService: @unchecked Sendable {
  public static let maxK = 10_000
  public static let maxPairs = 100_000
  public static let maxListEntries = 100_000

  let registry: ModelRegistry

  public init(registry: ModelRegistry) {
    self.registry = registry
  }

  // MARK: Predict

  public func predict(_ request: Recserve_V1_PredictRequest) throws -> Recserve_V1_PredictResponse {
    // One version answers the whole batch: with neither version nor label, the canary split
    // is decided over all the pairs' users (ModelRegistry.resolve(name:userKeys:)).
    let served =
      request.hasModel && !request.model.name.isEmpty && request.model.selector == nil
      ? try registry.resolve(name: request.model.name, userKeys: request.pairs.lazy.map(\.userID))
      : try resolve(request.model, hasModel: request.hasModel)
    let pairs = request.pairs
    if pairs.isEmpty {
      throw RPCError.invalidArgument("pairs is empty: give at least one (user_id, item_id) pair")
    }
    if pairs.count > Self.maxPairs {
      throw RPCError.invalidArgument(
        "pairs has \(pairs.count) entries; at most \(Self.maxPairs) per call")
    }
    let model = served.model
    var response = Recserve_V1_PredictResponse()
    response.modelName = served.name
    response.modelVersion = served.version
    response.scores.reserveCapacity(pairs.count)
    response.known.reserveCapacity(pairs.count)
    for (index, pair) in pairs.enumerated() {
      if pair.userID.isEmpty { throw RPCError.invalidArgument("pairs[\(index)].user_id is empty") }
      if pair.itemID.isEmpty { throw RPCError.invalidArgument("pairs[\(index)].item_id is empty") }
      let user = model.userIndex(pair.userID)
      let item = model.itemIndex(pair.itemID)
      response.scores.append(model.predict(user: user, item: item))
      response.known.append(user != nil && item != nil)
    }
    return response
  }

  // MARK: Rank

  public func rank(_ request: Recserve_V1_RankRequest) throws -> Recserve_V1_RankResponse {
    let served = try resolve(request.model, hasModel: request.hasModel, userKey: request.userID)
    let k = try Self.validateK(request.k, field: "k")
    if request.diversity.isNaN || request.diversity < 0 || request.diversity > 1 {
      throw RPCError.invalidArgument("diversity must be between 0 and 1, got \(request.diversity)")
    }
    if !request.popularityPenalty.isFinite || request.popularityPenalty < 0 {
      throw RPCError.invalidArgument(
        "popularity_penalty must be a finite number >= 0, got \(request.popularityPenalty)")
    }
    if request.hasMinScore && request.minScore.isNaN {
      throw RPCError.invalidArgument("min_score is NaN")
    }
    for (field, list) in [
      ("recent_items", request.recentItems), ("candidates", request.candidates),
      ("exclude", request.exclude),
    ] where list.count > Self.maxListEntries {
      throw RPCError.invalidArgument(
        "\(field) has \(list.count) entries; at most \(Self.maxListEntries)")
    }
    let model = served.model
    let itemCount = model.itemCount
    let scratch = ThreadScratch.current
    let scores = scratch.floats(itemCount)

    // The query: a known user, the items of a session (a sequence model reads them in order,
    // after the user's history when the user is known; a factor model folds in a new user),
    // or both.
    let knownUser = request.userID.isEmpty ? nil : model.userIndex(request.userID)
    // One buffer for the recent items' and the candidates' indices (growing it would move it).
    let indices = scratch.ints(request.recentItems.count + request.candidates.count)
    let recent = indices
    var recentCount = 0
    for id in request.recentItems {
      if let item = model.itemIndex(id) {
        recent[recentCount] = item
        recentCount += 1
      }
    }
    if knownUser == nil {
      if request.userID.isEmpty && request.recentItems.isEmpty {
        throw RPCError.invalidArgument(
          "user_id is empty: give user_id, or recent_items for a new user")
      }
      if request.recentItems.isEmpty {
        throw RPCError.notFound(
          "user_id '\(request.userID)' is not known to model '\(served.name)' version \(served.version); "
            + "pass recent_items to rank for a new user")
      }
      if recentCount == 0 {
        throw RPCError.notFound(
          "none of the \(request.recentItems.count) recent_items is known to model '\(served.name)' version \(served.version)"
        )
      }
    }
    if let knownUser, recentCount == 0 || !model.isSequential {
      model.scoreAll(user: knownUser, into: scores)
    } else {
      let vector = scratch.queryFloats(model.dim)
      guard
        let offset = model.query(
          user: knownUser, recentItems: UnsafeBufferPointer(start: recent, count: recentCount),
          into: vector)
      else {
        throw RPCError.internal("model '\(served.name)' could not build a query")
      }
      model.scoreAll(query: vector, offset: offset, into: scores)
    }

    if request.popularityPenalty > 0 {
      let penalty = request.popularityPenalty
      served.logPopularity.withUnsafeBufferPointer { logPopularity in
        for item in 0..<itemCount { scores[item] -= penalty * logPopularity[item] }
      }
    }

    // Items never to return.
    var excluded = Set<Int32>()
    for id in request.exclude { if let item = model.itemIndex(id) { excluded.insert(item) } }
    if request.excludeSeen {
      // The items of the session have been seen too.
      for k in 0..<recentCount { excluded.insert(recent[k]) }
    }
    let seen = request.excludeSeen ? knownUser.map { model.seenItems(user: $0) } : nil
    let minScore: Float = request.hasMinScore ? request.minScore : -.infinity
    let skip: (Int32) -> Bool = { item in
      if scores[Int(item)] < minScore { return true }
      if !excluded.isEmpty && excluded.contains(item) { return true }
      if let seen, Self.contains(seen, item) { return true }
      return false
    }

    // With diversity, take a deeper pool and re-rank it.
    let poolSize = request.diversity > 0 ? min(itemCount, max(k * 5, k + 50)) : k
    var top: [TopK.Entry]
    if request.candidates.isEmpty {
      top = TopK.select(scores: scores, count: itemCount, k: poolSize, skip: skip)
    } else {
      let candidateIndices = indices + request.recentItems.count
      var count = 0
      for id in request.candidates {
        if let item = model.itemIndex(id) {
          candidateIndices[count] = item
          count += 1
        }
      }
      top = TopK.select(
        scores: scores, count: itemCount,
        candidates: UnsafeBufferPointer(start: candidateIndices, count: count),
        k: poolSize, skip: skip)
    }
    if request.diversity > 0 && top.count > 1 {
      top = Diversity.rerank(pool: top, k: k, lambda: request.diversity, served: served)
    }

    var response = Recserve_V1_RankResponse()
    response.modelName = served.name
    response.modelVersion = served.version
    response.items.reserveCapacity(min(k, top.count))
    let itemIds = model.itemIds
    for entry in top.prefix(k) {
      var scored = Recserve_V1_ScoredItem()
      scored.itemID = itemIds[Int(entry.index)]
      scored.score = entry.score
      response.items.append(scored)
    }
    return response
  }

  // MARK: SimilarItems

  public func similarItems(_ request: Recserve_V1_SimilarItemsRequest) throws
    -> Recserve_V1_SimilarItemsResponse
  {
    let served = try resolve(request.model, hasModel: request.hasModel)
    let k = try Self.validateK(request.k, field: "k")
    if request.itemID.isEmpty { throw RPCError.invalidArgument("item_id is empty") }
    if request.exclude.count > Self.maxListEntries {
      throw RPCError.invalidArgument(
        "exclude has \(request.exclude.count) entries; at most \(Self.maxListEntries)")
    }
    let model = served.model
    guard let query = model.itemIndex(request.itemID) else {
      throw RPCError.notFound(
        "item_id '\(request.itemID)' is not known to model '\(served.name)' version \(served.version)"
      )
    }
    let itemCount = model.itemCount
    let dim = model.dim
    let scores = ThreadScratch.current.floats(itemCount)
    let factors = model.itemFactors
    cblas_sgemv(
      CblasRowMajor, CblasNoTrans, Int32(itemCount), Int32(dim), 1, factors, Int32(dim),
      factors + Int(query) * dim, 1, 0, scores, 1)
    served.itemNorms.withUnsafeBufferPointer { norms in
      let queryNorm = norms[Int(query)]
      for item in 0..<itemCount {
        let denominator = norms[item] * queryNorm
        scores[item] = denominator > 0 ? scores[item] / denominator : 0
      }
    }
    var excluded = Set<Int32>([query])
    for id in request.exclude { if let item = model.itemIndex(id) { excluded.insert(item) } }
    let top = TopK.select(scores: scores, count: itemCount, k: k) { excluded.contains($0) }
    var response = Recserve_V1_SimilarItemsResponse()
    response.modelName = served.name
    response.modelVersion = served.version
    for entry in top {
      var scored = Recserve_V1_ScoredItem()
      scored.itemID = model.itemIds[Int(entry.index)]
      scored.score = entry.score
      response.items.append(scored)
    }
    return response
  }

  // MARK: helpers

  @inline(__always)
  func resolve(_ spec: Recserve_V1_ModelSpec, hasModel: Bool, userKey: String = "") throws
    -> ServedVersion
  {
    if !hasModel || spec.name.isEmpty {
      throw RPCError.invalidArgument("model.name is empty: name the model to use")
    }
    switch spec.selector {
    case .version(let version)?:
      return try registry.resolve(name: spec.name, version: version, label: nil)
    case .label(let label)?:
      if label.isEmpty { throw RPCError.invalidArgument("model.label is empty") }
      return try registry.resolve(name: spec.name, version: nil, label: label)
    case nil:
      return try registry.resolve(name: spec.name, version: nil, label: nil, userKey: userKey)
    }
  }

  static func validateK(_ k: Int32, field: String) throws -> Int {
    if k <= 0 {
      throw RPCError.invalidArgument("\(field) must be at least 1, got \(k)")
    }
    if Int(k) > maxK {
      throw RPCError.invalidArgument("\(field) must be at most \(maxK), got \(k)")
    }
    return Int(k)
  }

  @inline(__always)
  static func contains(_ sorted: UnsafeBufferPointer<Int32>, _ item: Int32) -> Bool {
    var low = 0
    var high = sorted.count
    while low < high {
      let middle = (low + high) >> 1
      if sorted[middle] < item { low = middle + 1 } else { high = middle }
    }
    return low < sorted.count && sorted[low] == item
  }
}
