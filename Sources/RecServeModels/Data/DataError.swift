/// A problem with interaction data, naming where it is: `ratings.csv:17: rating 'abc' is not a
/// number`. `line` is 1-based (the header, when present, is line 1); for in-memory rows it is the
/// 1-based row number and `file` is the source's name (e.g. "inline interactions").
public struct DataError: Error, CustomStringConvertible, Sendable, Equatable {
  public let file: String
  public let line: Int?
  public let message: String
  /// "row" for in-memory rows, "" for files (the description then reads `file:line:`).
  public let unit: String

  public init(file: String, line: Int? = nil, message: String, unit: String = "") {
    self.file = file
    self.line = line
    self.message = message
    self.unit = unit
  }

  public var description: String {
    guard let line else { return "\(file): \(message)" }
    if unit.isEmpty { return "\(file):\(line): \(message)" }
    return "\(file): \(unit) \(line): \(message)"
  }
}
