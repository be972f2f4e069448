import Dispatch

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Hyperparameters of BPR-MF (Rendle et al.) trained by SGD on sampled triples.
public struct BPRConfig: Sendable, Equatable {
  /// Latent dimension (factors).
  public var dim: Int
  /// Epochs; each draws as many triples as there are distinct positive pairs.
  public var epochs: Int
  public var learningRate: Float
  /// L2 regularisation of the three vectors touched by a step.
  public var regularization: Float
  /// Initial factors are uniform in [−initScale/2, initScale/2); nil means 1/dim, i.e.
  /// (rand − 0.5) / dim as `implicit` does.
  public var initScale: Float?
  public var seed: UInt64
  /// Hogwild threads (lock-free, like `implicit`). Deterministic for a seed only with 1.
  public var threads: Int
  /// Learn an item bias as one extra factor column (users' entry fixed at 1), as `implicit`
  /// does; the served model then has dim + 1 columns and is still a pure dot product.
  public var itemBias: Bool
  /// How negatives j are drawn (always among the items the user has not interacted with).
  public var negativeSampling: NegativeSampling
  /// Dynamic negative sampling (Zhang et al., SIGIR 2013): draw this many negative candidates
  /// and step on the one the model currently scores highest, i.e. the one ranked most wrongly.
  /// 1 is plain BPR (as `implicit`). The default 3 ranks better for the same epochs
  /// (Benchmarks/implicit_vs_recserve.py) at about 1.3x the time per epoch. The harder
  /// negatives give smaller gradients, so it goes with a larger default learning rate (0.05)
  /// than plain BPR's usual 0.01 (which, for plain BPR in `implicit`, 0.05 makes worse).
  public var negativeCandidates: Int
  /// Recent interactions weigh more (see `ALSConfig.recencyBoost`): positive pairs are drawn in
  /// proportion to their strength 1 + recencyBoost·2^(−p / h) instead of uniformly. 0 draws
  /// every distinct pair equally often. The default 20 ranked first on all five public data
  /// sets of Benchmarks/README.md.
  public var recencyBoost: Float
  /// The half-life of the recency weight, as a fraction of each user's history.
  public var recencyHalfLife: Float

  public enum NegativeSampling: String, Sendable, Equatable, CaseIterable {
    /// Every item equally likely.
    case uniform
    /// Proportional to the item's number of positives, and a draw that is one of the user's
    /// items skips the triple instead of redrawing (both as `implicit` does).
    case popularity
  }

  public init(
    dim: Int = 64, epochs: Int = 100, learningRate: Float = 0.05, regularization: Float = 0.01,
    initScale: Float? = nil, seed: UInt64 = 42, threads: Int = 2, itemBias: Bool = true,
    negativeSampling: NegativeSampling = .uniform, negativeCandidates: Int = 3,
    recencyBoost: Float = 20, recencyHalfLife: Float = 0.1
  ) {
    self.dim = dim
    self.epochs = epochs
    self.learningRate = learningRate
    self.regularization = regularization
    self.initScale = initScale
    self.seed = seed
    self.threads = threads
    self.itemBias = itemBias
    self.negativeSampling = negativeSampling
    self.negativeCandidates = negativeCandidates
    self.recencyBoost = recencyBoost
    self.recencyHalfLife = recencyHalfLife
  }

  public func validate() throws {
    func bad(_ m: String) -> TrainingError { .invalidConfiguration(m) }
    if dim < 1 || dim > 4096 { throw bad("dim must be in 1...4096 (got \(dim))") }
    if epochs < 1 || epochs > 100_000 { throw bad("epochs must be in 1...100000 (got \(epochs))") }
    if !(learningRate > 0) || !learningRate.isFinite || learningRate > 10 {
      throw bad("lr must be a positive number up to 10 (got \(learningRate))")
    }
    if !(regularization >= 0) || !regularization.isFinite {
      throw bad("reg must be a finite number >= 0 (got \(regularization))")
    }
    if let s = initScale, !(s >= 0) || !s.isFinite {
      throw bad("init scale must be a finite number >= 0 (got \(s))")
    }
    if threads < 1 || threads > 256 { throw bad("threads must be in 1...256 (got \(threads))") }
    if negativeCandidates < 1 || negativeCandidates > 64 {
      throw bad("negative candidates must be in 1...64 (got \(negativeCandidates))")
    }
    try validateRecency(boost: recencyBoost, halfLife: recencyHalfLife)
  }

  var effectiveInitScale: Float { initScale ?? 1 / Float(dim) }

  /// For model.json.
  public var hyperparameters: [String: JSONValue] {
    func d(_ x: Float) -> JSONValue { .double(Double("\(x)") ?? Double(x)) }
    return [
      "dim": .int(Int64(dim)), "epochs": .int(Int64(epochs)), "lr": d(learningRate),
      "reg": d(regularization), "init_scale": d(effectiveInitScale),
      "seed": .int(Int64(bitPattern: seed)), "optimizer": .string("sgd"),
      "negative_sampling": .string(negativeSampling.rawValue),
      "negative_candidates": .int(Int64(negativeCandidates)),
      "item_bias": .bool(itemBias),
      "threads": .int(Int64(threads)),
      "recency_boost": d(recencyBoost), "recency_half_life": d(recencyHalfLife),
    ]
  }
}

/// Trains BPR-MF: score = p_u·q_i, maximising ln σ(x_ui − x_uj) over triples (u, i, j) with i
/// a positive of u drawn uniformly from the distinct positive pairs and j drawn from the items
/// u has not interacted with (rejection sampling; uniformly, or by popularity as `implicit`;
/// with `negativeCandidates` > 1 the highest-scored of that many draws).
/// With `itemBias`, a last factor column holds the item bias (the user's entry is 1). Each epoch draws nnz triples split
/// over `threads` Hogwild workers, each with its own seeded random stream.
///
/// The progress loss is the epoch's mean −ln σ(x_uij) over the triples drawn, computed before
/// each update; `validation["correct"]` carries the fraction of those triples already ordered
/// correctly (what `implicit` reports as "correct").
public enum BPRTrainer {
  public static func train(
    _ data: Interactions, config: BPRConfig, progress: TrainingProgressHandler? = nil
  ) throws -> MFModel {
    try config.validate()
    if data.isEmpty {
      throw TrainingError.invalidData("\(data.source): no interactions to train on")
    }
    let start = monotonicSeconds()
    let m = ImplicitMatrix(
      data, recencyBoost: config.recencyBoost, halfLife: config.recencyHalfLife)
    // With recency weights, pairs are drawn by an alias table over their strengths.
    let alias = config.recencyBoost > 0 ? AliasTable(weights: m.values) : nil
    let U = data.userCount
    let I = data.itemCount
    let D = config.dim + (config.itemBias ? 1 : 0)
    if I < 2 { throw TrainingError.invalidData("\(data.source): BPR needs at least two items") }
    var rng = Xoshiro256(seed: config.seed, stream: 0xB9B)
    let scale = config.effectiveInitScale
    var P = (0..<(U * D)).map { _ in (rng.nextFloat() - 0.5) * scale }
    var Q = (0..<(I * D)).map { _ in (rng.nextFloat() - 0.5) * scale }
    if config.itemBias {
      for u in 0..<U { P[u * D + D - 1] = 1 }
    }
    var rowOf = [Int32](repeating: 0, count: m.nnz)
    for u in 0..<U {
      for k in m.indptr[u]..<m.indptr[u + 1] { rowOf[k] = Int32(u) }
    }
    let T = max(1, min(config.threads, m.nnz))
    var stats = [EpochStats](repeating: EpochStats(), count: T)

    for epoch in 1...config.epochs {
      P.withUnsafeMutableBufferPointer { p in
        Q.withUnsafeMutableBufferPointer { q in
          m.indptr.withUnsafeBufferPointer { ptr in
            m.indices.withUnsafeBufferPointer { idx in
              rowOf.withUnsafeBufferPointer { rows in
                stats.withUnsafeMutableBufferPointer { out in
                  let ctx = Context(
                    P: p.baseAddress!, Q: q.baseAddress!, indptr: ptr.baseAddress!,
                    indices: idx.baseAddress!, rowOf: rows.baseAddress!, nnz: m.nnz, items: I,
                    dim: D, lr: config.learningRate, reg: config.regularization,
                    itemBias: config.itemBias, alias: alias,
                    popularityNegatives: config.negativeSampling == .popularity,
                    candidates: config.negativeCandidates,
                    stats: out.baseAddress!)
                  let work = { (t: Int) in
                    let samples = m.nnz / T + (t < m.nnz % T ? 1 : 0)
                    var local = Xoshiro256(
                      seed: config.seed, stream: UInt64(epoch) &* 0x1_0000 &+ UInt64(t) &+ 0xB9B0)
                    ctx.stats[t] = sgd(ctx, samples: samples, rng: &local)
                  }
                  Parallel.run(T, work)
                }
              }
            }
          }
        }
      }
      var total = EpochStats()
      for s in stats {
        total.loss += s.loss
        total.correct += s.correct
        total.samples += s.samples
      }
      let loss = total.samples > 0 ? total.loss / Double(total.samples) : 0
      try finishEpoch(
        epoch, of: config.epochs, loss: loss,
        validation: [
          "correct": total.samples > 0 ? Double(total.correct) / Double(total.samples) : 0
        ], started: start, learningRate: config.learningRate, progress: progress)
    }
    if !P.allSatisfy({ $0.isFinite }) || !Q.allSatisfy({ $0.isFinite }) {
      throw TrainingError.invalidConfiguration(
        "training diverged (factors are not finite); use a lower learning rate than \(config.learningRate)"
      )
    }
    return MFModel.implicit(
      kind: "bpr", dim: D, data: data, matrix: m, userFactors: P, itemFactors: Q)
  }

  struct EpochStats {
    var loss = 0.0
    var correct = 0
    var samples = 0
  }

  struct Context: @unchecked Sendable {
    let P: UnsafeMutablePointer<Float>
    let Q: UnsafeMutablePointer<Float>
    let indptr: UnsafePointer<Int>
    let indices: UnsafePointer<Int32>
    let rowOf: UnsafePointer<Int32>
    let nnz: Int
    let items: Int
    let dim: Int
    let lr: Float
    let reg: Float
    let itemBias: Bool
    let alias: AliasTable?
    let popularityNegatives: Bool
    let candidates: Int
    let stats: UnsafeMutablePointer<EpochStats>
  }

  /// `samples` SGD steps on freshly drawn triples.
  static func sgd(_ c: Context, samples: Int, rng: inout Xoshiro256) -> EpochStats {
    let D = c.dim
    let lr = c.lr
    let reg = c.reg
    var stats = EpochStats()
    var lossSum: Float = 0
    var lossBlock = 0
    // Candidate items and their scores (dynamic negative sampling).
    let cand = UnsafeMutablePointer<Int>.allocate(capacity: c.candidates)
    let scores = UnsafeMutablePointer<Float>.allocate(capacity: c.candidates)
    defer {
      cand.deallocate()
      scores.deallocate()
    }
    for _ in 0..<samples {
      let k = c.alias?.draw(&rng) ?? rng.nextInt(below: c.nnz)
      let u = Int(c.rowOf[k])
      let i = Int(c.indices[k])
      let a = c.indptr[u]
      let b = c.indptr[u + 1]
      if b - a >= c.items { continue }
      // Uniform: redraw until the item is not one of the user's. Popularity: as `implicit`, a
      // draw that hits one of the user's items skips the triple (so heavy users, who hit more
      // often, get proportionally fewer steps).
      let pu = c.P + u * D
      let qi = c.Q + i * D
      var j = -1
      var x: Float = 0
      if c.candidates == 1 {
        for _ in 0..<(c.popularityNegatives ? 1 : 1000) {
          let candidate = draw(c, &rng)
          if !contains(c.indices + a, b - a, Int32(candidate)) {
            j = candidate
            break
          }
        }
        if j < 0 { continue }
        x = VectorMath.dot(pu, qi, D) - VectorMath.dot(pu, c.Q + j * D, D)
      } else {
        // Dynamic negative sampling: score a batch of candidates (and the positive) in fused
        // passes over p_u, then take the highest-scored one that is not one of the user's
        // items; if all are (rare), draw a new batch (uniform) or skip (popularity).
        var positiveScore: Float = 0
        for _ in 0..<(c.popularityNegatives ? 1 : 1000) {
          for t in 0..<c.candidates { cand[t] = draw(c, &rng) }
          positiveScore = scoreBatch(c, pu: pu, qi: qi, candidates: cand, scores: scores)
          if let t = highestScoredNotIn(
            c.indices + a, b - a, candidates: cand, scores: scores, count: c.candidates)
          {
            j = cand[t]
            x = positiveScore - scores[t]
            break
          }
        }
        if j < 0 { continue }
      }
      let qj = c.Q + j * D
      if x > 0 { stats.correct += 1 }
      let z = 1 / (1 + expf(x))  // σ(−x): the gradient scale
      // −ln σ(x) = −ln(1 − z); for very negative x, where z rounds to 1, it is −x.
      lossSum += x > -16 ? -log1pf(-z) : -x
      lossBlock += 1
      if lossBlock == 4096 {
        stats.loss += Double(lossSum)
        lossSum = 0
        lossBlock = 0
      }
      stats.samples += 1
      step(pu, qi, qj, D, z: z, lr: lr, reg: reg)
      if c.itemBias { pu[D - 1] = 1 }
    }
    stats.loss += Double(lossSum)
    return stats
  }

  /// The candidate with the highest score that is not in the sorted `row` (nil when all are);
  /// overwrites the scores of the ones it passes over.
  @inline(__always)
  static func highestScoredNotIn(
    _ row: UnsafePointer<Int32>, _ n: Int, candidates: UnsafeMutablePointer<Int>,
    scores: UnsafeMutablePointer<Float>, count: Int
  ) -> Int? {
    for _ in 0..<count {
      var top = 0
      for t in 1..<count where scores[t] > scores[top] { top = t }
      if scores[top] == -.infinity { return nil }
      if !contains(row, n, Int32(candidates[top])) { return top }
      scores[top] = -.infinity
    }
    return nil
  }

  /// A negative candidate: uniform over the items, or an item of a uniformly drawn positive
  /// pair (i.e. by popularity).
  @inline(__always)
  static func draw(_ c: Context, _ rng: inout Xoshiro256) -> Int {
    c.popularityNegatives ? Int(c.indices[rng.nextInt(below: c.nnz)]) : rng.nextInt(below: c.items)
  }

  /// scores[t] = p_u·q_{candidates[t]} for every candidate, and returns p_u·q_i, four vectors
  /// per pass over p_u so that their loads overlap.
  @inline(__always)
  static func scoreBatch(
    _ c: Context, pu: UnsafePointer<Float>, qi: UnsafePointer<Float>,
    candidates: UnsafeMutablePointer<Int>, scores: UnsafeMutablePointer<Float>
  ) -> Float {
    let D = c.dim
    let n = c.candidates
    @inline(__always) func q(_ t: Int) -> UnsafePointer<Float> {
      UnsafePointer(c.Q + candidates[min(t, n - 1)] * D)
    }
    // The first pass takes q_i and candidates 0...2, later ones four candidates each.
    let first = dot4(pu, qi, q(0), q(1), q(2), D)
    for k in 0..<min(3, n) { scores[k] = first[k + 1] }
    var t = 3
    while t < n {
      let v = dot4(pu, q(t), q(t + 1), q(t + 2), q(t + 3), D)
      for k in 0..<min(4, n - t) { scores[t + k] = v[k] }
      t += 4
    }
    return first[0]
  }

  /// (a·b0, a·b1, a·b2, a·b3) in one pass over a.
  @inline(__always)
  static func dot4(
    _ a: UnsafePointer<Float>, _ b0: UnsafePointer<Float>, _ b1: UnsafePointer<Float>,
    _ b2: UnsafePointer<Float>, _ b3: UnsafePointer<Float>, _ n: Int
  ) -> SIMD4<Float> {
    var s0 = SIMD8<Float>()
    var s1 = SIMD8<Float>()
    var s2 = SIMD8<Float>()
    var s3 = SIMD8<Float>()
    let ra = UnsafeRawPointer(a)
    let r0 = UnsafeRawPointer(b0)
    let r1 = UnsafeRawPointer(b1)
    let r2 = UnsafeRawPointer(b2)
    let r3 = UnsafeRawPointer(b3)
    var k = 0
    while k + 8 <= n {
      let av = ra.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      s0 += av * r0.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      s1 += av * r1.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      s2 += av * r2.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      s3 += av * r3.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      k += 8
    }
    var out = SIMD4<Float>(s0.sum(), s1.sum(), s2.sum(), s3.sum())
    while k < n {
      let x = a[k]
      out += SIMD4<Float>(x * b0[k], x * b1[k], x * b2[k], x * b3[k])
      k += 1
    }
    return out
  }

  /// p += lr(z(q_i − q_j) − reg p); q_i += lr(z p − reg q_i); q_j += lr(−z p − reg q_j), all
  /// from the old values.
  @inline(__always)
  static func step(
    _ p: UnsafeMutablePointer<Float>, _ qi: UnsafeMutablePointer<Float>,
    _ qj: UnsafeMutablePointer<Float>, _ n: Int, z: Float, lr: Float, reg: Float
  ) {
    var k = 0
    let rp = UnsafeMutableRawPointer(p)
    let ri = UnsafeMutableRawPointer(qi)
    let rj = UnsafeMutableRawPointer(qj)
    let vz = SIMD8<Float>(repeating: lr * z)
    let shrink = SIMD8<Float>(repeating: 1 - lr * reg)
    while k + 8 <= n {
      let pv = rp.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      let iv = ri.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      let jv = rj.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      rp.storeBytes(of: pv * shrink + vz * (iv - jv), toByteOffset: k * 4, as: SIMD8<Float>.self)
      ri.storeBytes(of: iv * shrink + vz * pv, toByteOffset: k * 4, as: SIMD8<Float>.self)
      rj.storeBytes(of: jv * shrink - vz * pv, toByteOffset: k * 4, as: SIMD8<Float>.self)
      k += 8
    }
    let s = 1 - lr * reg
    let lz = lr * z
    while k < n {
      let pk = p[k]
      let ik = qi[k]
      let jk = qj[k]
      p[k] = pk * s + lz * (ik - jk)
      qi[k] = ik * s + lz * pk
      qj[k] = jk * s - lz * pk
      k += 1
    }
  }

  /// Binary search in a sorted row.
  @inline(__always)
  static func contains(_ row: UnsafePointer<Int32>, _ n: Int, _ x: Int32) -> Bool {
    var lo = 0
    var hi = n
    while lo < hi {
      let mid = (lo + hi) >> 1
      if row[mid] < x { lo = mid + 1 } else { hi = mid }
    }
    return lo < n && row[lo] == x
  }
}

/// Walker's alias method: draws index k with probability weights[k] / Σ weights in O(1).
struct AliasTable: Sendable {
  let probability: [Float]
  let alias: [Int32]

  init(weights: [Float]) {
    let n = weights.count
    let total = weights.reduce(0.0) { $0 + Double($1) }
    var scaled = weights.map { Double($0) * Double(n) / max(total, 1e-30) }
    var probability = [Float](repeating: 1, count: n)
    var alias = [Int32](repeating: 0, count: n)
    var small = [Int32]()
    var large = [Int32]()
    for k in 0..<n {
      alias[k] = Int32(k)
      if scaled[k] < 1 { small.append(Int32(k)) } else { large.append(Int32(k)) }
    }
    while let s = small.popLast() {
      guard let l = large.last else { break }
      probability[Int(s)] = Float(scaled[Int(s)])
      alias[Int(s)] = l
      scaled[Int(l)] -= 1 - scaled[Int(s)]
      if scaled[Int(l)] < 1 {
        large.removeLast()
        small.append(l)
      }
    }
    self.probability = probability
    self.alias = alias
  }

  @inline(__always)
  func draw(_ rng: inout Xoshiro256) -> Int {
    let k = rng.nextInt(below: probability.count)
    return rng.nextFloat() < probability[k] ? k : Int(alias[k])
  }
}
