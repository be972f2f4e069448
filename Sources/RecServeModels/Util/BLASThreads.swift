import CBLAS

/// OpenBLAS's own thread pool. Its worker threads busy-wait (sched_yield) for a while after every
/// threaded call; a server that already runs one request per core usually wants `set(1)` at
/// startup so a whole-catalogue `cblas_sgemv` stays on the request's thread. (Setting the
/// environment variable OPENBLAS_NUM_THREADS=1 before start also stops the pool being created.)
public enum BLASThreads {
  public static func set(_ count: Int) {
    openblas_set_num_threads(Int32(max(1, count)))
  }

  public static var count: Int { Int(openblas_get_num_threads()) }
}
