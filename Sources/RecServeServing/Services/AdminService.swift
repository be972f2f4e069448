import Foundation
import RecServeModels
import RecServeProto
import RecServeRPC

/// `recserve.v1.ModelAdmin`: inspect the registry, move labels (promote, roll back, canary),
/// unload versions and re-scan the model folder.
public final class AdminService: Sendable {
  let registry: ModelRegistry

  public init(registry: ModelRegistry) {
    self.registry = registry
  }

  public func listModels(_ request: Recserve_V1_ListModelsRequest) throws
    -> Recserve_V1_ListModelsResponse
  {
    var response = Recserve_V1_ListModelsResponse()
    let snapshot = registry.snapshot
    response.models = snapshot.models.keys.sorted().map { Self.status(of: snapshot.models[$0]!) }
    return response
  }

  public func getModelStatus(_ request: Recserve_V1_GetModelStatusRequest) throws
    -> Recserve_V1_GetModelStatusResponse
  {
    if request.name.isEmpty { throw RPCError.invalidArgument("name is empty: name the model") }
    let snapshot = registry.snapshot
    guard let entry = snapshot.models[request.name] else {
      throw RPCError.notFound(
        "model '\(request.name)' not found (served models: \(snapshot.models.keys.sorted().joined(separator: ", ")))"
      )
    }
    var response = Recserve_V1_GetModelStatusResponse()
    response.status = Self.status(of: entry)
    return response
  }

  /// Waits for the registry's loader (which loads an UNLOADED version first) within the call's
  /// deadline; the caller's thread does no disk work.
  public func setLabel(_ request: Recserve_V1_SetLabelRequest, context: ServerContext? = nil)
    throws -> Recserve_V1_SetLabelResponse
  {
    let entry = try registry.setLabel(
      name: request.name, label: request.label, version: request.version,
      canaryFraction: request.hasCanaryFraction ? request.canaryFraction : nil,
      limit: Self.limit(context))
    var response = Recserve_V1_SetLabelResponse()
    response.status = Self.status(of: entry)
    return response
  }

  /// Adds items to a loaded hybrid version (see `ModelRegistry.addItems`), waiting for the
  /// registry's loader within the call's deadline.
  public func addItems(_ request: Recserve_V1_AddItemsRequest, context: ServerContext? = nil)
    throws -> Recserve_V1_AddItemsResponse
  {
    if !request.hasModel || request.model.name.isEmpty {
      throw RPCError.invalidArgument("model.name is empty: name the model to add items to")
    }
    var version: Int64? = nil
    var label: String? = nil
    switch request.model.selector {
    case .version(let v)?: version = v
    case .label(let l)?:
      if l.isEmpty { throw RPCError.invalidArgument("model.label is empty") }
      label = l
    case nil: break
    }
    let items = request.items.map { HybridAdditions.NewItem(id: $0.id, features: $0.features) }
    let outcome = try registry.addItems(
      name: request.model.name, version: version, label: label, items: items,
      limit: Self.limit(context))
    var response = Recserve_V1_AddItemsResponse()
    response.modelName = request.model.name
    response.modelVersion = outcome.version
    response.added = Int32(outcome.added)
    response.itemCount = Int32(clamping: outcome.itemCount)
    response.alreadyPresent = outcome.alreadyPresent
    response.withoutKnownFeatures = outcome.withoutKnownFeatures
    return response
  }

  public func unloadVersion(
    _ request: Recserve_V1_UnloadVersionRequest, context: ServerContext? = nil
  ) throws -> Recserve_V1_UnloadVersionResponse {
    if request.version <= 0 {
      throw RPCError.invalidArgument("version must be a positive integer, got \(request.version)")
    }
    let entry = try registry.unload(
      name: request.name, version: request.version, limit: Self.limit(context))
    var response = Recserve_V1_UnloadVersionResponse()
    response.status = Self.status(of: entry)
    return response
  }

  /// Re-scans on the registry's loader and waits for it within the call's deadline.
  public func reloadRepository(
    _ request: Recserve_V1_ReloadRepositoryRequest, context: ServerContext? = nil
  ) throws -> Recserve_V1_ReloadRepositoryResponse {
    try registry.reload(within: Self.limit(context))
    var response = Recserve_V1_ReloadRepositoryResponse()
    let snapshot = registry.snapshot
    response.models = snapshot.models.keys.sorted().map { Self.status(of: snapshot.models[$0]!) }
    return response
  }

  /// How long a call may wait for the registry: its deadline, or until its client goes away.
  static func limit(_ context: ServerContext?) -> WaitLimit {
    guard let context else { return .unlimited }
    var deadline: DispatchTime?
    if context.deadlineRemaining.isFinite {
      deadline = DispatchTime(
        uptimeNanoseconds: context.arrival
          &+ UInt64(max(0, min(context.deadlineRemaining, 1e9)) * 1e9))
    }
    return WaitLimit(deadline: deadline, isCancelled: { context.isCancelled })
  }

  static func status(of entry: ModelEntry) -> Recserve_V1_ModelStatus {
    var status = Recserve_V1_ModelStatus()
    status.name = entry.name
    status.servingVersion = entry.serving?.version ?? 0
    status.labels = entry.labels
    if entry.labels[LabelStore.canaryLabel] != nil {
      status.canaryLabel = LabelStore.canaryLabel
      status.canaryFraction = entry.canaryFraction
    }
    for version in entry.versions.keys.sorted() {
      let record = entry.versions[version]!
      var item = Recserve_V1_VersionStatus()
      item.version = version
      switch record.state {
      case .loading: item.state = .loading
      case .available: item.state = .available
      case .failed: item.state = .failed
      case .unloaded: item.state = .unloaded
      }
      item.reason = record.reason
      item.labels = entry.labels.filter { $0.value == version }.keys.sorted()
      if let served = record.served {
        let manifest = served.loaded.manifest
        item.kind = manifest.kind
        item.metrics = manifest.metrics
        item.sizeBytes = Int64(served.loaded.sizeBytes)
        item.createdAt = manifest.createdAt
        item.tuning = manifest.hyperparameters["tuning"].flatMap(Tuner.summary) ?? ""
        let summary = served.traffic.summary()
        var traffic = Recserve_V1_VersionTraffic()
        traffic.calls = Int64(summary.calls)
        traffic.errors = Int64(summary.errors)
        traffic.windowSeconds = summary.windowSeconds
        traffic.callsPerSecond = summary.callsPerSecond
        traffic.errorsPerSecond = summary.errorsPerSecond
        traffic.p50Ms = summary.p50Milliseconds
        traffic.p99Ms = summary.p99Milliseconds
        traffic.role = entry.role(of: version)
        item.traffic = traffic
      }
      status.versions.append(item)
    }
    return status
  }
}
