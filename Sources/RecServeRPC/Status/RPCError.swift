/// An error that becomes the status of a call: a code and a message a person can act on.
public struct RPCError: Error, Sendable, CustomStringConvertible {
  public var code: StatusCode
  public var message: String

  public init(_ code: StatusCode, _ message: String) {
    self.code = code
    self.message = message
  }

  public static func invalidArgument(_ message: String) -> RPCError {
    RPCError(.invalidArgument, message)
  }
  public static func notFound(_ message: String) -> RPCError { RPCError(.notFound, message) }
  public static func failedPrecondition(_ message: String) -> RPCError {
    RPCError(.failedPrecondition, message)
  }
  public static func unimplemented(_ message: String) -> RPCError {
    RPCError(.unimplemented, message)
  }
  public static func `internal`(_ message: String) -> RPCError { RPCError(.internal, message) }

  public var description: String { "\(code): \(message)" }
}

/// An error that says what a client should be told: its status and a message naming the field,
/// file or line at fault. Handlers may throw any error; one that reports a status reaches the
/// client as it is, any other is a bug: the client gets INTERNAL with a generic message and the
/// call's request id, and the error's description goes only to `RPCServer.onCallFailed` (the
/// server's log), so no internal detail leaves the server.
public protocol StatusReporting: Error {
  var statusCode: StatusCode { get }
  var statusMessage: String { get }
}

extension RPCError: StatusReporting {
  public var statusCode: StatusCode { code }
  public var statusMessage: String { message }
}
