import Foundation

/// A hyperparameter search for BPR and ALS by successive halving (Jamieson and Talwalkar, 2016):
/// `trials` settings, the first the given configuration and the rest drawn (seeded) from each
/// kind's search space, are all trained for a ninth of the epochs (ALS: iterations; at least
/// 3); the best third goes on to a third of them, and the best third of those to the full count.
/// The given settings always reach the full count, and another trial wins only when it beats
/// them on validation by more than one standard error of the difference (the best of many noisy
/// scores is biased upwards), so a search does not trade good defaults for luck. Each trial
/// is scored by NDCG@10 with full ranking on a validation split carved from the rows it is given
/// (each user's latest training row, or a random tenth for a random-holdout split), never on
/// held-out test rows: the caller passes only training rows. Trials run one after another, each
/// on every thread the configuration has.
public enum Tuner {
  /// The settings searched, by kind; names as in model.json's hyperparameters.
  public static let searched: [String: [String]] = [
    "bpr": ["lr", "reg", "negative_candidates", "negative_sampling"],
    "als": ["alpha", "reg"],
  ]

  /// One trial: its settings, and its score at each budget it reached.
  public struct Trial: Sendable {
    public var id: Int
    public var config: ImplicitModelConfig
    /// (epochs or iterations, validation NDCG@10), one per rung reached.
    public var scores: [(budget: Int, ndcg: Double)]
  }

  public struct Result: Sendable {
    public var best: ImplicitModelConfig
    public var trials: [Trial]
    public var winner: Int
    public var validationSplit: String
    public var validationRows: Int
    /// Users scored on validation.
    public var validationUsers: Int
    /// The best trial other than the given settings, when it did not beat them by more than the
    /// noise of the validation score (and so did not win).
    public var runnerUp: Int?
    public var seconds: Double

    /// For model.json: the search, its trials and the winner.
    public var json: JSONValue {
      let names = Tuner.searched[best.kind] ?? []
      return .object([
        "method": .string("successive halving, eta 3"),
        "metric": .string("validation ndcg@10"),
        "validation_split": .string(validationSplit),
        "validation_rows": .int(Int64(validationRows)),
        "validation_users": .int(Int64(validationUsers)),
        "best_other_trial": runnerUp.map { .int(Int64($0)) } ?? .null,
        "seconds": .double(seconds),
        "winner": .int(Int64(winner)),
        "trials": .array(
          trials.map { trial in
            var settings: [String: JSONValue] = [:]
            let all = trial.config.hyperparameters
            for name in names { settings[name] = all[name] ?? .null }
            return .object([
              "id": .int(Int64(trial.id)),
              "settings": .object(settings),
              "scores": .array(
                trial.scores.map {
                  .object(["budget": .int(Int64($0.budget)), "ndcg@10": .double($0.ndcg)])
                }),
            ])
          }),
      ])
    }
  }

  /// Searches around `base` on `train` (training rows only). `fixed` names settings the user
  /// chose, which every trial keeps. `report` hears one line per finished trial.
  public static func tune(
    train: Interactions, base: ImplicitModelConfig, trials: Int, holdout: Double? = nil,
    threshold: Float? = nil, fixed: Set<String> = [], report: ((String) -> Void)? = nil,
    isCancelled: (@Sendable () -> Bool)? = nil
  ) throws -> Result {
    guard (1...200).contains(trials) else {
      throw TrainingError.invalidConfiguration("tune must be in 1...200 trials (got \(trials))")
    }
    guard base.kind == "bpr" || base.kind == "als" else {
      throw TrainingError.invalidConfiguration(
        "tuning is for bpr and als (got \(base.kind)); set its hyperparameters by hand")
    }
    let start = monotonicSeconds()
    let seed = base.seed
    let (fit, validation): (Interactions, Interactions)
    let validationSplit: String
    if let holdout, holdout > 0 {
      (fit, validation) = train.randomSplit(holdout: holdout, seed: seed ^ 0x7475_6E65)
      validationSplit = "random \(holdout) of the training rows"
    } else {
      (fit, validation) = train.leaveLastOutSplit(seed: seed ^ 0x7475_6E65)
      validationSplit = "each user's latest training row"
    }
    if validation.isEmpty {
      throw TrainingError.invalidData(
        "\(train.source): no validation rows to tune on (every user has a single training row)")
    }

    var rng = Xoshiro256(seed: seed, stream: 0x7475_6E65)
    var pool = [Trial(id: 0, config: base, scores: [])]
    for id in 1..<trials {
      pool.append(Trial(id: id, config: draw(around: base, fixed: fixed, rng: &rng), scores: []))
    }
    let full = budget(of: base)
    // A first rung of at least 3 epochs or iterations: one ALS sweep ranks settings by how
    // fast they start, not where they end.
    let rungs = [max(min(full, 3), full / 9), max(min(full, 3), full / 3), full]
    var alive = Array(pool.indices)
    var validationUsers = 0
    for (r, epochs) in rungs.enumerated() {
      if r > 0 {
        // The best third goes on (at least one); ties keep the earlier trial. The given
        // settings (trial 0) always go on, so that the search ends no worse on validation
        // than training without it.
        let keep = max(1, (alive.count + 2) / 3)
        alive = Array(
          alive.sorted { a, b in
            let x = pool[a].scores.last!.ndcg
            let y = pool[b].scores.last!.ndcg
            return x > y || (x == y && a < b)
          }.prefix(keep))
        if !alive.contains(0) { alive.append(0) }
        if r < rungs.count - 1 && rungs[r] == rungs[r - 1] { continue }
      }
      for index in alive {
        if isCancelled?() == true { throw TrainingError.cancelled }
        if let last = pool[index].scores.last, last.budget == epochs { continue }
        let config = with(budget: epochs, pool[index].config)
        let model = try trainImplicit(
          data: fit, config: config, threshold: threshold, isCancelled: isCancelled)
        let evaluation = RankingEvaluator.evaluate(
          model: model, train: fit, test: validation,
          config: RankingEvaluationConfig(
            ks: [10], fullRanking: true, sampled: false, seed: seed,
            threads: max(1, config.threads), relevanceThreshold: threshold))
        let ndcg = evaluation.metrics["ndcg@10"] ?? 0
        validationUsers = evaluation.users
        pool[index].scores.append((epochs, ndcg))
        report?(
          "tune: trial \(index + 1)/\(trials), \(epochs) \(base.kind == "als" ? "iterations" : "epochs"): \(describe(pool[index].config)) -> validation ndcg@10 \(String(format: "%.4f", ndcg))"
        )
      }
    }
    var winner = alive.max { a, b in
      let x = pool[a].scores.last!.ndcg
      let y = pool[b].scores.last!.ndcg
      return x < y || (x == y && a > b)
    }!
    // The best of many trials on one validation sample is partly luck (the winner's curse): a
    // trial replaces the given settings only when it beats them by more than the score's noise,
    // one standard error of the difference of two means of per-user NDCG (each in [0, 1], so its
    // variance is at most m(1 - m) for a mean m).
    var runnerUp: Int? = nil
    if winner != 0
      && !beatsBeyondNoise(
        pool[winner].scores.last!.ndcg, pool[0].scores.last!.ndcg, users: validationUsers)
    {
      runnerUp = winner
      winner = 0
    }
    return Result(
      best: pool[winner].config, trials: pool, winner: winner, validationSplit: validationSplit,
      validationRows: validation.count, validationUsers: validationUsers, runnerUp: runnerUp,
      seconds: monotonicSeconds() - start)
  }

  /// Whether a mean per-user NDCG of `best` beats `base` on the same `users` by more than one
  /// standard error of the difference, bounded without pairing (a mean m of values in [0, 1]
  /// has variance at most m(1 - m) / n).
  static func beatsBeyondNoise(_ best: Double, _ base: Double, users: Int) -> Bool {
    let n = Double(max(1, users))
    let noise = ((base * (1 - base) + best * (1 - best)) / n).squareRoot()
    return best - base > noise
  }

  /// Epochs (BPR) or iterations (ALS).
  static func budget(of config: ImplicitModelConfig) -> Int {
    switch config {
    case .bpr(let c): return c.epochs
    case .als(let c): return c.iterations
    case .sasrec(let c): return c.epochs
    }
  }

  static func with(budget: Int, _ config: ImplicitModelConfig) -> ImplicitModelConfig {
    switch config {
    case .bpr(var c):
      c.epochs = budget
      return .bpr(c)
    case .als(var c):
      c.iterations = budget
      return .als(c)
    case .sasrec(var c):
      c.epochs = budget
      return .sasrec(c)
    }
  }

  /// Log-uniform in [low, high].
  static func logUniform(_ low: Double, _ high: Double, _ rng: inout Xoshiro256) -> Float {
    Float(exp(log(low) + (log(high) - log(low)) * rng.nextDouble()))
  }

  /// A random point of the kind's search space; settings in `fixed` keep `base`'s value.
  static func draw(around base: ImplicitModelConfig, fixed: Set<String>, rng: inout Xoshiro256)
    -> ImplicitModelConfig
  {
    switch base {
    case .bpr(var c):
      let lr = logUniform(0.005, 0.2, &rng)
      let reg = logUniform(0.0001, 0.1, &rng)
      let candidates = [1, 2, 3, 5][Int(rng.next() % 4)]
      let sampling: BPRConfig.NegativeSampling = rng.next() % 2 == 0 ? .uniform : .popularity
      if !fixed.contains("lr") { c.learningRate = lr }
      if !fixed.contains("reg") { c.regularization = reg }
      if !fixed.contains("negative_candidates") { c.negativeCandidates = candidates }
      if !fixed.contains("negative_sampling") { c.negativeSampling = sampling }
      return .bpr(c)
    case .als(var c):
      let alpha = logUniform(0.05, 100, &rng)
      let reg = logUniform(0.001, 10, &rng)
      if !fixed.contains("alpha") { c.alpha = alpha }
      if !fixed.contains("reg") { c.regularization = reg }
      return .als(c)
    case .sasrec:
      return base
    }
  }

  public static func describe(_ config: ImplicitModelConfig) -> String {
    func f(_ x: Float) -> String { String(format: "%.4g", Double(x)) }
    switch config {
    case .bpr(let c):
      return
        "lr \(f(c.learningRate)) reg \(f(c.regularization)) negatives \(c.negativeCandidates) \(c.negativeSampling.rawValue)"
    case .als(let c):
      return "alpha \(f(c.alpha)) reg \(f(c.regularization))"
    case .sasrec:
      return "sasrec"
    }
  }
}
