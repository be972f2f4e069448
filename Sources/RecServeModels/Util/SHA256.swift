import CCrypto

/// SHA-256 over bytes via OpenSSL's libcrypto.
public enum SHA256Digest {
  /// Lowercase hex digest of `bytes`.
  public static func hex(_ bytes: UnsafeRawBufferPointer) -> String {
    let ctx = EVP_MD_CTX_new()!
    defer { EVP_MD_CTX_free(ctx) }
    EVP_DigestInit_ex(ctx, EVP_sha256(), nil)
    // Feed in 64 MiB pieces so that very large inputs never overflow a size_t conversion.
    var offset = 0
    let piece = 64 << 20
    while offset < bytes.count {
      let n = min(piece, bytes.count - offset)
      EVP_DigestUpdate(ctx, bytes.baseAddress! + offset, n)
      offset += n
    }
    var digest = [UInt8](repeating: 0, count: 32)
    var length: UInt32 = 0
    EVP_DigestFinal_ex(ctx, &digest, &length)
    return hexString(digest)
  }

  public static func hex(_ bytes: [UInt8]) -> String {
    bytes.withUnsafeBytes { hex($0) }
  }

  /// Lowercase hex digest of a file's contents (memory-mapped).
  public static func hex(ofFile path: String) throws -> String {
    let file = try MappedFile(path: path)
    return hex(file.bytes)
  }

  static func hexString(_ bytes: [UInt8]) -> String {
    let digits: [UInt8] = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
      out.append(digits[Int(b >> 4)])
      out.append(digits[Int(b & 15)])
    }
    return String(decoding: out, as: UTF8.self)
  }
}
