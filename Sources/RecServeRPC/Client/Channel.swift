import CGRPCShim
import Foundation
import Synchronization

/// The outcome of a unary call made by `Channel`.
public struct UnaryResult: Sendable {
  public var code: StatusCode
  public var message: String
  public var response: [UInt8]
}

/// A client connection to a gRPC server (plain text, or TLS), for tests, tools and the load
/// generator.
public final class Channel: @unchecked Sendable {
  let raw: OpaquePointer
  private let handles = Mutex<[String: UnsafeMutableRawPointer]>([:])

  /// How a TLS channel verifies the server and, for mutual TLS, who it says it is (PEM text).
  public struct TLS: Sendable {
    /// Roots the server's certificate must chain to (nil: gRPC's default roots).
    public var rootCertificates: String?
    /// The client's certificate chain and private key, for servers that require one.
    public var certificateChain: String?
    public var privateKey: String?

    public init(
      rootCertificates: String? = nil, certificateChain: String? = nil, privateKey: String? = nil
    ) {
      self.rootCertificates = rootCertificates
      self.certificateChain = certificateChain
      self.privateKey = privateKey
    }
  }

  /// `target` is `host:port`; with `tls`, the channel speaks TLS (a server that does not is
  /// never reached: calls end UNAVAILABLE).
  public init(target: String, maxReceiveMessageBytes: Int = 64 << 20, tls: TLS? = nil) {
    GRPCLibrary.ensureInitialized()
    let limit = Int32(clamping: maxReceiveMessageBytes)
    if let tls {
      raw = Self.withOptionalCString(tls.rootCertificates) { root in
        Self.withOptionalCString(tls.certificateChain) { chain in
          Self.withOptionalCString(tls.privateKey) { key in
            cgrpc_channel_create_tls(target, limit, root, chain, key)
          }
        }
      }!
    } else {
      raw = cgrpc_channel_create_insecure(target, limit)
    }
  }

  static func withOptionalCString<T>(_ text: String?, _ body: (UnsafePointer<CChar>?) -> T) -> T {
    guard let text else { return body(nil) }
    return text.withCString { body($0) }
  }

  deinit {
    cgrpc_channel_destroy(raw)
  }

  /// The core's registered-call handle for a method path (registered once per channel).
  func handle(for path: String) -> UnsafeMutableRawPointer {
    handles.withLock { handles in
      if let handle = handles[path] { return handle }
      let handle = UnsafeMutableRawPointer(cgrpc_channel_register_method(raw, path))!
      handles[path] = handle
      return handle
    }
  }

  /// Makes one unary call and waits for it.
  public func unary(
    _ path: String, request: [UInt8], metadata: [(String, String)] = [], timeout: Double = 30
  ) -> UnaryResult {
    let queue = CompletionQueue()
    guard
      let call = queue.startUnary(
        self, path: path, request: request, metadata: metadata, timeout: timeout, user: nil)
    else {
      return UnaryResult(code: .internal, message: "could not start the call", response: [])
    }
    while true {
      if let event = queue.next(timeout: -1), event.owner == call {
        let result = CompletionQueue.result(of: call)
        cgrpc_client_call_destroy(call)
        return result
      }
    }
  }
}

/// A client completion queue: start unary calls on it, then collect their completions.
public final class CompletionQueue: @unchecked Sendable {
  let raw: OpaquePointer

  public init() {
    GRPCLibrary.ensureInitialized()
    raw = cgrpc_cq_create()
  }

  deinit {
    cgrpc_cq_shutdown(raw)
    cgrpc_cq_drain_and_destroy(raw)
  }

  /// A started call; free it with `CompletionQueue.finish` once its event arrived.
  public typealias Call = OpaquePointer

  public struct Event {
    public var owner: OpaquePointer
    public var ok: Bool
  }

  /// Starts a unary call whose completion arrives on this queue.
  public func startUnary(
    _ channel: Channel, path: String, request: [UInt8], metadata: [(String, String)],
    timeout: Double,
    user: UnsafeMutableRawPointer?
  ) -> Call? {
    let handle = channel.handle(for: path)
    let keys = metadata.map { strdup($0.0) }
    let values = metadata.map { strdup($0.1) }
    defer {
      keys.forEach { free($0) }
      values.forEach { free($0) }
    }
    return request.withUnsafeBytes { buffer in
      keys.map { UnsafePointer($0) }.withUnsafeBufferPointer { keyPointers in
        values.map { UnsafePointer($0) }.withUnsafeBufferPointer { valuePointers in
          cgrpc_client_unary_start(
            channel.raw, handle, raw, buffer.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!,
            buffer.count, timeout, keyPointers.baseAddress, valuePointers.baseAddress,
            metadata.count,
            user)
        }
      }
    }
  }

  /// The next completion, or nil on timeout (negative timeout: wait forever).
  public func next(timeout: Double) -> Event? {
    var kind: Int32 = 0
    var owner: UnsafeMutableRawPointer?
    var ok: Int32 = 0
    let result = cgrpc_cq_next(raw, timeout, &kind, &owner, &ok)
    guard result == CGRPC_NEXT_EVENT, let owner else { return nil }
    return Event(owner: OpaquePointer(owner), ok: ok != 0)
  }

  /// The status of a completed call (`copyResponse`: also its response bytes).
  public static func result(of call: Call, copyResponse: Bool = true) -> UnaryResult {
    let code = StatusCode(rawValue: cgrpc_client_call_status(call)) ?? .unknown
    var length = 0
    let details = cgrpc_client_call_details(call, &length)
    let message =
      length > 0
      ? String(decoding: UnsafeRawBufferPointer(start: details, count: length), as: UTF8.self) : ""
    var response: [UInt8] = []
    if copyResponse {
      let count = cgrpc_client_call_response_length(call)
      if count > 0, let bytes = cgrpc_client_call_response_bytes(call) {
        response = [UInt8](UnsafeRawBufferPointer(start: bytes, count: count))
      }
    }
    return UnaryResult(code: code, message: message, response: response)
  }

  /// Reads a completed call's response bytes in place (empty when it has none); the bytes are
  /// valid only inside `body`.
  public static func withResponse<T>(of call: Call, _ body: (UnsafeRawBufferPointer) -> T) -> T {
    let count = cgrpc_client_call_response_length(call)
    guard count > 0, let bytes = cgrpc_client_call_response_bytes(call) else {
      return body(UnsafeRawBufferPointer(start: nil, count: 0))
    }
    return body(UnsafeRawBufferPointer(start: bytes, count: count))
  }

  /// The status code of a completed call, without copying anything.
  public static func status(of call: Call) -> StatusCode {
    StatusCode(rawValue: cgrpc_client_call_status(call)) ?? .unknown
  }

  /// The user pointer given at start.
  public static func user(of call: Call) -> UnsafeMutableRawPointer? {
    cgrpc_client_call_user(call)
  }

  /// Frees a completed call.
  public static func finish(_ call: Call) {
    cgrpc_client_call_destroy(call)
  }
}
