import Foundation
import RecServeModels
import RecServeRPC
import Synchronization
import Testing

@testable import RecServeServing

/// The lines a registry logs.
final class LogLines: Sendable {
  private let lines = Mutex<[String]>([])
  func append(_ line: String) { lines.withLock { $0.append(line) } }
  var all: [String] { lines.withLock { $0 } }
  func count(_ parts: String...) -> Int {
    all.filter { line in parts.allSatisfy { line.contains($0) } }.count
  }
}

/// Moves `path` aside and puts a symlink loop in its place (stat, open, opendir: ELOOP);
/// returns a function that puts it back.
func loopInPlace(of path: String) throws -> () throws -> Void {
  let aside =
    (path as NSString).deletingLastPathComponent + "/.aside-"
    + (path as NSString).lastPathComponent
  try FileManager.default.moveItem(atPath: path, toPath: aside)
  guard symlink((path as NSString).lastPathComponent, path) == 0 else {
    throw RPCError(.internal, "symlink failed")
  }
  return {
    unlink(path)
    try FileManager.default.moveItem(atPath: aside, toPath: path)
  }
}

let loopText = String(cString: strerror(ELOOP))

@Suite struct LabelStoreTests {
  @Test func missingUnreadableAndMalformedAreTold() throws {
    let folder = try ModelFolder()
    let model = folder.path + "/m"
    let path = LabelStore.path(modelDirectory: model)
    #expect(try LabelStore.load(modelDirectory: model) == ModelLabels())
    #expect(try LabelStore.load(modelDirectory: folder.path + "/absent") == ModelLabels())

    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    #expect(
      throws: LabelReadError.unreadable(FileError(path: path, code: EISDIR, operation: "read"))
    ) {
      try LabelStore.load(modelDirectory: model)
    }
    try FileManager.default.removeItem(atPath: path)
    #expect(symlink("labels.json", path) == 0)
    do {
      _ = try LabelStore.load(modelDirectory: model)
      Issue.record("a symlink loop read as labels")
    } catch {
      #expect("\(error)" == "cannot read \(path): \(loopText)")
    }
    unlink(path)

    for (text, why) in [
      ("{\"labels\": {\"stable\": 1", "not valid JSON"), ("[1]", "not a JSON object"),
      ("{\"labels\": {\"stable\": \"1\"}}", "label 'stable' is not a positive version number"),
      ("{\"labels\": {\"stable\": 1.5}}", "label 'stable' is not a positive version number"),
      ("{\"labels\": []}", "'labels' is not an object"),
    ] {
      try text.write(toFile: path, atomically: false, encoding: .utf8)
      #expect(throws: LabelReadError.malformed(path: path, reason: why)) {
        try LabelStore.load(modelDirectory: model)
      }
    }
    try "{\"labels\": {\"stable\": 1, \"canary\": 2}, \"canary_fraction\": 0.25}".write(
      toFile: path, atomically: false, encoding: .utf8)
    #expect(
      try LabelStore.load(modelDirectory: model)
        == ModelLabels(labels: ["stable": 1, "canary": 2], canaryFraction: 0.25))
  }

  /// Writers that each open the lock file themselves (as separate servers on one folder do)
  /// never lose each other's changes: every one of 4 x 50 concurrent updates is in the file.
  @Test func concurrentUpdatesLoseNothing() throws {
    let folder = try ModelFolder()
    let model = folder.path + "/m"
    DispatchQueue.concurrentPerform(iterations: 4) { writer in
      for n in 0..<50 {
        _ = try? LabelStore.update(modelDirectory: model) { labels in
          labels.labels["w\(writer)-\(n)"] = Int64(n + 1)
        }
      }
    }
    let labels = try LabelStore.load(modelDirectory: model)
    #expect(labels.labels.count == 200)
    #expect(labels.labels["w3-49"] == 50)
  }

  /// A change that throws writes nothing; a lock held by another writer past the wait is told.
  @Test func aFailedChangeOrABusyLockWritesNothing() throws {
    let folder = try ModelFolder()
    let model = folder.path + "/m"
    _ = try LabelStore.update(modelDirectory: model) { $0.labels["stable"] = 1 }
    struct Refused: Error {}
    #expect(throws: Refused.self) {
      try LabelStore.update(modelDirectory: model) { labels in
        labels.labels["stable"] = 2
        throw Refused()
      }
    }
    let holder = open(model + "/" + LabelStore.lockFileName, O_RDWR)
    #expect(flock(holder, LOCK_EX) == 0)
    do {
      _ = try LabelStore.update(modelDirectory: model, waitSeconds: 0.05) { $0.labels["x"] = 1 }
      Issue.record("an update went ahead while another writer held the lock")
    } catch {
      #expect("\(error)".contains("another writer has held"))
    }
    close(holder)
    #expect(try LabelStore.load(modelDirectory: model) == ModelLabels(labels: ["stable": 1]))
  }
}

@Suite struct RegistryFaultTests {
  @Test func anUnreadableModelFolderKeepsItsStateAndIsLoggedOnce() throws {
    let folder = try ModelFolder()
    let registry = ModelRegistry(directory: folder.path)
    let log = LogLines()
    registry.hub.subscribe { log.append($0.message) }
    registry.loadAll()
    let before = try #require(registry.snapshot.models["m"]?.serving)

    let restore = try loopInPlace(of: folder.path + "/m")
    for _ in 0..<3 { registry.loadAll() }
    #expect(registry.snapshot.models["m"]?.serving === before)
    #expect(try registry.resolve(name: "m", version: nil, label: nil) === before)
    #expect(log.count("cannot read \(folder.path)/m: \(loopText)") == 1)
    // An admin call that needs the folder says why it cannot go on.
    let refused = rpcError {
      _ = try registry.setLabel(name: "m", label: "stable", version: 1, canaryFraction: nil)
    }
    #expect(refused?.code == .unavailable)
    #expect(refused?.message.contains(loopText) == true)

    try restore()
    registry.loadAll()
    registry.loadAll()
    #expect(log.count("\(folder.path)/m can be read again") == 1)
    #expect(registry.snapshot.models["m"]?.serving === before)

    // A folder that is really gone is gone.
    try FileManager.default.removeItem(atPath: folder.path + "/m")
    registry.loadAll()
    #expect(registry.snapshot.models["m"] == nil)
  }

  @Test func unreadableLabelsKeepStableAndAreNeverWritten() throws {
    let folder = try ModelFolder()
    _ = try trainAndPublishMF(
      data: folder.data, config: MFConfig(dim: 8, epochs: 3, seed: 9), holdout: 0.1,
      modelsDirectory: folder.path, name: "m")
    let registry = ModelRegistry(directory: folder.path)
    let log = LogLines()
    registry.hub.subscribe { log.append($0.message) }
    registry.loadAll()
    _ = try registry.setLabel(name: "m", label: "stable", version: 1, canaryFraction: nil)
    #expect(try registry.resolve(name: "m", version: nil, label: nil).version == 1)

    let path = LabelStore.path(modelDirectory: folder.path + "/m")
    let restore = try loopInPlace(of: path)
    for _ in 0..<3 { registry.loadAll() }
    #expect(try registry.resolve(name: "m", version: nil, label: nil).version == 1)
    #expect(registry.snapshot.models["m"]?.labels == ["stable": 1])
    #expect(log.count("cannot read \(path): \(loopText)", "stable → 1") == 1)

    let refused = rpcError {
      _ = try registry.setLabel(name: "m", label: "stable", version: 2, canaryFraction: nil)
    }
    #expect(refused?.code == .unavailable)
    #expect(refused?.message.contains("cannot read \(path): \(loopText)") == true)
    // Still the symlink: nothing was written over it.
    #expect(
      (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) == LabelStore.fileName)

    try restore()
    registry.loadAll()
    #expect(log.count("\(path) can be read again") == 1)
    _ = try registry.setLabel(name: "m", label: "stable", version: 2, canaryFraction: nil)
    #expect(try registry.resolve(name: "m", version: nil, label: nil).version == 2)
  }

  @Test func aVersionThatCannotBeReadIsRetriedNotFailed() throws {
    let folder = try ModelFolder()
    _ = try trainAndPublishMF(
      data: folder.data, config: MFConfig(dim: 8, epochs: 3, seed: 9), holdout: 0.1,
      modelsDirectory: folder.path, name: "m")
    let weights = folder.path + "/m/2/weights.safetensors"
    let restore = try loopInPlace(of: weights)
    let registry = ModelRegistry(directory: folder.path)
    let log = LogLines()
    registry.hub.subscribe { log.append($0.message) }
    #expect(registry.loadAll().isEmpty)
    registry.loadAll()
    let entry = try #require(registry.snapshot.models["m"])
    #expect(entry.serving?.version == 1)
    #expect(entry.versions[2]?.state == .unloaded)
    #expect(entry.versions[2]?.reason.contains(loopText) == true)
    #expect(log.count("cannot read version 2 of 'm'", loopText) == 1)

    try restore()
    registry.loadAll()
    #expect(registry.snapshot.models["m"]?.serving?.version == 2)
  }

  @Test func aCallerThatStopsWaitingChangesNothing() throws {
    let folder = try ModelFolder()
    let registry = ModelRegistry(directory: folder.path)
    registry.loadAll()
    let expired = WaitLimit(deadline: .now())
    let late = rpcError {
      _ = try registry.setLabel(
        name: "m", label: "stable", version: 1, canaryFraction: nil, limit: expired)
    }
    // Either it finished in time, or it says the deadline passed and left the label alone.
    if let late {
      #expect(late.code == .deadlineExceeded)
      registry.loadAll()
      #expect(registry.snapshot.models["m"]?.labels["stable"] == nil)
    }
    let cancelled = rpcError {
      _ = try registry.setLabel(
        name: "m", label: "x", version: 1, canaryFraction: nil,
        limit: WaitLimit(isCancelled: { true }))
    }
    if let cancelled {
      #expect(cancelled.code == .cancelled)
      registry.loadAll()
      #expect(registry.snapshot.models["m"]?.labels["x"] == nil)
    }
  }
}
