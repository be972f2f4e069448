import Foundation
import Testing

@testable import RecServeModels

@Suite struct ModelStoreTests {
  /// Trains a small model and publishes it; returns (models dir, version dir, model).
  func published(_ dir: TempDir, name: String = "m") throws -> (String, String, MFModel) {
    let result = try trainAndPublishMF(
      data: smallSynthetic(), config: quickConfig(), holdout: 0.1, modelsDirectory: dir.path,
      name: name)
    return (dir.path, result.directory, result.model)
  }

  @Test func roundTripPredictsIdentically() throws {
    let dir = TempDir()
    let (_, versionDir, model) = try published(dir)
    let loaded = try ModelStore.load(versionDirectory: versionDir)
    let back = try #require(loaded.mf)
    #expect(back.kind == "mf" && back.dim == model.dim)
    #expect(back.userIds == model.userIds && back.itemIds == model.itemIds)
    #expect(back.globalMean == model.globalMean && back.ratingRange == model.ratingRange)
    for u in stride(from: Int32(0), to: Int32(model.userCount), by: 7) {
      for i in stride(from: Int32(0), to: Int32(model.itemCount), by: 5) {
        #expect(back.predict(user: u, item: i) == model.predict(user: u, item: i))
      }
      #expect(Array(back.seenItems(user: u)) == Array(model.seenItems(user: u)))
    }
    #expect(Array(back.itemPopularity) == Array(model.itemPopularity))
    #expect(back.userIndex(model.userIds[3]) == 3)
    let m = loaded.manifest
    #expect(m.kind == "mf" && m.name == "m")
    #expect(m.metrics["rmse"] != nil && m.metrics["mae"] != nil)
    #expect(Set(m.files.keys) == ["weights.safetensors", "users.txt", "items.txt"])
    #expect(m.counts["users"]?.intValue == Int64(model.userCount))
    #expect(m.hyperparameters["dim"]?.intValue == 8)
    #expect(m.createdAt.hasSuffix("Z") && m.createdAt.count == 20)
    #expect(loaded.sizeBytes > 0)
  }

  @Test func modelJSONAndSafetensorsFollowTheFormat() throws {
    let dir = TempDir()
    let (_, versionDir, model) = try published(dir)
    let json = try JSONValue.parse(
      String(contentsOfFile: versionDir + "/model.json", encoding: .utf8))
    #expect(json["format"] == "recserve-model")
    #expect(json["format_version"] == 1)
    let weights = [UInt8](
      try Data(contentsOf: URL(fileURLWithPath: versionDir + "/weights.safetensors")))
    let n = weights[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
    #expect((8 + n) % 8 == 0)
    let header = try JSONValue.parse(String(decoding: weights[8..<(8 + n)], as: UTF8.self))
    #expect(header["item_factors"]?["dtype"] == "F32")
    #expect(header["item_factors"]?["shape"] == .array([.int(Int64(model.itemCount)), .int(8)]))
    #expect(header["seen_indptr"]?["dtype"] == "I64")
    #expect(header["seen_indices"]?["dtype"] == "I32")
    #expect(header["__metadata__"]?["kind"] == "mf")
    let users = try String(contentsOfFile: versionDir + "/users.txt", encoding: .utf8)
    #expect(users.split(separator: "\n").map(String.init) == model.userIds)
    #expect(SHA256Digest.hex(weights) == json["files"]?["weights.safetensors"]?.stringValue)
  }

  @Test func publishNumbersVersionsAndLeavesNoDotFolders() throws {
    let dir = TempDir()
    let data = smallSynthetic()
    var config = quickConfig()
    config.epochs = 2
    var versions: [Int64] = []
    for _ in 0..<3 {
      versions.append(
        try trainAndPublishMF(
          data: data, config: config, holdout: 0, modelsDirectory: dir.path, name: "demo"
        ).version)
    }
    #expect(versions == [1, 2, 3])
    let entries = try FileManager.default.contentsOfDirectory(atPath: dir.path + "/demo")
    #expect(entries.sorted() == ["1", "2", "3"])
    // Dot-folders, leading zeros and other names are not versions.
    for junk in [".tmp-4-abc", "007", "x", "0"] {
      try FileManager.default.createDirectory(
        atPath: dir.path + "/demo/" + junk, withIntermediateDirectories: false)
    }
    #expect(try ModelStore.versions(dir.path, name: "demo") == [1, 2, 3])
    #expect(try ModelStore.modelNames(dir.path) == ["demo"])
    // An empty directory squatting on the next number is not replaced: the publish moves on.
    try FileManager.default.createDirectory(
      atPath: dir.path + "/demo/4", withIntermediateDirectories: false)
    let next = try trainAndPublishMF(
      data: data, config: config, holdout: 0, modelsDirectory: dir.path, name: "demo")
    #expect(next.version == 5)
    #expect(
      try ModelStore.load(modelsDirectory: dir.path, name: "demo").directory.hasSuffix("/demo/5"))
    #expect(
      try ModelStore.load(modelsDirectory: dir.path, name: "demo", version: 2).directory.hasSuffix(
        "/demo/2"))
  }

  @Test func concurrentPublishersGetDistinctVersions() throws {
    let dir = TempDir()
    let model = try MFTrainer.train(
      smallSynthetic(),
      config: {
        var c = quickConfig()
        c.epochs = 1
        return c
      }())
    let results = UnsafeMutableBufferPointer<Int64>.allocate(capacity: 8)
    defer { results.deallocate() }
    Parallel.run(8) { k in
      results[k] =
        (try? ModelStore.publish(
          model, manifest: ModelManifest(kind: "mf", name: "c"), modelsDirectory: dir.path,
          name: "c"
        ).version) ?? -1
    }
    #expect(Array(results).sorted() == Array(1...8))
    #expect(
      try FileManager.default.contentsOfDirectory(atPath: dir.path + "/c").allSatisfy {
        !$0.hasPrefix(".")
      })
  }

  @Test func invalidNamesAreRejected() {
    for bad in ["", ".hidden", "a/b", "-x", "sp ace", String(repeating: "a", count: 129)] {
      #expect(errorOf { try ModelStore.validateName(bad) } != nil, "\(bad)")
    }
    for good in ["demo", "ml-100k_v2.1", "A"] {
      #expect(errorOf { try ModelStore.validateName(good) } == nil)
    }
  }

  // MARK: - Corruptions

  func reason(_ versionDir: String) -> String {
    errorOf { try ModelStore.load(versionDirectory: versionDir) }.map { "\($0)" } ?? "loaded"
  }

  /// Rewrites weights.safetensors and fixes its checksum in model.json, so that the loader gets
  /// past the checksum to the check under test.
  func replaceWeights(
    _ versionDir: String, _ edit: (inout [String: (SafeTensors.DType, [Int], [UInt8])]) -> Void
  ) throws {
    let path = versionDir + "/weights.safetensors"
    let file = try SafeTensors.open(path: path, displayName: "w")
    var tensors: [String: (SafeTensors.DType, [Int], [UInt8])] = [:]
    for (name, t) in file.tensors { tensors[name] = (t.dtype, t.shape, Array(file.bytes(t))) }
    edit(&tensors)
    var w = SafeTensors.Writer()
    for (name, (dtype, shape, bytes)) in tensors {
      switch dtype {
      case .F32:
        let v = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        w.add(name, shape: shape, v)
      case .I32:
        let v = bytes.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
        w.add(name, shape: shape, v)
      case .I64:
        let v = bytes.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) }
        w.add(name, shape: shape, v)
      default: Issue.record("unexpected dtype")
      }
    }
    let out = w.serialize()
    try Data(out).write(to: URL(fileURLWithPath: path))
    try setChecksum(versionDir, "weights.safetensors", SHA256Digest.hex(out))
  }

  func setChecksum(_ versionDir: String, _ file: String, _ sum: String) throws {
    let mpath = versionDir + "/model.json"
    guard case .object(var o) = try JSONValue.parse(String(contentsOfFile: mpath, encoding: .utf8)),
      case .object(var files) = o["files"]!
    else { throw ModelLoadError("bad test fixture") }
    files[file] = .string(sum)
    o["files"] = .object(files)
    try JSONValue.object(o).serialized(pretty: true).write(
      toFile: mpath, atomically: false, encoding: .utf8)
  }

  @Test func truncatedWeights() throws {
    let dir = TempDir()
    let (_, v, _) = try published(dir)
    let path = v + "/weights.safetensors"
    let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
    try bytes.prefix(bytes.count - 100).write(to: URL(fileURLWithPath: path))
    #expect(reason(v).hasPrefix("weights.safetensors: truncated: tensor '"))
    try bytes.prefix(5).write(to: URL(fileURLWithPath: path))
    #expect(reason(v).hasPrefix("weights.safetensors: truncated (5 bytes"))
  }

  @Test func checksumMismatch() throws {
    let dir = TempDir()
    let (_, v, _) = try published(dir)
    let path = v + "/items.txt"
    var text = try String(contentsOfFile: path, encoding: .utf8)
    text = "ZZZ" + text.dropFirst(3)
    try text.write(toFile: path, atomically: false, encoding: .utf8)
    #expect(reason(v).hasPrefix("items.txt: checksum mismatch (expected "))
    #expect(reason(v).contains("…, got "))
  }

  @Test func wrongShape() throws {
    let dir = TempDir()
    let (_, v, model) = try published(dir)
    try replaceWeights(v) { t in
      let (dtype, shape, bytes) = t["item_factors"]!
      t["item_factors"] = (
        dtype, [shape[0] - 2, shape[1]], Array(bytes.dropLast(2 * shape[1] * 4))
      )
    }
    #expect(
      reason(v)
        == "item_factors: shape [\(model.itemCount - 2), 8] but items.txt has \(model.itemCount) lines"
    )
  }

  @Test func nanValue() throws {
    let dir = TempDir()
    let (_, v, _) = try published(dir)
    try replaceWeights(v) { t in
      var entry = t["user_factors"]!
      let nan = Float.nan.bitPattern
      let k = (3 * 8 + 5) * 4
      for b in 0..<4 { entry.2[k + b] = UInt8((nan >> (8 * UInt32(b))) & 0xFF) }
      t["user_factors"] = entry
    }
    #expect(reason(v) == "user_factors[3,5] is NaN")
  }

  @Test func missingModelJSONAndUnknownKind() throws {
    let dir = TempDir()
    let (_, v, _) = try published(dir)
    let mpath = v + "/model.json"
    let original = try String(contentsOfFile: mpath, encoding: .utf8)
    try original.replacingOccurrences(of: "\"kind\": \"mf\"", with: "\"kind\": \"wide-and-deep\"")
      .write(toFile: mpath, atomically: false, encoding: .utf8)
    #expect(
      reason(v) == "model.json: unknown model kind 'wide-and-deep' (known: als, bpr, hybrid, mf, sasrec)")
    try original.replacingOccurrences(of: "\"kind\": \"mf\"", with: "\"kind\": \"sasrec\"")
      .write(toFile: mpath, atomically: false, encoding: .utf8)
    // An MF folder that claims to be a SASRec lacks the network.
    #expect(reason(v) == "weights.safetensors: tensor 'item_emb.weight' is missing")
    try "{not json".write(toFile: mpath, atomically: false, encoding: .utf8)
    #expect(reason(v).hasPrefix("model.json: not valid JSON"))
    try original.replacingOccurrences(of: "recserve-model", with: "other")
      .write(toFile: mpath, atomically: false, encoding: .utf8)
    #expect(reason(v) == "model.json: format is 'other', expected 'recserve-model'")
    try FileManager.default.removeItem(atPath: mpath)
    #expect(reason(v) == "model.json is missing (not a complete model version)")
  }

  @Test func missingFileAndDuplicateIds() throws {
    let dir = TempDir()
    let (_, v, model) = try published(dir)
    let upath = v + "/users.txt"
    let users = try String(contentsOfFile: upath, encoding: .utf8)
    let dup = users.replacingOccurrences(of: model.userIds[1] + "\n", with: model.userIds[0] + "\n")
    try dup.write(toFile: upath, atomically: false, encoding: .utf8)
    try setChecksum(v, "users.txt", SHA256Digest.hex(Array(dup.utf8)))
    #expect(reason(v) == "users.txt: line 2 repeats id '\(model.userIds[0])' (first on line 1)")
    try FileManager.default.removeItem(atPath: upath)
    #expect(reason(v) == "users.txt: listed in model.json but missing")
  }

  @Test func overlappingAndOutOfRangeHistory() throws {
    let dir = TempDir()
    let (_, v, model) = try published(dir)
    try replaceWeights(v) { t in
      var entry = t["seen_indices"]!
      let bad = Int32(model.itemCount + 5)
      withUnsafeBytes(of: bad.littleEndian) { for b in 0..<4 { entry.2[b] = $0[b] } }
      t["seen_indices"] = entry
    }
    #expect(
      reason(v)
        == "seen_indices[0] = \(model.itemCount + 5) is out of range (\(model.itemCount) items)")
  }

  @Test func safetensorsHeaderChecks() throws {
    func header(_ json: String, data: Int) -> [UInt8] {
      var h = Array(json.utf8)
      while (8 + h.count) % 8 != 0 { h.append(32) }
      var out = [UInt8]()
      withUnsafeBytes(of: UInt64(h.count).littleEndian) { out.append(contentsOf: $0) }
      return out + h + [UInt8](repeating: 0, count: data)
    }
    func parse(_ bytes: [UInt8]) -> String {
      errorOf { try bytes.withUnsafeBytes { try SafeTensors.parseHeader($0, displayName: "w") } }
        .map { "\($0)" } ?? "ok"
    }
    #expect(
      parse(header(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: 8)) == "ok")
    #expect(
      parse(header(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: 8))
        == "w: tensor 'a' has 8 bytes, but F32 [3] needs 12")
    #expect(
      parse(
        header(
          #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[1],"data_offsets":[4,8]}}"#,
          data: 8)) == "w: tensor 'b' overlaps another tensor")
    #expect(
      parse(header(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: 8))
        == "w: 4 bytes before tensor 'a' belong to no tensor")
    #expect(
      parse(header(#"{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}"#, data: 1))
        == "w: tensor 'a' has unknown dtype 'Q7'")
    #expect(parse(header(#"[1,2]"#, data: 0)) == "w: header is not a JSON object")
    #expect(parse([255, 255, 0, 0, 0, 0, 0, 0, 1]).hasPrefix("w: truncated or not safetensors"))
  }
}
