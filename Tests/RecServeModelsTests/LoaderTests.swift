import Foundation
import Testing

@testable import RecServeModels

@Suite struct LoaderGoodFiles {
  @Test func movieLensUData() throws {
    let dir = TempDir()
    let p = dir.write(
      "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n")
    let d = try Interactions.load(path: p)
    #expect(d.count == 3)
    #expect(d.userIds == ["196", "186"])
    #expect(d.itemIds == ["242", "302", "377"])
    #expect(d.users == [0, 1, 0])
    #expect(d.items == [0, 1, 2])
    #expect(d.ratings == [3, 3, 1])
    #expect(d.timestamps == [881_250_949, 891_717_742, 878_887_116])
    #expect(d.userIndex("186") == 1)
    #expect(d.itemIndex("999") == nil)
  }

  @Test func ratingsCSVWithHeader() throws {
    let dir = TempDir()
    let p = dir.write(
      "ratings.csv",
      "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,0.5,964982224\n")
    let d = try Interactions.load(path: p)
    #expect(d.count == 3)
    #expect(d.ratings == [4, 4.5, 0.5])
    #expect(d.userIds == ["1", "2"])
    #expect(d.summary.ratingMin == 0.5)
    #expect(d.summary.ratingMax == 4.5)
  }

  @Test func userItemHeaderInAnyColumnOrderWithCRLFAndBOM() throws {
    let dir = TempDir()
    let p = dir.write(
      "r.csv", "\u{FEFF}timestamp,rating,item_id,user_id\r\n10,5,i1,u1\r\n\r\n11,2,i2,u1\r\n")
    let d = try Interactions.load(path: p)
    #expect(d.count == 2)
    #expect(d.userIds == ["u1"])
    #expect(d.itemIds == ["i1", "i2"])
    #expect(d.ratings == [5, 2])
    #expect(d.timestamps == [10, 11])
  }

  @Test func semicolonQuotedFieldsAndStringIds() throws {
    let dir = TempDir()
    let p = dir.write(
      "books.csv",
      "\"User-ID\";\"ISBN\";\"Book-Rating\"\n\"276725\";\"034545104X\";\"0\"\n\"2 \"\"x\"\"\";\"a;b\";\"5\"\n"
    )
    let d = try Interactions.load(path: p)
    #expect(d.count == 2)
    #expect(d.userIds == ["276725", "2 \"x\""])
    #expect(d.itemIds == ["034545104X", "a;b"])
    #expect(d.ratings == [0, 5])
    #expect(d.timestamps == [0, 0])
  }

  @Test func doubleColonAndTwoColumnImplicit() throws {
    let dir = TempDir()
    let ml1m = dir.write("ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    let a = try Interactions.load(path: ml1m)
    #expect(a.count == 2 && a.ratings == [5, 3] && a.timestamps[1] == 978_302_109)
    let implicit = dir.write("clicks.tsv", "alice\tbook\nbob\tbook\n")
    let b = try Interactions.load(path: implicit)
    #expect(b.count == 2 && b.ratings == [1, 1] && b.itemIds == ["book"])
  }

  @Test func explicitColumnsByNameAndPosition() throws {
    let dir = TempDir()
    let p = dir.write("x.csv", "a,who,what,stars\nz,u1,i1,4\nz,u2,i1,2\n")
    let byName = try Interactions.load(
      path: p,
      options: LoadOptions(
        userColumn: .name("who"), itemColumn: .name("what"), ratingColumn: .name("stars")))
    #expect(byName.userIds == ["u1", "u2"] && byName.ratings == [4, 2])
    let byPosition = try Interactions.load(
      path: p,
      options: LoadOptions(
        userColumn: .init(commandLine: "2"), itemColumn: .init(commandLine: "3"),
        ratingColumn: .init(commandLine: "4")))
    #expect(byPosition.userIds == ["u1", "u2"] && byPosition.ratings == [4, 2])
  }

  @Test func exponentAndFractionalTimestamp() throws {
    let d = try RatingsLoader.parse(text: "u,i,2.5e0,100.0\nu,j,-1.25,7\n", source: "t.csv")
    #expect(d.ratings == [2.5, -1.25])
    #expect(d.timestamps == [100, 7])
  }

  @Test func skipBadLinesCountsThem() throws {
    let dir = TempDir()
    let p = dir.write(
      "r.csv", "user_id,item_id,rating\nu1,i1,4\nu2,i2,abc\nu3\nu4,i4,nan\nu5,i5,3\n")
    let d = try Interactions.load(path: p, options: LoadOptions(skipBadLines: true))
    #expect(d.count == 2)
    #expect(d.skippedLines == 3)
    #expect(d.skippedExamples.count == 3)
    #expect(d.skippedExamples[0] == "\(p):3: rating 'abc' is not a number")
  }

  @Test func inMemoryRows() throws {
    let d = try Interactions(rows: [
      InteractionRow(user: "a", item: "x", rating: 5, timestamp: 1),
      InteractionRow(user: "b", item: "x", rating: 3),
      InteractionRow(user: "a", item: "y"),
    ])
    #expect(d.count == 3 && d.userCount == 2 && d.itemCount == 2)
    #expect(d.users == [0, 1, 0] && d.items == [0, 0, 1] && d.ratings == [5, 3, 1])
    let bad = errorOf {
      try Interactions(rows: [InteractionRow(user: "a", item: "x", rating: .nan)])
    }
    #expect("\(bad!)" == "inline interactions: row 1: rating nan is not finite")
    let empty = errorOf { try Interactions(rows: []) }
    #expect("\(empty!)" == "inline interactions: no interactions given")
  }

  @Test func writeCSVRoundTrips() throws {
    let dir = TempDir()
    let d = try Interactions(rows: [
      InteractionRow(user: "a,1", item: "x\"q", rating: 4.5, timestamp: 9),
      InteractionRow(user: "b", item: "y", rating: 2, timestamp: 10),
    ])
    try d.writeCSV(to: dir.file("out.csv"))
    let e = try Interactions.load(path: dir.file("out.csv"))
    #expect(e.userIds == d.userIds && e.itemIds == d.itemIds)
    #expect(e.ratings == d.ratings && e.timestamps == d.timestamps)
  }

  @Test func loadsOneHundredThousandLinesQuickly() throws {
    let dir = TempDir()
    var text = "userId,movieId,rating,timestamp\n"
    text.reserveCapacity(3_000_000)
    for k in 0..<100_000 {
      text += "\(k % 611),\(k % 9_742 * 7),\(Double(k % 10) / 2 + 0.5),\(964_982_703 + k)\n"
    }
    let p = dir.write("big.csv", text)
    let start = Date()
    let d = try Interactions.load(path: p)
    let seconds = Date().timeIntervalSince(start)
    #expect(d.count == 100_000)
    #expect(d.userCount == 611)
    // Generous bound for unoptimised debug builds; release takes a few milliseconds.
    #expect(seconds < 2.0)
  }
}

@Suite struct LoaderBadFiles {
  /// Loads `text` from a file named `name` and returns the error's description.
  func failure(_ name: String, _ text: String, options: LoadOptions = LoadOptions()) -> (
    String, String
  ) {
    let dir = TempDir()
    let p = dir.write(name, text)
    let e = errorOf { try Interactions.load(path: p, options: options) }
    #expect(e is DataError, "expected a DataError for \(name)")
    return (p, e.map { "\($0)" } ?? "no error")
  }

  @Test func ratingNotANumber() {
    let (p, m) = failure("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,2,abc,2\n")
    #expect(m == "\(p):3: rating 'abc' is not a number")
  }

  @Test func nonFiniteRatings() {
    let (p, m) = failure("r.tsv", "1\t1\t4\t1\n1\t2\tnan\t1\n")
    #expect(m == "\(p):2: rating 'nan' is not finite")
    let (p2, m2) = failure("r.tsv", "1\t1\tinf\t1\n")
    #expect(m2 == "\(p2):1: rating 'inf' is not finite")
    let (p3, m3) = failure("r.tsv", "1\t1\t1e999\t1\n")
    #expect(m3 == "\(p3):1: rating '1e999' is not finite")
  }

  @Test func idsWithACarriageReturnAreNamedByFileAndLine() {
    let (p, m) = failure("r.csv", "user_id,item_id,rating\nu1,i1,4\nu2\r,i2,3\n")
    #expect(
      m == "\(p):3: user id contains a line break (carriage return); ids are stored one a line")
    let (p2, m2) = failure("r.csv", "user_id,item_id,rating\nu1,\"i\r1\",4\n")
    #expect(
      m2 == "\(p2):2: item id contains a line break (carriage return); ids are stored one a line")
    let (p3, m3) = failure("r.csv", "user_id,item_id,rating\nu1,i1,4\nu\u{0}2,i2,3\n")
    #expect(m3.hasPrefix("\(p3):3: contains a NUL byte"))
  }

  @Test func tooFewFields() {
    let (p, m) = failure("u.data", "1\t1\t4\t1\n2\t3\n")
    #expect(m == "\(p):2: expected at least 4 fields separated by tabs, found 2")
  }

  @Test func emptyIds() {
    let (p, m) = failure("r.csv", "user_id,item_id,rating\n,i1,4\n")
    #expect(m == "\(p):2: user id is empty")
    let (p2, m2) = failure("r.csv", "u1,i1,4\nu1,,4\n")
    #expect(m2 == "\(p2):2: item id is empty")
  }

  @Test func badTimestamp() {
    let (p, m) = failure("r.csv", "u,i,4,2020-01-01\n")
    #expect(m == "\(p):1: timestamp '2020-01-01' is not an integer (seconds since 1970 expected)")
  }

  @Test func emptyFileAndHeaderOnly() {
    let (p, m) = failure("empty.csv", "")
    #expect(m == "\(p): file is empty")
    let (p2, m2) = failure("header.csv", "userId,movieId,rating,timestamp\n")
    #expect(m2 == "\(p2): no data rows after the header")
    let (p3, m3) = failure("blank.csv", "\n  \n")
    #expect(m3 == "\(p3): file has no data (only blank lines)")
  }

  @Test func binaryFiles() {
    let dir = TempDir()
    let p = dir.write("model.bin", bytes: Array("u,i,4\nu,j,3\n".utf8) + [0, 1, 2, 3])
    let e = errorOf { try Interactions.load(path: p) }
    #expect(
      "\(e!)" == "\(p):3: contains a NUL byte; this looks like a binary file, not CSV/TSV ratings")
    let q = dir.write(
      "latin1.csv", bytes: Array("u,i,4\n".utf8) + [0x75, 0xE9, 0x2C, 0x69, 0x2C, 0x34, 0x0A])
    let f = errorOf { try Interactions.load(path: q) }
    #expect("\(f!)".hasPrefix("\(q):2: invalid UTF-8"))
  }

  @Test func missingFileAndUnterminatedQuote() {
    let e = errorOf { try Interactions.load(path: "/nonexistent/ratings.csv") }
    #expect("\(e!)" == "/nonexistent/ratings.csv: cannot read: No such file or directory")
    let (p, m) = failure("q.csv", "u,i,4\n\"u2,i,4\n")
    #expect(m.hasPrefix("\(p):2: unterminated quoted field"))
  }

  @Test func unknownColumnName() {
    let (p, m) = failure(
      "r.csv", "userId,movieId,rating\n1,2,3\n", options: LoadOptions(ratingColumn: .name("stars")))
    #expect(
      m == "\(p):1: no column named 'stars' for the rating (header has: userId, movieId, rating)")
  }

  @Test func allLinesBadWhenSkipping() {
    let (p, m) = failure(
      "r.csv", "u,i,x\nu,i,y\n", options: LoadOptions(hasHeader: false, skipBadLines: true))
    #expect(
      m
        == "\(p): no valid rows: all 2 data lines were bad (first: \(p):1: rating 'x' is not a number)"
    )
  }
}
