import ArgumentParser
import CSystem
import Dispatch
import Foundation
import Logging
import RecServeModels
import RecServeRPC
import RecServeServing

struct ServeCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "serve",
    abstract: "Serve the models in a folder over gRPC.",
    discussion: """
      Serves every model under DIR/<name>/<version>/ (the highest version that verifies, or the \
      one labelled `stable`). With no models in DIR it first trains the demo models `demo`, `demo-seq` and `demo-hybrid` on \
      generated data, so a first run serves real recommendations. Prints `listening on HOST:PORT` \
      once ready; SIGINT or SIGTERM stop it gracefully (calls in flight finish).
      """
  )

  @Option(name: .customLong("models"), help: "The model folder (created when missing).")
  var models: String

  @Option(help: "Address to listen on.")
  var host: String = "127.0.0.1"

  @Option(help: "Port to listen on (0 picks a free one).")
  var port: Int = 50051

  @Option(
    name: .customLong("data-root"), help: "Folder that Train requests may read data files from.")
  var dataRoot: String?

  @Option(
    name: .customLong("admin-token-file"),
    help:
      "File holding the token that ModelAdmin and Train calls must send as 'authorization: Bearer <token>'."
  )
  var adminTokenFile: String?

  @Flag(
    name: .customLong("insecure-admin"),
    help:
      "Allow a non-loopback --host without --admin-token-file: Train and ModelAdmin then take calls from anyone who can reach the port."
  )
  var insecureAdmin = false

  @Option(
    name: .customLong("tls-cert"),
    help: ArgumentHelp(
      "Serve gRPC over TLS with this PEM certificate chain (needs --tls-key).", valueName: "file"))
  var tlsCert: String?

  @Option(
    name: .customLong("tls-key"),
    help: ArgumentHelp("The private key (PEM, unencrypted) of --tls-cert.", valueName: "file"))
  var tlsKey: String?

  @Option(
    name: .customLong("tls-client-ca"),
    help: ArgumentHelp(
      "Mutual TLS: every client must present a certificate these PEM roots verify.",
      valueName: "file"))
  var tlsClientCA: String?

  @Option(
    name: .customLong("log-format"),
    help: "Server log on stderr: text (for people) or json (one object a line, for log pipelines).")
  var logFormat: ServerLog.Format = .text

  @Option(
    name: .customLong("log-level"),
    help: "Least severe events logged: trace, debug, info, notice, warning, error or critical.")
  var logLevel: Logger.Level = .info

  @Option(help: "Request threads (one completion queue each); default: the number of cores.")
  var threads: Int?

  @Option(
    name: .customLong("metrics-port"), help: "Serve Prometheus metrics at http://HOST:P/metrics.")
  var metricsPort: Int?

  @Option(
    name: .customLong("grace-period"), help: "Seconds calls in flight get to finish at shutdown.")
  var gracePeriod: Double = 10

  @Option(
    name: .customLong("drain-seconds"),
    help: ArgumentHelp(
      "On SIGINT/SIGTERM, first answer NOT_SERVING on grpc.health.v1 for this many seconds while serving calls as usual, so that load balancers move traffic away; then stop (a second signal stops at once).",
      valueName: "seconds"))
  var drainSeconds: Double = 0

  @Option(
    name: .customLong("poll-interval"),
    help: "Seconds between scans of the model folder for new versions (0: never).")
  var pollInterval: Double = 1

  @Option(
    name: .customLong("keep-versions"),
    help: "Available versions kept loaded per model, besides labelled ones.")
  var keepVersions: Int = 2

  @Option(name: .customLong("max-message-bytes"), help: "Largest request accepted, in bytes.")
  var maxMessageBytes: Int = 16 << 20

  @Option(
    name: .customLong("work-threads"),
    help: """
      Threads for expensive requests (priced above --inline-work), at a lower priority than the \
      request threads; default: cores - 1 (at least 1).
      """)
  var workThreads: Int?

  @Option(
    name: .customLong("work-queue"),
    help: "Expensive requests that may wait for a work thread; beyond, RESOURCE_EXHAUSTED.")
  var workQueue: Int = 32

  @Option(
    name: .customLong("inline-work"),
    help: """
      Estimated multiply-adds up to which a request is answered on the thread that received it; \
      dearer ones go to the work threads.
      """)
  var inlineWork: Int = RecommenderService.Limits().inlineWork

  @Option(
    name: .customLong("max-diversity-work"),
    help: """
      Multiply-adds a Rank's diversity re-rank may take (k x pool x dim, pool = max(5k, k + 50)); \
      beyond, INVALID_ARGUMENT.
      """)
  var maxDiversityWork: Int = RecommenderService.Limits().diversityWork

  @Option(
    name: .customLong("batch-threads"),
    help: """
      Threads that serve concurrent Rank requests for the same model in batches, one scan of \
      the catalog for all, split over every core (0: no batching).
      """)
  var batchThreads: Int = 1

  @Option(
    name: .customLong("rank-threads"),
    help: """
      Threads one catalog scan is split over: a Rank alone on the server, or a batch \
      (default: the number of cores).
      """)
  var rankThreads: Int?

  @Option(name: .customLong("max-batch"), help: "Most Rank requests in one batch.")
  var maxBatch: Int = 32

  @Option(
    name: .customLong("batch-wait-us"),
    help: """
      Microseconds a batch waits for more requests once requests wait (0: none; a request that \
      finds no other in flight is never delayed).
      """)
  var batchWaitMicroseconds: Int = 0

  @Option(
    name: .customLong("batch-min-work"),
    help: """
      Multiply-adds of catalog scoring (items x (dim + 2)) from which a Rank may join a batch; \
      smaller catalogs are served one request at a time.
      """)
  var batchMinWork: Int = 1_000_000

  @Option(
    name: .customLong("search"),
    help: """
      How a Rank that leaves `search` unset searches: exact, f16 (the default; needs the f16 \
      copy) or ivf (needs --ivf-min-items); a version without what that needs is searched \
      exactly. f16 gives the exact answer, reading half the bytes.
      """)
  var search: String?

  @Flag(
    name: .customLong("f16"),
    inversion: .prefixedNo,
    help: """
      Keep a half-precision copy of every loaded version's item vectors (half the f32 matrix's \
      memory more) for Rank with SEARCH_F16: a shortlist read from it, re-scored exactly.
      """)
  var f16 = true

  @Option(
    name: .customLong("ivf-min-items"),
    help: """
      Build an IVF index (k-means cells over the item vectors) at load for versions with at \
      least this many items, for Rank with SEARCH_IVF (0: never).
      """)
  var ivfMinItems: Int = 0

  @Option(
    name: .customLong("ivf-lists"),
    help: "Cells of an IVF index (0: about 4 x sqrt(items)).")
  var ivfLists: Int = 0

  @Option(
    name: .customLong("ivf-nprobe"),
    help: "Cells a SEARCH_IVF Rank visits when it sets no nprobe (0: cells / 80, at least 8).")
  var ivfProbe: Int = 0

  @Option(
    name: .customLong("max-streams"),
    help:
      "Server-streaming calls (Train, Health.Watch) running at once; beyond, RESOURCE_EXHAUSTED."
  )
  var maxStreams: Int = 128

  @Option(
    name: .customLong("max-streams-per-connection"),
    help: "Calls one client connection may have open at once (HTTP/2 MAX_CONCURRENT_STREAMS).")
  var maxStreamsPerConnection: Int = 100

  @Option(
    name: .customLong("train-memory-mb"),
    help: ArgumentHelp(
      "MiB the Train RPCs running at once may use, by their estimates; a training over it is refused with RESOURCE_EXHAUSTED before it allocates anything.",
      discussion: "Default: a quarter of the memory (physical, or the cgroup limit when lower)."))
  var trainMemoryMB: Int?

  @Option(
    name: .customLong("max-trainings"),
    help:
      "Train RPCs running at once (one per model); up to 2 more wait in line, then RESOURCE_EXHAUSTED."
  )
  var maxTrainings: Int = 1

  @OptionGroup(title: "Events (AppendEvents)")
  var events: EventOptions

  func validate() throws {
    if (tlsCert == nil) != (tlsKey == nil) {
      throw ValidationError("--tls-cert and --tls-key go together")
    }
    if tlsClientCA != nil && tlsCert == nil {
      throw ValidationError(
        "--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
    }
    if !(0...65535).contains(port) {
      throw ValidationError("--port must be in 0...65535, got \(port)")
    }
    if let threads, !(1...256).contains(threads) {
      throw ValidationError("--threads must be in 1...256, got \(threads)")
    }
    if let metricsPort, !(1...65535).contains(metricsPort) {
      throw ValidationError("--metrics-port must be in 1...65535, got \(metricsPort)")
    }
    if drainSeconds < 0 || !drainSeconds.isFinite {
      throw ValidationError("--drain-seconds must be a number of seconds >= 0")
    }
    if gracePeriod < 0 || !gracePeriod.isFinite {
      throw ValidationError("--grace-period must be a number of seconds >= 0")
    }
    if pollInterval < 0 || !pollInterval.isFinite {
      throw ValidationError("--poll-interval must be >= 0 seconds")
    }
    if keepVersions < 1 { throw ValidationError("--keep-versions must be at least 1") }
    if maxMessageBytes < 1024 { throw ValidationError("--max-message-bytes must be at least 1024") }
    if let workThreads, !(1...256).contains(workThreads) {
      throw ValidationError("--work-threads must be in 1...256, got \(workThreads)")
    }
    if !(0...100_000).contains(workQueue) {
      throw ValidationError("--work-queue must be in 0...100000, got \(workQueue)")
    }
    if inlineWork < 0 { throw ValidationError("--inline-work must be >= 0") }
    if maxDiversityWork < 0 { throw ValidationError("--max-diversity-work must be >= 0") }
    if let rankThreads, !(1...256).contains(rankThreads) {
      throw ValidationError("--rank-threads must be in 1...256, got \(rankThreads)")
    }
    if !(0...256).contains(batchThreads) {
      throw ValidationError("--batch-threads must be in 0...256, got \(batchThreads)")
    }
    if !(1...1024).contains(maxBatch) {
      throw ValidationError("--max-batch must be in 1...1024, got \(maxBatch)")
    }
    if let search, !["exact", "f16", "ivf"].contains(search) {
      throw ValidationError("--search must be exact, f16 or ivf, got '\(search)'")
    }
    if search == "f16" && !f16 {
      throw ValidationError("--search f16 needs the f16 copy, which --no-f16 turns off")
    }
    if search == "ivf" && ivfMinItems == 0 {
      throw ValidationError("--search ivf needs --ivf-min-items (which versions get an index)")
    }
    for (flag, value, most) in [
      ("--ivf-min-items", ivfMinItems, Int(Int32.max)), ("--ivf-lists", ivfLists, 1 << 20),
      ("--ivf-nprobe", ivfProbe, 1 << 20),
    ] where !(0...most).contains(value) {
      throw ValidationError("\(flag) must be in 0...\(most), got \(value)")
    }
    if batchMinWork < 0 {
      throw ValidationError("--batch-min-work must be >= 0, got \(batchMinWork)")
    }
    if !(0...100_000).contains(batchWaitMicroseconds) {
      throw ValidationError("--batch-wait-us must be in 0...100000, got \(batchWaitMicroseconds)")
    }
    if !(1...100_000).contains(maxStreams) {
      throw ValidationError("--max-streams must be in 1...100000, got \(maxStreams)")
    }
    if !(1...100_000).contains(maxStreamsPerConnection) {
      throw ValidationError(
        "--max-streams-per-connection must be in 1...100000, got \(maxStreamsPerConnection)")
    }
    if let trainMemoryMB, !(1...(1 << 30)).contains(trainMemoryMB) {
      throw ValidationError("--train-memory-mb must be a number of MiB >= 1, got \(trainMemoryMB)")
    }
    if !(1...64).contains(maxTrainings) {
      throw ValidationError("--max-trainings must be in 1...64, got \(maxTrainings)")
    }
  }

  func run() throws {
    do {
      try execute()
    } catch let error as CLIError {
      throw CLI.failure(error)
    }
  }

  private func execute() throws {
    csystem_line_buffer_stdout()
    ServerLog.configure(format: logFormat, level: logLevel)
    try checkAdminExposure()
    // Requests run on the server's own threads: one BLAS thread each keeps OpenBLAS's idle
    // workers from spinning against them.
    BLASThreads.set(1)
    do {
      try FileManager.default.createDirectory(atPath: models, withIntermediateDirectories: true)
    } catch {
      throw CLIError("cannot create the model folder \(models): \(error.localizedDescription)")
    }
    let configuration = try serverConfiguration()
    try trainDemoModelsIfEmpty()
    logStarting(configuration)
    let server = RecServeServer(configuration: configuration)
    logEvents(of: server)
    for failure in server.registry.loadAll() {
      log("warning: \(failure)")
    }
    logServing(server.registry)
    log(
      "Train: at most \(maxTrainings) at once, within a memory budget of "
        + "\(configuration.trainMemoryBytes >> 20) MiB (--train-memory-mb)")

    let bound: Int
    do {
      bound = try server.start()
    } catch {
      throw CLIError("\(error)")
    }
    let metrics = try startMetrics(server)
    try stopOnSignals(server)

    let printableHost = host.contains(":") ? "[\(host)]" : host
    print("listening on \(printableHost):\(bound)")
    server.wait()
    metrics?.stop()
    log("stopped")
  }

  /// Train and ModelAdmin change what serves: on an address other machines reach, they need a
  /// token, or an explicit choice to leave them open. Checked before anything is bound.
  private func checkAdminExposure() throws {
    if adminTokenFile == nil && !HostAddress.isLoopback(host) {
      if !insecureAdmin {
        throw CLIError(
          "--host \(host) is reachable from other machines, and without --admin-token-file anyone "
            + "who can reach it could train models and change what serves (Train and ModelAdmin). "
            + "Give --admin-token-file FILE (callers send 'authorization: Bearer <token>'), or "
            + "--insecure-admin to serve them without a token on a network you trust, or listen on "
            + "127.0.0.1.")
      }
      log(
        "warning: --insecure-admin: Train and ModelAdmin take calls without a token from anyone "
          + "who can reach \(host)")
    }
  }

  /// The server's configuration from the options, with the TLS files and the admin token read
  /// and checked.
  private func serverConfiguration() throws -> RecServeServer.Configuration {
    var configuration = RecServeServer.Configuration(modelsDirectory: models)
    configuration.host = host
    configuration.port = port
    configuration.threads = threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount)
    configuration.maxReceiveMessageBytes = maxMessageBytes
    configuration.pollInterval = pollInterval
    configuration.keepVersions = keepVersions
    if let workThreads { configuration.workThreads = workThreads }
    configuration.workQueue = workQueue
    configuration.maxStreams = maxStreams
    configuration.maxStreamsPerConnection = maxStreamsPerConnection
    configuration.limits.inlineWork = inlineWork
    configuration.batchThreads = batchThreads
    if let rankThreads { configuration.limits.cores = rankThreads }
    configuration.maxBatch = maxBatch
    configuration.batchWaitMicroseconds = batchWaitMicroseconds
    configuration.batchMinWork = batchMinWork
    configuration.limits.search = ["exact": .exact, "ivf": .ivf][search ?? "f16"] ?? .f16
    configuration.indexes.f16 = f16
    configuration.indexes.ivfMinItems = ivfMinItems
    configuration.indexes.ivfLists = ivfLists
    configuration.indexes.ivfProbe = ivfProbe
    configuration.limits.diversityWork = maxDiversityWork
    configuration.maxTrainings = maxTrainings
    if let trainMemoryMB { configuration.trainMemoryBytes = trainMemoryMB << 20 }
    configuration.eventStore = try events.openStore { log($0) }
    if let dataRoot {
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: dataRoot, isDirectory: &isDirectory),
        isDirectory.boolValue
      else {
        throw CLIError("--data-root \(dataRoot) is not a folder")
      }
      configuration.dataRoot = dataRoot
    }
    if let tlsCert, let tlsKey {
      let chain = try TLSFiles.read(tlsCert, option: "--tls-cert")
      let key = try TLSFiles.read(tlsKey, option: "--tls-key")
      try TLSFiles.checkPair(chain: chain, chainPath: tlsCert, key: key, keyPath: tlsKey)
      var clientCA: String?
      if let tlsClientCA {
        let roots = try TLSFiles.read(tlsClientCA, option: "--tls-client-ca")
        try TLSFiles.checkRoots(roots, path: tlsClientCA, option: "--tls-client-ca")
        clientCA = roots
      }
      configuration.tls = RPCServer.Configuration.TLS(
        certificateChain: chain, privateKey: key, clientCertificateAuthority: clientCA)
    }
    if let adminTokenFile {
      guard let data = FileManager.default.contents(atPath: adminTokenFile) else {
        throw CLIError("cannot read --admin-token-file \(adminTokenFile)")
      }
      let token = String(decoding: data, as: UTF8.self).trimmingCharacters(
        in: .whitespacesAndNewlines)
      if token.isEmpty { throw CLIError("--admin-token-file \(adminTokenFile) is empty") }
      configuration.adminToken = token
    }

    return configuration
  }

  /// Only a folder that is empty or not there gets the demo models: one that cannot be read
  /// is served as it becomes readable (the registry retries on every poll).
  private func trainDemoModelsIfEmpty() throws {
    var empty = false
    do {
      empty =
        try ModelStore.scanModels(models).map { $0.present.isEmpty && $0.unreadable.isEmpty }
        ?? true
    } catch {
      log("warning: \(error); not training the demo models, retrying while serving")
    }
    if empty { try trainDemoModel() }
  }

  private func logStarting(_ configuration: RecServeServer.Configuration) {
    log(
      "starting",
      metadata: [
        "host": "\(host)", "port": "\(port)", "threads": "\(configuration.threads)",
        "models": "\(models)",
        "tls": "\(tlsCert == nil ? "off" : tlsClientCA == nil ? "tls" : "mutual")",
        "admin": "\(adminTokenFile != nil ? "token" : insecureAdmin ? "open" : "loopback")",
        "metrics_port": "\(metricsPort.map(String.init) ?? "off")",
        "poll_interval_s": "\(pollInterval)", "keep_versions": "\(keepVersions)",
        "max_trainings": "\(maxTrainings)",
      ])
  }

  /// Failed calls and the registry's events go to the log.
  private func logEvents(of server: RecServeServer) {
    // Failed calls: the server's own failures as warnings, the rest (bad requests, deadlines,
    // refusals) at debug. A Train error's words may quote its data path: left out.
    server.rpc.onCallFailed = { failed in
      let serious: Set<StatusCode> = [.internal, .unknown, .dataLoss]
      var fields: Logger.Metadata = [
        "event": "call_failed", "method": "\(failed.method)", "code": "\(failed.code)",
        "request_id": "\(failed.requestID)",
      ]
      if !failed.method.hasSuffix("/Train") { fields["message"] = "\(failed.message)" }
      log(
        "\(failed.method) failed with \(failed.code)",
        level: serious.contains(failed.code) ? .warning : .debug, metadata: fields)
    }
    server.registry.hub.subscribe { event in
      log(
        event.message, level: event.warning ? .warning : .info,
        metadata: event.fields.mapValues { .string($0) })
    }
  }

  /// The metrics port, when asked for (the server is shut down if it cannot listen).
  private func startMetrics(_ server: RecServeServer) throws -> MetricsServer? {
    var metrics: MetricsServer?
    if let metricsPort {
      let exporter = MetricsServer(server: server)
      do {
        let port = try exporter.start(host: host, port: metricsPort)
        log(
          "metrics at http://\(host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host):\(port)/metrics"
        )
      } catch {
        server.shutdown(gracePeriod: 0)
        throw CLIError("\(error)")
      }
      metrics = exporter
    }
    return metrics
  }

  /// Graceful stop on SIGINT / SIGTERM, in place before "listening on" tells anyone the server
  /// is there: the handler writes the signal's number to a pipe, a thread reads it.
  private func stopOnSignals(_ server: RecServeServer) throws {
    var stopPipe: [Int32] = [-1, -1]
    guard pipe(&stopPipe) == 0, csystem_install_stop_signals(stopPipe[1]) == 0 else {
      server.shutdown(gracePeriod: 0)
      throw CLIError(
        "cannot install the SIGINT/SIGTERM handler: \(String(cString: strerror(errno)))")
    }
    let grace = gracePeriod
    let drain = drainSeconds
    let stopReader = stopPipe[0]
    let signalThread = Thread {
      var number: UInt8 = 0
      while read(stopReader, &number, 1) < 0 && errno == EINTR {}
      if drain > 0 {
        log(
          "received signal \(number): draining for \(drain) s (health NOT_SERVING, calls served as usual)"
        )
        server.beginDraining()
        // Wait out the drain, or until a second signal asks to stop now.
        var poller = pollfd(fd: stopReader, events: Int16(POLLIN), revents: 0)
        let until = DispatchTime.now().uptimeNanoseconds + UInt64(drain * 1e9)
        while DispatchTime.now().uptimeNanoseconds < until {
          let left = Int32((until - DispatchTime.now().uptimeNanoseconds) / 1_000_000) + 1
          let ready = poll(&poller, 1, left)
          if ready > 0 {
            _ = read(stopReader, &number, 1)
            log("received signal \(number) while draining: stopping now")
            break
          }
          if ready < 0 && errno != EINTR { break }
        }
      }
      log("received signal \(number): stopping (calls in flight get \(grace) s)")
      server.shutdown(gracePeriod: grace)
    }
    signalThread.name = "recserve-signals"
    signalThread.start()

  }

  /// One line per model. A function of its own, so the snapshot it reads (and the versions in it)
  /// is not kept alive for the life of the server.
  private func logServing(_ registry: ModelRegistry) {
    let snapshot = registry.snapshot
    for name in snapshot.models.keys.sorted() {
      if let serving = snapshot.models[name]?.serving {
        log(
          "serving model '\(name)' version \(serving.version) (\(serving.model.kind), "
            + "\(serving.model.userCount) users, \(serving.model.itemCount) items)")
      } else {
        log("warning: model '\(name)' has no version that can serve")
      }
    }
  }

  /// The demo models: `demo` (MF on generated ratings) and `demo-seq` (SASRec on generated
  /// sessions that walk chains of 20 consecutive items, i1..i20, i21..i40, ...: a session of
  /// i21, i22, i23 ranks i24 first among the items not in it).
  private func trainDemoModel() throws {
    log(
      "no models in \(models): training the demo models 'demo', 'demo-seq' and 'demo-hybrid' on generated data"
    )
    let data = try SyntheticData.generate(
      SyntheticData.Config(users: 2000, items: 1000, seed: 7, dim: 8, density: 0.03))
    let result = try trainAndPublishMF(
      data: data, config: MFConfig(dim: 32, epochs: 30, seed: 7), holdout: 0.1,
      modelsDirectory: models, name: "demo")
    let rmse = result.metrics["rmse"].map { String(format: "%.4f", $0) } ?? "n/a"
    log(
      "trained demo version \(result.version) on \(result.trainRows) ratings in "
        + String(format: "%.2f s", result.trainSeconds) + " (held-out RMSE \(rmse))")
    let sessions = try SyntheticSequences.generate(
      SyntheticSequences.Config(users: 2000, items: 1000, seed: 7))
    let sequential = try trainAndPublishImplicit(
      data: sessions,
      config: .sasrec(
        SASRecConfig(
          dim: 32, maxlen: 50, blocks: 2, heads: 1, dropout: 0.1, learningRate: 0.005,
          epochs: 30, seed: 7)),
      modelsDirectory: models, name: "demo-seq")
    let hr = sequential.metrics["hr@10"].map { String(format: "%.3f", $0) } ?? "n/a"
    log(
      "trained demo-seq version \(sequential.version) on \(sequential.trainRows) events in "
        + String(format: "%.2f s", sequential.trainSeconds) + " (next-item HR@10 \(hr))")
    try trainDemoHybrid()
  }

  /// `demo-hybrid`: the hybrid model on a generated catalog (`SyntheticCatalog`: items cycle
  /// through six genres, i1 Action, i2 Comedy, ...; users favour one genre), whose last 100
  /// items, i901..i1000, nobody has touched: only their genres and titles rank them, and
  /// AddItems can add more.
  private func trainDemoHybrid() throws {
    let catalog = try SyntheticCatalog.generate(
      SyntheticCatalog.Config(users: 2000, items: 1000, seed: 7))
    let features = try FeatureTable.parse(
      text: catalog.featuresCSV, source: "demo item features")
    let hybrid = try trainAndPublishImplicit(
      data: catalog.interactions,
      config: .hybrid(HybridConfig(dim: 32, epochs: 20, seed: 7), HybridInputs(items: features)),
      modelsDirectory: models, name: "demo-hybrid")
    log(
      "trained demo-hybrid version \(hybrid.version) on \(hybrid.trainRows) interactions in "
        + String(format: "%.2f s", hybrid.trainSeconds)
        + " (\(catalog.newItemIds.count) items without interactions)")
  }
}

/// An error the CLI prints as `error: <message>` before exiting with status 1.
struct CLIError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
