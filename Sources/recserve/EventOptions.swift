import ArgumentParser
import Foundation
import RecServeModels
import RecServeServing

/// `recserve serve`'s options for the event log (AppendEvents) and the users' histories.
struct EventOptions: ParsableArguments {
  @Option(
    name: .customLong("events-dir"),
    help: ArgumentHelp(
      "Keep events (AppendEvents) in an append-only log in this folder (created when missing), replayed at start.",
      discussion:
        "Without it the server keeps no events and AppendEvents answers FAILED_PRECONDITION."))
  var directory: String?

  @Option(
    name: .customLong("events-fsync"),
    help: ArgumentHelp(
      "When an append is durable: 'always' (fsync before answering; survives a power cut) or 'interval-ms=N' (answer once written, fsync at most every N ms: survives the process being killed, not a power cut within N ms).",
      valueName: "always|interval-ms=N"))
  var fsync: String = "always"

  @Option(
    name: .customLong("history-length"),
    help: "Latest events kept per user in memory, which Rank reads (1...100000).")
  var historyLength: Int = 200

  @Option(
    name: .customLong("events-memory-mb"),
    help:
      "MiB the users' histories may take in memory; past it the least recently active users' histories are evicted to a scratch file beside the log (read from there, brought back by their next event)."
  )
  var memoryMB: Int = 512

  @Option(
    name: .customLong("event-types"),
    help: "The event types accepted, comma-separated.")
  var types: String = EventStore.defaultTypes.sorted().joined(separator: ",")

  @Option(
    name: .customLong("events-segment-mb"),
    help: "MiB of one log segment before the next one starts.")
  var segmentMB: Int = 64

  @Option(
    name: .customLong("events-retention-mb"),
    help: ArgumentHelp(
      "Keep at most this many MiB of log segments (0: no limit).",
      discussion:
        "Each time a segment fills, the server writes a snapshot of the users' histories (the next start replays it and only the segments after it), then removes the oldest segments the snapshot covers while the log is over --events-retention-mb or they are older than --events-retention-hours. Training from the log (--events, from_events) then sees each user's latest events from the snapshot for the removed part."
    ))
  var retentionMB: Int = 0

  @Option(
    name: .customLong("events-retention-hours"),
    help: "Remove segments older than this many hours once a snapshot covers them (0: no limit).")
  var retentionHours: Double = 0

  func validate() throws {
    if EventStore.Sync(fsync) == nil {
      throw ValidationError(
        "--events-fsync must be 'always' or 'interval-ms=N' with N in 1...60000, got '\(fsync)'")
    }
    if !(1...100_000).contains(historyLength) {
      throw ValidationError("--history-length must be in 1...100000, got \(historyLength)")
    }
    if memoryMB < 1 { throw ValidationError("--events-memory-mb must be >= 1, got \(memoryMB)") }
    if !(1...4096).contains(segmentMB) {
      throw ValidationError("--events-segment-mb must be in 1...4096, got \(segmentMB)")
    }
    if retentionMB < 0 { throw ValidationError("--events-retention-mb must be >= 0") }
    if !(retentionHours >= 0) || !retentionHours.isFinite {
      throw ValidationError("--events-retention-hours must be a number of hours >= 0")
    }
    let list = typeList
    if list.isEmpty { throw ValidationError("--event-types names no type") }
    for type in list
    where type.isEmpty || type.utf8.count > 64 || type.utf8.contains(where: { $0 <= 32 }) {
      throw ValidationError(
        "--event-types: '\(type)' is not a type name (1-64 bytes, no spaces or control characters)"
      )
    }
  }

  var typeList: [String] {
    types.split(separator: ",", omittingEmptySubsequences: false).map {
      $0.trimmingCharacters(in: .whitespaces)
    }
  }

  /// The store (its log replayed), or nil without --events-dir.
  func openStore(log: (String) -> Void) throws -> EventStore? {
    guard let directory else { return nil }
    var configuration = EventStore.Configuration(directory: directory)
    configuration.sync = EventStore.Sync(fsync) ?? .always
    configuration.historyLength = historyLength
    configuration.memoryBytes = memoryMB << 20
    configuration.segmentBytes = segmentMB << 20
    configuration.types = Set(typeList)
    configuration.retention = EventLogFiles.Retention(
      maxBytes: retentionMB > 0 ? retentionMB << 20 : nil,
      maxAgeSeconds: retentionHours > 0 ? retentionHours * 3600 : nil)
    let start = Date()
    let store: EventStore
    do {
      store = try EventStore(configuration: configuration)
    } catch {
      throw CLIError("cannot open the event log in \(directory): \(error)")
    }
    if let repaired = store.repaired { log("events: \(repaired)") }
    log(
      "events: \(directory), fsync \(configuration.sync), \(store.histories.userCount) users' histories replayed in \(String(format: "%.2f", Date().timeIntervalSince(start))) s (history length \(historyLength))"
    )
    return store
  }
}
