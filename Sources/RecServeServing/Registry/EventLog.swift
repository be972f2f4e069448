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
