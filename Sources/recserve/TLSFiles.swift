import ArgumentParser
import CCrypto
import Foundation
import RecServeRPC

/// Reads and checks the PEM files of TLS options before gRPC gets them, so that a wrong file is
/// named at start-up (gRPC core would only fail handshakes later, with a generic error).
enum TLSFiles {
  /// Largest PEM file read (a certificate chain or a bundle of roots).
  static let maxBytes = 1 << 20

  /// The text of `path`, given as `option`; errors name both.
  static func read(_ path: String, option: String) throws -> String {
    let data = try CLIFile.read(path, option: option, maxBytes: maxBytes)
    guard let text = String(data: data, encoding: .utf8), text.contains("-----BEGIN ") else {
      throw CLIError("\(option) \(path): not a PEM file (no -----BEGIN line)")
    }
    return text
  }

  /// Certificates in `pem`; throws when there is none or one does not parse.
  static func certificates(_ pem: String, path: String, option: String) throws -> [OpaquePointer] {
    var certificates: [OpaquePointer] = []
    try withBIO(pem) { bio in
      while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
        certificates.append(certificate)
      }
    }
    ERR_clear_error()
    if certificates.isEmpty {
      throw CLIError("\(option) \(path): holds no PEM certificate that OpenSSL can read")
    }
    return certificates
  }

  /// Checks a certificate chain and its private key: both parse, the key is the certificate's,
  /// and the certificate has not expired.
  static func checkPair(chain: String, chainPath: String, key: String, keyPath: String) throws {
    let certificates = try certificates(chain, path: chainPath, option: "--tls-cert")
    defer { certificates.forEach { X509_free($0) } }
    var privateKey: OpaquePointer?
    try withBIO(key) { bio in privateKey = PEM_read_bio_PrivateKey(bio, nil, nil, nil) }
    ERR_clear_error()
    guard let privateKey else {
      throw CLIError(
        "--tls-key \(keyPath): holds no PEM private key that OpenSSL can read (an encrypted key is not supported)"
      )
    }
    defer { EVP_PKEY_free(privateKey) }
    guard X509_check_private_key(certificates[0], privateKey) == 1 else {
      ERR_clear_error()
      throw CLIError("--tls-key \(keyPath) is not the private key of --tls-cert \(chainPath)")
    }
    if X509_cmp_current_time(X509_get0_notAfter(certificates[0])) < 0 {
      throw CLIError("--tls-cert \(chainPath): the certificate has expired")
    }
  }

  /// Checks that a file of roots holds at least one certificate.
  static func checkRoots(_ pem: String, path: String, option: String) throws {
    try certificates(pem, path: path, option: option).forEach { X509_free($0) }
  }

  private static func withBIO(_ text: String, _ body: (OpaquePointer) throws -> Void) throws {
    var bytes = Array(text.utf8)
    try bytes.withUnsafeMutableBytes { buffer in
      guard let bio = BIO_new_mem_buf(buffer.baseAddress, Int32(buffer.count)) else {
        throw CLIError("cannot read PEM text (OpenSSL is out of memory)")
      }
      defer { BIO_free(bio) }
      try body(bio)
    }
  }
}

/// The TLS options of the clients (`models`, `load`): plain text unless one of them is given.
struct TLSClientOptions: ParsableArguments {
  @Flag(help: "Speak TLS to the server, verifying it against gRPC's default roots.")
  var tls = false

  @Option(
    name: .customLong("tls-ca"),
    help: ArgumentHelp(
      "Speak TLS and verify the server against these PEM roots.", valueName: "file"))
  var tlsCA: String?

  @Option(
    name: .customLong("tls-cert"),
    help: ArgumentHelp(
      "With --tls-key: present this PEM certificate chain to the server (mutual TLS).",
      valueName: "file"))
  var tlsCert: String?

  @Option(
    name: .customLong("tls-key"),
    help: ArgumentHelp("The private key (PEM) of --tls-cert.", valueName: "file"))
  var tlsKey: String?

  func validate() throws {
    if (tlsCert == nil) != (tlsKey == nil) {
      throw ValidationError("--tls-cert and --tls-key go together")
    }
  }

  /// What the channel needs; nil for plain text.
  func channelTLS() throws -> Channel.TLS? {
    guard tls || tlsCA != nil || tlsCert != nil else { return nil }
    var result = Channel.TLS()
    if let tlsCA {
      let roots = try TLSFiles.read(tlsCA, option: "--tls-ca")
      try TLSFiles.checkRoots(roots, path: tlsCA, option: "--tls-ca")
      result.rootCertificates = roots
    }
    if let tlsCert, let tlsKey {
      let chain = try TLSFiles.read(tlsCert, option: "--tls-cert")
      let key = try TLSFiles.read(tlsKey, option: "--tls-key")
      try TLSFiles.checkPair(chain: chain, chainPath: tlsCert, key: key, keyPath: tlsKey)
      result.certificateChain = chain
      result.privateKey = key
    }
    return result
  }
}
