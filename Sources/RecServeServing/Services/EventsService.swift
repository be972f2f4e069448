import Foundation
import RecServeModels
import RecServeProto
import RecServeRPC
import Synchronization

/// AppendEvents, AppendEventStream and GetUserEvents: checks events and hands them to the
/// server's `EventStore` (nil: the server keeps no events, and these answer
/// FAILED_PRECONDITION).
public final class EventsService: Sendable {
  public let store: EventStore?
  /// The earliest timestamp accepted (1990-01-01) and how far ahead of the clock one may be.
  static let earliestMs: Int64 = 631_152_000_000
  static let aheadMs: Int64 = 86_400_000

  public init(store: EventStore?) {
    self.store = store
  }

  func requireStore() throws -> EventStore {
    guard let store else {
      throw RPCError.failedPrecondition(
        "this server keeps no events: start it with --events-dir DIR to record them")
    }
    return store
  }

  /// The request's events, checked: all of them or an INVALID_ARGUMENT naming the first bad
  /// one as `<prefix>events[i].field`.
  func checked(_ request: Recserve_V1_AppendEventsRequest, store: EventStore, prefix: String = "")
    throws -> [StoredEvent]
  {
    let events = request.events
    if events.isEmpty {
      throw RPCError.invalidArgument("\(prefix)events is empty: give at least one event")
    }
    if events.count > EventStore.maxBatch {
      throw RPCError.invalidArgument(
        "\(prefix)events has \(events.count) entries; at most \(EventStore.maxBatch) per call (send the rest in further calls, or use AppendEventStream)"
      )
    }
    let nowMs = Int64(Date().timeIntervalSince1970 * 1000)
    let types = store.configuration.types
    var out: [StoredEvent] = []
    out.reserveCapacity(events.count)
    for (i, e) in events.enumerated() {
      let at = "\(prefix)events[\(i)]"
      try Self.checkId(e.userID, field: "\(at).user_id")
      try Self.checkId(e.itemID, field: "\(at).item_id")
      guard types.contains(e.type) else {
        throw RPCError.invalidArgument(
          "\(at).type '\(Self.quoted(e.type))' is not an event type of this server (\(types.sorted().joined(separator: ", ")); --event-types)"
        )
      }
      guard e.value.isFinite else {
        throw RPCError.invalidArgument("\(at).value \(e.value) is not a finite number")
      }
      var timestamp = e.timestampMs
      if timestamp == 0 {
        timestamp = nowMs
      } else if timestamp < Self.earliestMs || timestamp > nowMs + Self.aheadMs {
        throw RPCError.invalidArgument(
          "\(at).timestamp_ms \(timestamp) is not a plausible time (milliseconds since 1970; from 1990 to a day ahead of the server's clock, \(nowMs) now; 0 means now)"
        )
      }
      let value = e.value == 0 && e.type != "rating" ? 1 : e.value
      out.append(
        StoredEvent(
          user: e.userID, item: e.itemID, type: e.type, value: value, timestampMs: timestamp))
    }
    return out
  }

  static func checkId(_ id: String, field: String) throws {
    if id.isEmpty { throw RPCError.invalidArgument("\(field) is empty") }
    if id.utf8.count > EventStore.maxIdBytes {
      throw RPCError.invalidArgument(
        "\(field) is \(id.utf8.count) bytes long; at most \(EventStore.maxIdBytes)")
    }
    if id.utf8.contains(where: { $0 < 32 || $0 == 127 }) {
      throw RPCError.invalidArgument(
        "\(field) '\(quoted(id))' contains a control character (NUL, line break, ...)")
    }
  }

  /// At most 60 characters of `text`, control characters escaped.
  static func quoted(_ text: String) -> String {
    var out = ""
    for scalar in text.unicodeScalars.prefix(60) {
      out +=
        scalar.value < 32 || scalar.value == 127 ? scalar.escaped(asASCII: true) : String(scalar)
    }
    return text.unicodeScalars.count > 60 ? out + "..." : out
  }

  static func response(_ range: ClosedRange<Int64>) -> Recserve_V1_AppendEventsResponse {
    var r = Recserve_V1_AppendEventsResponse()
    r.appended = Int64(range.count)
    r.firstSequence = range.lowerBound
    r.lastSequence = range.upperBound
    return r
  }

  func userEvents(_ request: Recserve_V1_GetUserEventsRequest) throws
    -> Recserve_V1_GetUserEventsResponse
  {
    let store = try requireStore()
    try Self.checkId(request.userID, field: "user_id")
    if request.limit < 0 {
      throw RPCError.invalidArgument("limit must be >= 0 (0: all kept), got \(request.limit)")
    }
    var response = Recserve_V1_GetUserEventsResponse()
    response.events = store.histories.events(of: request.userID, limit: Int(request.limit)).map {
      var e = Recserve_V1_Event()
      e.userID = $0.user
      e.itemID = $0.item
      e.type = $0.type
      e.value = $0.value
      e.timestampMs = $0.timestampMs
      return e
    }
    return response
  }

  /// The receiver of one AppendEventStream call: records each message before reading the next.
  final class StreamReceiver: ClientStreamReceiver {
    let service: EventsService
    private let totals = Totals()

    final class Totals: Sendable {
      let lock = Mutex<(messages: Int, first: Int64, last: Int64, count: Int64)>((0, 0, 0, 0))
    }

    init(service: EventsService) {
      self.service = service
    }

    func receive(_ request: [UInt8], proceed: @escaping @Sendable ((any Error)?) -> Void) {
      let m = totals.lock.withLock { t -> Int in
        defer { t.messages += 1 }
        return t.messages
      }
      let events: [StoredEvent]
      let store: EventStore
      do {
        let message = try ServiceRegistrar.decode(Recserve_V1_AppendEventsRequest.self, request)
        store = try service.requireStore()
        events = try service.checked(message, store: store, prefix: "messages[\(m)].")
      } catch {
        return proceed(Self.ended(error, after: m))
      }
      store.append(events) { [totals] result in
        switch result {
        case .success(let range):
          totals.lock.withLock { t in
            if t.first == 0 { t.first = range.lowerBound }
            t.last = range.upperBound
            t.count += Int64(range.count)
          }
          proceed(nil)
        case .failure(let error):
          proceed(Self.ended(error, after: m))
        }
      }
    }

    /// `error`, its message saying how many messages were recorded before it.
    static func ended(_ error: any Error, after messages: Int) -> any Error {
      guard let reporting = error as? any StatusReporting else { return error }
      return RPCError(
        reporting.statusCode,
        "\(reporting.statusMessage) (\(messages == 1 ? "the message before it was" : "the \(messages) messages before it were") recorded)"
      )
    }

    func finish() throws -> [UInt8] {
      let t = totals.lock.withLock { $0 }
      var r = Recserve_V1_AppendEventsResponse()
      r.appended = t.count
      r.firstSequence = t.first
      r.lastSequence = t.last
      return try r.serializedBytes()
    }
  }

  /// Registers the three methods on the Recommender service's registrar.
  func register(on registrar: ServiceRegistrar) {
    registrar.register(
      "AppendEvents", Recserve_V1_AppendEventsRequest.self, Recserve_V1_AppendEventsResponse.self,
      .unaryDeferrable { [self] _, bytes in
        let request = try ServiceRegistrar.decode(Recserve_V1_AppendEventsRequest.self, bytes)
        let store = try requireStore()
        let events = try checked(request, store: store)
        return .handedOff { responder in
          store.append(events) { result in
            do {
              responder.succeed(try Self.response(try result.get()).serializedBytes())
            } catch {
              responder.fail(error)
            }
          }
        }
      })
    registrar.register(
      "AppendEventStream", Recserve_V1_AppendEventsRequest.self,
      Recserve_V1_AppendEventsResponse.self, clientStreaming: true,
      .clientStreaming { [self] _ in StreamReceiver(service: self) })
    registrar.unary("GetUserEvents") { [self] (request: Recserve_V1_GetUserEventsRequest, _) in
      try userEvents(request)
    }
  }
}
