import Foundation

@testable import RecServeModels

/// A fresh temporary directory, removed when the value is deinitialised.
final class TempDir {
  let path: String

  init() {
    let base = FileManager.default.temporaryDirectory.path
    path = base + "/recserve-models-tests-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }

  deinit { try? FileManager.default.removeItem(atPath: path) }

  /// Writes `text` to `name` in this directory and returns its path.
  @discardableResult
  func write(_ name: String, _ text: String) -> String {
    let p = path + "/" + name
    try! Data(text.utf8).write(to: URL(fileURLWithPath: p))
    return p
  }

  @discardableResult
  func write(_ name: String, bytes: [UInt8]) -> String {
    let p = path + "/" + name
    try! Data(bytes).write(to: URL(fileURLWithPath: p))
    return p
  }

  func file(_ name: String) -> String { path + "/" + name }
}

/// The error a throwing expression raised, or nil.
func errorOf<T>(_ body: () throws -> T) -> Error? {
  do {
    _ = try body()
    return nil
  } catch {
    return error
  }
}

/// A small synthetic data set shared by model tests (fast in debug builds).
func smallSynthetic(seed: UInt64 = 3) -> Interactions {
  try! SyntheticData.generate(
    SyntheticData.Config(users: 300, items: 200, seed: seed, dim: 4, density: 0.15, noise: 0.2))
}

/// A quick-to-train configuration for tests.
func quickConfig(seed: UInt64 = 5) -> MFConfig {
  MFConfig(
    dim: 8, epochs: 30, learningRate: 0.03, learningRateDecay: 0.97, regularization: 0.03,
    biasRegularization: 0.02, initStd: 0.05, seed: seed)
}

/// Every item's score for the query a Rank request makes from `user` and `recent` (the model's
/// `query` then `scoreAll(query:)`), or nil when the model has nothing to rank from.
func queryScores(_ model: any RecommendationModel, user: Int32? = nil, recent: [Int32]) -> [Float]?
{
  var vector = [Float](repeating: 0, count: model.dim)
  let offset = recent.withUnsafeBufferPointer { r in
    vector.withUnsafeMutableBufferPointer {
      model.query(user: user, recentItems: r, into: $0.baseAddress!)
    }
  }
  guard let offset else { return nil }
  var scores = [Float](repeating: 0, count: model.itemCount)
  vector.withUnsafeBufferPointer { v in
    scores.withUnsafeMutableBufferPointer {
      model.scoreAll(query: v.baseAddress!, offset: offset, into: $0.baseAddress!)
    }
  }
  return scores
}
