/// The gRPC status codes, with the numbers the wire uses.
public enum StatusCode: Int32, Sendable, CustomStringConvertible {
  case ok = 0
  case cancelled = 1
  case unknown = 2
  case invalidArgument = 3
  case deadlineExceeded = 4
  case notFound = 5
  case alreadyExists = 6
  case permissionDenied = 7
  case resourceExhausted = 8
  case failedPrecondition = 9
  case aborted = 10
  case outOfRange = 11
  case unimplemented = 12
  case `internal` = 13
  case unavailable = 14
  case dataLoss = 15
  case unauthenticated = 16

  public var description: String {
    switch self {
    case .ok: return "OK"
    case .cancelled: return "CANCELLED"
    case .unknown: return "UNKNOWN"
    case .invalidArgument: return "INVALID_ARGUMENT"
    case .deadlineExceeded: return "DEADLINE_EXCEEDED"
    case .notFound: return "NOT_FOUND"
    case .alreadyExists: return "ALREADY_EXISTS"
    case .permissionDenied: return "PERMISSION_DENIED"
    case .resourceExhausted: return "RESOURCE_EXHAUSTED"
    case .failedPrecondition: return "FAILED_PRECONDITION"
    case .aborted: return "ABORTED"
    case .outOfRange: return "OUT_OF_RANGE"
    case .unimplemented: return "UNIMPLEMENTED"
    case .internal: return "INTERNAL"
    case .unavailable: return "UNAVAILABLE"
    case .dataLoss: return "DATA_LOSS"
    case .unauthenticated: return "UNAUTHENTICATED"
    }
  }
}

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
