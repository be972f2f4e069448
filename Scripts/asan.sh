#!/usr/bin/env bash
# The whole test suite once under AddressSanitizer with leak detection: builds recserve and the
# test bundle with --sanitize=address into .build-asan (apart from the normal .build), runs the
# Swift tests, then the Python end-to-end suite against the ASan binary, and fails if any test
# fails or any process left a sanitizer report. Reports go to files (log_path), so a server that
# a report killed or made exit non-zero is caught even when its test only saw the exit code.
#
# Not run by CI (too slow). Measured on this project's 2-core machine (2026-12-02, 171 Swift and
# 243 Python tests): about 10 min from an empty .build-asan (build ~3 min, Swift tests ~40 s,
# Python suite ~5 min).
#
# Suppressions: Scripts/lsan.supp (each line explained there). XCTest is skipped while no test
# imports it: with zero XCTest tests, its empty run alone reports leaks inside the toolchain's
# XCTest (swiftlang/swift-corelibs-xctest#534), which no code of ours can fix.
set -uo pipefail
cd "$(dirname "$0")/.."
Scripts/install-deps.sh --test || exit 1

# Build only what the tests need: building every product would also compile swift-protobuf's
# bundled protoc from source (minutes) for nothing.
build=(swift build --scratch-path .build-asan --sanitize=address)
"${build[@]}" --product recserve || exit 1
"${build[@]}" --product RecServePackageTests || exit 1

reports=$(mktemp -d /tmp/asan.XXXXXX)
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$reports/swift-tests"
export LSAN_OPTIONS="suppressions=$PWD/Scripts/lsan.supp:print_suppressions=0"
echo "asan: reports (if any) go to $reports" >&2

xctest=(--disable-xctest)
grep -rqs --include='*.swift' '^import XCTest' Tests && xctest=()
swift_log="$reports/swift-test.out"
swift test --scratch-path .build-asan --sanitize=address --skip-build "${xctest[@]}" 2>&1 |
  tee "$swift_log"
swift_status=${PIPESTATUS[0]}

export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$reports/recserve"
export RECSERVE_BIN="$PWD/.build-asan/debug/recserve"
python_log="$reports/pytest.out"
python3 -m pytest -q -p no:cacheprovider Tests/python 2>&1 | tee "$python_log"
python_status=${PIPESTATUS[0]}

# Swift Testing: "Test run with N tests ... passed|failed", one "✘ Test name() failed" per failure.
swift_total=$(grep -oE 'Test run with [0-9]+ tests?' "$swift_log" | tail -1 | grep -oE '[0-9]+')
swift_failed=$(grep -E '^✘ Test .* failed after' "$swift_log" | grep -vc '^✘ Test run with')
swift_total=${swift_total:-0}
# pytest -q: "70 passed, 3 failed, 1 error in 24.91s"
python_summary=$(grep -E '^[0-9]+ (passed|failed|error)' "$python_log" | tail -1)
count() { grep -oE "[0-9]+ $1" <<<"$python_summary" | grep -oE '[0-9]+' || echo 0; }
python_passed=$(count passed)
python_failed=$(($(count failed) + $(count errors?)))
python_skipped=$(count skipped)

report_files=()
for file in "$reports"/swift-tests.* "$reports"/recserve.*; do
  [[ -e "$file" ]] && report_files+=("$file")
done
for file in "${report_files[@]}"; do
  echo "asan: report in $file:" >&2
  grep -E '^(==[0-9]+==ERROR|SUMMARY)' "$file" >&2
done

passed=$((swift_total - swift_failed + python_passed))
failed=$((swift_failed + python_failed))
# A run that stopped early (build error, a sanitizer halting a test process) can look clean by
# its counts: the exit statuses decide too.
((swift_status != 0)) && echo "asan: swift test exited with $swift_status" >&2
((python_status != 0)) && echo "asan: pytest exited with $python_status" >&2
echo "asan: swift ${swift_total} tests (${swift_failed} failed), python ${python_passed} passed" \
  "${python_failed} failed ${python_skipped} skipped, ${#report_files[@]} sanitizer report file(s)"
skipped=""
((python_skipped > 0)) && skipped=", $python_skipped skipped"
echo "asan: $passed passed, $failed failed$skipped"
((failed == 0 && ${#report_files[@]} == 0 && swift_status == 0 && python_status == 0))
