import Foundation
import Testing

@testable import RecServeModels

/// The large-data paths: the loader releases the pages of a memory-mapped file as it goes (and
/// must still give the same result and the same error lines), short ids take a packed-key path
/// in the interner, and the splits and the implicit CSR are built without row-index lists or
/// (index, value) pairs; each must give exactly what the straightforward version gives.
@Suite struct CapacityTests {
  /// 1,000,000 rows (about 25 MB, so several release chunks): users 0..<20000 in runs, items
  /// mixing short numeric ids and long ones ("movie-0000123", 13 bytes).
  static func millionRowFile(_ dir: TempDir) -> (path: String, bytes: [UInt8]) {
    var out = [UInt8]()
    out.reserveCapacity(30_000_000)
    out.append(contentsOf: "userId,movieId,rating,timestamp\n".utf8)
    var rng = Xoshiro256(seed: 7)
    for k in 0..<1_000_000 {
      let user = k / 50
      let i = rng.nextInt(below: 3_000)
      let item =
        i % 3 == 0 ? "movie-\(String(repeating: "0", count: 7 - String(i).count))\(i)" : "\(i)"
      let half = k % 10
      out.append(
        contentsOf: "\(user),\(item),\(half / 2).\(half % 2 == 0 ? 0 : 5),\(900_000_000 + k)\n".utf8
      )
    }
    return (dir.write("million.csv", bytes: out), out)
  }

  @Test func millionRowFileLoadsWithCountsAndMatchesTheInMemoryParse() throws {
    let dir = TempDir()
    let (path, bytes) = Self.millionRowFile(dir)
    let d = try Interactions.load(path: path)
    #expect(d.count == 1_000_000)
    #expect(d.userCount == 20_000)
    #expect(d.itemCount == 3_000)
    #expect(d.userIds.first == "0" && d.userIds.last == "19999")
    #expect(d.users.first == 0 && d.users.last == 19_999)
    #expect(d.timestamps.first == 900_000_000 && d.timestamps.last == 900_999_999)
    #expect(d.ratings[0] == 0 && d.ratings[3] == 1.5 && d.ratings[9] == 4.5)
    #expect(d.summary.ratingMean == 2.25)
    #expect(Set(d.itemIds).count == 3_000)
    #expect(d.itemIds.contains("movie-0000123") && d.itemIds.contains("2999"))
    // Ids keep the order of first appearance, whatever their length.
    let firstSeen = d.items.reduce(into: [Int32]()) { seen, i in
      if Int(i) == seen.count { seen.append(i) }
    }
    #expect(firstSeen.count == 3_000)
    // The mapped, page-releasing load and the plain in-memory parse agree on everything.
    let m = try bytes.withUnsafeBytes { try RatingsLoader.parse(bytes: $0, source: path) }
    #expect(m.users == d.users && m.items == d.items)
    #expect(m.ratings == d.ratings && m.timestamps == d.timestamps)
    #expect(m.userIds == d.userIds && m.itemIds == d.itemIds)
  }

  /// Errors past the first released chunk still name the right line.
  @Test func errorsAfterReleasedPagesNameTheirLine() throws {
    let dir = TempDir()
    let line = Array("12345,67890,3.5,964982703\n".utf8)  // 26 bytes
    let lines = 500_000  // 13 MB: past the first 8 MiB chunk
    var good = [UInt8]()
    good.reserveCapacity(line.count * (lines + 1))
    for _ in 0..<lines { good.append(contentsOf: line) }

    let bad = dir.write("bad.csv", bytes: good + Array("1,2,x,3\n".utf8) + line)
    let e = errorOf { try Interactions.load(path: bad) }
    #expect("\(e!)" == "\(bad):\(lines + 1): rating 'x' is not a number")

    // A bad line early and invalid UTF-8 late: as before, the encoding is reported first.
    var mixed = good
    mixed.replaceSubrange(26..<52, with: Array("1,2,x,3\n".utf8))
    let latin = dir.write("latin1.csv", bytes: mixed + [0x75, 0xE9, 0x2C, 0x69, 0x2C, 0x34, 0x0A])
    let f = errorOf { try Interactions.load(path: latin) }
    #expect("\(f!)".hasPrefix("\(latin):\(lines + 1): invalid UTF-8"))

    let nul = dir.write("nul.csv", bytes: good + [0])
    let g = errorOf { try Interactions.load(path: nul) }
    #expect("\(g!)".hasPrefix("\(nul):\(lines + 1): contains a NUL byte"))

    let skipped = try Interactions.load(path: bad, options: LoadOptions(skipBadLines: true))
    #expect(skipped.count == lines + 1 && skipped.skippedLines == 1)
  }

  /// Ids of 7 and 8+ bytes that share prefixes, and repeated last ids, stay distinct.
  @Test func shortAndLongIdsInternDistinctly() throws {
    let ids = ["1234567", "12345678", "1234567x", "123456", "a", "ab", "1234567", "a\u{e9}", "é"]
    var text = ""
    for (k, id) in ids.enumerated() { text += "\(id),\(id),1,\(k)\n\(id),z,1,\(k)\n" }
    let d = try RatingsLoader.parse(text: text, source: "ids")
    let distinct = ["1234567", "12345678", "1234567x", "123456", "a", "ab", "a\u{e9}", "é"]
    #expect(d.userIds == distinct)
    #expect(
      d.itemIds == ["1234567", "z", "12345678", "1234567x", "123456", "a", "ab", "a\u{e9}", "é"])
    #expect(d.users == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 0, 0, 6, 6, 7, 7])
    #expect(d.userIndex("12345678") == 1 && d.itemIndex("z") == 1)
  }

  static func randomData(rows n: Int, users: Int, items: Int, seed: UInt64) throws -> Interactions {
    var rng = Xoshiro256(seed: seed)
    var rows: [InteractionRow] = []
    for _ in 0..<n {
      rows.append(
        InteractionRow(
          user: "u\(rng.nextInt(below: users))", item: "i\(rng.nextInt(below: items))",
          rating: Float(rng.nextInt(below: 10) + 1) / 2, timestamp: Int64(rng.nextInt(below: 50))))
    }
    return try Interactions(rows: rows)
  }

  /// The implicit CSR equals a dictionary count of the (user, item) pairs.
  @Test func implicitMatrixMergesDuplicatesLikeACount() throws {
    let d = try Self.randomData(rows: 5_000, users: 60, items: 40, seed: 3)
    var counts: [Int32: [Int32: Float]] = [:]
    for r in 0..<d.count { counts[d.users[r], default: [:]][d.items[r], default: 0] += 1 }
    let m = ImplicitMatrix(d)
    #expect(m.indptr.count == d.userCount + 1 && m.indices.count == m.indptr.last!)
    for u in 0..<d.userCount {
      let expected = (counts[Int32(u)] ?? [:]).sorted { $0.key < $1.key }
      let a = m.indptr[u]
      let b = m.indptr[u + 1]
      #expect(Array(m.indices[a..<b]) == expected.map(\.key))
      #expect(Array(m.values[a..<b]) == expected.map(\.value))
    }
    #expect(m.values.reduce(0, +) == Float(d.count))
  }

  /// The old split code, with lists of row indices.
  static func referenceRandomSplit(_ d: Interactions, holdout: Double, seed: UInt64) -> (
    [Int], [Int]
  ) {
    let n = d.count
    let nTest = Int((Double(n) * holdout).rounded(.down))
    var order = Array(0..<n)
    var rng = Xoshiro256(seed: seed, stream: 0x5B17)
    var isTest = [Bool](repeating: false, count: n)
    for k in 0..<nTest {
      let j = k + rng.nextInt(below: n - k)
      order.swapAt(k, j)
      isTest[order[k]] = true
    }
    return ((0..<n).filter { !isTest[$0] }, (0..<n).filter { isTest[$0] })
  }

  static func sameRows(_ a: Interactions, _ b: Interactions) -> Bool {
    a.users == b.users && a.items == b.items && a.ratings == b.ratings
      && a.timestamps == b.timestamps && a.userIds == b.userIds && a.itemIds == b.itemIds
  }

  @Test func splitsWithoutRowListsGiveTheSameRows() throws {
    let d = try Self.randomData(rows: 3_000, users: 80, items: 70, seed: 11)
    for (h, seed) in [(0.1, UInt64(1)), (0.5, 2), (0.01, 3)] {
      let (train, test) = d.randomSplit(holdout: h, seed: seed)
      let (trainRows, testRows) = Self.referenceRandomSplit(d, holdout: h, seed: seed)
      #expect(Self.sameRows(train, d.subset(rows: trainRows)))
      #expect(Self.sameRows(test, d.subset(rows: testRows)))
    }
    let (train, test) = d.leaveLastOutSplit(seed: 5)
    #expect(train.count + test.count == d.count)
    #expect(test.count == d.userCount)  // every user has at least two rows here
    // Each test row is its user's latest; train plus test is the data, row for row.
    var latest: [String: Int64] = [:]
    for r in 0..<d.count {
      latest[d.userIds[Int(d.users[r])]] = max(
        latest[d.userIds[Int(d.users[r])]] ?? .min, d.timestamps[r])
    }
    for r in 0..<test.count {
      #expect(test.timestamps[r] == latest[test.userIds[Int(test.users[r])]])
    }
    let positives = d.implicitPositives(threshold: 3)
    #expect(Self.sameRows(positives, d.subset(rows: (0..<d.count).filter { d.ratings[$0] >= 3 })))
  }

  @Test func borrowedTensorsSerializeLikeCopiedOnes() {
    let f: [Float] = [1, 2, 3, 4, 5, 6]
    let i: [Int64] = [7, 8]
    var copied = SafeTensors.Writer()
    copied.add("f", shape: [2, 3], f)
    copied.add("i", shape: [2], i)
    var borrowed = SafeTensors.Writer()
    let out = f.withUnsafeBufferPointer { fb in
      i.withUnsafeBufferPointer { ib in
        borrowed.addBorrowed("f", dtype: .F32, shape: [2, 3], values: fb)
        borrowed.addBorrowed("i", dtype: .I64, shape: [2], values: ib)
        return borrowed.serialize()
      }
    }
    #expect(out == copied.serialize())
  }
}
