import Dispatch

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Trains SASRec as the authors do: every user's sequence (time order) predicts, at each
/// position, the next item against one uniformly sampled item the user never interacted with
/// (binary cross-entropy on both logits, averaged over the batch's positions), with Adam.
/// Each epoch visits every user with at least two interactions once, in a seeded random order,
/// in batches of `batchSize` users; a batch is split over `threads` threads (data parallel:
/// each thread runs the forward and backward passes of its users, in chunks packed without
/// padding, into its own gradient buffer; the optimizer step sums them).
///
/// The progress loss is the epoch's mean batch loss; `validation["correct"]` is the fraction of
/// positions where the next item scored above its sampled negative.
public enum SASRecTrainer {
  /// Rows (positions) packed into one forward/backward chunk: large enough for efficient
  /// matrix products, small enough to stay in cache.
  static let rowsPerChunk = 1024

  /// `isCancelled` is asked before every batch (an epoch of a large log takes a while), the
  /// progress callback after every epoch; either stops training with `TrainingError.cancelled`.
  public static func train(
    _ data: Interactions, config: SASRecConfig, progress: TrainingProgressHandler? = nil,
    isCancelled: (@Sendable () -> Bool)? = nil
  ) throws -> SASRecModel {
    try config.validate()
    let I = data.itemCount
    let start = monotonicSeconds()
    let (sequences, seen, trainable) = try trainingSequences(data)
    let d = config.dim
    let layout = SASRecLayout(
      dim: d, heads: config.heads, blocks: config.blocks, maxlen: config.maxlen, items: I)
    let P = layout.count
    let parameterMemory = TensorMemory(byteCount: P * 4)
    let params = parameterMemory.base.bindMemory(to: Float.self, capacity: P)
    initialize(params, layout: layout, seed: config.seed)

    let T = max(1, min(config.threads, config.batchSize))
    // The threads split each batch; BLAS calls stay on the calling thread (OpenBLAS's own pool,
    // entered from several threads at once, serialises them).
    let blasThreads = BLASThreads.count
    BLASThreads.set(1)
    defer { BLASThreads.set(blasThreads) }
    let state = TrainingState(parameterCount: P, threads: T)
    defer { state.free() }

    try withContext(
      sequences: sequences, seen: seen, layout: layout, config: config, params: params,
      itemCount: I
    ) { context in
      var order = trainable
      var step = 0
      let batches = (trainable.count + config.batchSize - 1) / config.batchSize
      var shuffle = Xoshiro256(seed: config.seed, stream: 0x5A5)
      for epoch in 1...config.epochs {
        for k in stride(from: order.count - 1, to: 0, by: -1) {
          order.swapAt(k, shuffle.nextInt(below: k + 1))
        }
        var lossSum = 0.0
        var correct = 0
        var counted = 0
        for b in 0..<batches {
          if let isCancelled, isCancelled() { throw TrainingError.cancelled }
          let batch = order[(b * config.batchSize)..<min(order.count, (b + 1) * config.batchSize)]
          let result = trainBatch(
            batch, epoch: epoch, index: b, context: context, state: state,
            positions: { u in min(sequences.count(of: Int(u)) - 1, config.maxlen) })
          correct += result.correct
          counted += result.positions
          lossSum += result.loss
          step += 1
          state.adamStep(params: params, count: P, step: step, config: config)
        }
        try finishEpoch(
          epoch, of: config.epochs, loss: lossSum / Double(batches),
          validation: ["correct": counted > 0 ? Double(correct) / Double(counted) : 0],
          started: start, learningRate: config.learningRate, progress: progress)
      }
    }
    for k in 0..<P where !params[k].isFinite {
      throw TrainingError.invalidConfiguration(
        "training diverged (parameters are not finite); use a lower learning rate than \(config.learningRate)"
      )
    }
    return SASRecModel(
      userIds: data.userIds, itemIds: data.itemIds, userLookup: data.userLookup,
      itemLookup: data.itemLookup,
      architecture: SASRecArchitecture(
        dim: d, maxlen: config.maxlen, blocks: config.blocks, heads: config.heads,
        layerNormEpsilon: config.layerNormEpsilon),
      parameters: parameterMemory, sequences: sequences, seen: seen, threads: config.threads)
  }

  /// Each user's sequence, seen items and the users with at least two interactions (the
  /// ones that predict something); refuses data SASRec cannot learn from.
  static func trainingSequences(
    _ data: Interactions
  ) throws -> (UserSequences, SeenItems, [Int32]) {
    if data.isEmpty {
      throw TrainingError.invalidData("\(data.source): no interactions to train on")
    }
    let I = data.itemCount
    let U = data.userCount
    if I < 2 { throw TrainingError.invalidData("\(data.source): SASRec needs at least two items") }
    let sequences = data.userSequences()
    let seen = SeenItems.build(users: data.users, items: data.items, userCount: U, itemCount: I)
    let trainable = (0..<U).filter { sequences.count(of: $0) >= 2 }.map { Int32($0) }
    if trainable.isEmpty {
      throw TrainingError.invalidData(
        "\(data.source): no user has two or more interactions; SASRec learns what follows what")
    }
    return (sequences, seen, trainable)
  }

  /// Runs `body` with the context every thread reads (pointers into the sequences and the
  /// seen lists, valid during the call).
  static func withContext(
    sequences: UserSequences, seen: SeenItems, layout: SASRecLayout, config: SASRecConfig,
    params: UnsafeMutablePointer<Float>, itemCount: Int, _ body: (Context) throws -> Void
  ) rethrows {
    try sequences.indptr.withUnsafeBufferPointer { indptr in
      try sequences.items.withUnsafeBufferPointer { items in
        try seen.indptr.withUnsafeBufferPointer { seenIndptr in
          try seen.indices.withUnsafeBufferPointer { seenIndices in
            try body(
              Context(
                layout: layout, config: config, params: params, indptr: indptr.baseAddress!,
                items: items.baseAddress!, seenIndptr: seenIndptr.baseAddress!,
                seenIndices: seenIndices.baseAddress!, itemCount: itemCount))
          }
        }
      }
    }
  }

  /// Forward and backward passes of one batch, its users spread over the threads by cost
  /// (attention grows with L²) in buffers kept from batch to batch; the gradients of the batch
  /// mean loss accumulate in the threads' buffers for the optimizer step. Returns the batch's
  /// mean loss, its positions and how many of them scored the next item above its negative.
  static func trainBatch(
    _ batch: ArraySlice<Int32>, epoch: Int, index b: Int, context: Context,
    state: TrainingState, positions: (Int32) -> Int
  ) -> (loss: Double, positions: Int, correct: Int) {
    let T = state.threads
    for t in 0..<T {
      state.shares[t].removeAll(keepingCapacity: true)
      state.load[t] = 0
    }
    var total = 0
    for u in batch {
      let L = positions(u)
      total += L
      var t = 0
      for j in 1..<T where state.load[j] < state.load[t] { t = j }
      state.shares[t].append(u)
      state.load[t] += L * L + 64 * L
    }
    let invTotal = 1 / Float(total)
    let seed = context.config.seed
    Parallel.run(T) { t in
      var rng = Xoshiro256(
        seed: seed,
        stream: UInt64(epoch) &* 0x1_0000_0000 &+ UInt64(b) &* 0x100 &+ UInt64(t))
      state.results[t] = runShare(
        state.shares[t], context: context, workspace: state.workspaces[t],
        grads: state.grads[t], invTotal: invTotal, rng: &rng)
    }
    var batchLoss = 0.0
    var correct = 0
    for t in 0..<T {
      batchLoss += state.results[t].loss
      correct += state.results[t].correct
    }
    return (batchLoss / Double(total), total, correct)
  }

  /// The authors' initialisation (through PyTorch's defaults): Xavier-normal weights for every
  /// matrix (embeddings, projections, feed-forward), layer norms at 1 and 0, attention biases
  /// 0, feed-forward biases uniform in ±1/√d. The padding row stays 0.
  static func initialize(_ p: UnsafeMutablePointer<Float>, layout: SASRecLayout, seed: UInt64) {
    p.initialize(repeating: 0, count: layout.count)
    var rng = Xoshiro256(seed: seed, stream: 0x1417)
    let d = layout.dim
    for t in layout.tensors {
      let target = p + t.offset
      if t.shape.count == 2 {
        let std = (2 / Double(t.shape[0] + t.shape[1])).squareRoot()
        for k in 0..<t.count { target[k] = Float(rng.nextGaussian() * std) }
      } else if t.name.contains("layernorm") && t.name.hasSuffix(".weight") {
        target.update(repeating: 1, count: t.count)
      } else if t.name.hasSuffix("conv1.bias") || t.name.hasSuffix("conv2.bias") {
        let bound = 1 / Float(d).squareRoot()
        for k in 0..<t.count { target[k] = (rng.nextFloat() * 2 - 1) * bound }
      }
    }
    (p + layout.itemEmbedding).update(repeating: 0, count: d)
  }

  /// What every thread reads during an epoch.
  struct Context: @unchecked Sendable {
    let layout: SASRecLayout
    let config: SASRecConfig
    let params: UnsafeMutablePointer<Float>
    let indptr: UnsafePointer<Int64>
    let items: UnsafePointer<Int32>
    let seenIndptr: UnsafePointer<Int64>
    let seenIndices: UnsafePointer<Int32>
    let itemCount: Int
  }

  struct ShareResult {
    var loss = 0.0
    var correct = 0
  }

  /// Forward and backward over `users` in chunks of about `rowsPerChunk` positions; the
  /// gradients of the batch mean loss (1/`invTotal` positions in the whole batch) accumulate
  /// into `grads`.
  static func runShare(
    _ users: [Int32], context c: Context, workspace ws: SASRecWorkspace,
    grads: UnsafeMutablePointer<Float>, invTotal: Float, rng: inout Xoshiro256
  ) -> ShareResult {
    var result = ShareResult()
    let layout = c.layout
    let maxlen = layout.maxlen
    var first = 0
    while first < users.count {
      // The chunk: users[first..<last].
      var last = first
      var rows = 0
      var attention = 0
      while last < users.count {
        let L = min(Int(c.indptr[Int(users[last]) + 1] - c.indptr[Int(users[last])]) - 1, maxlen)
        if last > first && rows + L > rowsPerChunk { break }
        rows += L
        attention += layout.heads * L * L
        last += 1
      }
      ws.reserve(
        rows: rows, sequences: last - first, attention: attention, dim: layout.dim,
        blocks: layout.blocks, maxlen: maxlen)
      var row = 0
      var att = 0
      for s in 0..<(last - first) {
        let u = Int(users[first + s])
        let a = Int(c.indptr[u])
        let n = Int(c.indptr[u + 1]) - a
        let L = min(n - 1, maxlen)
        ws.sequenceStart[s] = row
        ws.attentionStart[s] = att
        let seenStart = c.seenIndices + Int(c.seenIndptr[u])
        let seenCount = Int(c.seenIndptr[u + 1] - c.seenIndptr[u])
        for j in 0..<L {
          ws.items[row + j] = c.items[a + n - 1 - L + j] + 1
          ws.slots[row + j] = Int32(maxlen - L + j)
          ws.positives[row + j] = c.items[a + n - L + j] + 1
          ws.negatives[row + j] =
            negative(
              itemCount: c.itemCount, seen: UnsafeBufferPointer(start: seenStart, count: seenCount),
              rng: &rng) + 1
        }
        row += L
        att += layout.heads * L * L
      }
      let sequences = last - first
      ws.sequenceStart[sequences] = row
      ws.attentionStart[sequences] = att
      SASRecNetwork.forward(
        params: c.params, layout: layout, epsilon: c.config.layerNormEpsilon, ws: ws,
        sequences: sequences, dropout: c.config.dropout, rng: &rng)
      let (loss, correct) = lossGradient(
        params: c.params, grads: grads, layout: layout, ws: ws, rows: row, scale: invTotal)
      result.loss += loss
      result.correct += correct
      SASRecNetwork.backward(
        params: c.params, grads: grads, layout: layout, ws: ws, sequences: sequences,
        dropout: c.config.dropout)
      first = last
    }
    return result
  }

  /// An item (index) the user never interacted with, uniformly; after 64 draws that all hit the
  /// user's items (a user who has nearly everything), the last draw.
  @inline(__always)
  static func negative(itemCount: Int, seen: UnsafeBufferPointer<Int32>, rng: inout Xoshiro256)
    -> Int32
  {
    var candidate = Int32(rng.nextInt(below: itemCount))
    for _ in 0..<64 {
      if !RankingEvaluator.binarySearch(seen, candidate) { return candidate }
      candidate = Int32(rng.nextInt(below: itemCount))
    }
    return candidate
  }

  /// Binary cross-entropy of each position's next item (label 1) and sampled negative (label
  /// 0) against the output: returns the summed loss and how many positions ranked the positive
  /// first; writes dLoss/dOutput (times `scale`) to `ws.grad3` and adds the item embeddings'
  /// share of the gradient to `grads`.
  static func lossGradient(
    params: UnsafePointer<Float>, grads: UnsafeMutablePointer<Float>, layout: SASRecLayout,
    ws: SASRecWorkspace, rows: Int, scale: Float
  ) -> (Double, Int) {
    let d = layout.dim
    let embedding = params + layout.itemEmbedding
    let gradEmbedding = grads + layout.itemEmbedding
    var loss = 0.0
    var correct = 0
    for r in 0..<rows {
      let y = ws.output + r * d
      let pe = embedding + Int(ws.positives[r]) * d
      let ne = embedding + Int(ws.negatives[r]) * d
      let lp = VectorMath.dot(y, pe, d)
      let ln = VectorMath.dot(y, ne, d)
      loss += Double(softplus(-lp) + softplus(ln))
      if lp > ln { correct += 1 }
      let gp = (sigmoid(lp) - 1) * scale
      let gn = sigmoid(ln) * scale
      let dy = ws.grad3 + r * d
      for k in 0..<d { dy[k] = gp * pe[k] + gn * ne[k] }
      Kernels.axpy(gp, y, gradEmbedding + Int(ws.positives[r]) * d, d)
      Kernels.axpy(gn, y, gradEmbedding + Int(ws.negatives[r]) * d, d)
    }
    return (loss, correct)
  }

  @inline(__always)
  static func sigmoid(_ x: Float) -> Float {
    x >= 0 ? 1 / (1 + expf(-x)) : expf(x) / (1 + expf(x))
  }

  /// log(1 + e^x), without overflow.
  @inline(__always)
  static func softplus(_ x: Float) -> Float {
    max(x, 0) + log1pf(expf(-abs(x)))
  }
}

/// The optimizer state and the per-thread buffers of one training.
final class TrainingState: @unchecked Sendable {
  let threads: Int
  let workspaces: [SASRecWorkspace]
  let grads: [UnsafeMutablePointer<Float>]
  let m: UnsafeMutablePointer<Float>
  let v: UnsafeMutablePointer<Float>
  var results: UnsafeMutablePointer<SASRecTrainer.ShareResult>
  let count: Int
  /// Each thread's users in the current batch, and their estimated cost.
  var shares: [[Int32]]
  var load: [Int]

  init(parameterCount n: Int, threads: Int) {
    self.threads = threads
    count = n
    workspaces = (0..<threads).map { _ in SASRecWorkspace() }
    grads = (0..<threads).map { _ in
      let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
      p.initialize(repeating: 0, count: n)
      return p
    }
    m = .allocate(capacity: n)
    m.initialize(repeating: 0, count: n)
    v = .allocate(capacity: n)
    v.initialize(repeating: 0, count: n)
    results = .allocate(capacity: threads)
    results.initialize(repeating: SASRecTrainer.ShareResult(), count: threads)
    shares = [[Int32]](repeating: [], count: threads)
    load = [Int](repeating: 0, count: threads)
  }

  func free() {
    for g in grads { g.deallocate() }
    m.deallocate()
    v.deallocate()
    results.deallocate()
  }

  /// Adam (as PyTorch's, without weight decay) on the summed thread gradients, which it resets
  /// to zero; the parameters are split over the threads.
  func adamStep(params: UnsafeMutablePointer<Float>, count n: Int, step: Int, config: SASRecConfig)
  {
    let b1 = config.beta1
    let b2 = config.beta2
    let correction1 = 1 - Float(pow(Double(b1), Double(step)))
    let correction2 = 1 - Float(pow(Double(b2), Double(step)))
    // p −= lr·m̂/(√v̂ + ε)  ⇔  p −= (lr·√c2/c1)·m/(√v + ε·√c2)
    let rate = config.learningRate * correction2.squareRoot() / correction1
    let epsilon = config.adamEpsilon * correction2.squareRoot()
    let T = threads
    let grads = self.grads
    let m = self.m
    let v = self.v
    let chunk = ((n + T - 1) / T + 15) & ~15
    let work: (Int) -> Void = { t in
      let lo = min(n, t * chunk)
      let hi = min(n, lo + chunk)
      typealias V = SIMD8<Float>
      let vb1 = V(repeating: b1)
      let vb2 = V(repeating: b2)
      let va1 = V(repeating: 1 - b1)
      let va2 = V(repeating: 1 - b2)
      let vr = V(repeating: rate)
      let ve = V(repeating: epsilon)
      var k = lo
      while k + 8 <= hi {
        var g = Kernels.load(grads[0], k)
        Kernels.store(V(), grads[0], k)
        for j in 1..<T {
          g += Kernels.load(grads[j], k)
          Kernels.store(V(), grads[j], k)
        }
        let mk = vb1 * Kernels.load(m, k) + va1 * g
        let vk = vb2 * Kernels.load(v, k) + va2 * g * g
        Kernels.store(mk, m, k)
        Kernels.store(vk, v, k)
        Kernels.store(Kernels.load(params, k) - vr * mk / (vk.squareRoot() + ve), params, k)
        k += 8
      }
      while k < hi {
        var g: Float = 0
        for j in 0..<T {
          g += grads[j][k]
          grads[j][k] = 0
        }
        m[k] = b1 * m[k] + (1 - b1) * g
        v[k] = b2 * v[k] + (1 - b2) * g * g
        params[k] -= rate * m[k] / (v[k].squareRoot() + epsilon)
        k += 1
      }
    }
    Parallel.run(T, work)
  }
}
