import ArgumentParser
import Foundation
import RecServeProto
import RecServeRPC
import SwiftProtobuf

struct LoadCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "load",
    abstract: "Drive a server with unary Predict or Rank calls and report throughput and latency.",
    discussion: """
      Each client thread opens its own connection and keeps its share of --concurrency calls in \
      flight (closed loop), or starts calls at --rate per second in total (open loop, never more \
      than --concurrency in flight). Requests name random users and items from --users-file and \
      --items-file (one id a line, e.g. a model version's users.txt / items.txt), or the ids \
      `recserve gen-data` makes (u1..uN, i1..iM). Only status codes are checked, so any server \
      answering the method (e.g. an echo server) can be measured the same way.
      """
  )

  enum RPC: String, ExpressibleByArgument, CaseIterable {
    case predict, rank
  }

  @Option(help: "Server address, HOST:PORT.")
  var target: String

  @Option(help: "Method to call: predict or rank.")
  var rpc: RPC = .predict

  @Option(help: "Calls in flight in total (split over --threads).")
  var concurrency: Int = 64

  @Option(help: "Client threads, each with its own connection and completion queue.")
  var threads: Int = 2

  @Option(help: "Seconds to run.")
  var duration: Double = 10

  @Option(help: "Seconds of warm-up before measuring.")
  var warmup: Double = 1

  @Option(help: "Calls per second in total (default: as fast as the server answers).")
  var rate: Double?

  @Option(help: "Model name in requests.")
  var model: String = "demo"

  @Option(help: "Pairs per Predict request.")
  var pairs: Int = 1

  @Option(help: "k for Rank.")
  var k: Int32 = 10

  @Option(
    help: """
      Rank: send a session of this many random items (from --items-file) as recent_items and no \
      user_id, as for a visitor the model never saw (0: rank by user_id).
      """)
  var recent: Int = 0

  enum Search: String, ExpressibleByArgument, CaseIterable {
    case exact, f16, ivf
  }

  @Option(
    help: """
      Rank: the search each request asks for (exact, f16 or ivf; default: the server's own \
      choice, SEARCH_DEFAULT).
      """)
  var search: Search?

  @Option(help: "Rank with --search ivf: lists each request visits (0: the model's default).")
  var nprobe: Int32 = 0

  @Option(name: .customLong("users-file"), help: "User ids to draw from, one a line.")
  var usersFile: String?

  @Option(name: .customLong("items-file"), help: "Item ids to draw from, one a line.")
  var itemsFile: String?

  @Option(help: "Ids u1..uN to draw from when no --users-file is given.")
  var users: Int = 1000

  @Option(help: "Ids i1..iM to draw from when no --items-file is given.")
  var items: Int = 500

  @Option(help: "Per-call deadline in seconds.")
  var timeout: Double = 10

  @Flag(help: "Print one JSON object.")
  var json = false

  func validate() throws {
    if !target.contains(":") {
      throw ValidationError("--target must be HOST:PORT, got '\(target)'")
    }
    if concurrency < 1 || concurrency > 100_000 {
      throw ValidationError("--concurrency must be in 1...100000")
    }
    if threads < 1 || threads > 256 { throw ValidationError("--threads must be in 1...256") }
    if threads > concurrency {
      throw ValidationError("--threads (\(threads)) cannot exceed --concurrency (\(concurrency))")
    }
    if !(duration > 0) || duration > 86_400 {
      throw ValidationError("--duration must be in (0, 86400] seconds")
    }
    if warmup < 0 || !warmup.isFinite { throw ValidationError("--warmup must be >= 0") }
    if let rate, !(rate > 0) || !rate.isFinite {
      throw ValidationError("--rate must be a positive number")
    }
    if pairs < 1 || pairs > 100_000 { throw ValidationError("--pairs must be in 1...100000") }
    if k < 1 { throw ValidationError("--k must be at least 1") }
    if recent < 0 || recent > 100_000 { throw ValidationError("--recent must be in 0...100000") }
    if recent > 0 && rpc != .rank { throw ValidationError("--recent is for --rpc rank") }
    if search != nil && rpc != .rank { throw ValidationError("--search is for --rpc rank") }
    if nprobe < 0 { throw ValidationError("--nprobe must be >= 0") }
    if nprobe > 0 && search != .ivf { throw ValidationError("--nprobe needs --search ivf") }
    if users < 1 || items < 1 { throw ValidationError("--users and --items must be at least 1") }
    if !(timeout > 0) { throw ValidationError("--timeout must be positive") }
  }

  func run() throws {
    do {
      try execute()
    } catch let error as CLIError {
      throw CLI.failure(error)
    }
  }

  private func execute() throws {
    let userIds = try ids(file: usersFile, prefix: "u", count: users)
    let itemIds = try ids(file: itemsFile, prefix: "i", count: items)
    let requests = try makeRequests(userIds: userIds, itemIds: itemIds, count: 4096)
    let path =
      rpc == .predict ? "/recserve.v1.Recommender/Predict" : "/recserve.v1.Recommender/Rank"

    let perThread = (0..<threads).map { index in
      concurrency / threads + (index < concurrency % threads ? 1 : 0)
    }
    let start = DispatchTime.now().uptimeNanoseconds
    let measureFrom = start + UInt64(warmup * 1e9)
    let stopAt = measureFrom + UInt64(duration * 1e9)
    let workers = perThread.enumerated().map { index, inFlight in
      LoadWorker(
        target: target, path: path, requests: requests, inFlight: inFlight, timeout: timeout,
        rate: rate.map { $0 / Double(threads) }, measureFrom: measureFrom, stopAt: stopAt,
        seed: UInt64(index + 1))
    }
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
    group.wait()

    var latencies: [UInt32] = []
    var codes: [StatusCode: Int] = [:]
    var firstErrors: [String] = []
    for worker in workers {
      latencies.append(contentsOf: worker.latencies)
      for (code, count) in worker.codes { codes[code, default: 0] += count }
      firstErrors.append(contentsOf: worker.firstErrors)
    }
    latencies.sort()
    let ok = codes[.ok] ?? 0
    let total = codes.values.reduce(0, +)
    func percentile(_ p: Double) -> Double {
      guard !latencies.isEmpty else { return 0 }
      let index = min(
        latencies.count - 1, Int((p / 100 * Double(latencies.count)).rounded(.up)) - 1)
      return Double(latencies[max(0, index)]) / 1000
    }
    let throughput = Double(ok) / duration
    let summary: [String: Any] = [
      "target": target, "rpc": rpc.rawValue, "threads": threads, "concurrency": concurrency,
      "recent_items": recent,
      "duration_s": duration, "rate": rate ?? 0, "calls": total, "ok": ok, "errors": total - ok,
      "calls_per_s": throughput,
      "latency_ms": [
        "p50": percentile(50), "p90": percentile(90), "p99": percentile(99),
        "p999": percentile(99.9),
        "max": latencies.last.map { Double($0) / 1000 } ?? 0,
      ],
      "status_codes": Dictionary(uniqueKeysWithValues: codes.map { ("\($0.key)", $0.value) }),
    ]
    if json {
      let data = try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys])
      print(String(decoding: data, as: UTF8.self))
    } else {
      print(
        "target \(target)  rpc \(rpc.rawValue)  threads \(threads)  in flight \(concurrency)  \(duration) s"
      )
      print(
        String(
          format: "calls %d  ok %d  errors %d  throughput %.0f calls/s", total, ok, total - ok,
          throughput))
      print(
        String(
          format: "latency ms  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f", percentile(50),
          percentile(90), percentile(99), percentile(99.9),
          (latencies.last.map { Double($0) } ?? 0) / 1000))
      if total > ok {
        print(
          "status codes: "
            + codes.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(
              separator: ", "))
        for error in Set(firstErrors).sorted().prefix(5) { print("  e.g. \(error)") }
      }
    }
    if total == 0 { throw CLIError("no call completed: is a server listening on \(target)?") }
    if ok == 0 { throw CLIError("no call to \(target) succeeded (see the status codes above)") }
  }

  private func ids(file: String?, prefix: String, count: Int) throws -> [String] {
    guard let file else { return (1...count).map { "\(prefix)\($0)" } }
    guard let data = FileManager.default.contents(atPath: file) else {
      throw CLIError("cannot read \(file)")
    }
    let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init).filter
    { !$0.isEmpty }
    if lines.isEmpty { throw CLIError("\(file) holds no ids") }
    return lines
  }

  private func makeRequests(userIds: [String], itemIds: [String], count: Int) throws -> [[UInt8]] {
    var generator = SplitMix(seed: 12345)
    var spec = Recserve_V1_ModelSpec()
    spec.name = model
    return try (0..<count).map { _ in
      switch rpc {
      case .predict:
        var request = Recserve_V1_PredictRequest()
        request.model = spec
        request.pairs = (0..<pairs).map { _ in
          var pair = Recserve_V1_UserItem()
          pair.userID = userIds[Int(generator.next() % UInt64(userIds.count))]
          pair.itemID = itemIds[Int(generator.next() % UInt64(itemIds.count))]
          return pair
        }
        return try request.serializedBytes()
      case .rank:
        var request = Recserve_V1_RankRequest()
        request.model = spec
        if recent > 0 {
          request.recentItems = (0..<recent).map { _ in
            itemIds[Int(generator.next() % UInt64(itemIds.count))]
          }
        } else {
          request.userID = userIds[Int(generator.next() % UInt64(userIds.count))]
        }
        request.k = k
        switch search {
        case .exact: request.search = .exact
        case .f16: request.search = .f16
        case .ivf: request.search = .ivf
        case nil: break
        }
        request.nprobe = nprobe
        return try request.serializedBytes()
      }
    }
  }
}

/// A small seeded generator for picking request ids.
struct SplitMix {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

/// One client thread: a connection, a completion queue and its calls in flight.
final class LoadWorker: @unchecked Sendable {
  let channel: Channel
  let queue = CompletionQueue()
  let path: String
  let requests: [[UInt8]]
  let inFlight: Int
  let timeout: Double
  let interval: UInt64?
  let measureFrom: UInt64
  let stopAt: UInt64
  var generator: SplitMix
  var latencies: [UInt32] = []
  var codes: [StatusCode: Int] = [:]
  var firstErrors: [String] = []

  init(
    target: String, path: String, requests: [[UInt8]], inFlight: Int, timeout: Double,
    rate: Double?,
    measureFrom: UInt64, stopAt: UInt64, seed: UInt64
  ) {
    channel = Channel(target: target)
    self.path = path
    self.requests = requests
    self.inFlight = inFlight
    self.timeout = timeout
    self.interval = rate.map { UInt64(1e9 / $0) }
    self.measureFrom = measureFrom
    self.stopAt = stopAt
    generator = SplitMix(seed: seed)
    latencies.reserveCapacity(1 << 20)
  }

  func run() {
    // Start times live in a slot table; the call's user pointer carries its slot.
    var startTimes = [UInt64](repeating: 0, count: inFlight)
    var freeSlots = Array((0..<inFlight).reversed())
    var nextStart = DispatchTime.now().uptimeNanoseconds
    var outstanding = 0
    while true {
      let now = DispatchTime.now().uptimeNanoseconds
      let stopping = now >= stopAt
      // Start calls while there is room (and, with a rate, while they are due).
      while !stopping, let slot = freeSlots.last {
        if let interval {
          if nextStart > DispatchTime.now().uptimeNanoseconds { break }
          nextStart += interval
        }
        freeSlots.removeLast()
        let request = requests[Int(generator.next() % UInt64(requests.count))]
        startTimes[slot] = DispatchTime.now().uptimeNanoseconds
        let user = UnsafeMutableRawPointer(bitPattern: slot + 1)
        if queue.startUnary(
          channel, path: path, request: request, metadata: [], timeout: timeout, user: user) == nil
        {
          freeSlots.append(slot)
          record(.internal, message: "the client could not start a call", started: startTimes[slot])
          break
        }
        outstanding += 1
      }
      if stopping && outstanding == 0 { break }
      var wait = 0.05
      if let interval, !stopping, !freeSlots.isEmpty {
        let due = Double(Int64(nextStart) - Int64(DispatchTime.now().uptimeNanoseconds)) / 1e9
        wait = max(0, min(wait, due))
        if wait == 0 { continue }
        _ = interval
      }
      guard let event = queue.next(timeout: wait) else { continue }
      let call = event.owner
      let slot = Int(bitPattern: CompletionQueue.user(of: call)) - 1
      let code = CompletionQueue.status(of: call)
      if code != .ok {
        let message = CompletionQueue.result(of: call, copyResponse: false).message
        record(code, message: message, started: startTimes[slot])
      } else {
        record(.ok, message: "", started: startTimes[slot])
      }
      CompletionQueue.finish(call)
      freeSlots.append(slot)
      outstanding -= 1
    }
  }

  private func record(_ code: StatusCode, message: String, started: UInt64) {
    let now = DispatchTime.now().uptimeNanoseconds
    guard started >= measureFrom, started < stopAt else { return }
    codes[code, default: 0] += 1
    if code == .ok {
      latencies.append(UInt32(min(UInt64(UInt32.max), (now - started) / 1000)))
    } else if firstErrors.count < 20 {
      firstErrors.append("\(code): \(message)")
    }
  }
}
