/// What a hybrid version keeps beside its weights to place items added after training: the
/// item feature table in the model's item order (`item_features.*`, see `FeatureTable`'s
/// storage: its schema, vocabulary, buckets and IDFs encode a new item's raw values the way
/// training did) and the content features' embeddings and biases
/// (`item_feature_embeddings.safetensors`: `embeddings` [features, dim], `biases` [features]).
/// They are listed in model.json with their checksums like every file of a version.
public struct HybridFiles: Sendable {
  public static let tablePrefix = "item_features"
  public static let embeddingsFile = "item_feature_embeddings.safetensors"

  public var itemTable: FeatureTable
  public var dim: Int
  /// features x dim, and one per feature.
  public var embeddings: [Float]
  public var biases: [Float]

  /// The version files of a trained hybrid model, by name.
  static func serialized(_ trained: HybridTrained, itemTable: FeatureTable) -> [String: [UInt8]] {
    var files = itemTable.serialized(prefix: tablePrefix)
    var tensors = SafeTensors.Writer()
    let features = trained.featureBiases.count
    tensors.add(
      "embeddings", shape: [features, trained.model.dim], trained.featureEmbeddings)
    tensors.add("biases", shape: [features], trained.featureBiases)
    tensors.metadata = ["format": "recserve-hybrid-1"]
    files[embeddingsFile] = tensors.serialize()
    return files
  }

  /// Reads a hybrid version's files from `directory`, checked: the table (see
  /// `FeatureTable.load(directory:prefix:)`), and embeddings whose shape matches its vocabulary
  /// and `dim`, every value finite. Throws a `DataError` naming the bad file.
  public static func load(directory: String, dim: Int) throws -> HybridFiles {
    let table = try FeatureTable.load(directory: directory, prefix: tablePrefix)
    let path = ModelStore.join(directory, embeddingsFile)
    let file: SafeTensors.File
    do {
      file = try SafeTensors.open(path: path, displayName: embeddingsFile)
    } catch let e as ModelLoadError {
      throw DataError(file: path, message: e.reason)
    }
    func read(_ name: String, _ shape: [Int]) throws -> [Float] {
      guard let t = file.tensors[name] else {
        throw DataError(file: path, message: "tensor '\(name)' is missing")
      }
      guard t.dtype == .F32, t.shape == shape else {
        throw DataError(
          file: path,
          message:
            "tensor '\(name)' is \(t.dtype.rawValue) \(t.shapeDescription), expected F32 \(shape) (the vocabulary has \(table.featureCount) features, dim \(dim))"
        )
      }
      let count = shape.reduce(1, *)
      let values = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
        UnsafeMutableRawBufferPointer(buffer).copyMemory(from: file.bytes(t))
        initialized = count
      }
      if let bad = values.firstIndex(where: { !$0.isFinite }) {
        throw DataError(file: path, message: "tensor '\(name)' has a non-finite value at \(bad)")
      }
      return values
    }
    return HybridFiles(
      itemTable: table, dim: dim,
      embeddings: try read("embeddings", [table.featureCount, dim]),
      biases: try read("biases", [table.featureCount]))
  }

  /// The vector and bias of an item with these features (the weighted sums of their
  /// embeddings), written to `vector` (dim values).
  public func place(
    _ features: [(feature: Int32, weight: Float)], into vector: UnsafeMutablePointer<Float>
  ) -> Float {
    vector.update(repeating: 0, count: dim)
    var bias: Float = 0
    for (f, w) in features {
      let row = Int(f) * dim
      for c in 0..<dim { vector[c] += w * embeddings[row + c] }
      bias += w * biases[Int(f)]
    }
    return bias
  }
}
