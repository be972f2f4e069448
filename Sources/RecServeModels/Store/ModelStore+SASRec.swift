/// The SASRec version format: the network's tensors under their PyTorch state-dict names
/// (`SASRecLayout`), each user's training sequence, and optionally the users' states and
/// training history. See README "The model directory".
extension ModelStore {
  /// Tensors of a SASRec version that are not network parameters.
  static let sasrecDataTensors: Set<String> = [
    "user_states", "sequence_indptr", "sequence_items", "seen_indptr", "seen_indices",
    "item_popularity",
  ]

  /// Users whose stored state is recomputed at load to check that the tensors and the network
  /// agree (a state stored by another implementation must match within `stateTolerance`).
  static let checkedStates = 32
  static let stateTolerance: Float = 1e-3

  static func serializeWeights(_ model: SASRecModel) -> [UInt8] {
    let U = model.userCount
    let d = model.dim
    var w = SafeTensors.Writer()
    for t in model.layout.tensors {
      w.addBorrowed(
        t.name, dtype: .F32, shape: t.shape,
        values: UnsafeBufferPointer(start: model.parameters + t.offset, count: t.count))
    }
    w.addBorrowed(
      "user_states", dtype: .F32, shape: [U, d],
      values: UnsafeBufferPointer(start: model.userStates, count: U * d))
    w.addBorrowed(
      "sequence_indptr", dtype: .I64, shape: [U + 1],
      values: UnsafeBufferPointer(start: model.sequenceIndptr, count: U + 1))
    w.addBorrowed(
      "sequence_items", dtype: .I32, shape: [model.sequenceCount],
      values: UnsafeBufferPointer(start: model.sequenceItems, count: model.sequenceCount))
    addHistory(
      to: &w, indptr: model.seenIndptr, indices: model.seenIndices, count: model.seenCount,
      popularity: model.itemPopularity, users: U, kind: model.kind)
    return withExtendedLifetime(model) { w.serialize() }
  }

  /// Reads a SASRec version: the architecture from model.json (`heads`, optional
  /// `layer_norm_eps`) and the tensors' shapes, every parameter (finite, of its exact shape),
  /// the sequences (indices in range); the stored user states, when present, must match the
  /// network's own output for a sample of users.
  static func buildSASRec(
    tensors: [String: SafeTensors.TensorInfo], mapped: MappedFile, manifest: ModelManifest,
    userIds: [String], userLookup: [String: Int32], itemIds: [String], itemLookup: [String: Int32]
  ) throws -> SASRecModel {
    let U = userIds.count
    let I = itemIds.count
    let reader = TensorReader(tensors: tensors, mapped: mapped)
    let (architecture, layout) = try sasrecArchitecture(
      reader, manifest: manifest, users: U, items: I)
    let parameters = try sasrecParameters(reader, layout: layout, dim: architecture.dim)
    let sequences = try sasrecSequences(reader, users: U, items: I)
    let history = try readHistory(
      reader, users: U, items: I, sequences: (sequences.indptr, sequences.items))
    let states = try storedStates(reader, users: U, dim: architecture.dim)
    let model = SASRecModel(
      userIds: userIds, itemIds: itemIds, userLookup: userLookup, itemLookup: itemLookup,
      architecture: architecture,
      tensors: SASRecModel.Tensors(
        parameters: UnsafePointer(parameters), userStates: states,
        sequenceIndptr: sequences.indptr, sequenceItems: sequences.items,
        sequenceCount: sequences.count, seenIndptr: history.indptr,
        seenIndices: history.indices, seenCount: history.count,
        itemPopularity: history.popularity),
      memory: reader.owners)
    if states != nil { try verifyStates(model) }
    return model
  }

  /// The architecture from the tensors' shapes and model.json (`heads`, optional
  /// `layer_norm_eps`, and `maxlen`/`blocks`/`dim` when given must agree); no stray tensors.
  private static func sasrecArchitecture(
    _ reader: TensorReader, manifest: ModelManifest, users U: Int, items I: Int
  ) throws -> (SASRecArchitecture, SASRecLayout) {
    let tensors = reader.tensors
    let hyper = manifest.hyperparameters
    let embedding = try reader.tensor("item_emb.weight", .F32)
    guard embedding.shape.count == 2, embedding.shape[1] >= 1 else {
      throw ModelLoadError(
        "item_emb.weight: shape \(embedding.shapeDescription) is not [items + 1, dim]")
    }
    let d = embedding.shape[1]
    try TensorReader.expect(
      embedding, [I + 1, d],
      "items.txt has \(I) lines (expected [\(I + 1), \(d)]: row 0 is padding)")
    if let want = manifest.counts["dim"]?.intValue, want != d {
      throw ModelLoadError(
        "item_emb.weight: shape \(embedding.shapeDescription) but model.json says dim \(want)")
    }
    let positions = try reader.tensor("pos_emb.weight", .F32)
    guard positions.shape.count == 2, positions.shape[0] >= 1, positions.shape[1] == d else {
      throw ModelLoadError(
        "pos_emb.weight: shape \(positions.shapeDescription) is not [maxlen, \(d)]")
    }
    let maxlen = positions.shape[0]
    if let want = hyper["maxlen"]?.intValue, Int(want) != maxlen {
      throw ModelLoadError(
        "pos_emb.weight: \(maxlen) rows but model.json says maxlen \(want)")
    }
    var blocks = 0
    while tensors["attention_layers.\(blocks).in_proj_weight"] != nil { blocks += 1 }
    if blocks == 0 {
      throw ModelLoadError(
        "\(weightsFile): tensor 'attention_layers.0.in_proj_weight' is missing (no attention block)"
      )
    }
    if let want = hyper["blocks"]?.intValue, Int(want) != blocks {
      throw ModelLoadError(
        "\(weightsFile): \(blocks) attention blocks but model.json says blocks \(want)")
    }
    guard let headsValue = hyper["heads"]?.intValue else {
      throw ModelLoadError(
        "model.json: hyperparameters.heads is missing (kind sasrec needs the number of attention heads)"
      )
    }
    let heads = Int(headsValue)
    guard heads >= 1, d % heads == 0 else {
      throw ModelLoadError("model.json: hyperparameters.heads \(heads) does not divide dim \(d)")
    }
    var epsilon: Float = 1e-8
    if let e = hyper["layer_norm_eps"] {
      guard let v = e.doubleValue, v > 0, v.isFinite else {
        throw ModelLoadError("model.json: hyperparameters.layer_norm_eps must be a positive number")
      }
      epsilon = Float(v)
    }
    try checkCounts(manifest, users: U, items: I)
    let layout = SASRecLayout(dim: d, heads: heads, blocks: blocks, maxlen: maxlen, items: I)
    let known = Set(layout.tensors.map(\.name)).union(sasrecDataTensors)
    if let stray = tensors.keys.sorted().first(where: { !known.contains($0) }) {
      throw ModelLoadError(
        "\(weightsFile): unexpected tensor '\(stray)' for a SASRec of \(blocks) block(s)")
    }

    let architecture = SASRecArchitecture(
      dim: d, maxlen: maxlen, blocks: blocks, heads: heads, layerNormEpsilon: epsilon)
    return (architecture, layout)
  }

  /// Every parameter (finite, of its exact shape) copied into one buffer in layout order.
  private static func sasrecParameters(_ reader: TensorReader, layout: SASRecLayout, dim d: Int)
    throws -> UnsafeMutablePointer<Float>
  {
    let memory = TensorMemory(byteCount: layout.count * 4)
    reader.owners.append(memory)
    let parameters = memory.base.bindMemory(to: Float.self, capacity: layout.count)
    parameters.initialize(repeating: 0, count: layout.count)
    for t in layout.tensors {
      let info = try reader.tensor(t.name, .F32)
      // Conv1d weights may keep their kernel dimension of 1.
      let ok =
        info.shape == t.shape
        || (t.name.hasSuffix("conv1.weight") || t.name.hasSuffix("conv2.weight"))
          && info.shape == t.shape + [1]
      if !ok {
        throw ModelLoadError(
          "\(t.name): shape \(info.shapeDescription), expected [\(t.shape.map(String.init).joined(separator: ", "))]"
        )
      }
      let source = reader.pointer(info, Float.self)
      let rows = t.shape.count == 2 ? t.shape[0] : t.count
      try checkFinite(source, rows: rows, cols: t.shape.count == 2 ? t.shape[1] : 0, name: t.name)
      (parameters + t.offset).update(from: source, count: t.count)
    }
    // The padding row takes no part; keep it zero whatever the file holds.
    (parameters + layout.itemEmbedding).update(repeating: 0, count: d)

    return parameters
  }

  /// Each user's training sequence (indices in range).
  private static func sasrecSequences(_ reader: TensorReader, users U: Int, items I: Int) throws
    -> (indptr: UnsafePointer<Int64>, items: UnsafePointer<Int32>, count: Int)
  {
    let sip = try reader.tensor("sequence_indptr", .I64)
    try TensorReader.expect(sip, [U + 1], "users.txt has \(U) lines (expected [\(U + 1)])")
    let six = try reader.tensor("sequence_items", .I32)
    guard six.shape.count == 1 else {
      throw ModelLoadError("sequence_items: shape \(six.shapeDescription) is not 1-dimensional")
    }
    let pSeqIndptr = reader.pointer(sip, Int64.self)
    let pSeqItems = reader.pointer(six, Int32.self)
    try checkCSR(
      indptr: pSeqIndptr, indices: pSeqItems, count: six.shape[0], users: U, items: I,
      name: "sequence", indicesName: "sequence_items")
    return (pSeqIndptr, pSeqItems, six.shape[0])
  }

  /// `user_states` when stored: F32 [users, dim], finite.
  private static func storedStates(_ reader: TensorReader, users U: Int, dim d: Int) throws
    -> UnsafePointer<Float>?
  {
    var states: UnsafePointer<Float>? = nil
    if let st = reader.tensors["user_states"] {
      guard st.dtype == .F32 else {
        throw ModelLoadError("user_states: dtype \(st.dtype.rawValue), expected F32")
      }
      try TensorReader.expect(st, [U, d], "users.txt has \(U) lines and dim is \(d)")
      let p = reader.pointer(st, Float.self)
      try checkFinite(p, rows: U, cols: d, name: "user_states")
      states = p
    }
    return states
  }

  /// Recomputes the state of up to `checkedStates` users spread over the file and compares.
  static func verifyStates(_ model: SASRecModel) throws {
    let U = model.userCount
    let d = model.dim
    guard U > 0 else { return }
    let step = max(1, U / checkedStates)
    var state = [Float](repeating: 0, count: d)
    for u in stride(from: 0, to: U, by: step) {
      let sequence = model.sequence(user: Int32(u))
      let stored = model.userStates + u * d
      if sequence.isEmpty {
        for k in 0..<d where stored[k] != 0 {
          throw ModelLoadError(
            "user_states[\(u)] is not zero but user \(u) has an empty sequence")
        }
        continue
      }
      state.withUnsafeMutableBufferPointer { out in
        model.encode(
          history: sequence, recent: UnsafeBufferPointer(start: nil, count: 0),
          into: out.baseAddress!)
      }
      for k in 0..<d where abs(state[k] - stored[k]) > stateTolerance * max(1, abs(state[k])) {
        throw ModelLoadError(
          "user_states[\(u),\(k)] = \(stored[k]) but the network gives \(state[k]) for that user's sequence (weights and states do not belong together)"
        )
      }
    }
  }
}
