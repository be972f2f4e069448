import RecServeRPC

/// Refuses calls without `authorization: Bearer <token>` (UNAUTHENTICATED) or with another
/// token (PERMISSION_DENIED), comparing in time that depends on the lengths only.
public struct AdminTokenInterceptor: ServerInterceptor {
  private let expected: [UInt8]

  public init(token: String) {
    expected = Array(token.utf8)
  }

  public func intercept(_ context: ServerContext) throws {
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
