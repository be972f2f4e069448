import Foundation
import RecServeRPC

/// The read-only status page on the metrics port (`/`): every model with its versions (state,
/// why one FAILED, labels, role), the canary fraction, each loaded version's calls per second,
/// errors and latency over the last minute, and the registry's recent events. Plain HTML that
/// reloads itself every few seconds; no script, nothing fetched from elsewhere.
///
/// Elements a test can look for: `#models`, one `table.versions[data-model=NAME]` per model
/// with a `tr[data-version=V]` per version, `#events`.
enum StatusPage {
  static let refreshSeconds = 2

  static func render(_ server: RecServeServer, now: Date = Date()) -> String {
    let snapshot = server.registry.snapshot
    var body = "<h1>RecServe</h1>\n"
    body +=
      "<p class=\"meta\">\(escape(ISO8601DateFormatter().string(from: now))) &middot; refreshes every \(refreshSeconds) s &middot; <a href=\"/metrics\">/metrics</a></p>\n"
    body += "<section id=\"models\">\n"
    if snapshot.models.isEmpty {
      body += "<p>No models are served.</p>\n"
    }
    for name in snapshot.models.keys.sorted() {
      let entry = snapshot.models[name]!
      body += "<h2>\(escape(name))</h2>\n<p class=\"meta\">"
      body += "serving version \(entry.serving.map { "\($0.version)" } ?? "none")"
      let labels = entry.labels.sorted { $0.key < $1.key }.map { "\($0.key) &rarr; \($0.value)" }
      body +=
        labels.isEmpty
        ? " &middot; no labels" : " &middot; labels: " + labels.joined(separator: ", ")
      if let canary = entry.canary {
        body += String(
          format: " &middot; canary: version %lld for %.1f%% of users", canary.version,
          Double(entry.canaryFraction) * 100)
      }
      body += "</p>\n"
      body += "<table class=\"versions\" data-model=\"\(escape(name))\">"
      body += "<tr><th>version</th><th>state</th><th>role</th><th>labels</th>"
      body += "<th>calls/s (1 min)</th><th>errors/s</th><th>p50 ms</th><th>p99 ms</th>"
      body += "<th>calls since loaded</th><th>errors</th><th>why</th></tr>"
      for version in entry.versions.keys.sorted(by: >) {
        let record = entry.versions[version]!
        let state = record.state.name
        let versionLabels = entry.labels.filter { $0.value == version }.keys.sorted()
        let role = record.served == nil ? "" : entry.role(of: version)
        body +=
          "<tr data-version=\"\(version)\" class=\"\(state.lowercased()) \(role)\"><td>\(version)</td><td>\(state)</td><td>\(role)</td><td>\(escape(versionLabels.joined(separator: ", ")))</td>"
        if let served = record.served {
          let t = served.traffic.summary()
          body += String(
            format:
              "<td class=\"rate\">%.1f</td><td class=\"errors\">%.2f</td><td>%.3f</td><td class=\"p99\">%.3f</td><td>%d</td><td>%d</td>",
            t.callsPerSecond, t.errorsPerSecond, t.p50Milliseconds, t.p99Milliseconds, t.calls,
            t.errors)
        } else {
          body += "<td></td><td></td><td></td><td></td><td></td><td></td>"
        }
        body += "<td>\(escape(record.reason))</td></tr>"
      }
      body += "</table>\n"
    }
    body += "</section>\n<h2>Recent events</h2>\n<ol id=\"events\" reversed>"
    let formatter = ISO8601DateFormatter()
    for event in server.registry.events.all.suffix(50).reversed() {
      body +=
        "<li><time>\(escape(formatter.string(from: event.time)))</time> \(escape(event.text))</li>"
    }
    body += "</ol>\n"
    return """
      <!DOCTYPE html>
      <html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="\(refreshSeconds)">
      <title>RecServe status</title>
      <style>
      body{font-family:sans-serif;margin:24px;color:#222}
      table{border-collapse:collapse;margin:8px 0 16px}
      th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}
      th{background:#f4f4f4}
      tr.failed td{background:#fde2e2}
      tr.canary td{background:#fff5d6}
      tr.stable td{background:#e6f4ea}
      .meta{color:#555;font-size:13px}
      ol{font-size:13px}
      time{color:#777;margin-right:6px}
      </style></head><body>
      \(body)
      </body></html>

      """
  }

  static func escape(_ text: String) -> String { HTML.escape(text) }
}

/// Text made safe inside HTML elements and attribute values.
public enum HTML {
  public static func escape(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count)
    for c in text {
      switch c {
      case "&": out += "&amp;"
      case "<": out += "&lt;"
      case ">": out += "&gt;"
      case "\"": out += "&quot;"
      case "'": out += "&#39;"
      default: out.append(c)
      }
    }
    return out
  }
}
