/// Sparse feature rows (CSR): row r's features are `index[start[r]..<start[r+1]]`, with
/// `weight` at the same positions; feature indices are in 0..<`features`.
public struct FeatureRows: Sendable, Equatable {
  public var start: [Int32]
  public var index: [Int32]
  public var weight: [Float]
  public var features: Int

  public var rows: Int { start.count - 1 }

  public init(start: [Int32], index: [Int32], weight: [Float], features: Int) {
    self.start = start
    self.index = index
    self.weight = weight
    self.features = features
  }

  /// `rows` rows without features.
  public static func empty(rows: Int, features: Int = 0) -> FeatureRows {
    FeatureRows(
      start: [Int32](repeating: 0, count: rows + 1), index: [], weight: [], features: features)
  }

  /// Row r's (feature, weight) pairs.
  public func row(_ r: Int) -> [(feature: Int32, weight: Float)] {
    (Int(start[r])..<Int(start[r + 1])).map { (index[$0], weight[$0]) }
  }

  /// Rows `other` appended below these (the same feature space).
  public func appending(_ other: FeatureRows) -> FeatureRows {
    var result = self
    let base = start.last ?? 0
    result.start += other.start.dropFirst().map { $0 + base }
    result.index += other.index
    result.weight += other.weight
    result.features = max(features, other.features)
    return result
  }
}
