import Foundation
import RecServeModels
import RecServeServing

/// Fuzz target for the model directory loader. An input is the files of one version, cut by
/// `FuzzFiles.marker`: model.json, weights.safetensors, users.txt, items.txt and the model's
/// labels.json (a missing section leaves its file out). In model.json, `@sha:FILE@` stands for
/// the checksum of FILE as written, so that mutated weights still pass the checksum and reach
/// the parsers behind it (a mutated placeholder is a checksum mismatch, also worth reaching).
///
/// What must hold for every input: the loader returns a model, or throws a `ModelLoadError`
/// with a reason; labels.json is read or refused with a `LabelReadError`; and a model it
/// returns can be served: the indexes the server builds at load (IVF, half precision) and
/// every scoring entry point work on it without a crash.
public enum FuzzModelDirectory {
  static let files = [
    ModelStore.manifestFile, ModelStore.weightsFile, ModelStore.usersFile, ModelStore.itemsFile,
  ]
  /// A hybrid version's files, after labels.json (section 5 on): its feature table and
  /// embeddings (checksummed like the others) and its added items.
  static let hybridFiles =
    FeatureTable.storedFileNames(prefix: HybridFiles.tablePrefix) + [
      HybridFiles.embeddingsFile, HybridAdditions.fileName,
    ]

  public static func run(_ input: UnsafeRawBufferPointer) {
    let sections = FuzzFiles.sections(input)
    let modelDirectory = FuzzFiles.root + "/models/m"
    let versionDirectory = modelDirectory + "/1"
    FuzzFiles.fresh(versionDirectory)
    var manifest = sections[0]
    for (index, file) in files.enumerated().dropFirst() where index < sections.count {
      FuzzFiles.write(sections[index], to: versionDirectory + "/" + file)
      let placeholder = Array("@sha:\(file)@".utf8)
      let digest = Array(SHA256Digest.hex(sections[index]).utf8)
      manifest = replacing(placeholder, with: digest, in: manifest)
    }
    for (index, file) in hybridFiles.enumerated() where index + 5 < sections.count {
      FuzzFiles.write(sections[index + 5], to: versionDirectory + "/" + file)
      let placeholder = Array("@sha:\(file)@".utf8)
      let digest = Array(SHA256Digest.hex(sections[index + 5]).utf8)
      manifest = replacing(placeholder, with: digest, in: manifest)
    }
    FuzzFiles.write(manifest, to: versionDirectory + "/" + ModelStore.manifestFile)
    if sections.count > 4 {
      FuzzFiles.write(sections[4], to: modelDirectory + "/labels.json")
    }

    do {
      _ = try LabelStore.load(modelDirectory: modelDirectory)
    } catch {
      precondition(!error.description.isEmpty)
    }
    let loaded: LoadedModel
    do {
      loaded = try ModelStore.load(versionDirectory: versionDirectory)
    } catch let error as ModelLoadError {
      precondition(!error.reason.isEmpty, "a ModelLoadError without a reason")
      return
    } catch {
      preconditionFailure("the loader threw \(type(of: error)), not a ModelLoadError: \(error)")
    }
    // As the registry loads a version: a hybrid one with its feature files and added items.
    let served: LoadedModel
    do {
      served = try ModelRegistry.withAdditions(loaded).0
    } catch let error as DataError {
      precondition(!error.description.isEmpty, "a DataError without a message")
      return
    } catch {
      preconditionFailure("a hybrid version's files threw \(type(of: error)): \(error)")
    }
    serve(served)
  }

  /// What the server does with a version it loaded, on a small scale.
  static func serve(_ loaded: LoadedModel) {
    var indexes = IndexOptions()
    indexes.f16 = true
    indexes.ivfMinItems = 1
    let served = ServedVersion(name: "m", version: 1, loaded: loaded, indexes: indexes)
    let model = served.model
    let items = model.itemCount
    precondition(model.userIds.count == model.userCount && model.itemIds.count == items)
    precondition(model.dim > 0, "a model with dimension \(model.dim) was accepted")
    let scores = UnsafeMutablePointer<Float>.allocate(capacity: max(items, 1))
    defer { scores.deallocate() }
    let vector = UnsafeMutablePointer<Float>.allocate(capacity: model.dim)
    defer { vector.deallocate() }
    _ = model.predict(user: nil, item: nil)
    if items > 0 {
      _ = model.predict(user: nil, item: 0)
      _ = model.itemPopularity[items - 1]
    }
    if model.userCount > 0 {
      let last = Int32(model.userCount - 1)
      _ = model.predict(user: last, item: items > 0 ? Int32(items - 1) : nil)
      if items > 0 { model.scoreAll(user: last, into: scores) }
      for item in model.seenItems(user: last) {
        precondition(item >= 0 && Int(item) < items, "a seen item out of range")
      }
      _ = model.queryWork(user: last, recentCount: 2)
    }
    if items > 0 {
      let recent: [Int32] = items > 1 ? [0, Int32(items - 1)] : [0]
      let offset = recent.withUnsafeBufferPointer {
        model.query(user: nil, recentItems: $0, into: vector)
      }
      if let offset {
        model.scoreAll(query: vector, offset: offset, into: scores)
        recent.withUnsafeBufferPointer {
          model.scoreItems(query: vector, offset: offset, items: $0, into: scores)
        }
      }
    }
  }

  static func replacing(_ target: [UInt8], with replacement: [UInt8], in bytes: [UInt8])
    -> [UInt8]
  {
    guard bytes.count >= target.count else { return bytes }
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var index = 0
    while index < bytes.count {
      if index + target.count <= bytes.count, bytes[index] == target[0],
        Array(bytes[index..<index + target.count]) == target
      {
        out += replacement
        index += target.count
      } else {
        out.append(bytes[index])
        index += 1
      }
    }
    return out
  }
}
