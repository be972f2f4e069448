import Foundation
import RecServeProto
import RecServeRPC
import RecServeTestSupport
import Testing

@testable import RecServeServing

/// The real server's wiring, through real calls: what is routed, what needs the admin token,
/// and what a request that does not decode is told. Methods come from the protos' own method
/// table (`ReflectionIndex`), so a method added to a proto is covered without editing a list.
@Suite struct ServerWiringTests {
  static let methods = ReflectionIndex.shared.methods
  static let token = "wiring-test-token"

  @Test func theServerRoutesExactlyTheProtosMethods() throws {
    try withServer { _, server in
      #expect(Set(server.rpc.registeredPaths) == Set(Self.methods.map(\.path)))
    }
  }

  /// Every ModelAdmin method and Train refuses a call without the token (UNAUTHENTICATED) and
  /// with another token (PERMISSION_DENIED); no other method asks for it.
  @Test func everyAdminMethodNeedsTheTokenAndNoOtherDoes() throws {
    let admin = Self.methods.filter(RecServeServer.needsAdminToken)
    #expect(Set(admin.map(\.name)).isSuperset(of: ["ListModels", "SetLabel", "Train"]))
    #expect(admin.count == Self.methods.filter { $0.service == "recserve.v1.ModelAdmin" }.count + 1)
    try withServer({ $0.adminToken = Self.token }) { channel, _ in
      for method in admin {
        let none = channel.unary(method.path, request: [], timeout: 10)
        #expect(none.code == .unauthenticated, "\(method.path) without a token: \(none.code)")
        let wrong = channel.unary(
          method.path, request: [], metadata: [("authorization", "Bearer not-it")], timeout: 10)
        #expect(wrong.code == .permissionDenied, "\(method.path) with a wrong token: \(wrong.code)")
      }
      for method in Self.methods where !RecServeServer.needsAdminToken(method) {
        let timeout = method.serverStreaming ? 0.3 : 10
        let result = channel.unary(method.path, request: [], timeout: timeout)
        #expect(
          result.code != .unauthenticated && result.code != .permissionDenied, "\(method.path)")
      }
    }
  }

  /// Bytes that are no protobuf message get INVALID_ARGUMENT naming the message they should
  /// have been, from every method, with the token given.
  @Test func aRequestThatDoesNotDecodeIsToldWhatItShouldHaveBeen() throws {
    try withServer({ $0.adminToken = Self.token }) { channel, _ in
      for method in Self.methods {
        let result = channel.unary(
          method.path, request: [0xFF, 0xFF, 0xFF],
          metadata: [("authorization", "Bearer \(Self.token)")], timeout: 10)
        #expect(result.code == .invalidArgument, "\(method.path): \(result.code) \(result.message)")
        let expected =
          method.clientStreaming && method.serverStreaming
          ? "ServerReflectionRequest" : method.inputType
        #expect(
          result.message.contains("not a valid \(expected)"), "\(method.path): \(result.message)")
      }
    }
  }

  /// A method name the proto does not have stops registration (the process ends) instead of
  /// serving a path that answers UNIMPLEMENTED.
  @Test func registeringAMethodTheProtoDoesNotHaveStopsTheProgram() async {
    await #expect(processExitsWith: .failure) {
      let rpc = RPCServer(configuration: .init(host: "127.0.0.1", port: 0, threads: 1))
      let registrar = ServiceRegistrar(server: rpc, service: "recserve.v1.ModelAdmin")
      registrar.unary("ListModel") { (request: Recserve_V1_ListModelsRequest, _) in
        Recserve_V1_ListModelsResponse()
      }
    }
  }

  /// A service whose proto has a method nobody registered stops the program at `finish()`.
  @Test func aMethodLeftUnregisteredStopsTheProgram() async {
    await #expect(processExitsWith: .failure) {
      let rpc = RPCServer(configuration: .init(host: "127.0.0.1", port: 0, threads: 1))
      let registrar = ServiceRegistrar(server: rpc, service: "grpc.health.v1.Health")
      registrar.unary("Check") { (request: Grpc_Health_V1_HealthCheckRequest, _) in
        Grpc_Health_V1_HealthCheckResponse()
      }
      registrar.finish()
    }
  }
}
