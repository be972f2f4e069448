import Foundation
import RecServeModels

/// Several files carried in one fuzz input, and a scratch folder to write them to.
enum FuzzFiles {
  /// Separates the files of one input. Chosen so that JSON and id lists never hold it and a
  /// safetensors file holds it only by chance.
  static let marker: [UInt8] = [0x00, 0x00, 0x52, 0x53, 0x46, 0x00]  // "\0\0RSF\0"

  /// The input cut at each marker.
  static func sections(_ input: UnsafeRawBufferPointer) -> [[UInt8]] {
    var sections: [[UInt8]] = []
    var start = 0
    var index = 0
    let count = input.count
    while index + marker.count <= count {
      var match = true
      for offset in 0..<marker.count where input[index + offset] != marker[offset] {
        match = false
        break
      }
      if match {
        sections.append(Array(input[start..<index]))
        index += marker.count
        start = index
      } else {
        index += 1
      }
    }
    sections.append(Array(input[start..<count]))
    return sections
  }

  /// The inverse of `sections` (for writing seeds and regression inputs).
  static func join(_ files: [[UInt8]]) -> [UInt8] {
    var out: [UInt8] = []
    for (index, file) in files.enumerated() {
      if index > 0 { out += marker }
      out += file
    }
    return out
  }

  /// A folder of this process's own (in /dev/shm when there is one: the inputs are written
  /// thousands of times a second), removed when the process exits.
  static let root: String = {
    let base =
      FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
    let root = "\(base)/recserve-fuzz-\(getpid())"
    atexit { try? FileManager.default.removeItem(atPath: FuzzFiles.root) }
    return root
  }()

  static func fresh(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }

  static func write(_ bytes: [UInt8], to path: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0, "cannot write \(path)")
    bytes.withUnsafeBytes { buffer in
      var done = 0
      while done < buffer.count {
        let n = Foundation.write(fd, buffer.baseAddress! + done, buffer.count - done)
        precondition(n > 0, "cannot write \(path)")
        done += n
      }
    }
    close(fd)
  }
}
