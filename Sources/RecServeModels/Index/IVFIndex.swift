/// An inverted-file index over a model's item vectors (SEARCH_IVF).
public final class IVFIndex: Sendable {
  /// Number of inverted lists (k-means cells).
  public let lists: Int
  /// Lists a request visits when it names no nprobe.
  public let defaultProbe: Int

  public init(model: any RecommendationModel, lists: Int = 0, probe: Int = 0) {
    self.lists = max(1, lists)
    self.defaultProbe = max(1, probe)
  }

  /// About how many multiply-adds one query with `nprobe` costs (for pricing a request).
  public func work(nprobe: Int) -> Int { 0 }

  /// The top `selection.k` items (exact f32 scores, as the exact scan computes them) among the
  /// items of the `nprobe` lists whose centroids score highest for the query. `skip`, the
  /// penalties and `selection.minScore` apply as in `BlockedScan.select`.
  public func select(
    model: any RecommendationModel, query: UnsafePointer<Float>, offset: Float,
    selection: BlockedScan.Selection, penalties: UnsafeBufferPointer<Float>?, nprobe: Int,
    skip: (Int32) -> Bool, check: () throws -> Void
  ) throws -> [TopK.Entry] {
    fatalError("not yet")
  }
}
