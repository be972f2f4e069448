import CGRPCShim
import Foundation
import Synchronization

/// One server call: owns its C record (`cgrpc_server_call`) and frees it exactly once, when every
/// operation posted on it has completed and its final status went out (or it never started).
///
/// A call lives on the completion queue that accepted it: every event about it is handled by that
/// queue's thread. Only server-streaming handlers, which run on a thread of their own, post sends
/// from elsewhere; they serialize their batches with `sendLock`.
final class ServerCall: @unchecked Sendable {
  let raw: OpaquePointer
  unowned let worker: ServerWorker
  /// The registered method, or nil for a call to an unregistered method.
  let method: RegisteredMethod?

  /// Twice the number of operations in flight, plus 1 once the call is finished (final status
  /// posted, or abandoned). The call frees itself when this drops to exactly 1.
  private let state = Atomic<Int>(0)
  let cancelledFlag = Atomic<Bool>(false)

  // Server streaming: one send in flight at a time; the writer waits for its completion.
  let sendLock = Mutex<Void>(())
  let sendDone = DispatchSemaphore(value: 0)
  let lastSendOK = Atomic<Bool>(true)

  // Bidirectional streaming: responses waiting to go out, one at a time (queue thread only).
  var pendingResponses: [[UInt8]] = []
  var context: ServerContext?
  /// Client streaming: where the requests go (set on the queue thread before the first read).
  var receiver: (any ClientStreamReceiver)?
  /// The final status of a bidirectional stream was posted (queue thread only).
  var isFinishing = false
  /// When the call was accepted (`DispatchTime` nanoseconds).
  var arrival: UInt64 = 0
  /// Where the call's outcome is counted, and the call itself while it is allocated.
  let stats: MethodStats
  /// A second place its outcome is counted (`ServerContext.count(in:)`); set by the handler
  /// before the call finishes.
  var alsoCountedIn: MethodStats?

  init(worker: ServerWorker, method: RegisteredMethod?) {
    self.worker = worker
    self.method = method
    self.stats = method?.stats ?? worker.server.unknownMethodStats
    stats.liveCalls.wrappingIncrement(ordering: .relaxed)
    self.raw = cgrpc_server_call_create(nil)
    cgrpc_server_call_set_user(raw, Unmanaged.passRetained(self).toOpaque())
  }

  deinit {
    cgrpc_server_call_destroy(raw)
    stats.liveCalls.wrappingDecrement(ordering: .releasing)
  }

  static func from(_ owner: UnsafeMutableRawPointer) -> ServerCall {
    let user = cgrpc_server_call_user(OpaquePointer(owner))!
    return Unmanaged<ServerCall>.fromOpaque(user).takeUnretainedValue()
  }

  // MARK: life cycle

  /// Records an operation posted (call before posting).
  @inline(__always) func operationStarted() {
    state.add(2, ordering: .acquiringAndReleasing)
  }

  /// Records an operation that completed (or failed to post).
  @inline(__always) func operationEnded() {
    let (_, now) = state.subtract(2, ordering: .acquiringAndReleasing)
    if now == 1 { release() }
  }

  /// Marks the call finished without a final status (accept failed, or the stream broke).
  func abandon() {
    let (_, now) = state.add(1, ordering: .acquiringAndReleasing)
    if now == 1 { release() }
  }

  private func release() {
    // A bidirectional stream's context refers back to this call: drop it, or the two keep each
    // other alive and the call (with its grpc_call) leaks once per stream.
    context = nil
    receiver = nil
    Unmanaged.passUnretained(self).release()
  }

  // MARK: operations

  func startRecvClose() {
    operationStarted()
    if cgrpc_server_call_start_recv_close(raw) != 0 { operationEnded() }
  }

  func startRecvMessage() -> Bool {
    operationStarted()
    if cgrpc_server_call_start_recv_message(raw) != 0 {
      operationEnded()
      return false
    }
    return true
  }

  /// Posts a message without status. Returns false when the batch could not start.
  func startSendMessage(_ bytes: [UInt8]) -> Bool {
    operationStarted()
    let error = bytes.withUnsafeBytes { buffer -> Int32 in
      cgrpc_server_call_start_send(
        raw, buffer.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, buffer.count, 0, 0, nil, 0)
    }
    if error != 0 {
      operationEnded()
      return false
    }
    return true
  }

  /// Ends the call with the status `error` stands for (see `StatusReporting`): a reported
  /// status as it is; any other error as INTERNAL with a generic message and the request id,
  /// its description only in `onCallFailed`.
  func finish(error: any Error) {
    if let reported = error as? any StatusReporting {
      finish(message: nil, code: reported.statusCode, details: reported.statusMessage)
    } else {
      finish(message: nil, code: .internal, details: "", unexpected: String(describing: error))
    }
  }

  /// Posts the final batch: an optional message, then the status. Finishes the call. With
  /// `unexpected` (the description of an error nobody meant a client to see), the client is
  /// told only that an internal error happened and under which request id it was logged.
  func finish(message: [UInt8]?, code: StatusCode, details: String, unexpected: String? = nil) {
    let nanoseconds = DispatchTime.now().uptimeNanoseconds &- arrival
    stats.record(code, nanoseconds: nanoseconds)
    alsoCountedIn?.record(code, nanoseconds: nanoseconds)
    var details = details
    if code != .ok {
      // A failed call carries a request id back (the client's x-request-id, or a new one) and
      // is reported with it, so the client's error and the server's log line can be matched.
      let id = RequestID.from(metadataValue(RequestID.header)) ?? RequestID.next()
      _ = cgrpc_server_call_set_response_metadata(raw, RequestID.header, id)
      // The log gets an unexpected error's own words; the client only where to find them.
      worker.server.onCallFailed?(
        FailedCall(method: stats.path, code: code, message: unexpected ?? details, requestID: id))
      if unexpected != nil {
        details = "internal error (request id \(id)); the server's log has the details"
      }
    }
    // The finished bit and the send's count go up together, so a completing operation on
    // another thread never sees "nothing in flight, finished" before this send is counted.
    state.add(3, ordering: .acquiringAndReleasing)
    let error = details.withUTF8 { text -> Int32 in
      if let message {
        return message.withUnsafeBytes { buffer in
          cgrpc_server_call_start_send(
            raw, buffer.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, buffer.count, 1,
            code.rawValue, text.baseAddress, text.count)
        }
      }
      return cgrpc_server_call_start_send(
        raw, nil, 0, 1, code.rawValue, text.baseAddress, text.count)
    }
    if error != 0 { operationEnded() }
  }

  // MARK: request data

  var deadlineRemaining: Double { cgrpc_server_call_deadline_remaining(raw) }

  var hasPayload: Bool { cgrpc_server_call_has_payload(raw) != 0 }

  /// The request payload as bytes aliasing gRPC's buffer (valid until `clearPayload`).
  func payloadAlias() -> Data {
    let count = cgrpc_server_call_payload_length(raw)
    guard count > 0, let bytes = cgrpc_server_call_payload_bytes(raw) else { return Data() }
    return Data(
      bytesNoCopy: UnsafeMutableRawPointer(mutating: bytes), count: count, deallocator: .none)
  }

  /// A copy of the request payload.
  func payloadCopy() -> [UInt8] {
    let count = cgrpc_server_call_payload_length(raw)
    guard count > 0, let bytes = cgrpc_server_call_payload_bytes(raw) else { return [] }
    return [UInt8](UnsafeRawBufferPointer(start: bytes, count: count))
  }

  func clearPayload() { cgrpc_server_call_clear_payload(raw) }

  /// The method path of an unregistered call.
  func unregisteredMethodPath() -> String {
    var length = 0
    guard let bytes = cgrpc_server_call_method(raw, &length) else { return "" }
    return String(decoding: UnsafeRawBufferPointer(start: bytes, count: length), as: UTF8.self)
  }

  func metadataValue(_ key: String) -> String? {
    let count = cgrpc_server_call_metadata_count(raw)
    guard count > 0 else { return nil }
    var key = key
    return key.withUTF8 { wanted -> String? in
      for index in 0..<count {
        var keyPointer: UnsafePointer<CChar>?
        var keyLength = 0
        var valuePointer: UnsafePointer<CChar>?
        var valueLength = 0
        cgrpc_server_call_metadata(raw, index, &keyPointer, &keyLength, &valuePointer, &valueLength)
        guard keyLength == wanted.count, let keyPointer else { continue }
        if memcmp(keyPointer, wanted.baseAddress!, keyLength) == 0 {
          guard let valuePointer else { return "" }
          return String(
            decoding: UnsafeRawBufferPointer(start: valuePointer, count: valueLength), as: UTF8.self
          )
        }
      }
      return nil
    }
  }

  func allMetadata() -> [(String, String)] {
    let count = cgrpc_server_call_metadata_count(raw)
    var result: [(String, String)] = []
    result.reserveCapacity(count)
    for index in 0..<count {
      var keyPointer: UnsafePointer<CChar>?
      var keyLength = 0
      var valuePointer: UnsafePointer<CChar>?
      var valueLength = 0
      cgrpc_server_call_metadata(raw, index, &keyPointer, &keyLength, &valuePointer, &valueLength)
      let key = String(
        decoding: UnsafeRawBufferPointer(start: keyPointer, count: keyLength), as: UTF8.self)
      let value = String(
        decoding: UnsafeRawBufferPointer(start: valuePointer, count: valueLength), as: UTF8.self)
      result.append((key, value))
    }
    return result
  }
}

/// A method path registered with the server, and how to serve it.
final class RegisteredMethod: @unchecked Sendable {
  let path: String
  let handler: MethodHandler
  let stats: MethodStats
  /// The core's handle, set at start.
  var handle: UnsafeMutableRawPointer?

  init(path: String, handler: MethodHandler) {
    self.path = path
    self.handler = handler
    self.stats = MethodStats(path: path)
  }
}
