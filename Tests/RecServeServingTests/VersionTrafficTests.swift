import Foundation
import RecServeRPC
import Testing

@testable import RecServeServing

@Test func percentilesInterpolateWithinBuckets() {
  let bounds = MethodStats.bucketBounds
  var counts = [Int](repeating: 0, count: bounds.count + 1)
  #expect(VersionTraffic.percentile(0.99, counts) == 0)
  // 100 calls in the (0.5 ms, 1 ms] bucket: the median is halfway through it.
  let index = bounds.firstIndex(of: 0.001)!
  counts[index] = 100
  #expect(abs(VersionTraffic.percentile(0.5, counts) - 0.00075) < 1e-9)
  #expect(abs(VersionTraffic.percentile(0.99, counts) - 0.000995) < 1e-9)
  // One slow call above the last bound reads as that bound.
  counts[bounds.count] = 1000
  #expect(VersionTraffic.percentile(0.99, counts) == bounds[bounds.count - 1])
}

@Test func summaryCountsTheWindowSinceTheOldestSampleItCovers() {
  let traffic = VersionTraffic()
  let start = VersionTraffic.now()
  for _ in 0..<30 { traffic.counters.record(.ok, nanoseconds: 2_000_000) }
  traffic.counters.record(.internal, nanoseconds: 1_000_000)
  // Since loading (less than a window ago): every call, over the seconds since then.
  var summary = traffic.summary(at: start + 10)
  #expect(summary.calls == 31 && summary.errors == 1)
  #expect(summary.windowCalls == 31 && summary.windowErrors == 1)
  #expect(abs(summary.windowSeconds - 10) < 0.5)
  #expect(summary.p50Milliseconds > 1 && summary.p50Milliseconds <= 2.5)
  // A sample at +70 s, then 10 more calls: a minute later, only those are in the window.
  traffic.sample(at: start + 70)
  for _ in 0..<10 { traffic.counters.record(.ok, nanoseconds: 20_000_000) }
  summary = traffic.summary(at: start + 131)
  #expect(summary.calls == 41)
  #expect(summary.windowCalls == 10 && summary.windowErrors == 0)
  #expect(abs(summary.windowSeconds - 61) < 0.5)
  #expect(summary.p50Milliseconds > 10 && summary.p50Milliseconds <= 25)
}

@Test func eventLogKeepsTheLatestEvents() {
  let log = EventLog(capacity: 3)
  for index in 1...5 { log.append("event \(index)") }
  #expect(log.all.map(\.text) == ["event 3", "event 4", "event 5"])
}
