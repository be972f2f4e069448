import ArgumentParser
import Foundation
import RecServeModels

/// `recserve eval`: rating and ranking metrics of a published version on a data file.
struct EvalCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "eval",
    abstract:
      "Evaluate a published model version on a data file (RMSE/MAE, ranking metrics at K).",
    discussion: """
      Loads DIR/NAME/VERSION (the highest version when --version is not given) and verifies it.

      --split none (default): FILE is the test set, and the model's own training history is \
      what counts as "seen" (never recommended, never sampled as a negative). \
      --split leave-last-out or holdout: FILE is the whole log; it is split here (seeded with \
      --seed, as `train` would) and the train part is the history, the test part is evaluated. \
      Use this when the model was trained on the same split of the same file.

      Protocols: ratings (RMSE and MAE of every test row; unknown users and items get the \
      model's fallback), full (each test user known to the model ranks every item not in its \
      history; HR, Precision, Recall, F1, NDCG, MRR and MAP at K as RecBole defines them, plus \
      catalog coverage, novelty and intra-list diversity), sampled (each held-out item ranked \
      among --negatives items the user never interacted with, as in the SASRec paper: HR and \
      NDCG at K, and MRR). Default: ratings and full when FILE has explicit ratings (not all \
      equal), else full. Test users unknown to the model, and users without a relevant \
      held-out item, are skipped and counted.
      """)

  @Option(help: "Models directory.")
  var models: String

  @Option(help: "Model name.")
  var name: String

  @Option(help: "Version to evaluate (default: the highest).")
  var version: Int64?

  @Option(help: "Data file: the test set, or the whole log with --split.")
  var data: String

  @OptionGroup var dataOptions: DataFileOptions

  @Option(help: "ratings, full, sampled or all; comma-separated for several (default: see above).")
  var `protocol`: String?

  @Option(help: "Cutoff K for the ranking metrics.")
  var k: Int = 10

  @Option(help: "Several cutoffs, comma-separated (e.g. 5,10,20); overrides --k.")
  var ks: String?

  @Option(help: "none (FILE is the test set), leave-last-out or holdout.")
  var split: String = "none"

  @Option(help: "Fraction of rows held out with --split holdout.")
  var holdout: Double = 0.1

  @Option(help: "Seed for the split and the sampled negatives.")
  var seed: UInt64 = 42

  @Option(help: "Negatives per held-out item in the sampled protocol.")
  var negatives: Int = 100

  @Option(
    name: .customLong("relevance-threshold"),
    help: "Only test rows rated at least this are relevant for ranking (default: every row).")
  var relevanceThreshold: Float?

  @Option(help: "Threads for the ranking evaluation (results do not depend on it).")
  var threads: Int = 2

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

  private func cutoffs() throws -> [Int] {
    guard let ks else {
      guard k >= 1 else { throw ValidationError("--k must be at least 1 (got \(k))") }
      return [k]
    }
    var out = [Int]()
    for part in ks.split(separator: ",", omittingEmptySubsequences: false) {
      let t = part.trimmingCharacters(in: .whitespaces)
      guard let v = Int(t), v >= 1 else {
        throw ValidationError("--ks must be positive integers separated by commas (got '\(ks)')")
      }
      if !out.contains(v) { out.append(v) }
    }
    return out.sorted()
  }

  private func protocols(explicit: Bool) throws -> Set<String> {
    guard let text = self.protocol else { return explicit ? ["ratings", "full"] : ["full"] }
    var out = Set<String>()
    for part in text.split(separator: ",") {
      switch part.trimmingCharacters(in: .whitespaces) {
      case "ratings": out.insert("ratings")
      case "full": out.insert("full")
      case "sampled": out.insert("sampled")
      case "all": out.formUnion(["ratings", "full", "sampled"])
      default:
        throw ValidationError(
          "unknown --protocol '\(part)' (expected ratings, full, sampled or all)")
      }
    }
    if out.isEmpty { throw ValidationError("--protocol is empty") }
    return out
  }

  private func execute() throws {
    let ks = try checkedCutoffs()
    let outcome = try evaluate(ks: ks)
    if json {
      printJSON(outcome, ks: ks)
    } else {
      printText(outcome, ks: ks)
    }
  }

  /// What one evaluation found, and how long its parts took.
  private struct Outcome {
    var loaded: LoadedModel
    var interactions: Interactions
    var train: Interactions?
    var test: Interactions
    var protocols: Set<String>
    var ratingEval: RatingEvaluation?
    var ranking: RankingEvaluation?
    var loadSeconds: Double
    var dataSeconds: Double
    var evalSeconds: Double
    var versionNumber: Int64
  }

  /// The cutoffs, after every option was checked.
  private func checkedCutoffs() throws -> [Int] {
    if let version, version < 1 {
      throw ValidationError("--version must be a positive integer (got \(version))")
    }
    let ks = try cutoffs()
    guard ["none", "leave-last-out", "holdout"].contains(split) else {
      throw ValidationError("unknown --split '\(split)' (expected none, leave-last-out or holdout)")
    }
    guard holdout.isFinite, holdout > 0, holdout < 1 else {
      throw ValidationError("--holdout must be in (0, 1) (got \(holdout))")
    }
    guard negatives >= 1 else {
      throw ValidationError("--negatives must be at least 1 (got \(negatives))")
    }
    guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
    if let t = relevanceThreshold, !t.isFinite {
      throw ValidationError("--relevance-threshold must be a number")
    }

    return ks
  }

  /// Loads the model and the data, splits, and runs the asked protocols.
  private func evaluate(ks: [Int]) throws -> Outcome {
    let t0 = Date()
    let loaded = try ModelStore.load(modelsDirectory: models, name: name, version: version)
    let loadSeconds = Date().timeIntervalSince(t0)
    let t2 = Date()
    let interactions = try Interactions.load(path: data, options: dataOptions.loadOptions)
    let dataSeconds = Date().timeIntervalSince(t2)

    var train: Interactions? = nil
    var test = interactions
    switch split {
    case "leave-last-out":
      (train, test) = interactions.leaveLastOutSplit(seed: seed)
    case "holdout":
      let parts = interactions.randomSplit(holdout: holdout, seed: seed)
      (train, test) = (parts.train, parts.test)
    default:
      break
    }
    let explicit = interactions.ratings.contains { $0 != interactions.ratings.first }
    let protocols = try protocols(explicit: explicit)

    let t1 = Date()
    var ratingEval: RatingEvaluation? = nil
    if protocols.contains("ratings") && !test.isEmpty {
      ratingEval = RatingMetrics.evaluate(model: loaded.model, on: test)
    }
    var ranking: RankingEvaluation? = nil
    if protocols.contains("full") || protocols.contains("sampled") {
      let config = RankingEvaluationConfig(
        ks: ks, fullRanking: protocols.contains("full"), sampled: protocols.contains("sampled"),
        sampledNegatives: negatives, seed: seed, threads: threads,
        relevanceThreshold: relevanceThreshold)
      // One BLAS thread per evaluation thread: the users are already spread over the cores.
      let blasThreads = BLASThreads.count
      if threads > 1 { BLASThreads.set(1) }
      ranking = RankingEvaluator.evaluate(
        model: loaded.model, train: train, test: test, config: config)
      if threads > 1 { BLASThreads.set(blasThreads) }
    }
    let evalSeconds = Date().timeIntervalSince(t1)
    let versionNumber = Int64((loaded.directory as NSString).lastPathComponent) ?? 0

    return Outcome(
      loaded: loaded, interactions: interactions, train: train, test: test,
      protocols: protocols, ratingEval: ratingEval, ranking: ranking, loadSeconds: loadSeconds,
      dataSeconds: dataSeconds, evalSeconds: evalSeconds, versionNumber: versionNumber)
  }

  private func printJSON(_ outcome: Outcome, ks: [Int]) {
    let (loaded, interactions, train, test) = (
      outcome.loaded, outcome.interactions, outcome.train, outcome.test
    )
    let (ratingEval, ranking, protocols) = (outcome.ratingEval, outcome.ranking, outcome.protocols)
    let (loadSeconds, dataSeconds, evalSeconds) = (
      outcome.loadSeconds, outcome.dataSeconds, outcome.evalSeconds
    )
    let versionNumber = outcome.versionNumber
    var metrics = [String: JSONValue]()
    if let e = ratingEval {
      metrics["rmse"] = .double(e.rmse)
      metrics["mae"] = .double(e.mae)
    }
    for (key, v) in ranking?.metrics ?? [:] { metrics[key] = .double(v) }
    var out: [String: JSONValue] = [
      "name": .string(name),
      "version": .int(versionNumber),
      "kind": .string(loaded.manifest.kind),
      "metrics": .object(metrics),
      "protocols": .array(protocols.sorted().map { .string($0) }),
      "ks": .array(ks.map { .int(Int64($0)) }),
      "split": .string(split),
      "rows": .int(Int64(interactions.count)),
      "test_rows": .int(Int64(test.count)),
      "skipped_lines": .int(Int64(interactions.skippedLines)),
      "load_seconds": .double(loadSeconds),
      "data_load_seconds": .double(dataSeconds),
      "eval_seconds": .double(evalSeconds),
    ]
    if let train { out["train_rows"] = .int(Int64(train.count)) }
    if split != "none" { out["seed"] = .int(Int64(truncatingIfNeeded: seed)) }
    if let tuning = loaded.manifest.hyperparameters["tuning"] { out["tuning"] = tuning }
    if let e = ratingEval {
      out["pairs"] = .int(Int64(e.count))
      out["unknown_pairs"] = .int(Int64(e.unknownPairs))
      out["unknown_users"] = .int(Int64(e.unknownUsers))
      out["unknown_items"] = .int(Int64(e.unknownItems))
    }
    if let r = ranking {
      var counts = [String: JSONValue]()
      for (key, v) in r.counts { counts[key] = .int(Int64(v)) }
      out["ranking"] = .object(counts)
    }
    print(JSONValue.object(out).serialized(pretty: false))
  }

  private func printText(_ outcome: Outcome, ks: [Int]) {
    let (loaded, interactions, train, test) = (
      outcome.loaded, outcome.interactions, outcome.train, outcome.test
    )
    let (ratingEval, ranking, protocols) = (outcome.ratingEval, outcome.ranking, outcome.protocols)
    let versionNumber = outcome.versionNumber
    var header = "\(loaded.manifest.kind) model '\(name)' version \(versionNumber) on \(data)"
    switch split {
    case "leave-last-out":
      header +=
        " (leave-last-out split, seed \(seed): \(train?.count ?? 0) train rows, \(test.count) test rows)"
    case "holdout":
      header +=
        " (holdout \(holdout) split, seed \(seed): \(train?.count ?? 0) train rows, \(test.count) test rows)"
    default:
      break
    }
    print(header + ":")
    if let tuning = loaded.manifest.hyperparameters["tuning"].flatMap(Tuner.summary) {
      // What `recserve train --tune` chose, from model.json.
      print("  tuned: \(tuning)")
    }
    if let e = ratingEval {
      print("  ratings: rmse \(CLI.fmt(e.rmse))  mae \(CLI.fmt(e.mae))  (\(e.count) ratings)")
      print(
        "    unknown: \(e.unknownPairs) pairs (\(e.unknownUsers) users, \(e.unknownItems) items not in the model)"
      )
    }
    if let r = ranking, r.users == 0 {
      print(
        "  ranking: no test user could be evaluated (\(r.unknownUsers) unknown to the model, \(r.usersWithoutTestItems) without a relevant held-out item: \(r.seenTestItems) test items are already in the history, \(r.unknownTestItems) unknown to the model); with --split none, FILE must be a test set the model was not trained on"
      )
    } else if let r = ranking {
      if protocols.contains("full") {
        print("  full ranking over each user's unseen items (\(r.users) users):")
        let columns = [
          "hr", "precision", "recall", "f1", "ndcg", "mrr", "map", "coverage", "novelty", "ild",
        ]
        let m = r.metrics
        printTable(
          columns: columns, ks: ks,
          value: { col, k in m["\(col)@\(k)"] })
      }
      if protocols.contains("sampled") {
        print(
          "  sampled: each held-out item among \(negatives) unseen items (\(r.sampledPairs) items, \(r.users) users):"
        )
        let m = r.metrics
        printTable(
          columns: ["hr", "ndcg"], ks: ks, value: { col, k in m["sampled_\(col)@\(k)"] })
        print("    mrr \(CLI.fmt(r.sampledMRR ?? .nan))")
      }
      print(
        "  skipped: \(r.unknownUsers) users unknown to the model, \(r.usersWithoutTestItems) users without a relevant held-out item; dropped \(r.unknownTestItems) test items unknown to the model, \(r.seenTestItems) already in the history"
      )
    }
    if interactions.skippedLines > 0 {
      print("  skipped \(interactions.skippedLines) bad lines")
    }
  }

  private func printTable(columns: [String], ks: [Int], value: (String, Int) -> Double?) {
    let width = 10
    func pad(_ s: String) -> String {
      s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
    }
    print("    " + pad("") + columns.map(pad).joined())
    for k in ks {
      let cells = columns.map { pad(CLI.fmt(value($0, k) ?? .nan)) }
      print("    " + pad("@\(k)") + cells.joined())
    }
  }
}
