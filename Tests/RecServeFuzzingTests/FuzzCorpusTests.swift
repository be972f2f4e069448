import Foundation
import Testing

@testable import RecServeFuzzing

/// Every seed and every past finding of each fuzz target, run through the same harness that
/// libFuzzer drives (Fuzz/Harness), in the ordinary build: a regression fails here as the crash
/// or the broken check that the fuzzer once found.
@Suite struct FuzzCorpusTests {
  static let fuzzFolder = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fuzz").path

  /// The files of `Fuzz/Corpus/<target>` and `Fuzz/Findings/<target>`.
  static func inputs(_ target: String) -> [(String, [UInt8])] {
    var out: [(String, [UInt8])] = []
    for kind in ["Corpus", "Findings"] {
      let folder = "\(fuzzFolder)/\(kind)/\(target)"
      let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
      for name in names.sorted() where !name.hasPrefix(".") {
        let bytes = [UInt8](FileManager.default.contents(atPath: "\(folder)/\(name)")!)
        out.append(("\(kind)/\(target)/\(name)", bytes))
      }
    }
    return out
  }

  static func run(_ target: String, _ body: (UnsafeRawBufferPointer) -> Void) -> Int {
    let inputs = inputs(target)
    for (_, bytes) in inputs {
      bytes.withUnsafeBytes { body($0) }
    }
    return inputs.count
  }

  @Test func ratingsSeedsAndFindings() {
    #expect(Self.run("FuzzRatings", FuzzRatings.run) >= 5)
  }

  @Test func modelDirectorySeedsAndFindings() {
    #expect(Self.run("FuzzModelDirectory", FuzzModelDirectory.run) >= 4)
  }

  @Test func rpcSeedsAndFindings() {
    #expect(Self.run("FuzzRPC", FuzzRPC.run) >= 10)
  }

  /// An RPC seed is named after the method its first byte picks (Fuzz/make_seeds.py lists the
  /// methods as the server registers them): a method added or renamed without new seeds fails
  /// here instead of quietly fuzzing another method.
  @Test func rpcSeedsPickTheMethodTheyAreNamedAfter() throws {
    FuzzRPC.setUp()
    let paths = try #require(FuzzRPC.fixture).paths
    for (name, bytes) in Self.inputs("FuzzRPC") where name.hasPrefix("Corpus/") {
      let method = String(name.split(separator: "/").last!.split(separator: "-").first!)
      let path = paths[Int(bytes[0]) % paths.count]
      #expect(path.hasSuffix("/" + method), "\(name) picks \(path)")
    }
    let registered = Set(paths.map { String($0.split(separator: "/").last!) })
    let seeded = Set(
      Self.inputs("FuzzRPC").map {
        $0.0.split(separator: "/").last!.split(separator: "-").first!.description
      })
    #expect(
      registered.isSubset(of: seeded), "methods without a seed: \(registered.subtracting(seeded))")
  }
}
