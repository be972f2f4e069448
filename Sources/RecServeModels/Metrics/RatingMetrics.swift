/// Rating-prediction metrics on held-out data. Ranking metrics (HR@K, NDCG@K, ...) live beside
/// this in `Metrics/` and share the `metrics` dictionary convention: lowercase names, Double values.
public struct RatingEvaluation: Sendable, Equatable {
  public var rmse: Double
  public var mae: Double
  /// Pairs evaluated.
  public var count: Int
  /// Pairs whose user or item the model has never seen (scored with the fallback).
  public var unknownPairs: Int
  /// Distinct users / items of the data that the model does not know.
  public var unknownUsers: Int
  public var unknownItems: Int

  /// {"rmse": ..., "mae": ...} for model.json and reports.
  public var metrics: [String: Double] { ["rmse": rmse, "mae": mae] }
}

/// Accumulates squared and absolute errors in Double.
public struct ErrorAccumulator: Sendable {
  public private(set) var count = 0
  private var sumSquared = 0.0
  private var sumAbsolute = 0.0

  public init() {}

  @inlinable
  public mutating func add(predicted: Float, actual: Float) {
    let e = Double(predicted) - Double(actual)
    _add(e)
  }

  @usableFromInline
  mutating func _add(_ e: Double) {
    count += 1
    sumSquared += e * e
    sumAbsolute += Swift.abs(e)
  }

  public var rmse: Double { count > 0 ? (sumSquared / Double(count)).squareRoot() : .nan }
  public var mae: Double { count > 0 ? sumAbsolute / Double(count) : .nan }
}

public enum RatingMetrics {
  /// RMSE and MAE of `model.predict` on every row of `data`, matching users and items by their
  /// external ids (unknown ones use the model's fallback and are counted).
  public static func evaluate(model: any RecommendationModel, on data: Interactions)
    -> RatingEvaluation
  {
    var acc = ErrorAccumulator()
    let (unknownPairs, unknownUsers, unknownItems) = forEachPrediction(model: model, on: data) {
      acc.add(predicted: $1, actual: data.ratings[$0])
    }
    return RatingEvaluation(
      rmse: acc.rmse, mae: acc.mae, count: acc.count, unknownPairs: unknownPairs,
      unknownUsers: unknownUsers, unknownItems: unknownItems)
  }

  /// The squared error of `model.predict` on each row of `data`, in row order (ids matched as
  /// `evaluate` does): for paired comparisons of two models on the same rows.
  public static func squaredErrors(model: any RecommendationModel, on data: Interactions)
    -> [Double]
  {
    var errors = [Double](repeating: 0, count: data.count)
    _ = forEachPrediction(model: model, on: data) { r, p in
      let e = Double(p) - Double(data.ratings[r])
      errors[r] = e * e
    }
    return errors
  }

  /// Calls `body(row, prediction)` for every row of `data`; returns the rows with an unknown
  /// user or item, and the unknown distinct users and items.
  static func forEachPrediction(
    model: any RecommendationModel, on data: Interactions, _ body: (Int, Float) -> Void
  ) -> (pairs: Int, users: Int, items: Int) {
    var userMap = [Int32](repeating: -1, count: data.userCount)
    var itemMap = [Int32](repeating: -1, count: data.itemCount)
    var unknownUsers = 0
    var unknownItems = 0
    for (i, id) in data.userIds.enumerated() {
      if let m = model.userIndex(id) { userMap[i] = m } else { unknownUsers += 1 }
    }
    for (i, id) in data.itemIds.enumerated() {
      if let m = model.itemIndex(id) { itemMap[i] = m } else { unknownItems += 1 }
    }
    var unknownPairs = 0
    for r in 0..<data.count {
      let u = userMap[Int(data.users[r])]
      let i = itemMap[Int(data.items[r])]
      if u < 0 || i < 0 { unknownPairs += 1 }
      body(r, model.predict(user: u < 0 ? nil : u, item: i < 0 ? nil : i))
    }
    return (unknownPairs, unknownUsers, unknownItems)
  }
}
