/// Hyperparameters of SASRec (Kang and McAuley, "Self-Attentive Sequential Recommendation",
/// ICDM 2018). The defaults are the paper's and the authors' code's.
public struct SASRecConfig: Sendable, Equatable {
  /// Hidden size d: item and position embeddings, attention and feed-forward width.
  public var dim: Int
  /// Window length: a sequence keeps its last `maxlen` items.
  public var maxlen: Int
  /// Self-attention blocks.
  public var blocks: Int
  /// Attention heads; must divide `dim`.
  public var heads: Int
  /// Dropout rate on the embeddings, the attention weights and both feed-forward layers.
  public var dropout: Float
  public var learningRate: Float
  /// Users (sequences) per optimizer step.
  public var batchSize: Int
  /// Epochs; each visits every user with at least two interactions once.
  public var epochs: Int
  public var seed: UInt64
  /// Worker threads; each takes part of every batch (data parallel).
  public var threads: Int
  /// Adam's moment decays (the authors use 0.9 and 0.98).
  public var beta1: Float
  public var beta2: Float
  public var adamEpsilon: Float
  /// Layer normalisation's epsilon (1e-8 as the authors' code).
  public var layerNormEpsilon: Float

  public init(
    dim: Int = 50, maxlen: Int = 200, blocks: Int = 2, heads: Int = 1, dropout: Float = 0.2,
    learningRate: Float = 0.001, batchSize: Int = 128, epochs: Int = 200, seed: UInt64 = 42,
    threads: Int = 2, beta1: Float = 0.9, beta2: Float = 0.98, adamEpsilon: Float = 1e-8,
    layerNormEpsilon: Float = 1e-8
  ) {
    self.dim = dim
    self.maxlen = maxlen
    self.blocks = blocks
    self.heads = heads
    self.dropout = dropout
    self.learningRate = learningRate
    self.batchSize = batchSize
    self.epochs = epochs
    self.seed = seed
    self.threads = threads
    self.beta1 = beta1
    self.beta2 = beta2
    self.adamEpsilon = adamEpsilon
    self.layerNormEpsilon = layerNormEpsilon
  }

  public func validate() throws {
    func bad(_ m: String) -> TrainingError { .invalidConfiguration(m) }
    if dim < 1 || dim > 1024 { throw bad("dim must be in 1...1024 (got \(dim))") }
    if maxlen < 1 || maxlen > 2048 { throw bad("maxlen must be in 1...2048 (got \(maxlen))") }
    if blocks < 1 || blocks > 16 { throw bad("blocks must be in 1...16 (got \(blocks))") }
    if heads < 1 || heads > dim || dim % heads != 0 {
      throw bad("heads must divide dim (\(dim)); got \(heads)")
    }
    if !(dropout >= 0 && dropout < 1) { throw bad("dropout must be in [0, 1) (got \(dropout))") }
    if !(learningRate > 0) || !learningRate.isFinite || learningRate > 1 {
      throw bad("lr must be a positive number up to 1 (got \(learningRate))")
    }
    if batchSize < 1 || batchSize > 65536 {
      throw bad("batch size must be in 1...65536 (got \(batchSize))")
    }
    if epochs < 1 || epochs > 100_000 { throw bad("epochs must be in 1...100000 (got \(epochs))") }
    if threads < 1 || threads > 256 { throw bad("threads must be in 1...256 (got \(threads))") }
    if !(beta1 >= 0 && beta1 < 1) { throw bad("beta1 must be in [0, 1) (got \(beta1))") }
    if !(beta2 >= 0 && beta2 < 1) { throw bad("beta2 must be in [0, 1) (got \(beta2))") }
    if !(adamEpsilon > 0) || !adamEpsilon.isFinite {
      throw bad("Adam epsilon must be a positive number (got \(adamEpsilon))")
    }
    if !(layerNormEpsilon > 0) || !layerNormEpsilon.isFinite {
      throw bad("layer norm epsilon must be a positive number (got \(layerNormEpsilon))")
    }
  }

  /// For model.json.
  public var hyperparameters: [String: JSONValue] {
    func d(_ x: Float) -> JSONValue { .double(Double("\(x)") ?? Double(x)) }
    return [
      "dim": .int(Int64(dim)), "maxlen": .int(Int64(maxlen)), "blocks": .int(Int64(blocks)),
      "heads": .int(Int64(heads)), "dropout": d(dropout), "lr": d(learningRate),
      "batch_size": .int(Int64(batchSize)), "epochs": .int(Int64(epochs)),
      "seed": .int(Int64(bitPattern: seed)), "optimizer": .string("adam"),
      "beta1": d(beta1), "beta2": d(beta2), "adam_epsilon": d(adamEpsilon),
      "layer_norm_eps": d(layerNormEpsilon), "threads": .int(Int64(threads)),
      "loss": .string("bce, one sampled negative per position"),
    ]
  }
}
