/// A half-precision copy of a model's item vectors, scanned for a shortlist that is then
/// re-scored exactly in f32 (SEARCH_F16).
public final class HalfItems: Sendable {
  public init(model: any RecommendationModel) {}

  /// The top `selection.k` items for one query, as `BlockedScan.select` would return them for
  /// the items it keeps (exact f32 scores), found from a half-precision shortlist.
  public func select(
    model: any RecommendationModel, query: UnsafePointer<Float>, offset: Float,
    selection: BlockedScan.Selection, penalties: UnsafeBufferPointer<Float>?, parallel: Int = 1,
    skip: (Int32) -> Bool, check: () throws -> Void
  ) throws -> [TopK.Entry] {
    fatalError("not yet")
  }
}
