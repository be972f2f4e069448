/// Hyperparameters of the hybrid (content + collaborative) model, LightFM's model (Kula, 2015):
/// a user's and an item's vector are weighted sums of embeddings of their features, an item's
/// features being its content features plus its own id when it has interactions.
public struct HybridConfig: Sendable, Equatable {
  public enum Loss: String, Sendable, Equatable, CaseIterable {
    /// Weighted Approximate-Rank Pairwise (Weston et al., 2011): negatives are drawn until one
    /// scores within 1 of the positive, and the step is weighted by log(items / draws), an
    /// estimate of how far down the positive ranks. Best for top-K ranking.
    case warp
    /// Bayesian Personalised Ranking: one uniform negative a step, weighted by σ(neg − pos).
    case bpr
  }

  /// Embedding dimension.
  public var dim: Int
  /// Epochs; each visits every distinct positive pair once, in a seeded random order. 40, not
  /// LightFM's customary 30: on MovieLens (6 seeds, Benchmarks/hybrid_vs_lightfm.py) warm items
  /// went from 0.980x BPR's NDCG@10 to 0.996-1.022x, cold items unchanged (0.151-0.153).
  public var epochs: Int
  /// Adagrad's base learning rate (per-element accumulators start at 1, as LightFM's).
  public var learningRate: Float
  public var loss: Loss
  /// WARP: negatives drawn at most per positive before giving up on it.
  public var maxSampled: Int
  /// L2 penalty on the item-side and user-side embeddings a step touches (LightFM's
  /// item_alpha / user_alpha; 0 by default as there).
  public var itemRegularization: Float
  public var userRegularization: Float
  /// Weight of an item's own id feature against its content features (which together weigh
  /// 1 − this); an item without interactions, or without content features, has only the
  /// other kind at weight 1.
  public var identityWeight: Float
  /// The share of steps in which the items are represented by their content features alone,
  /// as items nobody has touched are (dropout of the id, as DropoutNet does), on pairs drawn
  /// uniformly (not by recency): the content then learns to rank on its own, which is what
  /// ranks new items. On MovieLens with a tenth of the movies held out (3 seeds,
  /// Benchmarks/hybrid_vs_lightfm.py), 0.1 to 0.5 all put cold-item NDCG@10 at 0.167-0.175
  /// (LightFM's best 0.160; 0.132 without dropout); warm items, level with BPR within the
  /// run-to-run noise at 0.1 and 0.3 (0.041-0.045 against BPR's 0.040-0.044), did best at 0.1
  /// with identity weight 0.6 (0.0447), and 0.7 costs them 10%.
  public var contentDropout: Float
  /// Recent interactions weigh more, as BPR's (see `BPRConfig.recencyBoost`): positive pairs
  /// are drawn in proportion to 1 + recencyBoost·2^(−p / h) instead of each once an epoch.
  public var recencyBoost: Float
  /// The recency weight's half-life, as a fraction of each user's history.
  public var recencyHalfLife: Float
  public var seed: UInt64
  /// Hogwild threads (lock-free); deterministic for a seed only with 1.
  public var threads: Int

  public init(
    dim: Int = 64, epochs: Int = 40, learningRate: Float = 0.05, loss: Loss = .warp,
    maxSampled: Int = 10, itemRegularization: Float = 0, userRegularization: Float = 0,
    identityWeight: Float = 0.6, contentDropout: Float = 0.1, recencyBoost: Float = 20,
    recencyHalfLife: Float = 0.1,
    seed: UInt64 = 42, threads: Int = 2
  ) {
    self.dim = dim
    self.epochs = epochs
    self.learningRate = learningRate
    self.loss = loss
    self.maxSampled = maxSampled
    self.itemRegularization = itemRegularization
    self.userRegularization = userRegularization
    self.identityWeight = identityWeight
    self.contentDropout = contentDropout
    self.recencyBoost = recencyBoost
    self.recencyHalfLife = recencyHalfLife
    self.seed = seed
    self.threads = threads
  }

  public func validate() throws {
    func bad(_ m: String) -> TrainingError { .invalidConfiguration(m) }
    if dim < 1 || dim > 4096 { throw bad("dim must be in 1...4096 (got \(dim))") }
    if epochs < 1 || epochs > 100_000 { throw bad("epochs must be in 1...100000 (got \(epochs))") }
    if !(learningRate > 0) || !learningRate.isFinite || learningRate > 10 {
      throw bad("lr must be a positive number up to 10 (got \(learningRate))")
    }
    if maxSampled < 1 || maxSampled > 10_000 {
      throw bad("max_sampled must be in 1...10000 (got \(maxSampled))")
    }
    for (name, value) in [("item_reg", itemRegularization), ("user_reg", userRegularization)]
    where !(value >= 0) || !value.isFinite {
      throw bad("\(name) must be a finite number >= 0 (got \(value))")
    }
    if !(identityWeight >= 0) || !(identityWeight <= 1) {
      throw bad("identity_weight must be in [0, 1] (got \(identityWeight))")
    }
    if threads < 1 || threads > 256 { throw bad("threads must be in 1...256 (got \(threads))") }
    if !(contentDropout >= 0) || !(contentDropout <= 1) {
      throw bad("content_dropout must be in [0, 1] (got \(contentDropout))")
    }
    try validateRecency(boost: recencyBoost, halfLife: recencyHalfLife)
  }

  /// For model.json.
  public var hyperparameters: [String: JSONValue] {
    func d(_ x: Float) -> JSONValue { .double(Double("\(x)") ?? Double(x)) }
    return [
      "dim": .int(Int64(dim)), "epochs": .int(Int64(epochs)), "lr": d(learningRate),
      "loss": .string(loss.rawValue), "max_sampled": .int(Int64(maxSampled)),
      "item_reg": d(itemRegularization), "user_reg": d(userRegularization),
      "identity_weight": d(identityWeight), "content_dropout": d(contentDropout),
      "optimizer": .string("adagrad"),
      "recency_boost": d(recencyBoost), "recency_half_life": d(recencyHalfLife),
      "seed": .int(Int64(bitPattern: seed)), "threads": .int(Int64(threads)),
    ]
  }
}
