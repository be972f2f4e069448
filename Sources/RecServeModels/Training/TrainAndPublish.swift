/// The outcome of training and publishing a model version.
public struct TrainResult: Sendable {
  public var name: String
  public var kind: String
  public var version: Int64
  /// The published version folder.
  public var directory: String
  /// "rmse" and "mae" on the held-out rows (absent with holdout 0), "train_rmse" and
  /// "train_mae" on the rows the model was fitted on, "epochs_run"; with early stopping also
  /// "stopped_epoch", "best_epoch" (the one returned) and "validation_rmse" (its RMSE on the
  /// validation slice).
  public var metrics: [String: Double]
  /// The held-out evaluation, when there was a holdout.
  public var evaluation: RatingEvaluation?
  public var trainSeconds: Double
  public var trainRows: Int
  public var testRows: Int
  public var model: MFModel
  /// The hyperparameter search, when one ran.
  public var tuning: Tuner.Result<MFConfig>? = nil
}

/// Splits `data` (seeded by `config.seed`; `holdout` 0 trains on every row), trains an MF model,
/// evaluates it on the held-out rows. With `config.earlyStoppingPatience`, a seeded
/// `config.validationFraction` of the training split is set aside as the validation rows that
/// pick the epoch (the held-out test rows never influence the model), and the model is fitted on
/// the rest. It and publishes it as the next version of `name` under
/// `modelsDirectory`. The server calls this to train the demo model, and the Train RPC with
/// inline or file data. With `tune` > 0, a search (`Tuner.tune`) on the training split picks
/// the settings first (`fixed`: settings the user chose, which it keeps). Throws
/// `TrainingError`, `ModelLoadError` (bad name, I/O) or `DataError`.
public func trainAndPublishMF(
  data: consuming Interactions, config: MFConfig = MFConfig(), holdout: Double = 0.1,
  modelsDirectory: String, name: String, tune: Int = 0, fixed: Set<String> = [],
  tuneReport: ((String) -> Void)? = nil, progress: TrainingProgressHandler? = nil,
  isCancelled: (@Sendable () -> Bool)? = nil
) throws -> TrainResult {
  try ModelStore.validateName(name)
  try config.validate()
  guard holdout.isFinite, holdout >= 0, holdout < 1 else {
    throw TrainingError.invalidConfiguration("holdout must be in [0, 1) (got \(holdout))")
  }
  // `data` is taken (consuming) and dropped once split: a caller that passes it with
  // `consume` frees it here, so that only the split halves live through training (20M rows:
  // 400 MB less with leave-last-out or a holdout).
  let dataSummary = data.summary
  let source = data.source
  let (train, test) = data.randomSplit(holdout: holdout, seed: config.seed)
  _ = consume data
  if train.isEmpty {
    throw TrainingError.invalidData("\(source): no training rows left after the holdout")
  }
  // A search only ever sees the training rows; the winner is then trained on all of them.
  var config = config
  var tuning: Tuner.Result<MFConfig>? = nil
  if tune > 0 {
    let result = try Tuner.tune(
      train: train, base: config, trials: tune, fixed: fixed, report: tuneReport,
      isCancelled: isCancelled)
    config = result.best
    tuning = result
  }
  var fit = train
  var validation: Interactions? = test.isEmpty ? nil : test
  if config.earlyStoppingPatience != nil {
    let (f, v) = train.randomSplit(
      holdout: config.validationFraction, seed: config.seed &+ 0x5EED_0FF5E7)
    if f.isEmpty || v.isEmpty {
      throw TrainingError.invalidData(
        "\(source): too few training rows (\(train.count)) to set aside a validation slice for early stopping"
      )
    }
    fit = f
    validation = v
  }
  let start = monotonicSeconds()
  let (fitted, summary) = try MFTrainer.trainWithSummary(
    fit, config: config, validation: validation, progress: progress)
  let trainSeconds = monotonicSeconds() - start
  // The validation slice is still part of the users' history (exclude_seen, popularity).
  let model = fit.count == train.count ? fitted : fitted.withHistory(from: train)

  let (metrics, evaluation) = mfMetrics(
    model, summary: summary, config: config, fit: fit, test: test)
  var trainingData = dataSummary.jsonObject
  trainingData["holdout"] = .double(holdout)
  trainingData["split_seed"] = .int(Int64(bitPattern: config.seed))
  trainingData["train_rows"] = .int(Int64(fit.count))
  if config.earlyStoppingPatience != nil, let validation {
    trainingData["validation_rows"] = .int(Int64(validation.count))
  }
  trainingData["test_rows"] = .int(Int64(test.count))
  if let evaluation {
    trainingData["test_unknown_pairs"] = .int(Int64(evaluation.unknownPairs))
  }
  var hyper = config.hyperparameters
  if let tuning { hyper["tuning"] = tuning.json(settings: \.hyperparameters) }
  var manifest = ModelManifest(
    kind: "mf", name: name, hyperparameters: hyper,
    counts: ["train_interactions": .int(Int64(fit.count))], trainingData: trainingData,
    metrics: metrics, trainSeconds: trainSeconds, ratingRange: model.ratingRange)
  manifest.counts["test_interactions"] = .int(Int64(test.count))
  let (version, directory) = try ModelStore.publish(
    model, manifest: manifest, modelsDirectory: modelsDirectory, name: name)
  return TrainResult(
    name: name, kind: "mf", version: version, directory: directory, metrics: metrics,
    evaluation: evaluation, trainSeconds: trainSeconds, trainRows: fit.count,
    testRows: test.count, model: model, tuning: tuning)
}

/// An MF version's metrics: epochs (and the early-stopping epochs), the errors on the rows it
/// was fitted on, and on the held-out rows when there are some (also returned in full).
func mfMetrics(
  _ model: MFModel, summary: MFTrainingSummary, config: MFConfig, fit: Interactions,
  test: Interactions
) -> ([String: Double], RatingEvaluation?) {
  var metrics: [String: Double] = ["epochs_run": Double(summary.epochsRun)]
  if config.earlyStoppingPatience != nil {
    if let e = summary.bestEpoch { metrics["best_epoch"] = Double(e) }
    metrics["stopped_epoch"] = Double(summary.epochsRun)
    if let r = summary.bestValidationRMSE { metrics["validation_rmse"] = r }
  }
  let trainEval = RatingMetrics.evaluate(model: model, on: fit)
  metrics["train_rmse"] = trainEval.rmse
  metrics["train_mae"] = trainEval.mae
  guard !test.isEmpty else { return (metrics, nil) }
  let evaluation = RatingMetrics.evaluate(model: model, on: test)
  metrics["rmse"] = evaluation.rmse
  metrics["mae"] = evaluation.mae
  return (metrics, evaluation)
}

extension DataSummary {
  var jsonObject: [String: JSONValue] {
    [
      "source": .string(source), "rows": .int(Int64(rows)), "users": .int(Int64(users)),
      "items": .int(Int64(items)), "skipped_lines": .int(Int64(skippedLines)),
      "rating_min": .double(ratingMin), "rating_max": .double(ratingMax),
      "rating_mean": .double(ratingMean), "timestamp_min": .int(timestampMin),
      "timestamp_max": .int(timestampMax),
    ]
  }
}
