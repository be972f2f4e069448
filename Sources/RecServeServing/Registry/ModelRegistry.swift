import Atomics
import CSystem
import Foundation
import RecServeModels
import Synchronization

/// What is known about one version on disk.
public struct VersionRecord: Sendable {
  public enum State: Sendable {
    case loading, available, failed, unloaded

    /// As the admin API names it: LOADING, AVAILABLE, FAILED, UNLOADED.
    public var name: String {
      switch self {
      case .loading: return "LOADING"
      case .available: return "AVAILABLE"
      case .failed: return "FAILED"
      case .unloaded: return "UNLOADED"
      }
    }
  }
  public var version: Int64
  public var state: State
  /// Why the version failed or is not loaded, in words.
  public var reason: String
  public var served: ServedVersion?
}

/// One model: its versions, labels, and which version serves.
public final class ModelEntry: Sendable {
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

extension ModelEntry {
  /// What `version` does now: "canary" (the canary slice's version), "stable" (what a request
  /// naming no version or label gets otherwise) or "other".
  public func role(of version: Int64) -> String {
    if let canary, canary.version == version { return "canary" }
    if let serving, serving.version == version { return "stable" }
    return "other"
  }
}

/// An immutable picture of every model; requests read the current one without a lock.
public final class RegistrySnapshot: AtomicReference, @unchecked Sendable {
  public let models: [String: ModelEntry]
  init(models: [String: ModelEntry]) { self.models = models }
}

/// How long a caller waits for the registry's loader: until `deadline` (nil: no deadline) or
/// until `isCancelled()` says the client went away.
public struct WaitLimit: Sendable {
  public var deadline: DispatchTime?
  public var isCancelled: @Sendable () -> Bool

  public init(
    deadline: DispatchTime? = nil, isCancelled: @escaping @Sendable () -> Bool = { false }
  ) {
    self.deadline = deadline
    self.isCancelled = isCancelled
  }

  /// No deadline, no cancellation (training, startup, tests).
  public static let unlimited = WaitLimit()
}

/// The versioned model registry over `DIR/<name>/<version>/`.
///
/// Requests take the current snapshot with one atomic load and keep the version they resolved
/// until they finish; they never take a lock. Everything that reads the disk (polling the
/// folder, loading and verifying versions, reading and writing labels) runs on one loader
/// thread, which alone changes the registry's state and publishes each new snapshot with one
/// atomic store. Admin calls and training hand their work to that thread and wait for it with
/// their deadline; the only lock is the loader's job queue, held for a few instructions.
///
/// A version that fails verification is FAILED with its reason and never replaces one that
/// serves; it is retried only by `reload()`. The latest `keepVersions` available versions and
/// every labelled one stay loaded; older ones are UNLOADED, and their memory goes when their
/// last request ends.
///
/// What cannot be read is not taken for absent. Only ENOENT and ENOTDIR mean a model, version
/// or labels.json is gone; any other error (EMFILE, EIO, ELOOP, EACCES, EISDIR...) keeps the
/// last good state of what it concerns (the model's versions, its labels, what serves), is
/// logged once with the path and the error, and is retried on every poll; the first good read
/// after it is logged once too. A labels.json that is not valid JSON keeps the last good labels
/// the same way, and SetLabel never writes over a labels.json it could not read.
public final class ModelRegistry: @unchecked Sendable {
  public let directory: String
  public let keepVersions: Int
  /// What each loaded version gets built beside its item matrix.
  public let indexes: IndexOptions
  private let current: ManagedAtomic<RegistrySnapshot>

  /// What the loader knows about one model.
  struct ModelState {
    var records: [Int64: VersionRecord] = [:]
    /// The last labels read from labels.json (or written by SetLabel).
    var labels = ModelLabels()
    /// Versions an admin unloaded: not loaded again until `reload()`.
    var adminUnloaded: Set<Int64> = []
  }

  // Loader thread only.
  var models: [String: ModelState] = [:]
  /// Reads that failed on the last try, by what was read ("list", "labels", "load") and path,
  /// with the line logged; each is logged when it starts failing and when it reads again.
  private var faults: [String: String] = [:]

  /// The loader's job queue and poll schedule.
  private struct Loader {
    var jobs: [@Sendable () -> Void] = []
    var running = false
    /// A poll is running (`stopPolling` waits for it to end).
    var polling = false
    var pollInterval: Double?
    var nextPoll = DispatchTime.now()
  }
  private let loader = Mutex<Loader>(Loader())
  private let wake = DispatchSemaphore(value: 0)
  private let pollEnded = DispatchSemaphore(value: 0)
  /// The latest events (those logged, and each version loaded), for the status page.
  public let events = EventLog(capacity: 200)
  /// Each event with its fields, for a structured log.
  public let hub = EventHub()

  public init(directory: String, keepVersions: Int = 2, indexes: IndexOptions = IndexOptions()) {
    self.directory = directory
    self.indexes = indexes
    self.keepVersions = max(1, keepVersions)
    self.current = ManagedAtomic(RegistrySnapshot(models: [:]))
  }

  /// The current snapshot.
  public var snapshot: RegistrySnapshot { current.load(ordering: .acquiring) }

  /// Tells `hub` (the server's log) of an event worth telling an operator (a new version
  /// serving, a failure) and keeps it among the recent events for the status page.
  func note(_ line: String, warning: Bool = false, _ fields: [String: String] = [:]) {
    events.append(warning ? "warning: " + line : line)
    hub.emit(ServerEvent(line, warning: warning, fields: fields))
  }

  // MARK: the loader thread

  /// Polls the folder every `interval` seconds on the loader thread until `stopPolling()`.
  public func startPolling(interval: Double) {
    guard interval > 0 else { return }
    let start = loader.withLock { state -> Bool in
      state.pollInterval = interval
      state.nextPoll = .now() + interval
      defer { state.running = true }
      return !state.running
    }
    if start { startLoaderThread() }
    wake.signal()
  }

  /// Stops polling, waiting for a poll in progress to end (not for admin work queued or running:
  /// those calls finish within their own deadlines).
  public func stopPolling() {
    loader.withLock { state in state.pollInterval = nil }
    wake.signal()
    while loader.withLock({ $0.polling }) { _ = pollEnded.wait(timeout: .now() + 0.05) }
  }

  /// Runs `job` on the loader thread, starting the thread when it is not running (it stops
  /// when it has nothing queued and does not poll).
  private func submit(_ job: @escaping @Sendable () -> Void) {
    let start = loader.withLock { state -> Bool in
      state.jobs.append(job)
      defer { state.running = true }
      return !state.running
    }
    if start { startLoaderThread() }
    wake.signal()
  }

  private func startLoaderThread() {
    let thread = Thread { [self] in
      BackgroundPriority.lowerCurrentThread()
      runLoader()
    }
    thread.name = "recserve-registry"
    thread.start()
  }

  private enum LoaderStep {
    case run(@Sendable () -> Void)
    case poll
    case wait(DispatchTime)
    case exit
  }

  private func runLoader() {
    while true {
      let step = loader.withLock { state -> LoaderStep in
        if !state.jobs.isEmpty { return .run(state.jobs.removeFirst()) }
        guard state.pollInterval != nil else {
          state.running = false
          return .exit
        }
        guard DispatchTime.now() >= state.nextPoll else { return .wait(state.nextPoll) }
        state.polling = true
        return .poll
      }
      switch step {
      case .run(let job): job()
      case .poll:
        refreshAll(retry: false)
        loader.withLock { state in
          state.polling = false
          if let interval = state.pollInterval { state.nextPoll = .now() + interval }
        }
        pollEnded.signal()
      case .wait(let until): _ = wake.wait(timeout: until)
      case .exit: return
      }
    }
  }

  /// Runs `body` on the loader thread and waits for its result within `limit`. Before it
  /// changes anything the caller hears about, `body` calls `commit()`: false means the caller
  /// stopped waiting (deadline, cancellation) and `body` must change nothing. Once `commit()`
  /// said true, the caller waits for the outcome, so it is never told "nothing was changed" about
  /// a change that was made. `unchanged` finishes the caller's error when it stops waiting.
  func perform<T: Sendable>(
    _ limit: WaitLimit, what: String, unchanged: String,
    _ body: @escaping @Sendable (_ commit: () -> Bool) throws -> T
  ) throws -> T {
    let ticket = Ticket<T>()
    submit {
      guard ticket.state.load(ordering: .acquiring) != Ticket<T>.abandoned else {
        ticket.finish(.failure(CallerGaveUp()))
        return
      }
      ticket.finish(Result { try body { ticket.commit() } })
    }
    while true {
      let slice = min(DispatchTime.now() + 0.05, limit.deadline ?? .distantFuture)
      if ticket.done.wait(timeout: slice) == .success { return try ticket.outcome!.get() }
      let cancelled = limit.isCancelled()
      let late = limit.deadline.map { DispatchTime.now() >= $0 } ?? false
      guard cancelled || late else { continue }
      guard ticket.abandon() else {
        // It is committing: the change is being made, so wait for it (it is short).
        ticket.done.wait()
        return try ticket.outcome!.get()
      }
      // It may have finished without needing to commit.
      if ticket.done.wait(timeout: .now()) == .success, let outcome = ticket.outcome {
        switch outcome {
        case .success(let value): return value
        case .failure(let error) where !(error is CallerGaveUp): throw error
        case .failure: break
        }
      }
      if late {
        throw RegistryError(
          .deadlinePassed,
          "the deadline passed while the registry was busy with \(what); \(unchanged)")
      }
      throw RegistryError(
        .cancelled, "the client cancelled while the registry was busy with \(what); \(unchanged)")
    }
  }

  // MARK: refreshing

  /// Scans the folder once and publishes what changed. Returns one line per version that failed
  /// verification during this call.
  @discardableResult
  public func loadAll() -> [String] {
    (try? perform(.unlimited, what: "a scan of the model folder", unchanged: "") { _ in
      self.refreshAll(retry: false)
    }) ?? []
  }

  /// Scans the folder, retrying FAILED and admin-unloaded versions.
  @discardableResult
  public func reload() -> [String] {
    (try? reload(within: .unlimited)) ?? []
  }

  /// `reload()` for a caller that waits at most within `limit` (the scan goes on without it).
  @discardableResult
  public func reload(within limit: WaitLimit) throws -> [String] {
    try perform(
      limit, what: "a reload of the model folder", unchanged: "the reload goes on without you"
    ) { _ in
      self.refreshAll(retry: true)
    }
  }

  /// Loader thread: brings every model in line with the disk.
  @discardableResult
  private func refreshAll(retry: Bool) -> [String] {
    if retry {
      for name in models.keys { models[name]!.adminUnloaded.removeAll() }
    }
    let listing: ModelStore.Listing<String>
    do {
      listing = try ModelStore.scanModels(directory) ?? ModelStore.Listing()
      readable("list", directory, models.isEmpty ? nil : "models are read from it again")
    } catch {
      unreadable(
        "list", directory, error, keeping: "every model keeps what it had (\(servingSummary()))")
      return []
    }
    let present = Set(listing.present)
    let gone = models.keys.filter { !present.contains($0) && listing.unreadable[$0] == nil }
    for name in gone { forget(name) }
    if !gone.isEmpty { publish(nil) }
    for (name, error) in listing.unreadable.sorted(by: { $0.key < $1.key }) {
      let path = ModelStore.modelDirectory(directory, name: name)
      unreadable("list", path, error, keeping: models[name] == nil ? nil : keepingSummary(name))
    }
    var failures: [String] = []
    for name in listing.present {
      failures += refreshModel(name, retry: retry)
    }
    return failures
  }

  /// Loader thread: drops a model that is gone from the disk.
  private func forget(_ name: String) {
    models[name] = nil
    let path = ModelStore.modelDirectory(directory, name: name)
    faults = faults.filter { key, _ in
      !Self.path(of: key).hasPrefix(path + "/") && Self.path(of: key) != path
    }
    note(
      "model '\(name)' is gone from \(directory): no longer served",
      ["event": "model_removed", "model": name])
  }

  /// Loader thread: brings one model's records in line with the disk and the policy, and
  /// publishes. On an error reading its folder or labels it keeps what it had.
  private func refreshModel(_ name: String, retry: Bool) -> [String] {
    let modelDirectory = ModelStore.modelDirectory(directory, name: name)
    let listing: ModelStore.Listing<Int64>
    do {
      guard let found = try ModelStore.scanVersions(directory, name: name) else {
        if models[name] != nil {
          forget(name)
          publish(nil)
        }
        return []
      }
      listing = found
    } catch {
      unreadable(
        "list", modelDirectory, error,
        keeping: models[name] == nil ? nil : keepingSummary(name))
      return []
    }
    readable("list", modelDirectory, "model '\(name)' is refreshed from it again")
    var model = models[name] ?? ModelState()
    readLabels(name, into: &model)
    let previous = model.records
    var records = previous
    let before = snapshot.models[name]?.serving?.version
    forgetVanished(name, listing: listing, records: &records)
    let failures = loadWanted(
      name, listing: listing, retry: retry, model: &model, records: &records)
    let unloadedNow = previous.values.contains { old in
      old.served != nil && records[old.version]?.served == nil
    }
    model.records = records
    models[name] = model
    publish(name)
    refreshAdditions(name)
    if unloadedNow {
      // Freed tensors and id maps go back to the system rather than staying in malloc's arenas.
      releaseFreedMemory()
    }
    let after = snapshot.models[name]?.serving?.version
    if after != before, let after {
      note(
        "model '\(name)' now serves version \(after)",
        ["event": "serving_changed", "model": name, "version": "\(after)"])
    }
    return failures
  }

  /// Loader thread: the model's labels from labels.json; on an error reading it, the last good
  /// ones stay (and the fault is reported once, until it clears).
  private func readLabels(_ name: String, into model: inout ModelState) {
    let modelDirectory = ModelStore.modelDirectory(directory, name: name)
    let labelsPath = LabelStore.path(modelDirectory: modelDirectory)
    do {
      model.labels = try LabelStore.load(modelDirectory: modelDirectory)
      readable("labels", labelsPath, "model '\(name)' uses its labels again")
      readable(
        "json", labelsPath, "model '\(name)' uses its labels again", phrase: "is valid again")
    } catch {
      let kept =
        models[name] == nil
        ? "model '\(name)' has no labels read yet and serves as if it had none until then"
        : "model '\(name)' keeps its last good labels (\(Self.describe(model.labels)))"
          + " and what serves"
      // An unreadable file and a malformed one recover with different words.
      let (kind, other) =
        if case .malformed = error { ("json", "labels") } else { ("labels", "json") }
      faults[other + ":" + labelsPath] = nil
      noteFault(
        kind, labelsPath,
        "\(error); \(kept); \(LabelStore.fileName) is left as it is, retrying every poll"
      )
    }
  }

  /// Loader thread: drops the records of versions gone from the folder; versions that cannot be
  /// listed now keep theirs (reported), and listed ones clear their faults.
  private func forgetVanished(
    _ name: String, listing: ModelStore.Listing<Int64>, records: inout [Int64: VersionRecord]
  ) {
    let present = Set(listing.present)
    for version in records.keys
    where !present.contains(version) && listing.unreadable[version] == nil {
      records[version] = nil
      faults["load:" + versionPath(name, version)] = nil
    }
    for (version, error) in listing.unreadable.sorted(by: { $0.key > $1.key }) {
      let state = records[version].map { "\($0.state)".uppercased() }
      unreadable(
        "list", versionPath(name, version), error,
        keeping: state.map { "version \(version) of '\(name)' stays \($0)" })
    }
    for version in listing.present {
      readable("list", versionPath(name, version), nil)
    }
  }

  /// Loader thread: the keep-latest-N and labels policy, newest first: loads and verifies the
  /// versions wanted and not loaded (publishing LOADING meanwhile), unloads the others. FAILED
  /// versions are retried only with `retry`. Returns the failures.
  private func loadWanted(
    _ name: String, listing: ModelStore.Listing<Int64>, retry: Bool, model: inout ModelState,
    records: inout [Int64: VersionRecord]
  ) -> [String] {
    let labelled = Set(model.labels.labels.values)
    var failures: [String] = []
    var kept = 0
    for version in (listing.present + listing.unreadable.keys).sorted(by: >) {
      let record = records[version]
      if listing.unreadable[version] != nil {
        // Cannot look at it now: it stays as it was.
        if record?.state == .available { kept += 1 }
        continue
      }
      if record?.state == .failed && !retry { continue }
      let wanted =
        (kept < keepVersions || labelled.contains(version))
        && !model.adminUnloaded.contains(version)
      if !wanted {
        if record?.served != nil || record == nil || record?.state == .failed {
          let reason =
            model.adminUnloaded.contains(version)
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
      model.records = records
      models[name] = model
      publish(name)
      let loaded = loadVersion(name: name, version: version)
      switch loaded {
      case .loaded(let record):
        records[version] = record
        kept += 1
        note(
          "version \(version) of '\(name)' loaded and verified",
          ["event": "version_loaded", "model": name, "version": "\(version)"])
      case .unreadable(let record):
        records[version] = record
      case .failed(let record):
        records[version] = record
        failures.append("\(name) version \(version): \(record.reason)")
        note(
          "version \(version) of '\(name)' FAILED verification and will not serve: \(record.reason)",
          warning: true,
          [
            "event": "version_failed", "model": name, "version": "\(version)",
            "reason": record.reason,
          ])
      }
    }
    return failures
  }

  private enum LoadOutcome {
    /// AVAILABLE.
    case loaded(VersionRecord)
    /// An I/O error kept it from being read: UNLOADED, tried again on the next poll.
    case unreadable(VersionRecord)
    /// FAILED verification, with the reason.
    case failed(VersionRecord)
  }

  /// Loader thread: reads, verifies and warms one version.
  private func loadVersion(name: String, version: Int64) -> LoadOutcome {
    let path = versionPath(name, version)
    do {
      let (loaded, hybrid) = try Self.withAdditions(ModelStore.load(versionDirectory: path))
      let served = ServedVersion(
        name: name, version: version, loaded: loaded, indexes: indexes, hybrid: hybrid)
      served.warm()
      readable("load", path, "version \(version) of '\(name)' loaded")
      if let ivf = served.ivf {
        let seconds = (ivf.buildSeconds * 1000).rounded() / 1000
        note(
          "version \(version) of '\(name)': IVF index of \(ivf.lists) lists (default nprobe \(ivf.defaultProbe)) over \(ivf.itemCount) items built in \(seconds) s",
          ["event": "index_built", "model": name, "version": "\(version)"])
      }
      return .loaded(
        VersionRecord(version: version, state: .available, reason: "", served: served))
    } catch let error as ModelLoadError where error.ioError != nil {
      noteFault(
        "load", path,
        "cannot read version \(version) of '\(name)' (\(path)): \(error.reason);"
          + " it does not serve until it can be read, retrying every poll")
      return .unreadable(
        VersionRecord(
          version: version, state: .unloaded,
          reason: "could not be read (\(error.reason)); retried on every poll", served: nil))
    } catch {
      faults["load:" + path] = nil
      return .failed(
        VersionRecord(version: version, state: .failed, reason: "\(error)", served: nil))
    }
  }

  /// Loader thread: publishes the state of `name` (nil: only drops models that are gone).
  func publish(_ name: String?) {
    var entries: [String: ModelEntry] = [:]
    let previous = current.load(ordering: .acquiring)
    for (other, entry) in previous.models where other != name && models[other] != nil {
      entries[other] = entry
    }
    if let name, let model = models[name], !model.records.isEmpty {
      entries[name] = ModelEntry(name: name, versions: model.records, labels: model.labels)
    }
    current.store(RegistrySnapshot(models: entries), ordering: .releasing)
  }

  // MARK: read faults (loader thread)

  func versionPath(_ name: String, _ version: Int64) -> String {
    ModelStore.versionDirectory(directory, name: name, version: version)
  }

  private static func path(of key: String) -> String {
    String(key[key.index(after: key.firstIndex(of: ":")!)...])
  }

  /// Warns with `line` when the read `kind` of `path` starts failing, or fails differently.
  private func noteFault(_ kind: String, _ path: String, _ line: String) {
    let key = kind + ":" + path
    guard faults[key] != line else { return }
    faults[key] = line
    note(line, warning: true)
  }

  private func unreadable(_ kind: String, _ path: String, _ error: any Error, keeping: String?) {
    let reason = (error as? FileError)?.reason ?? "\(error)"
    noteFault(
      kind, path,
      "cannot read \(path): \(reason); "
        + (keeping.map { "\($0), " } ?? "") + "retrying every poll")
  }

  /// Logs that `path` can be read again (and `recovered`, when given) once the read `kind` of
  /// it works after failing.
  private func readable(
    _ kind: String, _ path: String, _ recovered: String?, phrase: String = "can be read again"
  ) {
    guard faults.removeValue(forKey: kind + ":" + path) != nil else { return }
    note("\(path) \(phrase)" + (recovered.map { ": \($0)" } ?? ""))
  }

  private func keepingSummary(_ name: String) -> String {
    let serving = snapshot.models[name]?.serving?.version
    return "model '\(name)' keeps its versions, labels and what serves"
      + (serving.map { " (version \($0))" } ?? "")
  }

  private func servingSummary() -> String {
    let snapshot = self.snapshot
    let parts = snapshot.models.keys.sorted().map { name in
      "'\(name)' version \(snapshot.models[name]?.serving.map { String($0.version) } ?? "none")"
    }
    return parts.isEmpty ? "none served" : "serving " + parts.joined(separator: ", ")
  }

  static func describe(_ labels: ModelLabels) -> String {
    labels.labels.isEmpty
      ? "none"
      : labels.labels.keys.sorted().map { "\($0) → \(labels.labels[$0]!)" }.joined(
        separator: ", ")
  }

  // MARK: admin

  /// Points `label` at `version` (0 removes the label); with the label `canary`, also sets the
  /// fraction of users it serves. A version not loaded is loaded and verified first, on the
  /// loader thread; the caller waits within `limit`. Refused, with labels.json left as it is,
  /// when labels.json cannot be read (UNAVAILABLE) or is malformed (FAILED_PRECONDITION).
  public func setLabel(
    name: String, label: String, version: Int64, canaryFraction: Float?,
    limit: WaitLimit = .unlimited
  ) throws -> ModelEntry {
    if name.isEmpty { throw RegistryError.invalidRequest("name is empty: name the model") }
    guard LabelStore.isValidLabel(label) else {
      throw RegistryError.invalidRequest(
        "label '\(label)' is not valid: use 1-64 letters, digits, '.', '_' or '-'")
    }
    if version < 0 {
      throw RegistryError.invalidRequest(
        "version must be positive (or 0 to remove the label), got \(version)")
    }
    if let canaryFraction {
      guard label == LabelStore.canaryLabel else {
        throw RegistryError.invalidRequest("canary_fraction applies to the label 'canary' only")
      }
      guard canaryFraction.isFinite, (0...1).contains(canaryFraction) else {
        throw RegistryError.invalidRequest(
          "canary_fraction must be between 0 and 1, got \(canaryFraction)")
      }
    }
    let what =
      version == 0
      ? "removing label '\(label)' of '\(name)'"
      : "pointing label '\(label)' of '\(name)' at version \(version)"
    return try perform(limit, what: what, unchanged: "the label was not changed") { commit in
      try self.applyLabel(
        name: name, label: label, version: version, canaryFraction: canaryFraction,
        commit: commit)
    }
  }

  /// Why a label change was refused when labels.json could not be read or is malformed: the
  /// file is left as it is and the labels in use stay.
  static func refusal(_ error: LabelReadError, labelsInUse: ModelLabels) -> RegistryError {
    let kept =
      "\(LabelStore.fileName) was left as it is and the labels in use stay "
      + describe(labelsInUse)
    switch error {
    case .unreadable(let cause):
      return RegistryError(
        .unavailable,
        "cannot read \(cause.path): \(cause.reason); \(kept); try again when it can be read")
    case .malformed(let path, let reason):
      return RegistryError(
        .refused,
        "\(path) is malformed (\(reason)); \(kept); fix or remove the file, then try again")
    }
  }

  /// Loader thread: the work of `setLabel`.
  private func applyLabel(
    name: String, label: String, version: Int64, canaryFraction: Float?, commit: () -> Bool
  ) throws -> ModelEntry {
    let modelDirectory = ModelStore.modelDirectory(directory, name: name)
    let listing = try versionsOnDisk(name)
    var model = models[name] ?? ModelState()
    var labels: ModelLabels
    do {
      labels = try LabelStore.load(modelDirectory: modelDirectory)
    } catch {
      throw Self.refusal(error, labelsInUse: model.labels)
    }
    let change = LabelChange(
      model: name, label: label, version: version, canaryFraction: canaryFraction)
    if version != 0 {
      try makeServable(name, version: version, listing: listing, model: &model)
    }
    try change.apply(to: &labels)
    if version != 0 {
      model.adminUnloaded.remove(version)
      models[name] = model
    }
    guard commit() else {
      // The caller stopped waiting: change nothing (a version loaded meanwhile stays until the
      // policy unloads it).
      _ = refreshModel(name, retry: false)
      throw CallerGaveUp()
    }
    do {
      labels = try LabelStore.update(modelDirectory: modelDirectory, change.apply)
    } catch let error as RegistryError {
      throw error
    } catch let error as LabelReadError {
      throw Self.refusal(error, labelsInUse: model.labels)
    } catch {
      throw RegistryError(.unavailable, "\(error); the labels were not changed")
    }
    models[name]?.labels = labels
    _ = refreshModel(name, retry: false)
    note(
      "label '\(label)' of '\(name)' \(version == 0 ? "removed" : "now points to version \(version)")",
      ["event": "label_moved", "model": name, "label": label, "version": "\(version)"])
    guard let entry = snapshot.models[name] else {
      throw RegistryError.notFound("model '\(name)' not found")
    }
    return entry
  }

  /// One label change, applied to the labels as read when the call arrives and again, under
  /// the lock, to the labels as they are when written (another server sharing the folder may
  /// have changed them meanwhile).
  struct LabelChange {
    var model: String
    var label: String
    /// 0 removes the label.
    var version: Int64
    var canaryFraction: Float?

    func apply(to labels: inout ModelLabels) throws {
      if version == 0 {
        guard labels.labels.removeValue(forKey: label) != nil else {
          throw RegistryError.notFound("model '\(model)' has no label '\(label)'")
        }
        if label == LabelStore.canaryLabel { labels.canaryFraction = 0 }
      } else {
        labels.labels[label] = version
        if label == LabelStore.canaryLabel, let canaryFraction {
          labels.canaryFraction = canaryFraction
        }
      }
    }
  }

  /// The model's versions on disk; NOT_FOUND for a model neither loaded nor there, UNAVAILABLE
  /// when its folder cannot be read.
  private func versionsOnDisk(_ name: String) throws -> ModelStore.Listing<Int64> {
    do {
      guard let found = try ModelStore.scanVersions(directory, name: name),
        models[name] != nil || !found.present.isEmpty
      else {
        throw RegistryError.notFound("model '\(name)' not found")
      }
      return found
    } catch let error as FileError {
      throw RegistryError(
        .unavailable,
        "cannot read \(error.path): \(error.reason); nothing was changed, try again later")
    }
  }

  /// Loader thread: a version a label may point at: on disk, not FAILED, and loaded and
  /// verified now when it was not (recorded in `model` and the registry).
  private func makeServable(
    _ name: String, version: Int64, listing: ModelStore.Listing<Int64>, model: inout ModelState
  ) throws {
    guard listing.present.contains(version) else {
      if let error = listing.unreadable[version] {
        throw RegistryError(
          .unavailable,
          "cannot read \(error.path): \(error.reason); nothing was changed, try again later")
      }
      throw RegistryError.notFound(
        "model '\(name)' has no version \(version) (versions: \(listing.present.map(String.init).joined(separator: ", ")))"
      )
    }
    if let record = model.records[version], record.state == .failed {
      throw RegistryError.refused(
        "version \(version) of '\(name)' failed verification and cannot serve: \(record.reason)"
      )
    }
    guard model.records[version]?.served == nil else { return }
    let previous = model.records[version]
    model.records[version] = VersionRecord(
      version: version, state: .loading, reason: "", served: nil)
    models[name] = model
    publish(name)
    switch loadVersion(name: name, version: version) {
    case .loaded(let record):
      model.records[version] = record
      models[name] = model
      note(
        "version \(version) of '\(name)' loaded and verified (for a label)",
        ["event": "version_loaded", "model": name, "version": "\(version)"])
    case .unreadable(let record):
      model.records[version] = previous
      models[name] = model
      publish(name)
      throw RegistryError(
        .unavailable,
        "version \(version) of '\(name)' \(record.reason.replacingOccurrences(of: "; retried on every poll", with: "")); nothing was changed, try again later"
      )
    case .failed(let record):
      model.records[version] = record
      models[name] = model
      publish(name)
      throw RegistryError.refused(
        "version \(version) of '\(name)' failed verification: \(record.reason)")
    }
  }

  /// Unloads a version until `reload()`. Refused for a labelled version and for the last one
  /// that can serve.
  public func unload(name: String, version: Int64, limit: WaitLimit = .unlimited) throws
    -> ModelEntry
  {
    if name.isEmpty { throw RegistryError.invalidRequest("name is empty: name the model") }
    return try perform(
      limit, what: "unloading version \(version) of '\(name)'", unchanged: "nothing was unloaded"
    ) { commit in
      guard var model = self.models[name] else {
        throw RegistryError.notFound("model '\(name)' not found")
      }
      guard let record = model.records[version] else {
        throw RegistryError.notFound("model '\(name)' has no version \(version)")
      }
      if let label = model.labels.labels.first(where: { $0.value == version })?.key {
        throw RegistryError.refused(
          "version \(version) of '\(name)' is labelled '\(label)': move or remove the label first"
        )
      }
      if record.served != nil
        && !model.records.values.contains(where: { $0.version != version && $0.served != nil })
      {
        throw RegistryError.refused(
          "version \(version) is the only version of '\(name)' that can serve; publish or load another first"
        )
      }
      guard commit() else { throw CallerGaveUp() }
      model.adminUnloaded.insert(version)
      self.models[name] = model
      _ = self.refreshModel(name, retry: false)
      if self.models[name]?.records[version]?.served != nil {
        // The folder could not be read, so the refresh kept everything: unload it anyway.
        self.models[name]?.records[version] = VersionRecord(
          version: version, state: .unloaded, reason: "unloaded by an admin", served: nil)
        self.publish(name)
      }
      self.note(
        "version \(version) of '\(name)' unloaded by an admin",
        ["event": "version_unloaded", "model": name, "version": "\(version)"])
      guard let entry = self.snapshot.models[name] else {
        throw RegistryError.notFound("model '\(name)' not found")
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
      throw RegistryError.invalidRequest("model.name is empty: name the model to use")
    }
    let snapshot = current.load(ordering: .acquiring)
    guard let entry = snapshot.models[name] else {
      let known = snapshot.models.keys.sorted()
      throw RegistryError.notFound(
        "model '\(name)' not found"
          + (known.isEmpty
            ? " (no models are served)" : " (served models: \(known.joined(separator: ", ")))"))
    }
    if let version {
      guard version > 0 else {
        throw RegistryError.invalidRequest(
          "model.version must be a positive integer, got \(version)")
      }
      guard let record = entry.versions[version] else {
        throw RegistryError.notFound(
          "model '\(name)' has no version \(version) (versions: \(Self.describe(entry)))")
      }
      guard let served = record.served else {
        let why: String
        switch record.state {
        case .failed: why = "it failed verification: \(record.reason)"
        case .loading: why = "it is still loading"
        default: why = "it is not loaded (\(record.reason))"
        }
        throw RegistryError.notFound("model '\(name)' version \(version) cannot serve: \(why)")
      }
      return served
    }
    if let label, !label.isEmpty {
      guard let target = entry.labels[label] else {
        let labels = entry.labels.keys.sorted()
        throw RegistryError.notFound(
          "model '\(name)' has no label '\(label)'"
            + (labels.isEmpty
              ? " (it has no labels)" : " (labels: \(labels.joined(separator: ", ")))"))
      }
      guard let served = entry.versions[target]?.served else {
        throw RegistryError.notFound(
          "model '\(name)' label '\(label)' points to version \(target), which is not loaded")
      }
      return served
    }
    if let canary = entry.canary, !userKey.isEmpty, Self.bucket(userKey) < entry.canaryFraction {
      return canary
    }
    guard let served = entry.serving else {
      throw RegistryError.notFound(
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

/// What a job on the loader thread ends with when its caller stopped waiting before it
/// committed; the caller reports its own deadline or cancellation instead.
struct CallerGaveUp: Error {}

/// The result of a job on the loader thread, and who won the race between the job committing
/// its change and its caller giving up.
private final class Ticket<T>: @unchecked Sendable {
  static var pending: Int { 0 }
  static var committing: Int { 1 }
  static var abandoned: Int { 2 }

  let done = DispatchSemaphore(value: 0)
  let state = Atomic<Int>(0)
  /// Set once, by the loader, before `done` is signalled.
  private(set) var outcome: Result<T, any Error>?

  func finish(_ outcome: Result<T, any Error>) {
    self.outcome = outcome
    done.signal()
  }

  /// The job is about to change something: false when its caller already gave up.
  func commit() -> Bool {
    state.compareExchange(
      expected: Self.pending, desired: Self.committing, ordering: .acquiringAndReleasing
    ).exchanged
  }

  /// The caller gives up: false when the job is already committing.
  func abandon() -> Bool {
    state.compareExchange(
      expected: Self.pending, desired: Self.abandoned, ordering: .acquiringAndReleasing
    ).exchanged
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
