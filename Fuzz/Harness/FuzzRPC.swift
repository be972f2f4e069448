import Foundation
import RecServeModels
import RecServeRPC
import RecServeServing

/// Fuzz target for request decoding and dispatch: the real `RecServeServer` on a loopback port
/// serving one model of each kind (MF with a stable and a canary version, BPR, ALS with an IVF
/// index and a half-precision copy like every version here, SASRec), called through gRPC core
/// like any client. An input is one call: its first byte picks the method (every registered
/// one, and a path nobody registered), its second the metadata (the admin token, a wrong one, a
/// request id, a short deadline), the rest is the request body as sent.
///
/// What must hold for every input: the server answers with a status (never a crash, never
/// hanging past the deadline), and never INTERNAL, UNKNOWN or DATA_LOSS: bad input is the
/// client's fault and says so. Calls that change what serves (labels, unloads, reloads, a
/// training that published) are undone after the call, so every input meets the same server.
public enum FuzzRPC {
  static let token = "fuzz-admin-token"

  final class Fixture: @unchecked Sendable {
    let server: RecServeServer
    let channel: Channel
    let paths: [String]
    let modelsDirectory: String
    let labels: [String: ModelLabels]
    let versions: [String: Set<String>]

    init() {
      let root = FuzzFiles.root + "/rpc"
      FuzzFiles.fresh(root)
      modelsDirectory = root + "/models"
      let dataRoot = root + "/data"
      FuzzFiles.fresh(modelsDirectory)
      FuzzFiles.fresh(dataRoot)
      do {
        let ratings = SyntheticData.Config(
          users: 60, items: 80, seed: 3, dim: 4, density: 0.2, noise: 0.2)
        let data = try SyntheticData.generate(ratings)
        // The file a Train request may name: small, so that the trainings the fuzzer starts
        // end within its deadline and inputs keep coming.
        let small = try SyntheticData.write(
          SyntheticData.Config(users: 12, items: 10, seed: 4, dim: 2, density: 0.4),
          to: dataRoot + "/ratings.csv")
        // Its item features, for a hybrid Train request.
        let smallFeatures =
          "item,genre\n" + small.itemIds.enumerated().map { "\($1),g\($0 % 3)\n" }.joined()
        FuzzFiles.write(Array(smallFeatures.utf8), to: dataRoot + "/items.csv")
        for _ in 0..<2 {
          _ = try trainAndPublishMF(
            data: data, config: MFConfig(dim: 4, epochs: 3, seed: 1), holdout: 0.1,
            modelsDirectory: modelsDirectory, name: "mf")
        }
        _ = try trainAndPublishImplicit(
          data: data, config: .bpr(BPRConfig(dim: 4, epochs: 3, threads: 1)),
          modelsDirectory: modelsDirectory, name: "bpr")
        _ = try trainAndPublishImplicit(
          data: data, config: .als(ALSConfig(dim: 4, iterations: 2, threads: 1)),
          modelsDirectory: modelsDirectory, name: "als")
        let sequences = try SyntheticSequences.generate(
          SyntheticSequences.Config(users: 40, items: 30, seed: 2, chainLength: 6, events: 8...12))
        _ = try trainAndPublishImplicit(
          data: sequences,
          config: .sasrec(
            SASRecConfig(dim: 8, maxlen: 8, blocks: 1, heads: 2, epochs: 2, threads: 1)),
          modelsDirectory: modelsDirectory, name: "seq")
        // A hybrid model (items by a genre and a title; two items only in the feature file),
        // which AddItems can add to.
        var features = "id,genres,title\n"
        for (k, id) in (data.itemIds + ["new-a", "new-b"]).enumerated() {
          features += "\(id),g\(k % 4)|g\((k + 1) % 4),title \(k % 7) word\(k % 3)\n"
        }
        _ = try trainAndPublishImplicit(
          data: data,
          config: .hybrid(
            HybridConfig(dim: 4, epochs: 2, threads: 1),
            HybridInputs(items: FeatureTable.parse(text: features, source: "items.csv"))),
          modelsDirectory: modelsDirectory, name: "hyb")
        try LabelStore.write(
          ModelLabels(labels: ["stable": 1, "canary": 2], canaryFraction: 0.5),
          modelDirectory: modelsDirectory + "/mf")
      } catch {
        fatalError("fuzz fixture: \(error)")
      }
      var labels: [String: ModelLabels] = [:]
      var versions: [String: Set<String>] = [:]
      for name in try! ModelStore.modelNames(modelsDirectory) {
        let directory = modelsDirectory + "/" + name
        labels[name] = try! LabelStore.load(modelDirectory: directory)
        versions[name] = Set(try! FileManager.default.contentsOfDirectory(atPath: directory))
      }
      self.labels = labels
      self.versions = versions

      var configuration = RecServeServer.Configuration(modelsDirectory: modelsDirectory)
      configuration.port = 0
      configuration.threads = 2
      configuration.workThreads = 1
      configuration.pollInterval = 0
      configuration.dataRoot = dataRoot
      configuration.adminToken = token
      configuration.indexes.f16 = true
      configuration.indexes.ivfMinItems = 1
      configuration.batchMinWork = 0
      // Events: a fresh log each run, synced now and then (fuzzing is not about power cuts),
      // within a small memory budget.
      FuzzFiles.fresh(root + "/events")
      var events = EventStore.Configuration(directory: root + "/events")
      events.sync = .intervalMilliseconds(1000)
      events.memoryBytes = 8 << 20
      configuration.eventStore = try! EventStore(configuration: events)
      server = RecServeServer(configuration: configuration)
      let failures = server.registry.loadAll()
      precondition(failures.isEmpty, "fuzz fixture: \(failures)")
      let port = try! server.start()
      channel = Channel(target: "127.0.0.1:\(port)")
      paths = server.rpc.registeredPaths + ["/recserve.v1.Recommender/NoSuchMethod"]
    }

    /// Puts the model folder and the registry back as `init` left them.
    func restore() {
      let fm = FileManager.default
      for name in (try? fm.contentsOfDirectory(atPath: modelsDirectory)) ?? [] {
        let directory = modelsDirectory + "/" + name
        guard let keep = versions[name] else {
          try? fm.removeItem(atPath: directory)
          continue
        }
        for entry in (try? fm.contentsOfDirectory(atPath: directory)) ?? [] {
          if keep.contains(entry) {
            // Items added to a version after training.
            try? fm.removeItem(atPath: directory + "/" + entry + "/" + HybridAdditions.fileName)
          } else {
            try? fm.removeItem(atPath: directory + "/" + entry)
          }
        }
        try! LabelStore.write(labels[name]!, modelDirectory: directory)
      }
      let failures = server.registry.reload()
      precondition(failures.isEmpty, "fuzz fixture could not be restored: \(failures)")
    }
  }

  nonisolated(unsafe) static var fixture: Fixture?
  /// FUZZ_RPC_TRACE=1: a line per call on stderr (method, status, milliseconds).
  static let trace = ProcessInfo.processInfo.environment["FUZZ_RPC_TRACE"] == "1"

  /// Starts the server (once per process); called by the entry point before the first input.
  public static func setUp() {
    if fixture == nil { fixture = Fixture() }
  }

  static let changesState: Set<String> = [
    "/recserve.v1.ModelAdmin/SetLabel", "/recserve.v1.ModelAdmin/UnloadVersion",
    "/recserve.v1.ModelAdmin/ReloadRepository", "/recserve.v1.Recommender/Train",
    "/recserve.v1.ModelAdmin/AddItems",
  ]

  public static func run(_ input: UnsafeRawBufferPointer) {
    setUp()
    let fixture = fixture!
    guard input.count >= 2 else { return }
    let path = fixture.paths[Int(input[0]) % fixture.paths.count]
    let flags = input[1]
    let body = Array(input[2...])
    var metadata: [(String, String)] = []
    if flags & 1 != 0 { metadata.append(("authorization", "Bearer \(token)")) }
    if flags & 2 != 0 { metadata.append(("authorization", "Bearer not-the-token")) }
    if flags & 4 != 0 { metadata.append(("x-request-id", "fuzz-\(flags)")) }
    if flags & 8 != 0 { metadata.append(("x-request-id", String(repeating: "x", count: 200))) }
    // A stream that never ends on its own (Health/Watch) and a long training end at the
    // deadline (which they must honour).
    var timeout = flags & 16 != 0 ? 0.05 : 0.25
    if path.hasSuffix("/Watch") { timeout = 0.05 }
    let start = DispatchTime.now().uptimeNanoseconds
    let result = fixture.channel.unary(path, request: body, metadata: metadata, timeout: timeout)
    if trace {
      let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
      FileHandle.standardError.write(
        "fuzz-rpc: \(path) \(result.code) \(String(format: "%.2f", ms)) ms\n".data(using: .utf8)!)
    }
    switch result.code {
    case .internal, .unknown, .dataLoss:
      preconditionFailure("\(path) answered \(result.code): \(result.message)")
    case .ok:
      break
    default:
      precondition(!result.message.isEmpty, "\(path) answered \(result.code) without a message")
    }
    // A handler must end soon after its call did (a stream polls for its client going away
    // every 100 ms): one still running holds a thread, and whatever it allocated looks leaked.
    let waitUntil = DispatchTime.now().uptimeNanoseconds + 3_000_000_000
    while fixture.server.rpc.handlersRunning > 0 {
      precondition(
        DispatchTime.now().uptimeNanoseconds < waitUntil,
        "\(path): a handler still runs 3 s after its call ended (\(result.code))")
      usleep(1000)
    }
    if changesState.contains(path) && (flags & 1 != 0) {
      fixture.restore()
    }
  }
}
