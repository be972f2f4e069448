import ArgumentParser
import Foundation
import RecServeModels

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Per-epoch training progress on stderr: a bar redrawn in place on a terminal, one plain line
/// per epoch otherwise (pipes, files, CI), or nothing.
final class ProgressReporter {
  /// `--progress`: auto is a bar when stderr is a terminal and TERM is not "dumb", else plain.
  enum Mode: String, CaseIterable, ExpressibleByArgument {
    case auto, bar, plain, none
  }

  let mode: Mode
  /// Validation metrics named in plain lines, in order, as (key in `TrainingProgress.validation`,
  /// label). The bar shows every metric, under its key, these first.
  private let metrics: [(key: String, label: String)]
  private let write: (String) -> Void
  private let columns: () -> Int
  private let clock: () -> Double
  /// Minimum seconds between two redraws of the bar; the last epoch is always drawn.
  private let interval: Double
  private var lastDraw: Double?
  private var undrawn: TrainingProgress?
  private var barShown = false

  /// `mode` must not be `.auto`: see `resolve`.
  init(
    mode: Mode, metrics: [(key: String, label: String)],
    write: @escaping (String) -> Void = { FileHandle.standardError.write(Data($0.utf8)) },
    columns: @escaping () -> Int = ProgressReporter.terminalColumns,
    clock: @escaping () -> Double = { Date().timeIntervalSinceReferenceDate },
    interval: Double = 0.1
  ) {
    precondition(mode != .auto, "resolve .auto first")
    self.mode = mode
    self.metrics = metrics
    self.write = write
    self.columns = columns
    self.clock = clock
    self.interval = interval
  }

  /// The mode `.auto` stands for here; `quiet` wins over everything.
  static func resolve(_ mode: Mode, quiet: Bool) -> Mode {
    if quiet { return .none }
    guard mode == .auto else { return mode }
    let term = ProcessInfo.processInfo.environment["TERM"]
    return isatty(2) == 1 && term != "dumb" ? .bar : .plain
  }

  /// Width of stderr's terminal: COLUMNS when set, else TIOCGWINSZ, else 80.
  static func terminalColumns() -> Int {
    if let c = ProcessInfo.processInfo.environment["COLUMNS"].flatMap(Int.init), c > 0 { return c }
    var size = winsize()
    if ioctl(2, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
    return 80
  }

  /// Training progress callback: always returns true (the CLI never cancels).
  func report(_ p: TrainingProgress) -> Bool {
    switch mode {
    case .none, .auto: break
    case .plain: write(plainLine(p) + "\n")
    case .bar:
      let now = clock()
      if p.epoch >= p.epochs || lastDraw.map({ now - $0 >= interval }) ?? true {
        draw(p)
        lastDraw = now
      } else {
        undrawn = p
      }
    }
    return true
  }

  /// Ends the bar: draws the last epoch if throttling skipped it (early stopping ends before
  /// the last epoch), then a newline so whatever follows starts on a fresh line.
  func finish() {
    if let p = undrawn { draw(p) }
    if barShown { write("\n") }
    barShown = false
  }

  /// Today's plain line: `epoch 3/20  loss 0.8123  holdout rmse 0.9345  eta 1.20s`.
  func plainLine(_ p: TrainingProgress) -> String {
    var line = "epoch \(p.epoch)/\(p.epochs)  loss \(CLI.fmt(p.loss))"
    for (key, label) in metrics {
      if let v = p.validation[key] { line += "  \(label) \(CLI.fmt(v))" }
    }
    return line + "  eta \(CLI.fmt(p.etaSeconds, 2))s"
  }

  /// `epoch  37/100 [#######.........]  37%  loss 0.4123  correct 0.871  elapsed 1.2s  ETA 2.1s`
  /// in at most `width - 1` columns (the last one wraps on some terminals): the bar narrows to 10
  /// cells, then elapsed, the metrics and ETA go, then the bar.
  func barLine(_ p: TrainingProgress, width: Int) -> String {
    let fraction = p.epochs > 0 ? min(max(Double(p.epoch) / Double(p.epochs), 0), 1) : 1
    let pad = String(repeating: " ", count: max(String(p.epochs).count - String(p.epoch).count, 0))
    let head = "epoch \(pad)\(p.epoch)/\(p.epochs)"
    let keys = metrics.map(\.key).filter { p.validation[$0] != nil }
    let shown = (keys + p.validation.keys.filter { !keys.contains($0) }.sorted()).map {
      "\($0) \(CLI.fmt(p.validation[$0]!, 3))"
    }
    let base = [String(format: "%3d%%", Int(fraction * 100)), "loss \(CLI.fmt(p.loss))"]
    let eta = "ETA \(Self.duration(p.etaSeconds))"
    let tails = [
      base + shown + ["elapsed \(Self.duration(p.elapsedSeconds))", eta],
      base + shown + [eta], base + shown.prefix(1) + [eta], base + [eta], base,
    ].map { $0.joined(separator: "  ") }
    let room = width - 1
    for tail in tails {
      let cells = min(room - head.count - tail.count - 4, 40)  // " [" + "] "
      guard cells >= 10 else { continue }
      let filled = Int((fraction * Double(cells)).rounded(.down))
      let bar =
        String(repeating: "#", count: filled) + String(repeating: ".", count: cells - filled)
      return "\(head) [\(bar)] \(tail)"
    }
    return String("\(head)  \(tails.last!)".prefix(max(room, 0)))
  }

  /// `0.4s`, `12.3s`, `4m05s`, `2h03m`.
  static func duration(_ s: Double) -> String {
    guard s.isFinite, s >= 0 else { return "?" }
    if s < 60 { return String(format: "%.1fs", s) }
    let t = Int(s.rounded())
    if t < 3600 { return String(format: "%dm%02ds", t / 60, t % 60) }
    return String(format: "%dh%02dm", t / 3600, t / 60 % 60)
  }

  private func draw(_ p: TrainingProgress) {
    write("\r" + barLine(p, width: columns()) + "\u{1B}[K")
    barShown = true
    undrawn = nil
  }
}
