import RecServeModels
import Testing

@testable import recserve

/// A reporter writing into `output`, on a clock the test moves by hand. The reporter's closures
/// hold the harness unowned (it owns the reporter).
private final class Harness {
  var output = ""
  var now = 0.0
  var width = 80
  lazy var reporter = make(.bar)

  func make(_ mode: ProgressReporter.Mode) -> ProgressReporter {
    ProgressReporter(
      mode: mode, metrics: [("correct", "correct")], write: { [unowned self] in self.output += $0 },
      columns: { [unowned self] in self.width }, clock: { [unowned self] in self.now })
  }
}

private func progress(_ epoch: Int, of epochs: Int, validation: [String: Double] = [:])
  -> TrainingProgress
{
  TrainingProgress(
    epoch: epoch, epochs: epochs, loss: 0.41234, validation: validation,
    elapsedSeconds: 1.23, etaSeconds: 2.1)
}

/// The `#` and `.` cells between the brackets.
private func cells(_ line: String) -> (filled: Int, total: Int) {
  let inside = line.split(separator: "[")[1].split(separator: "]")[0]
  return (inside.filter { $0 == "#" }.count, inside.count)
}

@Test func barFillsProportionallyAndShowsTheMetrics() {
  let line = Harness().reporter.barLine(
    progress(37, of: 100, validation: ["correct": 0.8712]), width: 120)
  #expect(line.hasPrefix("epoch  37/100 ["))
  #expect(line.contains("]  37%  loss 0.4123  correct 0.871  elapsed 1.2s  ETA 2.1s"))
  let (filled, total) = cells(line)
  #expect(total == 40)
  #expect(filled == 14)  // 37% of 40, rounded down
  #expect(cells(Harness().reporter.barLine(progress(0, of: 8), width: 120)).filled == 0)
  let full = Harness().reporter.barLine(progress(8, of: 8), width: 120)
  #expect(cells(full).filled == cells(full).total)
  #expect(full.contains("] 100%"))
}

@Test func barFitsTheWidth() {
  let reporter = Harness().reporter
  let p = progress(5, of: 1000, validation: ["correct": 0.5, "extra": 1])
  for width in [1, 10, 40, 60, 80, 100, 200] {
    let line = reporter.barLine(p, width: width)
    #expect(line.count <= max(width - 1, 0), "width \(width): \(line)")
  }
  #expect(reporter.barLine(p, width: 100).count == 99)  // a narrower bar
  #expect(reporter.barLine(p, width: 100).hasSuffix("extra 1.000  elapsed 1.2s  ETA 2.1s"))
  // Narrower still: the bar keeps 10 cells, the metrics and elapsed go, then the bar.
  #expect(
    reporter.barLine(p, width: 60) == "epoch    5/1000 [.............]   0%  loss 0.4123  ETA 2.1s")
  #expect(reporter.barLine(p, width: 40) == "epoch    5/1000    0%  loss 0.4123")
}

@Test func barRedrawsInPlaceThrottledAndAlwaysDrawsTheLastEpoch() {
  let h = Harness()
  for epoch in 1...100 {
    h.now = Double(epoch) * 0.01  // 100 epochs per second
    _ = h.reporter.report(progress(epoch, of: 100))
  }
  h.reporter.finish()
  let draws = h.output.split(separator: "\r", omittingEmptySubsequences: true)
  #expect(draws.count >= 5 && draws.count <= 12)  // about 10 a second, and the last
  #expect(draws.first!.hasPrefix("epoch   1/100"))
  #expect(draws.last!.hasPrefix("epoch 100/100"))
  #expect(draws.allSatisfy { $0.contains("\u{1B}[K") })
  #expect(h.output.hasSuffix("\u{1B}[K\n"))
  #expect(h.output.filter { $0 == "\n" }.count == 1)
}

@Test func finishDrawsAnEpochThrottlingSkipped() {
  // Early stopping ends before the last epoch: the latest one still ends up on screen.
  let h = Harness()
  for epoch in 1...3 { _ = h.reporter.report(progress(epoch, of: 50)) }  // no time passes
  #expect(h.output.components(separatedBy: "\r").count - 1 == 1)
  h.reporter.finish()
  #expect(h.output.components(separatedBy: "\r").last!.hasPrefix("epoch  3/50"))
  #expect(h.output.hasSuffix("\n"))
  h.reporter.finish()  // twice is harmless
  #expect(h.output.filter { $0 == "\n" }.count == 1)
}

@Test func plainModeWritesOneLinePerEpoch() {
  let h = Harness()
  let reporter = h.make(.plain)
  for epoch in 1...5 { _ = reporter.report(progress(epoch, of: 5, validation: ["correct": 0.25])) }
  reporter.finish()
  #expect(!h.output.contains("\r"))
  let lines = h.output.split(separator: "\n")
  #expect(lines.count == 5)
  #expect(lines[0] == "epoch 1/5  loss 0.4123  correct 0.2500  eta 2.10s")
}

@Test func noneWritesNothingAndQuietWins() {
  let h = Harness()
  let reporter = h.make(.none)
  _ = reporter.report(progress(1, of: 1))
  reporter.finish()
  #expect(h.output.isEmpty)
  #expect(ProgressReporter.resolve(.bar, quiet: true) == .none)
  #expect(ProgressReporter.resolve(.plain, quiet: false) == .plain)
}

@Test func durations() {
  #expect(ProgressReporter.duration(0.44) == "0.4s")
  #expect(ProgressReporter.duration(245) == "4m05s")
  #expect(ProgressReporter.duration(7380) == "2h03m")
  #expect(ProgressReporter.duration(.infinity) == "?")
}
