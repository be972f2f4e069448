import Foundation
import RecServeModels

extension ModelRegistry {
  /// What an AddItems call did.
  public struct AddItemsOutcome: Sendable {
    public var version: Int64
    public var added: Int
    /// Ids added before with the same features (a retried call): left as they are.
    public var alreadyPresent: [String]
    /// Added ids none of whose values matched a feature the model knows.
    public var withoutKnownFeatures: [String]
    public var itemCount: Int
  }

  /// A loaded version with the items of its `added_items.jsonl` applied, and for a hybrid
  /// version its feature files (checked). Throws a `DataError` naming the bad file and line.
  public static func withAdditions(_ loaded: LoadedModel) throws -> (
    LoadedModel, ServedVersion.HybridState?
  ) {
    guard loaded.manifest.kind == "hybrid", let mf = loaded.mf else { return (loaded, nil) }
    var state = ServedVersion.HybridState(
      files: try HybridFiles.load(directory: loaded.directory, dim: mf.dim))
    let (items, bytes) = try HybridAdditions.read(directory: loaded.directory)
    state.addedBytes = bytes
    guard !items.isEmpty else { return (loaded, state) }
    let (extended, _) = try HybridAdditions.extend(mf, files: state.files, items: items)
    for item in items { state.added[item.id] = item.features }
    return (loaded.replacing(model: extended), state)
  }

  /// Adds `items` to a loaded hybrid version (by `version`, else `label`, else the one that
  /// serves), each placed by its features: appended to the version's `added_items.jsonl` and
  /// synced, then served from the next request on. All or nothing: an item whose id the version
  /// already has (trained, or added with other features), a repeated id or a value the
  /// features refuse fails the call naming it, and nothing is added. Items added before with
  /// the same features are skipped (a retried call succeeds).
  public func addItems(
    name: String, version: Int64?, label: String?, items: [HybridAdditions.NewItem],
    limit: WaitLimit = .unlimited
  ) throws -> AddItemsOutcome {
    if name.isEmpty { throw RegistryError.invalidRequest("model.name is empty: name the model") }
    if items.isEmpty { throw RegistryError.invalidRequest("items is empty: nothing to add") }
    if items.count > HybridAdditions.maxItemsPerCall {
      throw RegistryError.invalidRequest(
        "\(items.count) items in one call; at most \(HybridAdditions.maxItemsPerCall), send the rest in further calls"
      )
    }
    var ids = Set<String>()
    for (k, item) in items.enumerated() {
      if let problem = HybridAdditions.problem(with: item) {
        throw RegistryError.invalidRequest("items[\(k)]: \(problem)")
      }
      if !ids.insert(item.id).inserted {
        throw RegistryError.invalidRequest("items[\(k)]: id '\(item.id)' appears twice in the call")
      }
    }
    return try perform(
      limit, what: "adding \(items.count) items to '\(name)'", unchanged: "no item was added"
    ) { commit in
      try self.applyAddItems(
        name: name, version: version, label: label, items: items, commit: commit)
    }
  }

  /// Loader thread: the work of `addItems`.
  private func applyAddItems(
    name: String, version: Int64?, label: String?, items: [HybridAdditions.NewItem],
    commit: () -> Bool
  ) throws -> AddItemsOutcome {
    let served = try resolve(name: name, version: version, label: label)
    guard let hybrid = served.hybrid, let mf = served.model as? MFModel else {
      throw RegistryError.refused(
        "version \(served.version) of '\(name)' is a \(served.model.kind) model; only hybrid versions place new items by their features"
      )
    }
    let (fresh, already) = try Self.newItems(items, in: served, model: mf, hybrid: hybrid)
    var outcome = AddItemsOutcome(
      version: served.version, added: fresh.count, alreadyPresent: already,
      withoutKnownFeatures: [], itemCount: mf.itemCount)
    guard !fresh.isEmpty else { return outcome }
    if hybrid.added.count + fresh.count > HybridAdditions.maxAddedItems {
      throw RegistryError.refused(
        "version \(served.version) of '\(name)' would hold more than \(HybridAdditions.maxAddedItems) added items; train a new version that includes them"
      )
    }
    let (extended, unmatched): (MFModel, [String])
    do {
      (extended, unmatched) = try HybridAdditions.extend(mf, files: hybrid.files, items: fresh)
    } catch let error as DataError {
      throw RegistryError.invalidRequest("\(error.description); no item was added")
    }
    guard commit() else { throw CallerGaveUp() }
    var state = hybrid
    do {
      state.addedBytes = try HybridAdditions.append(fresh, directory: served.loaded.directory)
    } catch let error as FileError {
      throw RegistryError(.unavailable, "\(error.description); no item was added")
    }
    for item in fresh { state.added[item.id] = item.features }
    replace(served, with: served.loaded.replacing(model: extended), hybrid: state)
    note(
      "added \(fresh.count) items to version \(served.version) of '\(name)' (now \(extended.itemCount) items)",
      [
        "event": "items_added", "model": name, "version": "\(served.version)",
        "items": "\(fresh.count)",
      ])
    outcome.withoutKnownFeatures = unmatched
    outcome.itemCount = extended.itemCount
    return outcome
  }

  /// The items not yet in the version, and the ids added before with the same features; an
  /// id the version has otherwise is refused.
  private static func newItems(
    _ items: [HybridAdditions.NewItem], in served: ServedVersion, model: MFModel,
    hybrid: ServedVersion.HybridState
  ) throws -> (fresh: [HybridAdditions.NewItem], already: [String]) {
    var fresh: [HybridAdditions.NewItem] = []
    var already: [String] = []
    for (k, item) in items.enumerated() {
      guard model.itemIndex(item.id) != nil else {
        fresh.append(item)
        continue
      }
      if let features = hybrid.added[item.id] {
        guard features == item.features else {
          throw RegistryError.refused(
            "items[\(k)]: item '\(item.id)' was added to version \(served.version) before with other features; an item's features cannot change (train a new version)"
          )
        }
        already.append(item.id)
      } else {
        throw RegistryError.refused(
          "items[\(k)]: item '\(item.id)' is already in version \(served.version) (it was trained)"
        )
      }
    }
    return (fresh, already)
  }

  /// Loader thread: serves `loaded` in place of `served` (same version, same traffic counters,
  /// indexes rebuilt), and publishes.
  func replace(
    _ served: ServedVersion, with loaded: LoadedModel, hybrid: ServedVersion.HybridState?
  ) {
    let next = ServedVersion(
      name: served.name, version: served.version, loaded: loaded, indexes: indexes,
      traffic: served.traffic, hybrid: hybrid)
    next.warm()
    models[served.name]?.records[served.version]?.served = next
    publish(served.name)
  }

  /// Loader thread: loaded hybrid versions whose `added_items.jsonl` changed since it was
  /// applied (an admin appended lines) are loaded again with it; a file that no longer reads
  /// leaves the version as it serves, reported.
  func refreshAdditions(_ name: String) {
    guard let records = models[name]?.records else { return }
    for record in records.values {
      guard let served = record.served, let hybrid = served.hybrid else { continue }
      let path = served.loaded.directory + "/" + HybridAdditions.fileName
      var info = stat()
      let size = stat(path, &info) == 0 ? Int(info.st_size) : 0
      guard size != hybrid.addedBytes else { continue }
      do {
        let (loaded, state) = try Self.withAdditions(
          ModelStore.load(versionDirectory: served.loaded.directory))
        guard let state, state.addedBytes != hybrid.addedBytes else { continue }
        replace(served, with: loaded, hybrid: state)
        note(
          "version \(served.version) of '\(name)' now has \(state.added.count) added items (from \(HybridAdditions.fileName))",
          ["event": "items_added", "model": name, "version": "\(served.version)"])
      } catch {
        note(
          "version \(served.version) of '\(name)': \(error); it keeps serving its \(hybrid.added.count) added items",
          warning: true)
      }
    }
  }
}
