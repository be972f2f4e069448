import Foundation
import RecServeServing

/// A load run as one self-contained HTML page: inline SVG charts and tables, no script, no
/// network. Elements a test can look for: `#parameters`, `#summary`, `#throughput-chart`,
/// `#latency-chart`, `.swap-marker` and `#swap-windows` after a swap, `#sweep-chart` and
/// `#sweep-table` for a sweep.
enum LoadHTML {
  struct Series {
    var name: String
    var color: String
    var points: [(Double, Double)]
  }

  struct Marker {
    var x: Double
    var label: String
  }

  static func page(
    parameters: LoadParameters, results: [LoadResult], sweep: LoadSweep?,
    swapWindows: LoadSwapWindows? = nil
  ) -> String {
    var body = "<h1>recserve load</h1>\n"
    body += "<p class=\"when\">\(escape(timestamp()))</p>\n"
    body += parametersSection(parameters)
    if let sweep {
      body += sweepSection(sweep)
    } else if let r = results.first {
      body += summarySection(r)
      body += timeCharts(r, swapWindows: swapWindows)
      if let s = swapWindows { body += swapSection(s) }
    }
    return document(body)
  }

  /// The run's parameters as a table (`#parameters`).
  static func parametersSection(_ parameters: LoadParameters) -> String {
    var body = "<h2>Parameters</h2>\n<table id=\"parameters\">"
    for (key, value) in parameters.entries {
      body += "<tr><th>\(escape(key))</th><td>\(escape(value))</td></tr>"
    }
    if let swap = parameters.swap {
      body += "<tr><th>swap</th><td>\(escape(swap))</td></tr>"
    }
    return body + "</table>\n"
  }

  /// A sweep's verdict, its throughput and latency curves by calls in flight (log scale), and
  /// its table (`#sweep-chart`, `#sweep-table`).
  static func sweepSection(_ sweep: LoadSweep) -> String {
    var body = "<h2>Sweep</h2>\n<p id=\"verdict\">\(escape(sweep.verdict))</p>\n"
    let levels = sweep.results
    let x = levels.map { Double($0.concurrency) }
    body += chart(
      id: "sweep-chart", title: "Throughput by calls in flight", xLabel: "calls in flight",
      yLabel: "calls/s",
      series: [
        Series(
          name: "calls/s", color: "#1f77b4",
          points: zip(x, levels.map(\.throughput)).map { ($0, $1) })
      ], markers: sweep.knee.map { [Marker(x: x[$0], label: "knee")] } ?? [], logX: true)
    body += chart(
      id: "sweep-latency-chart", title: "Latency by calls in flight", xLabel: "calls in flight",
      yLabel: "ms",
      series: [
        Series(
          name: "p50", color: "#2ca02c",
          points: zip(x, levels.map { $0.milliseconds(50) }).map { ($0, $1) }),
        Series(
          name: "p99", color: "#d62728",
          points: zip(x, levels.map { $0.milliseconds(99) }).map { ($0, $1) }),
      ], markers: [], logX: true)
    body += "<table id=\"sweep-table\"><tr><th>in flight</th><th>calls/s</th><th>p50 ms</th>"
    body += "<th>p90 ms</th><th>p99 ms</th><th>max ms</th><th>errors</th></tr>"
    for r in levels {
      body += String(
        format:
          "<tr><td>%d</td><td>%.0f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%d</td></tr>",
        r.concurrency, r.throughput, r.milliseconds(50), r.milliseconds(90), r.milliseconds(99),
        r.maxMilliseconds, r.calls - r.ok)
    }
    return body + "</table>\n"
  }

  /// One run's counts, throughput, percentiles and errors by status (`#summary`).
  static func summarySection(_ r: LoadResult) -> String {
    var body = "<h2>Summary</h2>\n<table id=\"summary\">"
    let rows: [(String, String)] = [
      ("calls", "\(r.calls)"), ("ok", "\(r.ok)"), ("errors", "\(r.calls - r.ok)"),
      ("throughput", String(format: "%.0f calls/s over %.1f s", r.throughput, r.seconds)),
      (
        "latency",
        String(
          format: "p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms",
          r.milliseconds(50), r.milliseconds(90), r.milliseconds(99), r.milliseconds(99.9),
          r.maxMilliseconds)
      ),
    ]
    for (key, value) in rows { body += "<tr><th>\(key)</th><td>\(escape(value))</td></tr>" }
    for (code, count) in r.codes.sorted(by: { $0.value > $1.value }) where code != .ok {
      body += "<tr><th>\(escape("\(code)"))</th><td>\(count)</td></tr>"
    }
    return body + "</table>\n"
  }

  /// Throughput and latency percentiles per second (`#throughput-chart`, `#latency-chart`),
  /// with the swap and the first answer of the new version marked.
  static func timeCharts(_ r: LoadResult, swapWindows: LoadSwapWindows?) -> String {
    var markers: [Marker] = []
    if let s = swapWindows {
      markers.append(Marker(x: s.swap.requested, label: "swap"))
      if let first = s.firstNew, let version = s.swap.version {
        markers.append(Marker(x: first, label: "v\(version) answers"))
      }
    }
    let seconds = r.windows.indices.map { Double($0) + 0.5 }
    var body = chart(
      id: "throughput-chart", title: "Throughput per second", xLabel: "seconds",
      yLabel: "calls/s",
      series: [
        Series(
          name: "ok calls/s", color: "#1f77b4",
          points: zip(seconds, r.windows.map { Double($0.ok) }).map { ($0, $1) }),
        Series(
          name: "errors/s", color: "#d62728",
          points: zip(seconds, r.windows.map { Double($0.errors) }).map { ($0, $1) }),
      ], markers: markers, xRange: (0, Double(r.windows.count)))
    body += chart(
      id: "latency-chart", title: "Latency per second", xLabel: "seconds", yLabel: "ms",
      series: [50.0, 90, 99].enumerated().map { index, p in
        Series(
          name: "p\(Int(p))", color: ["#2ca02c", "#ff7f0e", "#d62728"][index],
          points: zip(
            seconds, r.windows.map { LoadOutput.milliseconds($0.latency, p) }
          ).map { ($0, $1) })
      }, markers: markers, xRange: (0, Double(r.windows.count)))
    return body
  }

  /// What the swap did and the windows before, during and after it (`#swap-windows`).
  static func swapSection(_ s: LoadSwapWindows) -> String {
    var body = "<h2>Swap</h2>\n<p>\(escape(s.swap.description))"
    body += String(
      format: ", asked at %.2f s, answered at %.2f s", s.swap.requested, s.swap.answered)
    if let error = s.swap.error { body += " &mdash; failed: \(escape(error))" }
    body += "</p>\n<table id=\"swap-windows\"><tr><th>window</th><th>seconds</th>"
    body += "<th>calls/s</th><th>p50 ms</th><th>p99 ms</th><th>errors</th></tr>"
    for w in s.windows {
      body += String(
        format:
          "<tr><td>%@ (%d-%d s)</td><td>%d</td><td>%.0f</td><td>%.3f</td><td>%.3f</td><td>%d</td></tr>",
        w.name, w.from, w.to, w.seconds, w.throughput, w.milliseconds(50), w.milliseconds(99),
        w.merged.errors)
    }
    return body + "</table>\n"
  }

  /// The page around `body`: its head and style sheet.
  static func document(_ body: String) -> String {
    """
    <!DOCTYPE html>
    <html lang="en"><head><meta charset="utf-8"><title>recserve load report</title>
    <style>
    body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}
    table{border-collapse:collapse;margin:8px 0 16px}
    th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}
    th{background:#f4f4f4}
    svg{display:block;margin:8px 0 20px;background:#fff}
    .when{color:#666;font-size:13px}
    </style></head><body>
    \(body)
    </body></html>

    """
  }

  /// A line chart in SVG: axes with five ticks each, one polyline (and dots) per series, a
  /// legend, and dashed vertical markers.
  static func chart(
    id: String, title: String, xLabel: String, yLabel: String, series: [Series], markers: [Marker],
    xRange: (Double, Double)? = nil, logX: Bool = false
  ) -> String {
    let frame = ChartFrame(series: series, markers: markers, xRange: xRange, logX: logX)
    var svg = String(
      format:
        "<svg id=\"%@\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\">",
      id, frame.width, frame.height, frame.width, frame.height)
    svg += "<title>\(escape(title))</title>"
    svg += String(
      format: "<text x=\"%.0f\" y=\"18\" font-size=\"14\" font-weight=\"bold\">%@</text>",
      frame.left, escape(title))
    svg += axes(frame, xLabel: xLabel, yLabel: yLabel)
    for (index, s) in series.enumerated() { svg += line(s, index: index, of: series.count, frame) }
    for (index, marker) in markers.enumerated() { svg += line(marker, index: index, frame) }
    return svg + "</svg>\n"
  }

  /// Where a chart's plot sits and how values map to it: y from 0 to a round maximum, x over
  /// the points and markers (or `xRange`), log2 for a sweep's doubling concurrencies.
  struct ChartFrame {
    let width = 900.0
    let height = 300.0
    let left = 70.0
    let right = 20.0
    let top = 30.0
    let bottom = 45.0
    let logX: Bool
    let xMin: Double
    let xMax: Double
    let yStep: Double
    let yMax: Double
    let xTicks: [Double]
    var plotW: Double { width - left - right }
    var plotH: Double { height - top - bottom }

    init(series: [Series], markers: [Marker], xRange: (Double, Double)?, logX: Bool) {
      self.logX = logX
      let xs = series.flatMap { $0.points.map(\.0) } + markers.map(\.x)
      let ys = series.flatMap { $0.points.map(\.1) }.filter(\.isFinite)
      var xMin = Self.position(xRange?.0 ?? xs.min() ?? 0, logX: logX)
      var xMax = Self.position(xRange?.1 ?? xs.max() ?? 1, logX: logX)
      if xMax <= xMin {
        xMin -= 0.5
        xMax += 0.5
      }
      self.xMin = xMin
      self.xMax = xMax
      yStep = LoadHTML.niceStep((ys.max() ?? 0) / 5)
      yMax = max(yStep, ((ys.max() ?? 0) / yStep).rounded(.up) * yStep)
      if logX {
        xTicks = Array(Set(series.flatMap { $0.points.map(\.0) })).sorted()
      } else {
        let step = LoadHTML.niceStep((xMax - xMin) / 6)
        xTicks = stride(
          from: (xMin / step).rounded(.up) * step, through: xMax + step * 1e-9, by: step
        )
        .map { $0 }
      }
    }

    static func position(_ x: Double, logX: Bool) -> Double { logX ? log2(max(x, 1e-9)) : x }
    func px(_ x: Double) -> Double {
      left + (Self.position(x, logX: logX) - xMin) / (xMax - xMin) * plotW
    }
    func py(_ y: Double) -> Double { top + plotH - min(max(y, 0), yMax) / yMax * plotH }
  }

  /// The plot's frame, horizontal grid lines with y labels, x tick labels and axis titles.
  static func axes(_ f: ChartFrame, xLabel: String, yLabel: String) -> String {
    var svg = String(
      format:
        "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#999\"/>",
      f.left, f.top, f.plotW, f.plotH)
    var y = 0.0
    while y <= f.yMax + f.yStep * 1e-9 {
      svg += String(
        format:
          "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%@</text>",
        f.left, f.left + f.plotW, f.py(y), f.py(y), f.left - 6, f.py(y) + 4, escape(axisLabel(y)))
      y += f.yStep
    }
    for x in f.xTicks {
      svg += String(
        format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">%@</text>",
        f.px(x), f.top + f.plotH + 16, escape(axisLabel(x)))
    }
    svg += String(
      format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">%@</text>",
      f.left + f.plotW / 2, f.height - 8, escape(xLabel))
    svg += String(
      format:
        "<text x=\"14\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 %.1f)\">%@</text>",
      f.top + f.plotH / 2, f.top + f.plotH / 2, escape(yLabel))
    return svg
  }

  /// One series: its polyline (dots too when it has at most 60 points) and its legend entry,
  /// the `index`-th of `count` from the right.
  static func line(_ s: Series, index: Int, of count: Int, _ f: ChartFrame) -> String {
    var svg = ""
    let points = s.points.filter { $0.1.isFinite }
    if !points.isEmpty {
      let path = points.map { String(format: "%.1f,%.1f", f.px($0.0), f.py($0.1)) }.joined(
        separator: " ")
      svg +=
        "<polyline class=\"series\" data-name=\"\(escape(s.name))\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\" points=\"\(path)\"/>"
      if points.count <= 60 {
        for p in points {
          svg += String(
            format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%@\"/>", f.px(p.0),
            f.py(p.1), s.color)
        }
      }
    }
    let lx = f.width - f.right - Double(count - index) * 100
    svg += String(
      format:
        "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"3\" fill=\"%@\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">%@</text>",
      lx, 12.0, s.color, lx + 16, 16.0, escape(s.name))
    return svg
  }

  /// A dashed vertical marker with its label (the first, a swap, has class `swap-marker`).
  static func line(_ marker: Marker, index: Int, _ f: ChartFrame) -> String {
    let x = f.px(marker.x)
    return String(
      format:
        "<g class=\"%@\"><line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#9467bd\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#9467bd\">%@</text></g>",
      index == 0 && marker.label == "swap" ? "swap-marker" : "marker", x, x, f.top, f.top + f.plotH,
      x + 4, f.top + 14 + Double(index) * 14, escape(marker.label))
  }

  /// 1, 2 or 5 times a power of ten, at least `raw` (1 for nothing to show).
  static func niceStep(_ raw: Double) -> Double {
    guard raw > 0, raw.isFinite else { return 1 }
    let power = pow(10, (log10(raw)).rounded(.down))
    for m in [1.0, 2, 5, 10] where m * power >= raw { return m * power }
    return 10 * power
  }

  static func axisLabel(_ x: Double) -> String {
    if x == x.rounded() && abs(x) < 1e15 { return String(Int(x)) }
    return String(format: "%.3g", x)
  }

  static func escape(_ text: String) -> String { HTML.escape(text) }

  static func timestamp() -> String {
    let formatter = ISO8601DateFormatter()
    return formatter.string(from: Date())
  }
}
