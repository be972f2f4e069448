import Foundation
import RecServeModels

#if canImport(Glibc)
  import Glibc
#endif

/// The labels of one model and its canary split.
public struct ModelLabels: Sendable, Equatable {
  /// Label → version (`stable`, `canary`, any name).
  public var labels: [String: Int64] = [:]
  /// Fraction (0...1) of users, by a hash of the user id, served by the `canary` label.
  public var canaryFraction: Float = 0

  public init(labels: [String: Int64] = [:], canaryFraction: Float = 0) {
    self.labels = labels
    self.canaryFraction = canaryFraction
  }
}

/// Labels live in `<model folder>/labels.json`, written atomically (temporary file, fsync,
/// rename, fsync of the folder), so a restart keeps them and no reader sees half a file.
public enum LabelStore {
  public static let fileName = "labels.json"
  public static let canaryLabel = "canary"
  public static let stableLabel = "stable"

  /// Label names: 1-64 characters of A-Z a-z 0-9 . _ -.
  public static func isValidLabel(_ label: String) -> Bool {
    guard (1...64).contains(label.utf8.count) else { return false }
    return label.utf8.allSatisfy { byte in
      (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122)
        || byte == 46 || byte == 95 || byte == 45
    }
  }

  public static func path(modelDirectory: String) -> String {
    (modelDirectory as NSString).appendingPathComponent(fileName)
  }

  /// The labels in `<modelDirectory>/labels.json`: none when the file (or the folder) is not
  /// there. Throws `LabelReadError.unreadable` when it cannot be read (any error but ENOENT and
  /// ENOTDIR: ELOOP, EISDIR, EACCES, EIO, ...) and `.malformed` when it is not a labels object:
  /// neither means "no labels".
  public static func load(modelDirectory: String) throws(LabelReadError) -> ModelLabels {
    let path = path(modelDirectory: modelDirectory)
    let data: Data
    do {
      data = try readFile(path)
    } catch let error where error.isAbsence {
      return ModelLabels()
    } catch {
      throw .unreadable(error)
    }
    return try parse(data, path: path)
  }

  /// The labels in a labels.json's bytes.
  static func parse(_ data: Data, path: String) throws(LabelReadError) -> ModelLabels {
    func malformed(_ why: String) -> LabelReadError { .malformed(path: path, reason: why) }
    let parsed: Any
    do {
      parsed = try JSONSerialization.jsonObject(with: data)
    } catch {
      throw malformed("not valid JSON")
    }
    guard let object = parsed as? [String: Any] else { throw malformed("not a JSON object") }
    var result = ModelLabels()
    if let value = object["labels"] {
      guard let labels = value as? [String: Any] else {
        throw malformed("'labels' is not an object")
      }
      for (key, value) in labels {
        guard isValidLabel(key) else { throw malformed("'\(key)' is not a valid label name") }
        guard let number = value as? NSNumber, number.int64Value > 0,
          number.doubleValue == Double(number.int64Value)
        else {
          throw malformed("label '\(key)' is not a positive version number")
        }
        result.labels[key] = number.int64Value
      }
    }
    if let value = object["canary_fraction"] {
      guard let fraction = value as? NSNumber, fraction.floatValue.isFinite else {
        throw malformed("'canary_fraction' is not a number")
      }
      result.canaryFraction = min(1, max(0, fraction.floatValue))
    }
    return result
  }

  /// A whole file, read with open/read so that every failure keeps its errno.
  static func readFile(_ path: String) throws(FileError) -> Data {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw FileError(path: path, code: errno, operation: "open") }
    defer { close(fd) }
    var st = stat()
    if fstat(fd, &st) != 0 { throw FileError(path: path, code: errno, operation: "read") }
    if (st.st_mode & S_IFMT) == S_IFDIR {
      throw FileError(path: path, code: EISDIR, operation: "read")
    }
    var data = Data()
    var buffer = [UInt8](repeating: 0, count: 64 << 10)
    while true {
      let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
      if n < 0 {
        if errno == EINTR { continue }
        throw FileError(path: path, code: errno, operation: "read")
      }
      if n == 0 { break }
      data.append(contentsOf: buffer[0..<n])
    }
    return data
  }

  /// The lock file beside labels.json that serialises changes to it. It stays (removing a lock
  /// file races with a writer that just opened it); a model folder ignores names that are not
  /// versions.
  public static let lockFileName = "labels.lock"

  /// Reads labels.json, applies `change` and writes the result, all under an exclusive lock
  /// (`flock`) on `<model folder>/labels.lock`, so that servers sharing one model folder never
  /// lose each other's changes (each change applies to the labels as the last writer left
  /// them). Waits at most `waitSeconds` for the lock. Returns the labels written. Throws
  /// `LabelReadError` when labels.json cannot be read or is malformed, `LabelStoreError` when
  /// the lock or the write fails, and whatever `change` throws (nothing is written then).
  public static func update(
    modelDirectory: String, waitSeconds: Double = 10, _ change: (inout ModelLabels) throws -> Void
  ) throws -> ModelLabels {
    let lockPath = (modelDirectory as NSString).appendingPathComponent(lockFileName)
    let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
      throw LabelStoreError("cannot open \(lockPath): \(String(cString: strerror(errno)))")
    }
    // Closing the descriptor releases the lock, also when this process dies holding it.
    defer { close(fd) }
    let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(max(0, waitSeconds) * 1e9)
    while flock(fd, LOCK_EX | LOCK_NB) != 0 {
      let code = errno
      guard code == EWOULDBLOCK || code == EINTR else {
        throw LabelStoreError("cannot lock \(lockPath): \(String(cString: strerror(code)))")
      }
      guard DispatchTime.now().uptimeNanoseconds < deadline else {
        throw LabelStoreError(
          "another writer has held \(lockPath) for over \(waitSeconds) s")
      }
      usleep(1000)
    }
    var labels = try load(modelDirectory: modelDirectory)
    try change(&labels)
    try write(labels, modelDirectory: modelDirectory)
    return labels
  }

  /// Writes the labels atomically. Changes go through `update`, which holds the lock.
  public static func write(_ labels: ModelLabels, modelDirectory: String) throws {
    var object: [String: Any] = [
      "labels": labels.labels.mapValues { NSNumber(value: $0) },
      "canary_fraction": NSNumber(value: Double(labels.canaryFraction)),
    ]
    object["updated_at"] = ISO8601DateFormatter().string(from: Date())
    let data = try JSONSerialization.data(
      withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    let path = (modelDirectory as NSString).appendingPathComponent(fileName)
    let temporary = (modelDirectory as NSString).appendingPathComponent(
      ".\(fileName).\(getpid()).tmp")
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else {
      throw LabelStoreError("cannot write \(temporary): \(String(cString: strerror(errno)))")
    }
    let written = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    let synced = fsync(fd)
    close(fd)
    guard written == data.count, synced == 0 else {
      unlink(temporary)
      throw LabelStoreError("cannot write \(temporary): \(String(cString: strerror(errno)))")
    }
    guard rename(temporary, path) == 0 else {
      unlink(temporary)
      throw LabelStoreError("cannot replace \(path): \(String(cString: strerror(errno)))")
    }
    let directory = open(modelDirectory, O_RDONLY)
    if directory >= 0 {
      fsync(directory)
      close(directory)
    }
  }
}

/// Why labels.json could not be used. Neither case means "no labels": the registry keeps the
/// last labels it read and never writes over the file.
public enum LabelReadError: Error, CustomStringConvertible, Equatable {
  /// The file is there (or may be) but reading it failed: ELOOP, EISDIR, EACCES, EIO, EMFILE...
  case unreadable(FileError)
  /// The file was read but is not a labels object.
  case malformed(path: String, reason: String)

  public var description: String {
    switch self {
    case .unreadable(let error): return "cannot read \(error.path): \(error.reason)"
    case .malformed(let path, let reason): return "\(path) is malformed: \(reason)"
    }
  }
}

public struct LabelStoreError: Error, CustomStringConvertible {
  public let description: String
  init(_ description: String) { self.description = description }
}
