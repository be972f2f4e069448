import CBLAS

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The SASRec network's forward and backward passes over a packed chunk of sequences (back to
/// back, no padding rows), on OpenBLAS.
///
/// The forward pass, for a sequence of L ≤ maxlen items right-aligned in the window (item j
/// takes window slot maxlen − L + j, so the most recent item is always at slot maxlen − 1):
///
///     x = dropout(E[item] · √d + P[slot])
///     for each block:  q = LN_a(x);  x = q + MHA(q, x, x)         (causal)
///                      f = LN_f(x);  x = f + dropout(W2 · relu(dropout(W1 f + b1)) + b2)
///     h = LN_last(x);  score(item) = h · E[item]
///
/// MHA is `torch.nn.MultiheadAttention` (in-projection, scaled dot-product attention with
/// dropout on the weights, out-projection). Padding never takes part: a query attends to the
/// real items at or before it, exactly as the authors' code with its key and query masks, so a
/// packed chunk gives the same numbers as a padded batch.
enum SASRecNetwork {
  /// Runs the forward pass over the chunk described by `ws.sequenceStart[0...sequences]`,
  /// `ws.items` and `ws.slots`; the result is `ws.output` ([N, d]). Dropout is on when
  /// `dropout > 0` (training); every activation the backward pass needs is kept in `ws`.
  ///
  /// With `lastRowOnly` (inference on one sequence), the last block and the final layer norm
  /// run for the last position only, whose output is then `ws.output`'s first row: the earlier
  /// positions feed it only as keys and values.
  static func forward(
    params: UnsafePointer<Float>, layout: SASRecLayout, epsilon: Float, ws: SASRecWorkspace,
    sequences: Int, dropout: Float, rng: inout Xoshiro256, lastRowOnly: Bool = false
  ) {
    let d = layout.dim
    let n = ws.sequenceStart[sequences]
    let training = dropout > 0
    let lastRowOnly = lastRowOnly && sequences == 1 && !training
    embed(params: params, layout: layout, ws: ws, rows: n, dropout: dropout, rng: &rng)
    for b in 0..<layout.blocks {
      if lastRowOnly && b == layout.blocks - 1 {
        lastBlockLastRow(params: params, layout: layout, epsilon: epsilon, ws: ws, rows: n)
        return
      }
      attentionHalf(
        b, params: params, layout: layout, epsilon: epsilon, ws: ws, sequences: sequences,
        dropout: dropout, rng: &rng)
      feedForwardHalf(
        b, params: params, layout: layout, epsilon: epsilon, ws: ws, rows: n, dropout: dropout,
        rng: &rng)
    }
    Kernels.layerNorm(
      ws.x[layout.blocks], rows: n, dim: d, gamma: params + layout.lastNormWeight,
      beta: params + layout.lastNormBias, epsilon: epsilon, out: ws.output,
      normalized: ws.normalizedLast, rstd: ws.rstdLast)
  }

  /// `ws.x[0]`: each position's item embedding times √d plus its position embedding (with
  /// dropout when training).
  private static func embed(
    params: UnsafePointer<Float>, layout: SASRecLayout, ws: SASRecWorkspace, rows n: Int,
    dropout: Float, rng: inout Xoshiro256
  ) {
    let d = layout.dim
    let embeddingScale = Float(d).squareRoot()
    let x0 = ws.x[0]
    let itemEmbedding = params + layout.itemEmbedding
    let positionEmbedding = params + layout.positionEmbedding
    for r in 0..<n {
      let e = itemEmbedding + Int(ws.items[r]) * d
      let p = positionEmbedding + Int(ws.slots[r]) * d
      let out = x0 + r * d
      for k in 0..<d { out[k] = e[k] * embeddingScale + p[k] }
    }
    if dropout > 0 {
      Kernels.dropoutMask(ws.embeddingMask, n * d, rate: dropout, rng: &rng)
      Kernels.multiply(x0, by: ws.embeddingMask, n * d)
    }
  }

  /// Block `b`'s attention: q = layer norm of its input, projected queries from q and keys and
  /// values from the input, causal multi-head attention, then x1 = q + out_proj(attended)
  /// into `ws.grad3` (a temporary until the feed-forward half reads it).
  private static func attentionHalf(
    _ b: Int, params: UnsafePointer<Float>, layout: SASRecLayout, epsilon: Float,
    ws: SASRecWorkspace, sequences: Int, dropout: Float, rng: inout Xoshiro256
  ) {
    let d = layout.dim
    let n = ws.sequenceStart[sequences]
    let w = layout.block[b]
    let input = ws.x[b]
    let q = ws.query[b]
    Kernels.layerNorm(
      input, rows: n, dim: d, gamma: params + w.attentionNormWeight,
      beta: params + w.attentionNormBias, epsilon: epsilon, out: q,
      normalized: ws.normalizedA[b], rstd: ws.rstdA[b])
    let inProj = params + w.inProjWeight
    let inBias = params + w.inProjBias
    Kernels.linear(
      q, ld: d, rows: n, inputs: d, weight: inProj, bias: inBias, outputs: d,
      out: ws.projectedQuery[b], ldOut: d)
    Kernels.linear(
      input, ld: d, rows: n, inputs: d, weight: inProj + d * d, bias: inBias + d, outputs: 2 * d,
      out: ws.keysValues[b], ldOut: 2 * d)
    attentionForward(
      ws: ws, block: b, sequences: sequences, layout: layout, dropout: dropout, rng: &rng)
    let x1 = ws.grad3
    Kernels.linear(
      ws.attended[b], ld: d, rows: n, inputs: d, weight: params + w.outProjWeight,
      bias: params + w.outProjBias, outputs: d, out: x1, ldOut: d)
    Kernels.add(q, into: x1, n * d)
  }

  /// Block `b`'s point-wise feed-forward on x1 (in `ws.grad3`): f = layer norm of x1, then
  /// `ws.x[b + 1]` = f + conv2(relu(dropout(conv1(f)))) (dropout on the output too when
  /// training).
  private static func feedForwardHalf(
    _ b: Int, params: UnsafePointer<Float>, layout: SASRecLayout, epsilon: Float,
    ws: SASRecWorkspace, rows n: Int, dropout: Float, rng: inout Xoshiro256
  ) {
    let d = layout.dim
    let w = layout.block[b]
    let f = ws.ffnInput[b]
    Kernels.layerNorm(
      ws.grad3, rows: n, dim: d, gamma: params + w.ffnNormWeight, beta: params + w.ffnNormBias,
      epsilon: epsilon, out: f, normalized: ws.normalizedF[b], rstd: ws.rstdF[b])
    let hidden = ws.hidden[b]
    Kernels.linear(
      f, ld: d, rows: n, inputs: d, weight: params + w.conv1Weight, bias: params + w.conv1Bias,
      outputs: d, out: hidden, ldOut: d)
    if dropout > 0 {
      // relu(dropout(h)): the kept entries scaled by 1/(1 − p).
      Kernels.dropoutMask(ws.grad2, n * d, rate: dropout, rng: &rng)
      Kernels.multiply(hidden, by: ws.grad2, n * d)
    }
    Kernels.relu(hidden, n * d)
    let next = ws.x[b + 1]
    Kernels.linear(
      hidden, ld: d, rows: n, inputs: d, weight: params + w.conv2Weight,
      bias: params + w.conv2Bias, outputs: d, out: next, ldOut: d)
    if dropout > 0 {
      Kernels.dropoutMask(ws.ffnMask[b], n * d, rate: dropout, rng: &rng)
      Kernels.multiply(next, by: ws.ffnMask[b], n * d)
    }
    Kernels.add(f, into: next, n * d)
  }

  /// The last block and the final layer norm for the last of `rows` positions (one sequence, no
  /// dropout): keys and values for every position, everything else for one row, into
  /// `ws.output`'s first row.
  private static func lastBlockLastRow(
    params: UnsafePointer<Float>, layout: SASRecLayout, epsilon: Float, ws: SASRecWorkspace,
    rows n: Int
  ) {
    let d = layout.dim
    let b = layout.blocks - 1
    let w = layout.block[b]
    let input = ws.x[b]
    let lastInput = input + (n - 1) * d
    let q = ws.query[b]
    Kernels.layerNorm(
      lastInput, rows: 1, dim: d, gamma: params + w.attentionNormWeight,
      beta: params + w.attentionNormBias, epsilon: epsilon, out: q,
      normalized: ws.normalizedA[b], rstd: ws.rstdA[b])
    let inProj = params + w.inProjWeight
    let inBias = params + w.inProjBias
    let qp = ws.projectedQuery[b]
    Kernels.linear(
      q, ld: d, rows: 1, inputs: d, weight: inProj, bias: inBias, outputs: d, out: qp, ldOut: d)
    let kv = ws.keysValues[b]
    Kernels.linear(
      input, ld: d, rows: n, inputs: d, weight: inProj + d * d, bias: inBias + d, outputs: 2 * d,
      out: kv, ldOut: 2 * d)
    // One query row against every key: scores by sgemv, softmax, weighted values by sgemv.
    let heads = layout.heads
    let dh = d / heads
    let scale = 1 / Float(dh).squareRoot()
    let p = ws.probabilities[b]
    let attended = ws.attended[b]
    for h in 0..<heads {
      cblas_sgemv(
        CblasRowMajor, CblasNoTrans, Int32(n), Int32(dh), scale, kv + h * dh, Int32(2 * d),
        qp + h * dh, 1, 0, p, 1)
      var m = p[0]
      for j in 1..<max(n, 1) where p[j] > m { m = p[j] }
      let sum = FastMath.expShiftInPlace(p, count: n, shift: m)
      let inv = 1 / sum
      for j in 0..<n { p[j] *= inv }
      cblas_sgemv(
        CblasRowMajor, CblasTrans, Int32(n), Int32(dh), 1, kv + d + h * dh, Int32(2 * d), p, 1, 0,
        attended + h * dh, 1)
    }
    let x1 = ws.grad3
    Kernels.linear(
      attended, ld: d, rows: 1, inputs: d, weight: params + w.outProjWeight,
      bias: params + w.outProjBias, outputs: d, out: x1, ldOut: d)
    Kernels.add(q, into: x1, d)
    let f = ws.ffnInput[b]
    Kernels.layerNorm(
      x1, rows: 1, dim: d, gamma: params + w.ffnNormWeight, beta: params + w.ffnNormBias,
      epsilon: epsilon, out: f, normalized: ws.normalizedF[b], rstd: ws.rstdF[b])
    let hidden = ws.hidden[b]
    Kernels.linear(
      f, ld: d, rows: 1, inputs: d, weight: params + w.conv1Weight, bias: params + w.conv1Bias,
      outputs: d, out: hidden, ldOut: d)
    Kernels.relu(hidden, d)
    let next = ws.x[b + 1]
    Kernels.linear(
      hidden, ld: d, rows: 1, inputs: d, weight: params + w.conv2Weight,
      bias: params + w.conv2Bias, outputs: d, out: next, ldOut: d)
    Kernels.add(f, into: next, d)
    Kernels.layerNorm(
      next, rows: 1, dim: d, gamma: params + layout.lastNormWeight,
      beta: params + layout.lastNormBias, epsilon: epsilon, out: ws.output,
      normalized: ws.normalizedLast, rstd: ws.rstdLast)
  }

  /// Causal scaled dot-product attention per sequence and head, with dropout on the weights.
  private static func attentionForward(
    ws: SASRecWorkspace, block b: Int, sequences: Int, layout: SASRecLayout, dropout: Float,
    rng: inout Xoshiro256
  ) {
    let d = layout.dim
    let heads = layout.heads
    let dh = d / heads
    let scale = 1 / Float(dh).squareRoot()
    let qp = ws.projectedQuery[b]
    let kv = ws.keysValues[b]
    let out = ws.attended[b]
    for s in 0..<sequences {
      let r0 = ws.sequenceStart[s]
      let L = ws.sequenceStart[s + 1] - r0
      for h in 0..<heads {
        let p = ws.probabilities[b] + ws.attentionStart[s] + h * L * L
        let qh = qp + r0 * d + h * dh
        let kh = kv + r0 * 2 * d + h * dh
        let vh = kh + d
        cblas_sgemm(
          CblasRowMajor, CblasNoTrans, CblasTrans, Int32(L), Int32(L), Int32(dh), scale, qh,
          Int32(d), kh, Int32(2 * d), 0, p, Int32(L))
        Kernels.causalSoftmax(p, L)
        var weights = UnsafePointer(p)
        if dropout > 0 {
          let pd = ws.droppedProbabilities[b] + ws.attentionStart[s] + h * L * L
          Kernels.dropoutMask(pd, L * L, rate: dropout, rng: &rng)
          Kernels.multiply(pd, by: UnsafePointer(p), L * L)
          weights = UnsafePointer(pd)
        }
        cblas_sgemm(
          CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(L), Int32(dh), Int32(L), 1, weights,
          Int32(L), vh, Int32(2 * d), 0, out + r0 * d + h * dh, Int32(d))
      }
    }
  }

  /// Given dLoss/dOutput in `ws.grad3` ([N, d]), accumulates the parameter gradients into
  /// `grads` (same layout as the parameters). Must follow `forward` on the same chunk.
  static func backward(
    params: UnsafePointer<Float>, grads: UnsafeMutablePointer<Float>, layout: SASRecLayout,
    ws: SASRecWorkspace, sequences: Int, dropout: Float
  ) {
    let d = layout.dim
    let n = ws.sequenceStart[sequences]
    let nd = n * d
    let keep: Float = dropout > 0 ? 1 / (1 - dropout) : 1
    let g0 = ws.grad0
    let g1 = ws.grad1
    let g2 = ws.grad2

    // Final layer norm: grad3 → grad0.
    Kernels.layerNormBackward(
      ws.grad3, rows: n, dim: d, normalized: ws.normalizedLast, rstd: ws.rstdLast,
      gamma: params + layout.lastNormWeight, gradGamma: grads + layout.lastNormWeight,
      gradBeta: grads + layout.lastNormBias, out: g0, accumulate: false)

    for b in stride(from: layout.blocks - 1, through: 0, by: -1) {
      let w = layout.block[b]
      // g0 = dL/d x[b + 1] = dL/d(dropout(conv2) + f).
      var dConv2Out = UnsafePointer(g0)
      if dropout > 0 {
        Kernels.multiply(ws.ffnMask[b], by: UnsafePointer(g0), nd, into: g1)
        dConv2Out = UnsafePointer(g1)
      }
      // conv2: dW2, db2, d hidden → g2.
      Kernels.linearBackward(
        dOut: dConv2Out, rows: n, outputs: d, input: ws.hidden[b], inputs: d,
        weight: params + w.conv2Weight, gradWeight: grads + w.conv2Weight,
        gradBias: grads + w.conv2Bias, dInput: g2, accumulate: false)
      // Through relu(dropout(·)): nonzero hidden entries were kept, scaled by `keep`.
      Kernels.reluBackward(g2, activations: ws.hidden[b], scale: keep, nd)
      // conv1: d f = g0 (residual) + dH1 · W1, accumulated into g0.
      Kernels.linearBackward(
        dOut: g2, rows: n, outputs: d, input: ws.ffnInput[b], inputs: d,
        weight: params + w.conv1Weight, gradWeight: grads + w.conv1Weight,
        gradBias: grads + w.conv1Bias, dInput: g0, accumulate: true)
      // Feed-forward layer norm: g0 → g1 = dL/d x1, where x1 = q + out_proj(attended).
      Kernels.layerNormBackward(
        g0, rows: n, dim: d, normalized: ws.normalizedF[b], rstd: ws.rstdF[b],
        gamma: params + w.ffnNormWeight, gradGamma: grads + w.ffnNormWeight,
        gradBeta: grads + w.ffnNormBias, out: g1, accumulate: false)
      // Out projection: d attended → g2. g1 stays as dL/dq (the residual).
      Kernels.linearBackward(
        dOut: g1, rows: n, outputs: d, input: ws.attended[b], inputs: d,
        weight: params + w.outProjWeight, gradWeight: grads + w.outProjWeight,
        gradBias: grads + w.outProjBias, dInput: g2, accumulate: false)
      attentionBackward(ws: ws, block: b, sequences: sequences, layout: layout, dropout: dropout)
      // Query projection: dq += dQp · Wq.
      let inProj = params + w.inProjWeight
      let gradInProj = grads + w.inProjWeight
      let gradInBias = grads + w.inProjBias
      Kernels.linearBackward(
        dOut: ws.gradQuery, rows: n, outputs: d, input: ws.query[b], inputs: d, weight: inProj,
        gradWeight: gradInProj, gradBias: gradInBias, dInput: g1, accumulate: true)
      // Key and value projections: d x[b] = dKV · Wkv → g0.
      Kernels.linearBackward(
        dOut: ws.gradKeysValues, rows: n, outputs: 2 * d, input: ws.x[b], inputs: d,
        weight: inProj + d * d, gradWeight: gradInProj + d * d, gradBias: gradInBias + d,
        dInput: g0, accumulate: false)
      // Attention layer norm: d x[b] += LN_a'(dq).
      Kernels.layerNormBackward(
        g1, rows: n, dim: d, normalized: ws.normalizedA[b], rstd: ws.rstdA[b],
        gamma: params + w.attentionNormWeight, gradGamma: grads + w.attentionNormWeight,
        gradBeta: grads + w.attentionNormBias, out: g0, accumulate: true)
    }

    // Embeddings: x0 = dropout(E[item] √d + P[slot]).
    if dropout > 0 { Kernels.multiply(g0, by: ws.embeddingMask, nd) }
    let embeddingScale = Float(d).squareRoot()
    let gradItems = grads + layout.itemEmbedding
    let gradPositions = grads + layout.positionEmbedding
    for r in 0..<n {
      let g = g0 + r * d
      Kernels.axpy(embeddingScale, g, gradItems + Int(ws.items[r]) * d, d)
      Kernels.axpy(1, g, gradPositions + Int(ws.slots[r]) * d, d)
    }
  }

  /// Backward of `attentionForward`: from d attended (grad2) to d projected query (gradQuery)
  /// and d keys/values (gradKeysValues).
  private static func attentionBackward(
    ws: SASRecWorkspace, block b: Int, sequences: Int, layout: SASRecLayout, dropout: Float
  ) {
    let d = layout.dim
    let heads = layout.heads
    let dh = d / heads
    let scale = 1 / Float(dh).squareRoot()
    let keep: Float = dropout > 0 ? 1 / (1 - dropout) : 1
    let qp = ws.projectedQuery[b]
    let kv = ws.keysValues[b]
    let dAttended = ws.grad2
    let dScores = ws.gradScores
    for s in 0..<sequences {
      let r0 = ws.sequenceStart[s]
      let L = ws.sequenceStart[s + 1] - r0
      for h in 0..<heads {
        let p = ws.probabilities[b] + ws.attentionStart[s] + h * L * L
        let weights =
          dropout > 0 ? ws.droppedProbabilities[b] + ws.attentionStart[s] + h * L * L : p
        let qh = qp + r0 * d + h * dh
        let kh = kv + r0 * 2 * d + h * dh
        let vh = kh + d
        let dA = dAttended + r0 * d + h * dh
        // d weights = dA · Vᵀ;  d V = weightsᵀ · dA.
        cblas_sgemm(
          CblasRowMajor, CblasNoTrans, CblasTrans, Int32(L), Int32(L), Int32(dh), 1, dA, Int32(d),
          vh, Int32(2 * d), 0, dScores, Int32(L))
        cblas_sgemm(
          CblasRowMajor, CblasTrans, CblasNoTrans, Int32(L), Int32(dh), Int32(L), 1, weights,
          Int32(L), dA, Int32(d), 0, ws.gradKeysValues + r0 * 2 * d + d + h * dh, Int32(2 * d))
        Kernels.causalSoftmaxBackward(
          dScores, probabilities: p, dropped: dropout > 0 ? UnsafePointer(weights) : nil,
          keep: keep, L)
        // d Q = scale · dS · K;  d K = scale · dSᵀ · Q.
        cblas_sgemm(
          CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(L), Int32(dh), Int32(L), scale, dScores,
          Int32(L), kh, Int32(2 * d), 0, ws.gradQuery + r0 * d + h * dh, Int32(d))
        cblas_sgemm(
          CblasRowMajor, CblasTrans, CblasNoTrans, Int32(L), Int32(dh), Int32(L), scale, dScores,
          Int32(L), qh, Int32(d), 0, ws.gradKeysValues + r0 * 2 * d + h * dh, Int32(2 * d))
      }
    }
  }
}

/// The small kernels of the network: vectorised loops over contiguous floats.
enum Kernels {
  typealias V = SIMD8<Float>

  @inline(__always)
  static func load(_ p: UnsafePointer<Float>, _ k: Int) -> V {
    UnsafeRawPointer(p).loadUnaligned(fromByteOffset: k * 4, as: V.self)
  }

  @inline(__always)
  static func store(_ v: V, _ p: UnsafeMutablePointer<Float>, _ k: Int) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, toByteOffset: k * 4, as: V.self)
  }

  /// y[r, :] = x[r, :] · Wᵀ + bias for r in 0..<rows; W is [outputs, inputs] row-major.
  static func linear(
    _ x: UnsafePointer<Float>, ld: Int, rows: Int, inputs: Int, weight: UnsafePointer<Float>,
    bias: UnsafePointer<Float>, outputs: Int, out: UnsafeMutablePointer<Float>, ldOut: Int
  ) {
    if rows == 0 { return }
    for r in 0..<rows { (out + r * ldOut).update(from: bias, count: outputs) }
    cblas_sgemm(
      CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outputs), Int32(inputs), 1, x,
      Int32(ld), weight, Int32(inputs), 1, out, Int32(ldOut))
  }

  /// Backward of `linear` (contiguous rows: ld = inputs for x, outputs for dOut):
  /// gradWeight += dOutᵀ · x, gradBias += Σ_rows dOut, dInput (+)= dOut · W.
  static func linearBackward(
    dOut: UnsafePointer<Float>, rows: Int, outputs: Int, input: UnsafePointer<Float>,
    inputs: Int, weight: UnsafePointer<Float>, gradWeight: UnsafeMutablePointer<Float>,
    gradBias: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>, accumulate: Bool
  ) {
    if rows == 0 { return }
    cblas_sgemm(
      CblasRowMajor, CblasTrans, CblasNoTrans, Int32(outputs), Int32(inputs), Int32(rows), 1,
      dOut, Int32(outputs), input, Int32(inputs), 1, gradWeight, Int32(inputs))
    for r in 0..<rows { add(dOut + r * outputs, into: gradBias, outputs) }
    cblas_sgemm(
      CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(inputs), Int32(outputs), 1,
      dOut, Int32(outputs), weight, Int32(inputs), accumulate ? 1 : 0, dInput, Int32(inputs))
  }

  /// Row-wise layer normalisation: out = gamma ⊙ (x − mean) · rstd + beta, with the biased
  /// variance and rstd = 1/√(var + ε); keeps x̂ and rstd for the backward pass.
  static func layerNorm(
    _ x: UnsafePointer<Float>, rows: Int, dim d: Int, gamma: UnsafePointer<Float>,
    beta: UnsafePointer<Float>, epsilon: Float, out: UnsafeMutablePointer<Float>,
    normalized: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>
  ) {
    let inv = 1 / Float(d)
    for r in 0..<rows {
      let row = x + r * d
      var sum: Float = 0
      for k in 0..<d { sum += row[k] }
      let mean = sum * inv
      var sq: Float = 0
      for k in 0..<d {
        let c = row[k] - mean
        sq += c * c
      }
      let s = 1 / (sq * inv + epsilon).squareRoot()
      rstd[r] = s
      let xh = normalized + r * d
      let o = out + r * d
      for k in 0..<d {
        let v = (row[k] - mean) * s
        xh[k] = v
        o[k] = gamma[k] * v + beta[k]
      }
    }
  }

  /// Backward of `layerNorm`: gradGamma += Σ dy ⊙ x̂, gradBeta += Σ dy, and
  /// dx (+)= rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)) with g = dy ⊙ gamma.
  static func layerNormBackward(
    _ dy: UnsafePointer<Float>, rows: Int, dim d: Int, normalized: UnsafePointer<Float>,
    rstd: UnsafePointer<Float>, gamma: UnsafePointer<Float>,
    gradGamma: UnsafeMutablePointer<Float>, gradBeta: UnsafeMutablePointer<Float>,
    out: UnsafeMutablePointer<Float>, accumulate: Bool
  ) {
    let inv = 1 / Float(d)
    for r in 0..<rows {
      let g = dy + r * d
      let xh = normalized + r * d
      var s1: Float = 0
      var s2: Float = 0
      for k in 0..<d {
        let gk = g[k] * gamma[k]
        s1 += gk
        s2 += gk * xh[k]
        gradGamma[k] += g[k] * xh[k]
        gradBeta[k] += g[k]
      }
      let m1 = s1 * inv
      let m2 = s2 * inv
      let s = rstd[r]
      let o = out + r * d
      if accumulate {
        for k in 0..<d { o[k] += s * (g[k] * gamma[k] - m1 - xh[k] * m2) }
      } else {
        for k in 0..<d { o[k] = s * (g[k] * gamma[k] - m1 - xh[k] * m2) }
      }
    }
  }

  /// Row i of the L×L scores becomes softmax over columns 0...i; columns after i become 0.
  static func causalSoftmax(_ p: UnsafeMutablePointer<Float>, _ L: Int) {
    for i in 0..<L {
      let row = p + i * L
      var m = row[0]
      var j = 1
      while j <= i {
        if row[j] > m { m = row[j] }
        j += 1
      }
      let sum = FastMath.expShiftInPlace(row, count: i + 1, shift: m)
      let inv = 1 / sum
      for j in 0...i { row[j] *= inv }
      if i + 1 < L { (row + i + 1).update(repeating: 0, count: L - i - 1) }
    }
  }

  /// In place: d weights (dP) → d scores (dS) through dropout and the causal softmax:
  /// dPm = dP ⊙ keep-mask;  dS_ij = P_ij (dPm_ij − Σ_k P_ik dPm_ik) for j ≤ i, 0 after.
  static func causalSoftmaxBackward(
    _ grad: UnsafeMutablePointer<Float>, probabilities p: UnsafePointer<Float>,
    dropped: UnsafePointer<Float>?, keep: Float, _ L: Int
  ) {
    for i in 0..<L {
      let g = grad + i * L
      let pr = p + i * L
      if let dropped {
        let dr = dropped + i * L
        for j in 0...i { g[j] = dr[j] != 0 ? g[j] * keep : 0 }
      }
      var dot: Float = 0
      for j in 0...i { dot += pr[j] * g[j] }
      for j in 0...i { g[j] = pr[j] * (g[j] - dot) }
      if i + 1 < L { (g + i + 1).update(repeating: 0, count: L - i - 1) }
    }
  }

  /// Fills `mask[0..<n]` with 0 (dropped, probability `rate`) or 1/(1 − rate) (kept).
  static func dropoutMask(
    _ mask: UnsafeMutablePointer<Float>, _ n: Int, rate: Float, rng: inout Xoshiro256
  ) {
    let threshold = UInt32(min(Double(rate) * 4_294_967_296.0, 4_294_967_295.0))
    let kept = 1 / (1 - rate)
    var k = 0
    while k + 2 <= n {
      let r = rng.next()
      mask[k] = UInt32(truncatingIfNeeded: r) >= threshold ? kept : 0
      mask[k + 1] = UInt32(truncatingIfNeeded: r >> 32) >= threshold ? kept : 0
      k += 2
    }
    if k < n { mask[k] = UInt32(truncatingIfNeeded: rng.next()) >= threshold ? kept : 0 }
  }

  /// x ⊙= m
  static func multiply(
    _ x: UnsafeMutablePointer<Float>, by m: UnsafePointer<Float>, _ n: Int
  ) {
    var k = 0
    while k + 8 <= n {
      store(load(x, k) * load(m, k), x, k)
      k += 8
    }
    while k < n {
      x[k] *= m[k]
      k += 1
    }
  }

  /// out = a ⊙ b
  static func multiply(
    _ a: UnsafePointer<Float>, by b: UnsafePointer<Float>, _ n: Int,
    into out: UnsafeMutablePointer<Float>
  ) {
    var k = 0
    while k + 8 <= n {
      store(load(a, k) * load(b, k), out, k)
      k += 8
    }
    while k < n {
      out[k] = a[k] * b[k]
      k += 1
    }
  }

  /// y += x
  static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ n: Int) {
    var k = 0
    while k + 8 <= n {
      store(load(y, k) + load(x, k), y, k)
      k += 8
    }
    while k < n {
      y[k] += x[k]
      k += 1
    }
  }

  /// y += a · x
  @inline(__always)
  static func axpy(
    _ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int
  ) {
    let va = V(repeating: a)
    var k = 0
    while k + 8 <= n {
      store(load(y, k) + va * load(x, k), y, k)
      k += 8
    }
    while k < n {
      y[k] += a * x[k]
      k += 1
    }
  }

  static func relu(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
    let zero = V(repeating: 0)
    var k = 0
    while k + 8 <= n {
      store(pointwiseMax(load(x, k), zero), x, k)
      k += 8
    }
    while k < n {
      if !(x[k] > 0) { x[k] = 0 }
      k += 1
    }
  }

  /// g ⊙= scale where the activation is positive, 0 elsewhere.
  static func reluBackward(
    _ g: UnsafeMutablePointer<Float>, activations a: UnsafePointer<Float>, scale: Float, _ n: Int
  ) {
    let zero = V(repeating: 0)
    let vs = V(repeating: scale)
    var k = 0
    while k + 8 <= n {
      let positive = load(a, k) .> zero
      store((load(g, k) * vs).replacing(with: 0, where: .!positive), g, k)
      k += 8
    }
    while k < n {
      g[k] = a[k] > 0 ? g[k] * scale : 0
      k += 1
    }
  }
}
