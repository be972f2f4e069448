// libFuzzer entry point; build and run with Scripts/fuzz.sh (see Fuzz/README.md). Built without
// the fuzzer, this program does nothing.
import RecServeFuzzing

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRPC(_ data: UnsafeRawPointer, _ count: Int) -> CInt {
  FuzzRPC.run(UnsafeRawBufferPointer(start: data, count: count))
  return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzRPCInitialize(
  _ argc: UnsafeMutablePointer<CInt>,
  _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
  FuzzRPC.setUp()
  return 0
}
