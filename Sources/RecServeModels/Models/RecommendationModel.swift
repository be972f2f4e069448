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
