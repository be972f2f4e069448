/// Runs before a method's handler on every call (for a bidirectional stream, before each
/// message) and refuses the call by throwing: the call then ends with the error's status. The
/// shape of grpc-swift's `ServerInterceptor`, for the checks a server applies to whole
/// services, such as authorisation.
public protocol ServerInterceptor: Sendable {
  func intercept(_ context: ServerContext) throws
}

extension MethodHandler {
  /// This handler with `interceptors` run first, in order, on every call.
  public func intercepted(by interceptors: [any ServerInterceptor]) -> MethodHandler {
    guard !interceptors.isEmpty else { return self }
    @Sendable func check(_ context: ServerContext) throws {
      for interceptor in interceptors { try interceptor.intercept(context) }
    }
    switch self {
    case .unary(let handler):
      return .unary { context, bytes in
        try check(context)
        return try handler(context, bytes)
      }
    case .unaryDeferrable(let handler):
      return .unaryDeferrable { context, bytes in
        try check(context)
        return try handler(context, bytes)
      }
    case .serverStreaming(let handler):
      return .serverStreaming { context, bytes, writer in
        try check(context)
        try handler(context, bytes, writer)
      }
    case .bidiStreaming(let handler):
      return .bidiStreaming { context, bytes in
        try check(context)
        return try handler(context, bytes)
      }
    case .clientStreaming(let open):
      return .clientStreaming { context in
        try check(context)
        return try open(context)
      }
    }
  }
}
