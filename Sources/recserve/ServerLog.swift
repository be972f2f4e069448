import ArgumentParser
import Foundation
import Logging
import Synchronization

/// The server's log: one line per event on standard error, through swift-log, as text for a
/// person (`2026-12-02T21:50:33.123Z info  version 2 of 'm' loaded and verified model=m`) or as
/// one JSON object per line for a log pipeline (`{"ts":...,"level":"info","msg":...,...}`).
/// Secrets never reach it: the admin token is not logged, and Train's data paths are not either.
enum ServerLog {
  enum Format: String, ExpressibleByArgument, CaseIterable, Sendable {
    case text, json
  }

  private static let logger = Mutex<Logger>(make(format: .text, level: .info))

  private static func make(format: Format, level: Logger.Level) -> Logger {
    var logger = Logger(label: "recserve") { _ in LineLogHandler(format: format) }
    logger.logLevel = level
    return logger
  }

  /// Sets the format and the least severe level written (before the first event).
  static func configure(format: Format, level: Logger.Level) {
    logger.withLock { $0 = make(format: format, level: level) }
  }

  static var current: Logger { logger.withLock { $0 } }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Writes an event: a message starting `warning: ` or `error: ` is logged at that level (the
/// prefix dropped), any other at info.
func log(_ message: String, level given: Logger.Level? = nil, metadata: Logger.Metadata = [:]) {
  var level = given ?? Logger.Level.info
  var text = message
  for (prefix, prefixLevel) in [("warning: ", Logger.Level.warning), ("error: ", .error)]
  where text.hasPrefix(prefix) {
    level = given ?? prefixLevel
    text.removeFirst(prefix.count)
  }
  ServerLog.current.log(level: level, "\(text)", metadata: metadata)
}

/// One line per event on standard error; lines from several threads never interleave.
struct LineLogHandler: LogHandler {
  let format: ServerLog.Format
  var logLevel: Logger.Level = .info
  var metadata: Logger.Metadata = [:]
  private static let output = Mutex<Void>(())

  init(format: ServerLog.Format) { self.format = format }

  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  func log(event: LogEvent) {
    let level = event.level
    let message = event.message
    let merged = metadata.merging(event.metadata ?? [:]) { $1 }
    let time = Self.timestamp()
    let text: String
    switch format {
    case .text:
      var parts =
        "\(time) \(level.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0)) \(message)"
      for key in merged.keys.sorted() { parts += " \(key)=\(merged[key]!)" }
      text = parts
    case .json:
      var object: [String: Any] = ["ts": time, "level": level.rawValue, "msg": "\(message)"]
      for (key, value) in merged where object[key] == nil { object[key] = Self.json(value) }
      let data =
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
      text = String(decoding: data, as: UTF8.self)
    }
    let bytes = Data((text + "\n").utf8)
    Self.output.withLock { _ in FileHandle.standardError.write(bytes) }
  }

  static func json(_ value: Logger.Metadata.Value) -> Any {
    switch value {
    case .string(let s):
      if let integer = Int(s) { return integer }
      if let number = Double(s), number.isFinite, s.contains(".") { return number }
      return s
    case .stringConvertible(let c): return "\(c)"
    case .array(let a): return a.map(json)
    case .dictionary(let d): return d.mapValues(json)
    }
  }

  static func timestamp() -> String {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    var seconds = time_t(now.tv_sec)
    var parts = tm()
    gmtime_r(&seconds, &parts)
    return String(
      format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900,
      Int(parts.tm_mon) + 1,
      Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec),
      Int(now.tv_nsec) / 1_000_000)
  }
}
