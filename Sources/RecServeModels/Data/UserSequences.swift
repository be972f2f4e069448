/// Each user's interactions in time order: the input of sequence models.
public struct UserSequences: Sendable, Equatable {
  /// User u's items are items[indptr[u]..<indptr[u + 1]], oldest first.
  public var indptr: [Int64]
  /// Item indices (of the data the sequences were built from).
  public var items: [Int32]

  public var userCount: Int { indptr.count - 1 }

  public func count(of user: Int) -> Int { Int(indptr[user + 1] - indptr[user]) }
}

extension Interactions {
  /// Every user's items ordered by timestamp, ties in file order (so a file without timestamps
  /// keeps its order). Repeated interactions with an item stay in the sequence.
  public func userSequences() -> UserSequences {
    let U = userCount
    var indptr = [Int64](repeating: 0, count: U + 1)
    for u in users { indptr[Int(u) + 1] += 1 }
    for u in 0..<U { indptr[u + 1] += indptr[u] }
    // Rows grouped by user in file order, then each group sorted by (timestamp, row).
    var rows = [Int32](repeating: 0, count: count)
    var fill = indptr
    for r in 0..<count {
      let u = Int(users[r])
      rows[Int(fill[u])] = Int32(r)
      fill[u] += 1
    }
    var items = [Int32](repeating: 0, count: count)
    timestamps.withUnsafeBufferPointer { time in
      rows.withUnsafeMutableBufferPointer { rows in
        for u in 0..<U {
          let a = Int(indptr[u])
          let b = Int(indptr[u + 1])
          var inOrder = true
          if b - a > 1 {
            for k in (a + 1)..<b where time[Int(rows[k])] < time[Int(rows[k - 1])] {
              inOrder = false
              break
            }
          }
          if !inOrder {
            var group = UnsafeMutableBufferPointer(rebasing: rows[a..<b])
            group.sort { x, y in
              let tx = time[Int(x)]
              let ty = time[Int(y)]
              return tx != ty ? tx < ty : x < y
            }
          }
        }
      }
    }
    for k in 0..<count { items[k] = self.items[Int(rows[k])] }
    return UserSequences(indptr: indptr, items: items)
  }
}
