// swift-tools-version:6.0
import PackageDescription

let package = Package(
  name: "RecServe",
  // Synchronization (Mutex, Atomic) needs macOS 15; Linux is what the server runs on.
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "recserve", targets: ["recserve"])
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
    .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
  ],
  targets: [
    // C shim over gRPC core: opaque handles, plain pointers and lengths, no policy.
    .target(
      name: "CGRPCShim",
      path: "CShims/CGRPCShim",
      linkerSettings: [.linkedLibrary("grpc"), .linkedLibrary("gpr")]
    ),
    // Hand-vectorised kernels chosen at run time by CPU (AVX2 + FMA), where Swift cannot
    // target CPU features per function: scoring many queries against an item block at once.
    .target(
      name: "CKernels",
      path: "CShims/CKernels",
      cSettings: [.unsafeFlags(["-O3"])]
    ),
    // OpenBLAS's CBLAS interface.
    .systemLibrary(
      name: "CBLAS",
      path: "CShims/CBLAS",
      pkgConfig: "openblas",
      providers: [.apt(["libopenblas-dev"])]
    ),
    // OpenSSL's libcrypto for SHA-256.
    .systemLibrary(
      name: "CCrypto",
      path: "CShims/CCrypto",
      providers: [.apt(["libssl-dev"])]
    ),
    // glibc extras (malloc_trim).
    .systemLibrary(name: "CSystem", path: "CShims/CSystem"),
    // Safe Swift server and client over the shim; knows nothing about recommenders.
    .target(
      name: "RecServeRPC",
      dependencies: ["CGRPCShim", .product(name: "Atomics", package: "swift-atomics")]
    ),
    // swift-protobuf output for Protos/ (committed; see Scripts/gen-protos.sh).
    .target(
      name: "RecServeProto",
      dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]
    ),
    // Data loading, BLAS math, models, training, metrics, the model file format.
    .target(
      name: "RecServeModels",
      dependencies: ["CBLAS", "CCrypto", "CKernels"],
      // The numeric kernels (training loops, the sequence model's layers) run the tests' real
      // trainings; unoptimised they are 20-50x slower. Debug builds keep assertions and
      // @testable access.
      swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]
    ),
    // Versioned registry and gRPC services.
    .target(
      name: "RecServeServing",
      dependencies: [
        "RecServeRPC", "RecServeProto", "RecServeModels", "CSystem",
        .product(name: "Atomics", package: "swift-atomics"),
      ]
    ),
    .executableTarget(
      name: "recserve",
      dependencies: [
        "RecServeServing", "RecServeModels", "RecServeRPC", "RecServeProto", "CSystem", "CCrypto",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        // `recserve load`'s latency percentiles.
        .product(name: "Histogram", package: "hdrhistogram-swift"),
        // The server's log (text or JSON lines).
        .product(name: "Logging", package: "swift-log"),
      ]
    ),
    // Fuzz targets (libFuzzer): the harnesses are a library that the tests also run on the seed
    // corpora and every past finding; the executables are libFuzzer's entry points, built with
    // the fuzzer by Scripts/fuzz.sh (see Fuzz/README.md).
    .target(
      name: "RecServeFuzzing",
      dependencies: ["RecServeServing", "RecServeModels", "RecServeRPC"],
      path: "Fuzz/Harness"
    ),
    .executableTarget(
      name: "FuzzRatings", dependencies: ["RecServeFuzzing"], path: "Fuzz/Entry/FuzzRatings"),
    .executableTarget(
      name: "FuzzModelDirectory", dependencies: ["RecServeFuzzing"],
      path: "Fuzz/Entry/FuzzModelDirectory"),
    .executableTarget(
      name: "FuzzRPC", dependencies: ["RecServeFuzzing"], path: "Fuzz/Entry/FuzzRPC"),
    .testTarget(name: "RecServeRPCTests", dependencies: ["RecServeRPC"]),
    .testTarget(name: "RecServeFuzzingTests", dependencies: ["RecServeFuzzing"]),
    // `withServer { channel, server in ... }`: the real RecServeServer on a free port.
    .target(
      name: "RecServeTestSupport",
      dependencies: ["RecServeServing", "RecServeModels", "RecServeRPC"],
      path: "Tests/RecServeTestSupport"
    ),
    .testTarget(
      name: "RecServeServerTests",
      dependencies: ["RecServeTestSupport", "RecServeServing", "RecServeProto", "RecServeRPC"]
    ),
    .testTarget(name: "RecServeModelsTests", dependencies: ["RecServeModels"]),
    .testTarget(
      name: "RecServeCLITests",
      dependencies: [
        "recserve", "RecServeModels", "RecServeProto", "RecServeRPC",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "Histogram", package: "hdrhistogram-swift"),
      ]
    ),
    .testTarget(
      name: "RecServeProtoTests",
      dependencies: ["RecServeProto", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
    ),
    .testTarget(
      name: "RecServeServingTests",
      dependencies: ["RecServeServing", "RecServeProto", "RecServeRPC", "RecServeModels"]
    ),
  ],
  swiftLanguageModes: [.v6]
)
