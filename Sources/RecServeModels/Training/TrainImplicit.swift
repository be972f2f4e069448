/// Hyperparameters of one of the implicit-feedback kinds: the factor models BPR and ALS, and
/// the sequence model SASRec.
public enum ImplicitModelConfig: Sendable, Equatable {
  case bpr(BPRConfig)
  case als(ALSConfig)
  case sasrec(SASRecConfig)
  /// The hybrid model, with the feature tables it trains on.
  case hybrid(HybridConfig, HybridInputs)

  /// "bpr", "als", "sasrec" or "hybrid".
  public var kind: String {
    switch self {
    case .bpr: return "bpr"
    case .als: return "als"
    case .sasrec: return "sasrec"
    case .hybrid: return "hybrid"
    }
  }

  public var seed: UInt64 {
    switch self {
    case .bpr(let c): return c.seed
    case .als(let c): return c.seed
    case .sasrec(let c): return c.seed
    case .hybrid(let c, _): return c.seed
    }
  }

  /// The latent (hidden) dimension.
  public var dim: Int {
    switch self {
    case .bpr(let c): return c.dim
    case .als(let c): return c.dim
    case .sasrec(let c): return c.dim
    case .hybrid(let c, _): return c.dim
    }
  }

  public var threads: Int {
    switch self {
    case .bpr(let c): return c.threads
    case .als(let c): return c.threads
    case .sasrec(let c): return c.threads
    case .hybrid(let c, _): return c.threads
    }
  }

  public func validate() throws {
    switch self {
    case .bpr(let c): try c.validate()
    case .als(let c): try c.validate()
    case .sasrec(let c): try c.validate()
    case .hybrid(let c, _): try c.validate()
    }
  }

  public var hyperparameters: [String: JSONValue] {
    switch self {
    case .bpr(let c): return c.hyperparameters
    case .als(let c): return c.hyperparameters
    case .sasrec(let c): return c.hyperparameters
    case .hybrid(let c, let inputs):
      var h = c.hyperparameters
      h["item_features"] = .string(inputs.items.source)
      if let users = inputs.users { h["user_features"] = .string(users.source) }
      return h
    }
  }
}

/// How the data is split for the reported ranking metrics.
public enum ImplicitSplit: Sendable, Equatable {
  /// Each user's latest interaction (by timestamp) is held out (seeded tie-break).
  case leaveLastOut
  /// A seeded random fraction of the rows is held out.
  case holdout(Double)
  /// Train on every row; no metrics.
  case none

  /// The (train, test) rows of `data` under this split; `seed` breaks timestamp ties and picks
  /// the random holdout, so the same seed gives the same split.
  public func apply(to data: Interactions, seed: UInt64) throws -> (Interactions, Interactions) {
    switch self {
    case .leaveLastOut:
      return data.leaveLastOutSplit(seed: seed)
    case .holdout(let h):
      guard h.isFinite, h >= 0, h < 1 else {
        throw TrainingError.invalidConfiguration("holdout must be in [0, 1) (got \(h))")
      }
      return data.randomSplit(holdout: h, seed: seed)
    case .none:
      return (data, data.subset(rows: EmptyCollection<Int>()))
    }
  }

  public var name: String {
    switch self {
    case .leaveLastOut: return "leave-last-out"
    case .holdout: return "holdout"
    case .none: return "none"
    }
  }
}

/// The outcome of training and publishing an implicit-feedback model version.
public struct ImplicitTrainResult: Sendable {
  public var name: String
  public var kind: String
  public var version: Int64
  public var directory: String
  /// Full-ranking metrics on the held-out rows ("ndcg@10", "hr@10", "precision@10", ...;
  /// absent with split none).
  public var metrics: [String: Double]
  public var evaluation: RankingEvaluation?
  public var trainSeconds: Double
  public var evalSeconds: Double
  /// Rows of the training split (before the threshold) and distinct positive pairs trained on.
  public var trainRows: Int
  public var positivePairs: Int
  public var testRows: Int
  public var model: any RecommendationModel
  /// The hyperparameter search, when one ran.
  public var tuning: Tuner.Result<ImplicitModelConfig>? = nil
}

/// Trains a BPR, ALS or SASRec model directly (no split, no publishing): every row of `data` is
/// positive feedback, or only rows rated at least `threshold` when given; for BPR and ALS
/// duplicate pairs are merged (their count is the strength r), for SASRec every row is a step
/// of its user's sequence (in time order).
public func trainImplicit(
  data: Interactions, config: ImplicitModelConfig, threshold: Float? = nil,
  progress: TrainingProgressHandler? = nil, isCancelled: (@Sendable () -> Bool)? = nil
) throws -> any RecommendationModel {
  try config.validate()
  let positives = data.implicitPositives(threshold: threshold)
  if positives.isEmpty {
    throw TrainingError.invalidData(
      threshold.map { "\(data.source): no interactions rated at least \($0) to train on" }
        ?? "\(data.source): no interactions to train on")
  }
  switch config {
  case .bpr(let c): return try BPRTrainer.train(positives, config: c, progress: progress)
  case .als(let c): return try ALSTrainer.train(positives, config: c, progress: progress)
  case .sasrec(let c):
    return try SASRecTrainer.train(
      positives, config: c, progress: progress, isCancelled: isCancelled)
  case .hybrid(let c, let inputs):
    return try HybridTrainer.train(
      positives, inputs: inputs, config: c, progress: progress, isCancelled: isCancelled
    ).trained.model
  }
}

/// `trainImplicit`, also returning the files a kind keeps beside the weights (the hybrid
/// model's item feature table and feature embeddings, which place items added later).
func trainImplicitWithFiles(
  data: Interactions, config: ImplicitModelConfig, threshold: Float?,
  progress: TrainingProgressHandler?, isCancelled: (@Sendable () -> Bool)?
) throws -> (model: any RecommendationModel, files: [String: [UInt8]]) {
  guard case .hybrid(let c, let inputs) = config else {
    let model = try trainImplicit(
      data: data, config: config, threshold: threshold, progress: progress,
      isCancelled: isCancelled)
    return (model, [:])
  }
  try c.validate()
  let positives = data.implicitPositives(threshold: threshold)
  if positives.isEmpty {
    throw TrainingError.invalidData("\(data.source): no interactions to train on")
  }
  let (trained, table) = try HybridTrainer.train(
    positives, inputs: inputs, config: c, progress: progress, isCancelled: isCancelled)
  return (trained.model, HybridFiles.serialized(trained, itemTable: table))
}

/// Splits `data` (leave-last-out by default, seeded by the config's seed), converts the
/// training rows to implicit feedback (`threshold`: see `trainImplicit`), trains, evaluates by
/// full ranking over every item not in the user's training history (`ks`, default 10; with a
/// threshold, only held-out rows rated at least it are relevant) and publishes the model as the
/// next version of `name`. Throws `TrainingError`, `ModelLoadError` or `DataError`.
public func trainAndPublishImplicit(
  data: consuming Interactions, config: ImplicitModelConfig, split: ImplicitSplit = .leaveLastOut,
  threshold: Float? = nil, ks: [Int] = [10], modelsDirectory: String, name: String,
  tune: Int = 0, fixed: Set<String> = [], tuneReport: ((String) -> Void)? = nil,
  progress: TrainingProgressHandler? = nil, isCancelled: (@Sendable () -> Bool)? = nil
) throws -> ImplicitTrainResult {
  try ModelStore.validateName(name)
  try config.validate()
  if let threshold, !threshold.isFinite {
    throw TrainingError.invalidConfiguration("implicit threshold must be finite (got \(threshold))")
  }
  let seed = config.seed
  // `data` is taken (consuming) and dropped once split: a caller that passes it with
  // `consume` frees it here, so that only the split halves live through training (20M rows:
  // 400 MB less with leave-last-out or a holdout).
  let dataSummary = data.summary
  let (train, test) = try split.apply(to: data, seed: seed)
  _ = consume data
  // A search only ever sees the training rows; the winner is then trained on all of them.
  var config = config
  var tuning: Tuner.Result<ImplicitModelConfig>? = nil
  if tune > 0 {
    var holdout: Double? = nil
    if case .holdout(let h) = split { holdout = h }
    let result = try Tuner.tune(
      train: train, base: config, trials: tune, holdout: holdout, threshold: threshold,
      fixed: fixed, report: tuneReport, isCancelled: isCancelled)
    config = result.best
    tuning = result
  }
  let start = monotonicSeconds()
  let (model, extraFiles) = try trainImplicitWithFiles(
    data: train, config: config, threshold: threshold, progress: progress,
    isCancelled: isCancelled)
  let trainSeconds = monotonicSeconds() - start
  let positivePairs = (model as? MFModel)?.seenCount ?? (model as? SASRecModel)?.seenCount ?? 0

  var metrics: [String: Double] = [:]
  var evaluation: RankingEvaluation? = nil
  let evalStart = monotonicSeconds()
  if !test.isEmpty {
    let e = RankingEvaluator.evaluate(
      model: model, train: train, test: test,
      config: RankingEvaluationConfig(
        ks: ks, fullRanking: true, sampled: true, seed: seed, threads: max(1, config.threads),
        relevanceThreshold: threshold))
    metrics = e.metrics
    evaluation = e
  }
  let evalSeconds = monotonicSeconds() - evalStart

  let manifest = implicitManifest(
    name: name, config: config, tuning: tuning, threshold: threshold, split: split, seed: seed,
    data: dataSummary, train: train, test: test, positivePairs: positivePairs,
    evaluation: evaluation, metrics: metrics, trainSeconds: trainSeconds)
  let (version, directory) = try ModelStore.publish(
    model, manifest: manifest, modelsDirectory: modelsDirectory, name: name,
    extraFiles: extraFiles)
  return ImplicitTrainResult(
    name: name, kind: config.kind, version: version, directory: directory, metrics: metrics,
    evaluation: evaluation, trainSeconds: trainSeconds, evalSeconds: evalSeconds,
    trainRows: train.count, positivePairs: positivePairs, testRows: test.count, model: model,
    tuning: tuning)
}

/// model.json for an implicit version: the settings (with the search and the threshold), the
/// data and its split, the evaluation's counts and metrics.
func implicitManifest(
  name: String, config: ImplicitModelConfig, tuning: Tuner.Result<ImplicitModelConfig>?,
  threshold: Float?, split: ImplicitSplit, seed: UInt64, data dataSummary: DataSummary,
  train: Interactions, test: Interactions, positivePairs: Int, evaluation: RankingEvaluation?,
  metrics: [String: Double], trainSeconds: Double
) -> ModelManifest {
  var trainingData = dataSummary.jsonObject
  trainingData["split"] = .string(split.name)
  if case .holdout(let h) = split { trainingData["holdout"] = .double(h) }
  trainingData["split_seed"] = .int(Int64(bitPattern: seed))
  trainingData["train_rows"] = .int(Int64(train.count))
  trainingData["test_rows"] = .int(Int64(test.count))
  trainingData["implicit"] = .string(
    threshold.map { "rating >= \($0)" } ?? "every interaction positive")
  if let evaluation {
    for (k, v) in evaluation.counts { trainingData["eval_\(k)"] = .int(Int64(v)) }
  }
  var hyper = config.hyperparameters
  if let tuning { hyper["tuning"] = tuning.json(settings: \.hyperparameters) }
  if let threshold {
    hyper["implicit_threshold"] = .double(Double("\(threshold)") ?? Double(threshold))
  }
  var manifest = ModelManifest(
    kind: config.kind, name: name, hyperparameters: hyper,
    counts: [
      "train_interactions": .int(Int64(train.count)),
      "test_interactions": .int(Int64(test.count)),
      "positive_pairs": .int(Int64(positivePairs)),
    ], trainingData: trainingData, metrics: metrics, trainSeconds: trainSeconds)
  manifest.ratingRange = nil
  return manifest
}
