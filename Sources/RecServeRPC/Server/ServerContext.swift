import CGRPCShim
import Foundation
import Synchronization

/// What a handler may know about the call it serves: method, metadata, deadline, cancellation.
///
/// For unary handlers the context reads metadata straight from the call (no copies) and is valid
/// only while the handler runs; streaming handlers get a context whose metadata were copied.
public struct ServerContext: @unchecked Sendable {
  /// The method path, e.g. `/recserve.v1.Recommender/Rank`.
  public let method: String
  /// Seconds left until the client's deadline when the call arrived (infinity: none).
  public let deadlineRemaining: Double
  /// When the call arrived (monotonic seconds, `DispatchTime.now()` scale).
  public let arrival: UInt64
  let call: ServerCall
  let copiedMetadata: [(String, String)]?

  /// The value of the first metadata entry named `key` (lower case, as gRPC sends it).
  public func metadata(_ key: String) -> String? {
    if let copied = copiedMetadata {
      return copied.first(where: { $0.0 == key })?.1
    }
    return call.metadataValue(key)
  }

  /// All request metadata.
  public var allMetadata: [(String, String)] {
    copiedMetadata ?? call.allMetadata()
  }

  /// True once the client cancelled, the deadline passed or the connection broke.
  public var isCancelled: Bool { call.cancelledFlag.load(ordering: .relaxed) }

  /// Throws DEADLINE_EXCEEDED once the deadline passed and CANCELLED once the client went
  /// away: long work calls it between blocks, so it stops when nobody waits for it any more.
  public func checkDeadline() throws {
    if isPastDeadline {
      throw RPCError(.deadlineExceeded, "the deadline passed before the work was done")
    }
    if isCancelled { throw RPCError(.cancelled, "the client went away") }
  }

  /// Counts this call's outcome (status code and latency, like the method's own counters) in
  /// `stats` too, e.g. the model version that answers it. Call it from the handler, before the
  /// call finishes; a later call replaces the earlier one.
  public func count(in stats: MethodStats) {
    call.alsoCountedIn = stats
  }

  /// True when the deadline passed.
  public var isPastDeadline: Bool {
    guard deadlineRemaining.isFinite else { return false }
    let elapsed = Double(DispatchTime.now().uptimeNanoseconds - arrival) / 1e9
    return elapsed >= deadlineRemaining
  }
}
