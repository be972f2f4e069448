import CGRPCShim
import Foundation
import Synchronization

/// Errors starting or running the server.
public struct RPCServerError: Error, CustomStringConvertible {
  public let description: String

  public init(description: String) {
    self.description = description
  }
}

/// A gRPC server over gRPC core: a fixed pool of threads, one completion queue each, handlers
/// registered by method path. Calls to paths nobody registered get UNIMPLEMENTED.
/// A call that ended with a status other than OK, as `RPCServer.onCallFailed` hears it.
public struct FailedCall: Sendable {
  public var method: String
  public var code: StatusCode
  public var message: String
  /// The client's `x-request-id`, or one made up; sent back in the response metadata.
  public var requestID: String
}

/// Request ids: the `x-request-id` a client sends (printable ASCII, at most 128 bytes) or a new
/// one, `rs-<process>-<counter>` in hex.
public enum RequestID {
  public static let header = "x-request-id"
  private static let prefix = String(UInt32.random(in: 0...UInt32.max), radix: 16)
  private static let counter = Atomic<UInt64>(0)

  static func from(_ value: String?) -> String? {
    guard let value, !value.isEmpty, value.utf8.count <= 128,
      value.utf8.allSatisfy({ (0x21...0x7E).contains($0) })
    else { return nil }
    return value
  }

  static func next() -> String {
    let n = counter.add(1, ordering: .relaxed).newValue
    return "rs-\(prefix)-\(String(n, radix: 16))"
  }
}

public final class RPCServer: @unchecked Sendable {
  /// Hears every call that ends with a status other than OK (on the thread that ended it); set
  /// before `start()`.
  public var onCallFailed: (@Sendable (FailedCall) -> Void)?

  public struct Configuration: Sendable {
    public var host: String
    /// 0 picks a free port; `start()` returns the one bound.
    public var port: Int
    /// Completion queues and their threads.
    public var threads: Int
    /// Larger requests get RESOURCE_EXHAUSTED from core.
    public var maxReceiveMessageBytes: Int
    /// Calls requested ahead per method and queue (more absorbs bursts of new calls).
    public var callsRequestedAhead: Int
    /// Seconds at the start of a shutdown during which new calls get UNAVAILABLE before the
    /// listener closes.
    public var drainPeriod: Double = 0.3
    /// Threads for expensive unary work (`UnaryOutcome.deferred`): by default one less than the
    /// cores, so that a core stays with the completion-queue threads and cheap calls.
    public var workThreads = max(1, ProcessInfo.processInfo.activeProcessorCount - 1)
    /// Expensive calls that may wait for a work thread; beyond, RESOURCE_EXHAUSTED.
    public var workQueue = 32
    /// Server-streaming calls running at once, in total (each holds a thread while it runs);
    /// beyond, RESOURCE_EXHAUSTED.
    public var maxStreams = 128
    /// Concurrent streams (calls) per client connection, as HTTP/2 SETTINGS tell the client.
    public var maxConcurrentStreamsPerConnection = 100
    /// Listen with TLS instead of plain text.
    public var tls: TLS? = nil

    /// The server's certificate chain and private key (PEM text); with a client certificate
    /// authority, every client must present a certificate it verifies (mutual TLS).
    public struct TLS: Sendable {
      public var certificateChain: String
      public var privateKey: String
      public var clientCertificateAuthority: String?

      public init(
        certificateChain: String, privateKey: String, clientCertificateAuthority: String? = nil
      ) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.clientCertificateAuthority = clientCertificateAuthority
      }
    }

    public init(
      host: String = "127.0.0.1", port: Int = 50051,
      threads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount),
      maxReceiveMessageBytes: Int = 16 << 20, callsRequestedAhead: Int = 8
    ) {
      self.host = host
      self.port = port
      self.threads = threads
      self.maxReceiveMessageBytes = maxReceiveMessageBytes
      self.callsRequestedAhead = callsRequestedAhead
    }
  }

  public let configuration: Configuration
  private var methods: [String: RegisteredMethod] = [:]
  private(set) var core: OpaquePointer!
  private var workers: [ServerWorker] = []
  private let shuttingDown = Atomic<Bool>(false)
  private let stopping = Atomic<Bool>(false)
  private let stopped = Atomic<Bool>(false)
  private let shutdownTag = DispatchSemaphore(value: 0)
  private let stoppedSignal = DispatchSemaphore(value: 0)
  private let stopLock = Mutex<Bool>(false)
  /// Streaming handlers and deferred unary work still running on pool threads: they post on
  /// their call's queue, so the queues live until they are done.
  let activeStreamHandlers = Atomic<Int>(0)

  /// Streaming handlers and deferred unary work running now (0 once every call was answered
  /// and its handler returned).
  public var handlersRunning: Int { activeStreamHandlers.load(ordering: .acquiring) }
  /// Expensive unary work.
  let workPool: WorkPool
  /// Server-streaming handlers.
  let streamPool: WorkPool
  /// The port bound by `start()`.
  public private(set) var port: Int = 0

  public init(configuration: Configuration) {
    self.configuration = configuration
    workPool = WorkPool(
      name: "recserve-work", maxThreads: configuration.workThreads,
      maxQueued: configuration.workQueue, nice: 5, stackSize: 4 << 20)
    streamPool = WorkPool(
      name: "recserve-stream", maxThreads: configuration.maxStreams, maxQueued: 0,
      stackSize: 8 << 20)
    GRPCLibrary.ensureInitialized()
  }

  /// Serves `path` (e.g. `/recserve.v1.Recommender/Rank`) with `handler`. Before `start()`.
  public func register(_ path: String, _ handler: MethodHandler) {
    precondition(core == nil, "register methods before start()")
    methods[path] = RegisteredMethod(path: path, handler: handler)
  }

  /// The registered method paths.
  public var registeredPaths: [String] { methods.keys.sorted() }

  /// Counters of every registered method, by path, and of calls to unknown methods.
  public var methodStats: [MethodStats] {
    methods.keys.sorted().map { methods[$0]!.stats } + [unknownMethodStats]
  }
  let unknownMethodStats = MethodStats(path: "unknown")

  /// True once shutdown began: new calls are refused.
  public var isShuttingDown: Bool { shuttingDown.load(ordering: .relaxed) }

  /// True once core was told to shut down: no more calls are requested.
  var isStopping: Bool { stopping.load(ordering: .relaxed) }

  /// Binds, starts the threads and returns the port.
  @discardableResult
  public func start() throws -> Int {
    precondition(core == nil, "start() once")
    core = cgrpc_server_create(
      Int32(clamping: configuration.maxReceiveMessageBytes),
      Int32(clamping: configuration.maxConcurrentStreamsPerConnection))
    let threads = max(1, configuration.threads)
    for index in 0..<threads {
      let worker = ServerWorker(index: index, server: self)
      cgrpc_server_register_cq(core, worker.queue)
      workers.append(worker)
    }
    for method in methods.values {
      guard
        let handle = cgrpc_server_register_method(
          core, method.path, method.handler.receivesPayloadWithCall ? 1 : 0)
      else {
        throw RPCServerError(description: "could not register method \(method.path)")
      }
      method.handle = UnsafeMutableRawPointer(handle)
    }
    let host =
      configuration.host.contains(":") && !configuration.host.hasPrefix("[")
      ? "[\(configuration.host)]" : configuration.host
    let address = "\(host):\(configuration.port)"
    let bound: Int32
    if let tls = configuration.tls {
      bound = tls.certificateChain.withCString { chain in
        tls.privateKey.withCString { key in
          Channel.withOptionalCString(tls.clientCertificateAuthority) { clientCA in
            cgrpc_server_add_tls_port(core, address, chain, key, clientCA)
          }
        }
      }
    } else {
      bound = cgrpc_server_add_insecure_port(core, address)
    }
    guard bound > 0 else {
      // Nothing was started: the server can be destroyed at once.
      cgrpc_server_destroy(core)
      for worker in workers {
        cgrpc_cq_shutdown(worker.queue)
        cgrpc_cq_drain_and_destroy(worker.queue)
      }
      workers.removeAll()
      core = nil
      throw RPCServerError(
        description: configuration.tls == nil
          ? "cannot listen on \(address): the address is in use or not valid on this machine"
          : "cannot listen with TLS on \(address): the address is in use or not valid on this machine, or gRPC refused the certificate and key"
      )
    }
    port = Int(bound)
    cgrpc_server_start(core)
    for worker in workers {
      for method in methods.values {
        for _ in 0..<max(1, configuration.callsRequestedAhead) { worker.request(method) }
      }
      for _ in 0..<2 { worker.request(nil) }
      worker.start()
    }
    return port
  }

  /// Stops gracefully: new calls get UNAVAILABLE at once, calls in flight get `gracePeriod` seconds
  /// to finish, then whatever remains is cancelled. Blocks until every thread exited. Idempotent.
  public func shutdown(gracePeriod: Double = 10) {
    let first = stopLock.withLock { started -> Bool in
      if started { return false }
      started = true
      return true
    }
    guard first else {
      wait()
      return
    }
    guard core != nil, let first = workers.first else {
      stopped.store(true, ordering: .releasing)
      stoppedSignal.signal()
      return
    }
    // Drain: new calls are still accepted, and answered UNAVAILABLE, while clients and load
    // balancers notice (health reports NOT_SERVING); then core stops listening and sends GOAWAY.
    shuttingDown.store(true, ordering: .releasing)
    let drain = min(configuration.drainPeriod, max(0, gracePeriod))
    if drain > 0 { usleep(UInt32(drain * 1e6)) }
    stopping.store(true, ordering: .releasing)
    cgrpc_server_shutdown_and_notify(core, first.queue, Unmanaged.passUnretained(self).toOpaque())
    if shutdownTag.wait(timeout: .now() + max(0, gracePeriod)) == .timedOut {
      cgrpc_server_cancel_all_calls(core)
      shutdownTag.wait()
    }
    // Streaming handlers post on their call's queue: let them notice the end and return first.
    let patience = DispatchTime.now().uptimeNanoseconds + UInt64(max(1, gracePeriod) * 1e9)
    while activeStreamHandlers.load(ordering: .acquiring) > 0 {
      if DispatchTime.now().uptimeNanoseconds > patience {
        // A handler that ignores cancellation: leave the queues to the process exit rather than
        // risk a post on a destroyed queue.
        FileHandle.standardError.write(
          Data(
            "recserve: \(activeStreamHandlers.load(ordering: .acquiring)) streaming call(s) still running after the grace period; leaving them to the process exit\n"
              .utf8))
        stopped.store(true, ordering: .releasing)
        stoppedSignal.signal()
        return
      }
      usleep(10_000)
    }
    workPool.stop(timeout: 1)
    streamPool.stop(timeout: 1)
    cgrpc_server_destroy(core)
    for worker in workers { cgrpc_cq_shutdown(worker.queue) }
    for worker in workers { worker.join() }
    for worker in workers { worker.destroyQueue() }
    workers.removeAll()
    reportUnreleasedCalls()
    stopped.store(true, ordering: .releasing)
    stoppedSignal.signal()
  }

  /// Blocks until the server stopped.
  public func wait() {
    if stopped.load(ordering: .acquiring) { return }
    stoppedSignal.wait()
    stoppedSignal.signal()
  }

  /// Every call record is freed once its last operation completed, and core completes every
  /// operation before a queue shuts down: a record still allocated here is a reference-count
  /// bug (it would leak, holding its grpc_call). Said on stderr, where tests look for it.
  private func reportUnreleasedCalls() {
    for stats in methodStats {
      let live = stats.liveCalls.load(ordering: .acquiring)
      if live != 0 {
        FileHandle.standardError.write(
          Data("rpc: \(live) call(s) of \(stats.path) not released at shutdown (a bug)\n".utf8))
      }
    }
  }

  func shutdownNotified() {
    shutdownTag.signal()
  }
}
