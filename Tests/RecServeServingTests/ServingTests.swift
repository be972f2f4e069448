import Foundation
import RecServeModels
import RecServeProto
import RecServeRPC
import Testing

@testable import RecServeServing

/// A model folder with one trained MF model `m` (version 1), removed at the end.
final class ModelFolder {
  let path: String
  let data: Interactions

  init() throws {
    path =
      FileManager.default.temporaryDirectory.path + "/recserve-serving-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    data = try SyntheticData.generate(
      SyntheticData.Config(users: 200, items: 120, seed: 5, dim: 4, density: 0.15, noise: 0.2))
    _ = try trainAndPublishMF(
      data: data, config: MFConfig(dim: 8, epochs: 10, seed: 2), holdout: 0.1,
      modelsDirectory: path, name: "m")
  }

  deinit { try? FileManager.default.removeItem(atPath: path) }
}

func rpcError(_ body: () throws -> Void) -> RPCError? {
  do {
    try body()
    return nil
  } catch let error as any StatusReporting {
    return RPCError(error.statusCode, error.statusMessage)
  } catch {
    return RPCError(.unknown, "\(error)")
  }
}

@Suite struct RegistryTests {
  @Test func resolvesAndExplainsWhatIsMissing() throws {
    let folder = try ModelFolder()
    let registry = ModelRegistry(directory: folder.path)
    #expect(registry.loadAll().isEmpty)
    #expect(try registry.resolve(name: "m", version: nil, label: nil).version == 1)
    #expect(try registry.resolve(name: "m", version: 1, label: nil).version == 1)

    let empty = rpcError { _ = try registry.resolve(name: "", version: nil, label: nil) }
    #expect(empty?.code == .invalidArgument)
    #expect(empty?.message.contains("model.name") == true)
    let unknown = rpcError { _ = try registry.resolve(name: "x", version: nil, label: nil) }
    #expect(unknown?.code == .notFound)
    #expect(unknown?.message.contains("served models: m") == true)
    let version = rpcError { _ = try registry.resolve(name: "m", version: 7, label: nil) }
    #expect(version?.code == .notFound)
    #expect(version?.message.contains("no version 7") == true)
    let negative = rpcError { _ = try registry.resolve(name: "m", version: -1, label: nil) }
    #expect(negative?.code == .invalidArgument)
    let label = rpcError { _ = try registry.resolve(name: "m", version: nil, label: "canary") }
    #expect(label?.code == .notFound)
    #expect(label?.message.contains("canary") == true)
  }

  @Test func aCorruptVersionIsFailedAndNeverServes() throws {
    let folder = try ModelFolder()
    let v1 = ModelStore.versionDirectory(folder.path, name: "m", version: 1)
    let v2 = ModelStore.versionDirectory(folder.path, name: "m", version: 2)
    try FileManager.default.copyItem(atPath: v1, toPath: v2)
    // Flip one byte of the weights: the checksum no longer matches.
    let weights = v2 + "/weights.safetensors"
    var bytes = [UInt8](FileManager.default.contents(atPath: weights)!)
    bytes[bytes.count - 3] ^= 0xFF
    try Data(bytes).write(to: URL(fileURLWithPath: weights))

    let registry = ModelRegistry(directory: folder.path)
    let failures = registry.loadAll()
    #expect(failures.count == 1)
    #expect(failures.first?.contains("version 2") == true)
    #expect(failures.first?.contains("checksum") == true)
    #expect(try registry.resolve(name: "m", version: nil, label: nil).version == 1)
    let status = AdminService.status(of: registry.snapshot.models["m"]!)
    #expect(status.servingVersion == 1)
    #expect(status.versions.map(\.state) == [.available, .failed])
    #expect(status.versions[1].reason.contains("checksum"))
    let pinned = rpcError { _ = try registry.resolve(name: "m", version: 2, label: nil) }
    #expect(pinned?.code == .notFound)
    #expect(pinned?.message.contains("failed verification") == true)
  }
}

@Suite struct RecommenderServiceTests {
  func rank(_ service: RecommenderService, _ configure: (inout Recserve_V1_RankRequest) -> Void)
    throws
    -> Recserve_V1_RankResponse
  {
    var request = Recserve_V1_RankRequest()
    request.model.name = "m"
    request.k = 10
    configure(&request)
    return try service.rank(request)
  }

  @Test func rankIsTheExactTopKWithoutSeenItems() throws {
    let folder = try ModelFolder()
    let registry = ModelRegistry(directory: folder.path)
    registry.loadAll()
    let service = RecommenderService(registry: registry)
    let served = try registry.resolve(name: "m", version: nil, label: nil)
    let model = served.model
    let user = model.userIds[3]
    let response = try rank(service) {
      $0.userID = user
      $0.excludeSeen = true
    }
    var scores = [Float](repeating: 0, count: model.itemCount)
    scores.withUnsafeMutableBufferPointer { model.scoreAll(user: 3, into: $0.baseAddress!) }
    let seen = Set(model.seenItems(user: 3))
    var candidates: [Int] = []
    for item in 0..<model.itemCount where !seen.contains(Int32(item)) { candidates.append(item) }
    candidates.sort { (a: Int, b: Int) -> Bool in
      scores[a] != scores[b] ? scores[a] > scores[b] : a < b
    }
    let expected: [String] = candidates.prefix(10).map { model.itemIds[$0] }
    #expect(response.items.map(\.itemID) == Array(expected))
    #expect(response.modelName == "m" && response.modelVersion == 1)
  }

  @Test func badFieldsAreNamed() throws {
    let folder = try ModelFolder()
    let registry = ModelRegistry(directory: folder.path)
    registry.loadAll()
    let service = RecommenderService(registry: registry)
    let user = try registry.resolve(name: "m", version: nil, label: nil).model.userIds[0]
    for (k, word) in [
      (Int32(0), "at least 1"), (-5, "at least 1"), (10_001, "at most"), (Int32.max, "at most"),
    ] {
      let error = rpcError {
        _ = try rank(service) {
          $0.userID = user
          $0.k = k
        }
      }
      #expect(error?.code == .invalidArgument)
      #expect(error?.message.contains(word) == true, "\(String(describing: error))")
    }
    let noUser = rpcError { _ = try rank(service) { _ in } }
    #expect(noUser?.code == .invalidArgument)
    #expect(noUser?.message.contains("user_id") == true)
    let unknownUser = rpcError { _ = try rank(service) { $0.userID = "ghost" } }
    #expect(unknownUser?.code == .notFound)
    let diversity = rpcError {
      _ = try rank(service) {
        $0.userID = user
        $0.diversity = 2
      }
    }
    #expect(diversity?.message.contains("diversity") == true)

    var predict = Recserve_V1_PredictRequest()
    predict.model.name = "m"
    let empty = rpcError { _ = try service.predict(predict) }
    #expect(empty?.code == .invalidArgument)
    #expect(empty?.message.contains("pairs") == true)
    var pair = Recserve_V1_UserItem()
    pair.userID = user
    predict.pairs = [pair]
    let emptyItem = rpcError { _ = try service.predict(predict) }
    #expect(emptyItem?.message.contains("pairs[0].item_id") == true)
  }
}

@Suite struct MathTests {
  @Test func constantTimeComparison() {
    #expect(ConstantTime.equal(Array("secret".utf8), Array("secret".utf8)))
    #expect(!ConstantTime.equal(Array("secret".utf8), Array("secreT".utf8)))
    #expect(!ConstantTime.equal(Array("secret".utf8), Array("secret2".utf8)))
    #expect(!ConstantTime.equal([], Array("x".utf8)))
    #expect(ConstantTime.equal([], []))
    // Lengths that differ by a multiple of 256, padded with zero bytes, are not equal.
    let secret = Array("secret".utf8)
    #expect(!ConstantTime.equal(secret, secret + [UInt8](repeating: 0, count: 256)))
    #expect(!ConstantTime.equal(secret + [UInt8](repeating: 0, count: 512), secret))
    #expect(!ConstantTime.equal([], [UInt8](repeating: 0, count: 256)))
  }
}

@Suite struct HostAddressTests {
  @Test func onlyLoopbackAddressesCountAsLoopback() {
    for host in [
      "localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "::1", "[::1]", "::ffff:127.0.0.1",
    ] {
      #expect(HostAddress.isLoopback(host), "\(host)")
    }
    for host in [
      "0.0.0.0", "::", "[::]", "10.0.0.1", "128.0.0.1", "::2", "::ffff:10.0.0.1", "example.com", "",
    ] {
      #expect(!HostAddress.isLoopback(host), "\(host)")
    }
  }
}

@Suite struct RolloutTests {
  /// Publishes `count` more versions of `m` (trained with different seeds).
  func publish(_ folder: ModelFolder, count: Int) throws {
    for seed in 0..<count {
      _ = try trainAndPublishMF(
        data: folder.data, config: MFConfig(dim: 8, epochs: 3, seed: UInt64(10 + seed)),
        holdout: 0.1,
        modelsDirectory: folder.path, name: "m")
    }
  }

  @Test func keepsTheLatestNAndLabelledVersionsLoaded() throws {
    let folder = try ModelFolder()
    try publish(folder, count: 3)  // versions 1...4
    let registry = ModelRegistry(directory: folder.path, keepVersions: 2)
    registry.loadAll()
    var entry = registry.snapshot.models["m"]!
    #expect(entry.serving?.version == 4)
    #expect(entry.versions[4]?.state == .available && entry.versions[3]?.state == .available)
    #expect(entry.versions[2]?.state == .unloaded && entry.versions[1]?.state == .unloaded)

    // Roll back to an unloaded version: it is loaded, labelled, and serves at once.
    entry = try registry.setLabel(name: "m", label: "stable", version: 1, canaryFraction: nil)
    #expect(entry.serving?.version == 1)
    #expect(entry.versions[1]?.state == .available)
    #expect(try registry.resolve(name: "m", version: nil, label: nil).version == 1)
    // The label survives a new registry (a restart).
    let restarted = ModelRegistry(directory: folder.path, keepVersions: 2)
    restarted.loadAll()
    #expect(try restarted.resolve(name: "m", version: nil, label: nil).version == 1)

    // A labelled version cannot be unloaded; an unlabelled one can, until reload.
    #expect(
      rpcError { _ = try registry.unload(name: "m", version: 1) }?.code == .failedPrecondition)
    entry = try registry.unload(name: "m", version: 3)
    #expect(entry.versions[3]?.state == .unloaded)
    registry.loadAll()
    #expect(registry.snapshot.models["m"]!.versions[3]?.state == .unloaded)
    registry.reload()
    #expect(registry.snapshot.models["m"]!.versions[3]?.state == .available)

    // Removing the label returns to the highest version.
    entry = try registry.setLabel(name: "m", label: "stable", version: 0, canaryFraction: nil)
    #expect(entry.serving?.version == 4)
  }

  @Test func canarySplitsUsersStickilyByFraction() throws {
    let folder = try ModelFolder()
    try publish(folder, count: 1)  // versions 1, 2
    let registry = ModelRegistry(directory: folder.path)
    registry.loadAll()
    _ = try registry.setLabel(name: "m", label: "stable", version: 1, canaryFraction: nil)
    _ = try registry.setLabel(name: "m", label: "canary", version: 2, canaryFraction: 0.1)
    var canary = 0
    for user in 0..<10_000 {
      let first = try registry.resolve(name: "m", version: nil, label: nil, userKey: "user-\(user)")
        .version
      let second = try registry.resolve(
        name: "m", version: nil, label: nil, userKey: "user-\(user)"
      ).version
      #expect(first == second)
      if first == 2 { canary += 1 }
    }
    #expect((800...1200).contains(canary), "\(canary) of 10000 users on the canary")
    let bad = rpcError {
      _ = try registry.setLabel(name: "m", label: "canary", version: 2, canaryFraction: 1.5)
    }
    #expect(bad?.code == .invalidArgument)
    let wrongLabel = rpcError {
      _ = try registry.setLabel(name: "m", label: "stable", version: 2, canaryFraction: 0.5)
    }
    #expect(wrongLabel?.code == .invalidArgument)
    let badName = rpcError {
      _ = try registry.setLabel(name: "m", label: "no spaces", version: 2, canaryFraction: nil)
    }
    #expect(badName?.code == .invalidArgument)
    let missing = rpcError {
      _ = try registry.setLabel(name: "m", label: "x", version: 99, canaryFraction: nil)
    }
    #expect(missing?.code == .notFound)
  }
}

@Suite struct FoldInTests {
  /// Users in 4 clusters, each interacting only with items of its own cluster (30 items each).
  func clusteredInteractions() throws -> Interactions {
    var rows: [InteractionRow] = []
    var state: UInt64 = 0x1234_5678
    func next() -> Int {
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return Int(truncatingIfNeeded: state >> 33)
    }
    for user in 0..<400 {
      let cluster = user % 4
      for step in 0..<12 {
        let item = cluster * 30 + next() % 30
        rows.append(
          InteractionRow(
            user: "u\(user)", item: "c\(cluster)-i\(item)", rating: 1, timestamp: Int64(step)))
      }
    }
    return try Interactions(rows: rows, source: "clusters")
  }

  @Test(arguments: ["als", "bpr"])
  func recentItemsOfOneClusterRankThatCluster(kind: String) throws {
    let path = FileManager.default.temporaryDirectory.path + "/recserve-foldin-" + UUID().uuidString
    defer { try? FileManager.default.removeItem(atPath: path) }
    let data = try clusteredInteractions()
    let config: ImplicitModelConfig =
      kind == "als"
      ? .als(ALSConfig(dim: 16, iterations: 10, seed: 3, threads: 1))
      : .bpr(BPRConfig(dim: 16, epochs: 40, learningRate: 0.05, seed: 3, threads: 1))
    _ = try trainAndPublishImplicit(
      data: data, config: config, split: .none, modelsDirectory: path, name: "c")
    let registry = ModelRegistry(directory: path)
    registry.loadAll()
    let service = RecommenderService(registry: registry)
    for cluster in 0..<4 {
      var request = Recserve_V1_RankRequest()
      request.model.name = "c"
      request.userID = "someone-new"
      request.recentItems = (0..<3).map { "c\(cluster)-i\(cluster * 30 + $0 * 7)" }
      request.k = 10
      request.excludeSeen = true
      let response = try service.rank(request)
      #expect(response.items.count == 10)
      let same = response.items.filter { $0.itemID.hasPrefix("c\(cluster)-") }.count
      #expect(
        same >= 8, "\(kind): \(same) of 10 from cluster \(cluster): \(response.items.map(\.itemID))"
      )
      #expect(Set(response.items.map(\.itemID)).isDisjoint(with: request.recentItems))
    }
  }
}
