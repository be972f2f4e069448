import Foundation

extension Interactions {
  /// The interactions of the event log in `directory` (each event a row: its value as the
  /// rating, its time in seconds), after the rows of `joining` when given (a ratings file), so
  /// that a retrain needs no export step. `types` keeps only those event types (nil: all).
  /// Throws a `DataError` for a damaged log or when nothing is left.
  public static func fromEvents(
    directory: String, joining base: Interactions? = nil, types: Set<String>? = nil
  ) throws -> Interactions {
    let events = try EventLogFormat.readAll(directory: directory)
    var rows: [InteractionRow] = []
    if let base {
      rows.reserveCapacity(base.count + events.count)
      for r in 0..<base.count {
        rows.append(
          InteractionRow(
            user: base.userIds[Int(base.users[r])], item: base.itemIds[Int(base.items[r])],
            rating: base.ratings[r], timestamp: base.timestamps[r]))
      }
    }
    var kept = 0
    for event in events where types?.contains(event.type) ?? true {
      rows.append(
        InteractionRow(
          user: event.user, item: event.item, rating: event.value,
          timestamp: event.timestampMs / 1000))
      kept += 1
    }
    if rows.isEmpty {
      let which = types.map { " of type \($0.sorted().joined(separator: ", "))" } ?? ""
      throw DataError(
        file: directory, message: "the event log holds no events\(which) (\(events.count) in all)")
    }
    let source = base.map { "\($0.source) + events in \(directory)" } ?? "events in \(directory)"
    return try Interactions(rows: rows, source: source)
  }
}
