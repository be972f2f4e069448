import ArgumentParser
import Foundation
import RecServeProto
import RecServeRPC
import SwiftProtobuf

/// `recserve models ...`: the `recserve.v1.ModelAdmin` service of a running server, one
/// subcommand per RPC, plus promote / rollback / canary as names for the usual label moves.
struct ModelsCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "models",
    abstract: "Inspect a running server's models and roll versions out and back.",
    discussion: """
      Calls the ModelAdmin service of a server started with `recserve serve`. When the server has \
      an admin token (--admin-token-file), pass the same token with --token-file FILE or in the \
      environment variable RECSERVE_ADMIN_TOKEN. A call that fails prints \
      `error: <STATUS>: <message>` to standard error and exits with status 1.
      """,
    subcommands: [
      List.self, Status.self, SetLabel.self, Promote.self, Rollback.self, Canary.self,
      Unload.self, Reload.self, AddItems.self,
    ]
  )
}

/// Options every `recserve models` subcommand takes.
struct AdminOptions: ParsableArguments {
  @Option(help: "Server address, HOST:PORT.")
  var target: String = "127.0.0.1:50051"

  @Option(
    name: .customLong("token-file"),
    help: ArgumentHelp(
      "File holding the admin token, sent as 'authorization: Bearer <token>' (default: $RECSERVE_ADMIN_TOKEN when set).",
      valueName: "file"))
  var tokenFile: String?

  @Option(help: "Seconds to wait for the server's answer.")
  var timeout: Double = 10

  @OptionGroup var tls: TLSClientOptions

  @Flag(
    help:
      "Print the server's response as one JSON object (proto3 JSON names, 64-bit integers as numbers, fields at their default value left out)."
  )
  var json = false

  func validate() throws {
    if target.isEmpty || !target.contains(":") {
      throw ValidationError("--target must be HOST:PORT, got '\(target)'")
    }
    if !(timeout > 0) || timeout > 86_400 {
      throw ValidationError("--timeout must be in (0, 86400] seconds")
    }
  }
}

/// One ModelAdmin call: the token, the channel, the status, the decoding, the error message.
struct AdminClient {
  static let environmentVariable = "RECSERVE_ADMIN_TOKEN"

  let options: AdminOptions

  /// Where the token came from, for error messages; nil when none is sent.
  private var tokenSource: String? {
    if let file = options.tokenFile { return "--token-file \(file)" }
    if let value = ProcessInfo.processInfo.environment[Self.environmentVariable],
      !value.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
    {
      return "$\(Self.environmentVariable)"
    }
    return nil
  }

  private func metadata() throws -> [(String, String)] {
    let token: String
    if let file = options.tokenFile {
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory),
        !isDirectory.boolValue, let data = FileManager.default.contents(atPath: file)
      else {
        throw failure("cannot read --token-file \(file)")
      }
      token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
      if token.isEmpty { throw failure("--token-file \(file) is empty") }
    } else if let value = ProcessInfo.processInfo.environment[Self.environmentVariable] {
      token = value.trimmingCharacters(in: .whitespacesAndNewlines)
      if token.isEmpty { return [] }
    } else {
      return []
    }
    // gRPC metadata values are printable ASCII; anything else would fail the call obscurely.
    guard token.utf8.allSatisfy({ (0x20...0x7E).contains($0) }) else {
      throw failure(
        "the token from \(tokenSource ?? "the environment") holds characters a gRPC header cannot carry (printable ASCII only)"
      )
    }
    return [("authorization", "Bearer \(token)")]
  }

  /// Calls `/recserve.v1.ModelAdmin/<method>`; a non-OK status is thrown as `error: CODE: ...`.
  func call<Request: Message, Response: Message>(
    _ method: String, _ request: Request, as _: Response.Type
  ) throws -> Response {
    let metadata = try metadata()
    let bytes: [UInt8]
    do {
      bytes = try request.serializedBytes()
    } catch {
      throw failure("cannot encode the \(method) request: \(error)")
    }
    let tls: Channel.TLS?
    do {
      tls = try options.tls.channelTLS()
    } catch {
      throw failure("\(error)")
    }
    let channel = Channel(target: options.target, tls: tls)
    let result = channel.unary(
      "/recserve.v1.ModelAdmin/\(method)", request: bytes, metadata: metadata,
      timeout: options.timeout)
    guard result.code == .ok else {
      throw failure(describe(result, method: method))
    }
    do {
      return try Response(serializedBytes: result.response)
    } catch {
      throw failure(
        "the answer from \(options.target) is not a valid \(Response.protoMessageName): \(error)")
    }
  }

  private func describe(_ result: UnaryResult, method: String) -> String {
    let message = result.message.isEmpty ? "(no message)" : result.message
    var text = "\(result.code): \(message)"
    switch result.code {
    case .unavailable where !message.contains("shutting down"):
      text +=
        " (no server answered at \(options.target): is `recserve serve` running and listening there, and do --tls, --tls-ca and --tls-cert match its TLS settings?)"
    case .unauthenticated:
      text +=
        " (the server needs its admin token: pass --token-file FILE or set \(Self.environmentVariable))"
    case .permissionDenied:
      text += " (the token from \(tokenSource ?? "?") is not the server's admin token)"
    case .deadlineExceeded:
      text +=
        " (no answer from \(options.target) within \(Self.seconds(options.timeout)) s; see --timeout)"
    case .unimplemented:
      text += " (the server at \(options.target) does not offer ModelAdmin.\(method))"
    default:
      break
    }
    return text
  }

  private func failure(_ message: String) -> ExitCode {
    CLI.failure(CLIError(message))
  }

  /// Prints a response as one JSON object.
  func printJSON(_ message: some Message) throws {
    var encoding = JSONEncodingOptions()
    encoding.alwaysPrintInt64sAsNumbers = true
    encoding.useDeterministicOrdering = true
    do {
      print(try message.jsonString(options: encoding))
    } catch {
      throw failure("cannot print the answer as JSON: \(error)")
    }
  }

  static func seconds(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
  }
}

// MARK: - Human output

enum ModelTable {
  /// One block per poll of `models status --watch`: each loaded version's traffic over the last
  /// minute, stable first, then the canary, then the rest.
  static func printTraffic(_ status: Recserve_V1_ModelStatus, at time: Date) {
    let clock = ISO8601DateFormatter().string(from: time)
    var canary = ""
    if status.canaryFraction > 0, let version = status.labels[status.canaryLabel] {
      canary = "   canary: version \(version) for \(percent(status.canaryFraction)) of users"
    }
    Swift.print(
      "\(clock)   model \(status.name)   serving version \(status.servingVersion)\(canary)")
    let order = ["stable": 0, "canary": 1]
    let loaded = status.versions.filter { $0.hasTraffic }.sorted {
      (order[$0.traffic.role] ?? 2, -$0.version) < (order[$1.traffic.role] ?? 2, -$1.version)
    }
    if loaded.isEmpty {
      Swift.print("  (no version is loaded)")
      return
    }
    var rows: [[String]] = [
      [
        "VERSION", "ROLE", "CALLS/S", "ERRORS/S", "ERROR %", "P50 MS", "P99 MS", "CALLS",
        "WINDOW S",
      ]
    ]
    for version in loaded {
      let t = version.traffic
      let windowCalls = t.callsPerSecond * t.windowSeconds
      let errorShare = windowCalls > 0 ? t.errorsPerSecond * t.windowSeconds / windowCalls * 100 : 0
      rows.append([
        String(version.version), t.role, String(format: "%.1f", t.callsPerSecond),
        String(format: "%.2f", t.errorsPerSecond), String(format: "%.2f", errorShare),
        String(format: "%.3f", t.p50Ms), String(format: "%.3f", t.p99Ms), String(t.calls),
        String(format: "%.0f", t.windowSeconds),
      ])
    }
    let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
    for row in rows {
      Swift.print(
        "  "
          + row.enumerated().map { column, cell in
            cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
          }.joined(separator: "  "))
    }
  }

  /// Prints a model's header line, then one line per version (and a reason line under each
  /// version that has one, e.g. FAILED ones).
  static func print(_ status: Recserve_V1_ModelStatus) {
    let serving = status.servingVersion > 0 ? String(status.servingVersion) : "none"
    let labels =
      status.labels.isEmpty
      ? "none"
      : status.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(
        separator: " ")
    var canary = "none"
    if status.canaryFraction > 0 || !status.canaryLabel.isEmpty {
      let label = status.canaryLabel.isEmpty ? "canary" : status.canaryLabel
      let version = status.labels[label].map { " (version \($0))" } ?? ""
      canary = "\(percent(status.canaryFraction)) of users on '\(label)'\(version)"
    }
    Swift.print(
      "model \(status.name)   serving version: \(serving)   labels: \(labels)   canary: \(canary)")
    if status.versions.isEmpty {
      Swift.print("  (no versions)")
      return
    }
    var rows: [[String]] = [
      ["VERSION", "STATE", "LABELS", "KIND", "SIZE MB", "CREATED", "METRICS"]
    ]
    var reasons: [Int: String] = [:]
    var tunings: [Int: String] = [:]
    for version in status.versions {
      rows.append([
        String(version.version),
        stateName(version.state),
        version.labels.isEmpty ? "-" : version.labels.joined(separator: ","),
        version.kind.isEmpty ? "-" : version.kind,
        version.sizeBytes > 0 ? String(format: "%.2f", Double(version.sizeBytes) / 1e6) : "-",
        version.createdAt.isEmpty ? "-" : version.createdAt,
        metrics(version.metrics),
      ])
      if !version.reason.isEmpty { reasons[rows.count - 1] = version.reason }
      if !version.tuning.isEmpty { tunings[rows.count - 1] = version.tuning }
    }
    for (index, line) in layout(rows).enumerated() {
      Swift.print("  " + line)
      if let reason = reasons[index] {
        Swift.print("      reason: " + reason.replacingOccurrences(of: "\n", with: " "))
      }
      if let tuning = tunings[index] { Swift.print("      tuned: " + tuning) }
    }
  }

  static func printAll(_ models: [Recserve_V1_ModelStatus], target: String) {
    if models.isEmpty {
      Swift.print("no models on \(target)")
      return
    }
    for (index, model) in models.enumerated() {
      if index > 0 { Swift.print("") }
      print(model)
    }
  }

  static func stateName(_ state: Recserve_V1_VersionState) -> String {
    switch state {
    case .unspecified: return "UNSPECIFIED"
    case .loading: return "LOADING"
    case .available: return "AVAILABLE"
    case .failed: return "FAILED"
    case .unloaded: return "UNLOADED"
    case .UNRECOGNIZED(let value): return "STATE_\(value)"
    }
  }

  /// The metrics worth a glance: rating errors first, then ranking quality; else the first few.
  static func metrics(_ metrics: [String: Double]) -> String {
    let preferred = ["rmse", "mae", "ndcg@10", "hr@10", "recall@10", "map@10"]
    var keys = preferred.filter { metrics[$0] != nil }.prefix(3).map { $0 }
    if keys.isEmpty { keys = Array(metrics.keys.sorted().prefix(3)) }
    if keys.isEmpty { return "-" }
    return keys.map { key in
      let value = metrics[key] ?? .nan
      return "\(key)=" + (value.isFinite ? String(format: "%.4f", value) : "\(value)")
    }.joined(separator: " ")
  }

  static func percent(_ fraction: Float) -> String {
    String(format: "%g%%", Double(fraction) * 100)
  }

  /// Left-aligned columns two spaces apart (the last one unpadded).
  static func layout(_ rows: [[String]]) -> [String] {
    let columns = rows.map(\.count).max() ?? 0
    var widths = [Int](repeating: 0, count: columns)
    for row in rows {
      for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
    }
    return rows.map { row in
      row.enumerated().map { index, cell in
        index == row.count - 1
          ? cell : cell + String(repeating: " ", count: widths[index] - cell.count + 2)
      }.joined()
    }
  }
}

// MARK: - Subcommands

func validateName(_ name: String) throws {
  if name.isEmpty { throw ValidationError("NAME is empty: name a model") }
}

func validateVersion(_ version: Int64, allowZero: Bool = false) throws {
  if version < (allowZero ? 0 : 1) {
    throw ValidationError(
      "VERSION must be \(allowZero ? "0 (remove the label) or more" : "a positive integer"), got \(version)"
    )
  }
}

private func validateFraction(_ fraction: Double?, option: String) throws {
  if let fraction, !(0...1).contains(fraction) {
    throw ValidationError("\(option) must be in 0...1, got \(fraction)")
  }
}

/// Calls SetLabel and prints the outcome (`summary` is the line above the model's table).
private func setLabel(
  _ options: AdminOptions, name: String, label: String, version: Int64, fraction: Double?,
  summary: String
) throws {
  var request = Recserve_V1_SetLabelRequest()
  request.name = name
  request.label = label
  request.version = version
  if let fraction { request.canaryFraction = Float(fraction) }
  let client = AdminClient(options: options)
  let response = try client.call("SetLabel", request, as: Recserve_V1_SetLabelResponse.self)
  if options.json { return try client.printJSON(response) }
  print(summary)
  if response.hasStatus { ModelTable.print(response.status) }
}

extension ModelsCommand {
  struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "List every model on the server with its versions, labels and metrics.")

    @OptionGroup var options: AdminOptions

    func run() throws {
      let client = AdminClient(options: options)
      let response = try client.call(
        "ListModels", Recserve_V1_ListModelsRequest(), as: Recserve_V1_ListModelsResponse.self)
      if options.json { return try client.printJSON(response) }
      ModelTable.printAll(response.models, target: options.target)
    }
  }

  struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Show one model: each version's state (and why it FAILED), labels, metrics, size.")

    @Argument(help: "The model's name.")
    var name: String

    @OptionGroup var options: AdminOptions

    @Flag(
      help: """
        Poll every --interval seconds and print the loaded versions' traffic side by side: \
        calls/s, errors and p50/p99 over the last minute, by role (a canary beside stable).
        """)
    var watch = false

    @Option(help: "Seconds between polls with --watch.")
    var interval: Double = 2

    @Option(help: "With --watch: stop after this many polls (default: until interrupted).")
    var count: Int?

    func validate() throws {
      try validateName(name)
      if !(interval >= 0.1) || interval > 3600 {
        throw ValidationError("--interval must be in 0.1...3600 seconds")
      }
      if let count, count < 1 { throw ValidationError("--count must be at least 1") }
      if count != nil && !watch { throw ValidationError("--count is for --watch") }
    }

    func run() throws {
      var request = Recserve_V1_GetModelStatusRequest()
      request.name = name
      let client = AdminClient(options: options)
      var polls = 0
      repeat {
        if polls > 0 { Thread.sleep(forTimeInterval: interval) }
        let response = try client.call(
          "GetModelStatus", request, as: Recserve_V1_GetModelStatusResponse.self)
        polls += 1
        if options.json {
          try client.printJSON(response)
        } else if watch {
          ModelTable.printTraffic(response.status, at: Date())
        } else {
          ModelTable.print(response.status)
        }
        fflush(nil)
      } while watch && polls < (count ?? .max)
    }
  }

  struct SetLabel: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "set-label",
      abstract:
        "Point a label (stable, canary, ...) of a model at a version; VERSION 0 removes it.",
      discussion: """
        Requests that name the label (or, for `stable`, no version at all) are served by that \
        version from the next request on. With --canary-fraction, that fraction of users (by a \
        hash of the user id) is served by the label's version.
        """)

    @Argument(help: "The model's name.")
    var name: String

    @Argument(help: "The label, e.g. stable or canary.")
    var label: String

    @Argument(help: "The version the label points to; 0 removes the label.")
    var version: Int64

    @Option(
      name: .customLong("canary-fraction"),
      help: "Fraction (0..1) of users served by this label's version.")
    var canaryFraction: Double?

    @OptionGroup var options: AdminOptions

    func validate() throws {
      try validateName(name)
      if label.isEmpty { throw ValidationError("LABEL is empty") }
      try validateVersion(version, allowZero: true)
      try validateFraction(canaryFraction, option: "--canary-fraction")
    }

    func run() throws {
      var summary =
        version == 0
        ? "\(name): removed label '\(label)'"
        : "\(name): label '\(label)' -> version \(version)"
      if let canaryFraction, version != 0 {
        summary += " for \(ModelTable.percent(Float(canaryFraction))) of users"
      }
      try setLabel(
        options, name: name, label: label, version: version, fraction: canaryFraction,
        summary: summary)
    }
  }

  struct Promote: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Make a version the one that serves: set-label NAME stable VERSION.")

    @Argument(help: "The model's name.")
    var name: String

    @Argument(help: "The version to serve.")
    var version: Int64

    @OptionGroup var options: AdminOptions

    func validate() throws {
      try validateName(name)
      try validateVersion(version)
    }

    func run() throws {
      try setLabel(
        options, name: name, label: "stable", version: version, fraction: nil,
        summary: "\(name): promoted version \(version) (label 'stable')")
    }
  }

  struct Rollback: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "rollback",
      abstract: "Go back to an earlier version: set-label NAME stable VERSION.")

    @Argument(help: "The model's name.")
    var name: String

    @Argument(help: "The version to serve again.")
    var version: Int64

    @OptionGroup var options: AdminOptions

    func validate() throws {
      try validateName(name)
      try validateVersion(version)
    }

    func run() throws {
      try setLabel(
        options, name: name, label: "stable", version: version, fraction: nil,
        summary: "\(name): rolled back to version \(version) (label 'stable')")
    }
  }

  struct Canary: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Serve a version to a fraction of users: set-label NAME canary VERSION.",
      discussion: """
        Users are split by a hash of the user id, so each user sees the same version across \
        requests. `recserve models set-label NAME canary 0` ends the canary.
        """)

    @Argument(help: "The model's name.")
    var name: String

    @Argument(help: "The version to try.")
    var version: Int64

    @Option(help: "Fraction (0..1) of users served by VERSION.")
    var fraction: Double

    @OptionGroup var options: AdminOptions

    func validate() throws {
      try validateName(name)
      try validateVersion(version)
      try validateFraction(fraction, option: "--fraction")
    }

    func run() throws {
      try setLabel(
        options, name: name, label: "canary", version: version, fraction: fraction,
        summary:
          "\(name): canary version \(version) for \(ModelTable.percent(Float(fraction))) of users")
    }
  }

  struct Unload: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Stop serving a version and free its memory (its files stay on disk).")

    @Argument(help: "The model's name.")
    var name: String

    @Argument(help: "The version to unload.")
    var version: Int64

    @OptionGroup var options: AdminOptions

    func validate() throws {
      try validateName(name)
      try validateVersion(version)
    }

    func run() throws {
      var request = Recserve_V1_UnloadVersionRequest()
      request.name = name
      request.version = version
      let client = AdminClient(options: options)
      let response = try client.call(
        "UnloadVersion", request, as: Recserve_V1_UnloadVersionResponse.self)
      if options.json { return try client.printJSON(response) }
      print("\(name): unloaded version \(version)")
      if response.hasStatus { ModelTable.print(response.status) }
    }
  }

  struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Rescan the server's model folder: load new versions and models, drop removed ones."
    )

    @OptionGroup var options: AdminOptions

    func run() throws {
      let client = AdminClient(options: options)
      let response = try client.call(
        "ReloadRepository", Recserve_V1_ReloadRepositoryRequest(),
        as: Recserve_V1_ReloadRepositoryResponse.self)
      if options.json { return try client.printJSON(response) }
      print("reloaded the model folder of \(options.target)")
      ModelTable.printAll(response.models, target: options.target)
    }
  }
}
