import ArgumentParser
import Foundation
import RecServeModels
import RecServeProto
import RecServeRPC
import RecServeServing
import SwiftProtobuf

struct LoadCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "load",
    abstract:
      "Drive a server with Predict, Rank, SimilarItems or AppendEvents calls and report throughput and latency.",
    discussion: """
      Each client thread opens its own connection and keeps its share of --concurrency calls in \
      flight (closed loop), or starts calls at --rate per second in total (open loop, never more \
      than --concurrency in flight). Latency percentiles come from HdrHistogram (3 significant \
      digits). In a closed loop a call's latency runs from its start; in an open loop from the \
      moment the schedule meant it to start, so a call the client could not send on time (every \
      slot busy) is charged the wait: an overloaded server shows growing latency, not a flat one \
      (corrected for coordinated omission, as wrk2 does).

      Requests come from --requests-file (JSON lines of the method's request message), or name \
      random ids from --users-file / --items-file (one id a line; --ids-from DIR takes a model \
      version folder's users.txt and items.txt), or the ids `recserve gen-data` makes (u1..uN, \
      i1..iM); --zipf S draws earlier ids more often (rank r with weight 1/r^S). Only status \
      codes are checked, so any server answering the method (an echo server too) can be measured.

      A line per second goes to stderr while it runs (--quiet: none); the summary to stdout \
      (--json: one JSON object). --sweep runs each concurrency in turn and prints a table and \
      where throughput stops growing. --swap-at rolls a version out mid-run (set-label, or \
      --swap-publish a version folder into --models) and reports the seconds before, during and \
      after. --csv writes the per-second series, --report a self-contained HTML page with charts.
      """
  )

  typealias RPC = LoadRequests.RPC

  @Option(help: "Server address, HOST:PORT.")
  var target: String

  @Option(
    help: "Method to call: predict, rank, similar (SimilarItems) or append (AppendEvents).")
  var rpc: RPC = .predict

  @Option(help: "Calls in flight in total (split over --threads).")
  var concurrency: Int = 64

  @Option(help: "Client threads, each with its own connection and completion queue.")
  var threads: Int = 2

  @Option(help: "Seconds to measure (default 10; with --count, a limit).")
  var duration: Double?

  @Option(help: "Measure this many calls instead of a duration.")
  var count: Int?

  @Option(help: "Seconds of warm-up before measuring.")
  var warmup: Double = 1

  @Option(help: "Calls per second in total (default: as fast as the server answers).")
  var rate: Double?

  @Option(help: "Model name in requests.")
  var model: String = "demo"

  @Option(help: "Pairs per Predict request.")
  var pairs: Int = 1

  @Option(help: "AppendEvents: events per call.")
  var batch: Int = 1

  @Option(
    name: .customLong("event-type"),
    help: "AppendEvents: the events' type (one the server accepts, see serve --event-types).")
  var eventType: String = "click"

  @Option(help: "k for Rank and SimilarItems.")
  var k: Int32 = 10

  @Option(
    help: """
      Rank: send a session of this many random items (from --items-file) as recent_items and no \
      user_id, as for a visitor the model never saw (0: rank by user_id).
      """)
  var recent: Int = 0

  enum Search: String, ExpressibleByArgument, CaseIterable {
    case exact, f16, ivf
  }

  @Option(
    help: """
      Rank: the search each request asks for (exact, f16 or ivf; default: the server's own \
      choice, SEARCH_DEFAULT).
      """)
  var search: Search?

  @Option(help: "Rank with --search ivf: lists each request visits (0: the model's default).")
  var nprobe: Int32 = 0

  @Option(
    name: .customLong("requests-file"),
    help: "JSON lines, each a request of --rpc's type (proto3 JSON); no model named: --model.")
  var requestsFile: String?

  @Option(name: .customLong("users-file"), help: "User ids to draw from, one a line.")
  var usersFile: String?

  @Option(name: .customLong("items-file"), help: "Item ids to draw from, one a line.")
  var itemsFile: String?

  @Option(
    name: .customLong("ids-from"),
    help: "A model version folder: draw ids from its users.txt and items.txt.")
  var idsFrom: String?

  @Option(help: "Ids u1..uN to draw from when no ids file is given.")
  var users: Int = 1000

  @Option(help: "Ids i1..iM to draw from when no ids file is given.")
  var items: Int = 500

  @Option(help: "Zipf exponent for drawing ids (0: uniform; 1: a typical popularity skew).")
  var zipf: Double = 0

  @Option(help: "Per-call deadline in seconds.")
  var timeout: Double = 10

  @Option(
    help: ArgumentHelp(
      "Concurrencies to run in turn, each for --duration (e.g. 1,2,4,8,16,32,64).",
      valueName: "list"))
  var sweep: String?

  @Option(
    name: .customLong("swap-at"),
    help: "Seconds into the measurement at which to roll out --swap-version or --swap-publish.")
  var swapAt: Double?

  @Option(
    name: .customLong("swap-version"),
    help: "With --swap-at: point --swap-label at this version of --model (ModelAdmin.SetLabel).")
  var swapVersion: Int64?

  @Option(name: .customLong("swap-label"), help: "The label --swap-version moves.")
  var swapLabel: String = "stable"

  @Option(
    name: .customLong("swap-publish"),
    help: """
      With --swap-at: copy this model version folder into --models as --model's next version, \
      ask the server to rescan, and point --swap-label at it.
      """)
  var swapPublish: String?

  @Option(help: "The server's model folder, for --swap-publish.")
  var models: String?

  @Option(
    name: .customLong("token-file"),
    help: "File holding the admin token for --swap-at (default: $RECSERVE_ADMIN_TOKEN).")
  var tokenFile: String?

  @OptionGroup var tls: TLSClientOptions

  @Flag(help: "Print the summary as one JSON object.")
  var json = false

  @Flag(help: "No line per second on stderr.")
  var quiet = false

  @Option(help: ArgumentHelp("Write the per-second series as CSV.", valueName: "file"))
  var csv: String?

  @Option(help: ArgumentHelp("Write a self-contained HTML report.", valueName: "file.html"))
  var report: String?

  func validate() throws {
    try validateRun()
    try validateRequests()
    try validateSweepAndSwap()
  }

  /// Where, how hard and how long.
  private func validateRun() throws {
    if !target.contains(":") {
      throw ValidationError("--target must be HOST:PORT, got '\(target)'")
    }
    if concurrency < 1 || concurrency > 100_000 {
      throw ValidationError("--concurrency must be in 1...100000")
    }
    if threads < 1 || threads > 256 { throw ValidationError("--threads must be in 1...256") }
    if sweep == nil && threads > concurrency {
      throw ValidationError("--threads (\(threads)) cannot exceed --concurrency (\(concurrency))")
    }
    if let duration, !(duration > 0) || duration > 86_400 {
      throw ValidationError("--duration must be in (0, 86400] seconds")
    }
    if let count, count < 1 || count > 1_000_000_000 {
      throw ValidationError("--count must be in 1...1000000000")
    }
    if warmup < 0 || !warmup.isFinite || warmup > 3600 {
      throw ValidationError("--warmup must be in 0...3600 seconds")
    }
    if let rate, !(rate > 0) || !rate.isFinite || rate > 10_000_000 {
      throw ValidationError("--rate must be a positive number up to 10000000")
    }
  }

  /// What each request asks for, and where its ids come from.
  private func validateRequests() throws {
    if pairs < 1 || pairs > 100_000 { throw ValidationError("--pairs must be in 1...100000") }
    if batch < 1 || batch > EventStore.maxBatch {
      throw ValidationError("--batch must be in 1...\(EventStore.maxBatch)")
    }
    if batch != 1 && rpc != .append { throw ValidationError("--batch is for --rpc append") }
    if eventType.isEmpty { throw ValidationError("--event-type must not be empty") }
    if k < 1 || k > 10_000 { throw ValidationError("--k must be in 1...10000") }
    if recent < 0 || recent > 100_000 { throw ValidationError("--recent must be in 0...100000") }
    if recent > 0 && rpc != .rank { throw ValidationError("--recent is for --rpc rank") }
    if search != nil && rpc != .rank { throw ValidationError("--search is for --rpc rank") }
    if nprobe < 0 { throw ValidationError("--nprobe must be >= 0") }
    if nprobe > 0 && search != .ivf { throw ValidationError("--nprobe needs --search ivf") }
    if users < 1 || items < 1 { throw ValidationError("--users and --items must be at least 1") }
    if !(zipf >= 0) || zipf > 10 { throw ValidationError("--zipf must be in 0...10") }
    if !(timeout > 0) || timeout > 3600 {
      throw ValidationError("--timeout must be in (0, 3600] seconds")
    }
    if idsFrom != nil && (usersFile != nil || itemsFile != nil) {
      throw ValidationError(
        "--ids-from replaces --users-file and --items-file: give one or the other")
    }
    if requestsFile != nil
      && (idsFrom != nil || usersFile != nil || itemsFile != nil || zipf > 0 || recent > 0)
    {
      throw ValidationError(
        "--requests-file sends its own requests: --ids-from, --users-file, --items-file, --zipf and --recent do not apply"
      )
    }
  }

  /// `--sweep`, `--swap-at` and their companions, and the report's file name.
  private func validateSweepAndSwap() throws {
    if let sweep {
      let levels = try Self.levels(sweep)
      if swapAt != nil { throw ValidationError("--sweep and --swap-at are separate runs") }
      if count != nil {
        throw ValidationError("--sweep runs each level for --duration, not --count")
      }
      if let top = levels.max(), top > 100_000 {
        throw ValidationError("--sweep: concurrency must be in 1...100000")
      }
    }
    if let swapAt {
      if rpc == .append {
        throw ValidationError("--swap-at watches the versions answers name: not for --rpc append")
      }
      if !(swapAt >= 0) || !swapAt.isFinite {
        throw ValidationError("--swap-at must be a number of seconds >= 0")
      }
      if (swapVersion == nil) == (swapPublish == nil) {
        throw ValidationError("--swap-at needs exactly one of --swap-version and --swap-publish")
      }
      if let swapVersion, swapVersion < 1 {
        throw ValidationError("--swap-version must be a version number >= 1")
      }
      if swapPublish != nil && models == nil {
        throw ValidationError("--swap-publish needs --models (the server's model folder)")
      }
      if let duration, swapAt >= duration {
        throw ValidationError(
          "--swap-at (\(swapAt) s) must come before the end of --duration (\(duration) s)")
      }
      if swapLabel.isEmpty { throw ValidationError("--swap-label must not be empty") }
    } else if swapVersion != nil || swapPublish != nil {
      throw ValidationError("--swap-version and --swap-publish need --swap-at SECONDS")
    }
    if let report, !report.hasSuffix(".html") && !report.hasSuffix(".htm") {
      throw ValidationError("--report writes HTML: give a file name ending in .html")
    }
  }

  /// The concurrencies of `--sweep`, in the order given.
  static func levels(_ text: String) throws -> [Int] {
    let parts = text.split(separator: ",", omittingEmptySubsequences: false)
    var levels: [Int] = []
    for part in parts {
      guard let value = Int(part.trimmingCharacters(in: .whitespaces)), value >= 1 else {
        throw ValidationError(
          "--sweep must be concurrencies >= 1 separated by commas (e.g. 1,2,4,8), got '\(part)'")
      }
      levels.append(value)
    }
    if levels.isEmpty { throw ValidationError("--sweep needs at least one concurrency") }
    return levels
  }

  func run() throws {
    do {
      try execute()
    } catch let error as CLIError {
      throw CLI.failure(error)
    }
  }

  private func execute() throws {
    let requests = try makeRequests()
    let duration = self.duration ?? (count == nil ? 10 : nil)
    let basePlan = LoadRun.Plan(
      target: target, path: rpc.path, requests: requests, concurrency: concurrency,
      threads: threads, duration: duration, count: count, warmup: warmup, rate: rate,
      timeout: timeout, trackVersions: swapAt != nil, tls: try tls.channelTLS())
    var parameters = LoadParameters(command: self, duration: duration)
    let output = LoadOutput(json: json, quiet: quiet)
    let perSecond: ((Int, LoadWindow) -> Void)? = quiet ? nil : { output.line($0, $1) }

    if let sweep {
      var results: [LoadResult] = []
      for level in try Self.levels(sweep) {
        var plan = basePlan
        plan.concurrency = level
        if !quiet { CLI.printErr("sweep: \(level) in flight") }
        let result = LoadRun(plan: plan).run(second: perSecond)
        results.append(result)
      }
      let summary = LoadSweep(results: results)
      output.printSweep(summary, parameters: parameters)
      if let csv { try LoadOutput.writeSweepCSV(summary, to: csv) }
      if let report {
        try LoadOutput.write(
          LoadHTML.page(parameters: parameters, results: results, sweep: summary), to: report)
      }
      if results.allSatisfy({ $0.calls == 0 }) {
        throw CLIError("no call completed: is a server listening on \(target)?")
      }
      return
    }

    var swap: (at: Double, action: @Sendable () -> SwapOutcome)?
    if let swapAt {
      let action = try swapAction()
      swap = (swapAt, { action.run() })
      parameters.swap = action.description
    }
    let result = LoadRun(plan: basePlan).run(second: perSecond, swap: swap)
    let windows = result.swap.map { LoadSwapWindows(result: result, swap: $0) }
    output.printSummary(result, parameters: parameters, swapWindows: windows)
    if let csv { try LoadOutput.writeCSV(result, to: csv) }
    if let report {
      try LoadOutput.write(
        LoadHTML.page(parameters: parameters, results: [result], sweep: nil, swapWindows: windows),
        to: report)
    }
    if result.calls == 0 {
      throw CLIError("no call completed: is a server listening on \(target)?")
    }
    if result.ok == 0 {
      throw CLIError("no call to \(target) succeeded (see the status codes above)")
    }
    if let event = result.swap, let error = event.error {
      throw CLIError("the swap at \(String(format: "%.1f", event.requested)) s failed: \(error)")
    }
  }

  private func makeRequests() throws -> [[UInt8]] {
    if let requestsFile {
      return try LoadRequests.fromFile(requestsFile, rpc: rpc, model: model)
    }
    let usersPath = idsFrom.map { "\($0)/users.txt" } ?? usersFile
    let itemsPath = idsFrom.map { "\($0)/items.txt" } ?? itemsFile
    let usersOption = idsFrom == nil ? "--users-file" : "--ids-from"
    let itemsOption = idsFrom == nil ? "--items-file" : "--ids-from"
    let userIds =
      rpc == .similar || recent > 0
      ? ["-"]
      : try LoadRequests.ids(file: usersPath, prefix: "u", count: users, option: usersOption)
    let itemIds =
      rpc == .rank && recent == 0
      ? ["-"]
      : try LoadRequests.ids(file: itemsPath, prefix: "i", count: items, option: itemsOption)
    var shape = LoadRequests.Shape(model: model)
    shape.pairs = pairs
    shape.k = k
    shape.recent = recent
    shape.nprobe = nprobe
    shape.batch = batch
    shape.eventType = eventType
    shape.timestampMs = Int64(Date().timeIntervalSince1970 * 1000)
    switch search {
    case .exact: shape.search = .exact
    case .f16: shape.search = .f16
    case .ivf: shape.search = .ivf
    case nil: break
    }
    // Enough distinct requests that a cache keyed on the request would not flatter the server.
    return try LoadRequests.generated(
      rpc: rpc, shape: shape, users: userIds, items: itemIds, zipf: zipf, count: 16_384)
  }

  /// The swap `--swap-at` performs, on a thread of its own while the load runs.
  private func swapAction() throws -> LoadSwap {
    var options = AdminOptions()
    options.target = target
    options.tokenFile = tokenFile
    options.tls = tls
    options.timeout = max(timeout, 30)
    let admin = AdminClient(options: options)
    if let swapVersion {
      return LoadSwap(
        description: "set-label \(model) \(swapLabel) \(swapVersion)", admin: admin, model: model,
        label: swapLabel, version: swapVersion, publish: nil)
    }
    let source = swapPublish!
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory),
      isDirectory.boolValue
    else { throw CLIError("--swap-publish \(source): not a model version folder") }
    let folder = "\(models!)/\(model)"
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory),
      isDirectory.boolValue
    else { throw CLIError("--models: \(folder) is not a model folder (no model '\(model)' there)") }
    return LoadSwap(
      description: "publish \(source) as the next version of \(model), then set-label \(swapLabel)",
      admin: admin, model: model, label: swapLabel, version: nil, publish: (source, folder))
  }
}

extension LoadRequests.RPC: ExpressibleByArgument {}
