import CGRPCShim

/// gRPC core's global state: initialized once, before the first object of the library is made.
enum GRPCLibrary {
  private static let initialized: Bool = {
    cgrpc_init()
    return true
  }()

  @inline(__always) static func ensureInitialized() {
    _ = initialized
  }
}
