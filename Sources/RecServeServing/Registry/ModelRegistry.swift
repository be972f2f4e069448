import Atomics
import Foundation
import RecServeModels
import RecServeRPC
import Synchronization

/// What is known about one version on disk.
public struct VersionRecord: Sendable {
  public enum State: Sendable {
    case loading, available, failed, unloaded
  }
  public var version: Int64
  public var state: State
  /// Why the version failed, in words.
  public var reason: String
  public var served: ServedVersion?
}

/// One model: its versions and which one serves.
public final class ModelEntry: @unchecked Sendable {
  public let name: String
  public let versions: [Int64: VersionRecord]
  public let labels: [String: Int64]
  /// What a request naming neither version nor label gets.
  public let serving: ServedVersion?

  init(name: String, versions: [Int64: VersionRecord], labels: [String: Int64]) {
    self.name = name
    self.versions = versions
    self.labels = labels
    if let stable = labels["stable"], let served = versions[stable]?.served {
      serving = served
    } else {
      serving = versions.keys.sorted(by: >).lazy.compactMap { versions[$0]?.served }.first
    }
  }
}

/// An immutable picture of every model; requests read the current one without a lock.
public final class RegistrySnapshot: AtomicReference, @unchecked Sendable {
  public let models: [String: ModelEntry]
  init(models: [String: ModelEntry]) { self.models = models }
}

/// The versioned model registry over `DIR/<name>/<version>/`.
///
/// Readers take the current snapshot with one atomic load; writers build a new snapshot off the
/// request path and publish it with one atomic store. A version that fails verification is
/// recorded FAILED with its reason and never replaces one that serves.
public final class ModelRegistry: @unchecked Sendable {
  public let directory: String
  private let current: ManagedAtomic<RegistrySnapshot>
  private let writer = Mutex<Void>(())

  public init(directory: String) {
    self.directory = directory
    self.current = ManagedAtomic(RegistrySnapshot(models: [:]))
  }

  /// The current snapshot.
  public var snapshot: RegistrySnapshot { current.load(ordering: .acquiring) }

  /// Scans the folder and loads the highest verifiable version of every model (plus labelled
  /// ones). Returns one line per version that failed.
  @discardableResult
  public func loadAll() -> [String] {
    writer.withLock { _ in
      var failures: [String] = []
      var models: [String: ModelEntry] = [:]
      let names = (try? ModelStore.modelNames(directory)) ?? []
      let previous = current.load(ordering: .acquiring)
      for name in names {
        let versions = (try? ModelStore.versions(directory, name: name)) ?? []
        if versions.isEmpty { continue }
        let labels = LabelStore.read(
          modelDirectory: ModelStore.modelDirectory(directory, name: name))
        var records: [Int64: VersionRecord] = [:]
        var wanted = Set(labels.values)
        var loadedNewest = false
        for version in versions.sorted(by: >) {
          if let known = previous.models[name]?.versions[version], known.state == .available {
            records[version] = known
            if !loadedNewest { loadedNewest = true }
            continue
          }
          if loadedNewest && !wanted.contains(version) {
            records[version] = VersionRecord(
              version: version, state: .unloaded, reason: "", served: nil)
            continue
          }
          let path = ModelStore.versionDirectory(directory, name: name, version: version)
          do {
            let loaded = try ModelStore.load(versionDirectory: path)
            records[version] = VersionRecord(
              version: version, state: .available, reason: "",
              served: ServedVersion(name: name, version: version, loaded: loaded))
            loadedNewest = true
          } catch {
            let reason = "\(error)"
            records[version] = VersionRecord(
              version: version, state: .failed, reason: reason, served: nil)
            failures.append("\(name) version \(version): \(reason)")
          }
          wanted.remove(version)
        }
        models[name] = ModelEntry(name: name, versions: records, labels: labels)
      }
      current.store(RegistrySnapshot(models: models), ordering: .releasing)
      return failures
    }
  }

  /// The version a request names: its version, its label, or (neither) the serving one.
  @inline(__always)
  public func resolve(name: String, version: Int64?, label: String?) throws -> ServedVersion {
    if name.isEmpty {
      throw RPCError.invalidArgument("model.name is empty: name the model to use")
    }
    let snapshot = current.load(ordering: .acquiring)
    guard let entry = snapshot.models[name] else {
      let known = snapshot.models.keys.sorted()
      throw RPCError.notFound(
        "model '\(name)' not found"
          + (known.isEmpty
            ? " (no models are served)" : " (served models: \(known.joined(separator: ", ")))"))
    }
    if let version {
      guard version > 0 else {
        throw RPCError.invalidArgument("model.version must be a positive integer, got \(version)")
      }
      guard let record = entry.versions[version] else {
        throw RPCError.notFound(
          "model '\(name)' has no version \(version) (versions: \(Self.describe(entry)))")
      }
      guard let served = record.served else {
        let why =
          record.state == .failed ? "it failed verification: \(record.reason)" : "it is not loaded"
        throw RPCError.notFound("model '\(name)' version \(version) cannot serve: \(why)")
      }
      return served
    }
    if let label, !label.isEmpty {
      guard let target = entry.labels[label] else {
        let labels = entry.labels.keys.sorted()
        throw RPCError.notFound(
          "model '\(name)' has no label '\(label)'"
            + (labels.isEmpty
              ? " (it has no labels)" : " (labels: \(labels.joined(separator: ", ")))"))
      }
      guard let served = entry.versions[target]?.served else {
        throw RPCError.notFound(
          "model '\(name)' label '\(label)' points to version \(target), which is not loaded")
      }
      return served
    }
    guard let served = entry.serving else {
      throw RPCError.notFound(
        "model '\(name)' has no version that can serve (versions: \(Self.describe(entry)))")
    }
    return served
  }

  static func describe(_ entry: ModelEntry) -> String {
    entry.versions.keys.sorted().map { version in
      let record = entry.versions[version]!
      switch record.state {
      case .available: return "\(version)"
      case .failed: return "\(version) FAILED"
      case .loading: return "\(version) LOADING"
      case .unloaded: return "\(version) UNLOADED"
      }
    }.joined(separator: ", ")
  }
}
