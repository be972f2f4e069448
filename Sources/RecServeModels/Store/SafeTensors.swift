/// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
/// header length N, N bytes of JSON header `{"name": {"dtype": "F32", "shape": [..],
/// "data_offsets": [begin, end]}, "__metadata__": {string: string}}`, then the data buffer, which
/// the tensors cover exactly (offsets are relative to the buffer; no holes, no overlaps).
public enum SafeTensors {
  public enum DType: String, Sendable, CaseIterable {
    case BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64

    public var size: Int {
      switch self {
      case .BOOL, .U8, .I8, .F8_E5M2, .F8_E4M3: return 1
      case .I16, .U16, .F16, .BF16: return 2
      case .I32, .U32, .F32: return 4
      case .I64, .U64, .F64: return 8
      }
    }
  }

  public struct TensorInfo: Sendable, Equatable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// Absolute byte range in the file.
    public var range: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
    public var shapeDescription: String {
      "[" + shape.map(String.init).joined(separator: ", ") + "]"
    }
  }

  /// A parsed, structurally verified safetensors file, memory-mapped.
  public struct File: @unchecked Sendable {
    public let mapped: MappedFile
    public let tensors: [String: TensorInfo]
    public let metadata: [String: String]

    /// Raw bytes of a tensor (valid while `mapped` lives).
    public func bytes(_ t: TensorInfo) -> UnsafeRawBufferPointer {
      UnsafeRawBufferPointer(rebasing: mapped.bytes[t.range])
    }
  }

  /// Maps and verifies the structure of a safetensors file. Errors name `displayName` and are
  /// one-line `ModelLoadError`s.
  public static func open(path: String, displayName: String) throws -> File {
    let mapped: MappedFile
    do {
      mapped = try MappedFile(path: path)
    } catch let e as FileError {
      throw ModelLoadError("\(displayName): cannot read (\(e.reason))")
    }
    let (tensors, metadata) = try parseHeader(mapped.bytes, displayName: displayName)
    return File(mapped: mapped, tensors: tensors, metadata: metadata)
  }

  static func parseHeader(_ bytes: UnsafeRawBufferPointer, displayName name: String) throws -> (
    [String: TensorInfo], [String: String]
  ) {
    let (entries, dataStart) = try headerEntries(bytes, name: name)
    var tensors: [String: TensorInfo] = [:]
    var metadata: [String: String] = [:]
    // In name order, so that a file with several bad entries is always told the same one.
    for (key, value) in entries.sorted(by: { $0.key < $1.key }) {
      if key == "__metadata__" {
        metadata = try Self.metadata(value, name: name)
      } else {
        tensors[key] = try tensor(
          key, value, name: name, dataStart: dataStart, dataSize: bytes.count - dataStart)
      }
    }
    try checkContiguous(tensors, dataStart: dataStart, fileSize: bytes.count, name: name)
    return (tensors, metadata)
  }

  /// The header's JSON object and where the data starts, after the length checks.
  private static func headerEntries(_ bytes: UnsafeRawBufferPointer, name: String) throws -> (
    [String: JSONValue], Int
  ) {
    let size = bytes.count
    if size < 8 {
      throw ModelLoadError(
        "\(name): truncated (\(size) bytes; a safetensors file starts with an 8-byte header length)"
      )
    }
    let headerLength = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
    if headerLength > UInt64(size - 8) {
      throw ModelLoadError(
        "\(name): truncated or not safetensors (header length \(headerLength) but the file has \(size) bytes)"
      )
    }
    if headerLength > 100_000_000 {
      throw ModelLoadError("\(name): header of \(headerLength) bytes is too large")
    }
    let dataStart = 8 + Int(headerLength)
    let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<dataStart])
    let header: JSONValue
    do {
      header = try JSONValue.parse(headerBytes)
    } catch {
      throw ModelLoadError("\(name): header is not valid JSON (\(error))")
    }
    guard case .object(let entries) = header else {
      throw ModelLoadError("\(name): header is not a JSON object")
    }
    return (entries, dataStart)
  }

  /// `__metadata__`: an object of strings.
  private static func metadata(_ value: JSONValue, name: String) throws -> [String: String] {
    guard case .object(let m) = value else {
      throw ModelLoadError("\(name): __metadata__ is not an object")
    }
    var metadata: [String: String] = [:]
    for (k, v) in m.sorted(by: { $0.key < $1.key }) {
      guard case .string(let s) = v else {
        throw ModelLoadError("\(name): __metadata__.\(k) is not a string")
      }
      metadata[k] = s
    }
    return metadata
  }

  /// One tensor's entry: a known dtype, a shape of sane size, and data offsets inside the data
  /// that hold exactly its bytes.
  private static func tensor(
    _ key: String, _ value: JSONValue, name: String, dataStart: Int, dataSize: Int
  ) throws -> TensorInfo {
    guard case .object(let t) = value else {
      throw ModelLoadError("\(name): tensor '\(key)' is not an object")
    }
    guard let dtypeName = t["dtype"]?.stringValue else {
      throw ModelLoadError("\(name): tensor '\(key)' has no dtype")
    }
    guard let dtype = DType(rawValue: dtypeName) else {
      throw ModelLoadError("\(name): tensor '\(key)' has unknown dtype '\(dtypeName)'")
    }
    guard let shapeValues = t["shape"]?.arrayValue else {
      throw ModelLoadError("\(name): tensor '\(key)' has no shape")
    }
    var shape: [Int] = []
    var elements = 1
    for v in shapeValues {
      guard let d = v.intValue, d >= 0, d < (1 << 40) else {
        throw ModelLoadError("\(name): tensor '\(key)' has an invalid shape \(value["shape"]!)")
      }
      shape.append(Int(d))
      let (m, o) = elements.multipliedReportingOverflow(by: Int(d))
      if o || m > (1 << 46) {
        throw ModelLoadError("\(name): tensor '\(key)' shape is too large")
      }
      elements = m
    }
    guard let offs = t["data_offsets"]?.arrayValue, offs.count == 2,
      let b = offs[0].intValue, let e = offs[1].intValue, b >= 0, b <= e
    else {
      throw ModelLoadError("\(name): tensor '\(key)' has invalid data_offsets")
    }
    if e > Int64(dataSize) {
      throw ModelLoadError(
        "\(name): truncated: tensor '\(key)' ends at byte \(e) of the data, but there are only \(dataSize) bytes of data"
      )
    }
    let nbytes = Int(e - b)
    if nbytes != elements * dtype.size {
      throw ModelLoadError(
        "\(name): tensor '\(key)' has \(nbytes) bytes, but \(dtype.rawValue) \(TensorInfo(name: key, dtype: dtype, shape: shape, range: 0..<0).shapeDescription) needs \(elements * dtype.size)"
      )
    }
    return TensorInfo(
      name: key, dtype: dtype, shape: shape, range: (dataStart + Int(b))..<(dataStart + Int(e)))
  }

  /// No overlaps and no holes: sorted by start, each tensor begins where the previous ended,
  /// and the last ends where the file does.
  private static func checkContiguous(
    _ tensors: [String: TensorInfo], dataStart: Int, fileSize size: Int, name: String
  ) throws {
    let sorted = tensors.values.sorted {
      ($0.range.lowerBound, $0.range.upperBound) < ($1.range.lowerBound, $1.range.upperBound)
    }
    var cursor = dataStart
    for t in sorted {
      if t.range.lowerBound < cursor {
        throw ModelLoadError("\(name): tensor '\(t.name)' overlaps another tensor")
      }
      if t.range.lowerBound > cursor {
        throw ModelLoadError(
          "\(name): \(t.range.lowerBound - cursor) bytes before tensor '\(t.name)' belong to no tensor"
        )
      }
      cursor = t.range.upperBound
    }
    if cursor != size {
      throw ModelLoadError(
        "\(name): \(size - cursor) bytes after the last tensor belong to no tensor (file longer than its header says)"
      )
    }
  }

  /// Builds a safetensors file in memory. Tensors are laid out 8-byte dtypes first, then by name,
  /// with no padding between them, and the header padded with spaces so that the data starts at an
  /// 8-byte boundary: every tensor is then naturally aligned when the file is memory-mapped.
  public struct Writer {
    struct Pending {
      var name: String
      var dtype: DType
      var shape: [Int]
      var bytes: [UInt8]
      /// Set by `addBorrowed`: the caller's memory, read by `serialize` (no copy before).
      var borrowed: UnsafeRawBufferPointer? = nil

      var count: Int { borrowed?.count ?? bytes.count }
    }
    private var pending: [Pending] = []
    public var metadata: [String: String] = [:]

    public init() {}

    public mutating func add<T>(
      _ name: String, dtype: DType, shape: [Int], values: UnsafeBufferPointer<T>
    ) {
      precondition(MemoryLayout<T>.stride == dtype.size, "element size does not match dtype")
      precondition(shape.reduce(1, *) == values.count, "shape does not match element count")
      let raw = UnsafeRawBufferPointer(values)
      pending.append(Pending(name: name, dtype: dtype, shape: shape, bytes: Array(raw)))
    }

    /// Like `add`, without copying: `values` must stay valid and unchanged until `serialize`
    /// has returned (e.g. a model's tensors while it is being written), so that a large tensor
    /// is not held twice in memory.
    public mutating func addBorrowed<T>(
      _ name: String, dtype: DType, shape: [Int], values: UnsafeBufferPointer<T>
    ) {
      precondition(MemoryLayout<T>.stride == dtype.size, "element size does not match dtype")
      precondition(shape.reduce(1, *) == values.count, "shape does not match element count")
      pending.append(
        Pending(
          name: name, dtype: dtype, shape: shape, bytes: [],
          borrowed: UnsafeRawBufferPointer(values)))
    }

    public mutating func add(_ name: String, shape: [Int], _ values: [Float]) {
      values.withUnsafeBufferPointer { add(name, dtype: .F32, shape: shape, values: $0) }
    }

    public mutating func add(_ name: String, shape: [Int], _ values: [Int32]) {
      values.withUnsafeBufferPointer { add(name, dtype: .I32, shape: shape, values: $0) }
    }

    public mutating func add(_ name: String, shape: [Int], _ values: [Int64]) {
      values.withUnsafeBufferPointer { add(name, dtype: .I64, shape: shape, values: $0) }
    }

    /// The complete file.
    public func serialize() -> [UInt8] {
      let ordered = pending.sorted { a, b in
        a.dtype.size != b.dtype.size ? a.dtype.size > b.dtype.size : a.name < b.name
      }
      var entries: [String: JSONValue] = [:]
      var offset = 0
      for t in ordered {
        entries[t.name] = .object([
          "dtype": .string(t.dtype.rawValue),
          "shape": .array(t.shape.map { .int(Int64($0)) }),
          "data_offsets": .array([.int(Int64(offset)), .int(Int64(offset + t.count))]),
        ])
        offset += t.count
      }
      if !metadata.isEmpty {
        entries["__metadata__"] = .object(metadata.mapValues { .string($0) })
      }
      var header = Array(JSONValue.object(entries).serialized(pretty: false).utf8)
      while (8 + header.count) % 8 != 0 { header.append(32) }
      var out = [UInt8]()
      out.reserveCapacity(8 + header.count + offset)
      withUnsafeBytes(of: UInt64(header.count).littleEndian) { out.append(contentsOf: $0) }
      out.append(contentsOf: header)
      for t in ordered {
        if let b = t.borrowed { out.append(contentsOf: b) } else { out.append(contentsOf: t.bytes) }
      }
      return out
    }
  }
}
