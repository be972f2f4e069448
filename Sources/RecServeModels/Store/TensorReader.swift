/// Typed access to the tensors of a memory-mapped safetensors file while a model is built from
/// it: lookups that name what is missing or of the wrong type, and pointers into the mapping
/// (a tensor that is not naturally aligned is copied into aligned memory). `owners` keeps the
/// mapping and every copy alive; the model built takes it.
final class TensorReader {
  let tensors: [String: SafeTensors.TensorInfo]
  let mapped: MappedFile
  var owners: [AnyObject]

  init(tensors: [String: SafeTensors.TensorInfo], mapped: MappedFile) {
    self.tensors = tensors
    self.mapped = mapped
    self.owners = [mapped]
  }

  /// The tensor `name`, which must exist with `dtype`.
  func tensor(_ name: String, _ dtype: SafeTensors.DType) throws -> SafeTensors.TensorInfo {
    guard let t = tensors[name] else {
      throw ModelLoadError("\(ModelStore.weightsFile): tensor '\(name)' is missing")
    }
    guard t.dtype == dtype else {
      throw ModelLoadError("\(name): dtype \(t.dtype.rawValue), expected \(dtype.rawValue)")
    }
    return t
  }

  func pointer<T>(_ t: SafeTensors.TensorInfo, _ type: T.Type) -> UnsafePointer<T> {
    let raw = mapped.bytes.baseAddress.map { $0 + t.range.lowerBound }
    let n = t.range.count
    if let raw, Int(bitPattern: raw) % MemoryLayout<T>.alignment == 0 {
      return raw.assumingMemoryBound(to: T.self)
    }
    let mem = TensorMemory(byteCount: n)
    owners.append(mem)
    if let raw, n > 0 { mem.base.copyMemory(from: raw, byteCount: n) }
    return UnsafePointer(mem.base.assumingMemoryBound(to: T.self))
  }

  static func expect(_ t: SafeTensors.TensorInfo, _ shape: [Int], _ why: String) throws {
    if t.shape != shape {
      throw ModelLoadError("\(t.name): shape \(t.shapeDescription) but \(why)")
    }
  }
}
