import Foundation
import Synchronization
import Testing

@testable import RecServeRPC

/// Starts a real server on a free loopback port with a few handlers.
private func startServer(threads: Int = 2) throws -> RPCServer {
  let server = RPCServer(configuration: .init(host: "127.0.0.1", port: 0, threads: threads))
  server.register(
    "/test.Echo/Echo",
    .unary { _, request in
      [UInt8](request)
    })
  server.register(
    "/test.Echo/Fail",
    .unary { _, request in
      throw RPCError.invalidArgument("field 'k' must be positive, got \(request.count)")
    })
  server.register(
    "/test.Echo/Metadata",
    .unary { context, _ in
      Array((context.metadata("authorization") ?? "<none>").utf8)
    })
  server.register(
    "/test.Echo/Slow",
    .unary { _, request in
      usleep(200_000)
      return [UInt8](request)
    })
  try server.start()
  return server
}

@Suite struct RPCServerTests {
  @Test func unaryRoundTrip() throws {
    let server = try startServer()
    defer { server.shutdown(gracePeriod: 1) }
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    let payload: [UInt8] = Array("hello over gRPC core".utf8)
    let result = channel.unary("/test.Echo/Echo", request: payload)
    #expect(result.code == .ok)
    #expect(result.response == payload)
    // An empty message is a valid message.
    let empty = channel.unary("/test.Echo/Echo", request: [])
    #expect(empty.code == .ok)
    #expect(empty.response.isEmpty)
  }

  @Test func largeMessageIsEchoedWhole() throws {
    let server = try startServer()
    defer { server.shutdown(gracePeriod: 1) }
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    let payload = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    let result = channel.unary("/test.Echo/Echo", request: payload)
    #expect(result.code == .ok)
    #expect(result.response == payload)
  }

  @Test func statusAndMessageReachTheClient() throws {
    let server = try startServer()
    defer { server.shutdown(gracePeriod: 1) }
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    let result = channel.unary("/test.Echo/Fail", request: [1, 2, 3])
    #expect(result.code == .invalidArgument)
    #expect(result.message == "field 'k' must be positive, got 3")
  }

  /// An error that reports no status is a bug: every kind of handler answers INTERNAL with a
  /// generic message naming the request id, never the error's own words, and `onCallFailed`
  /// (the server's log) gets the words under the same id.
  @Test func anUnexpectedErrorReachesTheClientAsAGenericMessageWithItsRequestID() throws {
    struct Unexpected: Error, CustomStringConvertible {
      var description: String { "secret detail /var/lib/recserve/token" }
    }
    let server = RPCServer(configuration: .init(host: "127.0.0.1", port: 0, threads: 2))
    let logged = Mutex<[FailedCall]>([])
    server.onCallFailed = { failed in logged.withLock { $0.append(failed) } }
    server.register("/test.Bug/Unary", .unary { _, _ in throw Unexpected() })
    server.register(
      "/test.Bug/Deferred", .unaryDeferrable { _, _ in .deferred { _ in throw Unexpected() } })
    server.register(
      "/test.Bug/HandedOff",
      .unaryDeferrable { _, _ in .handedOff { responder in responder.fail(Unexpected()) } })
    server.register("/test.Bug/Stream", .serverStreaming { _, _, _ in throw Unexpected() })
    try server.start()
    defer { server.shutdown(gracePeriod: 1) }
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    for method in ["Unary", "Deferred", "HandedOff", "Stream"] {
      let path = "/test.Bug/\(method)"
      let result = channel.unary(path, request: [1], metadata: [("x-request-id", "req-\(method)")])
      #expect(result.code == .internal, "\(method)")
      #expect(
        result.message
          == "internal error (request id req-\(method)); the server's log has the details")
      #expect(!result.message.contains("secret"))
      let line = logged.withLock { $0.first { $0.method == path } }
      #expect(line?.requestID == "req-\(method)")
      #expect(line?.message == "secret detail /var/lib/recserve/token")
      #expect(line?.code == .internal)
    }
  }

  @Test func unknownMethodIsUnimplemented() throws {
    let server = try startServer()
    defer { server.shutdown(gracePeriod: 1) }
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    let result = channel.unary("/test.Echo/Nope", request: [])
    #expect(result.code == .unimplemented)
    #expect(result.message.contains("/test.Echo/Nope"))
    // The server keeps serving.
    #expect(channel.unary("/test.Echo/Echo", request: [7]).response == [7])
  }

  @Test func metadataReachesTheHandler() throws {
    let server = try startServer()
    defer { server.shutdown(gracePeriod: 1) }
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    let with = channel.unary(
      "/test.Echo/Metadata", request: [], metadata: [("authorization", "Bearer s3cret")])
    #expect(String(decoding: with.response, as: UTF8.self) == "Bearer s3cret")
    let without = channel.unary("/test.Echo/Metadata", request: [])
    #expect(String(decoding: without.response, as: UTF8.self) == "<none>")
  }

  @Test func deadlineExceededReachesTheClient() throws {
    let server = try startServer()
    defer { server.shutdown(gracePeriod: 1) }
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    let result = channel.unary("/test.Echo/Slow", request: [1], timeout: 0.05)
    #expect(result.code == .deadlineExceeded)
    #expect(channel.unary("/test.Echo/Echo", request: [9]).response == [9])
  }

  @Test func manyConcurrentCallsAllSucceed() throws {
    let server = try startServer()
    defer { server.shutdown(gracePeriod: 1) }
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    let queue = CompletionQueue()
    var inFlight = 0
    var completed = 0
    var failures = 0
    let total = 2000
    var started = 0
    while completed < total {
      while inFlight < 64 && started < total {
        let body = withUnsafeBytes(of: UInt32(started).littleEndian) { Array($0) }
        guard
          queue.startUnary(
            channel, path: "/test.Echo/Echo", request: body, metadata: [], timeout: 10, user: nil)
            != nil
        else {
          Issue.record("could not start call")
          return
        }
        started += 1
        inFlight += 1
      }
      guard let event = queue.next(timeout: 10) else {
        Issue.record("no completion within 10 s")
        return
      }
      let result = CompletionQueue.result(of: event.owner)
      if result.code != .ok || result.response.count != 4 { failures += 1 }
      CompletionQueue.finish(event.owner)
      inFlight -= 1
      completed += 1
    }
    #expect(failures == 0)
  }

  @Test func streamingAndBidiHandlers() throws {
    let server = RPCServer(configuration: .init(host: "127.0.0.1", port: 0, threads: 2))
    server.register(
      "/test.Echo/Bidi",
      .bidiStreaming { _, request in
        [request.reversed()]
      })
    server.register(
      "/test.Echo/Count",
      .serverStreaming { _, request, writer in
        for index in 0..<Int(request.first ?? 0) { try writer.send([UInt8(index)]) }
      })
    try server.start()
    defer { server.shutdown(gracePeriod: 1) }
    // The Swift client makes unary calls only: a stream of one message reads like one; the Python
    // suite covers longer streams.
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    let one = channel.unary("/test.Echo/Count", request: [1])
    #expect(one.code == .ok)
    #expect(one.response == [0])
    let none = channel.unary("/test.Echo/Count", request: [0])
    #expect(none.code == .ok)
    #expect(none.response.isEmpty)
    let bidi = channel.unary("/test.Echo/Bidi", request: [1, 2])
    #expect(bidi.code == .ok)
    #expect(bidi.response == [2, 1])
  }

  @Test func shutdownLetsCallsInFlightFinish() throws {
    let server = try startServer()
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    let queue = CompletionQueue()
    guard
      queue.startUnary(
        channel, path: "/test.Echo/Slow", request: [5], metadata: [], timeout: 10, user: nil) != nil
    else {
      Issue.record("could not start call")
      return
    }
    usleep(50_000)
    let stopper = Thread { server.shutdown(gracePeriod: 5) }
    stopper.start()
    guard let event = queue.next(timeout: 10) else {
      Issue.record("the call in flight never completed")
      return
    }
    let result = CompletionQueue.result(of: event.owner)
    CompletionQueue.finish(event.owner)
    #expect(result.code == .ok)
    #expect(result.response == [5])
    server.wait()
    // New calls are refused once the server stopped.
    let after = channel.unary("/test.Echo/Echo", request: [1], timeout: 2)
    #expect(after.code == .unavailable || after.code == .deadlineExceeded)
  }

  /// Each call's record is retained while core may still report on it and freed after its last
  /// completion; a record that outlives its call leaks its grpc_call and, through its handler's
  /// captures, whatever they hold. After calls of every kind and outcome and a shutdown, no
  /// record of any method is left. (It failed while the work pool kept the jobs it had run.)
  @Test func everyCallRecordIsFreedByShutdown() throws {
    var configuration = RPCServer.Configuration(host: "127.0.0.1", port: 0, threads: 2)
    configuration.workThreads = 1
    let server = RPCServer(configuration: configuration)
    server.register("/test.Echo/Echo", .unary { _, request in [UInt8](request) })
    server.register(
      "/test.Echo/Fail", .unary { _, _ in throw RPCError.invalidArgument("field 'x' is bad") })
    server.register(
      "/test.Echo/Deferred",
      .unaryDeferrable { _, request in
        let bytes = [UInt8](request)
        return .deferred { _ in bytes }
      })
    server.register(
      "/test.Echo/HandedOff",
      .unaryDeferrable { _, request in
        let bytes = [UInt8](request)
        return .handedOff { responder in
          DispatchQueue.global().async { responder.succeed(bytes) }
        }
      })
    server.register(
      "/test.Echo/Count",
      .serverStreaming { _, request, writer in
        for index in 0..<Int(request.first ?? 0) { try writer.send([UInt8(index)]) }
      })
    server.register(
      "/test.Echo/StreamFails",
      .serverStreaming { _, _, _ in throw RPCError(.notFound, "no such thing") })
    server.register("/test.Echo/Bidi", .bidiStreaming { _, request in [request.reversed()] })
    try server.start()
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    let calls: [(String, StatusCode)] = [
      ("/test.Echo/Echo", .ok), ("/test.Echo/Fail", .invalidArgument),
      ("/test.Echo/Deferred", .ok), ("/test.Echo/HandedOff", .ok), ("/test.Echo/Count", .ok),
      ("/test.Echo/StreamFails", .notFound), ("/test.Echo/Bidi", .ok),
      ("/test.Echo/Missing", .unimplemented),
    ]
    for _ in 0..<3 {
      for (path, code) in calls {
        #expect(channel.unary(path, request: [1], timeout: 10).code == code, "\(path)")
      }
    }
    server.shutdown(gracePeriod: 5)
    for stats in server.methodStats {
      #expect(stats.liveCalls.load(ordering: .acquiring) == 0, "calls of \(stats.path) left")
    }
  }
}
