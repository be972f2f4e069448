import ArgumentParser
import Foundation
import RecServeModels

/// `recserve train`: load a ratings file, split, train, evaluate, publish a new version.
struct TrainCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "train",
    abstract: "Train a model on a ratings file and publish it as a new version.",
    discussion: """
      Loads FILE (MovieLens u.data, ratings.csv, or any CSV/TSV with user, item, rating and \
      timestamp columns), holds out rows for evaluation (--split: mf holds out a random \
      fraction, --holdout 0.1; bpr, als and sasrec each user's latest row), trains on the rest, \
      and publishes the model atomically as DIR/NAME/<next version>. Prints the \
      version and its metrics (one JSON object with --json); per-epoch progress goes to stderr.
      """)

  @Option(help: "Ratings file: MovieLens u.data, ratings.csv, or CSV/TSV.")
  var data: String?

  @Option(
    name: .customLong("events"),
    help: ArgumentHelp(
      "Train on the event log in DIR (a server's --events-dir; each event a row, its value the rating), after the rows of --data when given.",
      valueName: "DIR"))
  var eventsDirectory: String?

  @Option(
    name: .customLong("event-types"),
    help: "With --events: only these event types, comma-separated (default: all).")
  var eventTypes: String?

  @Option(
    help: """
      Model kind: mf (explicit ratings), bpr or als (implicit feedback, factor models), \
      sasrec (implicit feedback, a self-attention model of each user's sequence in time order), \
      or hybrid (implicit feedback plus item features, --item-features: items nobody has \
      touched yet are ranked by their features).
      """)
  var kind: String = "mf"

  @Option(
    name: .customLong("item-features"),
    help: """
      hybrid: item feature file, CSV with a header whose first column is the item id (e.g. \
      MovieLens movies.csv); see `recserve features`. Items only in this file join the model \
      as new items.
      """)
  var itemFeatures: String?

  @Option(
    name: .customLong("user-features"),
    help: "hybrid: user feature file, CSV with a header whose first column is the user id.")
  var userFeatures: String?

  @Option(
    name: .customLong("feature-types"),
    help: """
      hybrid: item feature column types overriding inference, e.g. genres:multi,title:text \
      (categorical, multi, numeric, text, ignore).
      """)
  var featureTypes: String?

  @Option(
    name: .customLong("user-feature-types"),
    help: "hybrid: user feature column types overriding inference (as --feature-types).")
  var userFeatureTypes: String?

  @Option(help: "hybrid: warp (default) or bpr.")
  var loss: String?

  @Option(
    name: .customLong("identity-weight"),
    help: "hybrid: an item's id against its features, in [0, 1] (default 0.6).")
  var identityWeight: Float?

  @Option(
    name: .customLong("content-dropout"),
    help:
      "hybrid: share of steps that see the items by their content alone, as new items are (default 0.1)."
  )
  var contentDropout: Float?

  @Option(
    name: .customLong("max-sampled"),
    help: "hybrid warp: negatives drawn at most per positive (default 10).")
  var maxSampled: Int?

  @Option(help: "Model name (letters, digits, '.', '_', '-').")
  var name: String

  @Option(help: "Models directory.")
  var models: String

  @Option(
    name: [.customLong("dim"), .customLong("factors")], help: "Latent dimension (default 64).")
  var dim: Int?

  @Option(
    name: [.customLong("epochs"), .customLong("iterations")],
    help: "Training epochs (mf 20, bpr 100, sasrec 200, hybrid 40) or ALS iterations (15).")
  var epochs: Int?

  @Option(help: "sasrec: a sequence keeps its last N items (default 200).")
  var maxlen: Int?

  @Option(help: "sasrec: self-attention blocks (default 2).")
  var blocks: Int?

  @Option(help: "sasrec: attention heads; must divide --dim (default 1).")
  var heads: Int?

  @Option(help: "sasrec: dropout rate in [0, 1) (default 0.2).")
  var dropout: Float?

  @Option(
    name: .customLong("batch-size"), help: "sasrec: users (sequences) per Adam step (default 128).")
  var batchSize: Int?

  @Option(help: "Random seed for the split, initialisation and shuffling.")
  var seed: UInt64 = 42

  @Option(
    help: """
      Fraction of rows held out at random for the reported metrics (mf default 0.1). 0 holds \
      out nothing, for every kind (the same as --split none); a fraction on bpr/als/sasrec \
      means --split holdout.
      """)
  var holdout: Double?

  @Option(
    help: """
      Evaluation split: holdout (--holdout of the rows at random; mf's default), leave-last-out \
      (each user's latest row; bpr/als default, ranking metrics), or none.
      """)
  var split: String?

  @Option(
    help: """
      mf/bpr/als: try N hyperparameter settings (the defaults and N-1 drawn at random; \
      successive halving, each scored on a validation split of the training rows, never the \
      held-out ones: NDCG@10 for bpr/als, RMSE for mf) and train the best; settings given on \
      the command line stay fixed. The search is recorded in model.json.
      """)
  var tune: Int?

  @Option(help: "ALS confidence weight: c = 1 + alpha * r (default 1, chosen across 5 data sets).")
  var alpha: Float?

  @Option(
    name: .customLong("popularity-exponent"),
    help: """
      ALS: weigh a missing (user, item) pair by the item's popularity to this power, scaled to \
      mean 1 (eALS, He et al. 2016); 0 weighs every missing pair 1 as implicit does.
      """)
  var popularityExponent: Float?

  @Option(
    name: .customLong("reg-exponent"),
    help: """
      ALS: regularise a user or item with n interactions by reg * (n / mean n)^this (ALS-WR); \
      0 (default) gives every row the same reg, as implicit does.
      """)
  var regExponent: Float?

  @Option(
    name: .customLong("recency-boost"),
    help: """
      BPR, ALS and hybrid: weigh a user's recent interactions up: the one p interactions before the latest \
      counts 1 + boost * 2^(-p / h), h = --recency-half-life x the user's history (default: \
      bpr 20, als 10, chosen across 5 data sets; 0 weighs every interaction the same).
      """)
  var recencyBoost: Float?

  @Option(
    name: .customLong("recency-half-life"),
    help:
      "BPR, ALS and hybrid: the recency weight's half-life, a fraction of each user's history (default 0.1)."
  )
  var recencyHalfLife: Float?

  @Option(
    name: .customLong("negative-sampling"),
    help: "BPR negatives: uniform (default) or popularity (as the implicit library).")
  var negativeSampling: String?

  @Option(
    name: .customLong("negative-candidates"),
    help: """
      BPR: draw this many negatives per step and use the one scored highest (dynamic negative \
      sampling; default 3, 1 is plain BPR as the implicit library).
      """)
  var negativeCandidates: Int?

  @Flag(
    name: .customLong("no-item-bias"),
    help: "BPR: no item-bias column (by default one extra factor column holds it, as implicit).")
  var noItemBias = false

  @Option(name: .customLong("cg-steps"), help: "ALS conjugate-gradient steps per row (default 3).")
  var cgSteps: Int?

  @Option(
    name: .customLong("implicit-threshold"),
    help: "bpr/als: only rows rated at least this are positive (default: every row).")
  var implicitThreshold: Float?

  @Option(help: "mf optimizer: sgd (default) or adam (sparse Adam, per-row bias correction).")
  var optimizer: String?

  @Option(name: .customLong("beta1"), help: "mf Adam: first-moment decay (default 0.9).")
  var beta1: Float?

  @Option(name: .customLong("beta2"), help: "mf Adam: second-moment decay (default 0.999).")
  var beta2: Float?

  @Option(
    name: .customLong("early-stopping"),
    help: """
      mf: stop after N epochs without a lower validation RMSE and publish the best epoch's \
      model. The validation rows are --validation-fraction of the training rows, never the \
      held-out ones.
      """)
  var earlyStopping: Int?

  @Option(
    name: .customLong("validation-fraction"),
    help: "mf with --early-stopping: fraction of the training rows used for validation (0.1).")
  var validationFraction: Double?

  @Option(help: "Initial learning rate (mf sgd 0.03, mf adam 0.002, bpr 0.05, sasrec 0.001).")
  var lr: Float?

  @Option(help: "L2 regularisation of the factors (mf 0.05, bpr 0.01, als 20).")
  var reg: Float?

  @Option(name: .customLong("reg-bias"), help: "L2 regularisation of the biases (default 0.05).")
  var regBias: Float?

  @Option(name: .customLong("lr-decay"), help: "Learning-rate factor per epoch (default 0.97).")
  var lrDecay: Float?

  @Option(
    name: .customLong("init-std"), help: "Standard deviation of initial factors (default 0.01).")
  var initStd: Float?

  @Option(
    help: "Training threads (mf: deterministic at any count, default 1; bpr/als/sasrec default 2).")
  var threads: Int?

  @OptionGroup var dataOptions: DataFileOptions

  @Flag(help: "Print one JSON object instead of text.")
  var json = false

  @Flag(help: "No per-epoch progress on stderr (--progress none).")
  var quiet = false

  @Option(
    help: """
      Per-epoch progress on stderr: auto (a bar redrawn in place when stderr is a terminal, \
      else one line per epoch), bar, plain or none.
      """)
  var progress: ProgressReporter.Mode = .auto

  /// The settings given on the command line, which a search (--tune) keeps as they are (a
  /// kind's search ignores the names it does not search).
  var fixedSettings: Set<String> {
    let given: [(String, Bool)] = [
      ("optimizer", optimizer != nil), ("lr", lr != nil), ("reg", reg != nil), ("dim", dim != nil),
      ("epochs", epochs != nil), ("alpha", alpha != nil),
      ("negative_candidates", negativeCandidates != nil),
      ("negative_sampling", negativeSampling != nil), ("recency_boost", recencyBoost != nil),
      ("recency_half_life", recencyHalfLife != nil), ("item_reg", reg != nil),
      ("loss", loss != nil), ("identity_weight", identityWeight != nil),
      ("content_dropout", contentDropout != nil),
    ]
    return Set(given.filter(\.1).map(\.0))
  }

  func run() throws {
    do {
      try execute()
    } catch let e as ExitCode {
      throw e
    } catch {
      throw CLI.failure(error)
    }
  }

  /// The split a training uses, from `--split` and `--holdout` together: `--holdout 0` holds
  /// out nothing for every kind, a fraction on an implicit kind asks for a random holdout, and a
  /// combination that says two different things is refused rather than half obeyed.
  static func resolveSplit(kind: String, split: String?, holdout: Double?) throws -> String {
    let implicit = kind != "mf"
    guard let holdout else { return split ?? (implicit ? "leave-last-out" : "holdout") }
    switch split {
    case nil:
      return holdout == 0 ? "none" : "holdout"
    case "holdout":
      if holdout == 0 {
        throw ValidationError(
          "--split holdout with --holdout 0 holds out nothing: use --split none, or a fraction")
      }
      return "holdout"
    case "none":
      if holdout > 0 {
        throw ValidationError(
          "--split none holds out nothing, but --holdout \(holdout) asks for a fraction: drop one")
      }
      return "none"
    default:
      throw ValidationError(
        "--holdout sets a random holdout, but --split \(split!) holds out each user's latest row: drop --holdout, or use --split holdout"
      )
    }
  }

  private func execute() throws {
    let split = try checkedSplit()
    if kind == "bpr" || kind == "als" || kind == "sasrec" || kind == "hybrid" {
      try executeImplicit(split: split)
      return
    }
    if split == "leave-last-out" {
      throw ValidationError("--split leave-last-out is for bpr and als; mf uses --holdout")
    }
    let effectiveHoldout = split == "none" ? 0 : holdout ?? 0.1
    let config = try mfConfig()
    try ModelStore.validateName(name)

    let (interactions, loadSeconds) = try loadData()
    let rowCount = interactions.count
    let skippedLines = interactions.skippedLines
    let reporter = progressReporter(metrics: [
      ("rmse", config.earlyStoppingPatience != nil ? "validation rmse" : "holdout rmse")
    ])
    defer { reporter.finish() }
    let result = try trainAndPublishMF(
      data: consume interactions, config: config, holdout: effectiveHoldout,
      modelsDirectory: models, name: name, tune: tune ?? 0, fixed: fixedSettings,
      tuneReport: tuneReport, progress: reporter.report)
    reporter.finish()  // before the results on stdout; the defer covers errors
    let trained = result.tuning?.best ?? config

    printMF(
      result, trained: trained, holdout: effectiveHoldout, rows: rowCount,
      skippedLines: skippedLines, loadSeconds: loadSeconds, epochs: config.epochs)
  }

  /// The options checked together; returns the split (resolved from --split and --holdout).
  private func checkedSplit() throws -> String {
    guard ["mf", "bpr", "als", "sasrec", "hybrid"].contains(kind) else {
      throw ValidationError("unknown --kind '\(kind)' (expected mf, bpr, als, sasrec or hybrid)")
    }
    try checkHybridOptions()
    if let holdout, !(holdout.isFinite && holdout >= 0 && holdout < 1) {
      throw ValidationError("--holdout must be in [0, 1) (got \(holdout))")
    }
    if let split, !["holdout", "leave-last-out", "none"].contains(split) {
      throw ValidationError(
        "unknown --split '\(split)' (expected holdout, leave-last-out or none)")
    }
    let split = try Self.resolveSplit(kind: kind, split: split, holdout: holdout)
    if kind != "sasrec" {
      for (flag, set) in [
        ("--maxlen", maxlen != nil), ("--blocks", blocks != nil), ("--heads", heads != nil),
        ("--dropout", dropout != nil), ("--batch-size", batchSize != nil),
      ] where set {
        throw ValidationError("\(flag) is for --kind sasrec")
      }
    }
    if let tune {
      guard kind != "sasrec" else {
        throw ValidationError("--tune is for --kind mf, bpr, als and hybrid (got \(kind))")
      }
      guard (1...200).contains(tune) else {
        throw ValidationError("--tune must be in 1...200 trials (got \(tune))")
      }
    }
    return split
  }

  /// MF's settings from the options, checked.
  private func mfConfig() throws -> MFConfig {
    var config = MFConfig()
    if let optimizer {
      guard let o = MFConfig.Optimizer(rawValue: optimizer) else {
        throw ValidationError("unknown --optimizer '\(optimizer)' (expected sgd or adam)")
      }
      config.use(o)
    }
    if let beta1 { config.beta1 = beta1 }
    if let beta2 { config.beta2 = beta2 }
    if let earlyStopping { config.earlyStoppingPatience = earlyStopping }
    if let validationFraction { config.validationFraction = validationFraction }
    if let dim { config.dim = dim }
    if let epochs { config.epochs = epochs }
    if let lr { config.learningRate = lr }
    if let reg { config.regularization = reg }
    if let regBias { config.biasRegularization = regBias }
    if let lrDecay { config.learningRateDecay = lrDecay }
    if let initStd { config.initStd = initStd }
    if let threads { config.threads = threads }
    config.seed = seed
    try config.validate()
    return config
  }

  private func printMF(
    _ result: TrainResult, trained: MFConfig, holdout effectiveHoldout: Double, rows rowCount: Int,
    skippedLines: Int, loadSeconds: Double, epochs: Int
  ) {
    if json {
      var metrics: [String: JSONValue] = [
        "rmse": result.metrics["rmse"].map(JSONValue.double) ?? .null,
        "mae": result.metrics["mae"].map(JSONValue.double) ?? .null,
      ]
      for (k, v) in result.metrics where metrics[k] == nil { metrics[k] = .double(v) }
      let out: JSONValue = .object([
        "name": .string(result.name),
        "version": .int(result.version),
        "kind": .string(result.kind),
        "directory": .string(result.directory),
        "split": .string(effectiveHoldout > 0 ? "holdout" : "none"),
        "holdout": .double(effectiveHoldout),
        "metrics": .object(metrics),
        "train_seconds": .double(result.trainSeconds),
        "load_seconds": .double(loadSeconds),
        "rows": .int(Int64(rowCount)),
        "train_rows": .int(Int64(result.trainRows)),
        "test_rows": .int(Int64(result.testRows)),
        "unknown_pairs": .int(Int64(result.evaluation?.unknownPairs ?? 0)),
        "users": .int(Int64(result.model.userCount)),
        "items": .int(Int64(result.model.itemCount)),
        "skipped_lines": .int(Int64(skippedLines)),
        "hyperparameters": .object(trained.hyperparameters),
        "tuning": result.tuning?.json(settings: \.hyperparameters) ?? .null,
      ])
      print(out.serialized(pretty: false))
    } else {
      print(
        "published \(result.kind) model '\(result.name)' version \(result.version) (\(result.directory))"
      )
      print(
        "  data: \(rowCount) rows (\(result.trainRows) train, \(result.testRows) held out), \(result.model.userCount) users, \(result.model.itemCount) items"
      )
      if let e = result.evaluation {
        print(
          "  held out: rmse \(CLI.fmt(e.rmse))  mae \(CLI.fmt(e.mae))  (\(e.count) ratings, \(e.unknownPairs) with an unknown user or item)"
        )
      } else {
        print("  held out: none (--split none); evaluate with `recserve eval`")
      }
      print(
        "  train: rmse \(CLI.fmt(result.metrics["train_rmse"] ?? .nan))  mae \(CLI.fmt(result.metrics["train_mae"] ?? .nan))"
      )
      if let tuning = result.tuning {
        print(
          "  tuned: best of \(tuning.trials.count) trials (trial \(tuning.winner + 1)): \(Tuner.describe(tuning.best)) in \(CLI.fmt(tuning.seconds, 3)) s, scored on \(tuning.validationSplit)"
        )
      }
      if let stopped = result.metrics["stopped_epoch"], let best = result.metrics["best_epoch"] {
        print(
          "  early stopping: ran \(Int(stopped))/\(epochs) epochs, kept epoch \(Int(best)) (validation rmse \(CLI.fmt(result.metrics["validation_rmse"] ?? .nan)))"
        )
      }
      print(
        "  trained in \(CLI.fmt(result.trainSeconds, 3)) s (loaded in \(CLI.fmt(loadSeconds, 3)) s)"
      )
    }
  }
}

/// Options for reading a ratings file, shared by `train` and `eval`.
struct DataFileOptions: ParsableArguments {
  @Option(help: "Field separator: one character, 'tab' or '::' (default: detected).")
  var delimiter: String?

  @Flag(
    inversion: .prefixedNo,
    help: "Whether the first line is a header (default: detected).")
  var header: Bool?

  @Option(name: .customLong("user-col"), help: "User column: 1-based position or header name.")
  var userCol: String?

  @Option(name: .customLong("item-col"), help: "Item column: 1-based position or header name.")
  var itemCol: String?

  @Option(name: .customLong("rating-col"), help: "Rating column: 1-based position or header name.")
  var ratingCol: String?

  @Option(
    name: .customLong("timestamp-col"), help: "Timestamp column: 1-based position or header name.")
  var timestampCol: String?

  @Flag(name: .customLong("skip-bad-lines"), help: "Skip and count bad lines instead of failing.")
  var skipBadLines = false

  var loadOptions: LoadOptions {
    LoadOptions(
      delimiter: delimiter, hasHeader: header,
      userColumn: userCol.map(LoadOptions.Column.init(commandLine:)),
      itemColumn: itemCol.map(LoadOptions.Column.init(commandLine:)),
      ratingColumn: ratingCol.map(LoadOptions.Column.init(commandLine:)),
      timestampColumn: timestampCol.map(LoadOptions.Column.init(commandLine:)),
      skipBadLines: skipBadLines)
  }
}

/// Output helpers shared by the model commands.
enum CLI {
  static func printErr(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
  }

  /// Prints `error: <reason>` to stderr; throw the result to exit with status 1.
  static func failure(_ error: Error) -> ExitCode {
    printErr("error: \(error)")
    return ExitCode.failure
  }

  static func fmt(_ x: Double, _ digits: Int = 4) -> String {
    guard x.isFinite else { return "n/a" }
    return String(format: "%.\(digits)f", x)
  }
}

extension TrainCommand {
  /// Loads --data (timed), warning on stderr about the lines skipped with --skip-bad-lines.
  fileprivate func loadData() throws -> (Interactions, Double) {
    let start = Date()
    var interactions = try data.map {
      try Interactions.load(path: $0, options: dataOptions.loadOptions)
    }
    if let data, let loaded = interactions, loaded.skippedLines > 0 && !quiet {
      CLI.printErr("warning: skipped \(loaded.skippedLines) bad lines in \(data)")
      for example in loaded.skippedExamples { CLI.printErr("  \(example)") }
    }
    if let eventsDirectory {
      let types = eventTypes.map {
        Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
      }
      interactions = try Interactions.fromEvents(
        directory: eventsDirectory, joining: interactions, types: types)
    }
    guard let interactions else {
      throw ValidationError("give --data FILE, --events DIR, or both")
    }
    return (interactions, Date().timeIntervalSince(start))
  }

  /// Where `--tune` reports each trial: stderr, unless quiet or `--progress none`.
  fileprivate var tuneReport: ((String) -> Void)? {
    if quiet || progress == .none { return nil }
    return { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
  }

  fileprivate func progressReporter(metrics: [(key: String, label: String)]) -> ProgressReporter {
    ProgressReporter(mode: ProgressReporter.resolve(progress, quiet: quiet), metrics: metrics)
  }

  /// `--kind bpr|als|sasrec`: implicit feedback, ranking metrics.
  fileprivate func executeImplicit(split: String) throws {
    let config = try implicitConfig()
    try ModelStore.validateName(name)
    let splitChoice: ImplicitSplit
    switch split {
    case "holdout": splitChoice = .holdout(holdout ?? 0.1)
    case "none": splitChoice = .none
    default: splitChoice = .leaveLastOut
    }

    let (interactions, loadSeconds) = try loadData()
    let rowCount = interactions.count
    let skippedLines = interactions.skippedLines
    let reporter = progressReporter(metrics: [("correct", "correct")])
    defer { reporter.finish() }
    let result = try trainAndPublishImplicit(
      data: consume interactions, config: config, split: splitChoice, threshold: implicitThreshold,
      modelsDirectory: models, name: name, tune: tune ?? 0, fixed: fixedSettings,
      tuneReport: tuneReport, progress: reporter.report)
    reporter.finish()  // before the results on stdout; the defer covers errors
    let trained = result.tuning?.best ?? config

    printImplicit(
      result, trained: trained, split: splitChoice, rows: rowCount, skippedLines: skippedLines,
      loadSeconds: loadSeconds)
  }

  /// BPR's, ALS's or SASRec's settings from the options, checked.
  fileprivate func implicitConfig() throws -> ImplicitModelConfig {
    let config: ImplicitModelConfig
    if kind == "hybrid" {
      config = try hybridConfig()
    } else if kind == "sasrec" {
      var c = SASRecConfig()
      if let dim { c.dim = dim }
      if let epochs { c.epochs = epochs }
      if let lr { c.learningRate = lr }
      if let maxlen { c.maxlen = maxlen }
      if let blocks { c.blocks = blocks }
      if let heads { c.heads = heads }
      if let dropout { c.dropout = dropout }
      if let batchSize { c.batchSize = batchSize }
      if let threads { c.threads = threads }
      c.seed = seed
      config = .sasrec(c)
    } else if kind == "bpr" {
      var c = BPRConfig()
      if let dim { c.dim = dim }
      if let epochs { c.epochs = epochs }
      if let lr { c.learningRate = lr }
      if let reg { c.regularization = reg }
      if let initStd { c.initScale = initStd }
      if let threads { c.threads = threads }
      if let negativeSampling {
        guard let n = BPRConfig.NegativeSampling(rawValue: negativeSampling) else {
          throw ValidationError(
            "unknown --negative-sampling '\(negativeSampling)' (expected uniform or popularity)")
        }
        c.negativeSampling = n
      }
      if let negativeCandidates { c.negativeCandidates = negativeCandidates }
      c.itemBias = !noItemBias
      if let recencyBoost { c.recencyBoost = recencyBoost }
      if let recencyHalfLife { c.recencyHalfLife = recencyHalfLife }
      c.seed = seed
      config = .bpr(c)
    } else {
      var c = ALSConfig()
      if let dim { c.dim = dim }
      if let epochs { c.iterations = epochs }
      if let reg { c.regularization = reg }
      if let alpha { c.alpha = alpha }
      if let cgSteps { c.cgSteps = cgSteps }
      if let popularityExponent { c.popularityExponent = popularityExponent }
      if let regExponent { c.regExponent = regExponent }
      if let recencyBoost { c.recencyBoost = recencyBoost }
      if let recencyHalfLife { c.recencyHalfLife = recencyHalfLife }
      if let initStd { c.initScale = initStd }
      if let threads { c.threads = threads }
      c.seed = seed
      config = .als(c)
    }
    try config.validate()
    return config
  }

  fileprivate func printImplicit(
    _ result: ImplicitTrainResult, trained: ImplicitModelConfig, split splitChoice: ImplicitSplit,
    rows rowCount: Int, skippedLines: Int, loadSeconds: Double
  ) {
    if json {
      var metrics: [String: JSONValue] = [
        "ndcg@10": result.metrics["ndcg@10"].map(JSONValue.double) ?? .null,
        "hr@10": result.metrics["hr@10"].map(JSONValue.double) ?? .null,
      ]
      for (k, v) in result.metrics where metrics[k] == nil { metrics[k] = .double(v) }
      var counts: [String: JSONValue] = [:]
      for (k, v) in result.evaluation?.counts ?? [:] { counts[k] = .int(Int64(v)) }
      let out: JSONValue = .object([
        "name": .string(result.name),
        "version": .int(result.version),
        "kind": .string(result.kind),
        "directory": .string(result.directory),
        "split": .string(splitChoice.name),
        "metrics": .object(metrics),
        "evaluation_counts": .object(counts),
        "train_seconds": .double(result.trainSeconds),
        "eval_seconds": .double(result.evalSeconds),
        "load_seconds": .double(loadSeconds),
        "rows": .int(Int64(rowCount)),
        "train_rows": .int(Int64(result.trainRows)),
        "positive_pairs": .int(Int64(result.positivePairs)),
        "test_rows": .int(Int64(result.testRows)),
        "users": .int(Int64(result.model.userCount)),
        "items": .int(Int64(result.model.itemCount)),
        "skipped_lines": .int(Int64(skippedLines)),
        "hyperparameters": .object(trained.hyperparameters),
        "tuning": result.tuning?.json(settings: \.hyperparameters) ?? .null,
      ])
      print(out.serialized(pretty: false))
    } else {
      print(
        "published \(result.kind) model '\(result.name)' version \(result.version) (\(result.directory))"
      )
      if let tuning = result.tuning {
        print(
          "  tuned: best of \(tuning.trials.count) trials (trial \(tuning.winner + 1)): \(Tuner.describe(tuning.best)) in \(CLI.fmt(tuning.seconds, 3)) s, scored on \(tuning.validationSplit)"
        )
      }
      print(
        "  data: \(rowCount) rows (\(result.trainRows) train, \(result.testRows) held out by \(splitChoice.name)), \(result.positivePairs) positive pairs, \(result.model.userCount) users, \(result.model.itemCount) items"
      )
      if let e = result.evaluation {
        let ks = e.ks.map { k in
          "ndcg@\(k) \(CLI.fmt(result.metrics["ndcg@\(k)"] ?? .nan))  hr@\(k) \(CLI.fmt(result.metrics["hr@\(k)"] ?? .nan))"
        }.joined(separator: "  ")
        print("  full ranking: \(ks)  (\(e.users) users evaluated)")
        let sampled = e.ks.map { k in
          "ndcg@\(k) \(CLI.fmt(result.metrics["sampled_ndcg@\(k)"] ?? .nan))  hr@\(k) \(CLI.fmt(result.metrics["sampled_hr@\(k)"] ?? .nan))"
        }.joined(separator: "  ")
        print("  sampled (held-out item among 100 unseen): \(sampled)")
      } else {
        print("  held out: none (--split none); evaluate with `recserve eval`")
      }
      print(
        "  trained in \(CLI.fmt(result.trainSeconds, 3)) s (loaded in \(CLI.fmt(loadSeconds, 3)) s, evaluated in \(CLI.fmt(result.evalSeconds, 3)) s)"
      )
    }
  }
}
