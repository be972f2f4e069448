import CBLAS
import CKernels
import Dispatch
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The shape of a SASRec network, as model.json and the tensors give it.
public struct SASRecArchitecture: Sendable, Equatable {
  public var dim: Int
  public var maxlen: Int
  public var blocks: Int
  public var heads: Int
  public var layerNormEpsilon: Float

  public init(dim: Int, maxlen: Int, blocks: Int, heads: Int, layerNormEpsilon: Float = 1e-8) {
    self.dim = dim
    self.maxlen = maxlen
    self.blocks = blocks
    self.heads = heads
    self.layerNormEpsilon = layerNormEpsilon
  }
}

/// A trained SASRec: a query is a sequence of items (a user's training sequence, optionally
/// followed by the items of the current session), encoded by the self-attention network into
/// the hidden state at its last position; an item's score is that state's dot product with the
/// item's embedding. A known user's state over its training sequence is computed once (at
/// training, or when the version loads), so ranking for a user costs what it costs for MF.
/// Immutable after construction and safe to share between threads.
public final class SASRecModel: RecommendationModel, @unchecked Sendable {
  public let kind = "sasrec"
  public let dim: Int
  public let userCount: Int
  public let itemCount: Int
  public let userIds: [String]
  public let itemIds: [String]
  private let userLookup: [String: Int32]
  private let itemLookup: [String: Int32]
  public let architecture: SASRecArchitecture
  public let layout: SASRecLayout
  /// All network parameters in `layout` order.
  public let parameters: UnsafePointer<Float>
  /// [itemCount, dim]: the item embeddings without the padding row.
  public let itemFactors: UnsafePointer<Float>
  /// [userCount, dim]: each user's state after its whole training sequence.
  public let userStates: UnsafePointer<Float>
  /// Mean of `userStates`: the query for a user the model never saw in `predict`.
  private let meanState: [Float]
  /// Each user's training sequence (item indices, oldest first).
  public let sequenceIndptr: UnsafePointer<Int64>
  public let sequenceItems: UnsafePointer<Int32>
  public let sequenceCount: Int
  /// The users' distinct items (sorted), for exclude_seen.
  public let seenIndptr: UnsafePointer<Int64>
  public let seenIndices: UnsafePointer<Int32>
  public let seenCount: Int
  public let itemPopularity: UnsafeBufferPointer<Int32>
  private let memory: [AnyObject]

  public var isSequential: Bool { true }

  struct Tensors {
    var parameters: UnsafePointer<Float>
    var userStates: UnsafePointer<Float>?
    var sequenceIndptr: UnsafePointer<Int64>
    var sequenceItems: UnsafePointer<Int32>
    var sequenceCount: Int
    var seenIndptr: UnsafePointer<Int64>
    var seenIndices: UnsafePointer<Int32>
    var seenCount: Int
    var itemPopularity: UnsafePointer<Int32>
  }

  /// Points into memory owned by `memory` (no copy); lengths must already be checked. Without
  /// `userStates`, they are computed here (one forward pass per user, on `threads` threads).
  init(
    userIds: [String], itemIds: [String], userLookup: [String: Int32]? = nil,
    itemLookup: [String: Int32]? = nil, architecture: SASRecArchitecture, tensors t: Tensors,
    memory: [AnyObject], threads: Int = 1
  ) {
    let d = architecture.dim
    self.dim = d
    self.userCount = userIds.count
    self.itemCount = itemIds.count
    self.userIds = userIds
    self.itemIds = itemIds
    self.userLookup = userLookup ?? MFModel.lookup(userIds)
    self.itemLookup = itemLookup ?? MFModel.lookup(itemIds)
    self.architecture = architecture
    let layout = SASRecLayout(
      dim: d, heads: architecture.heads, blocks: architecture.blocks,
      maxlen: architecture.maxlen, items: itemIds.count)
    self.layout = layout
    parameters = t.parameters
    itemFactors = t.parameters + layout.itemEmbedding + d
    sequenceIndptr = t.sequenceIndptr
    sequenceItems = t.sequenceItems
    sequenceCount = t.sequenceCount
    seenIndptr = t.seenIndptr
    seenIndices = t.seenIndices
    seenCount = t.seenCount
    itemPopularity = UnsafeBufferPointer(start: t.itemPopularity, count: itemIds.count)
    var owners = memory
    let states: UnsafePointer<Float>
    if let given = t.userStates {
      states = given
    } else {
      let mem = TensorMemory(byteCount: max(1, userIds.count * d) * 4)
      owners.append(mem)
      let out = mem.base.bindMemory(to: Float.self, capacity: max(1, userIds.count * d))
      SASRecEncoder.encodeSequences(
        parameters: t.parameters, layout: layout, epsilon: architecture.layerNormEpsilon,
        indptr: t.sequenceIndptr, items: t.sequenceItems, users: 0..<userIds.count, into: out,
        threads: threads)
      states = UnsafePointer(out)
    }
    userStates = states
    var mean = [Float](repeating: 0, count: d)
    if userIds.count > 0 {
      for u in 0..<userIds.count {
        for k in 0..<d { mean[k] += states[u * d + k] }
      }
      for k in 0..<d { mean[k] /= Float(userIds.count) }
    }
    meanState = mean
    self.memory = owners
  }

  /// A freshly trained model: `parameters` in `layout` order (taken over), the users'
  /// sequences and distinct items (copied into one block); the users' states are computed
  /// here on `threads` threads.
  convenience init(
    userIds: [String], itemIds: [String], userLookup: [String: Int32]?,
    itemLookup: [String: Int32]?, architecture: SASRecArchitecture, parameters: TensorMemory,
    sequences: UserSequences, seen: SeenItems, threads: Int
  ) {
    var block = BlockLayout()
    let sip = block.add(bytes: sequences.indptr.count * 8)
    let six = block.add(bytes: sequences.items.count * 4)
    let hip = block.add(bytes: seen.indptr.count * 8)
    let hix = block.add(bytes: seen.indices.count * 4)
    let pop = block.add(bytes: seen.popularity.count * 4)
    let mem = TensorMemory(byteCount: block.size)
    func copy<T>(_ a: [T], _ offset: Int) -> UnsafePointer<T> {
      let p = (mem.base + offset).bindMemory(to: T.self, capacity: max(a.count, 1))
      a.withUnsafeBufferPointer { src in
        if src.count > 0 { p.update(from: src.baseAddress!, count: src.count) }
      }
      return UnsafePointer(p)
    }
    let tensors = Tensors(
      parameters: UnsafePointer(parameters.base.assumingMemoryBound(to: Float.self)),
      userStates: nil, sequenceIndptr: copy(sequences.indptr, sip),
      sequenceItems: copy(sequences.items, six), sequenceCount: sequences.items.count,
      seenIndptr: copy(seen.indptr, hip), seenIndices: copy(seen.indices, hix),
      seenCount: seen.indices.count, itemPopularity: copy(seen.popularity, pop))
    self.init(
      userIds: userIds, itemIds: itemIds, userLookup: userLookup, itemLookup: itemLookup,
      architecture: architecture, tensors: tensors, memory: [parameters, mem], threads: threads)
  }

  /// A model from parameters given as an array in `SASRecLayout` order (tests, models built
  /// in memory) and each user's sequence of item indices, oldest first.
  public convenience init(
    userIds: [String], itemIds: [String], architecture: SASRecArchitecture,
    parameters: [Float], sequences: [[Int32]]
  ) throws {
    let layout = SASRecLayout(
      dim: architecture.dim, heads: architecture.heads, blocks: architecture.blocks,
      maxlen: architecture.maxlen, items: itemIds.count)
    guard parameters.count == layout.count else {
      throw ModelLoadError(
        "parameters: \(parameters.count) values, expected \(layout.count) for this architecture")
    }
    guard sequences.count == userIds.count else {
      throw ModelLoadError("sequences: \(sequences.count) users, expected \(userIds.count)")
    }
    var indptr: [Int64] = [0]
    var items: [Int32] = []
    var users: [Int32] = []
    for (u, sequence) in sequences.enumerated() {
      for i in sequence {
        guard i >= 0 && Int(i) < itemIds.count else {
          throw ModelLoadError("sequences: item index \(i) out of range")
        }
        items.append(i)
        users.append(Int32(u))
      }
      indptr.append(Int64(items.count))
    }
    let mem = TensorMemory(byteCount: layout.count * 4)
    parameters.withUnsafeBufferPointer { src in
      mem.base.bindMemory(to: Float.self, capacity: layout.count).update(
        from: src.baseAddress!, count: layout.count)
    }
    self.init(
      userIds: userIds, itemIds: itemIds, userLookup: nil, itemLookup: nil,
      architecture: architecture, parameters: mem,
      sequences: UserSequences(indptr: indptr, items: items),
      seen: SeenItems.build(
        users: users, items: items, userCount: userIds.count, itemCount: itemIds.count),
      threads: 1)
  }

  // MARK: - Lookups

  public func userIndex(_ id: String) -> Int32? { userLookup[id] }
  public func itemIndex(_ id: String) -> Int32? { itemLookup[id] }

  // MARK: - Scoring

  /// state(user) · E[item]; a user the model never saw takes the mean user state, an unknown
  /// item scores 0.
  public func predict(user: Int32?, item: Int32?) -> Float {
    guard let item, item >= 0, Int(item) < itemCount else { return 0 }
    let row = itemFactors + Int(item) * dim
    if let user, user >= 0, Int(user) < userCount {
      return VectorMath.dot(userStates + Int(user) * dim, row, dim)
    }
    return meanState.withUnsafeBufferPointer { VectorMath.dot($0.baseAddress!, row, dim) }
  }

  public func scoreAll(user: Int32, into out: UnsafeMutablePointer<Float>) {
    precondition(user >= 0 && Int(user) < userCount, "user index out of range")
    scoreAll(query: userStates + Int(user) * dim, offset: 0, into: out)
  }

  public func scoreAll(
    query: UnsafePointer<Float>, offset: Float, into out: UnsafeMutablePointer<Float>
  ) {
    if offset == 0 {
      cblas_sgemv(
        CblasRowMajor, CblasNoTrans, Int32(itemCount), Int32(dim), 1, itemFactors, Int32(dim),
        query, 1, 0, out, 1)
    } else {
      for i in 0..<itemCount { out[i] = offset }
      cblas_sgemv(
        CblasRowMajor, CblasNoTrans, Int32(itemCount), Int32(dim), 1, itemFactors, Int32(dim),
        query, 1, 1, out, 1)
    }
  }

  public func scoreItems(
    query: UnsafePointer<Float>, offset: Float, items: UnsafeBufferPointer<Int32>,
    into out: UnsafeMutablePointer<Float>
  ) {
    // The same sums as `scoreBlock` (see MFModel.scoreItems).
    guard let base = items.baseAddress, !items.isEmpty else { return }
    ck_scores_indexed(query, itemFactors, Int32(dim), base, Int32(items.count), out)
    for j in 0..<items.count { out[j] = out[j] + offset + 0 }
  }

  public func scoreBlock(
    queries: UnsafePointer<Float>, count: Int, offsets: UnsafePointer<Float>, items: Range<Int>,
    into out: UnsafeMutablePointer<Float>, stride: Int
  ) {
    let lo = items.lowerBound
    let n = items.count
    if n == 0 || count == 0 { return }
    if count == 1 {
      // One query: the same sums as in a batch (see MFModel.scoreBlock).
      ck_scores_single(queries, itemFactors + lo * dim, Int32(n), Int32(dim), out)
      let o = offsets[0]
      for i in 0..<n { out[i] = out[i] + o + 0 }
      return
    }
    precondition(count <= stride && stride % 8 == 0, "stride \(stride) for \(count)")
    ck_scores_batch(
      queries, Int32(count), offsets, itemFactors + lo * dim, nil, Int32(n), Int32(dim), out,
      Int32(stride))
  }

  /// A known user alone: a copy of its state; otherwise one pass of the network over the last
  /// maxlen items (projections and feed-forward 6·L·d², attention 2·L²·d per block).
  public func queryWork(user: Int32?, recentCount: Int) -> Int {
    var history = 0
    if let user, user >= 0, Int(user) < userCount {
      if recentCount == 0 { return dim }
      history = sequence(user: user).count
    }
    let L = min(history + recentCount, architecture.maxlen)
    return architecture.blocks * (6 * L * dim * dim + 2 * L * L * dim)
  }

  /// A known user alone: its stored state. Otherwise the user's training sequence (when the
  /// user is known) followed by `recentItems`, encoded; its last `maxlen` items count.
  public func query(
    user: Int32?, recentItems: UnsafeBufferPointer<Int32>, into vector: UnsafeMutablePointer<Float>
  ) -> Float? {
    var known: Int32? = nil
    if let user, user >= 0, Int(user) < userCount { known = user }
    if let known, recentItems.isEmpty {
      vector.update(from: userStates + Int(known) * dim, count: dim)
      return 0
    }
    let history = known.map { sequence(user: $0) } ?? UnsafeBufferPointer(start: nil, count: 0)
    if history.count + recentItems.count == 0 { return nil }
    for i in recentItems where i < 0 || Int(i) >= itemCount { return nil }
    encode(history: history, recent: recentItems, into: vector)
    return 0
  }

  /// The state after `history` followed by `recent` (item indices, oldest first; the last
  /// `maxlen` of them count), in dim floats.
  public func encode(
    history: UnsafeBufferPointer<Int32>, recent: UnsafeBufferPointer<Int32>,
    into out: UnsafeMutablePointer<Float>
  ) {
    SASRecEncoder.encode(
      parameters: parameters, layout: layout, epsilon: architecture.layerNormEpsilon,
      history: history, recent: recent, into: out)
  }

  /// User u's training sequence, oldest first.
  public func sequence(user: Int32) -> UnsafeBufferPointer<Int32> {
    guard user >= 0 && Int(user) < userCount else {
      return UnsafeBufferPointer(start: sequenceItems, count: 0)
    }
    let a = Int(sequenceIndptr[Int(user)])
    let b = Int(sequenceIndptr[Int(user) + 1])
    return UnsafeBufferPointer(start: sequenceItems + a, count: b - a)
  }

  public func seenItems(user: Int32) -> UnsafeBufferPointer<Int32> {
    guard user >= 0 && Int(user) < userCount else {
      return UnsafeBufferPointer(start: seenIndices, count: 0)
    }
    let a = Int(seenIndptr[Int(user)])
    let b = Int(seenIndptr[Int(user) + 1])
    return UnsafeBufferPointer(start: seenIndices + a, count: b - a)
  }
}

/// Inference with the network: one sequence (serving) or many users at once (their stored
/// states), without dropout, on a per-thread workspace.
enum SASRecEncoder {
  /// The output at the last position of `history` + `recent` (last `maxlen` items).
  static func encode(
    parameters: UnsafePointer<Float>, layout: SASRecLayout, epsilon: Float,
    history: UnsafeBufferPointer<Int32>, recent: UnsafeBufferPointer<Int32>,
    into out: UnsafeMutablePointer<Float>
  ) {
    let d = layout.dim
    let total = history.count + recent.count
    let L = min(total, layout.maxlen)
    precondition(L > 0, "empty sequence")
    let ws = SASRecWorkspace.current
    ws.reserve(
      rows: L, sequences: 1, attention: layout.heads * L * L, dim: d, blocks: layout.blocks,
      maxlen: layout.maxlen)
    let first = total - L
    for j in 0..<L {
      let k = first + j
      let item = k < history.count ? history[k] : recent[k - history.count]
      ws.items[j] = item + 1
      ws.slots[j] = Int32(layout.maxlen - L + j)
    }
    ws.sequenceStart[0] = 0
    ws.sequenceStart[1] = L
    ws.attentionStart[0] = 0
    ws.attentionStart[1] = layout.heads * L * L
    var rng = Xoshiro256(seed: 0)
    SASRecNetwork.forward(
      params: parameters, layout: layout, epsilon: epsilon, ws: ws, sequences: 1, dropout: 0,
      rng: &rng, lastRowOnly: true)
    out.update(from: ws.output, count: d)
  }

  /// Writes the state of each user in `users` (its whole sequence in `indptr`/`items`) into
  /// out[u·d..<(u+1)·d]; a user with an empty sequence gets zeros. Users are packed into chunks
  /// of about `rowsPerChunk` rows and spread over `threads` threads.
  static func encodeSequences(
    parameters: UnsafePointer<Float>, layout: SASRecLayout, epsilon: Float,
    indptr: UnsafePointer<Int64>, items: UnsafePointer<Int32>, users: Range<Int>,
    into out: UnsafeMutablePointer<Float>, threads: Int, rowsPerChunk: Int = 4096
  ) {
    let d = layout.dim
    // Chunks of consecutive users.
    var chunks: [Range<Int>] = []
    var start = users.lowerBound
    var rows = 0
    for u in users {
      let n = min(Int(indptr[u + 1] - indptr[u]), layout.maxlen)
      if rows > 0 && rows + n > max(rowsPerChunk, layout.maxlen) {
        chunks.append(start..<u)
        start = u
        rows = 0
      }
      rows += n
    }
    if start < users.upperBound { chunks.append(start..<users.upperBound) }
    let work: (Int) -> Void = { c in
      let chunk = chunks[c]
      let ws = SASRecWorkspace.current
      var n = 0
      var attention = 0
      for u in chunk {
        let L = min(Int(indptr[u + 1] - indptr[u]), layout.maxlen)
        n += L
        attention += layout.heads * L * L
      }
      ws.reserve(
        rows: n, sequences: chunk.count, attention: attention, dim: d, blocks: layout.blocks,
        maxlen: layout.maxlen)
      var s = 0
      var row = 0
      var att = 0
      var members: [Int] = []
      for u in chunk {
        let a = Int(indptr[u])
        let total = Int(indptr[u + 1]) - a
        let L = min(total, layout.maxlen)
        if L == 0 {
          (out + u * d).update(repeating: 0, count: d)
          continue
        }
        ws.sequenceStart[s] = row
        ws.attentionStart[s] = att
        for j in 0..<L {
          ws.items[row + j] = items[a + total - L + j] + 1
          ws.slots[row + j] = Int32(layout.maxlen - L + j)
        }
        row += L
        att += layout.heads * L * L
        members.append(u)
        s += 1
      }
      ws.sequenceStart[s] = row
      ws.attentionStart[s] = att
      if s == 0 { return }
      var rng = Xoshiro256(seed: 0)
      SASRecNetwork.forward(
        params: parameters, layout: layout, epsilon: epsilon, ws: ws, sequences: s, dropout: 0,
        rng: &rng)
      for (k, u) in members.enumerated() {
        (out + u * d).update(from: ws.output + (ws.sequenceStart[k + 1] - 1) * d, count: d)
      }
    }
    // Each chunk writes the states of its own users only.
    let counter = ChunkCounter()
    Parallel.run(max(1, min(threads, chunks.count))) { _ in
      while let c = counter.next(below: chunks.count) { work(c) }
    }
  }
}

/// Hands out chunk numbers to worker threads.
final class ChunkCounter: Sendable {
  private let value = Mutex(0)

  func next(below limit: Int) -> Int? {
    value.withLock { value in
      guard value < limit else { return nil }
      value += 1
      return value - 1
    }
  }
}

extension SASRecWorkspace {
  private static let key: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { pointer in
      if let pointer { Unmanaged<SASRecWorkspace>.fromOpaque(pointer).release() }
    }
    return key
  }()

  /// This thread's workspace (made on first use, freed when the thread ends).
  static var current: SASRecWorkspace {
    if let pointer = pthread_getspecific(key) {
      return Unmanaged<SASRecWorkspace>.fromOpaque(pointer).takeUnretainedValue()
    }
    let ws = SASRecWorkspace()
    pthread_setspecific(key, Unmanaged.passRetained(ws).toOpaque())
    return ws
  }
}
