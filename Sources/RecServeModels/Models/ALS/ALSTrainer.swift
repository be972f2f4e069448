import CBLAS
import Dispatch

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Hyperparameters of weighted matrix factorisation for implicit feedback (ALS/WRMF).
public struct ALSConfig: Sendable, Equatable {
  /// Latent dimension (factors).
  public var dim: Int
  /// Alternating sweeps (users, then items).
  public var iterations: Int
  /// L2 regularisation λ (added to the diagonal of YᵀY, as `implicit` does: not scaled by the
  /// row's count).
  public var regularization: Float
  /// Confidence weight: c_ui = 1 + alpha·r_ui for a positive pair with strength r_ui (Hu, Koren
  /// and Volinsky). `implicit`'s `alpha=A` on binary data gives c = A, i.e. our alpha = A − 1.
  public var alpha: Float
  /// Conjugate-gradient steps per row and sweep, warm-started from the current vector.
  public var cgSteps: Int
  /// Initial factors are uniform in [0, initScale) (as `implicit`: 0.01).
  public var initScale: Float
  public var seed: UInt64
  /// Worker threads over rows. Results do not depend on the count (rows are independent).
  public var threads: Int
  /// Popularity-weighted missing data (He et al., SIGIR 2016, "eALS"): an unobserved pair
  /// (u, i) weighs c_i ∝ f_i^ω, f_i the item's number of users, scaled so the mean over items is
  /// 1. A popular item the user has not interacted with is then stronger evidence against it.
  /// 0 weighs every missing pair 1 (Hu et al., and `implicit`).
  public var popularityExponent: Float
  /// Frequency-scaled regularisation (ALS-WR, Zhou et al. 2008; Rendle et al. 2022, "Revisiting
  /// the Performance of iALS"): a row with n entries is regularised by λ·(n / n̄)^ν, n̄ the mean
  /// count of its side (users or items), so λ stays the weight of an average row and ν moves it
  /// toward rows with much evidence. 0 regularises every row by λ (as `implicit`).
  public var regExponent: Float
  /// Recent interactions weigh more: a user's row p interactions before their latest has
  /// strength 1 + recencyBoost·2^(−p / h), h = recencyHalfLife × the user's row count (see
  /// `ImplicitMatrix.init(_:recencyBoost:halfLife:)`). 0 weighs every row 1. The default 10
  /// (with reg 20) ranked first on average across five public data sets, 1.2-1.6x the NDCG@10
  /// of no boost (Benchmarks/README.md): the next item a user picks is most like their last few.
  public var recencyBoost: Float
  /// The half-life of the recency weight, as a fraction of each user's history.
  public var recencyHalfLife: Float

  public init(
    dim: Int = 64, iterations: Int = 15, regularization: Float = 20, alpha: Float = 1,
    cgSteps: Int = 3, initScale: Float = 0.01, seed: UInt64 = 42, threads: Int = 2,
    popularityExponent: Float = 0, regExponent: Float = 0, recencyBoost: Float = 10,
    recencyHalfLife: Float = 0.1
  ) {
    self.dim = dim
    self.iterations = iterations
    self.regularization = regularization
    self.alpha = alpha
    self.cgSteps = cgSteps
    self.initScale = initScale
    self.seed = seed
    self.threads = threads
    self.popularityExponent = popularityExponent
    self.regExponent = regExponent
    self.recencyBoost = recencyBoost
    self.recencyHalfLife = recencyHalfLife
  }

  public func validate() throws {
    func bad(_ m: String) -> TrainingError { .invalidConfiguration(m) }
    if dim < 1 || dim > 4096 { throw bad("dim must be in 1...4096 (got \(dim))") }
    if iterations < 1 || iterations > 100_000 {
      throw bad("iterations must be in 1...100000 (got \(iterations))")
    }
    if !(regularization >= 0) || !regularization.isFinite {
      throw bad("reg must be a finite number >= 0 (got \(regularization))")
    }
    if !(alpha >= 0) || !alpha.isFinite {
      throw bad("alpha must be a finite number >= 0 (got \(alpha))")
    }
    if cgSteps < 1 || cgSteps > 1000 { throw bad("cg steps must be in 1...1000 (got \(cgSteps))") }
    if !(initScale >= 0) || !initScale.isFinite {
      throw bad("init scale must be a finite number >= 0 (got \(initScale))")
    }
    if threads < 1 || threads > 256 { throw bad("threads must be in 1...256 (got \(threads))") }
    if !(popularityExponent >= 0) || !(popularityExponent <= 2) {
      throw bad("popularity exponent must be in [0, 2] (got \(popularityExponent))")
    }
    if !(regExponent >= 0) || !(regExponent <= 2) {
      throw bad("reg exponent must be in [0, 2] (got \(regExponent))")
    }
    try validateRecency(boost: recencyBoost, halfLife: recencyHalfLife)
  }

  /// For model.json.
  public var hyperparameters: [String: JSONValue] {
    func d(_ x: Float) -> JSONValue { .double(Double("\(x)") ?? Double(x)) }
    return [
      "dim": .int(Int64(dim)), "iterations": .int(Int64(iterations)), "reg": d(regularization),
      "alpha": d(alpha), "confidence": .string("1 + alpha * r"), "cg_steps": .int(Int64(cgSteps)),
      "init_scale": d(initScale), "seed": .int(Int64(bitPattern: seed)),
      "solver": .string("conjugate_gradient"), "threads": .int(Int64(threads)),
      "popularity_exponent": d(popularityExponent), "reg_exponent": d(regExponent),
      "recency_boost": d(recencyBoost), "recency_half_life": d(recencyHalfLife),
    ]
  }
}

/// Trains implicit-feedback matrix factorisation (Hu, Koren and Volinsky's WRMF) by alternating
/// least squares, each row solved approximately by a few conjugate-gradient steps warm-started
/// from its current value, as the `implicit` library does: the Gram matrix YᵀY + λI is computed
/// once per half-sweep with BLAS (`cblas_ssyrk`), and each row adds only its positives'
/// corrections (c − 1)·y yᵀ implicitly inside the CG matrix-vector products. Deterministic for a
/// seed at any thread count.
public enum ALSTrainer {
  /// Trains on every row of `data` (each row a unit of strength on its pair; duplicates add up).
  /// The progress loss is the confidence-weighted squared error plus the L2 term, divided by
  /// the total weight (U·I − nnz + Σc), as `implicit`'s `calculate_loss`.
  public static func train(
    _ data: Interactions, config: ALSConfig, progress: TrainingProgressHandler? = nil
  ) throws -> MFModel {
    try config.validate()
    if data.isEmpty {
      throw TrainingError.invalidData("\(data.source): no interactions to train on")
    }
    let start = monotonicSeconds()
    let problem = Problem(data, config: config)
    let D = config.dim
    var rng = Xoshiro256(seed: config.seed, stream: 0xA15)
    var X = (0..<(data.userCount * D)).map { _ in rng.nextFloat() * config.initScale }
    var Y = (0..<(data.itemCount * D)).map { _ in rng.nextFloat() * config.initScale }
    var gram = [Float](repeating: 0, count: D * D)
    var scaled = problem.uniform ? [] : [Float](repeating: 0, count: data.itemCount * D)
    for iteration in 1...config.iterations {
      problem.sweep(X: &X, Y: &Y, gram: &gram, scaled: &scaled)
      if let progress {
        let loss = problem.loss(X: X, Y: Y)
        if !loss.isFinite {
          throw TrainingError.invalidConfiguration(
            "training diverged at iteration \(iteration) (loss is not finite); use a larger reg than \(config.regularization)"
          )
        }
        let elapsed = monotonicSeconds() - start
        let report = TrainingProgress(
          epoch: iteration, epochs: config.iterations, loss: loss, elapsedSeconds: elapsed,
          etaSeconds: elapsed / Double(iteration) * Double(config.iterations - iteration))
        if !progress(report) { throw TrainingError.cancelled }
      }
    }
    if !X.allSatisfy({ $0.isFinite }) || !Y.allSatisfy({ $0.isFinite }) {
      throw TrainingError.invalidConfiguration(
        "training diverged (factors are not finite); use a larger reg than \(config.regularization)"
      )
    }
    return MFModel.implicit(
      kind: "als", dim: D, data: data, matrix: problem.userItems, userFactors: X, itemFactors: Y)
  }

  /// What every sweep reads: the user x item matrix and its transpose, the missing-pair
  /// weights, each side's entry weights and per-row ridges.
  struct Problem {
    let config: ALSConfig
    let userItems: ImplicitMatrix
    let itemUsers: ImplicitMatrix
    /// Weight of a missing pair, per item (mean 1; all 1 without popularity weighting).
    let missing: [Float]
    let uniform: Bool
    /// An entry's confidence c = 1 + alpha·r and c minus the missing weight it replaces are
    /// computed per row as it is solved (no per-entry arrays: 20M entries would be 80 MB each).
    let userWeights: EntryWeights
    let itemWeights: EntryWeights
    /// Per-row λ when it scales with the row's count; else λ is added to the Gram matrix once.
    let userRidge: [Float]?
    let itemRidge: [Float]?
    let gramReg: Float

    init(_ data: Interactions, config: ALSConfig) {
      self.config = config
      userItems = ImplicitMatrix(
        data, recencyBoost: config.recencyBoost, halfLife: config.recencyHalfLife)
      itemUsers = userItems.transposed()
      missing = missingWeights(itemUsers, exponent: config.popularityExponent)
      uniform = config.popularityExponent == 0
      userWeights = EntryWeights(
        alpha: config.alpha, missingByColumn: uniform ? nil : missing, missingByRow: nil)
      itemWeights = EntryWeights(
        alpha: config.alpha, missingByColumn: nil, missingByRow: uniform ? nil : missing)
      userRidge = rowRidge(userItems, reg: config.regularization, exponent: config.regExponent)
      itemRidge = rowRidge(itemUsers, reg: config.regularization, exponent: config.regExponent)
      gramReg = userRidge == nil ? config.regularization : 0
    }

    /// One iteration: every user's row solved against the items, then every item's against
    /// the users.
    func sweep(X: inout [Float], Y: inout [Float], gram: inout [Float], scaled: inout [Float]) {
      let U = userItems.rows
      let I = itemUsers.rows
      let D = config.dim
      X.withUnsafeMutableBufferPointer { x in
        Y.withUnsafeMutableBufferPointer { y in
          gram.withUnsafeMutableBufferPointer { g in
            // Users: Σ_i m_i y_i y_iᵀ + λI, the same for every user.
            if uniform {
              computeGram(y.baseAddress!, rows: I, dim: D, reg: gramReg, into: g.baseAddress!)
            } else {
              scaleRows(y.baseAddress!, by: missing, dim: D, into: &scaled)
              scaled.withUnsafeBufferPointer { ys in
                computeGram(ys.baseAddress!, rows: I, dim: D, reg: gramReg, into: g.baseAddress!)
              }
            }
            solveRows(
              userItems, weights: userWeights, target: x.baseAddress!,
              fixed: y.baseAddress!, gram: g.baseAddress!, gramScale: nil, ridge: 0,
              ridgeByRow: userRidge, dim: D, cgSteps: config.cgSteps, threads: config.threads)
            // Items: m_i XᵀX + λI, so XᵀX is scaled per item when the weights differ.
            computeGram(
              x.baseAddress!, rows: U, dim: D, reg: uniform ? gramReg : 0, into: g.baseAddress!)
            solveRows(
              itemUsers, weights: itemWeights, target: y.baseAddress!,
              fixed: x.baseAddress!, gram: g.baseAddress!, gramScale: uniform ? nil : missing,
              ridge: uniform || itemRidge != nil ? 0 : config.regularization,
              ridgeByRow: itemRidge, dim: D, cgSteps: config.cgSteps, threads: config.threads)
          }
        }
      }
    }

    /// The progress loss of the current factors.
    func loss(X: [Float], Y: [Float]) -> Double {
      ALSTrainer.loss(
        userItems, weights: userWeights, missing: missing, X: X, Y: Y, dim: config.dim,
        reg: config.regularization, userRidge: userRidge, itemRidge: itemRidge,
        threads: config.threads)
    }
  }

  /// Per-item weights of missing pairs: f_i^exponent scaled to mean 1 (f_i = the item's number
  /// of users); all 1 for exponent 0.
  static func missingWeights(_ itemUsers: ImplicitMatrix, exponent: Float) -> [Float] {
    let I = itemUsers.rows
    if exponent == 0 || I == 0 { return [Float](repeating: 1, count: I) }
    var w = (0..<I).map { i in
      powf(Float(max(1, itemUsers.indptr[i + 1] - itemUsers.indptr[i])), exponent)
    }
    let mean = w.reduce(0, +) / Float(I)
    for i in 0..<I { w[i] /= mean }
    return w
  }

  /// out[r] = sqrt(weights[r]) · A[r] for a row-major [rows, D] matrix A.
  static func scaleRows(
    _ A: UnsafePointer<Float>, by weights: [Float], dim D: Int, into out: inout [Float]
  ) {
    for r in 0..<weights.count {
      let s = weights[r].squareRoot()
      for k in 0..<D { out[r * D + k] = s * A[r * D + k] }
    }
  }

  /// λ·(n_r / n̄)^ν per row r with n_r entries (n̄ their mean), or nil for ν = 0 (every row λ).
  static func rowRidge(_ m: ImplicitMatrix, reg: Float, exponent: Float) -> [Float]? {
    if exponent == 0 || m.rows == 0 { return nil }
    let mean = max(1e-9, Double(m.indptr[m.rows]) / Double(m.rows))
    return (0..<m.rows).map { r in
      let n = Double(m.indptr[r + 1] - m.indptr[r])
      return Float(Double(reg) * pow(n / mean, Double(exponent)))
    }
  }

  /// G = AᵀA + reg·I (full symmetric, row-major D×D) for a row-major [rows, D] matrix A.
  static func computeGram(
    _ A: UnsafePointer<Float>, rows: Int, dim D: Int, reg: Float,
    into G: UnsafeMutablePointer<Float>
  ) {
    cblas_ssyrk(
      CblasRowMajor, CblasUpper, CblasTrans, Int32(D), Int32(rows), 1, A, Int32(D), 0, G, Int32(D))
    for r in 0..<D {
      G[r * D + r] += reg
      for c in 0..<r { G[r * D + c] = G[c * D + r] }
    }
  }

  /// Updates every row of `target` by CG against the fixed side, rows split over threads.
  /// Row r's system is (s_r·G + ridge_r·I + Σ w_k y_k y_kᵀ) x = Σ c_k y_k with s_r =
  /// gramScale[r] (1 when nil) and ridge_r = ridgeByRow[r] (`ridge` when nil).
  static func solveRows(
    _ m: ImplicitMatrix, weights: EntryWeights, target: UnsafeMutablePointer<Float>,
    fixed: UnsafePointer<Float>, gram: UnsafePointer<Float>, gramScale: [Float]?, ridge: Float,
    ridgeByRow: [Float]? = nil, dim D: Int, cgSteps: Int, threads: Int
  ) {
    let rows = m.rows
    let T = max(1, min(threads, rows / 16 + 1))
    let chunk = 64
    let chunks = (rows + chunk - 1) / chunk
    var longest = 0
    for r in 0..<rows { longest = max(longest, m.indptr[r + 1] - m.indptr[r]) }
    let maxCount = longest
    m.indptr.withUnsafeBufferPointer { ptr in
      m.indices.withUnsafeBufferPointer { idx in
        m.values.withUnsafeBufferPointer { val in
          let ctx = SolveContext(
            indptr: ptr.baseAddress!, indices: idx.baseAddress!, values: val.baseAddress!,
            target: target, fixed: fixed, gram: gram)
          let work = { (t: Int) in
            // 3·D for CG, then the row's confidences and weights.
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 3 * D + 2 * maxCount)
            defer { scratch.deallocate() }
            let conf = scratch + 3 * D
            let w = conf + maxCount
            var c = t
            while c < chunks {
              for row in (c * chunk)..<min(rows, (c + 1) * chunk) {
                let a = ctx.indptr[row]
                let n = ctx.indptr[row + 1] - a
                weights.fill(
                  row: row, indices: ctx.indices + a, values: ctx.values + a, count: n,
                  confidence: conf, weights: w)
                solveRow(
                  x: ctx.target + row * D, fixed: ctx.fixed, gram: ctx.gram,
                  gramScale: gramScale?[row] ?? 1, ridge: ridgeByRow?[row] ?? ridge, dim: D,
                  indices: ctx.indices + a, confidence: conf, weights: w, count: n,
                  cgSteps: cgSteps, scratch: scratch)
              }
              c += T
            }
          }
          Parallel.run(T, work)
        }
      }
    }
  }

  /// Confidence c = 1 + alpha·r of an entry of strength r, and w = c − m, m the weight of the
  /// missing pair it replaces: 1 (plain WRMF), the entry's item's weight (user rows), or the
  /// row's own (item rows).
  struct EntryWeights: @unchecked Sendable {
    let alpha: Float
    let missingByColumn: [Float]?
    let missingByRow: [Float]?

    /// (c, w) of one entry of `row` at `column` with strength `value`.
    @inline(__always)
    func entry(row: Int, column: Int32, value: Float) -> (Float, Float) {
      if let byColumn = missingByColumn {
        let c = 1 + alpha * value
        return (c, c - byColumn[Int(column)])
      }
      if let byRow = missingByRow {
        let c = 1 + alpha * value
        return (c, c - byRow[row])
      }
      let w = alpha * value
      return (1 + w, w)
    }

    @inline(__always)
    func fill(
      row: Int, indices: UnsafePointer<Int32>, values: UnsafePointer<Float>, count: Int,
      confidence: UnsafeMutablePointer<Float>, weights: UnsafeMutablePointer<Float>
    ) {
      for j in 0..<count {
        (confidence[j], weights[j]) = entry(row: row, column: indices[j], value: values[j])
      }
    }
  }

  struct SolveContext: @unchecked Sendable {
    let indptr: UnsafePointer<Int>
    let indices: UnsafePointer<Int32>
    let values: UnsafePointer<Float>
    let target: UnsafeMutablePointer<Float>
    let fixed: UnsafePointer<Float>
    let gram: UnsafePointer<Float>
  }

  /// A few CG steps on (s·G + ridge·I + Σ w_k y_k y_kᵀ) x = Σ c_k y_k from the current x,
  /// where G is the (weighted) Gram matrix of the fixed side and the sums run over the row's
  /// positives k (fixed vector y_k, confidence c_k, w_k = c_k minus the missing weight it
  /// replaces). A row with no positives is set to zero. `scratch` holds 3·dim floats.
  static func solveRow(
    x: UnsafeMutablePointer<Float>, fixed Y: UnsafePointer<Float>, gram G: UnsafePointer<Float>,
    gramScale: Float, ridge: Float, dim D: Int, indices: UnsafePointer<Int32>,
    confidence: UnsafePointer<Float>, weights: UnsafePointer<Float>, count: Int,
    cgSteps: Int, scratch: UnsafeMutablePointer<Float>
  ) {
    if count == 0 {
      x.update(repeating: 0, count: D)
      return
    }
    let r = scratch
    let p = scratch + D
    let ap = scratch + 2 * D
    // r = b − A x
    ImplicitKernels.matvec(G, x, r, D)
    for k in 0..<D { r[k] = -gramScale * r[k] - ridge * x[k] }
    for j in 0..<count {
      let y = Y + Int(indices[j]) * D
      let w = weights[j]
      let coef = confidence[j] - w * VectorMath.dot(y, x, D)
      ImplicitKernels.axpy(coef, y, r, D)
    }
    p.update(from: r, count: D)
    var rsOld = VectorMath.dot(r, r, D)
    if rsOld < 1e-20 { return }
    for _ in 0..<cgSteps {
      ImplicitKernels.matvec(G, p, ap, D)
      if gramScale != 1 || ridge != 0 {
        for k in 0..<D { ap[k] = gramScale * ap[k] + ridge * p[k] }
      }
      for j in 0..<count {
        let y = Y + Int(indices[j]) * D
        let w = weights[j]
        ImplicitKernels.axpy(w * VectorMath.dot(y, p, D), y, ap, D)
      }
      let pAp = VectorMath.dot(p, ap, D)
      if !(pAp > 0) { break }
      let step = rsOld / pAp
      ImplicitKernels.axpy(step, p, x, D)
      ImplicitKernels.axpy(-step, ap, r, D)
      let rsNew = VectorMath.dot(r, r, D)
      if rsNew < 1e-20 { break }
      let beta = rsNew / rsOld
      for k in 0..<D { p[k] = r[k] + beta * p[k] }
      rsOld = rsNew
    }
  }

  /// Σ_u,i c_ui (p_ui − x_u·y_i)² + λ(‖X‖² + ‖Y‖²) over the total weight Σ_u,i c_ui, where a
  /// missing pair weighs its item's `missing` weight.
  static func loss(
    _ m: ImplicitMatrix, weights: EntryWeights, missing: [Float], X: [Float], Y: [Float],
    dim D: Int, reg: Float, userRidge: [Float]? = nil, itemRidge: [Float]? = nil, threads: Int
  ) -> Double {
    var gram = [Float](repeating: 0, count: D * D)
    var scaled = weights.missingByColumn == nil ? Y : [Float](repeating: 0, count: Y.count)
    if weights.missingByColumn != nil {
      Y.withUnsafeBufferPointer { y in
        scaleRows(y.baseAddress!, by: missing, dim: D, into: &scaled)
      }
    }
    scaled.withUnsafeBufferPointer { y in
      gram.withUnsafeMutableBufferPointer { g in
        computeGram(y.baseAddress!, rows: m.cols, dim: D, reg: 0, into: g.baseAddress!)
      }
    }
    let T = max(1, min(threads, m.rows))
    // Per thread: the loss terms, then the sum of the entries' weights w.
    var partial = [Double](repeating: 0, count: 2 * T)
    X.withUnsafeBufferPointer { xb in
      Y.withUnsafeBufferPointer { yb in
        gram.withUnsafeBufferPointer { gb in
          partial.withUnsafeMutableBufferPointer { out in
            let ctx = LossContext(
              x: xb.baseAddress!, y: yb.baseAddress!, g: gb.baseAddress!, out: out.baseAddress!)
            Parallel.run(T) { t in
              let tmp = UnsafeMutablePointer<Float>.allocate(capacity: D)
              defer { tmp.deallocate() }
              var s = 0.0
              var weightSum = 0.0
              var u = t
              while u < m.rows {
                let xu = ctx.x + u * D
                ImplicitKernels.matvec(ctx.g, xu, tmp, D)
                s += Double(VectorMath.dot(xu, tmp, D))
                for k in m.indptr[u]..<m.indptr[u + 1] {
                  let (c, w) = weights.entry(row: u, column: m.indices[k], value: m.values[k])
                  let pred = VectorMath.dot(xu, ctx.y + Int(m.indices[k]) * D, D)
                  s += Double(w * pred * pred - 2 * c * pred + c)
                  weightSum += Double(w)
                }
                s += Double((userRidge?[u] ?? reg) * VectorMath.dot(xu, xu, D))
                u += T
              }
              ctx.out[t] = s
              ctx.out[T + t] = weightSum
            }
          }
        }
      }
    }
    var total = partial[0..<T].reduce(0, +)
    Y.withUnsafeBufferPointer { y in
      if let itemRidge {
        for i in 0..<m.cols {
          let yi = y.baseAddress! + i * D
          total += Double(itemRidge[i] * VectorMath.dot(yi, yi, D))
        }
      } else {
        total += Double(reg * VectorMath.dot(y.baseAddress!, y.baseAddress!, y.count))
      }
    }
    let weightSum = partial[T...].reduce(0, +)
    let missingSum = missing.reduce(0.0) { $0 + Double($1) }
    let denominator = Double(m.rows) * missingSum + weightSum
    return total / max(1, denominator)
  }

  struct LossContext: @unchecked Sendable {
    let x: UnsafePointer<Float>
    let y: UnsafePointer<Float>
    let g: UnsafePointer<Float>
    let out: UnsafeMutablePointer<Double>
  }
}
