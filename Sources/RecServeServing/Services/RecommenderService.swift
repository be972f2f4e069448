import Foundation
import RecServeModels
import RecServeProto
import RecServeRPC
import SwiftProtobuf

/// `recserve.v1.Recommender`: Predict, Rank and SimilarItems on the registry's models.
public final class RecommenderService: Sendable {
  public static let maxK = 10_000
  public static let maxPairs = 100_000
  public static let maxListEntries = 100_000
  /// What looking up one id costs, in the multiply-adds that prices are counted in (a string
  /// hash and compare, about 100 ns).
  static let lookupWork = 50

  let registry: ModelRegistry
  public let limits: Limits
  /// The users' latest events (AppendEvents), which Rank reads before `recent_items`.
  let events: EventStore?

  /// What one request may ask for, and when its work leaves the completion-queue thread.
  public struct Limits: Sendable {
    /// Multiply-adds the diversity re-rank of one Rank may take (k × pool × dim); beyond,
    /// INVALID_ARGUMENT.
    public var diversityWork = 400_000_000
    /// The latest known recent items a query reads (a sequence model reads at most its maxlen
    /// of them anyway; a factor model folds a new user in from these).
    public var recentItems = 1024
    /// Estimated multiply-adds above which a request runs on the server's work pool instead of
    /// the thread that received it.
    public var inlineWork = 10_000_000
    /// Threads one request may use when it is the only one in flight.
    public var cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
    /// How a Rank that says SEARCH_DEFAULT searches (`--search`); where the version lacks what
    /// that needs (no f16 copy, no IVF index), exact.
    public var search: Recserve_V1_Search = .exact

    public init() {}
  }

  /// How one Rank searches the catalog.
  enum RankSearch: Sendable, Equatable {
    case exact
    case f16
    case ivf(nprobe: Int)
  }

  /// Work a request will do, priced before it runs: `run` does it, calling `check` between
  /// blocks of work (it throws to stop, e.g. when the deadline passed).
  public struct Plan<Response>: Sendable {
    public let work: Int
    /// Of `work`, what a batch of requests does once for all (scoring the whole catalog).
    public var shared = 0
    public let run: @Sendable (_ check: () throws -> Void) throws -> Response
    /// For a Rank that may join a batch: what the batcher needs.
    var batchKey: RankBatcher.Key? = nil
    /// The work for a request alone on an idle server, which may use every core.
    var runAlone: (@Sendable (_ check: () throws -> Void) throws -> Response)? = nil

    init(
      work: Int, shared: Int = 0,
      run: @escaping @Sendable (_ check: () throws -> Void) throws -> Response
    ) {
      self.work = work
      self.shared = shared
      self.run = run
    }

    func batchable(_ key: RankBatcher.Key?) -> Plan {
      var plan = self
      plan.batchKey = key
      return plan
    }

  }

  public init(registry: ModelRegistry, limits: Limits = Limits(), events: EventStore? = nil) {
    self.registry = registry
    self.limits = limits
    self.events = events
  }

  // MARK: Predict

  /// Predict, priced (one dot product a pair); `predict` does the checks and the work.
  public func planPredict(
    _ request: Recserve_V1_PredictRequest, resolved: (ServedVersion) -> Void = { _ in }
  ) throws -> Plan<
    Recserve_V1_PredictResponse
  > {
    let served = try resolvePredict(request)
    resolved(served)
    let work = request.pairs.count * (served.model.dim + 2 * Self.lookupWork)
    return Plan(work: work) { _ in try self.predict(request, served: served) }
  }

  /// The version that answers a Predict. One version answers the whole batch: with neither
  /// version nor label, the canary split is decided over all the pairs' users
  /// (ModelRegistry.resolve(name:userKeys:)).
  func resolvePredict(_ request: Recserve_V1_PredictRequest) throws -> ServedVersion {
    request.hasModel && !request.model.name.isEmpty && request.model.selector == nil
      ? try registry.resolve(name: request.model.name, userKeys: request.pairs.lazy.map(\.userID))
      : try resolve(request.model, hasModel: request.hasModel)
  }

  public func predict(_ request: Recserve_V1_PredictRequest) throws -> Recserve_V1_PredictResponse {
    try predict(request, served: try resolvePredict(request))
  }

  func predict(_ request: Recserve_V1_PredictRequest, served: ServedVersion) throws
    -> Recserve_V1_PredictResponse
  {
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

  /// Rank, checked and priced: the fields are validated and the version resolved at once; the
  /// work (scoring, filters, selection, re-ranking) runs where the caller puts it.
  public func planRank(
    _ request: Recserve_V1_RankRequest, resolved: (ServedVersion) -> Void = { _ in }
  ) throws -> Plan<Recserve_V1_RankResponse> {
    let served = try resolve(request.model, hasModel: request.hasModel, userKey: request.userID)
    resolved(served)
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
    let search = try rankSearch(request, served: served)
    // The price: the query, scoring the catalog (or the candidates), selecting, re-ranking.
    let model = served.model
    let knownUser = request.userID.isEmpty ? nil : model.userIndex(request.userID)
    let recentUsed = min(request.recentItems.count, limits.recentItems)
    var scored = request.candidates.isEmpty ? model.itemCount : request.candidates.count
    if request.candidates.isEmpty, case .ivf(let nprobe) = search, let ivf = served.ivf {
      scored = ivf.work(nprobe: nprobe) / (model.dim + 2)
    }
    var work = model.queryWork(user: knownUser, recentCount: recentUsed)
    work += scored * (model.dim + 2)
    work +=
      Self.lookupWork
      * (request.exclude.count + request.recentItems.count + request.candidates.count)
    if request.diversity > 0 {
      let pool = min(scored, max(k * 5, k + 50))
      let rerank = k * pool * (model.dim + 2)
      if rerank > limits.diversityWork {
        throw RPCError.invalidArgument(
          "diversity with k \(k) re-ranks a pool of \(pool) items of dim \(model.dim): about \(rerank) multiply-adds, over the server's limit of \(limits.diversityWork) (--max-diversity-work); ask for a smaller k"
        )
      }
      work += rerank
    }
    var plan = Plan(work: work, shared: scored * (model.dim + 2)) { check in
      try self.rankWork(
        request, served: served, knownUser: knownUser, k: k, search: search, check: check)
    }
    // Exact and f16 searches may join a batch; a batch of f16 requests reads the half copy, one
    // with any SEARCH_EXACT request the f32 matrix (the answers are the same).
    .batchable(
      request.candidates.isEmpty && (search == .exact || search == .f16)
        ? RankBatcher.Key(served: served, knownUser: knownUser, k: k, half: search == .f16) : nil
    )
    let cores = limits.cores
    plan.runAlone = { check in
      try self.rankWork(
        request, served: served, knownUser: knownUser, k: k, search: search, parallel: cores,
        check: check)
    }
    return plan
  }

  /// Rank on the calling thread (tests and tools): `withEvents`, `planRank`, then its work.
  public func rank(_ request: Recserve_V1_RankRequest) throws -> Recserve_V1_RankResponse {
    try planRank(withEvents(request)).run({})
  }

  /// `request` with the user's latest events (AppendEvents) before its `recent_items`, unless
  /// it says `ignore_events`: a sequence model reads them as the sequence's tail, a factor
  /// model folds in a user it never saw from them, and `exclude_seen` drops them.
  public func withEvents(_ request: Recserve_V1_RankRequest) -> Recserve_V1_RankRequest {
    guard let events, !request.userID.isEmpty, !request.ignoreEvents,
      let items = events.histories.items(of: request.userID), !items.isEmpty
    else { return request }
    var merged = request
    // Only the latest `limits.recentItems` recent items count anyway.
    merged.recentItems = items.suffix(limits.recentItems) + request.recentItems
    return merged
  }

  /// What a Rank scores with and filters by, from its request: the query vector (written to
  /// the caller's buffer), the candidates (their indices in the caller's buffer), the items
  /// left out, the selection.
  struct RankSetup {
    var offset: Float
    var candidates: UnsafeBufferPointer<Int32>?
    var excluded: Set<Int32>
    var seen: UnsafeBufferPointer<Int32>?
    var selection: BlockedScan.Selection
  }

  /// Validates the ids against the model and builds the query into `query` (dim floats).
  /// `indices` must hold recent_items.count + candidates.count entries.
  func setupRank(
    _ request: Recserve_V1_RankRequest, served: ServedVersion, knownUser: Int32?, k: Int,
    query: UnsafeMutablePointer<Float>, indices: UnsafeMutablePointer<Int32>
  ) throws -> RankSetup {
    let model = served.model
    // The query: a known user, the items of a session (a sequence model reads them in order,
    // after the user's history when the user is known; a factor model folds in a new user),
    // or both. Only the latest `limits.recentItems` known recent items count.
    let recent = indices
    var recentCount = 0
    for id in request.recentItems {
      if let item = model.itemIndex(id) {
        recent[recentCount] = item
        recentCount += 1
      }
    }
    let recentUsed = UnsafeBufferPointer(
      start: recent + max(0, recentCount - limits.recentItems),
      count: min(recentCount, limits.recentItems))
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
        let what =
          request.userID.isEmpty
          ? "none of the \(request.recentItems.count) recent_items is"
          : "user_id '\(request.userID)' is not known to it and none of the \(request.recentItems.count) items of its events (AppendEvents) and recent_items is"
        throw RPCError.notFound(
          "\(what) known to model '\(served.name)' version \(served.version)")
      }
    }
    guard let offset = model.query(user: knownUser, recentItems: recentUsed, into: query) else {
      throw RPCError.internal("model '\(served.name)' could not build a query")
    }

    // Candidates: known ones, each once (a mark per item, not a search per insert).
    var candidates: UnsafeBufferPointer<Int32>? = nil
    if !request.candidates.isEmpty {
      let list = indices + request.recentItems.count
      var count = 0
      let marks = ThreadScratch.current.marks(model.itemCount)
      for id in request.candidates {
        if let item = model.itemIndex(id), marks.mark(item) {
          list[count] = item
          count += 1
        }
      }
      candidates = UnsafeBufferPointer(start: list, count: count)
    }

    // Items never to return.
    var excluded = Set<Int32>()
    for id in request.exclude { if let item = model.itemIndex(id) { excluded.insert(item) } }
    if request.excludeSeen {
      // The items of the session have been seen too.
      for j in 0..<recentCount { excluded.insert(recent[j]) }
    }
    let poolSize =
      request.diversity > 0
      ? min(candidates?.count ?? model.itemCount, max(k * 5, k + 50)) : k
    return RankSetup(
      offset: offset, candidates: candidates, excluded: excluded,
      seen: request.excludeSeen ? knownUser.map { model.seenItems(user: $0) } : nil,
      selection: BlockedScan.Selection(
        k: poolSize, penalty: request.popularityPenalty,
        minScore: request.hasMinScore ? request.minScore : -.infinity))
  }

  /// Whether a set-up Rank leaves `item` out.
  @inline(__always)
  static func skips(_ setup: RankSetup, _ item: Int32) -> Bool {
    if !setup.excluded.isEmpty && setup.excluded.contains(item) { return true }
    if let seen = setup.seen, contains(seen, item) { return true }
    return false
  }

  /// How `request` searches `served`: its `search` (or the server's default) and `nprobe`,
  /// checked against what the version has.
  func rankSearch(_ request: Recserve_V1_RankRequest, served: ServedVersion) throws -> RankSearch {
    if request.nprobe < 0 {
      throw RPCError.invalidArgument("nprobe must be >= 0, got \(request.nprobe)")
    }
    let explicit = request.search != .default
    if request.nprobe > 0 && explicit && request.search != .ivf {
      throw RPCError.invalidArgument(
        "nprobe is for search SEARCH_IVF; this request asks for \(request.search)")
    }
    let asked = explicit ? request.search : limits.search
    let what = "model '\(served.name)' version \(served.version)"
    switch asked {
    case .default, .exact:
      return .exact
    case .f16:
      if served.halfItems != nil { return .f16 }
      if !explicit { return .exact }
      throw RPCError.failedPrecondition(
        "search SEARCH_F16: \(what) has no half-precision copy; the server makes one for every version unless started with --no-f16"
      )
    case .ivf:
      guard let ivf = served.ivf else {
        if !explicit { return .exact }
        throw RPCError.failedPrecondition(
          "search SEARCH_IVF: \(what) (\(served.model.itemCount) items) has no IVF index; the server builds one for versions of at least --ivf-min-items items"
        )
      }
      let nprobe = request.nprobe > 0 ? min(Int(request.nprobe), ivf.lists) : ivf.defaultProbe
      return .ivf(nprobe: nprobe)
    case .UNRECOGNIZED(let value):
      throw RPCError.invalidArgument(
        "search \(value) is not a known value (SEARCH_DEFAULT, SEARCH_EXACT, SEARCH_F16, SEARCH_IVF)"
      )
    }
  }

  /// Rank's work on the calling thread, one request.
  func rankWork(
    _ request: Recserve_V1_RankRequest, served: ServedVersion, knownUser: Int32?, k: Int,
    search: RankSearch = .exact, parallel: Int = 1, check: () throws -> Void
  ) throws -> Recserve_V1_RankResponse {
    let model = served.model
    let scratch = ThreadScratch.current
    let indices = scratch.ints(request.recentItems.count + request.candidates.count)
    let query = scratch.queryFloats(model.dim)
    let setup = try setupRank(
      request, served: served, knownUser: knownUser, k: k, query: query, indices: indices)
    try check()
    var top: [TopK.Entry]
    if let candidates = setup.candidates {
      // Only the candidates are scored.
      let scores = scratch.floats(max(1, candidates.count))
      model.scoreItems(query: query, offset: setup.offset, items: candidates, into: scores)
      if setup.selection.penalty > 0 {
        served.logPopularity.withUnsafeBufferPointer { logPopularity in
          for j in 0..<candidates.count {
            scores[j] -= setup.selection.penalty * logPopularity[Int(candidates[j])]
          }
        }
      }
      try check()
      top = TopK.select(
        indices: candidates, scores: scores, k: setup.selection.k, distinct: true
      ) { Self.skips(setup, $0) }
      let minScore = setup.selection.minScore
      if minScore > -.infinity { top.removeAll { $0.score < minScore } }
    } else if case .ivf(let nprobe) = search, let ivf = served.ivf {
      top = try served.logPopularity.withUnsafeBufferPointer { logPopularity in
        try ivf.select(
          model: model, query: query, offset: setup.offset, selection: setup.selection,
          penalties: logPopularity, nprobe: nprobe, skip: { Self.skips(setup, $0) },
          check: check)
      }
    } else if search == .f16, let half = served.halfItems {
      top = try served.logPopularity.withUnsafeBufferPointer { logPopularity in
        try half.select(
          model: model, query: query, offset: setup.offset, selection: setup.selection,
          penalties: logPopularity, parallel: parallel, skip: { Self.skips(setup, $0) },
          check: check)
      }
    } else {
      // The blocked scan, as in a batch: a request gets the same answer alone or batched.
      var offset = setup.offset
      top = try served.logPopularity.withUnsafeBufferPointer { logPopularity in
        try BlockedScan.select(
          model: model, queries: query, offsets: &offset, selections: [setup.selection],
          penalties: logPopularity, parallel: parallel,
          skip: { _, item in Self.skips(setup, item) },
          check: check)
      }[0]
    }
    return try finishRank(request, served: served, k: k, top: top, check: check)
  }

  /// The response from the selected pool: re-ranked for diversity when asked, cut to k.
  func finishRank(
    _ request: Recserve_V1_RankRequest, served: ServedVersion, k: Int, top: [TopK.Entry],
    check: () throws -> Void
  ) throws -> Recserve_V1_RankResponse {
    var top = top
    if request.diversity > 0 && top.count > 1 {
      top = try served.itemNorms.withUnsafeBufferPointer { norms in
        try Diversity.rerank(
          pool: top, k: k, lambda: request.diversity, model: served.model, norms: norms,
          check: check)
      }
    }
    var response = Recserve_V1_RankResponse()
    response.modelName = served.name
    response.modelVersion = served.version
    response.items.reserveCapacity(min(k, top.count))
    let itemIds = served.model.itemIds
    for entry in top.prefix(k) {
      var scored = Recserve_V1_ScoredItem()
      scored.itemID = itemIds[Int(entry.index)]
      scored.score = entry.score
      response.items.append(scored)
    }
    return response
  }

  // MARK: SimilarItems

  /// SimilarItems, priced (one pass over the item embeddings); `similarItems` does the checks
  /// and the work.
  public func planSimilarItems(
    _ request: Recserve_V1_SimilarItemsRequest, resolved: (ServedVersion) -> Void = { _ in }
  ) throws -> Plan<
    Recserve_V1_SimilarItemsResponse
  > {
    let served = try resolve(request.model, hasModel: request.hasModel)
    resolved(served)
    let work =
      served.model.itemCount * (served.model.dim + 2) + Self.lookupWork * request.exclude.count
    return Plan(work: work) { _ in try self.similarItems(request, served: served) }
  }

  public func similarItems(_ request: Recserve_V1_SimilarItemsRequest) throws
    -> Recserve_V1_SimilarItemsResponse
  {
    try similarItems(request, served: try resolve(request.model, hasModel: request.hasModel))
  }

  func similarItems(_ request: Recserve_V1_SimilarItemsRequest, served: ServedVersion) throws
    -> Recserve_V1_SimilarItemsResponse
  {
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
    let scores = ThreadScratch.current.floats(itemCount)
    served.itemNorms.withUnsafeBufferPointer { norms in
      Diversity.cosine(to: query, model: model, norms: norms, into: scores)
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
