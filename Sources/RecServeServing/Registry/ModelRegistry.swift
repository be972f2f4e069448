import Atomics
import CSystem
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
  /// Why the version failed or is not loaded, in words.
  public var reason: String
  public var served: ServedVersion?
}

/// One model: its versions, labels, and which version serves.
public final class ModelEntry: @unchecked Sendable {
  public let name: String
  public let versions: [Int64: VersionRecord]
  public let labels: [String: Int64]
  public let canaryFraction: Float
  /// What a request naming neither version nor label gets (outside the canary slice).
  public let serving: ServedVersion?
  /// The version the canary slice of users gets, when a canary is set.
  public let canary: ServedVersion?

  init(name: String, versions: [Int64: VersionRecord], labels: ModelLabels) {
    self.name = name
    self.versions = versions
    self.labels = labels.labels
    self.canaryFraction = labels.canaryFraction
    if let stable = labels.labels[LabelStore.stableLabel], let served = versions[stable]?.served {
      serving = served
    } else {
      serving = versions.keys.sorted(by: >).lazy.compactMap { versions[$0]?.served }.first
    }
    if labels.canaryFraction > 0, let version = labels.labels[LabelStore.canaryLabel],
      let served = versions[version]?.served
    {
      canary = served
    } else {
      canary = nil
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
/// Requests take the current snapshot with one atomic load and keep the version they resolved
/// until they finish; the registry builds new snapshots off the request path (polling the folder,
/// admin calls, training) and publishes each with one atomic store. A version that fails
/// verification is FAILED with its reason and never replaces one that serves; it is retried only
/// by `reload()`. The latest `keepVersions` available versions and every labelled one stay
/// loaded; older ones are UNLOADED, and their memory goes when their last request ends.
public final class ModelRegistry: @unchecked Sendable {
  public let directory: String
  public let keepVersions: Int
  private let current: ManagedAtomic<RegistrySnapshot>

  /// State only the writer (under `writer`) touches.
  private struct WriterState {
    var records: [String: [Int64: VersionRecord]] = [:]
    /// Versions an admin unloaded: not loaded again until `reload()`.
    var unloaded: [String: Set<Int64>] = [:]
    var labelErrors: Set<String> = []
  }
  private let writer = Mutex<WriterState>(WriterState())
  private let pollStop = Atomic<Bool>(false)
  private let pollDone = DispatchSemaphore(value: 0)
  private var pollThread: Thread?
  /// Receives one line per event worth telling an operator (a new version serving, a failure).
  public var log: @Sendable (String) -> Void = { _ in }

  public init(directory: String, keepVersions: Int = 2) {
    self.directory = directory
    self.keepVersions = max(1, keepVersions)
    self.current = ManagedAtomic(RegistrySnapshot(models: [:]))
  }

  /// The current snapshot.
  public var snapshot: RegistrySnapshot { current.load(ordering: .acquiring) }

  // MARK: refreshing

  /// Scans the folder once and publishes what changed. Returns one line per version that failed
  /// verification during this call.
  @discardableResult
  public func loadAll() -> [String] {
    refresh(retry: false)
  }

  /// Scans the folder, retrying FAILED and admin-unloaded versions.
  @discardableResult
  public func reload() -> [String] {
    refresh(retry: true)
  }

  /// Polls the folder every `interval` seconds on a thread of its own until `stopPolling()`.
  public func startPolling(interval: Double) {
    guard interval > 0, pollThread == nil else { return }
    let thread = Thread { [self] in
      BackgroundPriority.lowerCurrentThread()
      while !pollStop.load(ordering: .relaxed) {
        let deadline = Date().addingTimeInterval(interval)
        while Date() < deadline && !pollStop.load(ordering: .relaxed) {
          usleep(UInt32(min(0.05, max(0.001, interval / 10)) * 1e6))
        }
        if pollStop.load(ordering: .relaxed) { break }
        refresh(retry: false)
      }
      pollDone.signal()
    }
    thread.name = "recserve-registry"
    pollThread = thread
    thread.start()
  }

  public func stopPolling() {
    guard pollThread != nil else { return }
    pollStop.store(true, ordering: .relaxed)
    pollDone.wait()
    pollThread = nil
  }

  private func refresh(retry: Bool) -> [String] {
    writer.withLock { state in
      var failures: [String] = []
      if retry { state.unloaded.removeAll() }
      let names = (try? ModelStore.modelNames(directory)) ?? []
      for name in Set(state.records.keys).subtracting(names) { state.records[name] = nil }
      for name in names {
        failures += refreshModel(name, state: &state, retry: retry)
      }
      return failures
    }
  }

  /// Brings one model's records in line with the disk and the policy, and publishes.
  private func refreshModel(_ name: String, state: inout WriterState, retry: Bool) -> [String] {
    var failures: [String] = []
    let modelDirectory = ModelStore.modelDirectory(directory, name: name)
    let onDisk = ((try? ModelStore.versions(directory, name: name)) ?? []).sorted(by: >)
    let (labels, labelError) = LabelStore.read(modelDirectory: modelDirectory)
    if let labelError, !state.labelErrors.contains(modelDirectory) {
      state.labelErrors.insert(modelDirectory)
      log("warning: \(labelError)")
    } else if labelError == nil {
      state.labelErrors.remove(modelDirectory)
    }
    var records = state.records[name] ?? [:]
    for version in Set(records.keys).subtracting(onDisk) { records[version] = nil }
    let labelled = Set(labels.labels.values)
    let adminUnloaded = state.unloaded[name] ?? []
    let before = ModelEntry(name: name, versions: records, labels: labels).serving?.version

    var kept = 0
    for version in onDisk {
      let record = records[version]
      if record?.state == .failed && !retry { continue }
      let wanted =
        (kept < keepVersions || labelled.contains(version)) && !adminUnloaded.contains(version)
      if !wanted {
        if record?.served != nil || record == nil || record?.state == .failed {
          let reason =
            adminUnloaded.contains(version)
            ? "unloaded by an admin"
            : "not among the latest \(keepVersions) versions and not labelled"
          records[version] = VersionRecord(
            version: version, state: .unloaded, reason: reason, served: nil)
        }
        continue
      }
      if record?.state == .available {
        kept += 1
        continue
      }
      // Load and verify off the request path; show LOADING meanwhile.
      records[version] = VersionRecord(version: version, state: .loading, reason: "", served: nil)
      publish(name: name, records: records, labels: labels, state: &state)
      let loaded = loadVersion(name: name, version: version)
      records[version] = loaded
      if loaded.state == .available {
        kept += 1
      } else {
        failures.append("\(name) version \(version): \(loaded.reason)")
        log(
          "version \(version) of '\(name)' FAILED verification and will not serve: \(loaded.reason)"
        )
      }
    }
    let unloadedNow = (state.records[name] ?? [:]).values.contains { old in
      old.served != nil && records[old.version]?.served == nil
    }
    publish(name: name, records: records, labels: labels, state: &state)
    if unloadedNow {
      // Freed tensors and id maps go back to the system rather than staying in malloc's arenas.
      releaseFreedMemory()
    }
    let after = snapshot.models[name]?.serving?.version
    if after != before, let after {
      log("model '\(name)' now serves version \(after)")
    }
    return failures
  }

  /// Reads, verifies and warms one version: AVAILABLE with it, or FAILED with the reason.
  private func loadVersion(name: String, version: Int64) -> VersionRecord {
    let path = ModelStore.versionDirectory(directory, name: name, version: version)
    do {
      let loaded = try ModelStore.load(versionDirectory: path)
      let served = ServedVersion(name: name, version: version, loaded: loaded)
      served.warm()
      return VersionRecord(version: version, state: .available, reason: "", served: served)
    } catch {
      return VersionRecord(version: version, state: .failed, reason: "\(error)", served: nil)
    }
  }

  private func publish(
    name: String, records: [Int64: VersionRecord], labels: ModelLabels, state: inout WriterState
  ) {
    state.records[name] = records
    var models: [String: ModelEntry] = [:]
    let previous = current.load(ordering: .acquiring)
    for (other, entry) in previous.models where other != name && state.records[other] != nil {
      models[other] = entry
    }
    if !records.isEmpty {
      models[name] = ModelEntry(name: name, versions: records, labels: labels)
    }
    current.store(RegistrySnapshot(models: models), ordering: .releasing)
  }

  // MARK: admin

  /// Points `label` at `version` (0 removes the label); with the label `canary`, also sets the
  /// fraction of users it serves. A version not loaded is loaded and verified first.
  public func setLabel(name: String, label: String, version: Int64, canaryFraction: Float?) throws
    -> ModelEntry
  {
    if name.isEmpty { throw RPCError.invalidArgument("name is empty: name the model") }
    guard LabelStore.isValidLabel(label) else {
      throw RPCError.invalidArgument(
        "label '\(label)' is not valid: use 1-64 letters, digits, '.', '_' or '-'")
    }
    if version < 0 {
      throw RPCError.invalidArgument(
        "version must be positive (or 0 to remove the label), got \(version)")
    }
    if let canaryFraction {
      guard label == LabelStore.canaryLabel else {
        throw RPCError.invalidArgument("canary_fraction applies to the label 'canary' only")
      }
      guard canaryFraction.isFinite, (0...1).contains(canaryFraction) else {
        throw RPCError.invalidArgument(
          "canary_fraction must be between 0 and 1, got \(canaryFraction)")
      }
    }
    return try writer.withLock { state -> ModelEntry in
      let modelDirectory = ModelStore.modelDirectory(directory, name: name)
      let onDisk = (try? ModelStore.versions(directory, name: name)) ?? []
      guard state.records[name] != nil || !onDisk.isEmpty else {
        throw RPCError.notFound("model '\(name)' not found")
      }
      var (labels, _) = LabelStore.read(modelDirectory: modelDirectory)
      if version == 0 {
        guard labels.labels.removeValue(forKey: label) != nil else {
          throw RPCError.notFound("model '\(name)' has no label '\(label)'")
        }
        if label == LabelStore.canaryLabel { labels.canaryFraction = 0 }
      } else {
        guard onDisk.contains(version) else {
          throw RPCError.notFound(
            "model '\(name)' has no version \(version) (versions: \(onDisk.map(String.init).joined(separator: ", ")))"
          )
        }
        var records = state.records[name] ?? [:]
        if records[version]?.state == .failed {
          throw RPCError.failedPrecondition(
            "version \(version) of '\(name)' failed verification and cannot serve: \(records[version]!.reason)"
          )
        }
        if records[version]?.served == nil {
          let loaded = loadVersion(name: name, version: version)
          records[version] = loaded
          state.records[name] = records
          if loaded.state != .available {
            throw RPCError.failedPrecondition(
              "version \(version) of '\(name)' failed verification: \(loaded.reason)")
          }
        }
        labels.labels[label] = version
        state.unloaded[name]?.remove(version)
        if label == LabelStore.canaryLabel {
          if let canaryFraction { labels.canaryFraction = canaryFraction }
        }
      }
      do {
        try LabelStore.write(labels, modelDirectory: modelDirectory)
      } catch {
        throw RPCError.internal("\(error)")
      }
      _ = refreshModel(name, state: &state, retry: false)
      log(
        "label '\(label)' of '\(name)' \(version == 0 ? "removed" : "now points to version \(version)")"
      )
      guard let entry = snapshot.models[name] else {
        throw RPCError.notFound("model '\(name)' not found")
      }
      return entry
    }
  }

  /// Unloads a version until `reload()`. Refused for a labelled version and for the last one
  /// that can serve.
  public func unload(name: String, version: Int64) throws -> ModelEntry {
    if name.isEmpty { throw RPCError.invalidArgument("name is empty: name the model") }
    return try writer.withLock { state -> ModelEntry in
      guard let records = state.records[name] else {
        throw RPCError.notFound("model '\(name)' not found")
      }
      guard let record = records[version] else {
        throw RPCError.notFound("model '\(name)' has no version \(version)")
      }
      let (labels, _) = LabelStore.read(
        modelDirectory: ModelStore.modelDirectory(directory, name: name))
      if let label = labels.labels.first(where: { $0.value == version })?.key {
        throw RPCError.failedPrecondition(
          "version \(version) of '\(name)' is labelled '\(label)': move or remove the label first")
      }
      if record.served != nil
        && !records.values.contains(where: { $0.version != version && $0.served != nil })
      {
        throw RPCError.failedPrecondition(
          "version \(version) is the only version of '\(name)' that can serve; publish or load another first"
        )
      }
      state.unloaded[name, default: []].insert(version)
      _ = refreshModel(name, state: &state, retry: false)
      log("version \(version) of '\(name)' unloaded by an admin")
      guard let entry = snapshot.models[name] else {
        throw RPCError.notFound("model '\(name)' not found")
      }
      return entry
    }
  }

  // MARK: requests

  /// The version a request names: its version, its label, or (neither) the canary for users in
  /// the canary slice, else the serving one. `userKey` is the id the canary split hashes.
  @inline(__always)
  public func resolve(name: String, version: Int64?, label: String?, userKey: String = "") throws
    -> ServedVersion
  {
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
        let why: String
        switch record.state {
        case .failed: why = "it failed verification: \(record.reason)"
        case .loading: why = "it is still loading"
        default: why = "it is not loaded (\(record.reason))"
        }
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
    if let canary = entry.canary, !userKey.isEmpty, Self.bucket(userKey) < entry.canaryFraction {
      return canary
    }
    guard let served = entry.serving else {
      throw RPCError.notFound(
        "model '\(name)' has no version that can serve (versions: \(Self.describe(entry)))")
    }
    return served
  }

  /// The version a batch of users gets when the request names neither version nor label
  /// (Predict: one response, one version). Without a canary, or when every user falls on the
  /// same side of the canary split, that side's version (so a batch of one user is served as
  /// that user's Rank is); when the users fall on both sides, the version that serves users
  /// outside the canary.
  public func resolve(name: String, userKeys: some Sequence<String>) throws -> ServedVersion {
    let entry = current.load(ordering: .acquiring).models[name]
    guard let entry, entry.canary != nil else {
      return try resolve(name: name, version: nil, label: nil)
    }
    var side: Bool? = nil
    var previous: String? = nil
    for key in userKeys {
      // Runs of the same user (many items for one user) hash once.
      if key == previous { continue }
      previous = key
      let inCanary = !key.isEmpty && Self.bucket(key) < entry.canaryFraction
      if let side, side != inCanary {
        return try resolve(name: name, version: nil, label: nil)
      }
      side = inCanary
    }
    return try resolve(name: name, version: nil, label: nil, userKey: previous ?? "")
  }

  /// A stable position in [0, 1) for a user id: FNV-1a, then a 64-bit finalizer.
  @inline(__always)
  static func bucket(_ key: String) -> Float {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in key.utf8 {
      hash ^= UInt64(byte)
      hash = hash &* 0x0000_0100_0000_01B3
    }
    hash ^= hash >> 33
    hash = hash &* 0xff51_afd7_ed55_8ccd
    hash ^= hash >> 33
    return Float(hash >> 40) / Float(1 << 24)
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

/// Lowers the calling thread's CPU priority (nice 10), so verifying, loading or training on it
/// yields to the threads that answer requests.
public enum BackgroundPriority {
  public static func lowerCurrentThread() {
    #if os(Linux)
      // On Linux the nice value is per thread, and `who` 0 names the calling thread.
      _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
    #endif
  }
}

/// Returns memory freed inside malloc's arenas to the system (glibc's malloc_trim).
func releaseFreedMemory() {
  #if canImport(Glibc)
    _ = malloc_trim(0)
  #endif
}
