import Foundation
import Synchronization
import Testing

@testable import RecServeRPC

/// Deferred unary work (`UnaryOutcome.deferred`) on the bounded work pool: it answers, it stops at
/// the deadline, and a full pool refuses instead of queueing without end.
@Suite struct WorkPoolTests {
  /// Work that spins in blocks of 1 ms, checking the deadline between them; counts its blocks.
  final class Spinner: Sendable {
    let blocks = Atomic<Int>(0)
    let finished = Atomic<Int>(0)
  }

  func server(workThreads: Int, workQueue: Int, spinner: Spinner) throws -> RPCServer {
    var configuration = RPCServer.Configuration(host: "127.0.0.1", port: 0, threads: 2)
    configuration.workThreads = workThreads
    configuration.workQueue = workQueue
    let server = RPCServer(configuration: configuration)
    server.register(
      "/test.Work/Spin",
      .unaryDeferrable { _, request in
        let seconds = Double(request.first ?? 0) / 10
        return .deferred { context in
          defer { spinner.finished.add(1, ordering: .relaxed) }
          let end = Date().addingTimeInterval(seconds)
          while Date() < end {
            try context.checkDeadline()
            usleep(1000)
            spinner.blocks.add(1, ordering: .relaxed)
          }
          return [1]
        }
      })
    server.register(
      "/test.Work/Echo", .unaryDeferrable { _, request in .response([UInt8](request)) })
    try server.start()
    return server
  }

  @Test func deferredWorkAnswersAndInlineAnswersStayInline() throws {
    let spinner = Spinner()
    let server = try server(workThreads: 1, workQueue: 4, spinner: spinner)
    defer { server.shutdown(gracePeriod: 1) }
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    #expect(channel.unary("/test.Work/Spin", request: [1]).response == [1])
    #expect(channel.unary("/test.Work/Echo", request: [7, 8]).response == [7, 8])
  }

  @Test func workStopsAtTheDeadline() throws {
    let spinner = Spinner()
    let server = try server(workThreads: 1, workQueue: 4, spinner: spinner)
    defer { server.shutdown(gracePeriod: 1) }
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    let start = Date()
    // Asks for 10 s of work with a 0.3 s deadline.
    let result = channel.unary("/test.Work/Spin", request: [100], timeout: 0.3)
    #expect(result.code == .deadlineExceeded)
    #expect(Date().timeIntervalSince(start) < 2)
    // The work ended soon after the deadline: its block count stops growing.
    var waited = 0
    while spinner.finished.load(ordering: .relaxed) == 0 && waited < 200 {
      usleep(10_000)
      waited += 1
    }
    #expect(spinner.finished.load(ordering: .relaxed) == 1)
    let blocks = spinner.blocks.load(ordering: .relaxed)
    usleep(200_000)
    #expect(spinner.blocks.load(ordering: .relaxed) == blocks)
    #expect(blocks < 2_000, "the work ran \(blocks) ms-blocks after a 0.3 s deadline")
  }

  @Test func aFullPoolRefusesWithResourceExhausted() throws {
    let spinner = Spinner()
    let server = try server(workThreads: 1, workQueue: 1, spinner: spinner)
    // Long enough for both calls to finish: a call answered after the server's queues are gone
    // is left to the process exit.
    defer { server.shutdown(gracePeriod: 15) }
    // One running and one queued (each 6 s: on a loaded machine the second call can take seconds
    // to arrive), from their own connections; the third is refused.
    let background = DispatchGroup()
    for _ in 0..<2 {
      DispatchQueue.global().async(group: background) {
        let channel = Channel(target: "127.0.0.1:\(server.port)")
        _ = channel.unary("/test.Work/Spin", request: [60], timeout: 40)
      }
    }
    // Waits until the server holds both (on a loaded machine the calls can take a while to arrive).
    var waited = 0
    while (server.workPool.busy < 1 || server.workPool.waiting < 1) && waited < 1_000 {
      usleep(10_000)
      waited += 1
    }
    #expect(server.workPool.busy == 1 && server.workPool.waiting == 1)
    let channel = Channel(target: "127.0.0.1:\(server.port)")
    let refused = channel.unary("/test.Work/Spin", request: [10], timeout: 20)
    #expect(refused.code == .resourceExhausted)
    #expect(refused.message.contains("busy"))
    background.wait()
  }
}
