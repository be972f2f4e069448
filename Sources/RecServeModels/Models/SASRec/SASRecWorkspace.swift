/// Memory for one forward and backward pass over a packed chunk of sequences: the activations
/// the backward pass needs, its temporaries, and the chunk's inputs. Buffers grow to the largest
/// chunk seen and are then reused, so steady-state training and serving allocate nothing. One
/// workspace per thread; it is not thread-safe.
final class SASRecWorkspace {
  // Capacities the buffers were allocated for.
  private(set) var rowCapacity = 0
  private(set) var dimCapacity = 0
  private(set) var blockCapacity = 0
  private(set) var attentionCapacity = 0
  private(set) var sequenceCapacity = 0
  private(set) var maxlenCapacity = 0

  // Inputs of the chunk: sequences back to back, no padding.
  /// [S + 1] first row of each sequence.
  var sequenceStart = UnsafeMutablePointer<Int>.allocate(capacity: 1)
  /// [S + 1] first attention-probability entry of each sequence (heads × L × L each).
  var attentionStart = UnsafeMutablePointer<Int>.allocate(capacity: 1)
  /// [N] embedding rows (item index + 1) of the inputs.
  var items = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
  /// [N] window slot of each input (maxlen − L + position).
  var slots = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
  /// [N] embedding rows of the training targets and their sampled negatives.
  var positives = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
  var negatives = UnsafeMutablePointer<Int32>.allocate(capacity: 1)

  // Activations, [N, d] unless noted. x[b] is block b's input; x[blocks] the last block's output.
  var x: [UnsafeMutablePointer<Float>] = []
  var normalizedA: [UnsafeMutablePointer<Float>] = []  // x̂ of the attention layer norm
  var rstdA: [UnsafeMutablePointer<Float>] = []  // [N]
  var query: [UnsafeMutablePointer<Float>] = []  // LayerNorm output (query and residual)
  var projectedQuery: [UnsafeMutablePointer<Float>] = []
  var keysValues: [UnsafeMutablePointer<Float>] = []  // [N, 2d]: keys, then values
  var probabilities: [UnsafeMutablePointer<Float>] = []  // softmax, [attention]
  var droppedProbabilities: [UnsafeMutablePointer<Float>] = []  // after dropout, [attention]
  var attended: [UnsafeMutablePointer<Float>] = []  // before the output projection
  var normalizedF: [UnsafeMutablePointer<Float>] = []
  var rstdF: [UnsafeMutablePointer<Float>] = []  // [N]
  var ffnInput: [UnsafeMutablePointer<Float>] = []  // LayerNorm output (FFN input and residual)
  var hidden: [UnsafeMutablePointer<Float>] = []  // relu(dropout(conv1))
  var ffnMask: [UnsafeMutablePointer<Float>] = []  // dropout mask of conv2's output
  var embeddingMask = UnsafeMutablePointer<Float>.allocate(capacity: 1)
  var normalizedLast = UnsafeMutablePointer<Float>.allocate(capacity: 1)
  var rstdLast = UnsafeMutablePointer<Float>.allocate(capacity: 1)
  /// The output: final LayerNorm of the last block.
  var output = UnsafeMutablePointer<Float>.allocate(capacity: 1)

  // Backward temporaries.
  var grad0 = UnsafeMutablePointer<Float>.allocate(capacity: 1)
  var grad1 = UnsafeMutablePointer<Float>.allocate(capacity: 1)
  var grad2 = UnsafeMutablePointer<Float>.allocate(capacity: 1)
  var grad3 = UnsafeMutablePointer<Float>.allocate(capacity: 1)
  var gradQuery = UnsafeMutablePointer<Float>.allocate(capacity: 1)
  var gradKeysValues = UnsafeMutablePointer<Float>.allocate(capacity: 1)  // [N, 2d]
  var gradScores = UnsafeMutablePointer<Float>.allocate(capacity: 1)  // [maxlen × maxlen]

  private var owned: [UnsafeMutableRawPointer] = []

  init() {}

  deinit { freeAll() }

  private func freeAll() {
    for p in owned { p.deallocate() }
    owned.removeAll()
    for p in [sequenceStart, attentionStart] as [UnsafeMutablePointer<Int>] { p.deallocate() }
    for p in [items, slots, positives, negatives] { p.deallocate() }
    for p in [
      embeddingMask, normalizedLast, rstdLast, output, grad0, grad1, grad2, grad3, gradQuery,
      gradKeysValues, gradScores,
    ] { p.deallocate() }
  }

  /// Makes room for a chunk of `rows` inputs in `sequences` sequences of at most `maxlen`
  /// items, with `attention` probability entries, for a network of `dim` and `blocks`.
  func reserve(
    rows: Int, sequences: Int, attention: Int, dim: Int, blocks: Int, maxlen: Int
  ) {
    if rows <= rowCapacity && sequences <= sequenceCapacity && attention <= attentionCapacity
      && dim <= dimCapacity && blocks <= blockCapacity && maxlen <= maxlenCapacity
    {
      return
    }
    // Grow everything together, with headroom, so a slightly larger chunk does not reallocate.
    let r = max(rows, rowCapacity + rowCapacity / 2, 16)
    let s = max(sequences, sequenceCapacity + sequenceCapacity / 2, 4)
    let a = max(attention, attentionCapacity + attentionCapacity / 2, 64)
    let d = max(dim, dimCapacity)
    let b = max(blocks, blockCapacity)
    let m = max(maxlen, maxlenCapacity)
    freeAll()
    rowCapacity = r
    sequenceCapacity = s
    attentionCapacity = a
    dimCapacity = d
    blockCapacity = b
    maxlenCapacity = m

    func floats(_ n: Int) -> UnsafeMutablePointer<Float> {
      let p = UnsafeMutableRawPointer.allocate(byteCount: max(n, 16) * 4, alignment: 64)
      owned.append(p)
      return p.bindMemory(to: Float.self, capacity: max(n, 16))
    }
    sequenceStart = .allocate(capacity: s + 1)
    attentionStart = .allocate(capacity: s + 1)
    items = .allocate(capacity: r)
    slots = .allocate(capacity: r)
    positives = .allocate(capacity: r)
    negatives = .allocate(capacity: r)
    let nd = r * d
    x = (0...b).map { _ in floats(nd) }
    normalizedA = (0..<b).map { _ in floats(nd) }
    rstdA = (0..<b).map { _ in floats(r) }
    query = (0..<b).map { _ in floats(nd) }
    projectedQuery = (0..<b).map { _ in floats(nd) }
    keysValues = (0..<b).map { _ in floats(2 * nd) }
    probabilities = (0..<b).map { _ in floats(a) }
    droppedProbabilities = (0..<b).map { _ in floats(a) }
    attended = (0..<b).map { _ in floats(nd) }
    normalizedF = (0..<b).map { _ in floats(nd) }
    rstdF = (0..<b).map { _ in floats(r) }
    ffnInput = (0..<b).map { _ in floats(nd) }
    hidden = (0..<b).map { _ in floats(nd) }
    ffnMask = (0..<b).map { _ in floats(nd) }
    // These are freed one by one in freeAll.
    func single(_ n: Int) -> UnsafeMutablePointer<Float> {
      UnsafeMutablePointer<Float>.allocate(capacity: max(n, 16))
    }
    embeddingMask = single(nd)
    normalizedLast = single(nd)
    rstdLast = single(r)
    output = single(nd)
    grad0 = single(nd)
    grad1 = single(nd)
    grad2 = single(nd)
    grad3 = single(nd)
    gradQuery = single(nd)
    gradKeysValues = single(2 * nd)
    gradScores = single(m * m)
  }
}
