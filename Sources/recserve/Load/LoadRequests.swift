import Foundation
import RecServeModels
import RecServeProto
import SwiftProtobuf

/// The requests `recserve load` sends: read from a file of JSON lines, or made up from lists of
/// user and item ids, drawn uniformly or with Zipf-like popularity. Encoded once, before the
/// run, so that the send loop only picks one.
struct LoadRequests {
  enum RPC: String, CaseIterable {
    case predict, rank, similar, append

    var path: String {
      switch self {
      case .predict: return "/recserve.v1.Recommender/Predict"
      case .rank: return "/recserve.v1.Recommender/Rank"
      case .similar: return "/recserve.v1.Recommender/SimilarItems"
      case .append: return "/recserve.v1.Recommender/AppendEvents"
      }
    }

    var messageName: String {
      switch self {
      case .predict: return Recserve_V1_PredictRequest.protoMessageName
      case .rank: return Recserve_V1_RankRequest.protoMessageName
      case .similar: return Recserve_V1_SimilarItemsRequest.protoMessageName
      case .append: return Recserve_V1_AppendEventsRequest.protoMessageName
      }
    }
  }

  /// What a generated request holds beyond its ids.
  struct Shape {
    var model: String
    var pairs = 1
    var k: Int32 = 10
    var recent = 0
    var search: Recserve_V1_Search? = nil
    var nprobe: Int32 = 0
    /// AppendEvents: events per call, their type, and their timestamp.
    var batch = 1
    var eventType = "click"
    var timestampMs: Int64 = 0
  }

  /// Largest requests file read (a file is held in memory, every line encoded).
  static let maxFileBytes = 256 << 20

  /// Each line of `path` (blank lines skipped) as a request of `rpc`'s type in proto3 JSON; a
  /// request naming no model gets `model`. Errors name the file and line.
  static func fromFile(_ path: String, rpc: RPC, model: String) throws -> [[UInt8]] {
    let data = try CLIFile.read(path, option: "--requests-file", maxBytes: maxFileBytes)
    var requests: [[UInt8]] = []
    var spec = Recserve_V1_ModelSpec()
    spec.name = model
    for (index, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
      .enumerated()
    {
      let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespaces)
      if text.isEmpty { continue }
      let place = "--requests-file \(path) line \(index + 1)"
      do {
        switch rpc {
        case .predict:
          var request = try Recserve_V1_PredictRequest(jsonString: text)
          if !request.hasModel { request.model = spec }
          requests.append(try request.serializedBytes())
        case .rank:
          var request = try Recserve_V1_RankRequest(jsonString: text)
          if !request.hasModel { request.model = spec }
          requests.append(try request.serializedBytes())
        case .similar:
          var request = try Recserve_V1_SimilarItemsRequest(jsonString: text)
          if !request.hasModel { request.model = spec }
          requests.append(try request.serializedBytes())
        case .append:
          // Events name no model: the line is sent as it is.
          requests.append(try Recserve_V1_AppendEventsRequest(jsonString: text).serializedBytes())
        }
      } catch {
        throw CLIError("\(place): not a \(rpc.messageName) in JSON (\(error))")
      }
    }
    if requests.isEmpty { throw CLIError("--requests-file \(path) holds no requests") }
    return requests
  }

  /// `count` requests of `rpc` naming ids drawn from `users` and `items` (earlier ids more
  /// often when `zipf` > 0: the id at rank r with weight 1 / r^zipf).
  static func generated(
    rpc: RPC, shape: Shape, users: [String], items: [String], zipf: Double, count: Int,
    seed: UInt64 = 12345
  ) throws -> [[UInt8]] {
    var generator = SplitMix64(seed: seed)
    let user = IdSampler(ids: users, exponent: zipf)
    let item = IdSampler(ids: items, exponent: zipf)
    var spec = Recserve_V1_ModelSpec()
    spec.name = shape.model
    return try (0..<count).map { _ in
      switch rpc {
      case .predict:
        var request = Recserve_V1_PredictRequest()
        request.model = spec
        request.pairs = (0..<shape.pairs).map { _ in
          var pair = Recserve_V1_UserItem()
          pair.userID = user.draw(&generator)
          pair.itemID = item.draw(&generator)
          return pair
        }
        return try request.serializedBytes()
      case .rank:
        var request = Recserve_V1_RankRequest()
        request.model = spec
        if shape.recent > 0 {
          request.recentItems = (0..<shape.recent).map { _ in item.draw(&generator) }
        } else {
          request.userID = user.draw(&generator)
        }
        request.k = shape.k
        if let search = shape.search { request.search = search }
        request.nprobe = shape.nprobe
        return try request.serializedBytes()
      case .similar:
        var request = Recserve_V1_SimilarItemsRequest()
        request.model = spec
        request.itemID = item.draw(&generator)
        request.k = shape.k
        return try request.serializedBytes()
      case .append:
        var request = Recserve_V1_AppendEventsRequest()
        request.events = (0..<shape.batch).map { _ in
          var event = Recserve_V1_Event()
          event.userID = user.draw(&generator)
          event.itemID = item.draw(&generator)
          event.type = shape.eventType
          event.value = 1
          event.timestampMs = shape.timestampMs
          return event
        }
        return try request.serializedBytes()
      }
    }
  }

  /// Ids from `file` (one a line), or `prefix`1...`prefix``count` without one.
  static func ids(file: String?, prefix: String, count: Int, option: String) throws -> [String] {
    guard let file else { return (1...count).map { "\(prefix)\($0)" } }
    let data = try CLIFile.read(file, option: option)
    let lines = data.split(separator: UInt8(ascii: "\n")).map {
      String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespaces)
    }.filter { !$0.isEmpty }
    if lines.isEmpty { throw CLIError("\(option) \(file) holds no ids") }
    return lines
  }
}

/// Draws ids by rank: uniformly, or with probability proportional to 1 / rank^exponent (rank 1
/// the first id), by binary search in the cumulative weights.
struct IdSampler {
  let ids: [String]
  let cumulative: [Double]

  init(ids: [String], exponent: Double) {
    self.ids = ids
    if exponent > 0 {
      var total = 0.0
      cumulative = ids.indices.map { index in
        total += 1 / pow(Double(index + 1), exponent)
        return total
      }
    } else {
      cumulative = []
    }
  }

  func index(_ generator: inout SplitMix64) -> Int {
    guard let total = cumulative.last else { return Int(generator.next() % UInt64(ids.count)) }
    let target = Double(generator.next() >> 11) / Double(1 << 53) * total
    var low = 0
    var high = cumulative.count - 1
    while low < high {
      let middle = (low + high) / 2
      if cumulative[middle] <= target { low = middle + 1 } else { high = middle }
    }
    return low
  }

  func draw(_ generator: inout SplitMix64) -> String { ids[index(&generator)] }
}
