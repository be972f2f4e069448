import Foundation

/// A hyperparameter search by successive halving (Jamieson and Talwalkar, 2016): `trials`
/// settings, the first the given configuration and the rest drawn (seeded) from each kind's
/// search space, are all trained for a ninth of the epochs (ALS: iterations; at least 3); the
/// best third goes on to a third of them, and the best third of those to the full count. The
/// given settings always reach the full count, and another trial wins only when it beats them
/// on validation by more than `guardStandardErrors(candidates:)` standard errors of the paired
/// difference
/// (per user for ranking, per row for ratings: the best of many noisy scores is biased
/// upwards), so a search does not trade good defaults for luck. Validation rows are carved from
/// the rows the search is given, never from held-out test rows (the callers pass only training
/// rows): for BPR and ALS each user's latest row, or a random tenth for a random-holdout split,
/// scored by NDCG@10 with full ranking; for MF a random tenth, scored by RMSE. Trials run one
/// after another, each on every thread the configuration has.
public enum Tuner {
  /// The settings searched, by kind; names as in model.json's hyperparameters.
  public static let searched: [String: [String]] = [
    "bpr": [
      "lr", "reg", "negative_candidates", "negative_sampling", "recency_boost",
      "recency_half_life",
    ],
    "als": ["alpha", "reg", "recency_boost", "recency_half_life"],
    "hybrid": [
      "lr", "item_reg", "identity_weight", "content_dropout", "loss", "recency_boost",
      "recency_half_life",
    ],
    "mf": ["optimizer", "lr", "reg", "dim", "epochs"],
  ]

  /// The chance, over the whole search, that some trial no better than the given settings
  /// replaces them on validation noise alone.
  public static let guardFalseWinRate = 0.1

  /// How many standard errors of the paired difference the best of `candidates` trials at the
  /// last rung must beat the given settings by to replace them: the one-sided normal quantile
  /// at `guardFalseWinRate / candidates` (Bonferroni: the best of several noisy gains is biased
  /// upwards, the more so the more there are). 1.28 for one candidate, 1.96 for four.
  public static func guardStandardErrors(candidates: Int) -> Double {
    let tail = guardFalseWinRate / Double(max(1, candidates))
    // Bisection on the upper tail 0.5·erfc(z/√2), decreasing in z.
    var lo = 0.0
    var hi = 10.0
    for _ in 0..<60 {
      let mid = (lo + hi) / 2
      if 0.5 * erfc(mid / 2.0.squareRoot()) > tail { lo = mid } else { hi = mid }
    }
    return (lo + hi) / 2
  }

  /// One trial: its settings, and its score at each budget it reached.
  public struct Trial<Config: Sendable>: Sendable {
    public var id: Int
    public var config: Config
    /// (epochs or iterations, validation metric), one per rung reached.
    public var scores: [(budget: Int, value: Double)]
    /// Per-unit validation scores at the last budget reached, higher better (users' NDCG, or
    /// rows' negated squared error), keyed by unit, ascending: what the guard pairs.
    public var units: [(unit: Int32, score: Double)] = []
  }

  public struct Result<Config: Sendable>: Sendable {
    public var kind: String
    public var best: Config
    public var trials: [Trial<Config>]
    public var winner: Int
    /// "ndcg@10" (higher is better) or "rmse" (lower is better).
    public var metric: String
    public var validationSplit: String
    public var validationRows: Int
    /// Users (ranking) or rows (ratings) scored on validation.
    public var validationUnits: Int
    /// The best trial other than the given settings, when it did not beat them by more than the
    /// noise of the validation score (and so did not win).
    public var runnerUp: Int?
    /// The best other trial's mean paired gain over the given settings on validation (NDCG@10,
    /// or squared error saved per row), and its standard error; nil when only the given
    /// settings reached the last rung.
    public var gain: (mean: Double, standardError: Double)?
    /// The standard errors the gain had to exceed (`guardStandardErrors(candidates:)`).
    public var guardThreshold: Double?
    public var seconds: Double

    /// For model.json: the search, its trials and the winner.
    public func json(settings: (Config) -> [String: JSONValue]) -> JSONValue {
      let names = Tuner.searched[kind] ?? []
      return .object([
        "method": .string("successive halving, eta 3"),
        "metric": .string("validation \(metric)"),
        "validation_split": .string(validationSplit),
        "validation_rows": .int(Int64(validationRows)),
        (metric == "rmse" ? "validation_rows_scored" : "validation_users"):
          .int(Int64(validationUnits)),
        "best_other_trial": runnerUp.map { .int(Int64($0)) } ?? .null,
        "gain_over_given": gain.map { .double($0.mean) } ?? .null,
        "gain_standard_error": gain.map { .double($0.standardError) } ?? .null,
        "guard_standard_errors": guardThreshold.map { .double($0) } ?? .null,
        "seconds": .double(seconds),
        "winner": .int(Int64(winner)),
        "trials": .array(
          trials.map { trial in
            var chosen: [String: JSONValue] = [:]
            let all = settings(trial.config)
            for name in names { chosen[name] = all[name] ?? .null }
            return .object([
              "id": .int(Int64(trial.id)),
              "settings": .object(chosen),
              "scores": .array(
                trial.scores.map {
                  .object(["budget": .int(Int64($0.budget)), metric: .double($0.value)])
                }),
            ])
          }),
      ])
    }
  }

  /// Successive halving over `configs` (the first the given settings, and the first
  /// `protected` of them always kept to the end); a trial runs `full(config)` epochs at the
  /// last rung and the same fractions of them before (every trial's own schedule). `run(config, budget)` trains one trial and scores it: its metric and the
  /// per-unit scores the guard pairs; `higherIsBetter` orders the metric.
  static func halve<Config: Sendable>(
    _ configs: [Config], protected: Int, full: (Config) -> Int, higherIsBetter: Bool,
    isCancelled: (@Sendable () -> Bool)?,
    run: (Config, Int) throws -> (value: Double, units: [(unit: Int32, score: Double)]),
    report: (Trial<Config>) -> Void
  ) throws -> (
    trials: [Trial<Config>], winner: Int, runnerUp: Int?, gain: (Double, Double)?,
    threshold: Double?
  ) {
    var pool = configs.enumerated().map { Trial(id: $0.offset, config: $0.element, scores: []) }
    func better(_ a: Int, _ b: Int) -> Bool {
      let x = pool[a].scores.last!.value
      let y = pool[b].scores.last!.value
      return (higherIsBetter ? x > y : x < y) || (x == y && a < b)
    }
    // A first rung of at least 3 epochs or iterations: one ALS sweep ranks settings by how
    // fast they start, not where they end.
    func rungs(_ full: Int) -> [Int] {
      [max(min(full, 3), full / 9), max(min(full, 3), full / 3), full]
    }
    let given = rungs(full(configs[0]))
    var alive = Array(pool.indices)
    for r in given.indices {
      if r > 0 {
        // The best third goes on (at least one); ties keep the earlier trial. The given
        // settings (trial 0) always go on, so that the search ends no worse on validation
        // than training without it, and so do the `protected` alternatives after it (a slow
        // starter such as Adam would otherwise be judged on its first few epochs).
        let keep = max(1, (alive.count + 2) / 3)
        alive = Array(alive.sorted(by: better).prefix(keep))
        for t in 0..<min(protected, pool.count) where !alive.contains(t) { alive.append(t) }
        if r < given.count - 1 && given[r] == given[r - 1] { continue }
      }
      for index in alive {
        if isCancelled?() == true { throw TrainingError.cancelled }
        let epochs = rungs(full(pool[index].config))[r]
        if let last = pool[index].scores.last, last.budget == epochs { continue }
        let (value, units) = try run(pool[index].config, epochs)
        pool[index].scores.append((epochs, value))
        pool[index].units = units
        report(pool[index])
      }
    }
    // The best other trial of the last rung. The best of many trials on one validation sample
    // is partly luck (the winner's curse): it replaces the given settings only when its gain
    // over them, unit by unit on the same validation rows, is beyond the noise of that gain.
    let others = alive.filter { $0 != 0 }
    guard let best = others.min(by: better) else { return (pool, 0, nil, nil, nil) }
    let g = pairedGain(pool[best].units, over: pool[0].units)
    let z = guardStandardErrors(candidates: others.count)
    return beatsBeyondNoise(g, standardErrors: z) ? (pool, best, nil, g, z) : (pool, 0, best, g, z)
  }

  /// Searches around `base` on `train` (training rows only). `fixed` names settings the user
  /// chose, which every trial keeps. `report` hears one line per finished trial.
  public static func tune(
    train: Interactions, base: ImplicitModelConfig, trials: Int, holdout: Double? = nil,
    threshold: Float? = nil, fixed: Set<String> = [], report: ((String) -> Void)? = nil,
    isCancelled: (@Sendable () -> Bool)? = nil
  ) throws -> Result<ImplicitModelConfig> {
    try checkTrials(trials)
    guard base.kind == "bpr" || base.kind == "als" || base.kind == "hybrid" else {
      throw TrainingError.invalidConfiguration(
        "tuning is for mf, bpr, als and hybrid (got \(base.kind)); set its hyperparameters by hand"
      )
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
    let preset = alternatives(to: base, fixed: fixed).prefix(trials - 1)
    var configs = [base] + preset
    while configs.count < trials { configs.append(draw(around: base, fixed: fixed, rng: &rng)) }
    var validationUsers = 0
    let unit = base.kind == "als" ? "iterations" : "epochs"
    let search = try halve(
      configs, protected: 1 + preset.count, full: budget(of:), higherIsBetter: true,
      isCancelled: isCancelled,
      run: { config, epochs in
        let config = with(budget: epochs, config)
        let model = try trainImplicit(
          data: fit, config: config, threshold: threshold, isCancelled: isCancelled)
        let evaluation = RankingEvaluator.evaluate(
          model: model, train: fit, test: validation,
          config: RankingEvaluationConfig(
            ks: [10], fullRanking: true, sampled: false, seed: seed,
            threads: max(1, config.threads), relevanceThreshold: threshold))
        validationUsers = evaluation.users
        return (
          evaluation.metrics["ndcg@10"] ?? 0, evaluation.userNDCG.map { ($0.user, $0.ndcg) }
        )
      },
      report: { trial in
        report?(
          "tune: trial \(trial.id + 1)/\(trials), \(trial.scores.last!.budget) \(unit): \(describe(trial.config)) -> validation ndcg@10 \(String(format: "%.4f", trial.scores.last!.value))"
        )
      })
    return Result(
      kind: base.kind, best: search.trials[search.winner].config, trials: search.trials,
      winner: search.winner, metric: "ndcg@10", validationSplit: validationSplit,
      validationRows: validation.count, validationUnits: validationUsers,
      runnerUp: search.runnerUp, gain: search.gain, guardThreshold: search.threshold,
      seconds: monotonicSeconds() - start)
  }

  /// An MF search: `trials` settings of learning rate, regularisation and dim around `base`,
  /// each trained on nine tenths of `train` (seeded) and scored by RMSE on the other tenth.
  public static func tune(
    train: Interactions, base: MFConfig, trials: Int, fixed: Set<String> = [],
    report: ((String) -> Void)? = nil, isCancelled: (@Sendable () -> Bool)? = nil
  ) throws -> Result<MFConfig> {
    try checkTrials(trials)
    let start = monotonicSeconds()
    let (fit, validation) = train.randomSplit(holdout: 0.1, seed: base.seed ^ 0x7475_6E65)
    if fit.isEmpty || validation.isEmpty {
      throw TrainingError.invalidData(
        "\(train.source): too few training rows (\(train.count)) to carve a validation tenth to tune on"
      )
    }
    var rng = Xoshiro256(seed: base.seed, stream: 0x7475_6E65)
    let preset = alternatives(to: base, fixed: fixed).prefix(trials - 1)
    var configs = [base] + preset
    while configs.count < trials { configs.append(draw(around: base, fixed: fixed, rng: &rng)) }
    let search = try halve(
      configs, protected: 1 + preset.count, full: \.epochs, higherIsBetter: false,
      isCancelled: isCancelled,
      run: { config, epochs in
        var config = config
        config.epochs = epochs
        config.earlyStoppingPatience = nil
        let model = try MFTrainer.train(fit, config: config)
        let errors = RatingMetrics.squaredErrors(model: model, on: validation)
        let mse = errors.reduce(0, +) / Double(max(1, errors.count))
        return (mse.squareRoot(), errors.enumerated().map { (Int32($0.offset), -$0.element) })
      },
      report: { trial in
        report?(
          "tune: trial \(trial.id + 1)/\(trials), \(trial.scores.last!.budget) epochs: \(describe(trial.config)) -> validation rmse \(String(format: "%.4f", trial.scores.last!.value))"
        )
      })
    return Result(
      kind: "mf", best: search.trials[search.winner].config, trials: search.trials,
      winner: search.winner, metric: "rmse",
      validationSplit: "random 0.1 of the training rows", validationRows: validation.count,
      validationUnits: validation.count, runnerUp: search.runnerUp, gain: search.gain,
      guardThreshold: search.threshold, seconds: monotonicSeconds() - start)
  }

  /// One line on a search recorded in model.json (`Result.json`): which trial won with which
  /// settings, its validation metric against the given settings', and the time; nil when the
  /// record is not a search.
  public static func summary(of record: JSONValue) -> String? {
    guard case .object(let tuning) = record, case .array(let trials)? = tuning["trials"],
      case .int(let w)? = tuning["winner"], Int(w) >= 0, Int(w) < trials.count,
      case .object(let winner) = trials[Int(w)]
    else { return nil }
    var metric = "metric"
    if case .string(let m)? = tuning["metric"] { metric = m }
    let key = metric.replacingOccurrences(of: "validation ", with: "")
    func last(_ trial: JSONValue) -> Double? {
      guard case .object(let t) = trial, case .array(let scores)? = t["scores"],
        case .object(let s)? = scores.last
      else { return nil }
      switch s[key] {
      case .double(let v)?: return v
      case .int(let v)?: return Double(v)
      default: return nil
      }
    }
    var settings = ""
    if case .object(let chosen)? = winner["settings"] {
      settings = chosen.keys.sorted().map { "\($0) \(chosen[$0]!.serialized(pretty: false))" }
        .joined(separator: ", ")
    }
    var line = "trial \(w + 1) of \(trials.count) won (\(settings))"
    if let best = last(trials[Int(w)]) {
      line += "; \(metric) " + String(format: "%.4f", best)
      if w != 0, let given = last(trials[0]) {
        line += String(format: " against %.4f with the given settings", given)
      } else if w == 0 {
        line += " (the given settings: no other trial beat them beyond the noise)"
      }
    }
    if case .double(let seconds)? = tuning["seconds"] {
      line += String(format: "; searched in %.1f s", seconds)
    }
    return line
  }

  static func checkTrials(_ trials: Int) throws {
    guard (1...200).contains(trials) else {
      throw TrainingError.invalidConfiguration("tune must be in 1...200 trials (got \(trials))")
    }
  }

  /// The mean over units scored by both of `trial`'s score minus `base`'s, and the standard
  /// error of that mean (sample standard deviation of the differences / √n). Pairing removes
  /// what the two share (how hard each user's held-out item is), which is most of the noise.
  static func pairedGain(
    _ trial: [(unit: Int32, score: Double)], over base: [(unit: Int32, score: Double)]
  ) -> (mean: Double, standardError: Double) {
    var d: [Double] = []
    d.reserveCapacity(min(trial.count, base.count))
    var a = 0
    var b = 0
    while a < trial.count && b < base.count {
      if trial[a].unit < base[b].unit {
        a += 1
      } else if trial[a].unit > base[b].unit {
        b += 1
      } else {
        d.append(trial[a].score - base[b].score)
        a += 1
        b += 1
      }
    }
    if d.isEmpty { return (0, .infinity) }
    let n = Double(d.count)
    let mean = d.reduce(0, +) / n
    if d.count < 2 { return (mean, .infinity) }
    let variance = d.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (n - 1)
    return (mean, (variance / n).squareRoot())
  }

  /// Whether a paired gain is beyond the noise: more than `standardErrors` standard errors
  /// above zero.
  static func beatsBeyondNoise(
    _ gain: (mean: Double, standardError: Double), standardErrors: Double
  ) -> Bool {
    gain.mean > 0 && gain.mean > standardErrors * gain.standardError
  }

  /// Epochs (BPR) or iterations (ALS).
  static func budget(of config: ImplicitModelConfig) -> Int {
    switch config {
    case .bpr(let c): return c.epochs
    case .als(let c): return c.iterations
    case .sasrec(let c): return c.epochs
    case .hybrid(let c, _): return c.epochs
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
    case .hybrid(var c, let inputs):
      c.epochs = budget
      return .hybrid(c, inputs)
    }
  }

  /// Log-uniform in [low, high].
  static func logUniform(_ low: Double, _ high: Double, _ rng: inout Xoshiro256) -> Float {
    Float(exp(log(low) + (log(high) - log(low)) * rng.nextDouble()))
  }

  /// Settings every search tries right after the given ones (before random draws), where a
  /// whole family of data prefers them: the given settings without the recency weight (logs
  /// whose order says little, such as baskets bought at once).
  static func alternatives(to base: ImplicitModelConfig, fixed: Set<String>)
    -> [ImplicitModelConfig]
  {
    if fixed.contains("recency_boost") { return [] }
    switch base {
    case .bpr(var c) where c.recencyBoost > 0:
      c.recencyBoost = 0
      return [.bpr(c)]
    case .als(var c) where c.recencyBoost > 0:
      c.recencyBoost = 0
      return [.als(c)]
    case .hybrid(var c, let inputs) where c.recencyBoost > 0:
      c.recencyBoost = 0
      return [.hybrid(c, inputs)]
    default:
      return []
    }
  }

  /// MF's: the other optimizer at its own default learning rate (Adam fits some rating sets
  /// better in the same epochs, SGD others), and each optimizer trained twice as long with more
  /// regularisation (0.08 for SGD, 0.1 for Adam), which held-out RMSE preferred on every
  /// MovieLens release (about 0.5-1% lower) but which a random draw rarely lands on. Settings
  /// the user gave are kept; duplicates of the given settings are dropped.
  static func alternatives(to base: MFConfig, fixed: Set<String>) -> [MFConfig] {
    var out: [MFConfig] = []
    for optimizer in [base.optimizer == .adam ? MFConfig.Optimizer.sgd : .adam, base.optimizer] {
      for longer in [false, true] {
        var c = base
        if !fixed.contains("optimizer") && !fixed.contains("lr") && optimizer != c.optimizer {
          c.use(optimizer)
        }
        if longer {
          if !fixed.contains("epochs") { c.epochs = min(2 * base.epochs, 100_000) }
          if !fixed.contains("reg") { c.regularization = c.optimizer == .adam ? 0.1 : 0.08 }
        }
        if c != base && !out.contains(c) { out.append(c) }
      }
    }
    return out
  }

  /// A recency weight: none a quarter of the time (some logs have no useful order), else a
  /// boost log-uniform in [1, 50] with a half-life log-uniform in [0.02, 0.5] of the history.
  static func drawRecency(_ rng: inout Xoshiro256) -> (boost: Float, halfLife: Float) {
    let none = rng.next() % 4 == 0
    let boost = logUniform(1, 50, &rng)
    let halfLife = logUniform(0.02, 0.5, &rng)
    return (none ? 0 : boost, halfLife)
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
      let (boost, halfLife) = drawRecency(&rng)
      if !fixed.contains("lr") { c.learningRate = lr }
      if !fixed.contains("reg") { c.regularization = reg }
      if !fixed.contains("negative_candidates") { c.negativeCandidates = candidates }
      if !fixed.contains("negative_sampling") { c.negativeSampling = sampling }
      if !fixed.contains("recency_boost") { c.recencyBoost = boost }
      if !fixed.contains("recency_half_life") { c.recencyHalfLife = halfLife }
      return .bpr(c)
    case .als(var c):
      let alpha = logUniform(0.05, 100, &rng)
      let reg = logUniform(0.01, 100, &rng)
      let (boost, halfLife) = drawRecency(&rng)
      if !fixed.contains("alpha") { c.alpha = alpha }
      if !fixed.contains("reg") { c.regularization = reg }
      if !fixed.contains("recency_boost") { c.recencyBoost = boost }
      if !fixed.contains("recency_half_life") { c.recencyHalfLife = halfLife }
      return .als(c)
    case .hybrid(var c, let inputs):
      let lr = logUniform(0.01, 0.2, &rng)
      let reg = rng.next() % 2 == 0 ? 0 : logUniform(1e-7, 1e-4, &rng)
      let identity = Float(0.2 + 0.6 * rng.nextDouble())
      let dropout = Float(0.8 * rng.nextDouble())
      let loss: HybridConfig.Loss = rng.next() % 3 == 0 ? .bpr : .warp
      if !fixed.contains("lr") { c.learningRate = lr }
      if !fixed.contains("item_reg") { c.itemRegularization = reg }
      if !fixed.contains("identity_weight") { c.identityWeight = identity }
      if !fixed.contains("content_dropout") { c.contentDropout = dropout }
      let (boost, halfLife) = drawRecency(&rng)
      if !fixed.contains("loss") { c.loss = loss }
      if !fixed.contains("recency_boost") { c.recencyBoost = boost }
      if !fixed.contains("recency_half_life") { c.recencyHalfLife = halfLife }
      return .hybrid(c, inputs)
    case .sasrec:
      return base
    }
  }

  /// A random MF setting: the optimizer (SGD or Adam; kept when the user gave it or a learning
  /// rate), the learning rate log-uniform within 1/3x-3x that optimizer's default, reg
  /// log-uniform in [0.01, 0.3], dim one of 32, 64, 128, 256, and 1, 2 or 3 times the given
  /// epochs (more epochs with more regularisation often fit better; the rungs scale with them).
  static func draw(around base: MFConfig, fixed: Set<String>, rng: inout Xoshiro256) -> MFConfig {
    var c = base
    let adam = rng.next() % 2 == 0
    if !fixed.contains("optimizer") && !fixed.contains("lr") { c.use(adam ? .adam : .sgd) }
    let center = Double(
      c.optimizer == .adam ? MFConfig.defaultAdamLearningRate : MFConfig().learningRate)
    let lr = logUniform(center / 3, center * 3, &rng)
    let reg = logUniform(0.01, 0.3, &rng)
    let dim = [32, 64, 128, 256][Int(rng.next() % 4)]
    let epochs = base.epochs * [1, 2, 3][Int(rng.next() % 3)]
    if !fixed.contains("epochs") { c.epochs = min(epochs, 100_000) }
    if !fixed.contains("lr") { c.learningRate = lr }
    if !fixed.contains("reg") { c.regularization = reg }
    if !fixed.contains("dim") { c.dim = dim }
    return c
  }

  public static func describe(_ c: MFConfig) -> String {
    "\(c.optimizer.rawValue) "
      + String(
        format: "lr %.4g reg %.4g dim %d", Double(c.learningRate), Double(c.regularization), c.dim)
  }

  public static func describe(_ config: ImplicitModelConfig) -> String {
    func f(_ x: Float) -> String { String(format: "%.4g", Double(x)) }
    switch config {
    case .bpr(let c):
      return
        "lr \(f(c.learningRate)) reg \(f(c.regularization)) negatives \(c.negativeCandidates) \(c.negativeSampling.rawValue) recency \(f(c.recencyBoost))/\(f(c.recencyHalfLife))"
    case .als(let c):
      return
        "alpha \(f(c.alpha)) reg \(f(c.regularization)) recency \(f(c.recencyBoost))/\(f(c.recencyHalfLife))"
    case .hybrid(let c, _):
      return
        "\(c.loss.rawValue) lr \(f(c.learningRate)) item_reg \(f(c.itemRegularization)) identity \(f(c.identityWeight)) dropout \(f(c.contentDropout)) recency \(f(c.recencyBoost))/\(f(c.recencyHalfLife))"
    case .sasrec:
      return "sasrec"
    }
  }
}
