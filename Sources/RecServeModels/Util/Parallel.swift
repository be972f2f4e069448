import Dispatch

/// Data-parallel loops over threads. The one place where the trainers and evaluators hand
/// non-Sendable state (pointers into their buffers, closures over them) to other threads: every
/// caller splits its work so that iterations write disjoint memory (their own rows, blocks or
/// per-thread slots) and only read what no iteration writes. The exceptions are deliberate and
/// documented where they are: BPR's and MF-SGD's Hogwild updates race on shared factor rows
/// by design (lock-free SGD, as `implicit` and Hogwild! do), which costs nothing in accuracy at
/// these sparsities.
public enum Parallel {
  /// Runs `body(0)`, ..., `body(count - 1)`, on up to `count` threads; on the calling thread
  /// alone when `count` is 1. Returns when all are done.
  public static func run(_ count: Int, _ body: (Int) -> Void) {
    if count <= 1 {
      if count == 1 { body(0) }
      return
    }
    withoutActuallyEscaping(body) { body in
      let shared = Confined(body)
      DispatchQueue.concurrentPerform(iterations: count) { shared.value($0) }
    }
  }

  /// A value handed to other threads whose safety the caller establishes (see `run`).
  struct Confined<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
  }
}
