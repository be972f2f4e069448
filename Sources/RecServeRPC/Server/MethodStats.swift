import Atomics
import Foundation

/// Counters of one method (or of anything calls are counted for, e.g. the model version that
/// answered them: `ServerContext.count(in:)`): calls finished by status code, and a latency
/// histogram (accept to final status posted). Lock-free: relaxed atomic increments on the
/// request path.
public final class MethodStats: Sendable {
  /// Upper bounds of the latency buckets, in seconds (a last bucket catches the rest).
  public static let bucketBounds: [Double] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
  ]
  private static let boundsNanos: [UInt64] = bucketBounds.map { UInt64($0 * 1e9) }

  public let path: String
  private let codes: [ManagedAtomic<Int>] = (0...16).map { _ in ManagedAtomic(0) }
  private let buckets: [ManagedAtomic<Int>] = (0...MethodStats.bucketBounds.count).map { _ in
    ManagedAtomic(0)
  }
  private let totalNanos = ManagedAtomic<UInt64>(0)
  /// Calls of this method whose record is allocated: requested ahead, in flight, or (after a
  /// shutdown, a bug) never released. Checked by `RPCServer.shutdown` once every thread exited.
  let liveCalls = ManagedAtomic<Int>(0)

  public init(path: String) {
    self.path = path
  }

  @inline(__always)
  public func record(_ code: StatusCode, nanoseconds: UInt64) {
    codes[Int(code.rawValue)].wrappingIncrement(ordering: .relaxed)
    var bucket = 0
    let bounds = Self.boundsNanos
    while bucket < bounds.count && nanoseconds > bounds[bucket] { bucket += 1 }
    buckets[bucket].wrappingIncrement(ordering: .relaxed)
    totalNanos.wrappingIncrement(by: nanoseconds, ordering: .relaxed)
  }

  /// Calls finished with each status code (codes with none are left out).
  public var callsByCode: [(StatusCode, Int)] {
    codes.enumerated().compactMap { index, counter in
      let value = counter.load(ordering: .relaxed)
      guard value > 0, let code = StatusCode(rawValue: Int32(index)) else { return nil }
      return (code, value)
    }
  }

  /// Calls per latency bucket (not cumulative); the last entry is above the last bound.
  public var bucketCounts: [Int] { buckets.map { $0.load(ordering: .relaxed) } }

  public var totalSeconds: Double { Double(totalNanos.load(ordering: .relaxed)) / 1e9 }

  /// Calls finished with each status code, indexed by the code's raw value (0...16).
  public var callsByCodeValue: [Int] { codes.map { $0.load(ordering: .relaxed) } }
}
