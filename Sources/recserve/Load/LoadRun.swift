import Foundation
import Histogram
import RecServeModels
import RecServeRPC
import Synchronization

/// One second of a run (by the time calls finished): its calls and latency histogram.
struct LoadWindow {
  var latency: Histogram<UInt32>
  var ok = 0
  var errors = 0
  /// Answers by the model version they name (only when versions are tracked).
  var versions: [Int64: Int] = [:]

  init() {
    latency = Histogram(
      lowestDiscernibleValue: 1, highestTrackableValue: LoadRun.highestNanoseconds,
      numberOfSignificantValueDigits: .two)
  }

  mutating func add(_ other: LoadWindow) {
    latency.add(other.latency)
    ok += other.ok
    errors += other.errors
    for (version, count) in other.versions { versions[version, default: 0] += count }
  }
}

/// What a run measured.
struct LoadResult {
  var concurrency: Int
  var threads: Int
  /// Seconds measured: the run's duration, or (by count) from the end of the warm-up to the last
  /// answer.
  var seconds: Double
  var latency: Histogram<UInt64>
  var codes: [StatusCode: Int]
  var firstErrors: [String]
  var windows: [LoadWindow]
  /// Calls an open-loop schedule had due but never started before the run ended (the server was
  /// behind by that many).
  var unsent: Int
  /// When each version was first named by an answer, in seconds since measuring began.
  var firstSeen: [Int64: Double]
  var swap: SwapEvent?

  var ok: Int { codes[.ok] ?? 0 }
  var calls: Int { codes.values.reduce(0, +) }
  var throughput: Double { seconds > 0 ? Double(ok) / seconds : 0 }

  func milliseconds(_ percentile: Double) -> Double {
    LoadOutput.milliseconds(latency, percentile)
  }
  var maxMilliseconds: Double { latency.totalCount == 0 ? 0 : Double(latency.max) / 1e6 }
}

/// A swap done during a run: when it was asked for and answered, and what came of it.
struct SwapEvent {
  var description: String
  /// The version that should serve after the swap (nil when unknown: the swap failed).
  var version: Int64?
  var requested: Double
  var answered: Double
  var error: String?
}

/// Drives one load level: `threads` client threads, each with its own connection and completion
/// queue, keep `concurrency` calls in flight in total (closed loop) or start them at `rate` per
/// second (open loop). Latency runs from each call's start in a closed loop, and from the moment
/// the schedule meant it to start in an open loop: a call the client could not send on time
/// (every slot busy) is charged the wait, so an overloaded server shows growing latency instead
/// of a flat one (the coordinated-omission correction of wrk2 and HdrHistogram).
final class LoadRun: @unchecked Sendable {
  /// Latencies above an hour are recorded as an hour.
  static let highestNanoseconds: UInt64 = 3_600_000_000_000

  struct Plan {
    var target: String
    var path: String
    var requests: [[UInt8]]
    var concurrency: Int
    var threads: Int
    /// Seconds to measure; nil: until `count` calls were sent.
    var duration: Double?
    var count: Int?
    var warmup: Double
    var rate: Double?
    var timeout: Double
    var trackVersions: Bool
    var tls: Channel.TLS? = nil
  }

  let plan: Plan

  init(plan: Plan) { self.plan = plan }

  /// Runs the level. `second` hears each finished second (merged over threads) while the run
  /// goes on; `swap`, if given, runs on a thread of its own `at` seconds into the measurement.
  func run(
    second: ((Int, LoadWindow) -> Void)? = nil,
    swap: (at: Double, action: @Sendable () -> SwapOutcome)? = nil
  ) -> LoadResult {
    let threads = min(plan.threads, plan.concurrency)
    let start = DispatchTime.now().uptimeNanoseconds
    let measureFrom = start + UInt64(plan.warmup * 1e9)
    let workers = makeWorkers(threads: threads, measureFrom: measureFrom)
    let group = DispatchGroup()
    for worker in workers {
      group.enter()
      let thread = Thread {
        worker.run()
        group.leave()
      }
      thread.stackSize = 1 << 20
      thread.start()
    }
    let swapEvent = watch(
      workers, until: group, measureFrom: measureFrom, second: second, swap: swap)
    return collect(workers, threads: threads, measureFrom: measureFrom, swap: swapEvent)
  }

  /// The level's calls in flight, rate and budget shared over `threads` workers.
  private func makeWorkers(threads: Int, measureFrom: UInt64) -> [LoadWorker] {
    let stopAt = plan.duration.map { measureFrom + UInt64($0 * 1e9) } ?? UInt64.max
    return (0..<threads).map { index in
      let share = { (total: Int) in total / threads + (index < total % threads ? 1 : 0) }
      return LoadWorker(
        target: plan.target, tls: plan.tls, path: plan.path, requests: plan.requests,
        inFlight: share(plan.concurrency), timeout: plan.timeout,
        rate: plan.rate.map { $0 / Double(threads) }, measureFrom: measureFrom, stopAt: stopAt,
        budget: plan.count.map(share), trackVersions: plan.trackVersions,
        lastWindow: plan.duration.map { max(0, Int($0.rounded(.up)) - 1) }, seed: UInt64(index + 1))
    }
  }

  /// Until the workers are done: reports each second once its calls are in (a call finishing
  /// late in it is recorded within microseconds; an empty second is reported too: a stalled
  /// server shows as 0 calls/s), and starts the swap when it is due. Returns what the swap did,
  /// waiting for it if it still runs when the load ends (its answer ends the report).
  private func watch(
    _ workers: [LoadWorker], until group: DispatchGroup, measureFrom: UInt64,
    second: ((Int, LoadWindow) -> Void)?,
    swap: (at: Double, action: @Sendable () -> SwapOutcome)?
  ) -> SwapEvent? {
    let swapEvent = Mutex<SwapEvent?>(nil)
    var swapStarted = false
    var reported = 0
    let grace: UInt64 = 20_000_000
    while true {
      let now = DispatchTime.now().uptimeNanoseconds
      var wake = measureFrom + UInt64(reported + 1) * 1_000_000_000 + grace
      if let swap, !swapStarted {
        let due = measureFrom + UInt64(max(0, swap.at) * 1e9)
        if now >= due {
          swapStarted = true
          let requested = Self.seconds(since: measureFrom)
          let thread = Thread {
            let outcome = swap.action()
            let answered = Self.seconds(since: measureFrom)
            swapEvent.withLock {
              $0 = SwapEvent(
                description: outcome.description, version: outcome.version,
                requested: requested, answered: answered, error: outcome.error)
            }
          }
          thread.start()
        } else {
          wake = min(wake, due)
        }
      }
      let waitNs = wake > now ? min(wake - now, 1_000_000_000) : 0
      let finished = group.wait(timeout: .now() + .nanoseconds(Int(waitNs))) == .success
      // Seconds that are over; once every thread is done, whatever they recorded.
      let after = DispatchTime.now().uptimeNanoseconds
      let over =
        after >= measureFrom + grace ? Int((after - measureFrom - grace) / 1_000_000_000) : 0
      let limit = finished ? workers.map(\.windowCount).max() ?? 0 : over
      while reported < limit {
        var merged = LoadWindow()
        for worker in workers { worker.window(reported).map { merged.add($0) } }
        second?(reported, merged)
        reported += 1
      }
      if finished { break }
    }
    if swapStarted {
      while swapEvent.withLock({ $0 == nil }) { usleep(10_000) }
    }
    return swapEvent.withLock { $0 }
  }

  /// The workers' tallies merged: latencies, codes, first errors, per-second windows, the
  /// moment each version first answered, and the seconds measured.
  private func collect(
    _ workers: [LoadWorker], threads: Int, measureFrom: UInt64, swap: SwapEvent?
  ) -> LoadResult {
    var latency = Histogram<UInt64>(
      lowestDiscernibleValue: 1, highestTrackableValue: Self.highestNanoseconds,
      numberOfSignificantValueDigits: .three)
    var codes: [StatusCode: Int] = [:]
    var firstErrors: [String] = []
    var windows: [LoadWindow] = []
    var unsent = 0
    var firstSeen: [Int64: UInt64] = [:]
    var lastAnswer = measureFrom
    for worker in workers {
      worker.stats.withLock { stats in
        latency.add(stats.latency)
        for (code, count) in stats.codes { codes[code, default: 0] += count }
        firstErrors.append(contentsOf: stats.firstErrors)
        for (index, window) in stats.windows.enumerated() {
          if index == windows.count { windows.append(LoadWindow()) }
          windows[index].add(window)
        }
        for (version, at) in stats.firstSeen {
          firstSeen[version] = min(firstSeen[version] ?? at, at)
        }
        lastAnswer = max(lastAnswer, stats.lastAnswer)
      }
      unsent += worker.unsent
    }
    let seconds =
      plan.duration.map { duration in
        plan.count == nil ? duration : min(duration, Double(lastAnswer - measureFrom) / 1e9)
      } ?? Double(lastAnswer - measureFrom) / 1e9
    return LoadResult(
      concurrency: plan.concurrency, threads: threads, seconds: seconds, latency: latency,
      codes: codes, firstErrors: firstErrors, windows: windows, unsent: unsent,
      firstSeen: firstSeen.mapValues { Double($0 - min($0, measureFrom)) / 1e9 },
      swap: swap)
  }

  static func seconds(since origin: UInt64) -> Double {
    let now = DispatchTime.now().uptimeNanoseconds
    return now >= origin ? Double(now - origin) / 1e9 : -Double(origin - now) / 1e9
  }
}

/// What a swap action reports back.
struct SwapOutcome: Sendable {
  var description: String
  var version: Int64?
  var error: String?
}

/// One client thread: a connection, a completion queue and its calls in flight.
final class LoadWorker: @unchecked Sendable {
  struct Stats {
    var latency: Histogram<UInt64>
    var windows: [LoadWindow] = []
    var codes: [StatusCode: Int] = [:]
    var firstErrors: [String] = []
    var firstSeen: [Int64: UInt64] = [:]
    var lastAnswer: UInt64 = 0
  }

  let channel: Channel
  let queue = CompletionQueue()
  let path: String
  let requests: [[UInt8]]
  let inFlight: Int
  let timeout: Double
  let interval: UInt64?
  let measureFrom: UInt64
  let stopAt: UInt64
  /// Measured calls to start (by count); nil: until `stopAt`.
  let budget: Int?
  let trackVersions: Bool
  /// The last second of a timed run: calls answered after its end count in it.
  let lastWindow: Int?
  var generator: SplitMix64
  /// Written by this worker's thread, read by the run's once per second.
  let stats: Mutex<Stats>
  private let windows = Atomic<Int>(0)
  private(set) var unsent = 0

  init(
    target: String, tls: Channel.TLS? = nil, path: String, requests: [[UInt8]], inFlight: Int,
    timeout: Double,
    rate: Double?, measureFrom: UInt64, stopAt: UInt64, budget: Int?, trackVersions: Bool,
    lastWindow: Int?, seed: UInt64
  ) {
    channel = Channel(target: target, tls: tls)
    self.path = path
    self.requests = requests
    self.inFlight = inFlight
    self.timeout = timeout
    self.interval = rate.map { UInt64(1e9 / $0) }
    self.measureFrom = measureFrom
    self.stopAt = stopAt
    self.budget = budget
    self.trackVersions = trackVersions
    self.lastWindow = lastWindow
    generator = SplitMix64(seed: seed)
    stats = Mutex(
      Stats(
        latency: Histogram(
          lowestDiscernibleValue: 1, highestTrackableValue: LoadRun.highestNanoseconds,
          numberOfSignificantValueDigits: .three)))
  }

  /// Seconds this worker has recorded anything in (the last one may still be filling).
  var windowCount: Int { windows.load(ordering: .acquiring) }

  func window(_ index: Int) -> LoadWindow? {
    stats.withLock { index < $0.windows.count ? $0.windows[index] : nil }
  }

  func run() {
    // Start times live in a slot table; the call's user pointer carries its slot.
    var startTimes = [UInt64](repeating: 0, count: inFlight)
    var freeSlots = Array((0..<inFlight).reversed())
    var nextStart = DispatchTime.now().uptimeNanoseconds
    var outstanding = 0
    var measuredStarts = 0
    while true {
      let now = DispatchTime.now().uptimeNanoseconds
      let stopping = now >= stopAt || (budget.map { measuredStarts >= $0 } ?? false)
      // Start calls while there is room (and, with a rate, while they are due).
      while !stopping, let slot = freeSlots.last {
        var started = DispatchTime.now().uptimeNanoseconds
        if let interval {
          if nextStart > started { break }
          // Charged from when it was due, not from when a slot came free.
          started = nextStart
          nextStart += interval
        }
        if started >= measureFrom {
          if let budget, measuredStarts >= budget { break }
          measuredStarts += 1
        }
        freeSlots.removeLast()
        let request = requests[Int(generator.next() % UInt64(requests.count))]
        startTimes[slot] = started
        let user = UnsafeMutableRawPointer(bitPattern: slot + 1)
        if queue.startUnary(
          channel, path: path, request: request, metadata: [], timeout: timeout, user: user) == nil
        {
          freeSlots.append(slot)
          record(.internal, message: "the client could not start a call", started: started)
          break
        }
        outstanding += 1
      }
      if stopping && outstanding == 0 { break }
      var wait = 0.05
      if interval != nil, !stopping, !freeSlots.isEmpty {
        let due = Double(Int64(nextStart) - Int64(DispatchTime.now().uptimeNanoseconds)) / 1e9
        wait = max(0, min(wait, due))
        if wait == 0 { continue }
      }
      guard let event = queue.next(timeout: wait) else { continue }
      let call = event.owner
      let slot = Int(bitPattern: CompletionQueue.user(of: call)) - 1
      let code = CompletionQueue.status(of: call)
      if code != .ok {
        let message = CompletionQueue.result(of: call, copyResponse: false).message
        record(code, message: message, started: startTimes[slot])
      } else {
        let version =
          trackVersions ? CompletionQueue.withResponse(of: call, Self.modelVersion) : nil
        record(.ok, message: "", started: startTimes[slot], version: version)
      }
      CompletionQueue.finish(call)
      freeSlots.append(slot)
      outstanding -= 1
    }
    // Calls an open-loop schedule had due that were never sent.
    if let interval, budget == nil, stopAt != .max {
      let end = min(DispatchTime.now().uptimeNanoseconds, stopAt)
      if end > nextStart { unsent = Int((end - nextStart) / interval) }
    }
  }

  private func record(_ code: StatusCode, message: String, started: UInt64, version: Int64? = nil) {
    let now = DispatchTime.now().uptimeNanoseconds
    guard started >= measureFrom, started < stopAt else { return }
    let latency = min(now - min(now, started), LoadRun.highestNanoseconds)
    let second = min(Int((now - measureFrom) / 1_000_000_000), lastWindow ?? .max)
    let count = stats.withLock { stats -> Int in
      while stats.windows.count <= second { stats.windows.append(LoadWindow()) }
      stats.codes[code, default: 0] += 1
      stats.lastAnswer = max(stats.lastAnswer, now)
      if code == .ok {
        stats.latency.record(latency)
        stats.windows[second].latency.record(latency)
        stats.windows[second].ok += 1
        if let version {
          stats.windows[second].versions[version, default: 0] += 1
          if stats.firstSeen[version] == nil { stats.firstSeen[version] = now }
        }
      } else {
        stats.windows[second].errors += 1
        if stats.firstErrors.count < 20 { stats.firstErrors.append("\(code): \(message)") }
      }
      return stats.windows.count
    }
    windows.store(count, ordering: .releasing)
  }

  /// Field 2 (model_version, a varint) of a Predict, Rank or SimilarItems response, read in
  /// place; nil when absent or malformed.
  static func modelVersion(_ bytes: UnsafeRawBufferPointer) -> Int64? {
    var index = 0
    func varint() -> UInt64? {
      var value: UInt64 = 0
      var shift: UInt64 = 0
      while index < bytes.count, shift < 64 {
        let byte = bytes[index]
        index += 1
        value |= UInt64(byte & 0x7F) << shift
        if byte & 0x80 == 0 { return value }
        shift += 7
      }
      return nil
    }
    while index < bytes.count {
      guard let key = varint() else { return nil }
      let field = key >> 3
      switch key & 7 {
      case 0:
        guard let value = varint() else { return nil }
        if field == 2 { return Int64(bitPattern: value) }
      case 1: index += 8
      case 2:
        guard let length = varint(), length <= UInt64(bytes.count - index) else { return nil }
        index += Int(length)
      case 5: index += 4
      default: return nil
      }
    }
    return nil
  }
}
