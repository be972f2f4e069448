import Foundation

/// How a method is served.
public enum MethodHandler: Sendable {
  /// Request bytes in, response bytes out, on the completion-queue thread that accepted the call.
  /// The request `Data` aliases gRPC's buffer and is valid only during the call: decode it, do not
  /// keep it. Keep the work short; throw `RPCError` for a status other than OK.
  case unary(@Sendable (ServerContext, Data) throws -> [UInt8])
  /// One request, a stream of responses; runs on a thread of its own so it may block or take long.
  case serverStreaming(@Sendable (ServerContext, [UInt8], ServerStreamWriter) throws -> Void)
  /// A stream of requests each answered by a stream of responses (reflection); runs on the
  /// completion-queue thread, one request at a time.
  case bidiStreaming(@Sendable (ServerContext, [UInt8]) throws -> [[UInt8]])

  var receivesPayloadWithCall: Bool {
    switch self {
    case .unary, .serverStreaming: return true
    case .bidiStreaming: return false
    }
  }
}
