import Foundation
import RecServeProto
import RecServeRPC

/// A swap: point a label at a version, publishing it first when asked.
struct LoadSwap: @unchecked Sendable {
  var description: String
  var admin: AdminClient
  var model: String
  var label: String
  var version: Int64?
  var publish: (source: String, folder: String)?

  func run() -> SwapOutcome {
    var version = self.version
    do {
      if let publish {
        version = try Self.copyAsNextVersion(publish.source, into: publish.folder)
        _ = try admin.call(
          "ReloadRepository", Recserve_V1_ReloadRepositoryRequest(),
          as: Recserve_V1_ReloadRepositoryResponse.self)
      }
      var request = Recserve_V1_SetLabelRequest()
      request.name = model
      request.label = label
      request.version = version!
      _ = try admin.call("SetLabel", request, as: Recserve_V1_SetLabelResponse.self)
      return SwapOutcome(description: description, version: version, error: nil)
    } catch {
      return SwapOutcome(description: description, version: version, error: "\(error)")
    }
  }

  /// Copies a version folder to `folder`/N, N one past the highest numbered version there,
  /// through a dot-folder renamed into place (the server never sees it half-written).
  static func copyAsNextVersion(_ source: String, into folder: String) throws -> Int64 {
    let manager = FileManager.default
    let existing = (try? manager.contentsOfDirectory(atPath: folder)) ?? []
    let next = (existing.compactMap { Int64($0) }.max() ?? 0) + 1
    let staging = "\(folder)/.load-swap-\(next)-\(getpid())"
    do {
      try manager.copyItem(atPath: source, toPath: staging)
      try manager.moveItem(atPath: staging, toPath: "\(folder)/\(next)")
    } catch {
      try? manager.removeItem(atPath: staging)
      throw CLIError("cannot publish \(source) as \(folder)/\(next): \(error.localizedDescription)")
    }
    return next
  }
}
