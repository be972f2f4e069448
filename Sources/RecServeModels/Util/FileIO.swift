#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// An operating-system error on a path, e.g. "models/demo/3/users.txt: No such file or directory".
public struct FileError: Error, CustomStringConvertible, Sendable, Equatable {
  public let path: String
  public let code: Int32
  public let operation: String

  public init(path: String, code: Int32, operation: String) {
    self.path = path
    self.code = code
    self.operation = operation
  }

  public var reason: String { String(cString: strerror(code)) }

  public var description: String { "\(path): cannot \(operation): \(reason)" }

  /// True when the error says the path is not there (ENOENT, ENOTDIR): what it names is gone.
  /// Any other error (EMFILE, EIO, ELOOP, EACCES, ...) says it could not be read, not that it
  /// is absent: the caller should keep what it knew and try again later.
  public var isAbsence: Bool { FileError.isAbsence(code) }

  public static func isAbsence(_ code: Int32) -> Bool { code == ENOENT || code == ENOTDIR }
}

/// What `stat` says about a path: a directory, something else, nothing, or an error other
/// than absence.
enum PathKind {
  case directory, other, absent
  case unreadable(FileError)

  init(_ path: String) {
    var st = stat()
    if stat(path, &st) == 0 {
      self = (st.st_mode & S_IFMT) == S_IFDIR ? .directory : .other
    } else {
      let code = errno
      self =
        FileError.isAbsence(code)
        ? .absent : .unreadable(FileError(path: path, code: code, operation: "read"))
    }
  }
}

/// A read-only memory map of a whole file; unmapped when the last reference goes away.
/// Files of size zero map to an empty buffer.
public final class MappedFile: @unchecked Sendable {
  public let path: String
  public let count: Int
  private let base: UnsafeMutableRawPointer?

  public init(path: String) throws {
    self.path = path
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw FileError(path: path, code: errno, operation: "open") }
    defer { close(fd) }
    var st = stat()
    if fstat(fd, &st) != 0 { throw FileError(path: path, code: errno, operation: "stat") }
    if (st.st_mode & S_IFMT) == S_IFDIR {
      throw FileError(path: path, code: EISDIR, operation: "read")
    }
    let size = Int(st.st_size)
    count = size
    if size == 0 {
      base = nil
      return
    }
    let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
    if p == MAP_FAILED || p == nil { throw FileError(path: path, code: errno, operation: "map") }
    base = p
  }

  deinit {
    if let base { munmap(base, count) }
  }

  /// The file's bytes; valid while this object is alive.
  public var bytes: UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(start: base.map { UnsafeRawPointer($0) }, count: count)
  }

  /// Asks the kernel to read the mapping ahead (sequential scan).
  public func adviseSequential() {
    if let base { _ = madvise(base, count, Int32(MADV_SEQUENTIAL)) }
  }

  /// Drops the whole pages inside bytes[from..<upTo] (`from` rounded down, `upTo` rounded down
  /// to a page boundary) from this process's resident set, so that one pass over a large file
  /// keeps a few pages resident instead of all of them. The bytes stay readable: touching them
  /// again reads them back from the page cache or the file (the mapping is private and read-only,
  /// so nothing is lost).
  public func releasePages(from: Int = 0, upTo: Int) {
    guard let base else { return }
    let page = MappedFile.pageSize
    let start = max(0, from) / page * page
    let end = min(upTo, count) / page * page
    if end > start { _ = madvise(base + start, end - start, Int32(MADV_DONTNEED)) }
  }

  static let pageSize = max(4096, Int(sysconf(Int32(_SC_PAGESIZE))))
}

enum FileIO {
  /// Writes `bytes` to a new file at `path` and fsyncs it.
  static func writeSynced(_ bytes: UnsafeRawBufferPointer, to path: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    if fd < 0 { throw FileError(path: path, code: errno, operation: "create") }
    var ok = false
    defer {
      close(fd)
      if !ok { unlink(path) }
    }
    try writeAll(fd, bytes, path: path, operation: "write")
    if fsync(fd) != 0 { throw FileError(path: path, code: errno, operation: "fsync") }
    ok = true
  }

  /// Writes all of `bytes` to `fd`, retrying short writes and EINTR; an error names `path`.
  static func writeAll(
    _ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String, operation: String
  ) throws {
    var offset = 0
    while offset < bytes.count {
      let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
      if n < 0 {
        if errno == EINTR { continue }
        throw FileError(path: path, code: errno, operation: operation)
      }
      offset += n
    }
  }

  static func writeSynced(_ bytes: [UInt8], to path: String) throws {
    try bytes.withUnsafeBytes { try writeSynced($0, to: path) }
  }

  static func fsyncDirectory(_ path: String) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if fd >= 0 {
      _ = fsync(fd)
      close(fd)
    }
  }

  /// Removes a directory tree (best effort; used to clean up a failed publish).
  static func removeTree(_ path: String) {
    guard let dir = opendir(path) else {
      unlink(path)
      return
    }
    while let entry = readdir(dir) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
      }
      if name == "." || name == ".." { continue }
      let child = path + "/" + name
      var st = stat()
      if lstat(child, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
        removeTree(child)
      } else {
        unlink(child)
      }
    }
    closedir(dir)
    rmdir(path)
  }

  /// Names in a directory, without "." and "..". Throws a `FileError` when the directory cannot
  /// be opened or read to the end.
  static func listDirectory(_ path: String) throws -> [String] {
    guard let dir = opendir(path) else {
      throw FileError(path: path, code: errno, operation: "list")
    }
    defer { closedir(dir) }
    var names: [String] = []
    while true {
      // readdir returns nil both at the end and on an error; only errno tells them apart.
      errno = 0
      guard let entry = readdir(dir) else {
        if errno != 0 { throw FileError(path: path, code: errno, operation: "list") }
        break
      }
      let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
        String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
      }
      if name == "." || name == ".." { continue }
      names.append(name)
    }
    return names
  }

  static func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
  }

  static func exists(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0
  }

  /// Creates `path` and its missing parents.
  static func makeDirectories(_ path: String) throws {
    if path.isEmpty || isDirectory(path) { return }
    var parts: [Substring] = path.split(separator: "/", omittingEmptySubsequences: false)
    while parts.count > 1 && parts.last == "" { parts.removeLast() }
    var current = ""
    for (i, part) in parts.enumerated() {
      current += (i == 0 ? "" : "/") + part
      if current.isEmpty || part.isEmpty || part == "." { continue }
      if mkdir(current, 0o755) != 0 && errno != EEXIST {
        throw FileError(path: current, code: errno, operation: "create directory")
      }
    }
    if !isDirectory(path) {
      throw FileError(path: path, code: ENOTDIR, operation: "create directory")
    }
  }

  /// rename(2) that fails with EEXIST instead of replacing an existing (empty) directory.
  static func renameNoReplace(_ from: String, _ to: String) -> Int32 {
    #if os(Linux)
      typealias RenameAt2 =
        @convention(c) (
          Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32
        ) -> Int32
      if let sym = renameat2Symbol {
        let f = unsafeBitCast(sym, to: RenameAt2.self)
        let r = f(AT_FDCWD, from, AT_FDCWD, to, 1 /* RENAME_NOREPLACE */)
        if r == 0 { return 0 }
        // Filesystems without RENAME_NOREPLACE answer EINVAL: fall back below.
        if errno != EINVAL && errno != ENOSYS { return errno }
      }
    #endif
    if exists(to) { return EEXIST }
    return rename(from, to) == 0 ? 0 : errno
  }

  #if os(Linux)
    nonisolated(unsafe) static let renameat2Symbol: UnsafeMutableRawPointer? = dlsym(
      UnsafeMutableRawPointer(bitPattern: 0), "renameat2")
  #endif
}

extension FileIO {
  /// Appends `bytes` to `path` (created when absent) and fsyncs it before returning; the
  /// parent folder is synced when the file is new. A failed write truncates the file back to
  /// where it was, so no partial append survives it. With `wholeLines`, a last line without
  /// its newline (an append a crash tore: nobody was told it succeeded) is cut off first, so
  /// that the new lines do not run on from it. Returns the file's size after.
  @discardableResult
  static func appendSynced(_ bytes: [UInt8], to path: String, wholeLines: Bool = false) throws
    -> Int
  {
    let existed = exists(path)
    let fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
    if fd < 0 { throw FileError(path: path, code: errno, operation: "open for appending") }
    defer { close(fd) }
    var start = lseek(fd, 0, SEEK_END)
    if wholeLines && start > 0 {
      let cut = try endOfLastLine(fd, size: start, path: path)
      if cut < start {
        if ftruncate(fd, cut) != 0 {
          throw FileError(path: path, code: errno, operation: "truncate")
        }
        start = cut
      }
    }
    var done = false
    defer { if !done && start >= 0 { _ = ftruncate(fd, start) } }
    try bytes.withUnsafeBytes { try writeAll(fd, $0, path: path, operation: "append") }
    if fsync(fd) != 0 { throw FileError(path: path, code: errno, operation: "fsync") }
    done = true
    if !existed {
      let slash = path.lastIndex(of: "/")
      fsyncDirectory(slash.map { String(path[..<$0]) } ?? ".")
    }
    return Int(start) + bytes.count
  }

  /// The offset just past the last newline among the first `size` bytes of `fd` (0 if none),
  /// read backwards a block at a time.
  private static func endOfLastLine(_ fd: Int32, size: off_t, path: String) throws -> off_t {
    var block = [UInt8](repeating: 0, count: 4096)
    var end = size
    while end > 0 {
      let begin = max(0, end - off_t(block.count))
      let want = Int(end - begin)
      let n = block.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, want, begin) }
      if n < 0 {
        if errno == EINTR { continue }
        throw FileError(path: path, code: errno, operation: "read")
      }
      if n < want { throw FileError(path: path, code: EIO, operation: "read (short)") }
      if let k = block[..<want].lastIndex(of: 10) { return begin + off_t(k) + 1 }
      end = begin
    }
    return 0
  }
}
