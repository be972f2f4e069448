import Foundation
import Testing

@testable import RecServeModels

/// A small SASRec with random weights and a packed chunk of sequences, for checking the
/// backward pass against finite differences of the loss.
struct GradientFixture {
  let layout: SASRecLayout
  let sequences: [[Int32]]  // embedding rows (1-based), inputs
  let positives: [[Int32]]
  let negatives: [[Int32]]
  var params: [Float]
  let dropout: Float
  let epsilon: Float = 1e-8

  init(
    dim: Int = 8, heads: Int = 2, blocks: Int = 2, maxlen: Int = 6, items: Int = 10,
    lengths: [Int] = [6, 3, 1, 5], dropout: Float = 0, seed: UInt64 = 7
  ) {
    let layout = SASRecLayout(dim: dim, heads: heads, blocks: blocks, maxlen: maxlen, items: items)
    self.layout = layout
    var rng = Xoshiro256(seed: seed)
    func item() -> Int32 { Int32(1 + rng.nextInt(below: items)) }
    sequences = lengths.map { n in (0..<n).map { _ in item() } }
    positives = lengths.map { n in (0..<n).map { _ in item() } }
    negatives = lengths.map { n in (0..<n).map { _ in item() } }
    var p = [Float](repeating: 0, count: layout.count)
    p.withUnsafeMutableBufferPointer {
      SASRecTrainer.initialize($0.baseAddress!, layout: layout, seed: seed)
    }
    // Move every parameter away from its initial symmetric values (layer norms at exactly 1
    // and 0, zero biases) so that each term of the gradient matters.
    for t in layout.tensors {
      for k in 0..<t.count {
        let noise = Float(rng.nextGaussian()) * 0.2
        p[t.offset + k] += t.shape.count == 1 ? noise : noise * 0.5
      }
    }
    for k in 0..<dim { p[layout.itemEmbedding + k] = 0 }
    params = p
    self.dropout = dropout
  }

  /// Loads the chunk into `ws`; returns the number of rows.
  func load(_ ws: SASRecWorkspace) -> Int {
    let rows = sequences.reduce(0) { $0 + $1.count }
    let attention = sequences.reduce(0) { $0 + layout.heads * $1.count * $1.count }
    ws.reserve(
      rows: rows, sequences: sequences.count, attention: attention, dim: layout.dim,
      blocks: layout.blocks, maxlen: layout.maxlen)
    var r = 0
    var a = 0
    for (s, sequence) in sequences.enumerated() {
      ws.sequenceStart[s] = r
      ws.attentionStart[s] = a
      let L = sequence.count
      for j in 0..<L {
        ws.items[r + j] = sequence[j]
        ws.slots[r + j] = Int32(layout.maxlen - L + j)
        ws.positives[r + j] = positives[s][j]
        ws.negatives[r + j] = negatives[s][j]
      }
      r += L
      a += layout.heads * L * L
    }
    ws.sequenceStart[sequences.count] = r
    ws.attentionStart[sequences.count] = a
    return rows
  }

  /// The mean loss at `params` (dropout masks from a fixed seed, the same at every call).
  func loss(_ params: [Float]) -> Double {
    let ws = SASRecWorkspace()
    let rows = load(ws)
    var scratch = [Float](repeating: 0, count: layout.count)
    return params.withUnsafeBufferPointer { p in
      scratch.withUnsafeMutableBufferPointer { g in
        var rng = Xoshiro256(seed: 99)
        SASRecNetwork.forward(
          params: p.baseAddress!, layout: layout, epsilon: epsilon, ws: ws,
          sequences: sequences.count, dropout: dropout, rng: &rng)
        let (sum, _) = SASRecTrainer.lossGradient(
          params: p.baseAddress!, grads: g.baseAddress!, layout: layout, ws: ws, rows: rows,
          scale: 1 / Float(rows))
        return sum / Double(rows)
      }
    }
  }

  /// The backward pass's gradient of the mean loss.
  func gradient() -> [Float] {
    let ws = SASRecWorkspace()
    let rows = load(ws)
    var grads = [Float](repeating: 0, count: layout.count)
    params.withUnsafeBufferPointer { p in
      grads.withUnsafeMutableBufferPointer { g in
        var rng = Xoshiro256(seed: 99)
        SASRecNetwork.forward(
          params: p.baseAddress!, layout: layout, epsilon: epsilon, ws: ws,
          sequences: sequences.count, dropout: dropout, rng: &rng)
        _ = SASRecTrainer.lossGradient(
          params: p.baseAddress!, grads: g.baseAddress!, layout: layout, ws: ws, rows: rows,
          scale: 1 / Float(rows))
        SASRecNetwork.backward(
          params: p.baseAddress!, grads: g.baseAddress!, layout: layout, ws: ws,
          sequences: sequences.count, dropout: dropout)
      }
    }
    return grads
  }

  /// The forward output rows (no dropout).
  func outputs(_ params: [Float]) -> [[Float]] {
    let ws = SASRecWorkspace()
    let rows = load(ws)
    return params.withUnsafeBufferPointer { p in
      var rng = Xoshiro256(seed: 1)
      SASRecNetwork.forward(
        params: p.baseAddress!, layout: layout, epsilon: epsilon, ws: ws,
        sequences: sequences.count, dropout: 0, rng: &rng)
      return (0..<rows).map { r in
        Array(UnsafeBufferPointer(start: ws.output + r * layout.dim, count: layout.dim))
      }
    }
  }

  /// Compares the analytic directional derivative along a direction over the entries of the
  /// tensors matching `filter` with a central difference of the loss. Returns both. The
  /// direction is random, or with `seed` 0 the backward pass's own gradient (then both should
  /// equal its norm).
  func directionalCheck(_ filter: (String) -> Bool, seed: UInt64, step: Float = 2e-3) -> (
    analytic: Double, numeric: Double
  ) {
    let grads = gradient()
    var rng = Xoshiro256(seed: seed)
    var direction = [Float](repeating: 0, count: layout.count)
    var norm = 0.0
    for t in layout.tensors where filter(t.name) {
      for k in 0..<t.count {
        // The padding row takes no part in the network.
        if t.offset == layout.itemEmbedding && k < layout.dim { continue }
        let v = seed == 0 ? grads[t.offset + k] : Float(rng.nextGaussian())
        direction[t.offset + k] = v
        norm += Double(v * v)
      }
    }
    let scale = Float(1 / norm.squareRoot())
    var analytic = 0.0
    for k in 0..<layout.count {
      direction[k] *= scale
      analytic += Double(direction[k]) * Double(grads[k])
    }
    var plus = params
    var minus = params
    for k in 0..<layout.count {
      plus[k] += step * direction[k]
      minus[k] -= step * direction[k]
    }
    let numeric = (loss(plus) - loss(minus)) / Double(2 * step)
    return (analytic, numeric)
  }
}

@Suite struct SASRecGradientTests {
  /// One group a component of the network: embeddings, attention (its layer norm, in- and
  /// out-projections), the feed-forward network (its layer norm, both layers), the final layer
  /// norm.
  static let groups: [(String, @Sendable (String) -> Bool)] = [
    ("item embeddings (input and output, the loss)", { $0 == "item_emb.weight" }),
    ("position embeddings", { $0 == "pos_emb.weight" }),
    ("attention layer norm", { $0.hasPrefix("attention_layernorms.") }),
    ("attention in-projection", { $0.contains("in_proj") }),
    ("attention out-projection", { $0.contains("out_proj") }),
    ("feed-forward layer norm", { $0.hasPrefix("forward_layernorms.") }),
    ("feed-forward first layer", { $0.contains("conv1") }),
    ("feed-forward second layer", { $0.contains("conv2") }),
    ("final layer norm", { $0.hasPrefix("last_layernorm.") }),
    ("block 0 only", { $0.contains(".0.") }),
    ("everything", { _ in true }),
  ]

  @Test(arguments: 0..<groups.count)
  func backwardMatchesFiniteDifferences(group: Int) {
    let (name, filter) = Self.groups[group]
    let fixture = GradientFixture()
    for seed: UInt64 in [0, 1, 2, 3] {
      let (analytic, numeric) = fixture.directionalCheck(filter, seed: seed)
      let error = abs(analytic - numeric)
      #expect(
        error <= 0.02 * max(abs(analytic), abs(numeric)) + 2e-4,
        "\(name), direction \(seed): backward \(analytic), finite difference \(numeric)")
      if seed == 0 {
        // Along the gradient the check means something only if the gradient is not ~0.
        #expect(numeric > 1e-3, "\(name): gradient too small to check (\(numeric))")
      }
    }
  }

  /// With dropout on (the masks fixed by the seed), the gradient goes through every mask.
  @Test(arguments: [0, 2, 3, 6, 7, 10])
  func backwardMatchesFiniteDifferencesWithDropout(group: Int) {
    let (name, filter) = Self.groups[group]
    let fixture = GradientFixture(dropout: 0.3, seed: 11)
    for seed: UInt64 in [0, 4, 5] {
      let (analytic, numeric) = fixture.directionalCheck(filter, seed: seed)
      #expect(
        abs(analytic - numeric) <= 0.02 * max(abs(analytic), abs(numeric)) + 2e-4,
        "\(name) with dropout, direction \(seed): backward \(analytic), finite difference \(numeric)"
      )
    }
  }

  /// Single heads, one block, longer sequences: the other shapes the attention code takes.
  @Test func backwardMatchesWithOneHeadAndOneBlock() {
    let fixture = GradientFixture(
      dim: 6, heads: 1, blocks: 1, maxlen: 9, items: 7, lengths: [9, 4])
    for (index, group) in Self.groups.enumerated() where index != 9 {
      let (analytic, numeric) = fixture.directionalCheck(group.1, seed: UInt64(index + 20))
      #expect(
        abs(analytic - numeric) <= 0.02 * max(abs(analytic), abs(numeric)) + 2e-4,
        "\(group.0): backward \(analytic), finite difference \(numeric)")
    }
  }

  /// The causal mask: changing item j changes the outputs at positions ≥ j only, and no
  /// sequence of a packed chunk sees another.
  @Test func attentionIsCausalAndSequencesAreIsolated() {
    let fixture = GradientFixture(lengths: [6, 5])
    let before = fixture.outputs(fixture.params)
    var changed = fixture
    let j = 3
    var sequences = fixture.sequences
    sequences[0][j] = sequences[0][j] == 1 ? 2 : 1
    changed = GradientFixture(copying: fixture, sequences: sequences)
    let after = changed.outputs(fixture.params)
    for r in 0..<before.count {
      let same = zip(before[r], after[r]).allSatisfy { abs($0 - $1) < 1e-6 }
      if r < j || r >= 6 {
        #expect(same, "row \(r) changed when item \(j) of sequence 0 did")
      } else {
        #expect(!same, "row \(r) did not change when item \(j) of sequence 0 did")
      }
    }
  }

  /// A sequence's output does not depend on the other sequences packed with it.
  @Test func packedChunkEqualsSequencesAlone() {
    let fixture = GradientFixture(lengths: [6, 2, 4])
    let packed = fixture.outputs(fixture.params)
    var row = 0
    for s in 0..<fixture.sequences.count {
      let alone = GradientFixture(
        copying: fixture, sequences: [fixture.sequences[s]]
      ).outputs(fixture.params)
      for j in 0..<alone.count {
        for k in 0..<fixture.layout.dim {
          #expect(abs(alone[j][k] - packed[row + j][k]) < 1e-5)
        }
      }
      row += alone.count
    }
  }
}

extension GradientFixture {
  /// The same weights and targets with other input sequences (targets truncated or repeated
  /// to fit).
  init(copying other: GradientFixture, sequences: [[Int32]]) {
    layout = other.layout
    self.sequences = sequences
    positives = sequences.map { $0 }
    negatives = sequences.map { s in s.map { $0 % Int32(other.layout.itemRows - 1) + 1 } }
    params = other.params
    dropout = other.dropout
  }
}
