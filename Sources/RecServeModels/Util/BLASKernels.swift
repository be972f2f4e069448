import CBLAS

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// OpenBLAS picks its kernels by CPU model when the library loads. Debian 12's OpenBLAS 0.3.21
/// does not know recent Intel Xeons (Sapphire Rapids and later report a generic model) and falls
/// back to its Prescott (SSE3) kernels: sgemm then runs at a quarter of what the same core does
/// with the AVX-512 kernels (measured: 22 vs 74-95 GFLOPS on the shapes SASRec uses). The kernel
/// set can only be chosen before the library loads, through the environment variable
/// `OPENBLAS_CORETYPE`, so `recserve` re-executes itself once with it set when OpenBLAS fell back
/// and the CPU's flags say it can do better. A user's own `OPENBLAS_CORETYPE` always wins.
public enum BLASKernels {
  /// The kernel set OpenBLAS uses ("SkylakeX", "Haswell", "Prescott", ...).
  public static var coreName: String { String(cString: openblas_get_corename()) }

  /// The best kernel set of OpenBLAS 0.3.21 that CPUs with these /proc/cpuinfo flags run.
  public static func bestCoreType(flags: Set<String>) -> String? {
    if ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy(flags.contains) {
      return "SkylakeX"
    }
    if ["avx2", "fma"].allSatisfy(flags.contains) { return "Haswell" }
    return nil
  }

  /// The flags of the first processor in /proc/cpuinfo (empty where there is none).
  public static func cpuFlags() -> Set<String> {
    guard let file = fopen("/proc/cpuinfo", "r") else { return [] }
    defer { fclose(file) }
    var line: UnsafeMutablePointer<CChar>? = nil
    var capacity = 0
    defer { free(line) }
    while getline(&line, &capacity, file) > 0 {
      let text = String(cString: line!)
      if text.hasPrefix("flags") {
        let values = text.split(separator: ":", maxSplits: 1).last ?? ""
        return Set(values.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init))
      }
    }
    return []
  }

  /// When OpenBLAS fell back to its generic kernels on a CPU that runs better ones, and nobody
  /// chose a kernel set, re-executes this program with `OPENBLAS_CORETYPE` set (same process,
  /// same arguments). Returns normally when there is nothing to do or the exec fails. Call it
  /// first thing in `main`, before any output or thread.
  public static func reexecIfGeneric() {
    guard getenv("OPENBLAS_CORETYPE") == nil, coreName == "Prescott",
      let best = bestCoreType(flags: cpuFlags())
    else { return }
    setenv("OPENBLAS_CORETYPE", best, 1)
    let arguments = CommandLine.arguments
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
    argv.append(nil)
    execv("/proc/self/exe", argv)
    // Still here: the exec failed; carry on with the kernels we have.
    unsetenv("OPENBLAS_CORETYPE")
    for p in argv { free(p) }
  }
}
