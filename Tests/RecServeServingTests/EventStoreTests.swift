import Foundation
import RecServeModels
import RecServeProto
import RecServeRPC
import Synchronization
import Testing

@testable import RecServeServing

/// A fresh folder, removed at the end.
private final class Folder {
  let path =
    FileManager.default.temporaryDirectory.path + "/recserve-events-tests-" + UUID().uuidString
  deinit { try? FileManager.default.removeItem(atPath: path) }
}

private func event(_ user: String, _ item: String, type: String = "click", at ms: Int64 = 1)
  -> StoredEvent
{
  StoredEvent(user: user, item: item, type: type, value: 1, timestampMs: ms)
}

private func store(_ folder: Folder, configure: (inout EventStore.Configuration) -> Void = { _ in })
  throws -> EventStore
{
  var configuration = EventStore.Configuration(directory: folder.path)
  configure(&configuration)
  return try EventStore(configuration: configuration)
}

@Suite struct EventLogTests {
  @Test func recordsRoundTripWithTheirSequences() throws {
    let folder = Folder()
    let s = try store(folder)
    let first = try s.appendAndWait([event("u", "a"), event("v", "b", type: "view", at: 7)])
    let second = try s.appendAndWait([event("u", "é漢字", at: 9)])
    #expect(first == 1...2 && second == 3...3)
    s.close()
    let all = try EventLogFormat.readAll(directory: folder.path)
    #expect(all.map(\.sequence) == [1, 2, 3])
    #expect(
      all.map(\.item) == ["a", "b", "é漢字"] && all[1].type == "view" && all[1].timestampMs == 7)
    // Reopened, the histories come back and numbering goes on.
    let again = try store(folder)
    #expect(again.histories.events(of: "u").map(\.item) == ["a", "é漢字"])
    #expect(try again.appendAndWait([event("w", "c")]) == 4...4)
    again.close()
  }

  @Test func aTornLastRecordIsCutOffAndTheLogGoesOn() throws {
    let folder = Folder()
    let s = try store(folder)
    _ = try s.appendAndWait([event("u", "a")])
    _ = try s.appendAndWait([event("u", "b"), event("u", "c")])
    s.close()
    let segment = try EventLogFormat.segments(in: folder.path)[0].path
    let whole = try Data(contentsOf: URL(fileURLWithPath: segment))
    // Every cut inside the second record loses exactly that batch, never half of it.
    let firstEnd = try EventLogFormat.scan(path: segment).batches.count == 2
    #expect(firstEnd)
    for cut in stride(from: whole.count - 1, to: 8, by: -7) {
      try whole.prefix(cut).write(to: URL(fileURLWithPath: segment))
      let reopened = try store(folder)
      let items = reopened.histories.events(of: "u").map(\.item)
      #expect(items == ["a"] || items == [], "cut at \(cut): \(items)")
      if !items.isEmpty {
        #expect(reopened.repaired?.contains("cut off") == true)
        // The next append lands after the last whole record.
        #expect(try reopened.appendAndWait([event("u", "d")]) == 2...2)
        #expect(reopened.histories.events(of: "u").map(\.item) == ["a", "d"])
      }
      reopened.close()
      try whole.write(to: URL(fileURLWithPath: segment))
    }
    // A flipped byte in the last record fails its checksum: cut off too.
    var flipped = whole
    flipped[flipped.count - 2] ^= 0x40
    try flipped.write(to: URL(fileURLWithPath: segment))
    let reopened = try store(folder)
    #expect(reopened.histories.events(of: "u").map(\.item) == ["a"])
    reopened.close()
  }

  @Test func damageBeforeTheLastSegmentIsAnErrorNamingTheFile() throws {
    let folder = Folder()
    let s = try store(folder) { $0.segmentBytes = 4096 }
    for k in 0..<200 {
      _ = try s.appendAndWait([event("u\(k)", String(repeating: "x", count: 40))])
    }
    s.close()
    let segments = try EventLogFormat.segments(in: folder.path)
    #expect(segments.count >= 2)
    var bytes = try Data(contentsOf: URL(fileURLWithPath: segments[0].path))
    bytes[20] ^= 0xFF
    try bytes.write(to: URL(fileURLWithPath: segments[0].path))
    // Training reads every segment: the damage is named.
    let reading = #expect(throws: DataError.self) {
      try EventLogFormat.readAll(directory: folder.path)
    }
    #expect("\(reading!)".contains(segments[0].path) && "\(reading!)".contains("checksum"))
    // Starting replays the snapshot and the newest segment only: the damage is not in its way.
    try store(folder).close()
    // Without the snapshot, starting replays every segment and names the damage.
    for snapshot in try EventSnapshot.snapshots(in: folder.path) { unlink(snapshot.path) }
    let error = #expect(throws: DataError.self) { try store(folder) }
    #expect("\(error!)".contains(segments[0].path) && "\(error!)".contains("checksum"))
  }

  @Test func snapshotsLetRetentionRemoveSegmentsWithoutLosingHistories() throws {
    let folder = Folder()
    let configure: (inout EventStore.Configuration) -> Void = {
      $0.segmentBytes = 4096
      $0.historyLength = 5
      $0.retention = EventLogFiles.Retention(maxBytes: 3 * 4096)
    }
    let s = try store(folder, configure: configure)
    for k in 0..<600 { _ = try s.appendAndWait([event("u\(k % 30)", "item-\(k)")]) }
    let before = (0..<30).map { s.histories.events(of: "u\($0)") }
    s.close()
    let segments = try EventLogFormat.segments(in: folder.path)
    #expect(segments.count <= 5 && segments[0].first > 1, "\(segments.map(\.first))")
    #expect(try EventSnapshot.snapshots(in: folder.path).count == 1)
    // Reopened: the same histories (from the snapshot and the segments after it), numbering on.
    let again = try store(folder, configure: configure)
    #expect((0..<30).map { again.histories.events(of: "u\($0)") } == before)
    #expect(try again.appendAndWait([event("u0", "next")]) == 601...601)
    again.close()
    // Training sees every user's latest events: the snapshot's older ones, then the segments.
    let all = try EventLogFormat.readAll(directory: folder.path)
    #expect(all.map(\.sequence) == all.map(\.sequence).sorted())
    #expect(Set(all.map(\.sequence)).count == all.count && all.count < 601)
    for user in before { #expect(user.allSatisfy { e in all.contains(e) }) }
    // A damaged snapshot is named, not skipped over.
    let snapshot = try EventSnapshot.snapshots(in: folder.path)[0].path
    var bytes = try Data(contentsOf: URL(fileURLWithPath: snapshot))
    bytes[30] ^= 0xFF
    try bytes.write(to: URL(fileURLWithPath: snapshot))
    let error = #expect(throws: DataError.self) { try store(folder, configure: configure) }
    #expect("\(error!)".contains(snapshot) && "\(error!)".contains("damaged"))
  }

  @Test func appendsGoOnWhileASnapshotIsWritten() throws {
    let folder = Folder()
    let files = try EventLogFiles(directory: folder.path, segmentBytes: 4096) { _ in }
    var first = event("u", "a")
    first.sequence = 1
    let kept = first
    files.snapshotSource = { { [[kept]] } }
    let gate = DispatchSemaphore(value: 0)
    files.snapshotWriter = { histories, next, directory in
      gate.wait()  // the first snapshot is held until the appends below are done
      _ = try EventSnapshot.write(histories, next: next, directory: directory)
    }
    var written = 0
    while files.segmentCount < 4 {
      var record: [UInt8] = []
      var e = event("u\(written)", String(repeating: "x", count: 100))
      e.sequence = files.nextSequence
      EventLogFormat.appendRecord([e], first: files.nextSequence, to: &record)
      try files.write(record, events: 1)
      written += 1
    }
    // Three roll-overs went by while the first roll-over's snapshot was held back.
    #expect(try EventSnapshot.snapshots(in: folder.path).isEmpty)
    #expect(files.lastRollOver?.contains("still being written") == true)
    #expect(files.snapshotNext == 1)
    gate.signal()
    files.finishSnapshot()
    let snapshots = try EventSnapshot.snapshots(in: folder.path)
    #expect(snapshots.count == 1 && files.snapshotNext == snapshots[0].next)
    #expect(files.snapshotNext > 1 && files.snapshotNext < files.nextSequence)
    #expect(try EventSnapshot.read(path: snapshots[0].path).users == [[kept]])
  }

  @Test func concurrentAppendsShareSyncsAndKeepEachBatchWhole() throws {
    let folder = Folder()
    let s = try store(folder)
    let ranges = Mutex<[ClosedRange<Int64>]>([])
    DispatchQueue.concurrentPerform(iterations: 8) { t in
      for k in 0..<25 {
        let batch = (0..<5).map { event("t\(t)", "i\(k)-\($0)") }
        let range = try! s.appendAndWait(batch)
        ranges.withLock { $0.append(range) }
      }
    }
    let all = ranges.withLock { $0 }.sorted { $0.lowerBound < $1.lowerBound }
    #expect(all.count == 200 && all.allSatisfy { $0.count == 5 })
    #expect(zip(all, all.dropFirst()).allSatisfy { $0.upperBound + 1 == $1.lowerBound })
    #expect(s.stats.syncs.load(ordering: .relaxed) <= 200)
    #expect(s.histories.events(of: "t3").count == 125)
    s.close()
    #expect(try EventLogFormat.readAll(directory: folder.path).count == 1000)
  }

  @Test func spillFileWritesManyHistoriesInOneGoAndReadsEachBack() throws {
    let folder = Folder()
    try FileManager.default.createDirectory(atPath: folder.path, withIntermediateDirectories: true)
    let file = try SpillFile(directory: folder.path)
    let single = try file.write([event("solo", "first")])
    let histories = (0..<50).map { k in
      (0...(k % 7)).map { j in event("user\(k)", "item\(k)-\(j)", at: Int64(1000 + j)) }
    }
    let ranges = try file.write(many: histories)
    #expect(ranges.count == histories.count && ranges[0].lowerBound == single.upperBound)
    #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
    #expect(file.bytes == ranges.last!.upperBound)
    for (range, events) in zip(ranges, histories).reversed() {
      #expect(try file.read(range) == events)
    }
    #expect(try file.read(single).map(\.item) == ["first"])
    #expect(try file.write(many: []).isEmpty && file.bytes == ranges.last!.upperBound)
  }

  @Test func historiesKeepTheLatestEventsWithinTheirBudget() throws {
    let histories = UserHistories(length: 3, memoryBytes: 1 << 20)
    histories.add(
      (1...5).map { k in
        var e = event("u", "i\(k)")
        e.sequence = Int64(k)
        return e
      })
    #expect(histories.items(of: "u") == ["i3", "i4", "i5"])
    #expect(histories.events(of: "u", limit: 2).map(\.item) == ["i4", "i5"])
    #expect(histories.items(of: "nobody") == nil)
    // A small budget keeps the most recently active users in memory, the others on disk.
    let folder = Folder()
    try FileManager.default.createDirectory(atPath: folder.path, withIntermediateDirectories: true)
    let small = UserHistories(
      length: 10, memoryBytes: 20_000, spillFile: try SpillFile(directory: folder.path))
    for k in 0..<200 {
      var e = event("user\(k)", "item\(k)")
      e.sequence = Int64(k + 1)
      small.add([e])
    }
    #expect(small.usedBytes <= 20_000 && small.evicted > 0 && small.spilledCount == small.evicted)
    #expect(small.items(of: "user199") == ["item199"] && small.items(of: "user0") == ["item0"])
    // The next event of an evicted user brings the history back whole.
    var again = event("user0", "more")
    again.sequence = 201
    small.add([again])
    #expect(small.events(of: "user0").map(\.item) == ["item0", "more"])
    #expect(small.allUsers().count == 200)
    // Without a spill file, evicted histories are gone from memory only.
    let dropping = UserHistories(length: 10, memoryBytes: 20_000)
    for k in 0..<200 {
      var e = event("user\(k)", "item")
      e.sequence = Int64(k + 1)
      dropping.add([e])
    }
    #expect(dropping.items(of: "user0") == nil)
  }

  @Test func evictedUsersSurviveSnapshotsAndRestarts() throws {
    let folder = Folder()
    let configure: (inout EventStore.Configuration) -> Void = {
      $0.segmentBytes = 8192
      $0.memoryBytes = 30_000
      $0.retention = EventLogFiles.Retention(maxBytes: 2 * 8192)
    }
    let s = try store(folder, configure: configure)
    for k in 0..<900 { _ = try s.appendAndWait([event("u\(k % 150)", "item-\(k)")]) }
    #expect(s.histories.spilledCount > 0)
    let before = (0..<150).map { s.histories.events(of: "u\($0)") }
    // A second process on the same log is refused.
    let second = #expect(throws: DataError.self) { try store(folder) }
    #expect("\(second!)".contains("another process"))
    s.close()
    let reopened = try store(folder, configure: configure)
    #expect((0..<150).map { reopened.histories.events(of: "u\($0)") } == before)
    reopened.close()
  }
}

@Suite struct EventsServiceTests {
  @Test func badEventsAreRefusedNamingTheFieldAndNothingIsRecorded() throws {
    let folder = Folder()
    let s = try store(folder)
    defer { s.close() }
    let service = EventsService(store: s)
    func request(_ events: [(String, String, String, Int64)]) -> Recserve_V1_AppendEventsRequest {
      var r = Recserve_V1_AppendEventsRequest()
      r.events = events.map { user, item, type, ms in
        var e = Recserve_V1_Event()
        e.userID = user
        e.itemID = item
        e.type = type
        e.timestampMs = ms
        return e
      }
      return r
    }
    let good = ("u", "i", "click", Int64(0))
    let cases: [([(String, String, String, Int64)], String)] = [
      ([], "events is empty"),
      ([good, ("u", "i", "teleport", 0)], "events[1].type 'teleport'"),
      ([good, ("u\0x", "i", "click", 0)], "events[1].user_id"),
      ([("u", "", "click", 0)], "events[0].item_id is empty"),
      ([good, ("u", "i", "click", 5)], "events[1].timestamp_ms 5"),
      ([("u", "i", "click", 99_999_999_999_999)], "events[0].timestamp_ms"),
      ([("u", String(repeating: "x", count: 2000), "click", 0)], "events[0].item_id is 2000 bytes"),
      (Array(repeating: good, count: EventStore.maxBatch + 1), "at most 10000"),
    ]
    for (events, words) in cases {
      let error = rpcError { _ = try service.checked(request(events), store: s) }
      #expect(error?.code == .invalidArgument && error?.message.contains(words) == true, "\(words)")
    }
    #expect(s.histories.items(of: "u") == nil)
    let absent = rpcError { _ = try EventsService(store: nil).requireStore() }
    #expect(absent?.code == .failedPrecondition && absent?.message.contains("--events-dir") == true)
  }
}
