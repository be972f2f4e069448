import RecServeModels
import RecServeProto
import RecServeRPC

extension TrainService {
  /// The hybrid model's settings and feature tables from the request (defaults where unset),
  /// checked: the feature files must lie under the data root, and their errors name them
  /// relative to it.
  func hybridConfig(_ request: Recserve_V1_TrainRequest, seed: UInt64) throws
    -> ImplicitModelConfig
  {
    var c = HybridConfig(seed: seed, threads: Self.trainingThreads)
    if request.dim != 0 { c.dim = Int(request.dim) }
    if request.epochs != 0 { c.epochs = Int(request.epochs) }
    if request.hasLearningRate { c.learningRate = try Self.learningRate(request) }
    if request.hasRegularization {
      c.itemRegularization = try Self.regularization(request)
      c.userRegularization = c.itemRegularization
    }
    if !request.loss.isEmpty {
      guard let loss = HybridConfig.Loss(rawValue: request.loss) else {
        throw RPCError.invalidArgument("loss must be warp or bpr, got '\(request.loss)'")
      }
      c.loss = loss
    }
    if request.hasIdentityWeight { c.identityWeight = request.identityWeight }
    if request.hasContentDropout { c.contentDropout = request.contentDropout }
    if request.maxSampled != 0 { c.maxSampled = Int(request.maxSampled) }
    if request.hasRecencyBoost { c.recencyBoost = request.recencyBoost }
    if request.hasRecencyHalfLife { c.recencyHalfLife = request.recencyHalfLife }
    do {
      try c.validate()
    } catch {
      throw RPCError.invalidArgument("\(error)")
    }
    guard !request.itemFeaturesPath.isEmpty else {
      throw RPCError.invalidArgument(
        "kind hybrid needs item_features_path (a CSV under the data root whose first column is the item id)"
      )
    }
    let items = try featureTable(
      request.itemFeaturesPath, types: request.itemFeatureTypes, field: "item_features_path")
    if request.userFeaturesPath.isEmpty && !request.userFeatureTypes.isEmpty {
      throw RPCError.invalidArgument("user_feature_types needs user_features_path")
    }
    let users =
      request.userFeaturesPath.isEmpty
      ? nil
      : try featureTable(
        request.userFeaturesPath, types: request.userFeatureTypes, field: "user_features_path")
    return .hybrid(c, HybridInputs(items: items, users: users))
  }

  /// A feature file under the data root, parsed with `types` (e.g. "genres:multi").
  private func featureTable(_ path: String, types: String, field: String) throws
    -> FeatureTable
  {
    guard let root = dataRoot else {
      throw RPCError.failedPrecondition("\(field) needs a server started with --data-root")
    }
    let resolved = try resolve(path, under: root, field: field)
    do {
      var options = FeatureTable.Options()
      if !types.isEmpty {
        let name = field.replacingOccurrences(of: "_path", with: "_types")
        options.types = try FeatureTable.ColumnType.parseOverrides(types, source: name)
      }
      return try FeatureTable.load(path: resolved, options: options)
    } catch let error as DataError {
      throw RPCError.invalidArgument(Self.relative("\(field): \(error)", root: root))
    }
  }
}
