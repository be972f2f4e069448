/// What a training run will allocate, estimated from its configuration and the size of its data
/// before it allocates any of it, so that a server can refuse a run that would not fit instead of
/// being killed by the kernel in the middle of it.
///
/// The estimate follows the trainers' own allocations (parameters, optimizer state, per-thread
/// gradients and scratch, activations, the data and its training copies, the copy written when
/// the version is published, and the new version once loaded to serve). It adds the parts up
/// although some are never alive at once, so it is meant to be above the peak rather than below
/// it, by tens of percent (measured: 15 to 40% above a server's peak resident memory).
public struct TrainingMemoryEstimate: Sendable, Equatable, CustomStringConvertible {
  public struct Part: Sendable, Equatable {
    public var name: String
    public var bytes: Int
  }

  /// The parts, largest concerns first; parts of 0 bytes are left out.
  public private(set) var parts: [Part] = []

  public var bytes: Int { parts.reduce(0) { $0 + $1.bytes } }

  public mutating func add(_ name: String, _ bytes: Int) {
    if bytes > 0 { parts.append(Part(name: name, bytes: bytes)) }
  }

  /// Bytes in MiB, rounded up (a part that is not 0 is at least 1 MiB).
  public static func mebibytes(_ bytes: Int) -> Int { (bytes + (1 << 20) - 1) >> 20 }

  /// "parameters 48 MiB, Adam moments 96 MiB, ...".
  public var description: String {
    parts.map { "\($0.name) \(Self.mebibytes($0.bytes)) MiB" }.joined(separator: ", ")
  }
}

/// The size of a training data set: what the estimate needs to know about it.
public struct TrainingDataShape: Sendable, Equatable {
  public var rows: Int
  public var users: Int
  public var items: Int
  /// UTF-8 bytes of all distinct user and item ids together.
  public var idBytes: Int
  /// The most interactions any one user has (what bounds a SASRec's sequence length).
  public var longestHistory: Int

  public init(rows: Int, users: Int, items: Int, idBytes: Int, longestHistory: Int) {
    self.rows = rows
    self.users = users
    self.items = items
    self.idBytes = idBytes
    self.longestHistory = longestHistory
  }

  /// The shape of loaded interactions.
  public init(_ data: Interactions) {
    var perUser = [Int32](repeating: 0, count: data.userCount)
    var longest: Int32 = 0
    for u in data.users {
      perUser[Int(u)] += 1
      longest = max(longest, perUser[Int(u)])
    }
    var idBytes = 0
    for id in data.userIds { idBytes += id.utf8.count }
    for id in data.itemIds { idBytes += id.utf8.count }
    self.init(
      rows: data.count, users: data.userCount, items: data.itemCount, idBytes: idBytes,
      longestHistory: Int(longest))
  }
}

public enum TrainingMemory {
  /// Bytes a row of interactions takes while it trains: its columns (user, item, rating,
  /// timestamp: 20 bytes), the split halves copied from them (20), and the trainer's own copy of
  /// it (a record or CSR entry with its strength and the history kept for `exclude_seen`: about
  /// 24).
  public static let bytesPerRow = 64
  /// Bytes an id takes besides its UTF-8 text: its slot in the id list and the lookup table.
  public static let bytesPerId = 80

  /// The data itself: rows, and the id maps.
  public static func data(_ shape: TrainingDataShape) -> Int {
    shape.rows * bytesPerRow + (shape.users + shape.items) * bytesPerId + shape.idBytes
  }

  /// What loading a data file of `rows` lines takes at most (its ids are not known yet: each line
  /// counted as bringing one new id).
  public static func loading(rows: Int) -> Int { rows * (bytesPerRow + bytesPerId) }

  /// An MF run: factors and biases, Adam's moments and per-row step powers, the best epoch's copy
  /// with early stopping, the data, and the copy written at publishing.
  public static func estimate(mf config: MFConfig, data shape: TrainingDataShape)
    -> TrainingMemoryEstimate
  {
    let rows = shape.users + shape.items
    let parameters = rows * (config.dim + 1) * 4
    var estimate = TrainingMemoryEstimate()
    estimate.add("parameters", parameters)
    if config.optimizer == .adam { estimate.add("Adam moments", 2 * parameters + 2 * rows * 4) }
    if config.earlyStoppingPatience != nil { estimate.add("best-epoch copy", parameters) }
    estimate.add("data", data(shape))
    estimate.add("publishing", parameters)
    estimate.add("new version loaded", parameters)
    return estimate
  }

  /// A BPR, ALS or SASRec run.
  public static func estimate(_ config: ImplicitModelConfig, data shape: TrainingDataShape)
    -> TrainingMemoryEstimate
  {
    var estimate = TrainingMemoryEstimate()
    let U = shape.users
    let I = shape.items
    let threads = max(1, config.threads)
    // Ranking evaluation after training: per thread a score, rank and two marker arrays over
    // the items, and the item norms.
    let evaluation = threads * I * 16 + I * 8
    switch config {
    case .bpr(let c):
      let D = c.dim + (c.itemBias ? 1 : 0)
      let parameters = (U + I) * D * 4
      estimate.add("parameters", parameters)
      estimate.add("per-thread buffers", threads * c.negativeCandidates * 12 + evaluation)
      estimate.add("data", data(shape))
      // Recency weights: each user's rows in time order while they are computed (4 bytes a
      // row), then the alias table the positives are drawn from (8 bytes a pair).
      if c.recencyBoost > 0 { estimate.add("recency weights", shape.rows * 4 + shape.rows * 8) }
      // The model keeps zero biases beside the factors; publishing writes them all once more.
      estimate.add("publishing", parameters + (U + I) * 4)
      estimate.add("new version loaded", parameters + (U + I) * 4)
    case .als(let c):
      let D = c.dim
      let parameters = (U + I) * D * 4
      estimate.add("parameters", parameters)
      // Gram matrices, and the popularity-scaled copy of the fixed side (eALS) and of the items
      // for the loss.
      let scaled = c.popularityExponent != 0 ? 2 * I * D * 4 : 0
      estimate.add("solver state", 2 * D * D * 4 + scaled)
      // Per thread: CG vectors and the longest row's gathered entries (a user's history, or
      // an item's users: at most every user).
      let longestRow = max(shape.longestHistory, U, 1)
      estimate.add("per-thread buffers", threads * (3 * D + 2 * longestRow) * 4 + evaluation)
      // The item -> users transpose of the interaction matrix.
      estimate.add("data", data(shape) + shape.rows * 8 + (I + 1) * 8)
      // Recency weights: each user's rows in time order while they are computed.
      if c.recencyBoost > 0 { estimate.add("recency weights", shape.rows * 4) }
      estimate.add("publishing", parameters + (U + I) * 4)
      estimate.add("new version loaded", parameters + (U + I) * 4)
    case .hybrid(let c, let inputs):
      // Items: those with interactions and, at most, every row of the feature file.
      let items = I + inputs.items.rowCount
      let features = inputs.items.featureCount + (inputs.users?.featureCount ?? 0)
      let embeddings = (U + items + features) * c.dim * 4
      estimate.add("embeddings and Adagrad sums", 2 * embeddings + 2 * (items + features) * 4)
      estimate.add(
        "feature rows",
        (inputs.items.weight.count + (inputs.users?.weight.count ?? 0)) * 3 * 8 + items * 16)
      estimate.add("per-thread buffers", threads * 6 * c.dim * 4 + evaluation)
      estimate.add("data", data(shape))
      estimate.add("publishing", (U + items) * c.dim * 4 * 2 + features * c.dim * 4)
      estimate.add("new version loaded", (U + items) * c.dim * 4)
    case .sasrec(let c):
      let layout = SASRecLayout(
        dim: c.dim, heads: c.heads, blocks: c.blocks, maxlen: c.maxlen, items: I)
      let parameters = layout.count * 4
      let trainThreads = max(1, min(c.threads, c.batchSize))
      estimate.add("parameters", parameters)
      estimate.add("Adam moments", 2 * parameters)
      estimate.add("per-thread gradients", trainThreads * parameters)
      estimate.add(
        "activations",
        trainThreads * sasrecActivations(config: c, longestHistory: shape.longestHistory))
      // Computing the users' states (after training, for evaluation, and when the new version
      // loads) runs the network forward over chunks of up to 4096 positions per thread.
      estimate.add(
        "inference buffers",
        threads * sasrecInference(config: c, longestHistory: shape.longestHistory) + evaluation)
      estimate.add("data", data(shape))
      // The model's user states, and publishing's copy of every tensor.
      estimate.add("user states", U * c.dim * 4)
      estimate.add("publishing", parameters + U * c.dim * 4)
      estimate.add("new version loaded", parameters + U * c.dim * 4)
    }
    return estimate
  }

  /// One thread's forward-only SASRec workspace for users' states (`SASRecEncoder
  /// .encodeSequences`): chunks of up to 4096 positions (or a whole window), the buffers a
  /// forward pass writes (per block the input, two layer-norm outputs and their x-hat, the
  /// projected query, keys and values, the attended values and the FFN hidden layer; the
  /// output) and the attention probabilities.
  static func sasrecInference(config c: SASRecConfig, longestHistory: Int) -> Int {
    let window = max(1, min(c.maxlen, longestHistory))
    let rows = max(4096, window)
    let d = c.dim
    let perRow = c.blocks * (10 * d + 2) + 3 * d
    let attention = c.blocks * c.heads * rows * window
    return (rows * perRow + attention) * 4
  }

  /// One thread's SASRec workspace (`SASRecWorkspace.reserve`) for the largest chunk: up to
  /// `SASRecTrainer.rowsPerChunk` positions (or one whole window, when longer), whose attention
  /// probabilities take heads x L x L each, grown by half again for headroom.
  static func sasrecActivations(config c: SASRecConfig, longestHistory: Int) -> Int {
    let window = max(1, min(c.maxlen, max(longestHistory - 1, 1)))
    let rows = max(SASRecTrainer.rowsPerChunk, window)
    let d = c.dim
    // Per block: the block input, two layer-norm outputs and their x-hat, the projected query,
    // keys and values (2d), the attended values, the FFN hidden layer and its dropout mask, and
    // two rstd columns. Once: the last block's output, embedding mask, last norm, output, four
    // gradients, the query gradient and the key/value gradient (2d).
    let perRow = c.blocks * (11 * d + 2) + 11 * d + 1
    let attention = c.blocks * 2 * c.heads * rows * window
    let floats = (rows * perRow + attention) * 3 / 2 + c.maxlen * c.maxlen
    return floats * 4
  }
}
