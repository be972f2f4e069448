import Foundation
import Synchronization

/// How a method is served.
public enum MethodHandler: Sendable {
  /// Request bytes in, response bytes out, on the completion-queue thread that accepted the call.
  /// The request `Data` aliases gRPC's buffer and is valid only during the call: decode it, do not
  /// keep it. Keep the work short; throw `RPCError` for a status other than OK.
  case unary(@Sendable (ServerContext, Data) throws -> [UInt8])
  /// Like `unary`, but the handler may answer `.deferred(work)` after decoding and checking the
  /// request: the work then runs on the server's bounded work pool instead of the
  /// completion-queue thread (RESOURCE_EXHAUSTED when the pool and its queue are full), so one
  /// expensive call never holds up the cheap ones behind it.
  case unaryDeferrable(@Sendable (ServerContext, Data) throws -> UnaryOutcome)
  /// One request, a stream of responses; runs on a thread of its own so it may block or take long.
  case serverStreaming(@Sendable (ServerContext, [UInt8], ServerStreamWriter) throws -> Void)
  /// A stream of requests each answered by a stream of responses (reflection); runs on the
  /// completion-queue thread, one request at a time.
  case bidiStreaming(@Sendable (ServerContext, [UInt8]) throws -> [[UInt8]])
  /// A stream of requests answered by one response: `open` runs on the completion-queue
  /// thread when the call arrives (throw to refuse it) and gives the receiver its requests go
  /// to, one at a time: the next is read only once the receiver says so (see
  /// `ClientStreamReceiver`), so a slow receiver slows its own client and nobody else.
  case clientStreaming(@Sendable (ServerContext) throws -> any ClientStreamReceiver)

  var receivesPayloadWithCall: Bool {
    switch self {
    case .unary, .unaryDeferrable, .serverStreaming: return true
    case .bidiStreaming, .clientStreaming: return false
    }
  }
}

/// Takes the requests of one client-streaming call.
public protocol ClientStreamReceiver: AnyObject, Sendable {
  /// One request, on a completion-queue thread: the receiver may answer at once or hand the
  /// work on, but must call `proceed` exactly once, from any thread: with nil to read the next
  /// request, or with an error to end the call with that error's status.
  func receive(_ request: [UInt8], proceed: @escaping @Sendable ((any Error)?) -> Void)
  /// The client half-closed after the last request: the response (or a thrown error status).
  func finish() throws -> [UInt8]
}

/// What a `.unaryDeferrable` handler answers on the completion-queue thread.
public enum UnaryOutcome: Sendable {
  /// The response, sent at once.
  case response([UInt8])
  /// Work to run on the work pool. Its context has the call's metadata copied; the work should
  /// call `context.checkDeadline()` between blocks of work, so that it stops once the client's
  /// deadline passed or the client went away.
  case deferred(@Sendable (ServerContext) throws -> [UInt8])
  /// The handler's own machinery answers (e.g. a batcher that serves many calls with one pass
  /// over the data): `start` runs at once on the receiving thread and must only hand the
  /// responder on; the call is answered when the responder is (exactly once, from any thread).
  case handedOff(@Sendable (UnaryResponder) -> Void)
}

/// Answers one unary call from any thread, exactly once (later answers are ignored). A
/// responder that is dropped unanswered answers INTERNAL, so no call is left hanging.
public final class UnaryResponder: Sendable {
  let call: ServerCall
  let server: RPCServer
  /// The call's context, with its metadata copied.
  public let context: ServerContext
  private let answered = Atomic<Bool>(false)

  init(call: ServerCall, server: RPCServer, context: ServerContext) {
    self.call = call
    self.server = server
    self.context = context
  }

  deinit {
    if !answered.load(ordering: .acquiring) {
      fail(RPCError.internal("the call was dropped without an answer"))
    }
  }

  public func succeed(_ response: [UInt8]) {
    answer(message: response, code: .ok, details: "")
  }

  /// Fails the call with the status `error` stands for (see `StatusReporting`): any error
  /// that does not report one reaches the client as a generic INTERNAL with the request id.
  public func fail(_ error: any Error) {
    guard !answered.exchange(true, ordering: .acquiringAndReleasing) else { return }
    call.finish(error: error)
    ended()
  }

  private func answer(message: [UInt8]?, code: StatusCode, details: String) {
    guard !answered.exchange(true, ordering: .acquiringAndReleasing) else { return }
    call.finish(message: message, code: code, details: details)
    ended()
  }

  private func ended() {
    call.operationEnded()
    server.activeStreamHandlers.subtract(1, ordering: .acquiringAndReleasing)
  }
}
