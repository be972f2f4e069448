import Foundation
import Synchronization

/// The latest `capacity` events of the registry (versions loaded, failed, serving, unloaded,
/// labels moved), newest last, with the wall-clock time each happened: what the status page
/// shows. Appending takes a lock; no request path appends.
public final class EventLog: Sendable {
  public struct Event: Sendable {
    public var time: Date
    public var text: String
  }

  public let capacity: Int
  private let events = Mutex<[Event]>([])

  public init(capacity: Int) {
    self.capacity = max(1, capacity)
  }

  public func append(_ text: String) {
    let event = Event(time: Date(), text: text)
    events.withLock { events in
      events.append(event)
      if events.count > capacity { events.removeFirst(events.count - capacity) }
    }
  }

  /// Every kept event, oldest first.
  public var all: [Event] { events.withLock { $0 } }
}

/// One event for the server's log: its message, whether it is a warning, and its fields
/// (`event`, `model`, `version`, ...) for a log pipeline.
public struct ServerEvent: Sendable {
  public var message: String
  public var warning: Bool
  public var fields: [String: String]

  public init(_ message: String, warning: Bool = false, fields: [String: String] = [:]) {
    self.message = message
    self.warning = warning
    self.fields = fields
  }
}

/// Where the registry's and the services' events go (the CLI sends them to the log).
public final class EventHub: Sendable {
  private let handler = Mutex<@Sendable (ServerEvent) -> Void>({ _ in })

  public init() {}

  public func subscribe(_ handler: @escaping @Sendable (ServerEvent) -> Void) {
    self.handler.withLock { $0 = handler }
  }

  public func emit(_ event: ServerEvent) {
    let handler = self.handler.withLock { $0 }
    handler(event)
  }
}
