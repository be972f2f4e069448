import RecServeModels

/// Fuzz target for the ratings loader: the input's first byte picks the load options (delimiter,
/// header, columns, skipping bad lines), the rest is the file's bytes.
///
/// What must hold for every input: the parser either returns rows whose indices and ids agree,
/// or throws a `DataError` that names the file (and a line, when one is at fault); then the
/// first steps of every training (implicit positives, both splits) accept what it returned.
public enum FuzzRatings {
  static let source = "fuzz-ratings.csv"

  public static func run(_ input: UnsafeRawBufferPointer) {
    guard let first = input.first else { return }
    let body = UnsafeRawBufferPointer(rebasing: input.dropFirst())
    let options = Self.options(first)
    let data: Interactions
    do {
      data = try RatingsLoader.parse(bytes: body, source: source, options: options)
    } catch let error as DataError {
      precondition(error.file == source, "a DataError that names another file: \(error)")
      precondition(!error.message.isEmpty, "a DataError without a message")
      return
    } catch {
      preconditionFailure("the ratings loader threw \(type(of: error)), not a DataError: \(error)")
    }
    check(data)
    _ = data.implicitPositives(threshold: nil)
    _ = data.implicitPositives(threshold: 3)
    _ = data.randomSplit(holdout: 0.2, seed: 1)
    _ = try? ImplicitSplit.leaveLastOut.apply(to: data, seed: 1)
  }

  static func options(_ byte: UInt8) -> LoadOptions {
    var options = LoadOptions()
    options.skipBadLines = byte & 1 != 0
    options.delimiter = [nil, ",", "::", "\t"][Int(byte >> 1) & 3]
    options.hasHeader = [nil, true, false, nil][Int(byte >> 3) & 3]
    switch byte >> 5 {
    case 1: options.ratingColumn = .index(3)
    case 2: options.timestampColumn = .name("time")
    case 3:
      options.userColumn = .index(1)
      options.itemColumn = .index(0)
    case 4:
      options.userColumn = .name("user")
      options.itemColumn = .name("item")
    case 5: options.ratingColumn = .index(7)
    default: break
    }
    return options
  }

  /// The columns agree with each other and with the id tables.
  static func check(_ data: Interactions) {
    let n = data.count
    precondition(data.items.count == n && data.ratings.count == n && data.timestamps.count == n)
    precondition(data.userIds.count == data.userLookup.count, "duplicate user ids")
    precondition(data.itemIds.count == data.itemLookup.count, "duplicate item ids")
    for row in 0..<n {
      precondition(data.users[row] >= 0 && Int(data.users[row]) < data.userCount)
      precondition(data.items[row] >= 0 && Int(data.items[row]) < data.itemCount)
      precondition(data.ratings[row].isFinite, "a non-finite rating was accepted")
    }
    for (index, id) in data.userIds.enumerated() {
      precondition(data.userLookup[id] == Int32(index))
    }
    for (index, id) in data.itemIds.enumerated() {
      precondition(data.itemLookup[id] == Int32(index))
    }
  }
}
