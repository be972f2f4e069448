import Foundation
import RecServeModels
import RecServeProto
import RecServeRPC
import Synchronization

/// `Recommender.Train`: trains a new version from a file under the data root or from inline
/// interactions, streams progress per epoch, publishes the version and makes it serve.
public final class TrainService: Sendable {
  let registry: ModelRegistry
  let dataRoot: String?
  /// The trainings running (by model name) and waiting, server-wide, and the memory they hold.
  private struct Schedule {
    /// Models with a training running: one per model at a time.
    var running: Set<String> = []
    /// Trainings waiting, first come first: their ticket and model.
    var waiting: [(ticket: Int, name: String)] = []
    var nextTicket = 0
    /// Bytes of the memory budget the running trainings have reserved.
    var reservedBytes = 0
  }
  private let schedule = Mutex(Schedule())
  /// Trainings that may wait, server-wide, behind the ones running; more get RESOURCE_EXHAUSTED.
  public let maxQueued: Int
  /// Trainings that run at once (each of another model).
  public let maxRunning: Int
  /// Bytes all trainings running at once may use, by `TrainingMemory`'s estimates.
  public let memoryBudget: Int

  /// The server's event log (`from_events`), if it keeps one.
  let eventsDirectory: String?

  public init(
    registry: ModelRegistry, dataRoot: String?, maxQueued: Int = 2, maxRunning: Int = 1,
    memoryBudget: Int = TrainService.defaultMemoryBudget, eventsDirectory: String? = nil
  ) {
    self.registry = registry
    self.eventsDirectory = eventsDirectory
    self.maxQueued = max(0, maxQueued)
    self.maxRunning = max(1, maxRunning)
    self.memoryBudget = max(1, memoryBudget)
    self.dataRoot = dataRoot.map {
      (($0 as NSString).resolvingSymlinksInPath as NSString).standardizingPath
    }
  }

  /// A quarter of the memory this process may use: physical memory, or the cgroup's limit when
  /// that is lower (a container).
  public static var defaultMemoryBudget: Int {
    var available = Int(clamping: ProcessInfo.processInfo.physicalMemory)
    for path in [
      "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ] {
      if let text = try? String(contentsOfFile: path, encoding: .utf8),
        let limit = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), limit > 0
      {
        available = min(available, limit)
      }
    }
    return max(1 << 20, available / 4)
  }

  public func train(_ request: Recserve_V1_TrainRequest, writer: ServerStreamWriter) throws {
    do {
      try ModelStore.validateName(request.name)
    } catch {
      throw RPCError.invalidArgument("name: \(error)")
    }
    switch request.kind {
    case "", "mf", "bpr", "als", "sasrec", "hybrid": break
    default:
      throw RPCError.invalidArgument(
        "kind must be one of mf, bpr, als, sasrec, hybrid; got '\(request.kind)'")
    }
    if request.holdout.isNaN || request.holdout < 0 || request.holdout >= 1 {
      throw RPCError.invalidArgument("holdout must be in [0, 1), got \(request.holdout)")
    }
    try Self.rejectFieldsOfOtherKinds(request)
    if ["bpr", "als", "sasrec", "hybrid"].contains(request.kind) {
      try trainImplicit(request, writer: writer)
      return
    }
    let config = try Self.mfConfig(request)
    let holdout = request.hasHoldout ? Double(request.holdout) : 0.1
    let promoteMetric = request.promoteMetric.isEmpty ? "rmse" : request.promoteMetric.lowercased()
    if request.promote {
      guard ["rmse", "mae"].contains(promoteMetric) else {
        throw RPCError.invalidArgument(
          "promote_metric must be rmse or mae for kind mf, got '\(request.promoteMetric)'")
      }
      try Self.validateTolerance(request.promoteTolerance)
      guard holdout > 0 else {
        throw RPCError.invalidArgument(
          "promote compares versions on held-out data: holdout must be above 0")
      }
    }

    // A search may try dims up to 256 (unless dim is given): hold for the largest.
    var largest = config
    if request.tune > 0 && request.dim == 0 { largest.dim = max(config.dim, 256) }
    try withData(
      request, writer: writer, what: "mf, dim \(config.dim)",
      estimate: { TrainingMemory.estimate(mf: largest, data: TrainingDataShape($0)) }
    ) { data in
      try send(
        writer,
        message:
          "training \(request.name) (mf, dim \(config.dim), \(config.epochs) epochs) on \(data.count) interactions"
      )
      try trainMF(
        request, config: config, holdout: holdout, promoteMetric: promoteMetric,
        data: data, writer: writer)
    }
  }

  /// Trains, publishes and maybe promotes an MF version; sends the last message.
  private func trainMF(
    _ request: Recserve_V1_TrainRequest, config: MFConfig, holdout: Double,
    promoteMetric: String, data: Interactions, writer: ServerStreamWriter
  ) throws {
    let result = try statusOfTraining(request.name) {
      try trainAndPublishMF(
        data: data, config: config, holdout: holdout, modelsDirectory: registry.directory,
        name: request.name, tune: Int(request.tune), fixed: Self.fixedSettings(request),
        tuneReport: { line in try? self.send(writer, message: line) },
        progress: progressSender(writer), isCancelled: { writer.isCancelled })
    }
    registry.loadAll()
    var promoted = false
    var decision = ""
    if request.promote {
      let (_, test) = data.randomSplit(holdout: holdout, seed: config.seed)
      (promoted, decision) = try promote(
        name: request.name, version: result.version, metric: promoteMetric,
        tolerance: Double(request.promoteTolerance), higherIsBetter: false,
        newValue: result.metrics[promoteMetric] ?? .infinity,
        comparedOn: "\(test.count) held-out ratings"
      ) { stable in
        let evaluation = RatingMetrics.evaluate(model: stable, on: test)
        return promoteMetric == "mae" ? evaluation.mae : evaluation.rmse
      }
    }
    var text = "published \(request.name) version \(result.version)"
    if let rmse = result.metrics["rmse"] { text += String(format: " (held-out RMSE %.4f)", rmse) }
    if request.promote { text += "; " + decision }
    try sendFinal(
      writer, version: result.version, metrics: result.metrics, promoted: promoted, message: text,
      epochs: config.epochs)
  }

  /// The stream's last message: done, the version, its metrics, whether it was promoted.
  private func sendFinal(
    _ writer: ServerStreamWriter, version: Int64, metrics: [String: Double], promoted: Bool,
    message: String, epochs: Int? = nil
  ) throws {
    var final = Recserve_V1_TrainProgress()
    if let epochs {
      final.epoch = Int32(epochs)
      final.totalEpochs = Int32(epochs)
    }
    final.metrics = metrics
    final.done = true
    final.version = version
    final.promoted = promoted
    final.message = message
    try writer.send(try final.serializedBytes())
  }

  /// Waits for a training slot, loads the request's data within the memory budget, holds the
  /// memory `estimate` says the run needs (with the request's own share), and runs `body` on
  /// the data; the slot and the memory are given back when it returns. Bad data_path or ids
  /// are refused before waiting in line.
  private func withData(
    _ request: Recserve_V1_TrainRequest, writer: ServerStreamWriter, what: String,
    estimate: (Interactions) -> TrainingMemoryEstimate, _ body: (Interactions) throws -> Void
  ) throws {
    let source = try dataSource(request)
    try acquireSlot(request.name, writer: writer)
    defer { releaseSlot(request.name) }
    let memory = MemoryHold(self)
    defer { memory.release() }
    BackgroundPriority.lowerCurrentThread()
    let rows = try rows(of: source) + (request.fromEvents ? eventRows() : 0)
    try memory.hold(
      TrainingMemory.loading(rows: rows), for: "loading \(source.name) (\(rows) rows)")
    let data = try load(source, withEvents: request.fromEvents)
    // Everything the run will allocate, before it allocates it.
    var needs = estimate(data)
    Self.addRequest(request, to: &needs)
    try memory.hold(needs.bytes, for: "training '\(request.name)' (\(what))", parts: needs)
    try body(data)
  }

  /// MF's settings from the request (defaults where unset), checked.
  static func mfConfig(_ request: Recserve_V1_TrainRequest) throws -> MFConfig {
    var config = MFConfig()
    if !request.optimizer.isEmpty {
      guard let optimizer = MFConfig.Optimizer(rawValue: request.optimizer.lowercased()) else {
        throw RPCError.invalidArgument("optimizer must be sgd or adam, got '\(request.optimizer)'")
      }
      config.use(optimizer)
    }
    if request.earlyStopping < 0 {
      throw RPCError.invalidArgument(
        "early_stopping must be 0 (off) or a number of epochs, got \(request.earlyStopping)")
    }
    if request.earlyStopping > 0 { config.earlyStoppingPatience = Int(request.earlyStopping) }
    if request.dim != 0 { config.dim = Int(request.dim) }
    if request.epochs != 0 { config.epochs = Int(request.epochs) }
    if request.seed != 0 { config.seed = UInt64(bitPattern: request.seed) }
    if request.hasLearningRate { config.learningRate = try Self.learningRate(request) }
    if request.hasRegularization { config.regularization = try Self.regularization(request) }
    do {
      try config.validate()
    } catch {
      throw RPCError.invalidArgument("\(error)")
    }
    return config
  }

  /// BPR, ALS or SASRec on implicit feedback (every interaction positive), evaluated by full ranking
  /// with leave-last-out (or a random holdout when `holdout` is set; 0 trains on everything).
  private func trainImplicit(_ request: Recserve_V1_TrainRequest, writer: ServerStreamWriter) throws
  {
    let promoteMetric =
      request.promoteMetric.isEmpty ? "ndcg@10" : request.promoteMetric.lowercased()
    var ks = [10]
    if request.promote {
      guard let k = Self.rankingMetricK(promoteMetric) else {
        throw RPCError.invalidArgument(
          "promote_metric must be a ranking metric at K (hr, precision, recall, f1, ndcg, mrr or map, e.g. ndcg@10) for kind \(request.kind), got '\(request.promoteMetric)'"
        )
      }
      try Self.validateTolerance(request.promoteTolerance)
      if request.hasHoldout && request.holdout == 0 {
        throw RPCError.invalidArgument(
          "promote compares versions on held-out data: holdout must be above 0 (or unset for leave-last-out)"
        )
      }
      if k != 10 { ks.append(k) }
    }
    let seed = request.seed != 0 ? UInt64(bitPattern: request.seed) : 42
    let config =
      request.kind == "hybrid"
      ? try hybridConfig(request, seed: seed) : try Self.implicitConfig(request, seed: seed)
    let split: ImplicitSplit =
      request.hasHoldout
      ? (request.holdout == 0 ? .none : .holdout(Double(request.holdout))) : .leaveLastOut
    try withData(
      request, writer: writer, what: "\(request.kind), dim \(config.dim)",
      estimate: { TrainingMemory.estimate(config, data: TrainingDataShape($0)) }
    ) { data in
      try send(
        writer, message: "training \(request.name) (\(request.kind)) on \(data.count) interactions")
      try trainImplicit(
        request, config: config, split: split, ks: ks, seed: seed, promoteMetric: promoteMetric,
        data: data, writer: writer)
    }
  }

  /// Trains, publishes and maybe promotes a BPR, ALS or SASRec version; sends the last message.
  private func trainImplicit(
    _ request: Recserve_V1_TrainRequest, config: ImplicitModelConfig, split: ImplicitSplit,
    ks: [Int], seed: UInt64, promoteMetric: String, data: Interactions, writer: ServerStreamWriter
  ) throws {
    let fixed = Self.fixedSettings(request)
    let result = try statusOfTraining(request.name) {
      try trainAndPublishImplicit(
        data: data, config: config, split: split, ks: ks, modelsDirectory: registry.directory,
        name: request.name, tune: Int(request.tune), fixed: fixed,
        tuneReport: { line in try? self.send(writer, message: line) },
        progress: progressSender(writer), isCancelled: { writer.isCancelled })
    }
    registry.loadAll()
    var promoted = false
    var decision = ""
    if request.promote {
      let (train, test) = try split.apply(to: data, seed: seed)
      let k = Self.rankingMetricK(promoteMetric) ?? 10
      (promoted, decision) = try promote(
        name: request.name, version: result.version, metric: promoteMetric,
        tolerance: Double(request.promoteTolerance), higherIsBetter: true,
        newValue: result.metrics[promoteMetric] ?? -.infinity,
        comparedOn: "\(test.count) held-out interactions (\(split.name))"
      ) { stable in
        RankingEvaluator.evaluate(
          model: stable, train: train, test: test,
          config: RankingEvaluationConfig(
            ks: [k], fullRanking: true, sampled: false, seed: seed, threads: Self.trainingThreads)
        ).metrics[promoteMetric] ?? -.infinity
      }
    }
    var text = "published \(request.name) version \(result.version)"
    if let ndcg = result.metrics["ndcg@10"] {
      text += String(format: " (NDCG@10 %.4f, %@)", ndcg, split.name)
    }
    if request.promote { text += "; " + decision }
    try sendFinal(
      writer, version: result.version, metrics: result.metrics, promoted: promoted, message: text)
  }

  /// BPR's, ALS's or SASRec's settings from the request (defaults where unset), checked;
  /// settings of the other kinds are refused.
  static func implicitConfig(_ request: Recserve_V1_TrainRequest, seed: UInt64) throws
    -> ImplicitModelConfig
  {
    let config: ImplicitModelConfig
    if request.kind == "sasrec" {
      if request.hasRegularization {
        throw RPCError.invalidArgument("regularization does not apply to kind sasrec (use dropout)")
      }
      var sasrec = SASRecConfig(seed: seed, threads: Self.trainingThreads)
      if request.dim != 0 { sasrec.dim = Int(request.dim) }
      if request.epochs != 0 { sasrec.epochs = Int(request.epochs) }
      if request.hasLearningRate { sasrec.learningRate = try Self.learningRate(request) }
      if request.maxlen != 0 { sasrec.maxlen = Int(request.maxlen) }
      if request.blocks != 0 { sasrec.blocks = Int(request.blocks) }
      if request.heads != 0 { sasrec.heads = Int(request.heads) }
      if request.hasDropout { sasrec.dropout = request.dropout }
      if request.batchSize != 0 { sasrec.batchSize = Int(request.batchSize) }
      config = .sasrec(sasrec)
    } else if request.kind == "bpr" {
      var bpr = BPRConfig(seed: seed, threads: Self.trainingThreads)
      if request.dim != 0 { bpr.dim = Int(request.dim) }
      if request.epochs != 0 { bpr.epochs = Int(request.epochs) }
      if request.hasLearningRate { bpr.learningRate = try Self.learningRate(request) }
      if request.hasRegularization { bpr.regularization = try Self.regularization(request) }
      if request.negativeCandidates != 0 {
        bpr.negativeCandidates = Int(request.negativeCandidates)
      }
      if !request.negativeSampling.isEmpty {
        guard let n = BPRConfig.NegativeSampling(rawValue: request.negativeSampling) else {
          throw RPCError.invalidArgument(
            "negative_sampling must be uniform or popularity, got '\(request.negativeSampling)'")
        }
        bpr.negativeSampling = n
      }
      if request.hasRecencyBoost { bpr.recencyBoost = request.recencyBoost }
      if request.hasRecencyHalfLife { bpr.recencyHalfLife = request.recencyHalfLife }
      config = .bpr(bpr)
    } else {
      var als = ALSConfig(seed: seed, threads: Self.trainingThreads)
      if request.dim != 0 { als.dim = Int(request.dim) }
      if request.epochs != 0 { als.iterations = Int(request.epochs) }
      if request.hasLearningRate {
        throw RPCError.invalidArgument(
          "learning_rate does not apply to kind als (it solves for each row; see cg_steps)")
      }
      if request.hasRegularization { als.regularization = try Self.regularization(request) }
      if request.hasAlpha { als.alpha = request.alpha }
      if request.cgSteps != 0 { als.cgSteps = Int(request.cgSteps) }
      if request.popularityExponent != 0 { als.popularityExponent = request.popularityExponent }
      if request.hasRecencyBoost { als.recencyBoost = request.recencyBoost }
      if request.hasRecencyHalfLife { als.recencyHalfLife = request.recencyHalfLife }
      config = .als(als)
    }
    do {
      try config.validate()
    } catch {
      throw RPCError.invalidArgument("\(error)")
    }
    return config
  }

  /// Training inside the server leaves a core to the request threads.
  static let trainingThreads = max(1, ProcessInfo.processInfo.activeProcessorCount - 1)

  /// The ticket of the waiting training that starts next when a place frees up: the first in
  /// line whose model has no training running. Nil when none can start (the cap is reached).
  private func nextToStart(_ schedule: Schedule) -> Int? {
    guard schedule.running.count < maxRunning else { return nil }
    return schedule.waiting.first { !schedule.running.contains($0.name) }?.ticket
  }

  /// Waits for a place to train `name` (one training per model, at most `maxRunning` at once,
  /// first come first served; the client is told it is queued), or refuses when the queue is
  /// full or the client goes away meanwhile.
  private func acquireSlot(_ name: String, writer: ServerStreamWriter) throws {
    enum Outcome {
      case run
      case wait(ticket: Int, position: Int)
      case full(running: Int)
    }
    let outcome = schedule.withLock { schedule -> Outcome in
      // Straight in when there is room and no one waiting could take it.
      if schedule.running.count < maxRunning && !schedule.running.contains(name)
        && nextToStart(schedule) == nil
      {
        schedule.running.insert(name)
        return .run
      }
      guard schedule.waiting.count < maxQueued else {
        return .full(running: schedule.running.count)
      }
      let ticket = schedule.nextTicket
      schedule.nextTicket += 1
      schedule.waiting.append((ticket, name))
      return .wait(ticket: ticket, position: schedule.waiting.count)
    }
    switch outcome {
    case .run:
      return
    case .full(let running):
      throw RPCError(
        .resourceExhausted,
        "the training queue is full: \(running) training(s) running (at most \(maxRunning) at once, "
          + "--max-trainings; one per model) and \(maxQueued) waiting; try again when one ends")
    case .wait(let ticket, let position):
      var cancelled = false
      do {
        try send(
          writer,
          message:
            "queued: waiting for \(position) training(s) to end (at most \(maxRunning) run at once, one per model)"
        )
      } catch {
        cancelled = true
      }
      while !cancelled {
        let started = schedule.withLock { schedule -> Bool in
          guard nextToStart(schedule) == ticket else { return false }
          schedule.running.insert(name)
          schedule.waiting.removeAll { $0.ticket == ticket }
          return true
        }
        if started { return }
        if writer.isCancelled { cancelled = true }
        usleep(50_000)
      }
      schedule.withLock { schedule in schedule.waiting.removeAll { $0.ticket == ticket } }
      throw RPCError(.cancelled, "the client went away while the training was queued")
    }
  }

  private func releaseSlot(_ name: String) {
    _ = schedule.withLock { schedule in schedule.running.remove(name) }
  }

  /// The share of the memory budget one training holds: raised (or refused) as the training
  /// learns how much it needs, given back when it ends.
  final class MemoryHold {
    let service: TrainService
    private(set) var bytes = 0

    init(_ service: TrainService) { self.service = service }

    /// Holds `bytes` in place of what this training held so far, or throws RESOURCE_EXHAUSTED
    /// saying what `what` needs (with `parts`, what for) and what the budget allows.
    func hold(
      _ bytes: Int, for what: @autoclosure () -> String, parts: TrainingMemoryEstimate? = nil
    ) throws {
      let budget = service.memoryBudget
      let held = self.bytes
      let othersHold = service.schedule.withLock { schedule -> Int? in
        let others = schedule.reservedBytes - held
        guard others + bytes <= budget else { return others }
        schedule.reservedBytes = others + bytes
        return nil
      }
      guard let othersHold else {
        self.bytes = bytes
        return
      }
      let mib = TrainingMemoryEstimate.mebibytes
      var message = "\(what()) needs about \(mib(bytes)) MiB"
      if let parts { message += " (\(parts))" }
      if bytes > budget {
        message +=
          ", over the server's training memory budget of \(mib(budget)) MiB (--train-memory-mb); "
          + "use a smaller dim or less data, or raise the budget"
      } else {
        message +=
          ", and the trainings running hold \(mib(othersHold)) MiB of the server's training memory "
          + "budget of \(mib(budget)) MiB (--train-memory-mb); try again when one ends"
      }
      throw RPCError(.resourceExhausted, message)
    }

    func release() {
      let held = bytes
      bytes = 0
      if held > 0 { service.schedule.withLock { $0.reservedBytes -= held } }
    }
  }

  /// Runs a training; a cancel says that nothing was published. Other errors carry their
  /// status (ErrorStatus.swift); an unexpected one reaches the client as a generic INTERNAL
  /// with a request id.
  private func statusOfTraining<Result>(_ name: String, _ body: () throws -> Result) throws
    -> Result
  {
    do {
      return try body()
    } catch TrainingError.cancelled {
      throw RPCError(.cancelled, "training of '\(name)' was cancelled; nothing was published")
    }
  }

  /// Streams one progress message per epoch; stops training when the client is gone.
  private func progressSender(_ writer: ServerStreamWriter) -> TrainingProgressHandler {
    { progress in
      if writer.isCancelled { return false }
      var message = Recserve_V1_TrainProgress()
      message.epoch = Int32(progress.epoch)
      message.totalEpochs = Int32(progress.epochs)
      message.loss = progress.loss
      message.metrics = progress.validation
      message.etaSeconds = progress.etaSeconds
      do {
        try writer.send(try message.serializedBytes())
      } catch {
        return false
      }
      return true
    }
  }

  /// Moves `stable` to the new version when it is not worse than the current stable one on the
  /// same held-out rows (lower is better for rmse and mae).
  /// Moves `stable` to `version` when it is not worse than the current stable version by more
  /// than `tolerance` on `metric`, as scored by `stableValue` on the same held-out rows the new
  /// version's `newValue` came from. With no stable version, or one that cannot serve, the new
  /// version becomes stable. Returns whether it did and a sentence saying why.
  private func promote(
    name: String, version: Int64, metric: String, tolerance: Double, higherIsBetter: Bool,
    newValue: Double, comparedOn: String,
    stableValue: (any RecommendationModel) -> Double
  ) throws -> (Bool, String) {
    let entry = registry.snapshot.models[name]
    guard let stableVersion = entry?.labels[LabelStore.stableLabel], stableVersion != version else {
      _ = try registry.setLabel(
        name: name, label: LabelStore.stableLabel, version: version, canaryFraction: nil)
      return (true, "no stable version to compare with: version \(version) is now stable")
    }
    let stable: ServedVersion
    do {
      stable = try registry.resolve(name: name, version: stableVersion, label: nil)
    } catch {
      _ = try registry.setLabel(
        name: name, label: LabelStore.stableLabel, version: version, canaryFraction: nil)
      return (
        true,
        "stable version \(stableVersion) cannot serve (\(error)): version \(version) is now stable"
      )
    }
    let old = stableValue(stable.model)
    let comparison = String(
      format:
        "compared %@ on %@: new version %lld %.4f vs stable version %lld %.4f (%@ is better, tolerance %.4f)",
      metric, comparedOn, version, newValue, stableVersion, old,
      higherIsBetter ? "higher" : "lower", tolerance)
    let notWorse = higherIsBetter ? newValue >= old - tolerance : newValue <= old + tolerance
    if notWorse {
      _ = try registry.setLabel(
        name: name, label: LabelStore.stableLabel, version: version, canaryFraction: nil)
      return (true, comparison + ": promoted, version \(version) is now stable")
    }
    return (false, comparison + ": not promoted, stable stays at version \(stableVersion)")
  }

  /// INVALID_ARGUMENT naming the first field that is set but means nothing for the request's
  /// kind (so a misplaced option is not silently ignored).
  static func rejectFieldsOfOtherKinds(_ request: Recserve_V1_TrainRequest) throws {
    let kind = request.kind.isEmpty ? "mf" : request.kind
    // Each kind-specific field: whether it is set, and the kind it belongs to.
    let fields: [(String, Bool, String)] = [
      ("alpha", request.hasAlpha, "als"),
      ("batch_size", request.batchSize != 0, "sasrec"),
      ("blocks", request.blocks != 0, "sasrec"),
      ("dropout", request.hasDropout, "sasrec"),
      ("heads", request.heads != 0, "sasrec"),
      ("maxlen", request.maxlen != 0, "sasrec"),
      ("cg_steps", request.cgSteps != 0, "als"),
      ("early_stopping", request.earlyStopping != 0, "mf"),
      ("negative_candidates", request.negativeCandidates != 0, "bpr"),
      ("negative_sampling", !request.negativeSampling.isEmpty, "bpr"),
      ("optimizer", !request.optimizer.isEmpty, "mf"),
      ("popularity_exponent", request.popularityExponent != 0, "als"),
      ("item_features_path", !request.itemFeaturesPath.isEmpty, "hybrid"),
      ("user_features_path", !request.userFeaturesPath.isEmpty, "hybrid"),
      ("item_feature_types", !request.itemFeatureTypes.isEmpty, "hybrid"),
      ("user_feature_types", !request.userFeatureTypes.isEmpty, "hybrid"),
      ("loss", !request.loss.isEmpty, "hybrid"),
      ("identity_weight", request.hasIdentityWeight, "hybrid"),
      ("content_dropout", request.hasContentDropout, "hybrid"),
      ("max_sampled", request.maxSampled != 0, "hybrid"),
    ]
    if let (field, _, _) = fields.first(where: { $0.1 && $0.2 != kind }) {
      throw RPCError.invalidArgument("\(field) does not apply to kind \(kind)")
    }
    for (field, given) in [
      ("recency_boost", request.hasRecencyBoost),
      ("recency_half_life", request.hasRecencyHalfLife),
    ] where given && kind != "bpr" && kind != "als" && kind != "hybrid" {
      throw RPCError.invalidArgument("\(field) applies to kinds bpr, als and hybrid, not \(kind)")
    }
    if request.tune != 0 {
      guard kind != "sasrec" else {
        throw RPCError.invalidArgument(
          "tune applies to kinds mf, bpr, als and hybrid, not \(kind)")
      }
      guard (1...200).contains(request.tune) else {
        throw RPCError.invalidArgument("tune must be in 1...200 trials, got \(request.tune)")
      }
    }
  }

  /// The settings a request gives, which a search keeps (names as in model.json).
  static func fixedSettings(_ request: Recserve_V1_TrainRequest) -> Set<String> {
    var fixed: Set<String> = []
    for (setting, given) in [
      ("lr", request.hasLearningRate), ("reg", request.hasRegularization),
      ("dim", request.dim != 0), ("epochs", request.epochs != 0),
      ("optimizer", !request.optimizer.isEmpty),
      ("alpha", request.hasAlpha),
      ("negative_candidates", request.negativeCandidates != 0),
      ("negative_sampling", !request.negativeSampling.isEmpty),
      ("recency_boost", request.hasRecencyBoost),
      ("recency_half_life", request.hasRecencyHalfLife),
      ("item_reg", request.hasRegularization), ("loss", !request.loss.isEmpty),
      ("identity_weight", request.hasIdentityWeight),
      ("content_dropout", request.hasContentDropout),
    ] where given {
      fixed.insert(setting)
    }
    return fixed
  }

  /// `learning_rate` when set: a positive finite number (unset means the kind's default).
  static func learningRate(_ request: Recserve_V1_TrainRequest) throws -> Float {
    let rate = request.learningRate
    guard rate.isFinite, rate > 0 else {
      throw RPCError.invalidArgument(
        "learning_rate must be a positive number (leave it unset for the kind's default), got \(rate)"
      )
    }
    return rate
  }

  /// `regularization` when set: a finite number >= 0 (0: none; unset means the kind's default).
  static func regularization(_ request: Recserve_V1_TrainRequest) throws -> Float {
    let value = request.regularization
    guard value.isFinite, value >= 0 else {
      throw RPCError.invalidArgument(
        "regularization must be a finite number >= 0 (0: none; leave it unset for the kind's default), got \(value)"
      )
    }
    return value
  }

  static func validateTolerance(_ tolerance: Float) throws {
    guard tolerance.isFinite, tolerance >= 0 else {
      throw RPCError.invalidArgument(
        "promote_tolerance must be a finite number >= 0, got \(tolerance)")
    }
  }

  /// K of a ranking metric name such as "ndcg@10" (K in 1...1000), else nil.
  static func rankingMetricK(_ metric: String) -> Int? {
    let parts = metric.split(separator: "@", omittingEmptySubsequences: false)
    guard parts.count == 2,
      ["hr", "precision", "recall", "f1", "ndcg", "mrr", "map"].contains(String(parts[0])),
      let k = Int(parts[1]), (1...1000).contains(k)
    else { return nil }
    return k
  }

  private func send(_ writer: ServerStreamWriter, message: String) throws {
    var progress = Recserve_V1_TrainProgress()
    progress.message = message
    try writer.send(try progress.serializedBytes())
  }

  /// Inline interactions stay in memory for the whole call: the decoded request, and the rows
  /// copied from it (about 160 bytes a row besides the ids' text, which the data part counts).
  static func addRequest(
    _ request: Recserve_V1_TrainRequest, to estimate: inout TrainingMemoryEstimate
  ) {
    estimate.add("request", request.interactions.count * 160)
  }

  /// Where a request's interactions come from.
  enum DataSource {
    case inline([Recserve_V1_Interaction])
    /// A checked path under the data root, the path as the request named it, and the root.
    case file(path: String, named: String, root: String)
    /// Only the server's event log (`from_events`).
    case eventsOnly

    var name: String {
      switch self {
      case .inline: return "interactions"
      case .file(_, let named, _): return "data_path '\(named)'"
      case .eventsOnly: return "the server's events"
      }
    }
  }

  func dataSource(_ request: Recserve_V1_TrainRequest) throws -> DataSource {
    let hasPath = !request.dataPath.isEmpty
    let hasRows = !request.interactions.isEmpty
    if hasPath && hasRows {
      throw RPCError.invalidArgument("give either data_path or interactions, not both")
    }
    if request.fromEvents && eventsDirectory == nil {
      throw RPCError.failedPrecondition(
        "from_events needs a server that keeps events (started with --events-dir)")
    }
    if request.fromEvents && !hasPath && !hasRows { return .eventsOnly }
    if hasRows {
      // Ids are stored one a line as text: a NUL or a line break would publish a version that
      // can never load.
      for (index, row) in request.interactions.enumerated() {
        try Self.checkStorableId(row.userID, field: "interactions[\(index)].user_id")
        try Self.checkStorableId(row.itemID, field: "interactions[\(index)].item_id")
      }
      return .inline(request.interactions)
    }
    guard hasPath else {
      throw RPCError.invalidArgument(
        "give data_path (a file under the server's --data-root), interactions, or from_events")
    }
    guard let root = dataRoot else {
      throw RPCError.failedPrecondition(
        "data_path needs a server started with --data-root; send the interactions inline instead")
    }
    return .file(
      path: try resolve(request.dataPath, under: root), named: request.dataPath, root: root)
  }

  /// Rows the source holds at most (a file's lines), known without loading it.
  func rows(of source: DataSource) throws -> Int {
    switch source {
    case .eventsOnly:
      return 0
    case .inline(let rows):
      return rows.count
    case .file(let path, let named, _):
      guard let lines = Self.countLines(path) else {
        throw RPCError.invalidArgument("data_path '\(named)' cannot be read")
      }
      return lines
    }
  }

  /// Rows the event log holds at most (its bytes over the smallest event's), known without
  /// reading it.
  func eventRows() -> Int {
    guard let eventsDirectory,
      let segments = try? EventLogFormat.segments(in: eventsDirectory)
    else { return 0 }
    return segments.reduce(0) { n, segment in
      var info = stat()
      return n + (stat(segment.path, &info) == 0 ? Int(info.st_size) / 24 : 0)
    }
  }

  /// The source's rows, then (with `withEvents`) the event log's.
  func load(_ source: DataSource, withEvents: Bool) throws -> Interactions {
    let base: Interactions? = if case .eventsOnly = source { nil } else { try load(source) }
    guard withEvents, let eventsDirectory else { return base! }
    do {
      return try Interactions.fromEvents(directory: eventsDirectory, joining: base)
    } catch let error as DataError {
      throw RPCError.failedPrecondition("from_events: \(error.message)")
    }
  }

  func load(_ source: DataSource) throws -> Interactions {
    switch source {
    case .eventsOnly:
      throw RPCError.internal("no data source but the events")
    case .inline(let interactions):
      let rows = interactions.map {
        InteractionRow(user: $0.userID, item: $0.itemID, rating: $0.rating, timestamp: $0.timestamp)
      }
      do {
        return try Interactions(rows: rows, source: "interactions")
      } catch {
        throw RPCError.invalidArgument("\(error)")
      }
    case .file(let path, _, let root):
      do {
        return try Interactions.load(path: path)
      } catch {
        throw RPCError.invalidArgument(Self.relative("\(error)", root: root))
      }
    }
  }

  /// Lines in a file (a last line without a newline counts), read in chunks; nil when it cannot
  /// be read.
  static func countLines(_ path: String) -> Int? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    let size = 1 << 20
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
    defer { buffer.deallocate() }
    var lines = 0
    var last: UInt8 = 10
    while true {
      let count = read(fd, buffer, size)
      if count < 0 {
        if errno == EINTR { continue }
        return nil
      }
      if count == 0 { break }
      var at = buffer
      let end = buffer + count
      while at < end, let hit = memchr(at, 10, end - at) {
        lines += 1
        at = hit + 1
      }
      last = buffer.load(fromByteOffset: count - 1, as: UInt8.self)
    }
    return lines + (last == 10 ? 0 : 1)
  }

  /// INVALID_ARGUMENT naming `field` when `id` holds a NUL byte or a line break.
  static func checkStorableId(_ id: String, field: @autoclosure () -> String) throws {
    for byte in id.utf8 where byte == 0 || byte == 10 || byte == 13 {
      throw RPCError.invalidArgument(
        byte == 0
          ? "\(field()) contains a NUL byte"
          : "\(field()) contains a line break (ids are stored one a line)")
    }
  }

  /// The file `path` names under `root`, refusing anything that leaves it (`..`, absolute paths
  /// elsewhere, symbolic links pointing out).
  func resolve(_ path: String, under root: String, field: String = "data_path") throws -> String {
    if path.utf8.contains(0) { throw RPCError.invalidArgument("\(field) contains a NUL byte") }
    let joined = path.hasPrefix("/") ? path : (root as NSString).appendingPathComponent(path)
    let resolved = ((joined as NSString).resolvingSymlinksInPath as NSString).standardizingPath
    guard resolved == root || resolved.hasPrefix(root.hasSuffix("/") ? root : root + "/") else {
      throw RPCError(.permissionDenied, "\(field) '\(path)' lies outside the server's data root")
    }
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: resolved, isDirectory: &isDirectory) else {
      throw RPCError.notFound("\(field) '\(path)' does not exist under the data root")
    }
    if isDirectory.boolValue {
      throw RPCError.invalidArgument("\(field) '\(path)' is a folder, not a file")
    }
    return resolved
  }

  /// Error messages name files relative to the data root, not by the server's own paths.
  static func relative(_ message: String, root: String) -> String {
    message.replacingOccurrences(of: root.hasSuffix("/") ? root : root + "/", with: "")
  }
}
