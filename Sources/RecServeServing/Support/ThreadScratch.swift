import Foundation

/// Per-thread scratch memory for the request path, so scoring a catalog allocates nothing once a
/// thread has grown its buffer to the largest model's size.
final class ThreadScratch {
  private(set) var floats: UnsafeMutablePointer<Float>
  private(set) var floatCapacity: Int
  private(set) var ints: UnsafeMutablePointer<Int32>
  private(set) var intCapacity: Int
  private(set) var query: UnsafeMutablePointer<Float>
  private(set) var queryCapacity: Int

  private init() {
    floatCapacity = 1024
    floats = .allocate(capacity: floatCapacity)
    intCapacity = 1024
    ints = .allocate(capacity: intCapacity)
    queryCapacity = 256
    query = .allocate(capacity: queryCapacity)
  }

  deinit {
    floats.deallocate()
    ints.deallocate()
    query.deallocate()
  }

  /// At least `count` floats (contents undefined).
  func floats(_ count: Int) -> UnsafeMutablePointer<Float> {
    if count > floatCapacity {
      floats.deallocate()
      floatCapacity = max(count, floatCapacity * 2)
      floats = .allocate(capacity: floatCapacity)
    }
    return floats
  }

  /// At least `count` floats for a query vector, apart from `floats` (contents undefined).
  func queryFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    if count > queryCapacity {
      query.deallocate()
      queryCapacity = max(count, queryCapacity * 2)
      query = .allocate(capacity: queryCapacity)
    }
    return query
  }

  /// At least `count` Int32s (contents undefined).
  func ints(_ count: Int) -> UnsafeMutablePointer<Int32> {
    if count > intCapacity {
      ints.deallocate()
      intCapacity = max(count, intCapacity * 2)
      ints = .allocate(capacity: intCapacity)
    }
    return ints
  }

  private static let key: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { pointer in
      if let pointer { Unmanaged<ThreadScratch>.fromOpaque(pointer).release() }
    }
    return key
  }()

  /// This thread's scratch.
  static var current: ThreadScratch {
    if let pointer = pthread_getspecific(key) {
      return Unmanaged<ThreadScratch>.fromOpaque(pointer).takeUnretainedValue()
    }
    let scratch = ThreadScratch()
    pthread_setspecific(key, Unmanaged.passRetained(scratch).toOpaque())
    return scratch
  }
}
