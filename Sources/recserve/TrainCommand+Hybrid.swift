import ArgumentParser
import RecServeModels

extension TrainCommand {
  /// The hybrid options are for --kind hybrid, which needs --item-features.
  func checkHybridOptions() throws {
    if kind == "hybrid" {
      guard itemFeatures != nil else {
        throw ValidationError(
          "--kind hybrid needs --item-features FILE (a CSV whose first column is the item id)")
      }
      return
    }
    for (flag, set) in [
      ("--item-features", itemFeatures != nil), ("--user-features", userFeatures != nil),
      ("--feature-types", featureTypes != nil), ("--user-feature-types", userFeatureTypes != nil),
      ("--loss", loss != nil),
      ("--identity-weight", identityWeight != nil), ("--max-sampled", maxSampled != nil),
      ("--content-dropout", contentDropout != nil),
    ] where set {
      throw ValidationError("\(flag) is for --kind hybrid")
    }
  }

  /// The hybrid model's settings and feature tables from the options, checked.
  func hybridConfig() throws -> ImplicitModelConfig {
    var c = HybridConfig()
    if let dim { c.dim = dim }
    if let epochs { c.epochs = epochs }
    if let lr { c.learningRate = lr }
    if let reg {
      c.itemRegularization = reg
      c.userRegularization = reg
    }
    if let loss {
      guard let l = HybridConfig.Loss(rawValue: loss) else {
        throw ValidationError("unknown --loss '\(loss)' (expected warp or bpr)")
      }
      c.loss = l
    }
    if let identityWeight { c.identityWeight = identityWeight }
    if let contentDropout { c.contentDropout = contentDropout }
    if let maxSampled { c.maxSampled = maxSampled }
    if let recencyBoost { c.recencyBoost = recencyBoost }
    if let recencyHalfLife { c.recencyHalfLife = recencyHalfLife }
    if let threads { c.threads = threads }
    c.seed = seed
    try c.validate()
    var itemOptions = FeatureTable.Options()
    if let featureTypes {
      itemOptions.types = try FeatureTable.ColumnType.parseOverrides(featureTypes)
    }
    var userOptions = FeatureTable.Options()
    if let userFeatureTypes {
      userOptions.types = try FeatureTable.ColumnType.parseOverrides(
        userFeatureTypes, source: "--user-feature-types")
    }
    if userFeatureTypes != nil && userFeatures == nil {
      throw ValidationError("--user-feature-types needs --user-features FILE")
    }
    let items = try FeatureTable.load(path: itemFeatures!, options: itemOptions)
    let users = try userFeatures.map { try FeatureTable.load(path: $0, options: userOptions) }
    return .hybrid(c, HybridInputs(items: items, users: users))
  }
}
