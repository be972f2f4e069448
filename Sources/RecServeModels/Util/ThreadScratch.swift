#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Per-thread scratch memory for the request path, so scoring a catalog allocates nothing once a
/// thread has grown its buffer to the largest model's size.
public final class ThreadScratch {
  private(set) var floats: UnsafeMutablePointer<Float>
  private(set) var floatCapacity: Int
  private(set) var ints: UnsafeMutablePointer<Int32>
  private(set) var intCapacity: Int
  private(set) var query: UnsafeMutablePointer<Float>
  private(set) var queryCapacity: Int
  /// Per item: the generation that last marked it (see `marks`).
  private var markStamps: [UInt32] = []
  private var markGeneration: UInt32 = 0
  /// Extra float buffers by slot (see `floats(_:slot:)`).
  private var extra: [UnsafeMutablePointer<Float>] = []
  private var extraCapacity: [Int] = []

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
    for p in extra { p.deallocate() }
  }

  /// At least `count` floats in buffer `slot` (1, 2, ...), apart from `floats(_:)` and from
  /// the other slots (contents undefined).
  public func floats(_ count: Int, slot: Int) -> UnsafeMutablePointer<Float> {
    while extra.count < slot {
      extra.append(.allocate(capacity: 1024))
      extraCapacity.append(1024)
    }
    if count > extraCapacity[slot - 1] {
      extra[slot - 1].deallocate()
      extraCapacity[slot - 1] = max(count, extraCapacity[slot - 1] * 2)
      extra[slot - 1] = .allocate(capacity: extraCapacity[slot - 1])
    }
    return extra[slot - 1]
  }

  /// A fresh set of marks over items 0..<count: `mark(i)` is true the first time for each i.
  /// O(1) to start (a generation counter), no allocation once grown.
  public func marks(_ count: Int) -> Marks {
    if markStamps.count < count {
      markStamps.append(contentsOf: repeatElement(0, count: count - markStamps.count))
    }
    markGeneration &+= 1
    if markGeneration == 0 {
      for i in markStamps.indices { markStamps[i] = 0 }
      markGeneration = 1
    }
    return Marks(scratch: self, generation: markGeneration)
  }

  public struct Marks {
    let scratch: ThreadScratch
    let generation: UInt32

    /// Marks `item`; false when it was marked already.
    public func mark(_ item: Int32) -> Bool {
      let i = Int(item)
      if scratch.markStamps[i] == generation { return false }
      scratch.markStamps[i] = generation
      return true
    }
  }

  /// At least `count` floats (contents undefined).
  public func floats(_ count: Int) -> UnsafeMutablePointer<Float> {
    if count > floatCapacity {
      floats.deallocate()
      floatCapacity = max(count, floatCapacity * 2)
      floats = .allocate(capacity: floatCapacity)
    }
    return floats
  }

  /// At least `count` floats for a query vector, apart from `floats` (contents undefined).
  public func queryFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    if count > queryCapacity {
      query.deallocate()
      queryCapacity = max(count, queryCapacity * 2)
      query = .allocate(capacity: queryCapacity)
    }
    return query
  }

  /// At least `count` Int32s (contents undefined).
  public func ints(_ count: Int) -> UnsafeMutablePointer<Int32> {
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
  public static var current: ThreadScratch {
    if let pointer = pthread_getspecific(key) {
      return Unmanaged<ThreadScratch>.fromOpaque(pointer).takeUnretainedValue()
    }
    let scratch = ThreadScratch()
    pthread_setspecific(key, Unmanaged.passRetained(scratch).toOpaque())
    return scratch
  }
}
