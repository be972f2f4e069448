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

  public init(
    dim: Int = 64, iterations: Int = 15, regularization: Float = 0.01, alpha: Float = 40,
    cgSteps: Int = 3, initScale: Float = 0.01, seed: UInt64 = 42, threads: Int = 2
  ) {
    self.dim = dim
    self.iterations = iterations
    self.regularization = regularization
    self.alpha = alpha
    self.cgSteps = cgSteps
    self.initScale = initScale
    self.seed = seed
    self.threads = threads
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
  }

  /// For model.json.
  public var hyperparameters: [String: JSONValue] {
    func d(_ x: Float) -> JSONValue { .double(Double("\(x)") ?? Double(x)) }
    return [
      "dim": .int(Int64(dim)), "iterations": .int(Int64(iterations)), "reg": d(regularization),
      "alpha": d(alpha), "confidence": .string("1 + alpha * r"), "cg_steps": .int(Int64(cgSteps)),
      "init_scale": d(initScale), "seed": .int(Int64(bitPattern: seed)),
      "solver": .string("conjugate_gradient"), "threads": .int(Int64(threads)),
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
    let userItems = ImplicitMatrix(data)
    let itemUsers = userItems.transposed()
    let U = data.userCount
    let I = data.itemCount
    let D = config.dim
    var rng = Xoshiro256(seed: config.seed, stream: 0xA15)
    var X = (0..<(U * D)).map { _ in rng.nextFloat() * config.initScale }
    var Y = (0..<(I * D)).map { _ in rng.nextFloat() * config.initScale }
    // Confidence minus one (= alpha·r) per entry, in both orientations.
    let wUI = userItems.values.map { config.alpha * $0 }
    let wIU = itemUsers.values.map { config.alpha * $0 }
    var gram = [Float](repeating: 0, count: D * D)

    for iteration in 1...config.iterations {
      X.withUnsafeMutableBufferPointer { x in
        Y.withUnsafeMutableBufferPointer { y in
          gram.withUnsafeMutableBufferPointer { g in
            computeGram(
              y.baseAddress!, rows: I, dim: D, reg: config.regularization, into: g.baseAddress!)
            solveRows(
              userItems, weights: wUI, target: x.baseAddress!, fixed: y.baseAddress!,
              gram: g.baseAddress!, dim: D, cgSteps: config.cgSteps, threads: config.threads)
            computeGram(
              x.baseAddress!, rows: U, dim: D, reg: config.regularization, into: g.baseAddress!)
            solveRows(
              itemUsers, weights: wIU, target: y.baseAddress!, fixed: x.baseAddress!,
              gram: g.baseAddress!, dim: D, cgSteps: config.cgSteps, threads: config.threads)
          }
        }
      }
      if let progress {
        let loss = self.loss(
          userItems, weights: wUI, X: X, Y: Y, dim: D, reg: config.regularization,
          threads: config.threads)
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
      kind: "als", dim: D, data: data, matrix: userItems, userFactors: X, itemFactors: Y)
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
  static func solveRows(
    _ m: ImplicitMatrix, weights: [Float], target: UnsafeMutablePointer<Float>,
    fixed: UnsafePointer<Float>, gram: UnsafePointer<Float>, dim D: Int, cgSteps: Int,
    threads: Int
  ) {
    let rows = m.rows
    let T = max(1, min(threads, rows / 16 + 1))
    let chunk = 64
    let chunks = (rows + chunk - 1) / chunk
    m.indptr.withUnsafeBufferPointer { ptr in
      m.indices.withUnsafeBufferPointer { idx in
        weights.withUnsafeBufferPointer { w in
          let ctx = SolveContext(
            indptr: ptr.baseAddress!, indices: idx.baseAddress!, weights: w.baseAddress!,
            target: target, fixed: fixed, gram: gram)
          let work = { (t: Int) in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 3 * D)
            defer { scratch.deallocate() }
            var c = t
            while c < chunks {
              for row in (c * chunk)..<min(rows, (c + 1) * chunk) {
                let a = ctx.indptr[row]
                let b = ctx.indptr[row + 1]
                solveRow(
                  x: ctx.target + row * D, fixed: ctx.fixed, gram: ctx.gram, dim: D,
                  indices: ctx.indices + a, weights: ctx.weights + a, count: b - a,
                  cgSteps: cgSteps, scratch: scratch)
              }
              c += T
            }
          }
          if T == 1 {
            work(0)
          } else {
            DispatchQueue.concurrentPerform(iterations: T, execute: work)
          }
        }
      }
    }
  }

  struct SolveContext: @unchecked Sendable {
    let indptr: UnsafePointer<Int>
    let indices: UnsafePointer<Int32>
    let weights: UnsafePointer<Float>
    let target: UnsafeMutablePointer<Float>
    let fixed: UnsafePointer<Float>
    let gram: UnsafePointer<Float>
  }

  /// A few CG steps on (G + Σ w_k y_k y_kᵀ) x = Σ (1 + w_k) y_k from the current x, where G =
  /// YᵀY + λI and the sums run over the row's positives k (item k's fixed vector y_k, weight
  /// w_k = c_k − 1). A row with no positives is set to zero. `scratch` holds 3·dim floats.
  static func solveRow(
    x: UnsafeMutablePointer<Float>, fixed Y: UnsafePointer<Float>, gram G: UnsafePointer<Float>,
    dim D: Int, indices: UnsafePointer<Int32>, weights: UnsafePointer<Float>, count: Int,
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
    for k in 0..<D { r[k] = -r[k] }
    for j in 0..<count {
      let y = Y + Int(indices[j]) * D
      let w = weights[j]
      let coef = (1 + w) - w * VectorMath.dot(y, x, D)
      ImplicitKernels.axpy(coef, y, r, D)
    }
    p.update(from: r, count: D)
    var rsOld = VectorMath.dot(r, r, D)
    if rsOld < 1e-20 { return }
    for _ in 0..<cgSteps {
      ImplicitKernels.matvec(G, p, ap, D)
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

  /// Σ_u,i c_ui (p_ui − x_u·y_i)² + λ(‖X‖² + ‖Y‖²), over U·I − nnz + Σc.
  static func loss(
    _ m: ImplicitMatrix, weights: [Float], X: [Float], Y: [Float], dim D: Int, reg: Float,
    threads: Int
  ) -> Double {
    var gram = [Float](repeating: 0, count: D * D)
    Y.withUnsafeBufferPointer { y in
      gram.withUnsafeMutableBufferPointer { g in
        computeGram(y.baseAddress!, rows: m.cols, dim: D, reg: 0, into: g.baseAddress!)
      }
    }
    let T = max(1, min(threads, m.rows))
    var partial = [Double](repeating: 0, count: T)
    X.withUnsafeBufferPointer { xb in
      Y.withUnsafeBufferPointer { yb in
        gram.withUnsafeBufferPointer { gb in
          partial.withUnsafeMutableBufferPointer { out in
            let ctx = LossContext(
              x: xb.baseAddress!, y: yb.baseAddress!, g: gb.baseAddress!, out: out.baseAddress!)
            DispatchQueue.concurrentPerform(iterations: T) { t in
              let tmp = UnsafeMutablePointer<Float>.allocate(capacity: D)
              defer { tmp.deallocate() }
              var s = 0.0
              var u = t
              while u < m.rows {
                let xu = ctx.x + u * D
                ImplicitKernels.matvec(ctx.g, xu, tmp, D)
                s += Double(VectorMath.dot(xu, tmp, D))
                for k in m.indptr[u]..<m.indptr[u + 1] {
                  let w = weights[k]
                  let c = 1 + w
                  let pred = VectorMath.dot(xu, ctx.y + Int(m.indices[k]) * D, D)
                  s += Double(w * pred * pred - 2 * c * pred + c)
                }
                s += Double(reg * VectorMath.dot(xu, xu, D))
                u += T
              }
              ctx.out[t] = s
            }
          }
        }
      }
    }
    var total = partial.reduce(0, +)
    Y.withUnsafeBufferPointer { y in
      total += Double(reg * VectorMath.dot(y.baseAddress!, y.baseAddress!, y.count))
    }
    let weightSum = weights.reduce(0.0) { $0 + Double($1) }
    let denominator = Double(m.rows) * Double(m.cols) + weightSum
    return total / max(1, denominator)
  }

  struct LossContext: @unchecked Sendable {
    let x: UnsafePointer<Float>
    let y: UnsafePointer<Float>
    let g: UnsafePointer<Float>
    let out: UnsafeMutablePointer<Double>
  }
}
