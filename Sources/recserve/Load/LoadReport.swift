import Foundation
import Histogram
import RecServeRPC

/// The run's settings, as shown in every output.
struct LoadParameters {
  var entries: [(String, String)]
  var swap: String?

  init(command c: LoadCommand, duration: Double?) {
    var e: [(String, String)] = [
      ("target", c.target), ("rpc", c.rpc.rawValue), ("model", c.model),
      ("threads", "\(c.threads)"),
    ]
    if let sweep = c.sweep {
      e.append(("sweep", sweep))
    } else {
      e.append(("concurrency", "\(c.concurrency)"))
    }
    if let duration { e.append(("duration_s", LoadOutput.number(duration))) }
    if let count = c.count { e.append(("count", "\(count)")) }
    e.append(("warmup_s", LoadOutput.number(c.warmup)))
    e.append(
      ("loop", c.rate.map { "open, \(LoadOutput.number($0)) calls/s" } ?? "closed"))
    e.append(
      (
        "latency_from",
        c.rate == nil
          ? "call start" : "intended start (corrected for coordinated omission)"
      ))
    if let file = c.requestsFile {
      e.append(("requests_file", file))
    } else {
      e.append(("zipf", LoadOutput.number(c.zipf)))
      if c.rpc == .predict { e.append(("pairs", "\(c.pairs)")) }
      if c.rpc == .rank || c.rpc == .similar { e.append(("k", "\(c.k)")) }
      if c.rpc == .append {
        e.append(("events_per_call", "\(c.batch)"))
        e.append(("event_type", c.eventType))
      }
      if c.recent > 0 { e.append(("recent_items", "\(c.recent)")) }
      if let search = c.search { e.append(("search", search.rawValue)) }
    }
    e.append(("timeout_s", LoadOutput.number(c.timeout)))
    entries = e
  }
}

/// A sweep's levels and where throughput stopped growing.
struct LoadSweep {
  var results: [LoadResult]
  /// Index of the knee: the first level that reaches 90% of the sweep's peak throughput, when
  /// a larger level follows it (more calls in flight then buy at most 10% more throughput, and
  /// only queueing: p99 climbs). Nil when the largest level is the first to reach it.
  var knee: Int?

  init(results: [LoadResult]) {
    self.results = results
    let peak = results.map(\.throughput).max() ?? 0
    let first = results.firstIndex { peak > 0 && $0.throughput >= 0.9 * peak }
    knee = first.flatMap { $0 < results.count - 1 ? $0 : nil }
  }

  var verdict: String {
    guard let knee else {
      return "throughput kept growing up to \(results.last?.concurrency ?? 0) in flight"
    }
    let at = results[knee]
    let peak = results.max { $0.throughput < $1.throughput }!
    let last = results[results.count - 1]
    return String(
      format:
        "throughput stops growing at %d in flight: %.0f calls/s, p99 %.3f ms (the peak: %.0f calls/s at %d in flight); at %d in flight p99 is %.3f ms",
      at.concurrency, at.throughput, at.milliseconds(99), peak.throughput, peak.concurrency,
      last.concurrency, last.milliseconds(99))
  }
}

/// The seconds before, during and after a swap.
struct LoadSwapWindows {
  struct Window {
    var name: String
    var from: Int
    var to: Int
    var merged: LoadWindow
    var seconds: Int { to - from }
    var throughput: Double { seconds > 0 ? Double(merged.ok) / Double(seconds) : 0 }
    func milliseconds(_ p: Double) -> Double { LoadOutput.milliseconds(merged.latency, p) }
  }

  var swap: SwapEvent
  var windows: [Window]
  /// When answers first named the new version (seconds since measuring began).
  var firstNew: Double?
  /// The first whole second in which every answer named the new version.
  var switched: Int?

  init(result: LoadResult, swap: SwapEvent) {
    self.swap = swap
    let full = min(result.windows.count, max(1, Int(result.seconds.rounded(.down))))
    let start = min(full, Int(swap.requested.rounded(.down)))
    firstNew = swap.version.flatMap { result.firstSeen[$0] }
    switched = nil
    if let version = swap.version {
      switched = (start..<full).first { index in
        let versions = result.windows[index].versions
        return !versions.isEmpty && versions.keys.allSatisfy { $0 == version }
      }
    }
    let end = switched.map { max($0, min(full, start + 1)) } ?? full
    func merge(_ name: String, _ from: Int, _ to: Int) -> Window {
      var merged = LoadWindow()
      for index in from..<max(from, to) { merged.add(result.windows[index]) }
      return Window(name: name, from: from, to: max(from, to), merged: merged)
    }
    windows = [merge("before", 0, start), merge("during", start, end), merge("after", end, full)]
  }
}

/// Prints and writes what a run measured.
struct LoadOutput {
  var json: Bool
  var quiet: Bool

  static func number(_ x: Double) -> String {
    x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(format: "%g", x)
  }

  /// The `p` percentile of a histogram of nanoseconds, in milliseconds (0 when it is empty).
  static func milliseconds<Count>(_ histogram: Histogram<Count>, _ p: Double) -> Double {
    histogram.totalCount == 0 ? 0 : Double(histogram.valueAtPercentile(p)) / 1e6
  }

  /// One second on stderr.
  func line(_ second: Int, _ window: LoadWindow) {
    var text = String(
      format: "%5d s  %8d calls/s  p50 %8.3f ms  p99 %8.3f ms  errors %d", second + 1, window.ok,
      Self.milliseconds(window.latency, 50), Self.milliseconds(window.latency, 99), window.errors)
    if !window.versions.isEmpty {
      let total = window.versions.values.reduce(0, +)
      text +=
        "  "
        + window.versions.sorted { $0.key < $1.key }.map {
          "v\($0.key) \(Int((Double($0.value) / Double(total) * 100).rounded()))%"
        }.joined(separator: " ")
    }
    CLI.printErr(text)
  }

  static func codes(_ result: LoadResult) -> [String: Int] {
    Dictionary(uniqueKeysWithValues: result.codes.map { ("\($0.key)", $0.value) })
  }

  static func latencyObject(_ r: LoadResult) -> [String: Any] {
    [
      "p50": r.milliseconds(50), "p90": r.milliseconds(90), "p99": r.milliseconds(99),
      "p999": r.milliseconds(99.9), "max": r.maxMilliseconds,
    ]
  }

  func printSummary(_ r: LoadResult, parameters: LoadParameters, swapWindows: LoadSwapWindows?) {
    if json {
      var summary: [String: Any] = [
        "calls": r.calls, "ok": r.ok, "errors": r.calls - r.ok, "calls_per_s": r.throughput,
        "measured_s": r.seconds, "concurrency": r.concurrency, "latency_ms": Self.latencyObject(r),
        "status_codes": Self.codes(r), "unsent": r.unsent,
      ]
      for (key, value) in parameters.entries where summary[key] == nil {
        summary[key] = Self.jsonValue(value)
      }
      summary["threads"] = r.threads
      if let swapWindows { summary["swap"] = Self.swapObject(swapWindows) }
      Self.printJSON(summary)
      return
    }
    print(parameters.entries.map { "\($0.0) \($0.1)" }.joined(separator: "  "))
    print(
      String(
        format: "calls %d  ok %d  errors %d  throughput %.0f calls/s over %.1f s", r.calls, r.ok,
        r.calls - r.ok, r.throughput, r.seconds))
    print(
      String(
        format: "latency ms  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f",
        r.milliseconds(50),
        r.milliseconds(90), r.milliseconds(99), r.milliseconds(99.9), r.maxMilliseconds))
    if r.unsent > 0 {
      print(
        "the server fell behind the --rate schedule: \(r.unsent) calls were due and never sent"
      )
    }
    if r.calls > r.ok {
      print(
        "errors by status code: "
          + r.codes.filter { $0.key != .ok }.sorted { $0.value > $1.value }.map {
            "\($0.key) \($0.value)"
          }.joined(separator: ", "))
      for error in Set(r.firstErrors).sorted().prefix(5) { print("  e.g. \(error)") }
    }
    if let swapWindows { Self.printSwap(swapWindows) }
  }

  static func printSwap(_ s: LoadSwapWindows) {
    print("")
    print(
      String(
        format: "swap: %@, asked at %.2f s, answered at %.2f s%@", s.swap.description,
        s.swap.requested, s.swap.answered, s.swap.error.map { " (failed: \($0))" } ?? ""))
    if let version = s.swap.version {
      if let first = s.firstNew {
        var text = String(format: "answers first named version %lld at %.2f s", version, first)
        if let switched = s.switched {
          text += "; every answer named it from \(switched) s on"
        }
        print(text)
      } else {
        print("no answer named version \(version)")
      }
    }
    print("| window | seconds | calls/s | p50 ms | p99 ms | max ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for w in s.windows {
      print(
        String(
          format: "| %@ (%d-%d s) | %d | %.0f | %.3f | %.3f | %.3f | %d |", w.name, w.from, w.to,
          w.seconds, w.throughput, w.milliseconds(50), w.milliseconds(99), w.milliseconds(100),
          w.merged.errors))
    }
  }

  static func swapObject(_ s: LoadSwapWindows) -> [String: Any] {
    var object: [String: Any] = [
      "action": s.swap.description, "requested_s": s.swap.requested,
      "answered_s": s.swap.answered,
      "windows": s.windows.map { w -> [String: Any] in
        [
          "name": w.name, "from_s": w.from, "to_s": w.to, "calls_per_s": w.throughput,
          "p50_ms": w.milliseconds(50), "p99_ms": w.milliseconds(99), "errors": w.merged.errors,
        ]
      },
    ]
    if let version = s.swap.version { object["version"] = version }
    if let first = s.firstNew { object["first_answer_naming_version_s"] = first }
    if let switched = s.switched { object["all_answers_new_from_s"] = switched }
    if let error = s.swap.error { object["error"] = error }
    return object
  }

  func printSweep(_ sweep: LoadSweep, parameters: LoadParameters) {
    if json {
      var summary: [String: Any] = [:]
      for (key, value) in parameters.entries { summary[key] = Self.jsonValue(value) }
      summary["levels"] = sweep.results.map { r -> [String: Any] in
        [
          "concurrency": r.concurrency, "threads": r.threads, "calls_per_s": r.throughput,
          "ok": r.ok, "errors": r.calls - r.ok, "latency_ms": Self.latencyObject(r),
          "status_codes": Self.codes(r),
        ]
      }
      if let knee = sweep.knee { summary["knee_concurrency"] = sweep.results[knee].concurrency }
      summary["verdict"] = sweep.verdict
      Self.printJSON(summary)
      return
    }
    print(parameters.entries.map { "\($0.0) \($0.1)" }.joined(separator: "  "))
    print("| in flight | calls/s | p50 ms | p90 ms | p99 ms | max ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for r in sweep.results {
      print(
        String(
          format: "| %d | %.0f | %.3f | %.3f | %.3f | %.3f | %d |", r.concurrency, r.throughput,
          r.milliseconds(50), r.milliseconds(90), r.milliseconds(99), r.maxMilliseconds,
          r.calls - r.ok))
    }
    print(sweep.verdict)
  }

  /// A parameter as JSON: numbers as numbers, the rest as text.
  static func jsonValue(_ text: String) -> Any {
    if let integer = Int(text) { return integer }
    if let number = Double(text), number.isFinite { return number }
    return text
  }

  static func printJSON(_ object: [String: Any]) {
    if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
      print(String(decoding: data, as: UTF8.self))
    }
  }

  static let csvHeader = "second,calls,ok,errors,calls_per_s,p50_ms,p90_ms,p99_ms,max_ms,versions"

  static func csvRow(_ index: Int, _ w: LoadWindow, prefix: String = "") -> String {
    let versions = w.versions.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(
      separator: " ")
    return prefix
      + String(
        format: "%d,%d,%d,%d,%d,%.4f,%.4f,%.4f,%.4f,", index + 1, w.ok + w.errors, w.ok, w.errors,
        w.ok, milliseconds(w.latency, 50), milliseconds(w.latency, 90),
        milliseconds(w.latency, 99), milliseconds(w.latency, 100)) + versions
  }

  static func writeCSV(_ r: LoadResult, to path: String) throws {
    var text = csvHeader + "\n"
    for (index, window) in r.windows.enumerated() { text += csvRow(index, window) + "\n" }
    try write(text, to: path)
  }

  static func writeSweepCSV(_ sweep: LoadSweep, to path: String) throws {
    var text = "concurrency," + csvHeader + "\n"
    for r in sweep.results {
      for (index, window) in r.windows.enumerated() {
        text += csvRow(index, window, prefix: "\(r.concurrency),") + "\n"
      }
    }
    try write(text, to: path)
  }

  static func write(_ text: String, to path: String) throws {
    do {
      try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
      throw CLIError("cannot write \(path): \(error.localizedDescription)")
    }
  }
}
