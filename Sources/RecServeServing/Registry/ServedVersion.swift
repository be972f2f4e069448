import Foundation
import RecServeModels

/// One loaded, verified version of a model, ready to serve. Immutable: requests hold it from
/// start to end, so a swap never pulls it from under them.
public final class ServedVersion: Sendable {
  public let name: String
  public let version: Int64
  public let loaded: LoadedModel
  public let model: any RecommendationModel
  /// Euclidean norm of each item embedding (for cosine similarity), computed at load.
  public let itemNorms: [Float]
  /// log(1 + popularity) of each item (for the popularity penalty), computed at load.
  public let logPopularity: [Float]
  /// What was built for faster Rank at load (`IndexOptions`); nil where not asked for.
  public let halfItems: HalfItems?
  public let ivf: IVFIndex?
  /// The calls this version answered (counted by the server; read by metrics and status); kept
  /// when items are added to the version.
  public let traffic: VersionTraffic
  /// A hybrid version's feature files and the items added to it after training.
  public let hybrid: HybridState?

  /// What a hybrid version needs to place new items, and what was added to it: each added id
  /// with its raw features, and the bytes of `added_items.jsonl` applied.
  public struct HybridState: Sendable {
    public var files: HybridFiles
    public var added: [String: [String: String]] = [:]
    public var addedBytes = 0
  }

  public init(
    name: String, version: Int64, loaded: LoadedModel, indexes: IndexOptions = IndexOptions(),
    traffic: VersionTraffic = VersionTraffic(), hybrid: HybridState? = nil
  ) {
    self.name = name
    self.version = version
    self.loaded = loaded
    self.traffic = traffic
    self.hybrid = hybrid
    self.model = loaded.model
    let model = loaded.model
    let norms = Diversity.norms(model)
    let popularity = model.itemPopularity
    let logPopularity = (0..<model.itemCount).map { log1p(Float(max(0, popularity[$0]))) }
    self.itemNorms = norms
    self.logPopularity = logPopularity
    self.halfItems = indexes.f16 ? HalfItems(model: model) : nil
    self.ivf =
      indexes.ivfMinItems > 0 && model.itemCount >= indexes.ivfMinItems
      ? IVFIndex(model: model, lists: indexes.ivfLists, probe: indexes.ivfProbe) : nil
  }

  /// Runs one request's worth of scoring so the first real request finds code and memory hot.
  func warm() {
    let model = self.model
    guard model.userCount > 0, model.itemCount > 0 else { return }
    let scores = UnsafeMutablePointer<Float>.allocate(capacity: model.itemCount)
    defer { scores.deallocate() }
    model.scoreAll(user: 0, into: scores)
    _ = model.predict(user: 0, item: 0)
  }
}

/// Search structures a server builds for each version it loads, beside the exact item matrix.
public struct IndexOptions: Sendable {
  /// A half-precision copy of the item vectors for SEARCH_F16 (`--f16`).
  public var f16 = false
  /// Versions with at least this many items get an IVF index for SEARCH_IVF (0: none).
  public var ivfMinItems = 0
  /// Lists (k-means cells) of an IVF index; 0: chosen from the item count.
  public var ivfLists = 0
  /// Lists a SEARCH_IVF request visits when it gives no nprobe; 0: chosen from the list count.
  public var ivfProbe = 0
  public init() {}
}
