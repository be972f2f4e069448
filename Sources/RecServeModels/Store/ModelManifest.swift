import Foundation

/// Why a model version cannot be loaded, in one line a person can act on, e.g.
/// "weights.safetensors: checksum mismatch (expected ab12…, got cd34…)".
public struct ModelLoadError: Error, CustomStringConvertible, Sendable, Equatable {
  public let reason: String
  /// The errno of an I/O error that kept the version from being read (not ENOENT or ENOTDIR):
  /// the version may be fine, and reading it again later may work. Nil when the version itself
  /// is at fault (missing files, checksums, shapes, values) or is not there.
  public let ioError: Int32?
  public init(_ reason: String, ioError: Int32? = nil) {
    self.reason = reason
    self.ioError = ioError
  }
  public var description: String { reason }
}

/// The contents of `model.json`.
public struct ModelManifest: Sendable, Equatable {
  public static let formatName = "recserve-model"
  public static let formatVersion: Int64 = 1
  /// Kinds this build can load.
  public static let loadableKinds: Set<String> = ["mf", "bpr", "als", "sasrec", "hybrid"]
  /// Kinds the format knows about.
  public static let knownKinds: Set<String> = ["mf", "bpr", "als", "sasrec", "hybrid"]

  public var kind: String
  public var name: String
  /// ISO-8601 UTC, e.g. "2026-11-29T22:11:05Z".
  public var createdAt: String
  public var hyperparameters: [String: JSONValue]
  /// users, items, dim, train_interactions.
  public var counts: [String: JSONValue]
  public var trainingData: [String: JSONValue]
  public var metrics: [String: Double]
  /// SHA-256 (lowercase hex) of every other file in the version folder.
  public var files: [String: String]
  public var trainSeconds: Double?
  /// Range predictions are clipped to (the training ratings' range).
  public var ratingRange: ClosedRange<Float>?

  public init(
    kind: String, name: String, createdAt: String = ModelManifest.now(),
    hyperparameters: [String: JSONValue] = [:], counts: [String: JSONValue] = [:],
    trainingData: [String: JSONValue] = [:], metrics: [String: Double] = [:],
    files: [String: String] = [:], trainSeconds: Double? = nil,
    ratingRange: ClosedRange<Float>? = nil
  ) {
    self.kind = kind
    self.name = name
    self.createdAt = createdAt
    self.hyperparameters = hyperparameters
    self.counts = counts
    self.trainingData = trainingData
    self.metrics = metrics
    self.files = files
    self.trainSeconds = trainSeconds
    self.ratingRange = ratingRange
  }

  public static func now() -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    f.timeZone = TimeZone(identifier: "UTC")
    return f.string(from: Date())
  }

  public var json: JSONValue {
    var o: [String: JSONValue] = [
      "format": .string(ModelManifest.formatName),
      "format_version": .int(ModelManifest.formatVersion),
      "kind": .string(kind),
      "name": .string(name),
      "created_at": .string(createdAt),
      "hyperparameters": .object(hyperparameters),
      "counts": .object(counts),
      "training_data": .object(trainingData),
      "metrics": .object(metrics.mapValues { .double($0) }),
      "files": .object(files.mapValues { .string($0) }),
    ]
    if let trainSeconds { o["train_seconds"] = .double(trainSeconds) }
    if let r = ratingRange {
      o["rating_range"] = .array([.double(Double(r.lowerBound)), .double(Double(r.upperBound))])
    }
    return .object(o)
  }

  /// Parses and validates model.json's text; errors start with "model.json: ".
  public init(parsing bytes: UnsafeRawBufferPointer) throws {
    let root: JSONValue
    do {
      root = try JSONValue.parse(bytes)
    } catch {
      throw ModelLoadError("model.json: not valid JSON (\(error))")
    }
    guard case .object(let o) = root else {
      throw ModelLoadError("model.json: not a JSON object")
    }
    guard let format = o["format"]?.stringValue else {
      throw ModelLoadError(
        "model.json: no \"format\" field (expected \"\(ModelManifest.formatName)\")")
    }
    guard format == ModelManifest.formatName else {
      throw ModelLoadError(
        "model.json: format is '\(format)', expected '\(ModelManifest.formatName)'")
    }
    guard let version = o["format_version"]?.intValue else {
      throw ModelLoadError("model.json: no integer \"format_version\"")
    }
    guard version == ModelManifest.formatVersion else {
      throw ModelLoadError(
        "model.json: format_version \(version) is not supported (this build reads version \(ModelManifest.formatVersion))"
      )
    }
    guard let kind = o["kind"]?.stringValue else {
      throw ModelLoadError("model.json: no \"kind\" field")
    }
    guard let files = o["files"]?.objectValue else {
      throw ModelLoadError("model.json: no \"files\" object with checksums")
    }
    var checksums: [String: String] = [:]
    // In name order, so that several bad entries always give the same message.
    for (file, v) in files.sorted(by: { $0.key < $1.key }) {
      guard let sum = v.stringValue, sum.count == 64,
        sum.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) })
      else {
        throw ModelLoadError(
          "model.json: checksum of '\(file)' is not a lowercase SHA-256 hex string")
      }
      if file.isEmpty || file.contains("/") || file.hasPrefix(".") || file == "model.json" {
        throw ModelLoadError("model.json: 'files' lists an invalid file name '\(file)'")
      }
      checksums[file] = sum
    }
    var metrics: [String: Double] = [:]
    for (k, v) in o["metrics"]?.objectValue ?? [:] {
      if let d = v.doubleValue { metrics[k] = d }
    }
    var range: ClosedRange<Float>? = nil
    if let r = o["rating_range"]?.arrayValue, r.count == 2, let lo = r[0].doubleValue,
      let hi = r[1].doubleValue, lo.isFinite, hi.isFinite, lo <= hi
    {
      range = Float(lo)...Float(hi)
    }
    self.init(
      kind: kind, name: o["name"]?.stringValue ?? "",
      createdAt: o["created_at"]?.stringValue ?? "",
      hyperparameters: o["hyperparameters"]?.objectValue ?? [:],
      counts: o["counts"]?.objectValue ?? [:],
      trainingData: o["training_data"]?.objectValue ?? [:], metrics: metrics, files: checksums,
      trainSeconds: o["train_seconds"]?.doubleValue, ratingRange: range)
  }
}
