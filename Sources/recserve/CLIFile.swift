import Foundation

/// Files the CLI reads whole (request files, id lists, PEM files): every failure names the
/// option and the path.
enum CLIFile {
  /// The bytes of `path`, given as `option`; a file over `maxBytes` is refused before it is read.
  static func read(_ path: String, option: String, maxBytes: Int? = nil) throws -> Data {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw CLIError("\(option) \(path): no such file")
    }
    guard !isDirectory.boolValue else { throw CLIError("\(option) \(path): is a directory") }
    if let maxBytes,
      let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int,
      size > maxBytes
    {
      throw CLIError("\(option) \(path): \(size) bytes, more than the \(maxBytes) read")
    }
    guard let data = FileManager.default.contents(atPath: path) else {
      throw CLIError("\(option) \(path): cannot read it (permissions?)")
    }
    return data
  }
}
