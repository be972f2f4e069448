import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// How to read a ratings file. The defaults detect everything: MovieLens `u.data` (tab-separated
/// user, item, rating, timestamp, no header), `ratings.csv` with a header (`userId,movieId,...`
/// or `user_id,item_id,...`), MovieLens 1M/10M `::`-separated files, and generic CSV/TSV.
public struct LoadOptions: Sendable, Equatable {
  /// A column given by 0-based position or by header name (case-insensitive).
  public enum Column: Sendable, Equatable, CustomStringConvertible {
    case index(Int)
    case name(String)

    /// "3" is the 1-based position 3 (index 2); anything else is a header name.
    public init(commandLine text: String) {
      if let n = Int(text), n >= 1 {
        self = .index(n - 1)
      } else {
        self = .name(text)
      }
    }

    public var description: String {
      switch self {
      case .index(let i): return "column \(i + 1)"
      case .name(let n): return "column '\(n)'"
      }
    }
  }

  /// Field separator: nil detects one of tab, ',', ';', '|', "::" or runs of spaces from the
  /// first line.
  public var delimiter: String?
  /// nil detects a header (a line whose rating field is not a number, or that names a known
  /// column such as userId / item_id / rating).
  public var hasHeader: Bool?
  public var userColumn: Column?
  public var itemColumn: Column?
  /// nil: a column named like "rating", else the third column if there is one; files with only
  /// user and item columns get rating 1 (implicit feedback).
  public var ratingColumn: Column?
  /// nil: a column named like "timestamp", else the fourth column if there is one; else 0.
  public var timestampColumn: Column?
  /// Skip bad lines and count them instead of failing on the first one.
  public var skipBadLines: Bool
  /// How many skip reasons to keep in `Interactions.skippedExamples`.
  public var maxSkippedExamples: Int

  public init(
    delimiter: String? = nil, hasHeader: Bool? = nil, userColumn: Column? = nil,
    itemColumn: Column? = nil, ratingColumn: Column? = nil, timestampColumn: Column? = nil,
    skipBadLines: Bool = false, maxSkippedExamples: Int = 5
  ) {
    self.delimiter = delimiter
    self.hasHeader = hasHeader
    self.userColumn = userColumn
    self.itemColumn = itemColumn
    self.ratingColumn = ratingColumn
    self.timestampColumn = timestampColumn
    self.skipBadLines = skipBadLines
    self.maxSkippedExamples = maxSkippedExamples
  }
}

extension Interactions {
  /// Loads a ratings file; see `LoadOptions`. Errors are `DataError`s naming file and line.
  public static func load(path: String, options: LoadOptions = LoadOptions()) throws
    -> Interactions
  {
    try RatingsLoader.load(path: path, options: options)
  }
}

/// Parses ratings files directly from their bytes (memory-mapped), creating a `String` only once
/// per distinct id.
public enum RatingsLoader {
  public static func load(path: String, options: LoadOptions = LoadOptions()) throws
    -> Interactions
  {
    let file: MappedFile
    do {
      file = try MappedFile(path: path)
    } catch let e as FileError {
      throw DataError(file: path, message: "cannot read: \(e.reason)")
    }
    file.adviseSequential()
    var parser = try Parser(raw: file.bytes, source: path, options: options)
    // Pages already scanned leave the resident set, so a 500 MB file costs a few MB of RSS
    // while it loads instead of its whole size on top of the columns being built.
    parser.releasePages = { from, upTo in file.releasePages(from: from, upTo: upTo) }
    return try parser.run()
  }

  /// Parses text already in memory; `source` names it in errors.
  public static func parse(text: String, source: String, options: LoadOptions = LoadOptions())
    throws -> Interactions
  {
    var text = text
    return try text.withUTF8 { buf in
      try parse(bytes: UnsafeRawBufferPointer(buf), source: source, options: options)
    }
  }

  public static func parse(
    bytes raw: UnsafeRawBufferPointer, source: String, options: LoadOptions = LoadOptions()
  ) throws -> Interactions {
    var parser = try Parser(raw: raw, source: source, options: options)
    return try parser.run()
  }
}

private struct Delimiter {
  var byte: UInt8
  /// "::" (MovieLens 1M/10M): the byte must be doubled.
  var doubled: Bool
  /// Runs of spaces separate fields.
  var spaces: Bool

  var displayName: String {
    if doubled { return "'::'" }
    if spaces { return "spaces" }
    switch byte {
    case 9: return "tabs"
    default: return "'\(Character(Unicode.Scalar(byte)))'"
    }
  }
}

private struct Field {
  var start: Int
  var end: Int
  /// Quoted field containing "" escapes: the bytes need unescaping.
  var escaped: Bool
}

private enum LineError: Error {
  case bad(String)
}

private struct Parser {
  let base: UnsafePointer<UInt8>
  let n: Int
  let source: String
  let options: LoadOptions
  var delimiter = Delimiter(byte: 44, doubled: false, spaces: false)
  var userCol = 0
  var itemCol = 1
  var ratingCol: Int? = nil
  var timestampCol: Int? = nil
  var neededFields = 2
  var fields: [Field]
  /// Field slots for data lines (capacity `neededFields`), allocated by `run`.
  var fast: UnsafeMutablePointer<Field>? = nil
  var scratch: [UInt8] = []
  /// Called with byte ranges the parser has finished with (in order; each starts where the
  /// last ended); a memory-mapped file drops their pages. The bytes must stay readable (error
  /// messages may look back for a line number).
  var releasePages: ((Int, Int) -> Void)? = nil
  /// Bytes scanned between two calls of `releasePages`.
  static let releaseChunk = 8 << 20

  init(raw: UnsafeRawBufferPointer, source: String, options: LoadOptions) throws {
    self.source = source
    self.options = options
    n = raw.count
    if n == 0 { throw DataError(file: source, message: "file is empty") }
    base = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
    fields = []
  }

  func lineOf(_ offset: Int) -> Int { ByteParsing.lineNumber(base, offset: offset) }

  /// End of the line starting at `start` (excluding "\r\n") and the start of the next one.
  @inline(__always)
  func lineBounds(_ start: Int) -> (end: Int, next: Int) {
    var end: Int
    if let hit = memchr(base + start, 10, n - start) {
      end = UnsafeRawPointer(hit).assumingMemoryBound(to: UInt8.self) - base
    } else {
      end = n
    }
    let next = end < n ? end + 1 : n
    if end > start && base[end - 1] == 13 { end -= 1 }
    return (end, next)
  }

  @inline(__always)
  func isBlank(_ s: Int, _ e: Int) -> Bool {
    var i = s
    while i < e {
      let c = base[i]
      if c != 32 && c != 9 && c != 13 { return false }
      i += 1
    }
    return true
  }

  /// Splits base[s..<e] into `fields` (all of them); returns the field count.
  @inline(__always)
  mutating func split(_ s: Int, _ e: Int, keepAll: Bool) throws -> Int {
    var count = 0
    var i = s
    let d = delimiter.byte
    let trimTabs = d != 9
    if keepAll { fields.removeAll(keepingCapacity: true) }
    if delimiter.spaces {
      while i < e && (base[i] == 32 || base[i] == 9) { i += 1 }
    }
    while true {
      // Trim leading blanks.
      while i < e && (base[i] == 32 || (trimTabs && base[i] == 9)) && !delimiter.spaces {
        i += 1
      }
      var fs = i
      var fe = i
      var escaped = false
      if i < e && base[i] == 34 {
        // Quoted field.
        i += 1
        fs = i
        var closed = false
        while i < e {
          if base[i] == 34 {
            if i + 1 < e && base[i + 1] == 34 {
              escaped = true
              i += 2
              continue
            }
            closed = true
            break
          }
          i += 1
        }
        if !closed {
          throw LineError.bad("unterminated quoted field (a quote \" opened in field \(count + 1))")
        }
        fe = i
        i += 1
        while i < e && (base[i] == 32 || (trimTabs && base[i] == 9)) { i += 1 }
        if i < e && !atDelimiter(i, e) {
          throw LineError.bad("unexpected text after the closing quote of field \(count + 1)")
        }
      } else {
        while i < e && !atDelimiter(i, e) { i += 1 }
        fe = i
        while fe > fs && (base[fe - 1] == 32 || (trimTabs && base[fe - 1] == 9)) { fe -= 1 }
      }
      if keepAll {
        fields.append(Field(start: fs, end: fe, escaped: escaped))
      } else if count < neededFields {
        fast![count] = Field(start: fs, end: fe, escaped: escaped)
      }
      count += 1
      if i >= e { break }
      // Step over the delimiter.
      if delimiter.spaces {
        while i < e && (base[i] == 32 || base[i] == 9) { i += 1 }
        if i >= e { break }
      } else {
        i += delimiter.doubled ? 2 : 1
        if i > e { break }
      }
    }
    return count
  }

  @inline(__always)
  func atDelimiter(_ i: Int, _ e: Int) -> Bool {
    let c = base[i]
    if delimiter.spaces { return c == 32 || c == 9 }
    if c != delimiter.byte { return false }
    if delimiter.doubled { return i + 1 < e && base[i + 1] == delimiter.byte }
    return true
  }

  func text(_ f: Field) -> String {
    var s = String(
      decoding: UnsafeBufferPointer(start: base + f.start, count: f.end - f.start), as: UTF8.self)
    if f.escaped { s = s.replacingOccurrences(of: "\"\"", with: "\"") }
    return s
  }

  /// A short quote of a field for messages.
  func quoted(_ f: Field) -> String {
    var t = text(f)
    if t.count > 40 { t = String(t.prefix(40)) + "…" }
    return "'\(t)'"
  }

  func detectDelimiter(_ s: Int, _ e: Int) -> Delimiter {
    var tabs = 0
    var commas = 0
    var semis = 0
    var pipes = 0
    var spaces = 0
    var doubleColons = 0
    var i = s
    var inQuotes = false
    while i < e {
      let c = base[i]
      if c == 34 { inQuotes.toggle() }
      if !inQuotes {
        switch c {
        case 9: tabs += 1
        case 44: commas += 1
        case 59: semis += 1
        case 124: pipes += 1
        case 32: spaces += 1
        case 58 where i + 1 < e && base[i + 1] == 58:
          doubleColons += 1
          i += 1
        default: break
        }
      }
      i += 1
    }
    if doubleColons > 0 { return Delimiter(byte: 58, doubled: true, spaces: false) }
    let best = [(9, tabs), (44, commas), (59, semis), (124, pipes)].max { $0.1 < $1.1 }!
    if best.1 > 0 { return Delimiter(byte: UInt8(best.0), doubled: false, spaces: false) }
    if spaces > 0 { return Delimiter(byte: 32, doubled: false, spaces: true) }
    return Delimiter(byte: 44, doubled: false, spaces: false)
  }

  static func normalize(_ name: String) -> String {
    String(name.lowercased().filter { $0 != "_" && $0 != "-" && $0 != " " })
  }

  static let userNames: Set<String> = [
    "userid", "user", "uid", "users", "customerid", "customer", "visitorid", "sessionid",
    "readerid",
  ]
  static let itemNames: Set<String> = [
    "itemid", "item", "movieid", "movie", "iid", "items", "productid", "product", "trackid",
    "artistid", "bookid", "isbn", "asin", "songid", "videoid", "contentid",
  ]
  static let ratingNames: Set<String> = [
    "rating", "ratings", "score", "value", "stars", "weight", "playcount", "plays", "count",
    "bookrating", "overall",
  ]
  static let timestampNames: Set<String> = [
    "timestamp", "time", "ts", "unixtime", "unixreviewtime", "datetime", "date", "t",
  ]

  func resolve(
    _ column: LoadOptions.Column?, role: String, header: [String]?, known: Set<String>,
    fallback: Int?, fieldCount: Int
  ) throws -> Int? {
    switch column {
    case .index(let i)?:
      if i < 0 { throw DataError(file: source, message: "\(role) column must be positive") }
      return i
    case .name(let name)?:
      guard let header else {
        throw DataError(
          file: source,
          message:
            "\(role) column '\(name)' is given by name, but the file has no header line; give its position (1 = first column) instead"
        )
      }
      let want = Parser.normalize(name)
      if let i = header.firstIndex(where: { $0 == name })
        ?? header.firstIndex(where: {
          Parser.normalize($0) == want
        })
      {
        return i
      }
      throw DataError(
        file: source, line: 1,
        message:
          "no column named '\(name)' for the \(role) (header has: \(header.joined(separator: ", ")))"
      )
    case nil:
      if let header {
        if let i = header.firstIndex(where: { known.contains(Parser.normalize($0)) }) { return i }
      }
      if let fallback, fallback < fieldCount { return fallback }
      return nil
    }
  }

  /// `ByteParsing.firstTextProblem` over the whole buffer, in pieces that end after a line
  /// feed (never inside a UTF-8 sequence, so the answer is the same), each released once scanned.
  func firstTextProblem() -> ByteParsing.TextProblem? {
    var a = 0
    while a < n {
      var b = n
      if n - a > Parser.releaseChunk,
        let hit = memchr(base + a + Parser.releaseChunk, 10, n - a - Parser.releaseChunk)
      {
        b = UnsafeRawPointer(hit).assumingMemoryBound(to: UInt8.self) - base + 1
      }
      switch ByteParsing.firstTextProblem(base + a, b - a) {
      case .nul(let offset)?: return .nul(offset: a + offset)
      case .invalidUTF8(let offset)?: return .invalidUTF8(offset: a + offset)
      case nil: break
      }
      releasePages?(a, b)
      a = b
    }
    return nil
  }

  mutating func run() throws -> Interactions {
    var pos = try checkText()
    // First non-blank line: delimiter and header.
    var lineNo = 1
    var firstStart = pos
    var firstEnd = pos
    while true {
      if pos >= n { throw DataError(file: source, message: "file has no data (only blank lines)") }
      let (e, next) = lineBounds(pos)
      if !isBlank(pos, e) {
        firstStart = pos
        firstEnd = e
        break
      }
      pos = next
      lineNo += 1
    }
    delimiter = try chooseDelimiter(firstStart, firstEnd)
    let hasHeader = try readLayout(firstStart, firstEnd, lineNo: lineNo)
    let slots = UnsafeMutablePointer<Field>.allocate(capacity: neededFields)
    fast = slots
    defer {
      slots.deallocate()
      fast = nil
    }
    if hasHeader {
      let (_, next) = lineBounds(firstStart)
      pos = next
      lineNo += 1
    } else {
      pos = firstStart
    }

    // Main loop.
    var rows = Rows(estimate: max(16, n / 24))
    let release = releasePages
    var released = 0
    while pos < n {
      let (e, next) = lineBounds(pos)
      defer {
        pos = next
        lineNo += 1
        if let release, pos - released >= Parser.releaseChunk {
          release(released, pos)
          released = pos
        }
      }
      if e == pos || isBlank(pos, e) { continue }
      do {
        try parseRow(pos, e, slots, into: &rows)
      } catch LineError.bad(let message) {
        if !options.skipBadLines {
          throw DataError(file: source, line: lineNo, message: message)
        }
        rows.skipped += 1
        if rows.skippedExamples.count < options.maxSkippedExamples {
          rows.skippedExamples.append(
            DataError(file: source, line: lineNo, message: message).description)
        }
      }
    }
    return try interactions(rows, hasHeader: hasHeader)
  }

  /// The columns being built, and what was skipped.
  struct Rows {
    var users = [Int32]()
    var items = [Int32]()
    var ratings = [Float]()
    var timestamps = [Int64]()
    var userInterner = IdInterner(capacity: 1024, cacheLast: true)
    var itemInterner = IdInterner(capacity: 4096)
    var skipped = 0
    var skippedExamples: [String] = []

    init(estimate: Int) {
      users.reserveCapacity(estimate)
      items.reserveCapacity(estimate)
      ratings.reserveCapacity(estimate)
      timestamps.reserveCapacity(estimate)
    }
  }

  /// Skips a byte-order mark and refuses a file with a NUL byte or invalid UTF-8, naming the
  /// line; returns where the text starts.
  private func checkText() throws -> Int {
    var pos = 0
    if n >= 3 && base[0] == 0xEF && base[1] == 0xBB && base[2] == 0xBF { pos = 3 }
    switch firstTextProblem() {
    case .nul(let offset)?:
      throw DataError(
        file: source, line: lineOf(offset),
        message: "contains a NUL byte; this looks like a binary file, not CSV/TSV ratings")
    case .invalidUTF8(let offset)?:
      throw DataError(
        file: source, line: lineOf(offset),
        message:
          "invalid UTF-8 (byte 0x\(String(base[offset], radix: 16)) at offset \(offset)); text files must be UTF-8"
      )
    case nil: break
    }
    return pos
  }

  /// The delimiter the options give, or the one the first line uses.
  private func chooseDelimiter(_ firstStart: Int, _ firstEnd: Int) throws -> Delimiter {
    guard let d = options.delimiter else { return detectDelimiter(firstStart, firstEnd) }
    switch d {
    case "\t", "\\t", "tab": return Delimiter(byte: 9, doubled: false, spaces: false)
    case " ", "space", "spaces", "whitespace":
      return Delimiter(byte: 32, doubled: false, spaces: true)
    case "::": return Delimiter(byte: 58, doubled: true, spaces: false)
    default:
      let u = Array(d.utf8)
      guard u.count == 1, u[0] != 34, u[0] != 10, u[0] != 13 else {
        throw DataError(
          file: source,
          message: "delimiter '\(d)' is not supported (use one character, 'tab' or '::')")
      }
      return Delimiter(byte: u[0], doubled: false, spaces: false)
    }
  }

  /// From the first line: whether it is a header, and which column holds the user, the item,
  /// the rating and the timestamp (`userCol`, ..., `neededFields`). Returns `hasHeader`.
  private mutating func readLayout(_ firstStart: Int, _ firstEnd: Int, lineNo: Int) throws -> Bool {
    let firstFieldCount: Int
    var firstFields: [Field]
    do {
      firstFieldCount = try split(firstStart, firstEnd, keepAll: true)
      firstFields = fields
    } catch LineError.bad(let message) {
      throw DataError(file: source, line: lineNo, message: message)
    }
    let firstTexts = firstFields.map { text($0) }

    var hasHeader: Bool
    if let h = options.hasHeader {
      hasHeader = h
    } else {
      let normalized = firstTexts.map(Parser.normalize)
      let allKnown = Parser.userNames.union(Parser.itemNames).union(Parser.ratingNames).union(
        Parser.timestampNames)
      let namesKnownColumn = normalized.contains { allKnown.contains($0) }
      var ratingNotNumber = false
      if firstFieldCount >= 3 {
        let f = firstFields[2]
        if case .notANumber = ByteParsing.parseDouble(base + f.start, f.end - f.start) {
          ratingNotNumber = true
        }
      }
      hasHeader = namesKnownColumn || ratingNotNumber
    }
    if firstFieldCount < 2 && options.userColumn == nil && options.itemColumn == nil {
      throw DataError(
        file: source, line: lineNo,
        message:
          "found 1 field; expected user, item[, rating[, timestamp]] separated by tabs, ',', ';', '|' or '::' (or give --delimiter)"
      )
    }
    try resolveColumns(header: hasHeader ? firstTexts : nil, fieldCount: firstFieldCount)
    return hasHeader
  }

  /// Sets the role columns from the options, the header's names or the positions, and refuses
  /// two roles in one column.
  private mutating func resolveColumns(header: [String]?, fieldCount: Int) throws {
    userCol = try resolve(
      options.userColumn, role: "user", header: header, known: Parser.userNames, fallback: 0,
      fieldCount: fieldCount)!
    itemCol = try resolve(
      options.itemColumn, role: "item", header: header, known: Parser.itemNames, fallback: 1,
      fieldCount: fieldCount)!
    ratingCol = try resolve(
      options.ratingColumn, role: "rating", header: header, known: Parser.ratingNames,
      fallback: header == nil ? 2 : nil, fieldCount: fieldCount)
    timestampCol = try resolve(
      options.timestampColumn, role: "timestamp", header: header, known: Parser.timestampNames,
      fallback: header == nil ? 3 : nil, fieldCount: fieldCount)
    if header != nil {
      // A header without recognisable rating/timestamp names: fall back to positions 3 and 4
      // unless those columns are already taken.
      let taken = Set([userCol, itemCol] + [ratingCol, timestampCol].compactMap { $0 })
      if ratingCol == nil && options.ratingColumn == nil && fieldCount > 2
        && !taken.contains(2)
      {
        ratingCol = 2
      }
      let taken2 = Set([userCol, itemCol] + [ratingCol, timestampCol].compactMap { $0 })
      if timestampCol == nil && options.timestampColumn == nil && fieldCount > 3
        && !taken2.contains(3)
      {
        timestampCol = 3
      }
    }
    let roles = [
      ("user", userCol), ("item", itemCol), ("rating", ratingCol), ("timestamp", timestampCol),
    ]
    .compactMap { r -> (String, Int)? in r.1.map { (r.0, $0) } }
    for a in 0..<roles.count {
      for b in (a + 1)..<roles.count where roles[a].1 == roles[b].1 {
        throw DataError(
          file: source,
          message: "the \(roles[a].0) and \(roles[b].0) columns are both column \(roles[a].1 + 1)")
      }
    }
    neededFields = roles.map { $0.1 }.max()! + 1
  }

  /// One data line [start, end) into `rows`; throws `LineError.bad` saying what is wrong.
  @inline(__always)
  private mutating func parseRow(
    _ start: Int, _ end: Int, _ slots: UnsafeMutablePointer<Field>, into rows: inout Rows
  ) throws {
    let count = try split(start, end, keepAll: false)
    if count < neededFields {
      throw LineError.bad(
        "expected at least \(neededFields) fields separated by \(delimiter.displayName), found \(count)"
      )
    }
    let uf = slots[userCol]
    let itf = slots[itemCol]
    if uf.end == uf.start { throw LineError.bad("user id is empty") }
    if itf.end == itf.start { throw LineError.bad("item id is empty") }
    // Lines end at LF, so the one line break an id can hold is a CR (a lone one, or one
    // inside quotes); ids are stored one a line, so it could never be read back.
    if memchr(base + uf.start, 13, uf.end - uf.start) != nil {
      throw LineError.bad(
        "user id contains a line break (carriage return); ids are stored one a line")
    }
    if memchr(base + itf.start, 13, itf.end - itf.start) != nil {
      throw LineError.bad(
        "item id contains a line break (carriage return); ids are stored one a line")
    }
    var rating: Float = 1
    if let rc = ratingCol {
      let f = slots[rc]
      switch ByteParsing.parseDouble(base + f.start, f.end - f.start) {
      case .notANumber:
        throw LineError.bad("rating \(quoted(f)) is not a number")
      case .value(let v):
        let x = Float(v)
        if !x.isFinite { throw LineError.bad("rating \(quoted(f)) is not finite") }
        rating = x
      }
    }
    var ts: Int64 = 0
    if let tc = timestampCol {
      let f = slots[tc]
      guard let t = ByteParsing.parseInt64(base + f.start, f.end - f.start) else {
        throw LineError.bad(
          "timestamp \(quoted(f)) is not an integer (seconds since 1970 expected)")
      }
      ts = t
    }
    let u = intern(&rows.userInterner, uf)
    let it = intern(&rows.itemInterner, itf)
    rows.users.append(u)
    rows.items.append(it)
    rows.ratings.append(rating)
    rows.timestamps.append(ts)
  }

  /// The columns as `Interactions` with their id tables; refuses a file without a valid row.
  private func interactions(_ rows: Rows, hasHeader: Bool) throws -> Interactions {
    if rows.users.isEmpty {
      if rows.skipped > 0 {
        throw DataError(
          file: source,
          message:
            "no valid rows: all \(rows.skipped) data lines were bad (first: \(rows.skippedExamples.first ?? "?"))"
        )
      }
      throw DataError(
        file: source, message: hasHeader ? "no data rows after the header" : "no data rows")
    }
    if rows.userInterner.count > Int(Int32.max) || rows.itemInterner.count > Int(Int32.max) {
      throw DataError(file: source, message: "too many distinct ids")
    }
    let userIds = rows.userInterner.strings()
    let itemIds = rows.itemInterner.strings()
    var userLookup = [String: Int32](minimumCapacity: userIds.count)
    for (i, s) in userIds.enumerated() { userLookup[s] = Int32(i) }
    var itemLookup = [String: Int32](minimumCapacity: itemIds.count)
    for (i, s) in itemIds.enumerated() { itemLookup[s] = Int32(i) }
    var result = Interactions(
      source: source, users: rows.users, items: rows.items, ratings: rows.ratings,
      timestamps: rows.timestamps, userIds: userIds, itemIds: itemIds, userLookup: userLookup,
      itemLookup: itemLookup)
    result.skippedLines = rows.skipped
    result.skippedExamples = rows.skippedExamples
    return result
  }

  @inline(__always)
  mutating func intern(_ interner: inout IdInterner, _ f: Field) -> Int32 {
    if !f.escaped { return interner.intern(base + f.start, f.end - f.start) }
    scratch.removeAll(keepingCapacity: true)
    var i = f.start
    while i < f.end {
      scratch.append(base[i])
      i += (base[i] == 34 && i + 1 < f.end && base[i + 1] == 34) ? 2 : 1
    }
    return scratch.withUnsafeBufferPointer { interner.intern($0.baseAddress!, $0.count) }
  }
}
