import CBLAS
import CKernels

/// A trained (biased) matrix-factorisation model: score(u, i) = μ + b_u + b_i + p_u·q_i.
/// Immutable after construction; every method is safe to call from many threads at once and
/// allocates nothing.
public final class MFModel: RecommendationModel, @unchecked Sendable {
  public let kind: String
  public let dim: Int
  public let userCount: Int
  public let itemCount: Int
  public let userIds: [String]
  public let itemIds: [String]
  let userLookup: [String: Int32]
  let itemLookup: [String: Int32]
  public let globalMean: Float
  /// Predictions of `predict` are clipped to this range when set (the training ratings' range).
  public let ratingRange: ClosedRange<Float>?

  /// Row-major [userCount, dim].
  public let userFactors: UnsafePointer<Float>
  /// Row-major [itemCount, dim].
  public let itemFactors: UnsafePointer<Float>
  /// [userCount]
  public let userBias: UnsafePointer<Float>
  /// [itemCount]
  public let itemBias: UnsafePointer<Float>
  /// CSR of the training history: user u's items are seenIndices[seenIndptr[u]..<seenIndptr[u+1]].
  public let seenIndptr: UnsafePointer<Int64>
  public let seenIndices: UnsafePointer<Int32>
  public let seenCount: Int
  public let itemPopularity: UnsafeBufferPointer<Int32>
  private let memory: [AnyObject]

  struct Tensors {
    var userFactors: UnsafePointer<Float>
    var itemFactors: UnsafePointer<Float>
    var userBias: UnsafePointer<Float>
    var itemBias: UnsafePointer<Float>
    var seenIndptr: UnsafePointer<Int64>
    var seenIndices: UnsafePointer<Int32>
    var seenCount: Int
    var itemPopularity: UnsafePointer<Int32>
  }

  /// Points into memory owned by `memory` (no copy). Lengths must already be checked.
  init(
    kind: String, dim: Int, userIds: [String], itemIds: [String],
    userLookup: [String: Int32]? = nil, itemLookup: [String: Int32]? = nil, globalMean: Float,
    ratingRange: ClosedRange<Float>?, tensors t: Tensors, memory: [AnyObject]
  ) {
    self.kind = kind
    self.dim = dim
    self.userCount = userIds.count
    self.itemCount = itemIds.count
    self.userIds = userIds
    self.itemIds = itemIds
    self.userLookup = userLookup ?? MFModel.lookup(userIds)
    self.itemLookup = itemLookup ?? MFModel.lookup(itemIds)
    self.globalMean = globalMean
    self.ratingRange = ratingRange
    userFactors = t.userFactors
    itemFactors = t.itemFactors
    userBias = t.userBias
    itemBias = t.itemBias
    seenIndptr = t.seenIndptr
    seenIndices = t.seenIndices
    seenCount = t.seenCount
    itemPopularity = UnsafeBufferPointer(start: t.itemPopularity, count: itemIds.count)
    self.memory = memory
  }

  static func lookup(_ ids: [String]) -> [String: Int32] {
    var d = [String: Int32](minimumCapacity: ids.count)
    for (i, id) in ids.enumerated() { d[id] = Int32(i) }
    return d
  }

  /// Builds a model by copying arrays (e.g. weights trained elsewhere, or tests). `seen[u]` is
  /// user u's training items (any order, duplicates allowed); popularity is derived from it.
  public convenience init(
    kind: String = "mf", userIds: [String], itemIds: [String], dim: Int, globalMean: Float,
    userFactors: [Float], itemFactors: [Float], userBias: [Float], itemBias: [Float],
    seen: [[Int32]]? = nil, ratingRange: ClosedRange<Float>? = nil
  ) throws {
    let U = userIds.count
    let I = itemIds.count
    func check(_ ok: Bool, _ what: String) throws {
      if !ok { throw ModelLoadError(what) }
    }
    try check(dim >= 1, "dim must be positive")
    try check(
      userFactors.count == U * dim,
      "user_factors: \(userFactors.count) values, expected \(U)x\(dim)")
    try check(
      itemFactors.count == I * dim,
      "item_factors: \(itemFactors.count) values, expected \(I)x\(dim)")
    try check(userBias.count == U, "user_bias: \(userBias.count) values, expected \(U)")
    try check(itemBias.count == I, "item_bias: \(itemBias.count) values, expected \(I)")
    try check(Set(userIds).count == U, "user ids are not unique")
    try check(Set(itemIds).count == I, "item ids are not unique")
    var users = [Int32]()
    var items = [Int32]()
    if let seen {
      try check(seen.count == U, "seen: \(seen.count) users, expected \(U)")
      for (u, list) in seen.enumerated() {
        for i in list {
          try check(i >= 0 && Int(i) < I, "seen: item index \(i) out of range")
          users.append(Int32(u))
          items.append(i)
        }
      }
    }
    let csr = SeenItems.build(users: users, items: items, userCount: U, itemCount: I)
    self.init(
      kind: kind, dim: dim, userIds: userIds, itemIds: itemIds, globalMean: globalMean,
      ratingRange: ratingRange, userFactors: userFactors, itemFactors: itemFactors,
      userBias: userBias, itemBias: itemBias, csr: csr)
  }

  /// Copies everything into one aligned block.
  convenience init(
    kind: String, dim: Int, userIds: [String], itemIds: [String],
    userLookup: [String: Int32]? = nil, itemLookup: [String: Int32]? = nil, globalMean: Float,
    ratingRange: ClosedRange<Float>?, userFactors: [Float], itemFactors: [Float],
    userBias: [Float], itemBias: [Float], csr: SeenItems
  ) {
    var layout = BlockLayout()
    let ufo = layout.add(bytes: userFactors.count * 4)
    let ifo = layout.add(bytes: itemFactors.count * 4)
    let ubo = layout.add(bytes: userBias.count * 4)
    let ibo = layout.add(bytes: itemBias.count * 4)
    let ipo = layout.add(bytes: csr.indptr.count * 8)
    let ixo = layout.add(bytes: csr.indices.count * 4)
    let ppo = layout.add(bytes: csr.popularity.count * 4)
    let mem = TensorMemory(byteCount: layout.size)
    let b = mem.base
    func copy<T>(_ a: [T], _ off: Int) -> UnsafePointer<T> {
      let p = (b + off).bindMemory(to: T.self, capacity: max(a.count, 1))
      a.withUnsafeBufferPointer { src in
        if src.count > 0 { p.update(from: src.baseAddress!, count: src.count) }
      }
      return UnsafePointer(p)
    }
    let t = Tensors(
      userFactors: copy(userFactors, ufo), itemFactors: copy(itemFactors, ifo),
      userBias: copy(userBias, ubo), itemBias: copy(itemBias, ibo),
      seenIndptr: copy(csr.indptr, ipo), seenIndices: copy(csr.indices, ixo),
      seenCount: csr.indices.count, itemPopularity: copy(csr.popularity, ppo))
    self.init(
      kind: kind, dim: dim, userIds: userIds, itemIds: itemIds, userLookup: userLookup,
      itemLookup: itemLookup, globalMean: globalMean, ratingRange: ratingRange, tensors: t,
      memory: [mem])
  }

  // MARK: - Lookups

  public func userIndex(_ id: String) -> Int32? { userLookup[id] }
  public func itemIndex(_ id: String) -> Int32? { itemLookup[id] }

  // MARK: - Scoring

  /// μ + b_u + b_i + p_u·q_i, clipped to the training rating range. An unknown (nil or out of
  /// range) user or item drops its terms: μ + b_i for a new user, μ + b_u for a new item, μ for
  /// both.
  public func predict(user: Int32?, item: Int32?) -> Float {
    var s = globalMean
    var u = -1
    var i = -1
    if let user, user >= 0, Int(user) < userCount {
      u = Int(user)
      s += userBias[u]
    }
    if let item, item >= 0, Int(item) < itemCount {
      i = Int(item)
      s += itemBias[i]
    }
    if u >= 0 && i >= 0 {
      s += VectorMath.dot(userFactors + u * dim, itemFactors + i * dim, dim)
    }
    if let r = ratingRange { s = min(r.upperBound, max(r.lowerBound, s)) }
    return s
  }

  /// All item scores for a known user (unclipped, so ranking has no artificial ties):
  /// out[i] = q_i·p_u + b_i + b_u + μ, with one `cblas_sgemv` over the row-major item factors.
  public func scoreAll(user: Int32, into out: UnsafeMutablePointer<Float>) {
    precondition(user >= 0 && Int(user) < userCount, "user index out of range")
    scoreAll(
      userVector: userFactors + Int(user) * dim, userBias: userBias[Int(user)], into: out)
  }

  /// All item scores for an arbitrary user vector (e.g. one folded in from recent items).
  public func scoreAll(
    userVector: UnsafePointer<Float>, userBias bu: Float, into out: UnsafeMutablePointer<Float>
  ) {
    scoreAll(query: userVector, offset: globalMean + bu, into: out)
  }

  public var isSequential: Bool { false }

  /// A known user's factors (offset μ + b_u), else a user folded in from `recentItems`
  /// (offset μ); recent items are ignored for a known user.
  public func query(
    user: Int32?, recentItems: UnsafeBufferPointer<Int32>, into vector: UnsafeMutablePointer<Float>
  ) -> Float? {
    if let user, user >= 0, Int(user) < userCount {
      vector.update(from: userFactors + Int(user) * dim, count: dim)
      return globalMean + userBias[Int(user)]
    }
    if recentItems.isEmpty { return nil }
    for i in recentItems where i < 0 || Int(i) >= itemCount { return nil }
    FoldIn.userVector(model: self, recentItems: recentItems, into: vector)
    return globalMean
  }

  /// out[i] = offset + b_i + query · q_i, with one `cblas_sgemv` over the row-major item factors.
  public func scoreAll(
    query: UnsafePointer<Float>, offset c: Float, into out: UnsafeMutablePointer<Float>
  ) {
    let n = itemCount
    for i in 0..<n { out[i] = itemBias[i] + c }
    cblas_sgemv(
      CblasRowMajor, CblasNoTrans, Int32(n), Int32(dim), 1, itemFactors, Int32(dim), query, 1, 1,
      out, 1)
  }

  public func scoreItems(
    query: UnsafePointer<Float>, offset: Float, items: UnsafeBufferPointer<Int32>,
    into out: UnsafeMutablePointer<Float>
  ) {
    // The same sums as the catalog scan (`scoreBlock`), so a candidate list or a re-scored
    // shortlist gets the floats a full scan would give.
    guard let base = items.baseAddress, !items.isEmpty else { return }
    ck_scores_indexed(query, itemFactors, Int32(dim), base, Int32(items.count), out)
    for j in 0..<items.count { out[j] = out[j] + offset + itemBias[Int(items[j])] }
  }

  public func scoreBlock(
    queries: UnsafePointer<Float>, count: Int, offsets: UnsafePointer<Float>, items: Range<Int>,
    into out: UnsafeMutablePointer<Float>, stride: Int
  ) {
    let lo = items.lowerBound
    let n = items.count
    if n == 0 || count == 0 { return }
    if count == 1 {
      // One query: the same sums as in a batch, so a request gets the same floats alone or
      // batched with others.
      ck_scores_single(queries, itemFactors + lo * dim, Int32(n), Int32(dim), out)
      let o = offsets[0]
      for i in 0..<n { out[i] = out[i] + o + itemBias[lo + i] }
      return
    }
    precondition(count <= stride && stride % 8 == 0, "stride \(stride) for \(count)")
    ck_scores_batch(
      queries, Int32(count), offsets, itemFactors + lo * dim, itemBias + lo, Int32(n), Int32(dim),
      out, Int32(stride))
  }

  public func queryWork(user: Int32?, recentCount: Int) -> Int {
    if let user, user >= 0, Int(user) < userCount { return dim }
    return FoldIn.work(items: recentCount, dim: dim)
  }

  /// Scores of the given items for a known user: out[k] = score(user, items[k]). Out-of-range
  /// item indices get the unknown-item fallback μ + b_u.
  public func score(
    user: Int32, items: UnsafeBufferPointer<Int32>, into out: UnsafeMutablePointer<Float>
  ) {
    precondition(user >= 0 && Int(user) < userCount, "user index out of range")
    let u = Int(user)
    let pu = userFactors + u * dim
    let c = globalMean + userBias[u]
    for k in 0..<items.count {
      let i = Int(items[k])
      if i >= 0 && i < itemCount {
        out[k] = c + itemBias[i] + VectorMath.dot(pu, itemFactors + i * dim, dim)
      } else {
        out[k] = c
      }
    }
  }

  /// Items the user rated in training (sorted, distinct). Empty for an out-of-range index.
  public func seenItems(user: Int32) -> UnsafeBufferPointer<Int32> {
    guard user >= 0 && Int(user) < userCount else {
      return UnsafeBufferPointer(start: seenIndices, count: 0)
    }
    let a = Int(seenIndptr[Int(user)])
    let b = Int(seenIndptr[Int(user) + 1])
    return UnsafeBufferPointer(start: seenIndices + a, count: b - a)
  }

  /// Whether `item` is in the user's training history (binary search).
  public func hasSeen(user: Int32, item: Int32) -> Bool {
    let s = seenItems(user: user)
    var lo = 0
    var hi = s.count
    while lo < hi {
      let mid = (lo + hi) >> 1
      if s[mid] < item { lo = mid + 1 } else { hi = mid }
    }
    return lo < s.count && s[lo] == item
  }

  /// Row-major user factor row.
  public func userVector(_ user: Int32) -> UnsafeBufferPointer<Float> {
    UnsafeBufferPointer(start: userFactors + Int(user) * dim, count: dim)
  }

  /// Row-major item factor row.
  public func itemVector(_ item: Int32) -> UnsafeBufferPointer<Float> {
    UnsafeBufferPointer(start: itemFactors + Int(item) * dim, count: dim)
  }
}

/// Offsets of tensors packed into one block, each 64-byte aligned.
struct BlockLayout {
  var size = 0
  mutating func add(bytes: Int) -> Int {
    let off = (size + 63) & ~63
    size = off + bytes
    return off
  }
}

/// A user → items CSR of the training history, plus per-item distinct-user counts.
struct SeenItems {
  var indptr: [Int64]
  var indices: [Int32]
  var popularity: [Int32]

  static func build(users: [Int32], items: [Int32], userCount: Int, itemCount: Int) -> SeenItems {
    var indptr = [Int64](repeating: 0, count: userCount + 1)
    for u in users { indptr[Int(u) + 1] += 1 }
    for u in 0..<userCount { indptr[u + 1] += indptr[u] }
    var fill = indptr
    var raw = [Int32](repeating: 0, count: users.count)
    for r in 0..<users.count {
      let u = Int(users[r])
      raw[Int(fill[u])] = items[r]
      fill[u] += 1
    }
    // Sort each row and drop duplicates, compacting in place.
    var out = [Int64](repeating: 0, count: userCount + 1)
    var w = 0
    raw.withUnsafeMutableBufferPointer { buf in
      for u in 0..<userCount {
        let a = Int(indptr[u])
        let b = Int(indptr[u + 1])
        var row = UnsafeMutableBufferPointer(rebasing: buf[a..<b])
        row.sort()
        var last: Int32 = -1
        for k in 0..<row.count where row[k] != last {
          last = row[k]
          buf[w] = last
          w += 1
        }
        out[u + 1] = Int64(w)
      }
    }
    raw.removeLast(raw.count - w)
    var popularity = [Int32](repeating: 0, count: itemCount)
    for i in raw { popularity[Int(i)] += 1 }
    return SeenItems(indptr: out, indices: raw, popularity: popularity)
  }
}

extension MFModel {
  /// The same factors and biases with the training history (what `exclude_seen` drops and
  /// popularity counts) rebuilt from `data`: every row whose user and item this model knows.
  /// Early stopping fits on the training split minus a validation slice; the served history
  /// must still hold those validation rows, which the user did interact with.
  public func withHistory(from data: Interactions) -> MFModel {
    let userMap = data.userIds.map { userIndex($0) ?? -1 }
    let itemMap = data.itemIds.map { itemIndex($0) ?? -1 }
    var users = [Int32]()
    var items = [Int32]()
    users.reserveCapacity(data.count)
    items.reserveCapacity(data.count)
    for r in 0..<data.count {
      let u = userMap[Int(data.users[r])]
      let i = itemMap[Int(data.items[r])]
      if u >= 0 && i >= 0 {
        users.append(u)
        items.append(i)
      }
    }
    func array(_ p: UnsafePointer<Float>, _ n: Int) -> [Float] {
      Array(UnsafeBufferPointer(start: p, count: n))
    }
    return MFModel(
      kind: kind, dim: dim, userIds: userIds, itemIds: itemIds, userLookup: userLookup,
      itemLookup: itemLookup, globalMean: globalMean, ratingRange: ratingRange,
      userFactors: array(userFactors, userCount * dim),
      itemFactors: array(itemFactors, itemCount * dim),
      userBias: array(userBias, userCount), itemBias: array(itemBias, itemCount),
      csr: SeenItems.build(users: users, items: items, userCount: userCount, itemCount: itemCount))
  }
}
