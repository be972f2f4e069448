import Foundation
import Histogram
import RecServeModels
import RecServeProto
import RecServeRPC
import SwiftProtobuf
import Testing

@testable import recserve

// `recserve load`'s parts that need no server: request generation and files, the response
// version reader, the sweep's knee, the swap windows and the HTML page. The runs themselves
// (real server, real sockets) are tested from Python in Tests/python/test_load_cli.py.

@Test func zipfDrawsFollowOneOverRank() {
  let ids = (1...100).map { "i\($0)" }
  var generator = SplitMix64(seed: 7)
  let skewed = IdSampler(ids: ids, exponent: 1)
  let uniform = IdSampler(ids: ids, exponent: 0)
  var skewedCounts = [Int](repeating: 0, count: 100)
  var uniformCounts = [Int](repeating: 0, count: 100)
  let draws = 200_000
  for _ in 0..<draws {
    skewedCounts[skewed.index(&generator)] += 1
    uniformCounts[uniform.index(&generator)] += 1
  }
  let harmonic = (1...100).reduce(0.0) { $0 + 1 / Double($1) }
  for rank in [1, 2, 10, 100] {
    let expected = 1 / Double(rank) / harmonic
    let seen = Double(skewedCounts[rank - 1]) / Double(draws)
    #expect(abs(seen - expected) < 0.1 * expected + 0.001, "rank \(rank): \(seen) vs \(expected)")
  }
  #expect(uniformCounts.min()! > draws / 100 / 2)
  #expect(uniformCounts.max()! < draws / 100 * 2)
}

@Test func generatedRequestsNameTheModelAndDrawnIds() throws {
  var shape = LoadRequests.Shape(model: "movies")
  shape.k = 7
  let requests = try LoadRequests.generated(
    rpc: .similar, shape: shape, users: ["-"], items: ["a", "b", "c"], zipf: 0, count: 50)
  #expect(requests.count == 50)
  var seen = Set<String>()
  for bytes in requests {
    let request = try Recserve_V1_SimilarItemsRequest(serializedBytes: bytes)
    #expect(request.model.name == "movies")
    #expect(request.k == 7)
    seen.insert(request.itemID)
  }
  #expect(seen == ["a", "b", "c"])
}

@Test func requestsFileFillsTheModelAndNamesTheBadLine() throws {
  let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
    "load-requests-\(UUID().uuidString)")
  try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
  defer { try? FileManager.default.removeItem(at: directory) }
  let good = directory.appendingPathComponent("good.jsonl").path
  try Data(
    """
    {"userId": "u1", "k": 5}

    {"model": {"name": "other", "version": 2}, "userId": "u2", "k": 3}
    """.utf8
  ).write(to: URL(fileURLWithPath: good))
  let requests = try LoadRequests.fromFile(good, rpc: .rank, model: "movies").map {
    try Recserve_V1_RankRequest(serializedBytes: $0)
  }
  #expect(requests.map(\.userID) == ["u1", "u2"])
  #expect(requests.map(\.model.name) == ["movies", "other"])
  #expect(requests[1].model.version == 2)

  let bad = directory.appendingPathComponent("bad.jsonl").path
  try Data("{\"pairs\": []}\n{\"pairs\": [{\"userId\": 3\n".utf8).write(
    to: URL(fileURLWithPath: bad))
  #expect {
    try LoadRequests.fromFile(bad, rpc: .predict, model: "m")
  } throws: { error in
    "\(error)".contains("\(bad) line 2") && "\(error)".contains("recserve.v1.PredictRequest")
  }
  #expect(throws: CLIError.self) {
    try LoadRequests.fromFile(directory.appendingPathComponent("none").path, rpc: .rank, model: "m")
  }
}

@Test func modelVersionIsReadFromAnyResponse() throws {
  var rank = Recserve_V1_RankResponse()
  rank.modelName = "movies"
  rank.modelVersion = 42
  var item = Recserve_V1_ScoredItem()
  item.itemID = "i1"
  item.score = 0.5
  rank.items = [item]
  var predict = Recserve_V1_PredictResponse()
  predict.scores = [1, 2]
  predict.modelVersion = 7
  predict.modelName = "m"
  for (bytes, expected) in [
    (try rank.serializedBytes() as [UInt8], Int64(42)), (try predict.serializedBytes(), 7),
  ] {
    #expect(bytes.withUnsafeBytes { LoadWorker.modelVersion($0) } == expected)
  }
  // No version, truncated and garbage bytes: nil, never a crash or an out-of-bounds read.
  let empty: [UInt8] = []
  #expect(empty.withUnsafeBytes { LoadWorker.modelVersion($0) } == nil)
  let full: [UInt8] = try rank.serializedBytes()
  let truncated = Array(full.prefix(3))
  #expect(truncated.withUnsafeBytes { LoadWorker.modelVersion($0) } == nil)
  var generator = SplitMix64(seed: 3)
  for _ in 0..<2000 {
    let noise = (0..<Int(generator.next() % 40)).map { _ in
      UInt8(truncatingIfNeeded: generator.next())
    }
    _ = noise.withUnsafeBytes { LoadWorker.modelVersion($0) }
  }
}

/// A level of `ok` calls in one second, every latency `ms` milliseconds.
private func level(_ concurrency: Int, ok: Int, ms: Double) -> LoadResult {
  var latency = Histogram<UInt64>(
    lowestDiscernibleValue: 1, highestTrackableValue: LoadRun.highestNanoseconds,
    numberOfSignificantValueDigits: .three)
  _ = latency.record(UInt64(ms * 1e6), count: UInt64(ok))
  return LoadResult(
    concurrency: concurrency, threads: 1, seconds: 1, latency: latency, codes: [.ok: ok],
    firstErrors: [], windows: [], unsent: 0, firstSeen: [:], swap: nil)
}

@Test func sweepFindsWhereThroughputStopsGrowing() {
  let flattening = LoadSweep(results: [
    level(1, ok: 1000, ms: 1), level(2, ok: 1900, ms: 1.05), level(4, ok: 3500, ms: 1.1),
    level(8, ok: 3700, ms: 2.1), level(16, ok: 3650, ms: 4.3),
  ])
  #expect(flattening.knee == 2)
  #expect(flattening.verdict.contains("stops growing at 4 in flight"))
  let growing = LoadSweep(results: [
    level(1, ok: 1000, ms: 1), level(2, ok: 2000, ms: 1), level(4, ok: 4000, ms: 1),
  ])
  #expect(growing.knee == nil)
  #expect(growing.verdict.contains("kept growing up to 4"))
}

/// A window of `ok` answers naming `versions` (version: count).
private func window(ok: Int, versions: [Int64: Int], errors: Int = 0) -> LoadWindow {
  var w = LoadWindow()
  _ = w.latency.record(1_000_000, count: UInt32(ok))
  w.ok = ok
  w.errors = errors
  w.versions = versions
  return w
}

@Test func swapWindowsSplitAtTheRequestAndTheSwitch() {
  var result = level(4, ok: 0, ms: 1)
  result.seconds = 6
  result.codes = [.ok: 600]
  result.windows = [
    window(ok: 100, versions: [2: 100]), window(ok: 100, versions: [2: 100]),
    window(ok: 100, versions: [2: 60, 1: 40]), window(ok: 100, versions: [2: 5, 1: 95]),
    window(ok: 100, versions: [1: 100]), window(ok: 100, versions: [1: 100]),
  ]
  result.firstSeen = [2: 0.01, 1: 2.4]
  let swap = SwapEvent(
    description: "set-label m stable 1", version: 1, requested: 2.3, answered: 2.35, error: nil)
  let windows = LoadSwapWindows(result: result, swap: swap)
  #expect(windows.windows.map(\.name) == ["before", "during", "after"])
  #expect(windows.windows.map(\.from) == [0, 2, 4])
  #expect(windows.windows.map(\.to) == [2, 4, 6])
  #expect(windows.switched == 4)
  #expect(windows.firstNew == 2.4)
  #expect(windows.windows[1].throughput == 100)
}

@Test func reportPageHasItsChartsAndEscapesWhatItShows() throws {
  var result = level(4, ok: 300, ms: 1)
  result.seconds = 3
  result.windows = [
    window(ok: 100, versions: [2: 100]), window(ok: 100, versions: [1: 100]),
    window(ok: 100, versions: [1: 100]),
  ]
  result.firstSeen = [1: 1.2]
  let swap = SwapEvent(
    description: "set-label <m> stable 1", version: 1, requested: 1.1, answered: 1.15, error: nil)
  var parameters = try LoadParameters(
    command: LoadCommand.parse(["--target", "host:1", "--model", "<script>x</script>"]),
    duration: 3)
  parameters.swap = swap.description
  let page = LoadHTML.page(
    parameters: parameters, results: [result], sweep: nil,
    swapWindows: LoadSwapWindows(result: result, swap: swap))
  for element in [
    "id=\"parameters\"", "id=\"summary\"", "id=\"throughput-chart\"", "id=\"latency-chart\"",
    "class=\"swap-marker\"", "id=\"swap-windows\"", "<polyline",
  ] {
    #expect(page.contains(element), "missing \(element)")
  }
  #expect(!page.contains("<script>"))
  #expect(page.contains("&lt;script&gt;x&lt;/script&gt;"))
  #expect(!page.contains("http://") || !page.contains("src=\"http"))

  let sweepPage = LoadHTML.page(
    parameters: parameters,
    results: [level(1, ok: 1000, ms: 1), level(2, ok: 1900, ms: 1.1)],
    sweep: LoadSweep(results: [level(1, ok: 1000, ms: 1), level(2, ok: 1900, ms: 1.1)]))
  #expect(sweepPage.contains("id=\"sweep-chart\""))
  #expect(sweepPage.contains("id=\"sweep-table\""))
}

@Test func loadOptionsRejectContradictions() {
  let cases: [([String], String)] = [
    (["--swap-at", "1"], "exactly one of --swap-version and --swap-publish"),
    (["--swap-version", "2"], "need --swap-at"),
    (["--swap-at", "1", "--swap-publish", "/tmp"], "--swap-publish needs --models"),
    (["--sweep", "1,x,4"], "'x'"),
    (["--sweep", "1,2", "--swap-at", "1", "--swap-version", "1"], "separate runs"),
    (["--zipf", "-1"], "--zipf"),
    (["--count", "0"], "--count"),
    (["--report", "out.txt"], ".html"),
    (["--requests-file", "r.jsonl", "--zipf", "1"], "--requests-file"),
    (["--swap-at", "20", "--swap-version", "1", "--duration", "10"], "before the end"),
  ]
  for (arguments, message) in cases {
    do {
      _ = try LoadCommand.parse(["--target", "h:1"] + arguments)
      Issue.record("accepted \(arguments)")
    } catch {
      let text = LoadCommand.message(for: error)
      #expect(text.contains(message), "\(arguments): \(text)")
    }
  }
}
