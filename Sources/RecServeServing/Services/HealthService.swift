import Foundation
import RecServeProto
import RecServeRPC
import SwiftProtobuf

/// `grpc.health.v1.Health`. Service names: "" (the server), `recserve.v1.Recommender`,
/// `recserve.v1.ModelAdmin`, and `recserve.v1.Recommender/<model>` for each model, SERVING once a
/// version of it serves.
public final class HealthService: Sendable {
  let registry: ModelRegistry
  /// True while the server drains (NOT_SERVING, calls still served) and once it shuts down.
  let isDraining: @Sendable () -> Bool
  /// True once the server shuts down: Watch streams end.
  let isShuttingDown: @Sendable () -> Bool

  public init(
    registry: ModelRegistry, isDraining: @escaping @Sendable () -> Bool = { false },
    isShuttingDown: @escaping @Sendable () -> Bool
  ) {
    self.registry = registry
    self.isDraining = isDraining
    self.isShuttingDown = isShuttingDown
  }

  typealias Status = Grpc_Health_V1_HealthCheckResponse.ServingStatus

  /// nil: the service is unknown.
  func status(of service: String) -> Status? {
    if isDraining() || isShuttingDown() { return .notServing }
    switch service {
    case "": return .serving
    case _ where ServiceDescriptors.serviceNames.contains(service): return .serving
    default:
      let prefix = "recserve.v1.Recommender/"
      guard service.hasPrefix(prefix) else { return nil }
      let name = String(service.dropFirst(prefix.count))
      guard let entry = registry.snapshot.models[name] else { return nil }
      return entry.serving != nil ? .serving : .notServing
    }
  }

  public func check(_ request: Grpc_Health_V1_HealthCheckRequest) throws
    -> Grpc_Health_V1_HealthCheckResponse
  {
    guard let status = status(of: request.service) else {
      throw RPCError.notFound("unknown service '\(request.service)'")
    }
    var response = Grpc_Health_V1_HealthCheckResponse()
    response.status = status
    return response
  }

  /// Sends the status now and again whenever it changes, until the client goes away or the
  /// server shuts down. A draining server keeps the stream open on NOT_SERVING: clients that
  /// balance by health (gRPC's client-side health checking) move their calls elsewhere then.
  public func watch(_ request: Grpc_Health_V1_HealthCheckRequest, writer: ServerStreamWriter) throws
  {
    var last: Status?
    while !writer.isCancelled {
      let status = self.status(of: request.service) ?? .serviceUnknown
      if status != last {
        var response = Grpc_Health_V1_HealthCheckResponse()
        response.status = status
        try writer.send(try response.serializedBytes())
        last = status
      }
      if isShuttingDown() { return }
      usleep(100_000)
    }
  }
}
