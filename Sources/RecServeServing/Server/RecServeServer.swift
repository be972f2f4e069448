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
    /// The event log and user histories (AppendEvents); nil: the server keeps no events. The
    /// server closes it when it shuts down.
    public var eventStore: EventStore? = nil

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
  let events: EventsService
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
    recommender = RecommenderService(
      registry: registry, limits: configuration.limits, events: configuration.eventStore)
    events = EventsService(store: configuration.eventStore)
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
      maxRunning: configuration.maxTrainings, memoryBudget: configuration.trainMemoryBytes,
      eventsDirectory: configuration.eventStore?.configuration.directory)
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
    events.store?.close()
  }

  // MARK: wiring

  /// Methods that change what serves or start work on the server: every ModelAdmin method and
  /// Train. With an admin token they all need it (by this rule, not by a list of methods).
  static func needsAdminToken(_ method: RPCMethodDescriptor) -> Bool {
    method.service == "recserve.v1.ModelAdmin" || method.path == "/recserve.v1.Recommender/Train"
  }

  /// Each proto service registers its methods through a registrar that checks them against
  /// the proto and applies the admin-token rule.
  private func registerMethods() {
    let token: [any ServerInterceptor] =
      configuration.adminToken.map { [AdminTokenInterceptor(token: $0)] } ?? []
    func registrar(_ service: String) -> ServiceRegistrar {
      ServiceRegistrar(server: rpc, service: service) { Self.needsAdminToken($0) ? token : [] }
    }
    let services: [(String, (ServiceRegistrar) -> Void)] = [
      ("recserve.v1.Recommender", registerRecommender(on:)),
      ("recserve.v1.ModelAdmin", admin.register(on:)),
      ("grpc.health.v1.Health", health.register(on:)),
      ("grpc.reflection.v1.ServerReflection", reflection.register(on:)),
      ("grpc.reflection.v1alpha.ServerReflection", reflection.register(on:)),
    ]
    for (service, register) in services {
      let registrar = registrar(service)
      register(registrar)
      registrar.finish()
    }
  }
}
