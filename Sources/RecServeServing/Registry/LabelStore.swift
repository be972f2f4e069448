import Foundation

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

  /// The labels in `<modelDirectory>/labels.json`: none when the file is missing. A file that
  /// cannot be parsed yields an error message and no labels.
  public static func read(modelDirectory: String) -> (ModelLabels, error: String?) {
    let path = (modelDirectory as NSString).appendingPathComponent(fileName)
    guard let data = FileManager.default.contents(atPath: path) else { return (ModelLabels(), nil) }
    guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
      return (ModelLabels(), "\(path): not a JSON object; labels ignored")
    }
    var result = ModelLabels()
    let labels = (object["labels"] as? [String: Any]) ?? [:]
    for (key, value) in labels where isValidLabel(key) {
      if let number = value as? NSNumber, number.int64Value > 0 {
        result.labels[key] = number.int64Value
      }
    }
    if let fraction = object["canary_fraction"] as? NSNumber {
      let value = fraction.floatValue
      if value.isFinite { result.canaryFraction = min(1, max(0, value)) }
    }
    return (result, nil)
  }

  /// Writes the labels atomically.
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

public struct LabelStoreError: Error, CustomStringConvertible {
  public let description: String
  init(_ description: String) { self.description = description }
}
