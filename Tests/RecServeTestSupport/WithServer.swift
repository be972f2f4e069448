import Foundation
import RecServeModels
import RecServeRPC
import RecServeServing

/// Starts the real `RecServeServer` on a free loopback port over a new model folder holding one
/// small MF model `m` (version 1, 60 users `u1...`, 40 items `i1...`), calls `body` with a
/// channel to it and the server, then shuts the server down and removes the folder. `configure`
/// adjusts the configuration first (an admin token, limits, ...).
public func withServer<T>(
  _ configure: (inout RecServeServer.Configuration) -> Void = { _ in },
  _ body: (Channel, RecServeServer) throws -> T
) throws -> T {
  let folder =
    FileManager.default.temporaryDirectory.path + "/recserve-with-server-" + UUID().uuidString
  try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
  defer { try? FileManager.default.removeItem(atPath: folder) }
  let data = try SyntheticData.generate(
    SyntheticData.Config(users: 60, items: 40, seed: 9, dim: 4, density: 0.3))
  _ = try trainAndPublishMF(
    data: data, config: MFConfig(dim: 4, epochs: 3, seed: 1), holdout: 0, modelsDirectory: folder,
    name: "m")
  var configuration = RecServeServer.Configuration(modelsDirectory: folder)
  configuration.port = 0
  configuration.threads = 2
  configuration.pollInterval = 0
  configure(&configuration)
  let server = RecServeServer(configuration: configuration)
  _ = server.registry.loadAll()
  let port = try server.start()
  defer {
    server.shutdown(gracePeriod: 1)
    server.wait()
  }
  return try body(Channel(target: "127.0.0.1:\(port)"), server)
}
