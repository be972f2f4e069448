import ArgumentParser
import Foundation
import RecServeModels

/// `recserve eval`: RMSE and MAE of a published version on a ratings file.
struct EvalCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "eval",
    abstract: "Evaluate a published model version on a ratings file (RMSE, MAE).",
    discussion: """
      Loads DIR/NAME/VERSION (the highest version when --version is not given), verifies it, \
      and scores every row of FILE. Users and items the model has never seen get its fallback \
      score (global mean plus the known biases) and are counted as unknown.
      """)

  @Option(help: "Models directory.")
  var models: String

  @Option(help: "Model name.")
  var name: String

  @Option(help: "Version to evaluate (default: the highest).")
  var version: Int64?

  @Option(help: "Ratings file to evaluate on.")
  var data: String

  @OptionGroup var dataOptions: DataFileOptions

  @Flag(help: "Print one JSON object instead of text.")
  var json = false

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
    if let version, version < 1 {
      throw ValidationError("--version must be a positive integer (got \(version))")
    }
    let t0 = Date()
    let loaded = try ModelStore.load(modelsDirectory: models, name: name, version: version)
    let loadSeconds = Date().timeIntervalSince(t0)
    let t2 = Date()
    let interactions = try Interactions.load(path: data, options: dataOptions.loadOptions)
    let dataSeconds = Date().timeIntervalSince(t2)
    let t1 = Date()
    let e = RatingMetrics.evaluate(model: loaded.model, on: interactions)
    let evalSeconds = Date().timeIntervalSince(t1)
    let versionNumber = Int64((loaded.directory as NSString).lastPathComponent) ?? 0
    if json {
      let out: JSONValue = .object([
        "name": .string(name),
        "version": .int(versionNumber),
        "kind": .string(loaded.manifest.kind),
        "metrics": .object(["rmse": .double(e.rmse), "mae": .double(e.mae)]),
        "pairs": .int(Int64(e.count)),
        "unknown_pairs": .int(Int64(e.unknownPairs)),
        "unknown_users": .int(Int64(e.unknownUsers)),
        "unknown_items": .int(Int64(e.unknownItems)),
        "skipped_lines": .int(Int64(interactions.skippedLines)),
        "load_seconds": .double(loadSeconds),
        "data_load_seconds": .double(dataSeconds),
        "eval_seconds": .double(evalSeconds),
      ])
      print(out.serialized(pretty: false))
    } else {
      print("\(loaded.manifest.kind) model '\(name)' version \(versionNumber) on \(data):")
      print("  rmse \(CLI.fmt(e.rmse))  mae \(CLI.fmt(e.mae))  (\(e.count) ratings)")
      print(
        "  unknown: \(e.unknownPairs) pairs (\(e.unknownUsers) users, \(e.unknownItems) items not in the model)"
      )
      if interactions.skippedLines > 0 {
        print("  skipped \(interactions.skippedLines) bad lines")
      }
    }
  }
}
