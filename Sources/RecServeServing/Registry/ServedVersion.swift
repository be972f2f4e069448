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

  public init(name: String, version: Int64, loaded: LoadedModel) {
    self.name = name
    self.version = version
    self.loaded = loaded
    self.model = loaded.model
    let model = loaded.model
    let norms = Diversity.norms(model)
    let popularity = model.itemPopularity
    let logPopularity = (0..<model.itemCount).map { log1p(Float(max(0, popularity[$0]))) }
    self.itemNorms = norms
    self.logPopularity = logPopularity
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
