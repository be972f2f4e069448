import CGRPCShim
import Foundation

/// Sends the responses of a server-streaming call, one at a time, from the handler's thread.
public final class ServerStreamWriter: @unchecked Sendable {
  let call: ServerCall

  init(call: ServerCall) {
    self.call = call
  }

  /// True once the client went away (cancel, deadline, broken connection) or the server is
  /// shutting down hard: stop working and return.
  public var isCancelled: Bool { call.cancelledFlag.load(ordering: .relaxed) }

  /// Sends one message and waits until core took it. Throws `RPCError(.cancelled)` when the call
  /// is over.
  public func send(_ bytes: [UInt8]) throws {
    if isCancelled { throw RPCError(.cancelled, "the client cancelled the call") }
    let posted = call.sendLock.withLock { _ in call.startSendMessage(bytes) }
    guard posted else { throw RPCError(.cancelled, "the call is over") }
    call.sendDone.wait()
    guard call.lastSendOK.load(ordering: .acquiring) else {
      throw RPCError(.cancelled, "the client is gone")
    }
  }

  func finish(code: StatusCode, details: String) {
    call.sendLock.withLock { _ in call.finish(message: nil, code: code, details: details) }
  }

  /// Ends the stream with the status `error` stands for (see `StatusReporting`).
  func finish(error: any Error) {
    call.sendLock.withLock { _ in call.finish(error: error) }
  }
}
