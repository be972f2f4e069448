import Foundation
import RecServeModels
import RecServeProto
import RecServeRPC
import Synchronization

/// Gathers concurrent Rank requests for the same model version into one scan of the catalog.
///
/// One query alone is bound by memory bandwidth (a 100k x 64 catalog is 25.6 MB read per query);
/// requests that arrive while others are being served wait in a queue, and a worker takes every
/// waiting request of one version (up to `maxBatch`) and scores them together, block by block
/// (`BlockedScan`), each with its own k, filters and strategies. Nothing waits on purpose unless
/// `maxWait` is set: a request that finds the queue empty is served at once, alone, on the
/// single-query path (see `RanksInFlight`). Requests past their deadline when their turn comes are answered
/// DEADLINE_EXCEEDED without work; past `maxQueued` waiting, RESOURCE_EXHAUSTED.
final class RankBatcher: Sendable {
  /// What a priced Rank passes on: its version, user and k.
  struct Key: Sendable {
    let served: ServedVersion
    let knownUser: Int32?
    let k: Int
    /// The request may be answered from the half-precision copy (SEARCH_F16).
    let half: Bool
  }

  struct Job: Sendable {
    let request: Recserve_V1_RankRequest
    let served: ServedVersion
    let knownUser: Int32?
    let k: Int
    let half: Bool
    let responder: UnaryResponder
  }

  private struct State {
    var queue: [Job] = []
    var stopping = false
  }

  let service: RecommenderService
  let maxBatch: Int
  let maxQueued: Int
  /// Microseconds a worker waits for more requests after the first, when fewer than
  /// `maxBatch` wait (0: none).
  let maxWait: Int
  /// Threads one batch's scan is split over (parts of the catalog).
  let parallel: Int
  private let state = Mutex(State())
  private let wake = DispatchSemaphore(value: 0)
  /// Signalled by each worker as it ends, and once `stop` has seen them all end.
  private let exited = DispatchSemaphore(value: 0)
  private let stopped = DispatchSemaphore(value: 0)
  private let threadCount: Int
  /// Batches served and the requests in them (for tests and metrics).
  let batches = Atomic<Int>(0)
  let batched = Atomic<Int>(0)
  /// Catalog-scale Rank requests being served now, alone or in the queue and batches.
  private let inFlight: RanksInFlight

  init(
    service: RecommenderService, inFlight: RanksInFlight, threads: Int, maxBatch: Int = 32,
    maxQueued: Int = 1024, maxWait: Int = 0, parallel: Int = 1
  ) {
    self.parallel = max(1, parallel)
    self.service = service
    self.inFlight = inFlight
    self.maxBatch = max(1, maxBatch)
    self.maxQueued = max(1, maxQueued)
    self.maxWait = max(0, maxWait)
    threadCount = max(1, threads)
    for index in 0..<threadCount {
      let thread = Thread { [self] in
        run()
        exited.signal()
      }
      thread.name = "recserve-rank-\(index)"
      thread.stackSize = 4 << 20
      thread.start()
    }
  }

  /// Queues `job` (its request counts as in flight until answered); false (the caller answers
  /// RESOURCE_EXHAUSTED) when the queue is full. false (the caller answers RESOURCE_EXHAUSTED) when the queue is full.
  func submit(_ job: Job) -> Bool {
    let accepted = state.withLock { s -> Bool in
      if s.stopping || s.queue.count >= maxQueued { return false }
      s.queue.append(job)
      return true
    }
    if accepted {
      inFlight.enter()
      wake.signal()
    }
    return accepted
  }

  /// Answers what waits with UNAVAILABLE and lets the workers end.
  func stop() {
    let (already, left) = state.withLock { s -> (Bool, [Job]) in
      let already = s.stopping
      s.stopping = true
      defer { s.queue.removeAll() }
      return (already, s.queue)
    }
    if already { return }
    for job in left {
      inFlight.leave()
      job.responder.fail(RPCError(.unavailable, "the server is shutting down"))
    }
    for _ in 0..<(threadCount + 64) { wake.signal() }
    // The workers end once what they are serving is answered (at most one batch each).
    for _ in 0..<threadCount { _ = exited.wait(timeout: .now() + 30) }
    stopped.signal()
  }

  /// Returns once `stop` has returned (its workers have ended).
  func waitUntilStopped() {
    stopped.wait()
    stopped.signal()
  }

  private func run() {
    while true {
      wake.wait()
      if maxWait > 0 {
        let waiting = state.withLock { $0.queue.count }
        if waiting > 0 && waiting < maxBatch { usleep(UInt32(maxWait)) }
      }
      // Every waiting job of the first one's version, in arrival order, up to maxBatch.
      let (batch, stopping) = state.withLock { s -> ([Job], Bool) in
        guard let first = s.queue.first else { return ([], s.stopping) }
        var batch: [Job] = []
        var rest: [Job] = []
        for job in s.queue {
          if batch.count < maxBatch && job.served === first.served {
            batch.append(job)
          } else {
            rest.append(job)
          }
        }
        s.queue = rest
        return (batch, s.stopping)
      }
      if batch.isEmpty {
        if stopping { return }
        continue
      }
      // The semaphore counted one wake-up per job: the others taken here consume theirs later
      // as empty wake-ups.
      serve(batch)
    }
  }

  private func serve(_ jobs: [Job]) {
    batches.add(1, ordering: .relaxed)
    batched.add(jobs.count, ordering: .relaxed)
    if jobs.count == 1 {
      let job = jobs[0]
      answer(job) {
        try service.rankWork(
          job.request, served: job.served, knownUser: job.knownUser, k: job.k,
          parallel: parallel, check: { try job.responder.context.checkDeadline() })
      }
      return
    }
    let served = jobs[0].served
    let model = served.model
    let dim = model.dim
    let scratch = ThreadScratch.current
    let queries = scratch.floats(jobs.count * dim, slot: 6)
    var offsets: [Float] = []
    var setups: [RecommenderService.RankSetup] = []
    var live: [Job] = []
    offsets.reserveCapacity(jobs.count)
    setups.reserveCapacity(jobs.count)
    live.reserveCapacity(jobs.count)
    for job in jobs {
      do {
        try job.responder.context.checkDeadline()
        let indices = scratch.ints(job.request.recentItems.count)
        let setup = try service.setupRank(
          job.request, served: served, knownUser: job.knownUser, k: job.k,
          query: queries + live.count * dim, indices: indices)
        offsets.append(setup.offset)
        setups.append(setup)
        live.append(job)
      } catch {
        answer(job) { throw error }
      }
    }
    if live.isEmpty { return }
    let pools: [[TopK.Entry]]
    do {
      pools = try served.logPopularity.withUnsafeBufferPointer { penalties in
        try offsets.withUnsafeBufferPointer { offsets in
          // From the half copy when every request allows it (the same answer, half the bytes
          // read), else from the f32 matrix.
          if let half = served.halfItems, live.allSatisfy(\.half) {
            return try half.selectBatch(
              model: model, queries: queries, offsets: offsets.baseAddress!,
              selections: setups.map(\.selection), penalties: penalties, parallel: parallel,
              skip: { j, item in RecommenderService.skips(setups[j], item) }, check: {})
          }
          return try BlockedScan.select(
            model: model, queries: queries, offsets: offsets.baseAddress!,
            selections: setups.map(\.selection), penalties: penalties,
            parallel: parallel,
            skip: { j, item in RecommenderService.skips(setups[j], item) }, check: {})
        }
      }
    } catch {
      for job in live { answer(job) { throw error } }
      return
    }
    for (j, job) in live.enumerated() {
      answer(job) {
        let check = { try job.responder.context.checkDeadline() }
        try check()
        return try service.finishRank(
          job.request, served: served, k: job.k, top: pools[j], check: check)
      }
    }
  }

  private func answer(_ job: Job, _ body: () throws -> Recserve_V1_RankResponse) {
    defer { inFlight.leave() }
    do {
      job.responder.succeed(try body().serializedBytes())
    } catch {
      job.responder.fail(error)
    }
  }
}

/// How many catalog-scale Rank requests are being served: a request that finds none is alone
/// and may use every core at once, without waiting for anyone.
final class RanksInFlight: Sendable {
  private let count = Atomic<Int>(0)

  /// Enters as the only one in flight (true), or not at all (false).
  func enterAlone() -> Bool {
    count.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged
  }

  func enter() { count.add(1, ordering: .acquiringAndReleasing) }

  func leave() { count.subtract(1, ordering: .acquiringAndReleasing) }
}

/// Leaves `RanksInFlight` once: when told to, or when dropped without that (work the pool
/// refused and never ran), so the count never leaks.
final class LeaveOnce: Sendable {
  private let rankers: RanksInFlight
  private let done = Atomic<Bool>(false)

  init(_ rankers: RanksInFlight) { self.rankers = rankers }

  func leave() {
    if !done.exchange(true, ordering: .acquiringAndReleasing) { rankers.leave() }
  }

  deinit { leave() }
}
