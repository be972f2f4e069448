import Foundation
import RecServeRPC
import Synchronization

/// What one served version answered (Predict, Rank and SimilarItems calls it was resolved
/// for): live counters that the request path only increments (relaxed atomics, through
/// `ServerContext.count(in:)`), and samples of them taken every few seconds by
/// `TrafficSampler`, from which rates and percentiles over the last minute are read.
public final class VersionTraffic: Sendable {
  /// Seconds that rates and percentiles cover.
  public static let window: Double = 60

  public let counters = MethodStats(path: "")

  struct Sample {
    var at: Double
    var codes: [Int]
    var buckets: [Int]
  }

  private let samples: Mutex<[Sample]>

  public init() {
    samples = Mutex([
      Sample(
        at: Self.now(), codes: [Int](repeating: 0, count: 17),
        buckets: [Int](repeating: 0, count: MethodStats.bucketBounds.count + 1))
    ])
  }

  /// Monotonic seconds (the `DispatchTime` clock).
  public static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

  /// Keeps the counters' values now; drops samples older than the window needs.
  func sample(at time: Double = VersionTraffic.now()) {
    let sample = Sample(
      at: time, codes: counters.callsByCodeValue, buckets: counters.bucketCounts)
    samples.withLock { samples in
      samples.append(sample)
      // The oldest sample kept is the newest one at least a window old.
      while samples.count > 2 && samples[1].at <= time - Self.window { samples.removeFirst() }
    }
  }

  /// Rates and latency of the calls in the last minute (or since the version loaded, when
  /// sooner), and totals since it loaded.
  public struct Summary: Sendable {
    public var calls = 0
    public var errors = 0
    public var windowSeconds = 0.0
    public var windowCalls = 0
    public var windowErrors = 0
    /// Latency percentiles of the window's calls in milliseconds, interpolated within the
    /// histogram's buckets (0 when there were none).
    public var p50Milliseconds = 0.0
    public var p99Milliseconds = 0.0
    public var callsPerSecond: Double {
      windowSeconds > 0 ? Double(windowCalls) / windowSeconds : 0
    }
    public var errorsPerSecond: Double {
      windowSeconds > 0 ? Double(windowErrors) / windowSeconds : 0
    }
  }

  public func summary(at time: Double = VersionTraffic.now()) -> Summary {
    let codes = counters.callsByCodeValue
    let buckets = counters.bucketCounts
    let base = samples.withLock { samples in
      samples.last { $0.at <= time - Self.window } ?? samples[0]
    }
    var summary = Summary()
    summary.calls = codes.reduce(0, +)
    summary.errors = summary.calls - codes[0]
    summary.windowSeconds = max(0, time - base.at)
    summary.windowCalls = summary.calls - base.codes.reduce(0, +)
    summary.windowErrors = summary.windowCalls - (codes[0] - base.codes[0])
    let counts = zip(buckets, base.buckets).map { $0 - $1 }
    summary.p50Milliseconds = Self.percentile(0.5, counts) * 1000
    summary.p99Milliseconds = Self.percentile(0.99, counts) * 1000
    return summary
  }

  /// The `q` quantile in seconds of calls counted per bucket of `MethodStats.bucketBounds`
  /// (the last bucket above the last bound reads as that bound), interpolated linearly
  /// within its bucket.
  static func percentile(_ q: Double, _ counts: [Int]) -> Double {
    let total = counts.reduce(0, +)
    guard total > 0 else { return 0 }
    let bounds = MethodStats.bucketBounds
    let rank = q * Double(total)
    var below = 0
    for (index, count) in counts.enumerated() where count > 0 {
      if Double(below + count) >= rank {
        guard index < bounds.count else { return bounds[bounds.count - 1] }
        let lower = index == 0 ? 0 : bounds[index - 1]
        let fraction = max(0, min(1, (rank - Double(below)) / Double(count)))
        return lower + (bounds[index] - lower) * fraction
      }
      below += count
    }
    return bounds[bounds.count - 1]
  }
}

/// Samples every served version's traffic every `interval` seconds on a thread of its own.
final class TrafficSampler: @unchecked Sendable {
  let registry: ModelRegistry
  let interval: Double
  private let stopSignal = DispatchSemaphore(value: 0)
  private let stopped = DispatchSemaphore(value: 0)
  private let started = Mutex<Bool>(false)

  init(registry: ModelRegistry, interval: Double = 5) {
    self.registry = registry
    self.interval = interval
  }

  func start() {
    guard
      started.withLock({ running in
        defer { running = true }
        return !running
      })
    else { return }
    let thread = Thread { [self] in
      while stopSignal.wait(timeout: .now() + interval) == .timedOut {
        let now = VersionTraffic.now()
        for entry in registry.snapshot.models.values {
          for record in entry.versions.values { record.served?.traffic.sample(at: now) }
        }
      }
      stopped.signal()
    }
    thread.name = "recserve-traffic"
    thread.start()
  }

  func stop() {
    guard
      started.withLock({ running in
        defer { running = false }
        return running
      })
    else { return }
    stopSignal.signal()
    stopped.wait()
  }
}
