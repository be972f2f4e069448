import Atomics
import Foundation
import RecServeModels
import RecServeProto
import RecServeRPC
import SwiftProtobuf

/// The RecServe gRPC server: Recommender, ModelAdmin, Health and reflection over one registry.
public final class RecServeServer: Sendable {
  public struct Configuration: Sendable {
    public var host = "127.0.0.1"
    public var port = 50051
    public var threads = max(1, ProcessInfo.processInfo.activeProcessorCount)
    public var modelsDirectory: String
    public var dataRoot: String?
    /// When set, ModelAdmin and Train need `authorization: Bearer <token>`.
    public var adminToken: String?
    public var maxReceiveMessageBytes = 16 << 20
    /// Seconds between scans of the model folder for new versions (0: no polling).
    public var pollInterval = 1.0
    /// Available versions kept loaded per model, besides labelled ones.
    public var keepVersions = 2
    /// Threads and queue for expensive requests (see `RPCServer.Configuration`).
    public var workThreads = max(1, ProcessInfo.processInfo.activeProcessorCount - 1)
    public var workQueue = 32
    /// Server-streaming calls at once, in total, and calls per client connection.
    public var maxStreams = 128
    public var maxStreamsPerConnection = 100
    /// What one request may ask for, and when it leaves the request threads.
    public var limits = RecommenderService.Limits()
    /// Threads that serve batches of concurrent Rank requests (0: no batching).
    public var batchThreads = 1
    /// Most requests in one batch.
    public var maxBatch = 32
    /// Microseconds a batch waits for more requests once one waits (0: none).
    public var batchWaitMicroseconds = 0
    /// Scans smaller than this (items x dim multiply-adds) are never batched: they cost less
    /// than handing them to another thread.
    public var batchMinWork = 1_000_000
    /// Search structures built for each loaded version (`--f16`, `--ivf-min-items`, ...).
    public var indexes = IndexOptions()
    /// Bytes the Train RPCs running at once may use, by their estimates (over it:
    /// RESOURCE_EXHAUSTED before anything is allocated).
    public var trainMemoryBytes = TrainService.defaultMemoryBudget
    /// Train RPCs running at once (one per model); more wait in one server-wide queue.
    public var maxTrainings = 1
    /// TLS (and mutual TLS) on the gRPC port; nil: plain text.
    public var tls: RPCServer.Configuration.TLS? = nil

    public init(modelsDirectory: String) {
      self.modelsDirectory = modelsDirectory
    }
  }

  public let configuration: Configuration
  public let registry: ModelRegistry
  public let rpc: RPCServer
  let recommender: RecommenderService
  let admin: AdminService
  let health: HealthService
  let reflection: ReflectionResponder
  let trainer: TrainService
  let batcher: RankBatcher?
  /// Catalog-scale Ranks in flight, batched or not: one that finds none is served alone.
  let rankers: RanksInFlight
  /// Samples each version's traffic for rates over the last minute.
  let sampler: TrafficSampler
  /// Set by `beginDraining()`: health answers NOT_SERVING while calls are served as usual.
  private let draining = ManagedAtomic<Bool>(false)

  public init(configuration: Configuration) {
    self.configuration = configuration
    registry = ModelRegistry(
      directory: configuration.modelsDirectory, keepVersions: configuration.keepVersions,
      indexes: configuration.indexes)
    var rpcConfiguration = RPCServer.Configuration(
      host: configuration.host, port: configuration.port, threads: configuration.threads,
      maxReceiveMessageBytes: configuration.maxReceiveMessageBytes)
    rpcConfiguration.workThreads = configuration.workThreads
    rpcConfiguration.workQueue = configuration.workQueue
    rpcConfiguration.maxStreams = configuration.maxStreams
    rpcConfiguration.maxConcurrentStreamsPerConnection = configuration.maxStreamsPerConnection
    rpcConfiguration.tls = configuration.tls
    rpc = RPCServer(configuration: rpcConfiguration)
    recommender = RecommenderService(registry: registry, limits: configuration.limits)
    rankers = RanksInFlight()
    batcher =
      configuration.batchThreads > 0
      ? RankBatcher(
        service: recommender, inFlight: rankers, threads: configuration.batchThreads,
        maxBatch: configuration.maxBatch, maxWait: configuration.batchWaitMicroseconds,
        parallel: configuration.limits.cores) : nil
    admin = AdminService(registry: registry)
    sampler = TrafficSampler(registry: registry)
    let rpc = self.rpc
    let draining = self.draining
    health = HealthService(
      registry: registry, isDraining: { draining.load(ordering: .relaxed) },
      isShuttingDown: { [weak rpc] in rpc?.isShuttingDown ?? true })
    reflection = ReflectionResponder()
    trainer = TrainService(
      registry: registry, dataRoot: configuration.dataRoot,
      maxRunning: configuration.maxTrainings, memoryBudget: configuration.trainMemoryBytes)
    registerMethods()
  }

  /// Loads the models and starts listening; returns the bound port.
  @discardableResult
  public func start() throws -> Int {
    let port = try rpc.start()
    registry.startPolling(interval: configuration.pollInterval)
    sampler.start()
    return port
  }

  /// Turns every health status to NOT_SERVING while calls go on being served, so that load
  /// balancers checking grpc.health.v1 move traffic away before `shutdown` closes the port.
  public func beginDraining() {
    draining.store(true, ordering: .relaxed)
  }

  /// True once `beginDraining()` was called.
  public var isDraining: Bool { draining.load(ordering: .relaxed) }

  public func shutdown(gracePeriod: Double = 10) {
    registry.stopPolling()
    rpc.shutdown(gracePeriod: gracePeriod)
    batcher?.stop()
    sampler.stop()
  }

  /// Returns once the server has shut down (see `shutdown`), its Rank batcher included.
  public func wait() {
    rpc.wait()
    batcher?.waitUntilStopped()
  }

  // MARK: wiring

  private func registerMethods() {
    let recommender = self.recommender
    let admin = self.admin
    let health = self.health
    let reflection = self.reflection
    let authorize = self.authorize

    let inline = recommender.limits.inlineWork
    rpc.register(
      "/recserve.v1.Recommender/Predict",
      Self.planned(inline: inline) { (request: Recserve_V1_PredictRequest, context) in
        try recommender.planPredict(request) { context.count(in: $0.traffic.counters) }
      })
    let batcher = self.batcher
    let rankers = self.rankers
    let batchFrom = configuration.batchMinWork
    rpc.register(
      "/recserve.v1.Recommender/Rank",
      .unaryDeferrable { context, bytes in
        let request = try Self.decode(Recserve_V1_RankRequest.self, bytes)
        // The version's traffic counts the call from the moment it is chosen: a request it
        // refuses (e.g. SEARCH_IVF on a version without an index) is one of its errors.
        let planned = try recommender.planRank(request) { context.count(in: $0.traffic.counters) }
        // A scan of a large catalog, with little else to do: alone it is served here at once,
        // split over every core; while other Ranks are in flight it joins the batcher, which
        // scans once for many (with batching off, it runs like any request).
        if let key = planned.batchKey, planned.shared >= batchFrom,
          planned.work - planned.shared <= inline
        {
          if rankers.enterAlone() {
            let run = planned.runAlone ?? planned.run
            if planned.work <= inline {
              defer { rankers.leave() }
              return .response(try run({ try context.checkDeadline() }).serializedBytes())
            }
            // A catalog too large to scan on a request thread (calls queued behind it would
            // wait): the work pool, still alone and on every core.
            let guardian = LeaveOnce(rankers)
            return .deferred { context in
              defer { guardian.leave() }
              return try run({ try context.checkDeadline() }).serializedBytes()
            }
          }
          if let batcher {
            return .handedOff { responder in
              let job = RankBatcher.Job(
                request: request, served: key.served, knownUser: key.knownUser, k: key.k,
                half: key.half, responder: responder)
              if !batcher.submit(job) {
                responder.fail(
                  RPCError(
                    .resourceExhausted,
                    "\(batcher.maxQueued) Rank requests are waiting already; retry later"))
              }
            }
          }
          if planned.work <= inline {
            rankers.enter()
            defer { rankers.leave() }
            return .response(try planned.run({ try context.checkDeadline() }).serializedBytes())
          }
        }
        if planned.work <= inline {
          return .response(try planned.run({ try context.checkDeadline() }).serializedBytes())
        }
        return .deferred { context in
          try planned.run({ try context.checkDeadline() }).serializedBytes()
        }
      })
    rpc.register(
      "/recserve.v1.Recommender/SimilarItems",
      Self.planned(inline: inline) { (request: Recserve_V1_SimilarItemsRequest, context) in
        try recommender.planSimilarItems(request) { context.count(in: $0.traffic.counters) }
      })
    let trainer = self.trainer
    let hub = registry.hub
    rpc.register(
      "/recserve.v1.Recommender/Train",
      .serverStreaming { context, bytes, writer in
        try authorize(context)
        let request = try Self.decode(Recserve_V1_TrainRequest.self, bytes)
        // Events name the model and the kind, never the data path (it may lie outside the data
        // root) nor the error's words (they may quote it): those go to the client only.
        let fields = ["model": request.name, "kind": request.kind.isEmpty ? "mf" : request.kind]
        hub.emit(
          ServerEvent(
            "training '\(request.name)' started",
            fields: fields.merging(["event": "training_started", "tune": "\(request.tune)"]) { $1 })
        )
        let start = DispatchTime.now().uptimeNanoseconds
        do {
          try trainer.train(request, writer: writer)
        } catch {
          let code = (error as? RPCError)?.code ?? .internal
          hub.emit(
            ServerEvent(
              "training '\(request.name)' ended with \(code)", warning: true,
              fields: fields.merging(["event": "training_failed", "code": "\(code)"]) { $1 }))
          throw error
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        hub.emit(
          ServerEvent(
            "training '\(request.name)' finished in \(String(format: "%.2f", seconds)) s",
            fields: fields.merging([
              "event": "training_finished", "seconds": String(format: "%.2f", seconds),
            ]) { $1 }))
      })

    rpc.register(
      "/recserve.v1.ModelAdmin/ListModels",
      Self.unary(authorize: authorize) { (request: Recserve_V1_ListModelsRequest, _) in
        try admin.listModels(request)
      })
    rpc.register(
      "/recserve.v1.ModelAdmin/GetModelStatus",
      Self.unary(authorize: authorize) { (request: Recserve_V1_GetModelStatusRequest, _) in
        try admin.getModelStatus(request)
      })
    // These wait for the registry's loader (which may be loading and verifying a version for
    // seconds), so they must not hold a completion-queue thread and the calls queued on it.
    rpc.register(
      "/recserve.v1.ModelAdmin/SetLabel",
      Self.waitingUnary(authorize: authorize) {
        (request: Recserve_V1_SetLabelRequest, context) in
        try admin.setLabel(request, context: context)
      })
    rpc.register(
      "/recserve.v1.ModelAdmin/UnloadVersion",
      Self.waitingUnary(authorize: authorize) {
        (request: Recserve_V1_UnloadVersionRequest, context) in
        try admin.unloadVersion(request, context: context)
      })
    rpc.register(
      "/recserve.v1.ModelAdmin/ReloadRepository",
      Self.waitingUnary(authorize: authorize) {
        (request: Recserve_V1_ReloadRepositoryRequest, context) in
        try admin.reloadRepository(request, context: context)
      })

    rpc.register(
      "/grpc.health.v1.Health/Check",
      Self.unary { (request: Grpc_Health_V1_HealthCheckRequest, _) in
        try health.check(request)
      })
    rpc.register(
      "/grpc.health.v1.Health/Watch",
      .serverStreaming { _, bytes, writer in
        let request = try Self.decode(Grpc_Health_V1_HealthCheckRequest.self, bytes)
        try health.watch(request, writer: writer)
      })

    let reflect: MethodHandler = .bidiStreaming { _, bytes in
      do {
        return [Array(try reflection.respond(toSerializedRequest: Data(bytes)))]
      } catch {
        throw RPCError.invalidArgument(
          "request body is not a valid ServerReflectionRequest: \(error)")
      }
    }
    rpc.register("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", reflect)
    rpc.register("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", reflect)
  }

  /// Checks `authorization: Bearer <token>` when the server has an admin token.
  private var authorize: @Sendable (ServerContext) throws -> Void {
    guard let token = configuration.adminToken else { return { _ in } }
    let expected = Array(token.utf8)
    return { context in
      guard let header = context.metadata("authorization") else {
        throw RPCError(
          .unauthenticated, "this method needs metadata 'authorization: Bearer <admin token>'")
      }
      let prefix = "Bearer "
      guard header.hasPrefix(prefix) else {
        throw RPCError(
          .unauthenticated, "the authorization metadata must read 'Bearer <admin token>'")
      }
      let given = Array(header.utf8.dropFirst(prefix.utf8.count))
      guard ConstantTime.equal(given, expected) else {
        throw RPCError(.permissionDenied, "the admin token is not valid")
      }
    }
  }

  static func decode<Request: SwiftProtobuf.Message>(
    _ type: Request.Type, _ bytes: some SwiftProtobufContiguousBytes
  )
    throws -> Request
  {
    do {
      return try Request(serializedBytes: bytes)
    } catch {
      throw RPCError.invalidArgument(
        "request body is not a valid \(Request.protoMessageName): \(error)")
    }
  }

  /// A method whose requests are checked and priced on the thread that received them: cheap
  /// ones are answered there, those over `inline` multiply-adds run on the work pool. Either
  /// way the work stops at the call's deadline or when the client goes away.
  static func planned<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    inline: Int,
    _ plan: @escaping @Sendable (Request, ServerContext) throws -> RecommenderService.Plan<Response>
  ) -> MethodHandler {
    .unaryDeferrable { context, bytes in
      let request = try decode(Request.self, bytes)
      let planned = try plan(request, context)
      if planned.work <= inline {
        return .response(try planned.run({ try context.checkDeadline() }).serializedBytes())
      }
      return .deferred { context in
        try planned.run({ try context.checkDeadline() }).serializedBytes()
      }
    }
  }

  /// A unary method whose handler may wait long: served on a thread of its own (the runtime's
  /// server-streaming path and its pool, answering exactly one message), so it never holds the
  /// completion-queue thread that accepted it. On the wire it is an ordinary unary call.
  static func waitingUnary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    authorize: (@Sendable (ServerContext) throws -> Void)? = nil,
    _ body: @escaping @Sendable (Request, ServerContext) throws -> Response
  ) -> MethodHandler {
    .serverStreaming { context, bytes, writer in
      try authorize?(context)
      let request = try decode(Request.self, bytes)
      let response = try body(request, context)
      try writer.send(try response.serializedBytes())
    }
  }

  static func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    authorize: (@Sendable (ServerContext) throws -> Void)? = nil,
    _ body: @escaping @Sendable (Request, ServerContext) throws -> Response
  ) -> MethodHandler {
    .unary { context, bytes in
      try authorize?(context)
      let request = try decode(Request.self, bytes)
      let response = try body(request, context)
      return try response.serializedBytes()
    }
  }
}

/// Comparison whose time depends on the lengths only, not on where the bytes differ.
enum ConstantTime {
  static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    // The lengths are compared in full: folded into a byte, lengths that differ by a multiple
    // of 256 would look equal, and a token padded with 256 zero bytes would pass.
    var difference = a.count == b.count ? 0 : 1
    let count = max(a.count, b.count)
    for index in 0..<count {
      let x = index < a.count ? a[index] : 0
      let y = index < b.count ? b[index] : 0
      difference |= Int(x ^ y)
    }
    return difference == 0
  }
}
