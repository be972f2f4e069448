import Foundation

/// One side (users or items) of a hybrid model while it trains: each entity's parameter rows
/// and weights, and the parameters: an embedding per row, a bias per row (items only), and
/// Adagrad's per-element squared-gradient sums (starting at 1, as LightFM's).
///
/// Parameter rows 0..<identities are the ids of entities 0..<identities (those with
/// interactions); the content features follow. An entity's weights sum to 1 (or it has none).
final class HybridSide: @unchecked Sendable {
  let entities: Int
  let identities: Int
  let parameters: Int
  let dim: Int
  /// Entity e's parameter rows: index[start[e]..<start[e+1]], with weights.
  let start: [Int]
  let index: [Int32]
  let weight: [Float]
  /// Where entity e's content features begin in its row (after its id, when it has one), and
  /// what their weights are scaled by when the entity is represented by its content alone (to
  /// sum to 1). An entity without content features has no content-only form: its whole row.
  let contentStart: [Int]
  let contentScale: [Float]
  let embeddings: UnsafeMutablePointer<Float>
  let embeddingSums: UnsafeMutablePointer<Float>
  let biases: UnsafeMutablePointer<Float>?
  let biasSums: UnsafeMutablePointer<Float>?

  /// `content` has a row per entity (already normalised: weights summing to 1, or empty).
  /// Embeddings start uniform in ±0.5/dim (LightFM's initialisation), biases at 0.
  init(
    content: FeatureRows, identities: Int, identityWeight: Float, dim: Int, withBiases: Bool,
    rng: inout Xoshiro256
  ) {
    entities = content.rows
    self.identities = identities
    parameters = identities + content.features
    self.dim = dim
    var start = [Int](repeating: 0, count: entities + 1)
    var index: [Int32] = []
    var weight: [Float] = []
    var contentStart = [Int](repeating: 0, count: entities)
    var contentScale = [Float](repeating: 1, count: entities)
    index.reserveCapacity(content.index.count + identities)
    weight.reserveCapacity(content.index.count + identities)
    for e in 0..<entities {
      let features = Int(content.start[e])..<Int(content.start[e + 1])
      // An entity with interactions has its id, at full weight when it has nothing else.
      let idWeight: Float = features.isEmpty ? 1 : identityWeight
      let hasIdentity = e < identities && idWeight > 0
      if hasIdentity {
        index.append(Int32(e))
        weight.append(idWeight)
      }
      let scale: Float = hasIdentity ? 1 - idWeight : 1
      contentStart[e] = features.isEmpty || scale == 0 ? start[e] : index.count
      if scale > 0 {
        for k in features {
          index.append(Int32(identities) + content.index[k])
          weight.append(content.weight[k] * scale)
        }
        contentScale[e] = 1 / scale
      }
      start[e + 1] = index.count
    }
    self.start = start
    self.index = index
    self.weight = weight
    self.contentStart = contentStart
    self.contentScale = contentScale
    let n = max(1, parameters * dim)
    embeddings = .allocate(capacity: n)
    for k in 0..<(parameters * dim) { embeddings[k] = (rng.nextFloat() - 0.5) / Float(dim) }
    embeddingSums = .allocate(capacity: n)
    embeddingSums.initialize(repeating: 1, count: n)
    if withBiases {
      biases = .allocate(capacity: max(1, parameters))
      biases!.initialize(repeating: 0, count: max(1, parameters))
      biasSums = .allocate(capacity: max(1, parameters))
      biasSums!.initialize(repeating: 1, count: max(1, parameters))
    } else {
      biases = nil
      biasSums = nil
    }
  }

  deinit {
    embeddings.deallocate()
    embeddingSums.deallocate()
    biases?.deallocate()
    biasSums?.deallocate()
  }

  /// Writes entity e's vector (the weighted sum of its rows' embeddings) to `v` and returns its
  /// bias (0 without biases).
  /// With `contentOnly`, by its content features alone (scaled to sum to 1), as an entity
  /// nobody has interacted with is represented.
  @inline(__always)
  func represent(_ e: Int, into v: UnsafeMutablePointer<Float>, contentOnly: Bool = false)
    -> Float
  {
    v.update(repeating: 0, count: dim)
    var bias: Float = 0
    let scale = contentOnly ? contentScale[e] : 1
    for k in (contentOnly ? contentStart[e] : start[e])..<start[e + 1] {
      let p = Int(index[k])
      let w = weight[k] * scale
      let row = embeddings + p * dim
      for c in 0..<dim { v[c] += w * row[c] }
      if let biases { bias += w * biases[p] }
    }
    return bias
  }

  /// One Adagrad step on entity e's rows (its content rows with `contentOnly`) for the gradient
  /// `g` of its vector and `biasGradient` of its bias: each row's share is its weight times
  /// them, plus `regularization` times the row's embedding.
  @inline(__always)
  func update(
    _ e: Int, gradient g: UnsafePointer<Float>, biasGradient: Float, learningRate: Float,
    regularization: Float, contentOnly: Bool = false
  ) {
    let scale = contentOnly ? contentScale[e] : 1
    for k in (contentOnly ? contentStart[e] : start[e])..<start[e + 1] {
      let p = Int(index[k])
      let w = weight[k] * scale
      let row = embeddings + p * dim
      let sums = embeddingSums + p * dim
      for c in 0..<dim {
        let step = w * g[c] + regularization * row[c]
        row[c] -= learningRate * step / sums[c].squareRoot()
        sums[c] += step * step
      }
      if let biases, let biasSums {
        let step = w * biasGradient
        biases[p] -= learningRate * step / biasSums[p].squareRoot()
        biasSums[p] += step * step
      }
    }
  }

  /// Every entity's vector (entities x dim) and bias.
  func materialize() -> (vectors: [Float], biases: [Float]) {
    var vectors = [Float](repeating: 0, count: entities * dim)
    var biases = [Float](repeating: 0, count: entities)
    vectors.withUnsafeMutableBufferPointer { v in
      for e in 0..<entities { biases[e] = represent(e, into: v.baseAddress! + e * dim) }
    }
    return (vectors, biases)
  }

  /// The content features' embeddings and biases (rows identities..<parameters), which place
  /// an entity that arrives later by its features alone.
  func contentParameters() -> (embeddings: [Float], biases: [Float]) {
    let count = parameters - identities
    let embeddings = Array(
      UnsafeBufferPointer(start: self.embeddings + identities * dim, count: count * dim))
    let biases =
      self.biases.map { Array(UnsafeBufferPointer(start: $0 + identities, count: count)) }
      ?? [Float](repeating: 0, count: count)
    return (embeddings, biases)
  }

  var isFinite: Bool {
    for k in 0..<(parameters * dim) where !embeddings[k].isFinite { return false }
    if let biases { for k in 0..<parameters where !biases[k].isFinite { return false } }
    return true
  }
}
