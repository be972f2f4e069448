#!/usr/bin/env bash
# Unary Predict throughput of RecServe against a bare C gRPC-core echo server, side by side in one
# run, with the same native load client (`recserve load`: 2 threads x 32 calls in flight by default).
#
#   Benchmarks/predict_throughput.sh [--duration 10] [--threads 2] [--concurrency 64] [--rpc predict]
#                                    [--rounds 2] [--server-threads 2]
#
# Release build; both servers get the same number of threads (2) and run on this machine's loopback.
# The two servers are measured alternately, --rounds times each, and the ratio of the means is
# reported. Nothing else should be running: on 2 cores the load client competes with the server.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10 threads=2 concurrency=64 rpc=predict server_threads=2 rounds=2
while (($#)); do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --rpc) rpc=$2; shift 2 ;;
    --server-threads) server_threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

swift build -c release --product recserve >/dev/null
Benchmarks/echo-server/build.sh >/dev/null
bin=.build/release/recserve
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_listening() { # file
  for _ in $(seq 1 600); do
    if grep -q "listening on" "$1" 2>/dev/null; then sed -n 's/.*listening on .*:\([0-9]*\).*/\1/p' "$1" | head -1; return; fi
    sleep 0.1
  done
  echo "server did not start: $(cat "$1")" >&2; exit 1
}

"$bin" serve --models "$work/models" --port 0 --threads "$server_threads" >"$work/recserve.out" 2>"$work/recserve.err" &
pids+=($!)
recserve_port=$(wait_listening "$work/recserve.out")
Benchmarks/echo-server/echo_server --port 0 --threads "$server_threads" >"$work/echo.out" 2>&1 &
pids+=($!)
echo_port=$(wait_listening "$work/echo.out")

run() { # port
  "$bin" load --target "127.0.0.1:$1" --rpc "$rpc" --threads "$threads" --concurrency "$concurrency" \
    --duration "$duration" --model demo --json --quiet
}
echo "load: $rpc, $threads client threads x $((concurrency / threads)) in flight, ${duration} s, servers on $server_threads threads, $rounds rounds" >&2
results=()
for round in $(seq 1 "$rounds"); do
  results+=("$(run "$echo_port")" "$(run "$recserve_port")")
done
python3 - "${results[@]}" <<'PY'
import json, sys
runs = [json.loads(a) for a in sys.argv[1:]]
echo, rec = runs[0::2], runs[1::2]
print(f"{'server':<28}{'round':>6}{'calls/s':>10}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}")
for name, rs in [("bare C gRPC-core echo", echo), ("recserve (Predict, MF)", rec)]:
    for i, r in enumerate(rs, 1):
        l = r["latency_ms"]
        print(f"{name:<28}{i:>6}{r['calls_per_s']:>10.0f}{r['errors']:>8}{l['p50']:>9.3f}{l['p99']:>9.3f}{l['p999']:>10.3f}")
mean = lambda rs: sum(r["calls_per_s"] for r in rs) / len(rs)
print(f"mean calls/s: echo {mean(echo):.0f}, recserve {mean(rec):.0f}; ratio recserve / echo: {mean(rec) / mean(echo):.2f}")
PY
