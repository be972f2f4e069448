// libFuzzer entry point; build and run with Scripts/fuzz.sh (see Fuzz/README.md). Built without
// the fuzzer, this program does nothing.
import RecServeFuzzing

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzModelDirectory(_ data: UnsafeRawPointer, _ count: Int) -> CInt {
  FuzzModelDirectory.run(UnsafeRawBufferPointer(start: data, count: count))
  return 0
}
