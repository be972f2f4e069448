/// What the serving layer needs from a trained model on its hot path. Implementations are
/// immutable after construction and safe to share between threads; none of these methods
/// allocate.
public protocol RecommendationModel: AnyObject, Sendable {
  /// "mf", "bpr", "als", "sasrec".
  var kind: String { get }
  var dim: Int { get }
  var userCount: Int { get }
  var itemCount: Int { get }
  /// External ids; row i of the factor matrices belongs to `userIds[i]` / `itemIds[i]`.
  var userIds: [String] { get }
  var itemIds: [String] { get }
  func userIndex(_ id: String) -> Int32?
  func itemIndex(_ id: String) -> Int32?
  /// Score of one pair; nil stands for an unknown user or item, and the model falls back to
  /// what it knows (for MF: global mean plus the known biases).
  func predict(user: Int32?, item: Int32?) -> Float
  /// Scores of every item for `user`, written to `into[0..<itemCount]`.
  func scoreAll(user: Int32, into: UnsafeMutablePointer<Float>)
  /// Items the user interacted with in training, sorted ascending, without duplicates.
  func seenItems(user: Int32) -> UnsafeBufferPointer<Int32>
  /// Number of distinct training users per item.
  var itemPopularity: UnsafeBufferPointer<Int32> { get }
  /// Row-major [itemCount, dim] item embeddings.
  var itemFactors: UnsafePointer<Float> { get }
  /// Whether `recentItems` are read as an ordered sequence (sequence models) rather than a set
  /// of items a new user liked (factor models).
  var isSequential: Bool { get }
  /// The query of a request: writes its vector to `vector[0..<dim]` and returns the constant
  /// that `scoreAll(query:offset:into:)` adds to every score, or nil when there is nothing to
  /// rank from (no known user and no recent items). A known user alone is its own vector. With
  /// recent items (indices in range, oldest first), a sequence model encodes the user's history
  /// (when known) followed by them, and a factor model folds in a user it never saw.
  func query(
    user: Int32?, recentItems: UnsafeBufferPointer<Int32>, into vector: UnsafeMutablePointer<Float>
  ) -> Float?
  /// out[i] = offset + (the model's per-item term) + query · item_i for every item.
  func scoreAll(query: UnsafePointer<Float>, offset: Float, into out: UnsafeMutablePointer<Float>)
  /// The same for the listed items only: out[j] is the score of items[j] (indices in range).
  func scoreItems(
    query: UnsafePointer<Float>, offset: Float, items: UnsafeBufferPointer<Int32>,
    into out: UnsafeMutablePointer<Float>)
  /// Scores of `count` queries (rows of `queries`, `dim` floats each; at most 32) against the
  /// items in `items`, item-major: out[(i − items.lowerBound)·stride + j] = offsets[j] + (the
  /// per-item term) + q_j·item_i. `stride` is 1 for one query, else `count` rounded up to a
  /// multiple of 8.
  func scoreBlock(
    queries: UnsafePointer<Float>, count: Int, offsets: UnsafePointer<Float>, items: Range<Int>,
    into out: UnsafeMutablePointer<Float>, stride: Int)
  /// About how many multiply-adds `query` costs for `user` with `recentCount` recent items
  /// (what a server weighs before choosing where a request runs).
  func queryWork(user: Int32?, recentCount: Int) -> Int
}

/// Memory that a model's tensors live in: either allocated here (a freshly trained model) or a
/// memory-mapped file (a loaded one). Kept alive by the model that points into it.
final class TensorMemory: @unchecked Sendable {
  private let allocated: UnsafeMutableRawPointer?
  private let mapped: MappedFile?

  init(byteCount: Int) {
    allocated = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 64), alignment: 64)
    mapped = nil
  }

  init(mapped: MappedFile) {
    allocated = nil
    self.mapped = mapped
  }

  deinit { allocated?.deallocate() }

  var base: UnsafeMutableRawPointer { allocated! }
}
