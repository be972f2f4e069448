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
      timestamp columns), holds out --holdout of the rows at random (seeded) for evaluation, \
      trains, and publishes the model atomically as DIR/NAME/<next version>. Prints the \
      version and its metrics (one JSON object with --json); per-epoch progress goes to stderr.
      """)

  @Option(help: "Ratings file: MovieLens u.data, ratings.csv, or CSV/TSV.")
  var data: String

  @Option(help: "Model kind: mf (bpr, als, sasrec are not implemented yet).")
  var kind: String = "mf"

  @Option(help: "Model name (letters, digits, '.', '_', '-').")
  var name: String

  @Option(help: "Models directory.")
  var models: String

  @Option(help: "Latent dimension (default 64).")
  var dim: Int?

  @Option(help: "Training epochs (default 20).")
  var epochs: Int?

  @Option(help: "Random seed for the split, initialisation and shuffling.")
  var seed: UInt64 = 42

  @Option(help: "Fraction of rows held out for the reported metrics; 0 trains on every row.")
  var holdout: Double = 0.1

  @Option(help: "Initial learning rate (default 0.03).")
  var lr: Float?

  @Option(help: "L2 regularisation of the factors (default 0.05).")
  var reg: Float?

  @Option(name: .customLong("reg-bias"), help: "L2 regularisation of the biases (default 0.05).")
  var regBias: Float?

  @Option(name: .customLong("lr-decay"), help: "Learning-rate factor per epoch (default 0.97).")
  var lrDecay: Float?

  @Option(
    name: .customLong("init-std"), help: "Standard deviation of initial factors (default 0.01).")
  var initStd: Float?

  @Option(help: "Training threads (deterministic for a seed at any count; default 1).")
  var threads: Int?

  @OptionGroup var dataOptions: DataFileOptions

  @Flag(help: "Print one JSON object instead of text.")
  var json = false

  @Flag(help: "No per-epoch progress on stderr.")
  var quiet = false

  func run() throws {
    do {
      try execute()
    } catch let e as ExitCode {
      throw e
    } catch {
      throw CLI.failure(error)
    }
  }

  private func execute() throws {
    guard ["mf", "bpr", "als", "sasrec"].contains(kind) else {
      throw ValidationError("unknown --kind '\(kind)' (expected mf, bpr, als or sasrec)")
    }
    guard holdout.isFinite, holdout >= 0, holdout < 1 else {
      throw ValidationError("--holdout must be in [0, 1) (got \(holdout))")
    }
    if kind != "mf" {
      throw TrainingError.notImplemented(
        "model kind '\(kind)' is not implemented yet (available: mf)")
    }
    var config = MFConfig()
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
    try ModelStore.validateName(name)

    let loadStart = Date()
    let interactions = try Interactions.load(path: data, options: dataOptions.loadOptions)
    let loadSeconds = Date().timeIntervalSince(loadStart)
    if interactions.skippedLines > 0 && !quiet {
      CLI.printErr("warning: skipped \(interactions.skippedLines) bad lines in \(data)")
      for example in interactions.skippedExamples { CLI.printErr("  \(example)") }
    }
    let quiet = self.quiet
    let result = try trainAndPublishMF(
      data: interactions, config: config, holdout: holdout, modelsDirectory: models, name: name,
      progress: { p in
        if !quiet {
          var line = "epoch \(p.epoch)/\(p.epochs)  loss \(CLI.fmt(p.loss))"
          if let v = p.validationRMSE { line += "  holdout rmse \(CLI.fmt(v))" }
          line += "  eta \(CLI.fmt(p.etaSeconds, 2))s"
          CLI.printErr(line)
        }
        return true
      })

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
        "metrics": .object(metrics),
        "train_seconds": .double(result.trainSeconds),
        "load_seconds": .double(loadSeconds),
        "rows": .int(Int64(interactions.count)),
        "train_rows": .int(Int64(result.trainRows)),
        "test_rows": .int(Int64(result.testRows)),
        "unknown_pairs": .int(Int64(result.evaluation?.unknownPairs ?? 0)),
        "users": .int(Int64(result.model.userCount)),
        "items": .int(Int64(result.model.itemCount)),
        "skipped_lines": .int(Int64(interactions.skippedLines)),
        "hyperparameters": .object(config.hyperparameters),
      ])
      print(out.serialized(pretty: false))
    } else {
      print(
        "published \(result.kind) model '\(result.name)' version \(result.version) (\(result.directory))"
      )
      print(
        "  data: \(interactions.count) rows (\(result.trainRows) train, \(result.testRows) held out), \(result.model.userCount) users, \(result.model.itemCount) items"
      )
      if let e = result.evaluation {
        print(
          "  held out: rmse \(CLI.fmt(e.rmse))  mae \(CLI.fmt(e.mae))  (\(e.count) ratings, \(e.unknownPairs) with an unknown user or item)"
        )
      } else {
        print("  held out: none (--holdout 0); evaluate with `recserve eval`")
      }
      print(
        "  train: rmse \(CLI.fmt(result.metrics["train_rmse"] ?? .nan))  mae \(CLI.fmt(result.metrics["train_mae"] ?? .nan))"
      )
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
