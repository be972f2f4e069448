import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// What a `--host` value means for who can reach the server.
public enum HostAddress {
  /// Whether `host` reaches only this machine: `localhost`, an IPv4 address in 127.0.0.0/8,
  /// `::1`, or an IPv4-mapped loopback address (`::ffff:127.0.0.1`); brackets are allowed around
  /// IPv6 addresses. Anything else (`0.0.0.0`, `::`, another address, a host name) is not.
  public static func isLoopback(_ host: String) -> Bool {
    var name = host
    if name.hasPrefix("[") && name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
    if name.lowercased() == "localhost" { return true }
    var v4 = in_addr()
    if inet_pton(AF_INET, name, &v4) == 1 {
      return UInt32(bigEndian: v4.s_addr) >> 24 == 127
    }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, name, &v6) == 1 {
      let bytes = withUnsafeBytes(of: &v6) { Array($0) }
      if bytes[0..<15].allSatisfy({ $0 == 0 }) && bytes[15] == 1 { return true }
      // ::ffff:a.b.c.d, an IPv4-mapped address.
      if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
        return bytes[12] == 127
      }
    }
    return false
  }
}
