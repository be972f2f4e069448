#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs the Swift tests, then the
# end-to-end tests in which Python grpcio clients (stubs generated from Protos/ during the run)
# call the real server on real sockets.
set -euo pipefail
cd "$(dirname "$0")/.."
Scripts/install-deps.sh --test

# Build only what the tests need: building every product would also compile swift-protobuf's
# bundled protoc from source (minutes) for nothing.
swift build --product recserve
swift build --product RecServePackageTests
swift test --skip-build

export RECSERVE_BIN="$PWD/.build/debug/recserve"
python3 -m pytest -q -p no:cacheprovider Tests/python

# Coverage-guided fuzzing, 60 s per target (Fuzz/README.md): fails on a crash, a failed check, a
# hang or a leak, never on time.
Scripts/fuzz.sh --seconds 60
