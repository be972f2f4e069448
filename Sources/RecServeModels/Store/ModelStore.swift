#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A model version read from disk and verified (checksums, header, shapes, finite values).
public struct LoadedModel: Sendable {
  /// The version folder, `DIR/<name>/<version>`.
  public let directory: String
  public let manifest: ModelManifest
  public let model: any RecommendationModel
  /// Bytes of all files in the version.
  public let sizeBytes: Int

  /// The model as MF, when it is one.
  public var mf: MFModel? { model as? MFModel }
}

/// The on-disk model repository: `DIR/<name>/<version>/{model.json, weights.safetensors,
/// users.txt, items.txt}`. Versions are positive integers (no leading zeros); dot-folders and
/// other names are ignored. Publishing writes a dot-folder and renames it into place, so no reader
/// ever sees half a version.
public enum ModelStore {
  public static let manifestFile = "model.json"
  public static let weightsFile = "weights.safetensors"
  public static let usersFile = "users.txt"
  public static let itemsFile = "items.txt"

  /// Model names: 1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'.
  public static func validateName(_ name: String) throws {
    let u = Array(name.utf8)
    let ok =
      !u.isEmpty && u.count <= 128 && u[0] != UInt8(ascii: ".") && u[0] != UInt8(ascii: "-")
      && u.allSatisfy { c in
        (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 46 || c == 95
          || c == 45
      }
    if !ok {
      throw ModelLoadError(
        "invalid model name '\(name)': use 1-128 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
      )
    }
  }

  /// Parses a version folder name: a positive integer without sign or leading zeros.
  public static func parseVersion(_ s: String) -> Int64? {
    let u = Array(s.utf8)
    guard !u.isEmpty, u.count <= 18, u[0] != UInt8(ascii: "0"),
      u.allSatisfy({ $0 >= 48 && $0 <= 57 })
    else { return nil }
    return Int64(s)
  }

  public static func modelDirectory(_ modelsDirectory: String, name: String) -> String {
    join(modelsDirectory, name)
  }

  public static func versionDirectory(_ modelsDirectory: String, name: String, version: Int64)
    -> String
  {
    join(join(modelsDirectory, name), String(version))
  }

  /// What a listing of the repository or of one model's folder found: the entries that are
  /// there, and those that could not be looked at (an error other than absence, e.g. ELOOP,
  /// EACCES, EIO), which may well be there too.
  public struct Listing<Key: Hashable & Comparable & Sendable>: Sendable {
    /// Folders with a valid name, ascending.
    public var present: [Key] = []
    /// Entries with a valid name that `stat` could not look at, with the error.
    public var unreadable: [Key: FileError] = [:]

    public init() {}
  }

  /// The models in the repository. Nil when the repository folder is not there (ENOENT,
  /// ENOTDIR); throws a `FileError` when it is there but cannot be listed.
  public static func scanModels(_ modelsDirectory: String) throws -> Listing<String>? {
    try scan(modelsDirectory) { name in (try? validateName(name)) != nil ? name : nil }
  }

  /// The versions of a model. Nil when its folder is not there (ENOENT, ENOTDIR); throws a
  /// `FileError` when it is there but cannot be listed.
  public static func scanVersions(_ modelsDirectory: String, name: String) throws -> Listing<
    Int64
  >? {
    try scan(join(modelsDirectory, name), key: parseVersion)
  }

  static func scan<Key>(_ directory: String, key: (String) -> Key?) throws -> Listing<Key>? {
    let names: [String]
    do {
      names = try FileIO.listDirectory(directory)
    } catch let error as FileError where error.isAbsence {
      return nil
    }
    var listing = Listing<Key>()
    for name in names {
      guard let key = key(name) else { continue }
      switch PathKind(join(directory, name)) {
      case .directory: listing.present.append(key)
      case .other, .absent: break
      case .unreadable(let error): listing.unreadable[key] = error
      }
    }
    listing.present.sort()
    return listing
  }

  /// Model names in the repository (folders with a valid name), sorted; empty when the folder
  /// is not there. Throws a `FileError` when it, or an entry in it, cannot be read.
  public static func modelNames(_ modelsDirectory: String) throws -> [String] {
    guard let listing = try scanModels(modelsDirectory) else { return [] }
    if let error = listing.unreadable.values.first { throw error }
    return listing.present
  }

  /// Versions of a model, ascending; empty when the model does not exist. Throws a `FileError`
  /// when its folder, or a version in it, cannot be read.
  public static func versions(_ modelsDirectory: String, name: String) throws -> [Int64] {
    guard let listing = try scanVersions(modelsDirectory, name: name) else { return [] }
    if let error = listing.unreadable.values.first { throw error }
    return listing.present
  }

  /// The highest version number taken in the model's folder (an entry that cannot be read
  /// still takes its number); nil when there is none.
  public static func latestVersion(_ modelsDirectory: String, name: String) throws -> Int64? {
    guard let listing = try scanVersions(modelsDirectory, name: name) else { return nil }
    return (listing.present + listing.unreadable.keys).max()
  }

  // MARK: - Publish

  /// Writes `model` as the next version of `name` and returns it. `manifest` supplies kind-
  /// independent fields (hyperparameters, metrics, data summary); counts and checksums are filled
  /// in here.
  /// `extraFiles` (name → bytes) are written beside the weights and listed in model.json with
  /// their checksums (a kind's own files, e.g. the hybrid model's feature tables).
  public static func publish(
    _ model: any RecommendationModel, manifest: ModelManifest, modelsDirectory: String,
    name: String, extraFiles: [String: [UInt8]] = [:]
  ) throws -> (version: Int64, directory: String) {
    try validateName(name)
    try checkIdsStorable(model)
    let modelDir = join(modelsDirectory, name)
    do {
      try FileIO.makeDirectories(modelDir)
    } catch let e as FileError {
      throw ModelLoadError(e.description)
    }

    let files = try serialized(model, manifest: manifest, name: name, extraFiles: extraFiles)
    return try writeVersion(files, modelsDirectory: modelsDirectory, name: name)
  }

  /// Refuses ids that could not be read back from the id files (one a line).
  static func checkIdsStorable(_ model: any RecommendationModel) throws {
    for (what, ids) in [("user", model.userIds), ("item", model.itemIds)] {
      for id in ids where id.utf8.contains(where: { $0 == 10 || $0 == 13 || $0 == 0 }) {
        if id.utf8.contains(0) {
          throw ModelLoadError(
            "a \(what) id contains a NUL byte; ids are stored as text, one a line")
        }
        throw ModelLoadError("\(what) id '\(id)' contains a line break; ids are stored one a line")
      }
    }
  }

  /// A version's files, serialized: weights, ids, and model.json with the counts and checksums.
  static func serialized(
    _ model: any RecommendationModel, manifest: ModelManifest, name: String,
    extraFiles: [String: [UInt8]] = [:]
  ) throws -> VersionFiles {
    var m = manifest
    let weights: [UInt8]
    switch model {
    case let mf as MFModel:
      weights = serializeWeights(mf)
      m.counts["seen_interactions"] = .int(Int64(mf.seenCount))
      if m.ratingRange == nil { m.ratingRange = mf.ratingRange }
    case let sasrec as SASRecModel:
      weights = serializeWeights(sasrec)
      m.counts["seen_interactions"] = .int(Int64(sasrec.seenCount))
      m.counts["sequence_interactions"] = .int(Int64(sasrec.sequenceCount))
      m.ratingRange = nil
    default:
      throw ModelLoadError("cannot store a model of kind '\(model.kind)'")
    }
    let users = idFile(model.userIds)
    let items = idFile(model.itemIds)
    m.kind = model.kind
    m.name = name
    m.counts["users"] = .int(Int64(model.userCount))
    m.counts["items"] = .int(Int64(model.itemCount))
    m.counts["dim"] = .int(Int64(model.dim))
    m.files = [
      weightsFile: SHA256Digest.hex(weights), usersFile: SHA256Digest.hex(users),
      itemsFile: SHA256Digest.hex(items),
    ]
    for (file, bytes) in extraFiles {
      guard m.files[file] == nil, file != manifestFile, !file.hasPrefix("."), !file.contains("/")
      else {
        throw ModelLoadError("cannot store a file named '\(file)' beside the model's own")
      }
      m.files[file] = SHA256Digest.hex(bytes)
    }
    let manifestBytes = Array((m.json.serialized(pretty: true) + "\n").utf8)

    return VersionFiles(
      weights: weights, users: users, items: items, manifest: manifestBytes, extra: extraFiles)
  }

  /// A version's files, serialized.
  struct VersionFiles {
    var weights: [UInt8]
    var users: [UInt8]
    var items: [UInt8]
    var manifest: [UInt8]
    var extra: [String: [UInt8]] = [:]
  }

  /// Writes the files into a dot-folder, syncs it, and renames it to the next free version
  /// number (past any another writer took meanwhile).
  static func writeVersion(
    _ files: VersionFiles, modelsDirectory: String, name: String
  ) throws -> (version: Int64, directory: String) {
    let modelDir = join(modelsDirectory, name)
    var candidate = (try latestVersion(modelsDirectory, name: name) ?? 0) + 1
    var rng = SystemRandomNumberGenerator()
    let suffix = String(rng.next() & 0xFFFF_FFFF_FFFF, radix: 16)
    let tmp = join(modelDir, ".tmp-\(candidate)-\(suffix)")
    if mkdir(tmp, 0o755) != 0 {
      throw ModelLoadError(
        FileError(path: tmp, code: errno, operation: "create directory").description)
    }
    var published = false
    defer { if !published { FileIO.removeTree(tmp) } }
    do {
      try FileIO.writeSynced(files.weights, to: join(tmp, weightsFile))
      try FileIO.writeSynced(files.users, to: join(tmp, usersFile))
      try FileIO.writeSynced(files.items, to: join(tmp, itemsFile))
      for (file, bytes) in files.extra.sorted(by: { $0.key < $1.key }) {
        try FileIO.writeSynced(bytes, to: join(tmp, file))
      }
      try FileIO.writeSynced(files.manifest, to: join(tmp, manifestFile))
    } catch let e as FileError {
      throw ModelLoadError(e.description)
    }
    FileIO.fsyncDirectory(tmp)
    for _ in 0..<1000 {
      let target = join(modelDir, String(candidate))
      let r = FileIO.renameNoReplace(tmp, target)
      if r == 0 {
        published = true
        FileIO.fsyncDirectory(modelDir)
        return (candidate, target)
      }
      if r != EEXIST && r != ENOTEMPTY {
        throw ModelLoadError(
          FileError(path: target, code: r, operation: "publish (rename)").description)
      }
      // Someone else took this number: move past the highest version now present.
      candidate = max(candidate + 1, (try latestVersion(modelsDirectory, name: name) ?? 0) + 1)
    }
    throw ModelLoadError("\(modelDir): could not find a free version number")
  }

  /// The weights file; tensors are read straight from the model (it is alive throughout).
  static func serializeWeights(_ model: MFModel) -> [UInt8] {
    let U = model.userCount
    let I = model.itemCount
    let D = model.dim
    var w = SafeTensors.Writer()
    w.addBorrowed(
      "user_factors", dtype: .F32, shape: [U, D],
      values: UnsafeBufferPointer(start: model.userFactors, count: U * D))
    w.addBorrowed(
      "item_factors", dtype: .F32, shape: [I, D],
      values: UnsafeBufferPointer(start: model.itemFactors, count: I * D))
    w.addBorrowed(
      "user_bias", dtype: .F32, shape: [U],
      values: UnsafeBufferPointer(start: model.userBias, count: U))
    w.addBorrowed(
      "item_bias", dtype: .F32, shape: [I],
      values: UnsafeBufferPointer(start: model.itemBias, count: I))
    w.add("global_mean", shape: [1], [model.globalMean])
    addHistory(
      to: &w, indptr: model.seenIndptr, indices: model.seenIndices, count: model.seenCount,
      popularity: model.itemPopularity, users: U, kind: model.kind)
    return withExtendedLifetime(model) { w.serialize() }
  }

  /// The training history every kind stores (`seen_indptr`, `seen_indices`,
  /// `item_popularity`) and the file's metadata; borrowed, as the other tensors.
  static func addHistory(
    to w: inout SafeTensors.Writer, indptr: UnsafePointer<Int64>, indices: UnsafePointer<Int32>,
    count: Int, popularity: UnsafeBufferPointer<Int32>, users U: Int, kind: String
  ) {
    w.addBorrowed(
      "seen_indptr", dtype: .I64, shape: [U + 1],
      values: UnsafeBufferPointer(start: indptr, count: U + 1))
    w.addBorrowed(
      "seen_indices", dtype: .I32, shape: [count],
      values: UnsafeBufferPointer(start: indices, count: count))
    w.addBorrowed(
      "item_popularity", dtype: .I32, shape: [popularity.count], values: popularity)
    w.metadata = ["format": ModelManifest.formatName, "kind": kind]
  }

  static func idFile(_ ids: [String]) -> [UInt8] {
    var out = [UInt8]()
    out.reserveCapacity(ids.reduce(0) { $0 + $1.utf8.count + 1 })
    for id in ids {
      out.append(contentsOf: id.utf8)
      out.append(10)
    }
    return out
  }

  // MARK: - Load

  /// Reads and verifies a version folder: model.json (format, kind, checksums), the safetensors
  /// header (offsets in range, no overlap, sizes match dtype and shape), shapes against the counts
  /// and id files, and finite values. Throws a `ModelLoadError` with a one-line reason.
  /// A `ModelLoadError` whose `ioError` is set when the version could not be read (as opposed
  /// to being broken or absent).
  public static func load(versionDirectory dir: String) throws -> LoadedModel {
    switch PathKind(dir) {
    case .directory: break
    case .other, .absent: throw ModelLoadError("\(dir): no such version folder")
    case .unreadable(let e):
      throw ModelLoadError("\(dir): cannot read (\(e.reason))", ioError: e.code)
    }
    let manifestPath = join(dir, manifestFile)
    let manifestMap: MappedFile
    do {
      manifestMap = try MappedFile(path: manifestPath)
    } catch let e as FileError {
      if e.code == ENOENT {
        throw ModelLoadError("model.json is missing (not a complete model version)")
      }
      throw ModelLoadError("model.json: cannot read (\(e.reason))", ioError: e.code)
    }
    let manifest = try ModelManifest(parsing: manifestMap.bytes)
    guard ModelManifest.knownKinds.contains(manifest.kind) else {
      throw ModelLoadError(
        "model.json: unknown model kind '\(manifest.kind)' (known: \(ModelManifest.knownKinds.sorted().joined(separator: ", ")))"
      )
    }
    guard ModelManifest.loadableKinds.contains(manifest.kind) else {
      throw ModelLoadError(
        "model.json: model kind '\(manifest.kind)' is not supported by this build yet (supported: \(ModelManifest.loadableKinds.sorted().joined(separator: ", ")))"
      )
    }
    for required in [weightsFile, usersFile, itemsFile] where manifest.files[required] == nil {
      throw ModelLoadError("model.json: 'files' has no checksum for \(required)")
    }

    // Map every listed file; verify the safetensors structure before checksums so that a
    // truncated file says so.
    var maps: [String: MappedFile] = [:]
    for file in manifest.files.keys.sorted() {
      do {
        maps[file] = try MappedFile(path: join(dir, file))
      } catch let e as FileError {
        if e.code == ENOENT { throw ModelLoadError("\(file): listed in model.json but missing") }
        throw ModelLoadError("\(file): cannot read (\(e.reason))", ioError: e.code)
      }
    }
    let weightsMap = maps[weightsFile]!
    let (tensors, _) = try SafeTensors.parseHeader(weightsMap.bytes, displayName: weightsFile)
    for file in manifest.files.keys.sorted() {
      let expected = manifest.files[file]!
      let got = SHA256Digest.hex(maps[file]!.bytes)
      if got != expected {
        throw ModelLoadError(
          "\(file): checksum mismatch (expected \(expected.prefix(12))…, got \(got.prefix(12))…)")
      }
    }
    let userIds = try readIds(maps[usersFile]!, file: usersFile)
    let itemIds = try readIds(maps[itemsFile]!, file: itemsFile)
    let model: any RecommendationModel
    if manifest.kind == "sasrec" {
      model = try buildSASRec(
        tensors: tensors, mapped: weightsMap, manifest: manifest, userIds: userIds.ids,
        userLookup: userIds.lookup, itemIds: itemIds.ids, itemLookup: itemIds.lookup)
    } else {
      model = try buildMF(
        tensors: tensors, mapped: weightsMap, manifest: manifest, userIds: userIds.ids,
        userLookup: userIds.lookup, itemIds: itemIds.ids, itemLookup: itemIds.lookup)
    }
    let size = maps.values.reduce(manifestMap.count) { $0 + $1.count }
    return LoadedModel(directory: dir, manifest: manifest, model: model, sizeBytes: size)
  }

  /// Loads `DIR/<name>/<version>`, or the highest version when `version` is nil.
  public static func load(modelsDirectory: String, name: String, version: Int64? = nil) throws
    -> LoadedModel
  {
    try validateName(name)
    let v: Int64
    if let version {
      v = version
      guard FileIO.isDirectory(versionDirectory(modelsDirectory, name: name, version: v)) else {
        let have = (try? versions(modelsDirectory, name: name)) ?? []
        throw ModelLoadError(
          "model '\(name)' has no version \(v) in \(modelsDirectory)"
            + (have.isEmpty ? "" : " (versions: \(have.map(String.init).joined(separator: ", ")))"))
      }
    } else {
      guard let latest = try latestVersion(modelsDirectory, name: name) else {
        throw ModelLoadError("model '\(name)' has no versions in \(modelsDirectory)")
      }
      v = latest
    }
    return try load(versionDirectory: versionDirectory(modelsDirectory, name: name, version: v))
  }

  struct IdList {
    var ids: [String]
    var lookup: [String: Int32]
  }

  static func readIds(_ map: MappedFile, file: String) throws -> IdList {
    let bytes = map.bytes
    if bytes.isEmpty { throw ModelLoadError("\(file): empty (expected one id a line)") }
    let base = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
    let n = bytes.count
    switch ByteParsing.firstTextProblem(base, n) {
    case .nul(let offset)?:
      throw ModelLoadError(
        "\(file): line \(ByteParsing.lineNumber(base, offset: offset)) contains a NUL byte")
    case .invalidUTF8(let offset)?:
      throw ModelLoadError(
        "\(file): line \(ByteParsing.lineNumber(base, offset: offset)) is not valid UTF-8")
    case nil: break
    }
    var ids: [String] = []
    var lookup: [String: Int32] = [:]
    ids.reserveCapacity(n / 4)
    lookup.reserveCapacity(n / 4)
    var pos = 0
    var line = 0
    while pos < n {
      line += 1
      var end = n
      if let hit = memchr(base + pos, 10, n - pos) {
        end = UnsafeRawPointer(hit).assumingMemoryBound(to: UInt8.self) - base
      }
      let next = end + 1
      if end > pos && base[end - 1] == 13 { end -= 1 }
      if end == pos { throw ModelLoadError("\(file): line \(line) is empty") }
      let id = String(
        decoding: UnsafeBufferPointer(start: base + pos, count: end - pos), as: UTF8.self)
      if let first = lookup.updateValue(Int32(ids.count), forKey: id) {
        throw ModelLoadError(
          "\(file): line \(line) repeats id '\(id)' (first on line \(first + 1))")
      }
      ids.append(id)
      pos = next
    }
    return IdList(ids: ids, lookup: lookup)
  }

  static func buildMF(
    tensors: [String: SafeTensors.TensorInfo], mapped: MappedFile, manifest: ModelManifest,
    userIds: [String], userLookup: [String: Int32], itemIds: [String], itemLookup: [String: Int32]
  ) throws -> MFModel {
    let U = userIds.count
    let I = itemIds.count
    let reader = TensorReader(tensors: tensors, mapped: mapped)
    let uf = try reader.tensor("user_factors", .F32)
    let itf = try reader.tensor("item_factors", .F32)
    let ub = try reader.tensor("user_bias", .F32)
    let ib = try reader.tensor("item_bias", .F32)
    let gm = try reader.tensor("global_mean", .F32)
    guard uf.shape.count == 2 else {
      throw ModelLoadError("user_factors: shape \(uf.shapeDescription) is not 2-dimensional")
    }
    let D = uf.shape[1]
    if let want = manifest.counts["dim"]?.intValue, want != D {
      throw ModelLoadError(
        "user_factors: shape \(uf.shapeDescription) but model.json says dim \(want)")
    }
    if D < 1 { throw ModelLoadError("user_factors: shape \(uf.shapeDescription) has no columns") }
    try TensorReader.expect(uf, [U, D], "users.txt has \(U) lines")
    try TensorReader.expect(
      itf, [I, D],
      itf.shape.count == 2 && itf.shape[0] == I ? "dim is \(D)" : "items.txt has \(I) lines")
    try TensorReader.expect(ub, [U], "users.txt has \(U) lines")
    try TensorReader.expect(ib, [I], "items.txt has \(I) lines")
    try TensorReader.expect(gm, [1], "it must hold one value")
    try checkCounts(manifest, users: U, items: I)

    let pUF = reader.pointer(uf, Float.self)
    let pIF = reader.pointer(itf, Float.self)
    let pUB = reader.pointer(ub, Float.self)
    let pIB = reader.pointer(ib, Float.self)
    let pGM = reader.pointer(gm, Float.self)
    try checkFinite(pUF, rows: U, cols: D, name: "user_factors")
    try checkFinite(pIF, rows: I, cols: D, name: "item_factors")
    try checkFinite(pUB, rows: U, cols: 0, name: "user_bias")
    try checkFinite(pIB, rows: I, cols: 0, name: "item_bias")
    try checkFinite(pGM, rows: 1, cols: 0, name: "global_mean")

    // Training history and popularity: optional for models trained elsewhere.
    let history = try readHistory(reader, users: U, items: I, sequences: nil)
    let tensorsStruct = MFModel.Tensors(
      userFactors: pUF, itemFactors: pIF, userBias: pUB, itemBias: pIB,
      seenIndptr: history.indptr, seenIndices: history.indices, seenCount: history.count,
      itemPopularity: history.popularity)
    return MFModel(
      kind: manifest.kind, dim: D, userIds: userIds, itemIds: itemIds, userLookup: userLookup,
      itemLookup: itemLookup, globalMean: pGM[0], ratingRange: manifest.ratingRange,
      tensors: tensorsStruct, memory: reader.owners)
  }

  /// model.json's user and item counts, when given, must match the id files.
  static func checkCounts(_ manifest: ModelManifest, users U: Int, items I: Int) throws {
    for (key, n) in [("users", U), ("items", I)] {
      if let want = manifest.counts[key]?.intValue, Int(want) != n {
        throw ModelLoadError("\(key).txt has \(n) lines but model.json says \(want) \(key)")
      }
    }
  }

  /// The users' distinct items (`seen_indptr`, `seen_indices`) and each item's number of
  /// distinct users (`item_popularity`): read and checked when present, else derived from
  /// `sequences` (a user → items CSR in any order, with repeats) or left empty.
  static func readHistory(
    _ reader: TensorReader, users U: Int, items I: Int,
    sequences: (indptr: UnsafePointer<Int64>, items: UnsafePointer<Int32>)?
  ) throws -> (
    indptr: UnsafePointer<Int64>, indices: UnsafePointer<Int32>, count: Int,
    popularity: UnsafePointer<Int32>
  ) {
    let history: (indptr: UnsafePointer<Int64>, indices: UnsafePointer<Int32>, count: Int)
    if let ip = reader.tensors["seen_indptr"] {
      history = try storedHistory(reader, indptr: ip, users: U, items: I)
    } else {
      if reader.tensors["seen_indices"] != nil {
        throw ModelLoadError("\(weightsFile): seen_indices is present but seen_indptr is missing")
      }
      history = derivedHistory(reader, users: U, items: I, sequences: sequences)
    }
    let popularity = try itemPopularity(
      reader, items: I, seen: history.indices, count: history.count)
    return (history.indptr, history.indices, history.count, popularity)
  }

  /// `seen_indptr` and `seen_indices` as stored: checked as a CSR of users' items, each row
  /// sorted ascending and distinct (binary search relies on it).
  private static func storedHistory(
    _ reader: TensorReader, indptr ip: SafeTensors.TensorInfo, users U: Int, items I: Int
  ) throws -> (indptr: UnsafePointer<Int64>, indices: UnsafePointer<Int32>, count: Int) {
    guard ip.dtype == .I64 else {
      throw ModelLoadError("seen_indptr: dtype \(ip.dtype.rawValue), expected I64")
    }
    try TensorReader.expect(ip, [U + 1], "users.txt has \(U) lines (expected [\(U + 1)])")
    guard let ix = reader.tensors["seen_indices"] else {
      throw ModelLoadError("\(weightsFile): seen_indptr is present but seen_indices is missing")
    }
    guard ix.dtype == .I32 else {
      throw ModelLoadError("seen_indices: dtype \(ix.dtype.rawValue), expected I32")
    }
    guard ix.shape.count == 1 else {
      throw ModelLoadError("seen_indices: shape \(ix.shapeDescription) is not 1-dimensional")
    }
    let nnz = ix.shape[0]
    let pIndptr = reader.pointer(ip, Int64.self)
    let pIndices = reader.pointer(ix, Int32.self)
    try checkCSR(indptr: pIndptr, indices: pIndices, count: nnz, users: U, items: I, name: "seen")
    for u in 0..<U {
      let a = Int(pIndptr[u])
      let b = Int(pIndptr[u + 1])
      if b - a > 1 {
        for k in (a + 1)..<b where pIndices[k] <= pIndices[k - 1] {
          throw ModelLoadError(
            "seen_indices: items of user \(u) are not sorted ascending and distinct (at \(k))")
        }
      }
    }
    return (pIndptr, pIndices, nnz)
  }

  /// The users' distinct items from their sequences (none without), in memory the model owns.
  private static func derivedHistory(
    _ reader: TensorReader, users U: Int, items I: Int,
    sequences: (indptr: UnsafePointer<Int64>, items: UnsafePointer<Int32>)?
  ) -> (indptr: UnsafePointer<Int64>, indices: UnsafePointer<Int32>, count: Int) {
    var users: [Int32] = []
    var items: [Int32] = []
    if let sequences {
      let n = Int(sequences.indptr[U])
      users.reserveCapacity(n)
      items.reserveCapacity(n)
      for u in 0..<U {
        for k in Int(sequences.indptr[u])..<Int(sequences.indptr[u + 1]) {
          users.append(Int32(u))
          items.append(sequences.items[k])
        }
      }
    }
    let csr = SeenItems.build(users: users, items: items, userCount: U, itemCount: I)
    let mem = TensorMemory(byteCount: (U + 1) * 8 + csr.indices.count * 4 + 64)
    reader.owners.append(mem)
    let p = mem.base.bindMemory(to: Int64.self, capacity: U + 1)
    csr.indptr.withUnsafeBufferPointer { p.update(from: $0.baseAddress!, count: U + 1) }
    let q = (mem.base + (U + 1) * 8).bindMemory(
      to: Int32.self, capacity: max(1, csr.indices.count))
    csr.indices.withUnsafeBufferPointer { src in
      if src.count > 0 { q.update(from: src.baseAddress!, count: src.count) }
    }
    return (UnsafePointer(p), UnsafePointer(q), csr.indices.count)
  }

  /// `item_popularity` as stored (no negative counts), else each item's number of users.
  private static func itemPopularity(
    _ reader: TensorReader, items I: Int, seen: UnsafePointer<Int32>, count nnz: Int
  ) throws -> UnsafePointer<Int32> {
    if let pp = reader.tensors["item_popularity"] {
      guard pp.dtype == .I32 else {
        throw ModelLoadError("item_popularity: dtype \(pp.dtype.rawValue), expected I32")
      }
      try TensorReader.expect(pp, [I], "items.txt has \(I) lines")
      let pPop = reader.pointer(pp, Int32.self)
      for i in 0..<I where pPop[i] < 0 {
        throw ModelLoadError("item_popularity[\(i)] = \(pPop[i]) is negative")
      }
      return pPop
    }
    let mem = TensorMemory(byteCount: I * 4)
    reader.owners.append(mem)
    let p = mem.base.bindMemory(to: Int32.self, capacity: I)
    p.initialize(repeating: 0, count: I)
    for k in 0..<nnz { p[Int(seen[k])] += 1 }
    return UnsafePointer(p)
  }

  /// A CSR over `users` rows: indptr starts at 0, ends at `count`, never decreases; every index
  /// is an item in range. Errors name the tensors `<name>_indptr` / `<name>_indices`.
  static func checkCSR(
    indptr: UnsafePointer<Int64>, indices: UnsafePointer<Int32>, count nnz: Int, users U: Int,
    items I: Int, name: String, indicesName: String? = nil
  ) throws {
    let ip = "\(name)_indptr"
    let ix = indicesName ?? "\(name)_indices"
    if indptr[0] != 0 || indptr[U] != Int64(nnz) {
      throw ModelLoadError(
        "\(ip): must start at 0 and end at \(nnz) (the length of \(ix)), got \(indptr[0])...\(indptr[U])"
      )
    }
    for u in 0..<U where indptr[u + 1] < indptr[u] {
      throw ModelLoadError(
        "\(ip)[\(u + 1)] = \(indptr[u + 1]) is less than \(ip)[\(u)] = \(indptr[u])")
    }
    for k in 0..<nnz where indices[k] < 0 || Int(indices[k]) >= I {
      throw ModelLoadError("\(ix)[\(k)] = \(indices[k]) is out of range (\(I) items)")
    }
  }

  /// Throws "name[r,c] is NaN" / "name[i] is +inf" for the first non-finite value.
  static func checkFinite(_ p: UnsafePointer<Float>, rows: Int, cols: Int, name: String) throws {
    let n = rows * max(cols, 1)
    let raw = UnsafeRawPointer(p)
    var k = 0
    let mask = SIMD8<UInt32>(repeating: 0x7F80_0000)
    var bad = -1
    while k + 8 <= n {
      let v = raw.loadUnaligned(fromByteOffset: k * 4, as: SIMD8<UInt32>.self)
      if any((v & mask) .== mask) { break }
      k += 8
    }
    while k < n {
      if !p[k].isFinite {
        bad = k
        break
      }
      k += 1
    }
    if bad < 0 { return }
    let v = p[bad]
    let what = v.isNaN ? "NaN" : (v > 0 ? "+inf" : "-inf")
    let at = cols > 0 ? "[\(bad / cols),\(bad % cols)]" : "[\(bad)]"
    throw ModelLoadError("\(name)\(at) is \(what)")
  }

  static func join(_ a: String, _ b: String) -> String {
    if a.isEmpty { return b }
    return a.hasSuffix("/") ? a + b : a + "/" + b
  }
}
