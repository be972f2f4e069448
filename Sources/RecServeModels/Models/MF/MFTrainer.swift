import Dispatch

/// Hyperparameters of explicit matrix factorisation trained by SGD or Adam.
public struct MFConfig: Sendable, Equatable {
  /// The per-rating update rule.
  public enum Optimizer: String, Sendable, Equatable, CaseIterable {
    /// Plain SGD: x -= lr * g.
    case sgd
    /// Sparse ("lazy") Adam: first and second moments are kept for every parameter, but only the
    /// rows a rating touches (p_u, q_i, b_u, b_i) are updated, and each row's bias correction
    /// uses its own step count (how many ratings have updated that row), not a global one, so a
    /// rarely seen user gets a properly de-biased step. The L2 term is added to the gradient
    /// (coupled, as in torch.optim.Adam's weight_decay), not decoupled (AdamW).
    case adam
  }

  /// The learning rate `recserve train --optimizer adam` uses when --lr is not given.
  public static let defaultAdamLearningRate: Float = 0.002

  /// Switches to `optimizer` with its default learning rate (SGD's and Adam's differ by 15x);
  /// set `learningRate` after this to override it.
  public mutating func use(_ optimizer: Optimizer) {
    self.optimizer = optimizer
    learningRate = optimizer == .adam ? Self.defaultAdamLearningRate : MFConfig().learningRate
  }

  /// Latent dimension.
  public var dim: Int
  public var epochs: Int
  /// Initial learning rate; multiplied by `learningRateDecay` after every epoch.
  public var learningRate: Float
  public var learningRateDecay: Float
  /// L2 regularisation of the factors.
  public var regularization: Float
  /// L2 regularisation of the biases.
  public var biasRegularization: Float
  /// Standard deviation of the initial factors.
  public var initStd: Float
  public var seed: UInt64
  /// Worker threads. With more than one, the rating matrix is cut into blocks and blocks that
  /// share no user and no item are trained at the same time (DSGD strata), so the result is still
  /// deterministic for a seed (but differs from the single-threaded one).
  public var threads: Int
  public var optimizer: Optimizer
  /// Adam's decay of the first-moment (mean) estimate.
  public var beta1: Float
  /// Adam's decay of the second-moment (uncentred variance) estimate.
  public var beta2: Float
  /// Adam's denominator guard, applied inside the root: step = lr_t · m / √(v + epsilon²) with
  /// lr_t = lr · √(1 − β2^t) / (1 − β1^t) (Kingma and Ba's efficient form).
  public var epsilon: Float
  /// Stop after this many epochs without a lower validation RMSE and return the best epoch's
  /// factors. nil trains every epoch and returns the last. Needs validation rows:
  /// `MFTrainer.train` throws without them; `trainAndPublishMF` carves them out of the training
  /// split (`validationFraction`), never out of the held-out test rows.
  public var earlyStoppingPatience: Int?
  /// With early stopping, the fraction of the training split `trainAndPublishMF` sets aside
  /// (seeded) as validation rows.
  public var validationFraction: Double

  public init(
    dim: Int = 64, epochs: Int = 20, learningRate: Float = 0.03, learningRateDecay: Float = 0.97,
    regularization: Float = 0.05, biasRegularization: Float = 0.05, initStd: Float = 0.01,
    seed: UInt64 = 42, threads: Int = 1, optimizer: Optimizer = .sgd, beta1: Float = 0.9,
    beta2: Float = 0.999, epsilon: Float = 1e-8, earlyStoppingPatience: Int? = nil,
    validationFraction: Double = 0.1
  ) {
    self.dim = dim
    self.epochs = epochs
    self.learningRate = learningRate
    self.learningRateDecay = learningRateDecay
    self.regularization = regularization
    self.biasRegularization = biasRegularization
    self.initStd = initStd
    self.seed = seed
    self.threads = threads
    self.optimizer = optimizer
    self.beta1 = beta1
    self.beta2 = beta2
    self.epsilon = epsilon
    self.earlyStoppingPatience = earlyStoppingPatience
    self.validationFraction = validationFraction
  }

  public func validate() throws {
    func bad(_ m: String) -> TrainingError { .invalidConfiguration(m) }
    if dim < 1 || dim > 4096 { throw bad("dim must be in 1...4096 (got \(dim))") }
    if epochs < 1 || epochs > 100_000 { throw bad("epochs must be in 1...100000 (got \(epochs))") }
    if !(learningRate > 0) || !learningRate.isFinite || learningRate > 10 {
      throw bad("lr must be a positive number up to 10 (got \(learningRate))")
    }
    if !(learningRateDecay > 0) || learningRateDecay > 1 {
      throw bad("lr decay must be in (0, 1] (got \(learningRateDecay))")
    }
    if !(regularization >= 0) || !regularization.isFinite {
      throw bad("reg must be a finite number >= 0 (got \(regularization))")
    }
    if !(biasRegularization >= 0) || !biasRegularization.isFinite {
      throw bad("bias reg must be a finite number >= 0 (got \(biasRegularization))")
    }
    if !(initStd >= 0) || !initStd.isFinite { throw bad("init std must be >= 0 (got \(initStd))") }
    if threads < 1 || threads > 256 { throw bad("threads must be in 1...256 (got \(threads))") }
    if !(beta1 >= 0 && beta1 < 1) { throw bad("beta1 must be in [0, 1) (got \(beta1))") }
    if !(beta2 >= 0 && beta2 < 1) { throw bad("beta2 must be in [0, 1) (got \(beta2))") }
    if !(epsilon > 0) || !epsilon.isFinite {
      throw bad("epsilon must be a positive number (got \(epsilon))")
    }
    if let p = earlyStoppingPatience, p < 1 || p > 100_000 {
      throw bad("early stopping patience must be in 1...100000 (got \(p))")
    }
    if !(validationFraction > 0 && validationFraction < 1) {
      throw bad("validation fraction must be in (0, 1) (got \(validationFraction))")
    }
  }

  /// For model.json.
  public var hyperparameters: [String: JSONValue] {
    // Floats written with their shortest decimal form (0.03, not 0.029999999329447746).
    func d(_ x: Float) -> JSONValue { .double(Double("\(x)") ?? Double(x)) }
    var h: [String: JSONValue] = [
      "dim": .int(Int64(dim)), "epochs": .int(Int64(epochs)), "lr": d(learningRate),
      "lr_decay": d(learningRateDecay), "reg": d(regularization),
      "reg_bias": d(biasRegularization), "init_std": d(initStd),
      "seed": .int(Int64(bitPattern: seed)), "optimizer": .string(optimizer.rawValue),
      "threads": .int(Int64(threads)),
    ]
    if optimizer == .adam {
      h["beta1"] = d(beta1)
      h["beta2"] = d(beta2)
      h["epsilon"] = d(epsilon)
    }
    if let p = earlyStoppingPatience {
      h["early_stopping_patience"] = .int(Int64(p))
      h["validation_fraction"] = .double(validationFraction)
    }
    return h
  }
}

/// What happened during one `MFTrainer.trainWithSummary` run.
public struct MFTrainingSummary: Sendable, Equatable {
  /// Epochs actually run (less than `config.epochs` when early stopping fired).
  public var epochsRun: Int
  /// The epoch with the lowest validation RMSE (nil without validation rows).
  public var bestEpoch: Int?
  public var bestValidationRMSE: Double?
  /// Whether early stopping ended training before `config.epochs`.
  public var stoppedEarly: Bool
}

/// Trains `MFModel`s: μ + b_u + b_i + p_u·q_i fitted by SGD or sparse Adam over the ratings in a
/// freshly shuffled (seeded) order every epoch, with L2 regularisation, a per-epoch
/// learning-rate decay and optional early stopping on validation RMSE. Deterministic for a seed.
public enum MFTrainer {
  struct Rating {
    var user: Int32
    var item: Int32
    var value: Float
  }

  /// Trains on every row of `data`. With `validation`, each epoch's progress carries its RMSE and
  /// MAE (users and items matched by id). Throws `TrainingError`.
  public static func train(
    _ data: Interactions, config: MFConfig, validation: Interactions? = nil,
    progress: TrainingProgressHandler? = nil
  ) throws -> MFModel {
    try trainWithSummary(data, config: config, validation: validation, progress: progress).model
  }

  /// `train`, also returning the epochs run and the best validation epoch. With
  /// `config.earlyStoppingPatience` the model is the best validation epoch's (a copy of its
  /// parameters is kept), and `validation` must have rows.
  public static func trainWithSummary(
    _ data: Interactions, config: MFConfig, validation: Interactions? = nil,
    progress: TrainingProgressHandler? = nil
  ) throws -> (model: MFModel, summary: MFTrainingSummary) {
    try config.validate()
    if data.isEmpty { throw TrainingError.invalidData("\(data.source): no ratings to train on") }
    if config.earlyStoppingPatience != nil && (validation?.isEmpty ?? true) {
      throw TrainingError.invalidConfiguration(
        "early stopping needs validation rows (none were given)")
    }
    let start = monotonicSeconds()
    let U = data.userCount
    let I = data.itemCount
    let D = config.dim
    let n = data.count
    var rng = Xoshiro256(seed: config.seed, stream: 0x1417)

    let (mu, range) = meanAndRange(data.ratings)
    // Uniform initialisation with the configured standard deviation (cheaper than Gaussian and
    // just as good for SGD).
    var P = uniform(count: U * D, std: config.initStd, rng: &rng)
    var Q = uniform(count: I * D, std: config.initStd, rng: &rng)
    var bu = [Float](repeating: 0, count: U)
    var bi = [Float](repeating: 0, count: I)
    // Adam state: moments of every parameter, then per-row beta1^t and beta2^t (t = the row's
    // own update count), for P|bu (users) and Q|bi (items). Empty with SGD.
    let adam = config.optimizer == .adam
    let state = AdamState(users: adam ? U : 0, items: adam ? I : 0, dim: D)
    let checks = validation.map { ValidationRows($0, of: data) }

    var lr = config.learningRate
    // The ratings as (user, item, value) records, either cut into blocks or, when one shuffled
    // pass is best, in one array: never both (12 bytes a rating; 240 MB for 20M ratings).
    var plan = BlockPlan(data, users: U, items: I, dim: D, threads: config.threads, rng: &rng)
    var ratings = plan == nil ? MFTrainer.records(data) : []
    var best = BestEpoch(patience: config.earlyStoppingPatience)
    var epochsRun = 0
    var stoppedEarly = false
    for epoch in 1...config.epochs {
      let sse = runEpoch(
        epoch, P: &P, Q: &Q, bu: &bu, bi: &bi, state: state, plan: plan, ratings: &ratings,
        rng: &rng, config: config, mu: mu, lr: lr)
      epochsRun = epoch
      lr *= config.learningRateDecay
      let loss = (sse / Double(n)).squareRoot()
      if !loss.isFinite {
        throw TrainingError.invalidConfiguration(
          "training diverged at epoch \(epoch) (loss is not finite); use a lower learning rate than \(config.learningRate)"
        )
      }
      var metrics: [String: Double] = [:]
      if let checks, !checks.users.isEmpty {
        let acc = checks.errors(P: P, Q: Q, bu: bu, bi: bi, dim: D, mu: mu, range: range)
        metrics = ["rmse": acc.rmse, "mae": acc.mae]
        best.record(epoch: epoch, rmse: acc.rmse) { (P, Q, bu, bi) }
      }
      let stop = best.stops(after: epoch)
      try report(
        progress, epoch: epoch, of: config.epochs, loss: loss, validation: metrics,
        started: start, stopping: stop)
      if stop {
        stoppedEarly = epoch < config.epochs
        break
      }
    }
    plan = nil
    ratings = []
    if let kept = best.parameters { (P, Q, bu, bi) = kept }
    let model = try makeModel(
      data, dim: D, mu: mu, range: range, P: P, Q: Q, bu: bu, bi: bi,
      learningRate: config.learningRate)
    let summary = MFTrainingSummary(
      epochsRun: epochsRun, bestEpoch: best.best?.epoch, bestValidationRMSE: best.best?.rmse,
      stoppedEarly: stoppedEarly)
    return (model, summary)
  }

  /// The lowest validation RMSE so far and its epoch; with early stopping (`patience`), a copy
  /// of that epoch's parameters, and whether `patience` epochs have passed without a lower one.
  struct BestEpoch {
    typealias Parameters = (P: [Float], Q: [Float], bu: [Float], bi: [Float])
    let patience: Int?
    var best: (epoch: Int, rmse: Double)? = nil
    var parameters: Parameters? = nil

    init(patience: Int?) { self.patience = patience }

    mutating func record(epoch: Int, rmse: Double, parameters: () -> Parameters) {
      if best == nil || rmse < best!.rmse {
        best = (epoch, rmse)
        if patience != nil { self.parameters = parameters() }
      }
    }

    func stops(after epoch: Int) -> Bool {
      guard let patience, let best else { return false }
      return epoch - best.epoch >= patience
    }
  }

  /// Tells `progress` about an epoch (with an estimate of the time left, 0 when stopping);
  /// throws `TrainingError.cancelled` when it answers false.
  static func report(
    _ progress: TrainingProgressHandler?, epoch: Int, of epochs: Int, loss: Double,
    validation: [String: Double], started start: Double, stopping: Bool
  ) throws {
    guard let progress else { return }
    let elapsed = monotonicSeconds() - start
    let eta = stopping ? 0 : elapsed / Double(epoch) * Double(epochs - epoch)
    let report = TrainingProgress(
      epoch: epoch, epochs: epochs, loss: loss, validation: validation,
      elapsedSeconds: elapsed, etaSeconds: eta)
    if !progress(report) { throw TrainingError.cancelled }
  }

  /// The trained model, once every parameter is checked finite.
  static func makeModel(
    _ data: Interactions, dim D: Int, mu: Float, range: ClosedRange<Float>?, P: [Float],
    Q: [Float], bu: [Float], bi: [Float], learningRate: Float
  ) throws -> MFModel {
    for values in [P, Q, bu, bi] where !values.allSatisfy({ $0.isFinite }) {
      throw TrainingError.invalidConfiguration(
        "training diverged (parameters are not finite); use a lower learning rate than \(learningRate)"
      )
    }
    let csr = SeenItems.build(
      users: data.users, items: data.items, userCount: data.userCount, itemCount: data.itemCount)
    return MFModel(
      kind: "mf", dim: D, userIds: data.userIds, itemIds: data.itemIds,
      userLookup: data.userLookup, itemLookup: data.itemLookup, globalMean: mu,
      ratingRange: range, userFactors: P, itemFactors: Q, userBias: bu, itemBias: bi, csr: csr)
  }

  /// One pass over the ratings (the block plan's, or one shuffled array); returns the sum of
  /// squared errors seen during the pass.
  static func runEpoch(
    _ epoch: Int, P: inout [Float], Q: inout [Float], bu: inout [Float], bi: inout [Float],
    state: AdamState, plan: BlockPlan?, ratings: inout [Rating], rng: inout Xoshiro256,
    config: MFConfig, mu: Float, lr: Float
  ) -> Double {
    P.withUnsafeMutableBufferPointer { pBuf in
      Q.withUnsafeMutableBufferPointer { qBuf in
        bu.withUnsafeMutableBufferPointer { buBuf in
          bi.withUnsafeMutableBufferPointer { biBuf in
            state.withPointers { adamPointers in
              let params = Parameters(
                P: pBuf.baseAddress!, Q: qBuf.baseAddress!, bu: buBuf.baseAddress!,
                bi: biBuf.baseAddress!, dim: config.dim, mu: mu, lr: lr,
                reg: config.regularization, regBias: config.biasRegularization,
                adam: adamPointers, beta1: config.beta1, beta2: config.beta2,
                epsilon: config.epsilon)
              if let plan {
                return plan.runEpoch(epoch: epoch, seed: config.seed, params: params)
              }
              ratings.withUnsafeMutableBufferPointer { rng.shuffle($0) }
              return ratings.withUnsafeBufferPointer { epochPass($0, params) }
            }
          }
        }
      }
    }
  }

  /// The mean rating, and the range of the ratings when they are not all the same.
  static func meanAndRange(_ ratings: [Float]) -> (mean: Float, range: ClosedRange<Float>?) {
    var sum = 0.0
    var lo = Float.infinity
    var hi = -Float.infinity
    for v in ratings {
      sum += Double(v)
      lo = min(lo, v)
      hi = max(hi, v)
    }
    return (Float(sum / Double(ratings.count)), lo < hi ? lo...hi : nil)
  }

  /// `count` values uniform in ±std·√3 (standard deviation `std`).
  static func uniform(count: Int, std: Float, rng: inout Xoshiro256) -> [Float] {
    let a = std * Float(3).squareRoot()
    var values = [Float](repeating: 0, count: count)
    for k in 0..<count { values[k] = (2 * rng.nextFloat() - 1) * a }
    return values
  }

  /// Validation rows mapped to the training data's indices (-1: unknown to it).
  struct ValidationRows {
    var users: [Int32]
    var items: [Int32]
    var ratings: [Float]

    init(_ validation: Interactions, of data: Interactions) {
      let um = validation.userIds.map { data.userIndex($0) ?? -1 }
      let im = validation.itemIds.map { data.itemIndex($0) ?? -1 }
      users = validation.users.map { um[Int($0)] }
      items = validation.items.map { im[Int($0)] }
      ratings = validation.ratings
    }

    /// The errors of the model the parameters make, predictions clamped to `range`.
    func errors(
      P: [Float], Q: [Float], bu: [Float], bi: [Float], dim D: Int, mu: Float,
      range: ClosedRange<Float>?
    ) -> ErrorAccumulator {
      var acc = ErrorAccumulator()
      P.withUnsafeBufferPointer { p in
        Q.withUnsafeBufferPointer { q in
          for r in 0..<users.count {
            let u = Int(users[r])
            let i = Int(items[r])
            var s = mu
            if u >= 0 { s += bu[u] }
            if i >= 0 { s += bi[i] }
            if u >= 0 && i >= 0 {
              s += VectorMath.dot(p.baseAddress! + u * D, q.baseAddress! + i * D, D)
            }
            if let range { s = min(range.upperBound, max(range.lowerBound, s)) }
            acc.add(predicted: s, actual: ratings[r])
          }
        }
      }
      return acc
    }
  }

  /// Every row of `data` as a `Rating`, in row order.
  static func records(_ data: Interactions) -> [Rating] {
    var ratings = [Rating]()
    ratings.reserveCapacity(data.count)
    for r in 0..<data.count {
      ratings.append(Rating(user: data.users[r], item: data.items[r], value: data.ratings[r]))
    }
    return ratings
  }

  /// Adam's per-parameter moments and per-row bias-correction powers, in one allocation that
  /// lives as long as the training run.
  final class AdamState {
    let pointers: AdamPointers?
    private let storage: UnsafeMutablePointer<Float>?

    init(users U: Int, items I: Int, dim D: Int) {
      if U == 0 && I == 0 {
        pointers = nil
        storage = nil
        return
      }
      let sizes = [U * D, U * D, I * D, I * D, U, U, I, I, 2 * U, 2 * I]
      let total = sizes.reduce(0, +)
      let base = UnsafeMutablePointer<Float>.allocate(capacity: total)
      base.initialize(repeating: 0, count: total)
      storage = base
      var offsets: [Int] = []
      var o = 0
      for n in sizes {
        offsets.append(o)
        o += n
      }
      // beta^0 = 1 for every row.
      (base + offsets[8]).update(repeating: 1, count: 2 * U + 2 * I)
      pointers = AdamPointers(
        mP: base + offsets[0], vP: base + offsets[1], mQ: base + offsets[2],
        vQ: base + offsets[3], mbu: base + offsets[4], vbu: base + offsets[5],
        mbi: base + offsets[6], vbi: base + offsets[7], powU: base + offsets[8],
        powI: base + offsets[9])
    }

    deinit { storage?.deallocate() }

    func withPointers<R>(_ body: (AdamPointers?) -> R) -> R { body(pointers) }
  }

  struct AdamPointers {
    // powU[2u], powU[2u + 1]: beta1^t and beta2^t of user row u (t = its update count); powI
    // likewise for items.
    var mP: UnsafeMutablePointer<Float>
    var vP: UnsafeMutablePointer<Float>
    var mQ: UnsafeMutablePointer<Float>
    var vQ: UnsafeMutablePointer<Float>
    var mbu: UnsafeMutablePointer<Float>
    var vbu: UnsafeMutablePointer<Float>
    var mbi: UnsafeMutablePointer<Float>
    var vbi: UnsafeMutablePointer<Float>
    var powU: UnsafeMutablePointer<Float>
    var powI: UnsafeMutablePointer<Float>
  }

  /// Raw parameter pointers and step settings for one epoch.
  struct Parameters: @unchecked Sendable {
    var P: UnsafeMutablePointer<Float>
    var Q: UnsafeMutablePointer<Float>
    var bu: UnsafeMutablePointer<Float>
    var bi: UnsafeMutablePointer<Float>
    var dim: Int
    var mu: Float
    var lr: Float
    var reg: Float
    var regBias: Float
    /// nil: SGD.
    var adam: AdamPointers? = nil
    var beta1: Float = 0.9
    var beta2: Float = 0.999
    var epsilon: Float = 1e-8
  }

  /// One pass over `rs` with the configured optimizer; returns the sum of squared errors seen
  /// before each update.
  static func epochPass(_ rs: UnsafeBufferPointer<Rating>, _ p: Parameters) -> Double {
    p.adam == nil ? sgdEpoch(rs, p) : adamEpoch(rs, p)
  }

  /// One pass of SGD over `rs`; returns the sum of squared errors seen before each update.
  static func sgdEpoch(_ rs: UnsafeBufferPointer<Rating>, _ p: Parameters) -> Double {
    let P = p.P
    let Q = p.Q
    let bu = p.bu
    let bi = p.bi
    let D = p.dim
    let mu = p.mu
    let lr = p.lr
    let reg = p.reg
    let regBias = p.regBias
    var sse = 0.0
    for r in rs {
      let u = Int(r.user)
      let i = Int(r.item)
      let pu = P + u * D
      let qi = Q + i * D
      let pred = mu + bu[u] + bi[i] + VectorMath.dot(pu, qi, D)
      let e = r.value - pred
      sse += Double(e * e)
      bu[u] += lr * (e - regBias * bu[u])
      bi[i] += lr * (e - regBias * bi[i])
      VectorMath.sgdStep(pu, qi, D, error: e, lr: lr, reg: reg)
    }
    return sse
  }

  /// One pass of sparse Adam over `rs` (see `MFConfig.Optimizer.adam`); returns the sum of
  /// squared errors seen before each update. Gradients of ½e² + ½reg‖·‖²:
  /// g(p_u) = −e·q_i + reg·p_u, g(q_i) = −e·p_u + reg·q_i, g(b) = −e + regBias·b.
  static func adamEpoch(_ rs: UnsafeBufferPointer<Rating>, _ p: Parameters) -> Double {
    let s = p.adam!
    let P = p.P
    let Q = p.Q
    let bu = p.bu
    let bi = p.bi
    let D = p.dim
    let mu = p.mu
    let lr = p.lr
    let reg = p.reg
    let regBias = p.regBias
    let b1 = p.beta1
    let b2 = p.beta2
    let eps = p.epsilon
    var sse = 0.0
    for r in rs {
      let u = Int(r.user)
      let i = Int(r.item)
      let pu = P + u * D
      let qi = Q + i * D
      let pred = mu + bu[u] + bi[i] + VectorMath.dot(pu, qi, D)
      let e = r.value - pred
      sse += Double(e * e)
      // Per-row step sizes with bias correction: lr·√(1−β2^t)/(1−β1^t).
      let pu1 = s.powU[2 * u] * b1
      let pu2 = s.powU[2 * u + 1] * b2
      s.powU[2 * u] = pu1
      s.powU[2 * u + 1] = pu2
      let pi1 = s.powI[2 * i] * b1
      let pi2 = s.powI[2 * i + 1] * b2
      s.powI[2 * i] = pi1
      s.powI[2 * i + 1] = pi2
      let stepU = lr * (1 - pu2).squareRoot() / (1 - pu1)
      let stepI = lr * (1 - pi2).squareRoot() / (1 - pi1)
      // Biases.
      let gbu = -e + regBias * bu[u]
      let mbu = b1 * s.mbu[u] + (1 - b1) * gbu
      let vbu = b2 * s.vbu[u] + (1 - b2) * gbu * gbu
      s.mbu[u] = mbu
      s.vbu[u] = vbu
      bu[u] -= stepU * mbu / (vbu + eps * eps).squareRoot()
      let gbi = -e + regBias * bi[i]
      let mbi = b1 * s.mbi[i] + (1 - b1) * gbi
      let vbi = b2 * s.vbi[i] + (1 - b2) * gbi * gbi
      s.mbi[i] = mbi
      s.vbi[i] = vbi
      bi[i] -= stepI * mbi / (vbi + eps * eps).squareRoot()
      // Factors (both gradients from the old p_u and q_i).
      let mp = s.mP + u * D
      let vp = s.vP + u * D
      let mq = s.mQ + i * D
      let vq = s.vQ + i * D
      adamRowStep(
        pu, qi, mp, vp, mq, vq, D, error: e, reg: reg, stepU: stepU, stepI: stepI, b1: b1,
        b2: b2, eps: eps)
    }
    return sse
  }

  /// 1/√x for positive normal x: the bit-trick estimate refined by two Newton steps (relative
  /// error below 1e-5). Swift's SIMD square root and division become per-lane libm calls on
  /// Linux, which made Adam 8x slower than SGD; this stays in vector multiply-adds.
  @inline(__always)
  static func rsqrt(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let bits = unsafeBitCast(x, to: SIMD8<UInt32>.self)
    var y = unsafeBitCast(
      SIMD8<UInt32>(repeating: 0x5F37_5A86) &- (bits &>> 1), to: SIMD8<Float>.self)
    let half = 0.5 * x
    y = y * (1.5 - half * y * y)
    return y * (1.5 - half * y * y)
  }

  /// Adam on the factor rows p (moments mp, vp) and q (mq, vq) for one rating with error e,
  /// both gradients from the old values; eight lanes at a time.
  @inline(__always)
  static func adamRowStep(
    _ p: UnsafeMutablePointer<Float>, _ q: UnsafeMutablePointer<Float>,
    _ mp: UnsafeMutablePointer<Float>, _ vp: UnsafeMutablePointer<Float>,
    _ mq: UnsafeMutablePointer<Float>, _ vq: UnsafeMutablePointer<Float>, _ D: Int,
    error e: Float, reg: Float, stepU: Float, stepI: Float, b1: Float, b2: Float, eps: Float
  ) {
    typealias V = SIMD8<Float>
    var k = 0
    let ve = V(repeating: e)
    let vreg = V(repeating: reg)
    let vb1 = V(repeating: b1)
    let vb2 = V(repeating: b2)
    let va1 = V(repeating: 1 - b1)
    let va2 = V(repeating: 1 - b2)
    let veps2 = V(repeating: eps * eps)
    let vsu = V(repeating: stepU)
    let vsi = V(repeating: stepI)
    func load(_ x: UnsafeMutablePointer<Float>) -> V {
      UnsafeRawPointer(x + k).loadUnaligned(as: V.self)
    }
    func store(_ v: V, _ x: UnsafeMutablePointer<Float>) {
      UnsafeMutableRawPointer(x + k).storeBytes(of: v, as: V.self)
    }
    while k + 8 <= D {
      let pk = load(p)
      let qk = load(q)
      let gp = vreg * pk - ve * qk
      let gq = vreg * qk - ve * pk
      let m1 = vb1 * load(mp) + va1 * gp
      let v1 = vb2 * load(vp) + va2 * gp * gp
      let m2 = vb1 * load(mq) + va1 * gq
      let v2 = vb2 * load(vq) + va2 * gq * gq
      store(m1, mp)
      store(v1, vp)
      store(m2, mq)
      store(v2, vq)
      store(pk - vsu * m1 * rsqrt(v1 + veps2), p)
      store(qk - vsi * m2 * rsqrt(v2 + veps2), q)
      k += 8
    }
    while k < D {
      let pk = p[k]
      let qk = q[k]
      let gp = reg * pk - e * qk
      let gq = reg * qk - e * pk
      let m1 = b1 * mp[k] + (1 - b1) * gp
      let v1 = b2 * vp[k] + (1 - b2) * gp * gp
      let m2 = b1 * mq[k] + (1 - b1) * gq
      let v2 = b2 * vq[k] + (1 - b2) * gq * gq
      mp[k] = m1
      vp[k] = v1
      mq[k] = m2
      vq[k] = v2
      p[k] = pk - stepU * m1 / (v1 + eps * eps).squareRoot()
      q[k] = qk - stepI * m2 / (v2 + eps * eps).squareRoot()
      k += 1
    }
  }
}

/// Cuts the rating matrix into B x B blocks by random user and item groups. Used when the factor
/// rows do not fit in cache (each block's rows then do) or when training on several threads: an
/// epoch walks B strata in random order, stratum s holding blocks (g, (g + s) mod B), which share
/// no user and no item and so can be trained in parallel without locks or races. Shuffles use
/// per-block random streams, so results do not depend on thread timing.
final class BlockPlan: @unchecked Sendable {
  let blocks: Int
  let threads: Int
  private let ratings: UnsafeMutablePointer<MFTrainer.Rating>
  private let offsets: [Int]

  /// nil when one shuffled pass over everything is best (small data, one thread).
  init?(
    _ data: Interactions, users U: Int, items I: Int, dim D: Int, threads: Int,
    rng: inout Xoshiro256
  ) {
    let factorBytes = (U + I) * D * MemoryLayout<Float>.size
    let cacheBlocks =
      factorBytes <= (4 << 20) ? 1 : min(64, (factorBytes + (2 << 20) - 1) / (2 << 20))
    let threadBlocks = threads > 1 ? 2 * threads : 1
    let B = max(cacheBlocks, threadBlocks)
    if B == 1 { return nil }
    blocks = B
    self.threads = threads
    func groups(_ n: Int) -> [Int32] {
      var perm = (0..<n).map { Int32($0) }
      perm.withUnsafeMutableBufferPointer { rng.shuffle($0) }
      var g = [Int32](repeating: 0, count: n)
      for (k, x) in perm.enumerated() { g[Int(x)] = Int32(k % B) }
      return g
    }
    let ug = groups(U)
    let ig = groups(I)
    let n = data.count
    let users = data.users
    let items = data.items
    let values = data.ratings
    var counts = [Int](repeating: 0, count: B * B + 1)
    for r in 0..<n { counts[Int(ug[Int(users[r])]) * B + Int(ig[Int(items[r])]) + 1] += 1 }
    for b in 0..<(B * B) { counts[b + 1] += counts[b] }
    offsets = counts
    ratings = .allocate(capacity: max(n, 1))
    var fill = counts
    for r in 0..<n {
      let b = Int(ug[Int(users[r])]) * B + Int(ig[Int(items[r])])
      (ratings + fill[b]).initialize(
        to: MFTrainer.Rating(user: users[r], item: items[r], value: values[r]))
      fill[b] += 1
    }
  }

  deinit { ratings.deallocate() }

  func runEpoch(epoch: Int, seed: UInt64, params: MFTrainer.Parameters) -> Double {
    let B = blocks
    var order = Array(0..<B)
    var rng = Xoshiro256(seed: seed &+ UInt64(epoch), stream: 0xB10C)
    order.withUnsafeMutableBufferPointer { rng.shuffle($0) }
    let T = min(threads, B)
    let partial = UnsafeMutableBufferPointer<Double>.allocate(capacity: T)
    defer { partial.deallocate() }
    partial.initialize(repeating: 0)
    for s in order {
      let work = { (t: Int) in
        var g = t
        while g < B {
          let b = g * B + (g + s) % B
          let start = self.offsets[b]
          let end = self.offsets[b + 1]
          if end > start {
            let segment = UnsafeMutableBufferPointer(
              start: self.ratings + start, count: end - start)
            var local = Xoshiro256(
              seed: seed, stream: UInt64(epoch) &* 0x1_0000_0000 &+ UInt64(b) &+ 0x5EED)
            local.shuffle(segment)
            partial[t] += MFTrainer.epochPass(UnsafeBufferPointer(segment), params)
          }
          g += T
        }
      }
      Parallel.run(T, work)
    }
    return partial.reduce(0, +)
  }
}
