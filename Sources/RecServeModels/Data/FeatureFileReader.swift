import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The cells of a feature file, before any typing: the header, and per data row its id, its
/// line and its values.
struct FeatureFileRows {
  /// The file's name in messages.
  var source: String
  /// Every header name, the id column's first.
  var header: [String]
  /// The header's 1-based line (after leading blank lines).
  var headerLine: Int
  var ids: [String]
  /// The 1-based line of each row.
  var lines: [Int]
  /// values[c][r]: the value of feature column c (header[c + 1]) in row r; "" when empty.
  var values: [[String]]
}

/// Reads the cells of a feature file: CSV with RFC 4180 quoting (a quoted field cannot span
/// lines), or tab-separated when the header has tabs and no commas; an optional UTF-8 byte-order
/// mark; LF or CRLF line ends; blank lines skipped. Unquoted values are trimmed of spaces (and
/// tabs in CSV), as the ratings loader trims its ids. Errors are `DataError`s naming the file and
/// the line.
struct FeatureFileReader {
  private let base: UnsafePointer<UInt8>
  private let n: Int
  private let source: String
  /// ',' or tab.
  private var delimiter: UInt8 = 44
  /// The header's names, once read (for messages).
  private var names: [String] = []

  static func read(path: String) throws -> FeatureFileRows {
    let file: MappedFile
    do {
      file = try MappedFile(path: path)
    } catch let e as FileError {
      throw DataError(file: path, message: "cannot read: \(e.reason)")
    }
    return try read(bytes: file.bytes, source: path)
  }

  static func read(bytes: UnsafeRawBufferPointer, source: String) throws -> FeatureFileRows {
    guard let start = bytes.baseAddress, bytes.count > 0 else {
      throw DataError(file: source, message: "file is empty")
    }
    var reader = FeatureFileReader(
      base: start.assumingMemoryBound(to: UInt8.self), n: bytes.count, source: source)
    return try reader.run()
  }

  private init(base: UnsafePointer<UInt8>, n: Int, source: String) {
    self.base = base
    self.n = n
    self.source = source
  }

  private func error(_ line: Int?, _ message: String) -> DataError {
    DataError(file: source, line: line, message: message)
  }

  private mutating func run() throws -> FeatureFileRows {
    var pos = try checkText()
    var lineNo = 1
    while true {
      if pos >= n {
        throw error(nil, "no header: the file has only blank lines")
      }
      let (end, next) = lineBounds(pos)
      if !isBlank(pos, end) { break }
      pos = next
      lineNo += 1
    }
    let (headerEnd, afterHeader) = lineBounds(pos)
    try checkLength(pos, headerEnd, lineNo)
    delimiter = detectDelimiter(pos, headerEnd)
    let header = try fields(pos, headerEnd, lineNo)
    try checkHeader(header, lineNo)
    names = header
    var rows = FeatureFileRows(
      source: source, header: header, headerLine: lineNo, ids: [], lines: [],
      values: Array(repeating: [], count: header.count - 1))
    try readRows(from: afterHeader, firstLine: lineNo + 1, into: &rows)
    if rows.ids.isEmpty {
      throw error(lineNo, "no data rows after the header")
    }
    return rows
  }

  /// Every data line into `rows`: the right number of fields, a non-empty id seen once.
  private func readRows(from start: Int, firstLine: Int, into rows: inout FeatureFileRows) throws {
    var pos = start
    var lineNo = firstLine
    var firstLineOf: [String: Int] = [:]
    let header = rows.header
    while pos < n {
      let (end, next) = lineBounds(pos)
      defer {
        pos = next
        lineNo += 1
      }
      if isBlank(pos, end) { continue }
      try checkLength(pos, end, lineNo)
      let cells = try fields(pos, end, lineNo)
      if cells.count != header.count {
        throw error(lineNo, fieldCountMessage(found: cells.count, header: header))
      }
      let id = cells[0]
      if id.isEmpty { throw error(lineNo, "empty id (column '\(header[0])')") }
      if id.utf8.contains(13) {
        throw error(lineNo, "id contains a line break (carriage return); ids are stored one a line")
      }
      if let first = firstLineOf.updateValue(lineNo, forKey: id) {
        throw error(lineNo, "duplicate id '\(Self.short(id))': already on line \(first)")
      }
      rows.ids.append(id)
      rows.lines.append(lineNo)
      for c in 1..<cells.count { rows.values[c - 1].append(cells[c]) }
    }
  }

  private func fieldCountMessage(found: Int, header: [String]) -> String {
    let separator = delimiter == 9 ? "tabs" : "','"
    var message =
      "expected \(header.count) fields (\(header.joined(separator: ", "))) separated by \(separator), found \(found)"
    if found > header.count && delimiter == 44 {
      message += "; a value that contains ',' must be quoted (\"American President, The (1995)\")"
    }
    return message
  }

  /// The header names: an id column with a name, named feature columns, no name twice.
  private func checkHeader(_ header: [String], _ lineNo: Int) throws {
    if header[0].isEmpty {
      throw error(lineNo, "the header's first column (the id column) has no name")
    }
    if case .value = ByteParsing.parseDouble(header[0]) {
      throw error(
        lineNo,
        "no header: the first line starts with '\(Self.short(header[0]))', a number; a feature file starts with a header naming its columns, the id first (e.g. movieId,title,genres)"
      )
    }
    if header.count == 1 {
      throw error(
        lineNo,
        "only an id column ('\(header[0])'): no features; a feature file needs at least one feature column after the id"
      )
    }
    var seen: [String: Int] = [:]
    for (i, name) in header.enumerated() {
      if name.isEmpty { throw error(lineNo, "column \(i + 1) has no name in the header") }
      if name.utf8.contains(13) {
        throw error(lineNo, "column \(i + 1)'s name contains a line break (carriage return)")
      }
      if let first = seen.updateValue(i, forKey: name) {
        throw error(
          lineNo, "column name '\(name)' appears twice (columns \(first + 1) and \(i + 1))")
      }
    }
  }

  private func checkLength(_ start: Int, _ end: Int, _ lineNo: Int) throws {
    if end - start > FeatureTable.maxLineBytes {
      throw error(
        lineNo,
        "line of \(end - start) bytes is longer than the \(FeatureTable.maxLineBytes) allowed")
    }
  }

  /// Skips a byte-order mark and refuses NUL bytes and invalid UTF-8; returns where text starts.
  private func checkText() throws -> Int {
    switch ByteParsing.firstTextProblem(base, n) {
    case .nul(let offset)?:
      throw error(
        ByteParsing.lineNumber(base, offset: offset),
        "contains a NUL byte; this looks like a binary file, not CSV")
    case .invalidUTF8(let offset)?:
      throw error(
        ByteParsing.lineNumber(base, offset: offset),
        "invalid UTF-8 (byte 0x\(String(base[offset], radix: 16)) at offset \(offset)); text files must be UTF-8"
      )
    case nil: break
    }
    if n >= 3 && base[0] == 0xEF && base[1] == 0xBB && base[2] == 0xBF { return 3 }
    return 0
  }

  /// End of the line starting at `start` (without "\r\n") and the start of the next one.
  private func lineBounds(_ start: Int) -> (end: Int, next: Int) {
    var end = n
    if let hit = memchr(base + start, 10, n - start) {
      end = UnsafeRawPointer(hit).assumingMemoryBound(to: UInt8.self) - base
    }
    let next = end < n ? end + 1 : n
    if end > start && base[end - 1] == 13 { end -= 1 }
    return (end, next)
  }

  private func isBlank(_ s: Int, _ e: Int) -> Bool {
    var i = s
    while i < e {
      let c = base[i]
      if c != 32 && c != 9 && c != 13 { return false }
      i += 1
    }
    return true
  }

  /// Tab when the header has tabs and no commas (outside quotes), else ','.
  private func detectDelimiter(_ s: Int, _ e: Int) -> UInt8 {
    var tabs = 0
    var commas = 0
    var inQuotes = false
    for i in s..<e {
      switch base[i] {
      case 34: inQuotes.toggle()
      case 9 where !inQuotes: tabs += 1
      case 44 where !inQuotes: commas += 1
      default: break
      }
    }
    return tabs > 0 && commas == 0 ? 9 : 44
  }

  private func isTrimmed(_ c: UInt8) -> Bool { c == 32 || (c == 9 && delimiter != 9) }

  /// The fields of base[s..<e], unquoted and trimmed.
  private func fields(_ s: Int, _ e: Int, _ lineNo: Int) throws -> [String] {
    var out: [String] = []
    var i = s
    while true {
      while i < e && isTrimmed(base[i]) { i += 1 }
      if i < e && base[i] == 34 {
        let (value, after) = try quoted(from: i, e, field: out.count + 1, lineNo)
        out.append(value)
        i = after
        while i < e && isTrimmed(base[i]) { i += 1 }
        if i < e && base[i] != delimiter {
          throw error(
            lineNo,
            "unexpected text after the closing quote of \(fieldName(out.count)) (a quote inside a quoted value is written twice: \"\")"
          )
        }
      } else {
        let fs = i
        while i < e && base[i] != delimiter { i += 1 }
        var fe = i
        while fe > fs && isTrimmed(base[fe - 1]) { fe -= 1 }
        out.append(text(fs, fe))
      }
      if i >= e { break }
      i += 1  // the delimiter
      if i == e {
        out.append("")
        break
      }
    }
    return out
  }

  /// The quoted field opening at `open`: its value ("" unescaped) and the offset after it.
  private func quoted(from open: Int, _ e: Int, field: Int, _ lineNo: Int) throws -> (
    String, Int
  ) {
    var i = open + 1
    var escaped = false
    while i < e {
      if base[i] == 34 {
        if i + 1 < e && base[i + 1] == 34 {
          escaped = true
          i += 2
          continue
        }
        var value = text(open + 1, i)
        if escaped { value = value.replacingOccurrences(of: "\"\"", with: "\"") }
        return (value, i + 1)
      }
      i += 1
    }
    throw error(
      lineNo,
      "unterminated quoted field (a quote \" opened in \(fieldName(field)) is not closed on this line; quoted values cannot span lines)"
    )
  }

  /// "field 2 ('title')", for messages; 1-based.
  private func fieldName(_ k: Int) -> String {
    k <= names.count ? "field \(k) ('\(names[k - 1])')" : "field \(k)"
  }

  private func text(_ s: Int, _ e: Int) -> String {
    String(decoding: UnsafeBufferPointer(start: base + s, count: e - s), as: UTF8.self)
  }

  /// A value shortened for messages.
  static func short(_ s: String) -> String {
    s.count > 40 ? String(s.prefix(40)) + "…" : s
  }
}
