import Foundation

extension MetricsServer {
  /// The event log's metrics (nothing when the server keeps no events).
  func renderEvents(into out: inout String) {
    guard let store = server.events.store else { return }
    let stats = store.stats
    func metric(_ name: String, _ type: String, _ help: String, _ value: String) {
      out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
    }
    metric(
      "recserve_events_appended_total", "counter", "Events recorded (AppendEvents and streams).",
      "\(stats.events.load(ordering: .relaxed))")
    metric(
      "recserve_event_batches_total", "counter", "Appended batches (calls, stream messages).",
      "\(stats.batches.load(ordering: .relaxed))")
    metric(
      "recserve_event_commits_total", "counter",
      "Group commits: one write (and with --events-fsync always one fsync) for every batch waiting.",
      "\(stats.commits.load(ordering: .relaxed))")
    metric(
      "recserve_events_log_bytes", "gauge", "Bytes of the event log's segments.",
      "\(stats.logBytes.load(ordering: .relaxed))")
    metric(
      "recserve_events_log_segments", "gauge", "Segments of the event log.",
      "\(stats.segments.load(ordering: .relaxed))")
    metric(
      "recserve_events_users_in_memory", "gauge", "Users whose latest events are in memory.",
      "\(store.histories.userCount)")
    metric(
      "recserve_events_history_bytes", "gauge",
      "Memory the users' histories take, by estimate (--events-memory-mb bounds it).",
      "\(store.histories.usedBytes)")
    metric(
      "recserve_events_users_evicted_total", "counter",
      "Users whose history left memory for the budget (it stays in the log).",
      "\(store.histories.evicted)")
    out += "# HELP recserve_events_fsync_seconds Time the event log's fsyncs took.\n"
    out += "# TYPE recserve_events_fsync_seconds histogram\n"
    let counts = stats.syncHistogram
    var cumulative = 0
    for (k, bound) in EventStore.Stats.syncBuckets.enumerated() {
      cumulative += counts[k]
      out += "recserve_events_fsync_seconds_bucket{le=\"\(bound)\"} \(cumulative)\n"
    }
    cumulative += counts.last ?? 0
    out += "recserve_events_fsync_seconds_bucket{le=\"+Inf\"} \(cumulative)\n"
    out +=
      "recserve_events_fsync_seconds_sum \(Double(stats.syncNanoseconds.load(ordering: .relaxed)) / 1e9)\n"
    out += "recserve_events_fsync_seconds_count \(cumulative)\n"
  }
}
