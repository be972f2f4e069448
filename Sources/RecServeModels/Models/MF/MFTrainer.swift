import Dispatch

/// Hyperparameters of explicit matrix factorisation trained by SGD.
public struct MFConfig: Sendable, Equatable {
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

  public init(
    dim: Int = 64, epochs: Int = 20, learningRate: Float = 0.03, learningRateDecay: Float = 0.97,
    regularization: Float = 0.05, biasRegularization: Float = 0.05, initStd: Float = 0.01,
    seed: UInt64 = 42, threads: Int = 1
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
  }

  /// For model.json.
  public var hyperparameters: [String: JSONValue] {
    // Floats written with their shortest decimal form (0.03, not 0.029999999329447746).
    func d(_ x: Float) -> JSONValue { .double(Double("\(x)") ?? Double(x)) }
    return [
      "dim": .int(Int64(dim)), "epochs": .int(Int64(epochs)), "lr": d(learningRate),
      "lr_decay": d(learningRateDecay), "reg": d(regularization),
      "reg_bias": d(biasRegularization), "init_std": d(initStd),
      "seed": .int(Int64(bitPattern: seed)), "optimizer": .string("sgd"),
      "threads": .int(Int64(threads)),
    ]
  }
}

/// Trains `MFModel`s: μ + b_u + b_i + p_u·q_i fitted by SGD over the ratings in a freshly
/// shuffled (seeded) order every epoch, with L2 regularisation and a per-epoch learning-rate
/// decay. Single-threaded and deterministic for a seed.
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
    try config.validate()
    if data.isEmpty { throw TrainingError.invalidData("\(data.source): no ratings to train on") }
    let start = monotonicSeconds()
    let U = data.userCount
    let I = data.itemCount
    let D = config.dim
    let n = data.count
    var rng = Xoshiro256(seed: config.seed, stream: 0x1417)

    var sum = 0.0
    var lo = Float.infinity
    var hi = -Float.infinity
    var ratings = [Rating]()
    ratings.reserveCapacity(n)
    for r in 0..<n {
      let v = data.ratings[r]
      sum += Double(v)
      lo = min(lo, v)
      hi = max(hi, v)
      ratings.append(Rating(user: data.users[r], item: data.items[r], value: v))
    }
    let mu = Float(sum / Double(n))
    let range: ClosedRange<Float>? = lo < hi ? lo...hi : nil

    var P = [Float](repeating: 0, count: U * D)
    var Q = [Float](repeating: 0, count: I * D)
    // Uniform initialisation with the configured standard deviation (cheaper than Gaussian and
    // just as good for SGD).
    let a = config.initStd * Float(3).squareRoot()
    for k in 0..<P.count { P[k] = (2 * rng.nextFloat() - 1) * a }
    for k in 0..<Q.count { Q[k] = (2 * rng.nextFloat() - 1) * a }
    var bu = [Float](repeating: 0, count: U)
    var bi = [Float](repeating: 0, count: I)

    // Validation rows mapped to training indices (-1 = unknown).
    var vUsers: [Int32] = []
    var vItems: [Int32] = []
    var vRatings: [Float] = []
    if let validation, !validation.isEmpty {
      let um = validation.userIds.map { data.userIndex($0) ?? -1 }
      let im = validation.itemIds.map { data.itemIndex($0) ?? -1 }
      vUsers = validation.users.map { um[Int($0)] }
      vItems = validation.items.map { im[Int($0)] }
      vRatings = validation.ratings
    }

    var lr = config.learningRate
    let reg = config.regularization
    let regB = config.biasRegularization
    let plan = BlockPlan(
      ratings: ratings, users: U, items: I, dim: D, threads: config.threads, rng: &rng)
    for epoch in 1...config.epochs {
      let sse = P.withUnsafeMutableBufferPointer { pBuf in
        Q.withUnsafeMutableBufferPointer { qBuf in
          bu.withUnsafeMutableBufferPointer { buBuf in
            bi.withUnsafeMutableBufferPointer { biBuf in
              let params = Parameters(
                P: pBuf.baseAddress!, Q: qBuf.baseAddress!, bu: buBuf.baseAddress!,
                bi: biBuf.baseAddress!, dim: D, mu: mu, lr: lr, reg: reg, regBias: regB)
              if let plan {
                return plan.runEpoch(epoch: epoch, seed: config.seed, params: params)
              }
              ratings.withUnsafeMutableBufferPointer { rng.shuffle($0) }
              return ratings.withUnsafeBufferPointer { sgdEpoch($0, params) }
            }
          }
        }
      }
      lr *= config.learningRateDecay
      let loss = (sse / Double(n)).squareRoot()
      if !loss.isFinite {
        throw TrainingError.invalidConfiguration(
          "training diverged at epoch \(epoch) (loss is not finite); use a lower learning rate than \(config.learningRate)"
        )
      }
      if let progress {
        var metrics: [String: Double] = [:]
        if !vUsers.isEmpty {
          var acc = ErrorAccumulator()
          for r in 0..<vUsers.count {
            let u = Int(vUsers[r])
            let i = Int(vItems[r])
            var s = mu
            if u >= 0 { s += bu[u] }
            if i >= 0 { s += bi[i] }
            if u >= 0 && i >= 0 {
              s += P.withUnsafeBufferPointer { p in
                Q.withUnsafeBufferPointer { q in
                  VectorMath.dot(p.baseAddress! + u * D, q.baseAddress! + i * D, D)
                }
              }
            }
            if let range { s = min(range.upperBound, max(range.lowerBound, s)) }
            acc.add(predicted: s, actual: vRatings[r])
          }
          metrics = ["rmse": acc.rmse, "mae": acc.mae]
        }
        let elapsed = monotonicSeconds() - start
        let eta = elapsed / Double(epoch) * Double(config.epochs - epoch)
        let report = TrainingProgress(
          epoch: epoch, epochs: config.epochs, loss: loss, validation: metrics,
          elapsedSeconds: elapsed, etaSeconds: eta)
        if !progress(report) { throw TrainingError.cancelled }
      }
    }

    for values in [P, Q, bu, bi] where !values.allSatisfy({ $0.isFinite }) {
      throw TrainingError.invalidConfiguration(
        "training diverged (parameters are not finite); use a lower learning rate than \(config.learningRate)"
      )
    }
    let csr = SeenItems.build(users: data.users, items: data.items, userCount: U, itemCount: I)
    return MFModel(
      kind: "mf", dim: D, userIds: data.userIds, itemIds: data.itemIds,
      userLookup: data.userLookup, itemLookup: data.itemLookup, globalMean: mu,
      ratingRange: range, userFactors: P, itemFactors: Q, userBias: bu, itemBias: bi, csr: csr)
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
    ratings source: [MFTrainer.Rating], users U: Int, items I: Int, dim D: Int, threads: Int,
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
    var counts = [Int](repeating: 0, count: B * B + 1)
    for r in source { counts[Int(ug[Int(r.user)]) * B + Int(ig[Int(r.item)]) + 1] += 1 }
    for b in 0..<(B * B) { counts[b + 1] += counts[b] }
    offsets = counts
    ratings = .allocate(capacity: max(source.count, 1))
    var fill = counts
    for r in source {
      let b = Int(ug[Int(r.user)]) * B + Int(ig[Int(r.item)])
      (ratings + fill[b]).initialize(to: r)
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
            partial[t] += MFTrainer.sgdEpoch(UnsafeBufferPointer(segment), params)
          }
          g += T
        }
      }
      if T == 1 {
        work(0)
      } else {
        DispatchQueue.concurrentPerform(iterations: T, execute: work)
      }
    }
    return partial.reduce(0, +)
  }
}
