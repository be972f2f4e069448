import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// A bounded pool of threads with a bounded queue: work that must not run on a completion-queue
/// thread (expensive unary calls, streaming handlers) runs here, and when every thread is busy
/// and the queue is full, `submit` refuses instead of growing. Threads start on demand, up to
/// `maxThreads`, and stay for reuse. A pool may run at a lower scheduling priority than the
/// completion-queue threads (`nice`), so that cheap calls keep their latency while it works.
final class WorkPool: Sendable {
  typealias Job = @Sendable () -> Void

  struct State {
    /// Jobs in order; taken ones (before `head`) are nil, so that a job's captures (a call and
    /// everything it holds) go as soon as it ran, not when the queue is next compacted.
    var queue: [Job?] = []
    var head = 0
    var threads = 0
    var idle = 0
    var stopping = false
  }

  let name: String
  let maxThreads: Int
  let maxQueued: Int
  let nice: Int32
  let stackSize: Int
  private let state = Mutex(State())
  private let wake = DispatchSemaphore(value: 0)
  private let running = Atomic<Int>(0)
  private let exited = DispatchSemaphore(value: 0)

  init(name: String, maxThreads: Int, maxQueued: Int, nice: Int32 = 0, stackSize: Int = 1 << 20) {
    self.name = name
    self.maxThreads = max(1, maxThreads)
    self.maxQueued = max(0, maxQueued)
    self.nice = nice
    self.stackSize = stackSize
  }

  /// Jobs running now.
  var busy: Int { running.load(ordering: .relaxed) }

  /// Jobs accepted and not yet taken by a thread.
  var waiting: Int { state.withLock { $0.queue.count - $0.head } }

  /// Runs `job` on a pool thread: at once when one is idle or another may start, later when it
  /// fits the queue. False (and `job` never runs) when the pool is full or stopping.
  func submit(_ job: @escaping Job) -> Bool {
    enum Decision {
      case wakeIdle
      case startThread
      case refuse
    }
    let decision = state.withLock { s -> Decision in
      if s.stopping { return .refuse }
      let waiting = s.queue.count - s.head
      if s.idle > waiting {
        s.queue.append(job)
        return .wakeIdle
      }
      if s.threads < maxThreads {
        s.queue.append(job)
        s.threads += 1
        return .startThread
      }
      if waiting < maxQueued {
        s.queue.append(job)
        return .wakeIdle
      }
      return .refuse
    }
    switch decision {
    case .refuse:
      return false
    case .wakeIdle:
      wake.signal()
    case .startThread:
      wake.signal()
      let thread = Thread { [self] in loop() }
      thread.name = name
      thread.stackSize = stackSize
      thread.start()
    }
    return true
  }

  private func loop() {
    while true {
      state.withLock { $0.idle += 1 }
      wake.wait()
      let job = state.withLock { s -> Job? in
        s.idle -= 1
        guard s.head < s.queue.count else { return nil }
        let job = s.queue[s.head]
        s.queue[s.head] = nil
        s.head += 1
        if s.head > 64 && s.head * 2 > s.queue.count {
          s.queue.removeFirst(s.head)
          s.head = 0
        }
        return job
      }
      guard let job else {
        // No job for this wake-up: stopping (or a spurious wake).
        if state.withLock({ $0.stopping }) {
          exited.signal()
          return
        }
        continue
      }
      running.add(1, ordering: .relaxed)
      #if os(Linux)
        // Per job: a job may have changed its thread's nice value (training lowers it). On
        // Linux the value is per thread and `who` 0 names the calling thread.
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice)
      #endif
      job()
      running.subtract(1, ordering: .relaxed)
    }
  }

  /// Refuses new work and lets the threads exit once the queue is empty; waits up to `timeout`
  /// seconds for them.
  func stop(timeout: Double) {
    let threads = state.withLock { s -> Int in
      s.stopping = true
      return s.threads
    }
    for _ in 0..<threads { wake.signal() }
    let deadline = DispatchTime.now() + timeout
    for _ in 0..<threads where exited.wait(timeout: deadline) == .timedOut { return }
  }
}
