extension FeatureTable {
  /// The arrays of a saved table's `PREFIX.safetensors`, checked against its schema.
  struct StoredMatrix {
    var rowStart: [Int32]
    var featureIndex: [Int32]
    var weight: [Float]
    /// One per feature.
    var idf: [Float]

    static func read(_ path: String, schema: StoredSchema) throws -> StoredMatrix {
      let display = "safetensors"
      let file: SafeTensors.File
      do {
        file = try SafeTensors.open(path: path, displayName: display)
      } catch let e as ModelLoadError {
        let reason =
          e.reason.hasPrefix(display + ": ")
          ? String(e.reason.dropFirst(display.count + 2)) : e.reason
        throw DataError(file: path, message: reason)
      }
      func fail(_ message: String) -> DataError { DataError(file: path, message: message) }
      func tensor<T>(_ name: String, _ dtype: SafeTensors.DType, _ count: Int, _: T.Type) throws
        -> [T]
      {
        guard let t = file.tensors[name] else { throw fail("tensor '\(name)' is missing") }
        guard t.dtype == dtype, t.shape == [count] else {
          throw fail(
            "tensor '\(name)' is \(t.dtype.rawValue) \(t.shapeDescription), expected \(dtype.rawValue) [\(count)]"
          )
        }
        let bytes = file.bytes(t)
        return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
          UnsafeMutableRawBufferPointer(buffer).copyMemory(from: bytes)
          initialized = count
        }
      }
      let matrix = StoredMatrix(
        rowStart: try tensor("row_start", .I32, schema.rows + 1, Int32.self),
        featureIndex: try tensor("feature_index", .I32, schema.nonzeros, Int32.self),
        weight: try tensor("weight", .F32, schema.nonzeros, Float.self),
        idf: try tensor("idf", .F32, schema.features, Float.self))
      try matrix.check(features: schema.features, fail: fail)
      return matrix
    }

    /// CSR structure, indexes in range and increasing in a row, finite positive values.
    private func check(features: Int, fail: (String) -> DataError) throws {
      let nonzeros = featureIndex.count
      if rowStart.first != 0 || rowStart.last != Int32(nonzeros) {
        throw fail(
          "row_start must start at 0 and end at \(nonzeros) (the entries), got \(rowStart.first!)...\(rowStart.last!)"
        )
      }
      for r in 0..<(rowStart.count - 1) {
        let (a, b) = (Int(rowStart[r]), Int(rowStart[r + 1]))
        if b < a {
          throw fail("row_start[\(r + 1)] = \(b) is less than row_start[\(r)] = \(a)")
        }
        for k in a..<b {
          let f = featureIndex[k]
          if f < 0 || Int(f) >= features {
            throw fail("feature_index[\(k)] = \(f) is out of range (\(features) features)")
          }
          if k > a && f <= featureIndex[k - 1] {
            throw fail(
              "feature_index[\(k)] = \(f) does not increase within row \(r) (after \(featureIndex[k - 1]))"
            )
          }
        }
      }
      for (name, values) in [("weight", weight), ("idf", idf)] {
        if let k = values.firstIndex(where: { !($0.isFinite && $0 > 0) }) {
          throw fail("\(name)[\(k)] = \(values[k]) is not a finite positive number")
        }
      }
    }
  }
}
