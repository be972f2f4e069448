#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer (Fuzz/README.md): builds the fuzz targets with the
# fuzzer and AddressSanitizer into .build-fuzz, runs each for SECONDS from its committed seeds
# (Fuzz/Corpus) plus what earlier local runs kept (.build-fuzz/corpus), two at a time, and
# prints executions and coverage per target. Fails when a target crashed, hung (an input over
# 30 s) or leaked; the input is then in .build-fuzz/findings/<target>/: add it to
# Fuzz/Findings/<target>/ with the fix, so that `swift test` replays it from then on.
#
#   Scripts/fuzz.sh                     # every target, 60 s each (what the test suite runs)
#   Scripts/fuzz.sh --seconds 600       # 10 minutes each
#   Scripts/fuzz.sh --seconds 600 FuzzRPC
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=60
jobs=2
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(FuzzRatings FuzzModelDirectory FuzzRPC)

# SwiftPM's --sanitize=fuzzer links libFuzzer's main in place of the program's; the Swift code
# gets both sanitizers through one -sanitize= flag (given twice, swiftc keeps only the last).
build=(swift build --scratch-path .build-fuzz --sanitize=fuzzer
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library)
mkdir -p .build-fuzz
for target in "${targets[@]}"; do
  if ! "${build[@]}" --product "$target" >.build-fuzz/build.log 2>&1; then
    grep -v "Cannot export local symbol" .build-fuzz/build.log | tail -30
    echo "fuzz.sh: building $target failed" >&2
    exit 1
  fi
done
bin=$("${build[@]}" --show-bin-path)

# The descriptor set that reflection keeps for the process's life looks leaked to LSan
# (Scripts/lsan.supp says why).
export LSAN_OPTIONS="suppressions=$PWD/Scripts/lsan.supp:print_suppressions=0"
export ASAN_OPTIONS="detect_leaks=1"

run() {
  local target=$1 corpus=".build-fuzz/corpus/$1" findings=".build-fuzz/findings/$1"
  mkdir -p "$corpus" "$findings"
  local log=".build-fuzz/$target.log"
  # New inputs go to the first folder; the committed seeds are only read.
  "$bin/$target" "$corpus" "Fuzz/Corpus/$target" -max_total_time="$seconds" -timeout=30 \
    -rss_limit_mb=4096 -max_len=8192 -print_final_stats=1 -artifact_prefix="$findings/" \
    >"$log" 2>&1
  local status=$?
  local last
  last=$(grep -E '^#[0-9]+.*cov:' "$log" | tail -1)
  local execs
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  if [ $status -eq 0 ]; then
    echo "$target: ok, ${execs:-?} executions in ${seconds}s; $(echo "$last" | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+')"
  else
    echo "$target: FAILED (exit $status); $(ls -t "$findings" | head -1 | sed "s|^|$findings/|")"
    grep -E 'ERROR|Fatal error|precondition|SUMMARY|deadly signal|timeout' "$log" | head -8 | sed 's/^/  /'
    echo "  (full log: $log)"
  fi
  return $status
}

failed=0
pids=()
names=()
for target in "${targets[@]}"; do
  run "$target" &
  pids+=($!)
  names+=("$target")
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
exit $failed
