import CGRPCShim
import Foundation

/// One thread and its completion queue. Every call accepted on the queue is served by this
/// thread, except deferred unary work and server-streaming handlers, which run on the server's
/// bounded pools.
final class ServerWorker: @unchecked Sendable {
  let index: Int
  let queue: OpaquePointer
  unowned let server: RPCServer
  private var thread: Thread?
  private let exited = DispatchSemaphore(value: 0)

  init(index: Int, server: RPCServer) {
    self.index = index
    self.server = server
    self.queue = cgrpc_cq_create()
  }

  /// Destroys the queue; only after `join`.
  func destroyQueue() {
    cgrpc_cq_destroy(queue)
  }

  func start() {
    let thread = Thread { [self] in run() }
    thread.name = "recserve-rpc-\(index)"
    thread.stackSize = 4 << 20
    self.thread = thread
    thread.start()
  }

  func join() {
    exited.wait()
    // The thread's closure holds this worker: forget the thread, or the two keep each other
    // (and, through the unowned reference, the server's memory) alive after shutdown.
    thread = nil
  }

  /// Asks core for the next call of `method` (nil: any unregistered method) on this queue.
  func request(_ method: RegisteredMethod?) {
    let call = ServerCall(worker: self, method: method)
    let status = cgrpc_server_call_request(
      call.raw, server.core, method?.handle,
      (method?.handler.receivesPayloadWithCall ?? false) ? 1 : 0, queue)
    if status != 0 {
      if !server.isStopping {
        let path = method?.path ?? "unregistered methods"
        FileHandle.standardError.write(
          Data("rpc: cannot request calls for \(path) (grpc_call_error \(status))\n".utf8))
      }
      call.abandon()
    }
  }

  private func run() {
    var kind: Int32 = 0
    var owner: UnsafeMutableRawPointer?
    var ok: Int32 = 0
    while true {
      let result = cgrpc_cq_next(queue, -1, &kind, &owner, &ok)
      if result == CGRPC_NEXT_SHUTDOWN { break }
      guard result == CGRPC_NEXT_EVENT, let owner else { continue }
      switch cgrpc_tag_kind(rawValue: UInt32(kind)) {
      case CGRPC_TAG_ACCEPT:
        accepted(ServerCall.from(owner), ok: ok != 0)
      case CGRPC_TAG_CLOSE:
        let call = ServerCall.from(owner)
        if cgrpc_server_call_was_cancelled(call.raw) != 0 {
          call.cancelledFlag.store(true, ordering: .relaxed)
        }
        call.operationEnded()
      case CGRPC_TAG_SEND:
        sendCompleted(ServerCall.from(owner), ok: ok != 0)
      case CGRPC_TAG_RECV:
        received(ServerCall.from(owner), ok: ok != 0)
      case CGRPC_TAG_SHUTDOWN:
        server.shutdownNotified()
      default:
        break
      }
    }
    exited.signal()
  }

  // MARK: events

  private func accepted(_ call: ServerCall, ok: Bool) {
    guard ok else {
      // The server is shutting down: the requested call never came.
      call.abandon()
      return
    }
    if !server.isStopping { request(call.method) }
    call.arrival = DispatchTime.now().uptimeNanoseconds
    call.startRecvClose()
    if server.isShuttingDown {
      call.finish(
        message: nil, code: .unavailable,
        details: "the server is shutting down; retry on another replica")
      return
    }
    guard let method = call.method else {
      let path = call.unregisteredMethodPath()
      call.finish(
        message: nil, code: .unimplemented,
        details: "method \(path) is not served here (see the services listed by server reflection)")
      return
    }
    let deadline = call.deadlineRemaining
    if deadline <= 0 {
      call.finish(
        message: nil, code: .deadlineExceeded,
        details: "the deadline passed before the call was served")
      return
    }
    let context = ServerContext(
      method: method.path, deadlineRemaining: deadline, arrival: call.arrival,
      call: call, copiedMetadata: nil)
    if method.handler.receivesPayloadWithCall && !call.hasPayload {
      call.finish(
        message: nil, code: .invalidArgument, details: "the call carried no request message")
      return
    }
    switch method.handler {
    case .unary(let handler): serveUnary(call, context, handler)
    case .unaryDeferrable(let handler): serveDeferrable(call, context, handler)
    case .serverStreaming(let handler): serveStream(call, context, handler)
    case .bidiStreaming:
      call.context = Self.copied(context)
      if !call.startRecvMessage() { call.abandon() }
    case .clientStreaming(let open):
      do {
        call.receiver = try open(Self.copied(context))
      } catch {
        call.finish(error: error)
        return
      }
      if !call.startRecvMessage() { call.abandon() }
    }
  }

  /// The context of `context`'s call with its metadata copied, for work that outlives the
  /// receiving thread's turn.
  private static func copied(_ context: ServerContext) -> ServerContext {
    ServerContext(
      method: context.method, deadlineRemaining: context.deadlineRemaining,
      arrival: context.arrival, call: context.call, copiedMetadata: context.call.allMetadata())
  }

  /// A unary call answered here, on the completion-queue thread.
  private func serveUnary(
    _ call: ServerCall, _ context: ServerContext,
    _ handler: @Sendable (ServerContext, Data) throws -> [UInt8]
  ) {
    let response: [UInt8]
    do {
      response = try handler(context, call.payloadAlias())
    } catch {
      call.clearPayload()
      call.finish(error: error)
      return
    }
    call.clearPayload()
    call.finish(message: response, code: .ok, details: "")
  }

  /// A unary call decoded and priced here, then answered here, handed off, or run on the work
  /// pool.
  private func serveDeferrable(
    _ call: ServerCall, _ context: ServerContext,
    _ handler: @Sendable (ServerContext, Data) throws -> UnaryOutcome
  ) {
    let outcome: UnaryOutcome
    do {
      outcome = try handler(context, call.payloadAlias())
    } catch {
      call.clearPayload()
      call.finish(error: error)
      return
    }
    call.clearPayload()
    switch outcome {
    case .response(let response):
      call.finish(message: response, code: .ok, details: "")
    case .handedOff(let start):
      call.operationStarted()  // the responder holds the call until it answers
      server.activeStreamHandlers.add(1, ordering: .acquiringAndReleasing)
      start(UnaryResponder(call: call, server: server, context: Self.copied(context)))
    case .deferred(let work):
      runDeferred(call, Self.copied(context), work)
    }
  }

  /// Deferred unary work on the work pool; RESOURCE_EXHAUSTED when the pool and its queue are
  /// full.
  private func runDeferred(
    _ call: ServerCall, _ copied: ServerContext,
    _ work: @escaping @Sendable (ServerContext) throws -> [UInt8]
  ) {
    let server = self.server
    call.operationStarted()  // the pool holds the call until the work finishes it
    server.activeStreamHandlers.add(1, ordering: .acquiringAndReleasing)
    let accepted = server.workPool.submit {
      defer {
        call.operationEnded()
        server.activeStreamHandlers.subtract(1, ordering: .acquiringAndReleasing)
      }
      do {
        try copied.checkDeadline()
        let response = try work(copied)
        call.finish(message: response, code: .ok, details: "")
      } catch {
        call.finish(error: error)
      }
    }
    if !accepted {
      server.activeStreamHandlers.subtract(1, ordering: .acquiringAndReleasing)
      call.finish(
        message: nil, code: .resourceExhausted,
        details:
          "the server is busy with \(server.configuration.workThreads + server.configuration.workQueue) expensive calls; retry later or ask for less (smaller k, fewer candidates)"
      )
      call.operationEnded()
    }
  }

  /// A server-streaming call on a thread of the stream pool; RESOURCE_EXHAUSTED when
  /// `maxStreams` run already.
  private func serveStream(
    _ call: ServerCall, _ context: ServerContext,
    _ handler: @escaping @Sendable (ServerContext, [UInt8], ServerStreamWriter) throws -> Void
  ) {
    let request = call.payloadCopy()
    call.clearPayload()
    let copied = Self.copied(context)
    let writer = ServerStreamWriter(call: call)
    call.operationStarted()  // the handler's thread holds the call until it finishes it
    let server = self.server
    server.activeStreamHandlers.add(1, ordering: .acquiringAndReleasing)
    let accepted = server.streamPool.submit {
      defer { server.activeStreamHandlers.subtract(1, ordering: .acquiringAndReleasing) }
      do {
        try handler(copied, request, writer)
        writer.finish(code: .ok, details: "")
      } catch {
        writer.finish(error: error)
      }
      call.operationEnded()
    }
    if !accepted {
      server.activeStreamHandlers.subtract(1, ordering: .acquiringAndReleasing)
      writer.finish(
        code: .resourceExhausted,
        details:
          "the server already runs \(server.configuration.maxStreams) streams (--max-streams); retry later"
      )
      call.operationEnded()
    }
  }

  private func sendCompleted(_ call: ServerCall, ok: Bool) {
    if case .serverStreaming = call.method?.handler {
      call.lastSendOK.store(ok, ordering: .releasing)
      call.sendDone.signal()
      call.operationEnded()
      return
    }
    if case .bidiStreaming = call.method?.handler, !call.isFinishing {
      // A response of a bidirectional stream went out: send the next, or read the next request.
      if !ok {
        call.pendingResponses.removeAll()
        call.abandon()
      } else if !call.pendingResponses.isEmpty {
        let next = call.pendingResponses.removeFirst()
        if !call.startSendMessage(next) { call.abandon() }
      } else if !call.startRecvMessage() {
        call.abandon()
      }
    }
    call.operationEnded()
  }

  private func received(_ call: ServerCall, ok: Bool) {
    defer { call.operationEnded() }
    if let receiver = call.receiver {
      receivedInStream(call, receiver, ok: ok)
      return
    }
    guard case .bidiStreaming(let handler) = call.method?.handler, let context = call.context else {
      return
    }
    guard ok else {
      call.abandon()
      return
    }
    guard call.hasPayload else {
      // The client half-closed: the stream ends well.
      call.isFinishing = true
      call.finish(message: nil, code: .ok, details: "")
      return
    }
    let request = call.payloadCopy()
    call.clearPayload()
    do {
      var responses = try handler(context, request)
      if responses.isEmpty {
        if !call.startRecvMessage() { call.abandon() }
        return
      }
      let first = responses.removeFirst()
      call.pendingResponses = responses
      if !call.startSendMessage(first) { call.abandon() }
    } catch {
      call.isFinishing = true
      call.finish(error: error)
    }
  }

  /// A request of a client stream (or its end) arrived.
  private func receivedInStream(_ call: ServerCall, _ receiver: any ClientStreamReceiver, ok: Bool)
  {
    guard ok else {
      call.abandon()
      return
    }
    guard call.hasPayload else {
      // The client half-closed: the one response.
      do {
        call.finish(message: try receiver.finish(), code: .ok, details: "")
      } catch {
        call.finish(error: error)
      }
      return
    }
    let request = call.payloadCopy()
    call.clearPayload()
    call.operationStarted()  // the receiver holds the call until it proceeds
    receiver.receive(request) { error in
      if let error {
        call.finish(error: error)
      } else if !call.startRecvMessage() {
        call.abandon()
      }
      call.operationEnded()
    }
  }
}
