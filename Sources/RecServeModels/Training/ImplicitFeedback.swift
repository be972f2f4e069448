import Foundation

/// Implicit feedback: which (user, item) pairs are positive and how strongly, as a user → items
/// CSR with summed strengths (and its item → users transpose for ALS).
public struct ImplicitMatrix: Sendable {
  public let rows: Int
  public let cols: Int
  /// Row r's entries are indices/values[indptr[r]..<indptr[r+1]], column indices ascending and
  /// distinct.
  public let indptr: [Int]
  public let indices: [Int32]
  /// Strength r of each entry: the number of interactions merged into it.
  public let values: [Float]

  public var nnz: Int { indices.count }

  /// Builds the CSR from coordinate rows, each one unit of strength; duplicate pairs are merged
  /// into one entry whose value is their count. Works in place on one Int32 per row (no
  /// (index, value) pairs, no array of ones), so 20M rows need 80 MB besides the result.
  init(rows: Int, cols: Int, rowIndex: [Int32], colIndex: [Int32]) {
    var ptr = [Int](repeating: 0, count: rows + 1)
    for r in rowIndex { ptr[Int(r) + 1] += 1 }
    for r in 0..<rows { ptr[r + 1] += ptr[r] }
    var fill = ptr
    var idx = [Int32](repeating: 0, count: rowIndex.count)
    for k in 0..<rowIndex.count {
      let r = Int(rowIndex[k])
      idx[fill[r]] = colIndex[k]
      fill[r] += 1
    }
    fill = []
    // Sort each row, then write its distinct columns (and how often each occurred) compacted
    // to the front: the write position never passes the read position.
    var outPtr = [Int](repeating: 0, count: rows + 1)
    var val = [Float]()
    val.reserveCapacity(idx.count)
    var w = 0
    idx.withUnsafeMutableBufferPointer { buf in
      for r in 0..<rows {
        var row = UnsafeMutableBufferPointer(rebasing: buf[ptr[r]..<ptr[r + 1]])
        row.sort()
        var k = 0
        while k < row.count {
          let c = row[k]
          var run = 1
          while k + run < row.count && row[k + run] == c { run += 1 }
          buf[w] = c
          val.append(Float(run))
          w += 1
          k += run
        }
        outPtr[r + 1] = w
      }
    }
    if w < idx.count { idx = Array(idx[0..<w]) }
    self.rows = rows
    self.cols = cols
    indptr = outPtr
    indices = idx
    values = val
  }

  private init(rows: Int, cols: Int, indptr: [Int], indices: [Int32], values: [Float]) {
    self.rows = rows
    self.cols = cols
    self.indptr = indptr
    self.indices = indices
    self.values = values
  }

  /// Every row of `data` is one unit of strength on its (user, item) pair; duplicates add up.
  public init(_ data: Interactions) {
    self.init(
      rows: data.userCount, cols: data.itemCount, rowIndex: data.users, colIndex: data.items)
  }

  /// The item → users matrix (columns ascending within each row).
  public func transposed() -> ImplicitMatrix {
    var ptr = [Int](repeating: 0, count: cols + 1)
    for c in indices { ptr[Int(c) + 1] += 1 }
    for c in 0..<cols { ptr[c + 1] += ptr[c] }
    var fill = ptr
    var idx = [Int32](repeating: 0, count: nnz)
    var val = [Float](repeating: 0, count: nnz)
    for r in 0..<rows {
      for k in indptr[r]..<indptr[r + 1] {
        let c = Int(indices[k])
        idx[fill[c]] = Int32(r)
        val[fill[c]] = values[k]
        fill[c] += 1
      }
    }
    return ImplicitMatrix(rows: cols, cols: rows, indptr: ptr, indices: idx, values: val)
  }

  /// The training history CSR a served model carries (for exclude_seen and popularity).
  var seenItems: SeenItems {
    var popularity = [Int32](repeating: 0, count: cols)
    for c in indices { popularity[Int(c)] += 1 }
    return SeenItems(indptr: indptr.map { Int64($0) }, indices: indices, popularity: popularity)
  }
}

extension Interactions {
  /// The rows that count as positive implicit feedback: every row when `threshold` is nil, else
  /// the rows rated at least `threshold`. Id maps are compacted to the users and items that
  /// remain; duplicate pairs are kept here and merged by `ImplicitMatrix`.
  public func implicitPositives(threshold: Float?) -> Interactions {
    guard let threshold else { return self }
    var n = 0
    for r in ratings where r >= threshold { n += 1 }
    return subset(rows: (0..<count).lazy.filter { ratings[$0] >= threshold }, count: n)
  }
}

extension MFModel {
  /// A dot-product model (score = p_u·q_i, no biases, no clipping) for the implicit kinds, so
  /// that serving (Rank, SimilarItems, exclude_seen) and the model file treat it like MF.
  static func implicit(
    kind: String, dim: Int, data: Interactions, matrix: ImplicitMatrix, userFactors: [Float],
    itemFactors: [Float]
  ) -> MFModel {
    MFModel(
      kind: kind, dim: dim, userIds: data.userIds, itemIds: data.itemIds,
      userLookup: data.userLookup, itemLookup: data.itemLookup, globalMean: 0, ratingRange: nil,
      userFactors: userFactors, itemFactors: itemFactors,
      userBias: [Float](repeating: 0, count: data.userCount),
      itemBias: [Float](repeating: 0, count: data.itemCount), csr: matrix.seenItems)
  }
}

/// Small SIMD kernels for the implicit trainers.
enum ImplicitKernels {
  /// y += a·x
  @inline(__always)
  static func axpy(
    _ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int
  ) {
    var k = 0
    let rx = UnsafeRawPointer(x)
    let ry = UnsafeMutableRawPointer(y)
    let va = SIMD8<Float>(repeating: a)
    while k + 8 <= n {
      let xv = rx.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      let yv = ry.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<Float>.self)
      ry.storeBytes(of: yv + va * xv, toByteOffset: k * 4, as: SIMD8<Float>.self)
      k += 8
    }
    while k < n {
      y[k] += a * x[k]
      k += 1
    }
  }

  /// out = A·v for a dense row-major n×n matrix.
  @inline(__always)
  static func matvec(
    _ A: UnsafePointer<Float>, _ v: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
    _ n: Int
  ) {
    for r in 0..<n { out[r] = VectorMath.dot(A + r * n, v, n) }
  }
}

extension ImplicitMatrix {
  /// The user → items matrix of `data` with recent interactions weighted up: the row a user
  /// made p interactions before their latest (time order, file order among equal timestamps)
  /// weighs 1 + boost·2^(−p / h), h = halfLife × the user's row count (at least 1), and an
  /// entry's strength is the sum of its rows' weights (a repeated pair adds up, as without
  /// recency). The next item a user picks is most like their last few, which a uniform weight
  /// dilutes among a long history.
  public init(_ data: Interactions, recencyBoost boost: Float, halfLife: Float) {
    self.init(data)
    if boost == 0 || data.isEmpty { return }
    let U = data.userCount
    // Each user's rows in time order.
    var start = [Int](repeating: 0, count: U + 1)
    for u in data.users { start[Int(u) + 1] += 1 }
    for u in 0..<U { start[u + 1] += start[u] }
    var fill = start
    var order = [Int32](repeating: 0, count: data.count)
    for r in 0..<data.count {
      let u = Int(data.users[r])
      order[fill[u]] = Int32(r)
      fill[u] += 1
    }
    fill = []
    var values = [Float](repeating: 0, count: nnz)
    let timestamps = data.timestamps
    order.withUnsafeMutableBufferPointer { buf in
      for u in 0..<U {
        var rows = UnsafeMutableBufferPointer(rebasing: buf[start[u]..<start[u + 1]])
        rows.sort { a, b in
          let ta = timestamps[Int(a)]
          let tb = timestamps[Int(b)]
          return ta < tb || (ta == tb && a < b)
        }
        let n = rows.count
        let h = max(1, Double(halfLife) * Double(n))
        let lo = indptr[u]
        let hi = indptr[u + 1]
        for (k, r) in rows.enumerated() {
          let p = Double(n - 1 - k)
          let weight = 1 + Double(boost) * pow(2, -p / h)
          // The entry of (u, item): columns are sorted and distinct within the row.
          let item = data.items[Int(r)]
          var a = lo
          var b = hi
          while a < b {
            let mid = (a + b) >> 1
            if indices[mid] < item { a = mid + 1 } else { b = mid }
          }
          values[a] += Float(weight)
        }
      }
    }
    self = ImplicitMatrix(rows: rows, cols: cols, indptr: indptr, indices: indices, values: values)
  }
}

/// Checks the recency weight's settings of the kinds that have one (bpr, als, hybrid): the
/// boost in [0, 1000], the half-life in (0, 10].
func validateRecency(boost: Float, halfLife: Float) throws {
  if !(boost >= 0) || !(boost <= 1000) {
    throw TrainingError.invalidConfiguration("recency_boost must be in [0, 1000] (got \(boost))")
  }
  if !(halfLife > 0) || !(halfLife <= 10) {
    throw TrainingError.invalidConfiguration(
      "recency_half_life must be in (0, 10] (got \(halfLife))")
  }
}
