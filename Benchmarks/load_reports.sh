#!/usr/bin/env bash
# A concurrency sweep and a swap under load against a served model (issue 12), with their HTML
# reports and screenshots of them in headless Chromium.
#
#   Benchmarks/load_reports.sh [--out DIR] [--sweep 1,2,4,8,16,32,64,128,256] [--seconds 5]
#                              [--swap-seconds 20] [--data ../shared/data/ml-latest-small/ratings.csv]
#
# Trains two ALS versions of the data (seeds 1 and 2) into a fresh model folder, serves it with
# the release build (2 request threads) and a metrics port, then:
#   1. `recserve load --sweep`: Rank by user id (Zipf 1 over the version's users), each level for
#      --seconds, report sweep.html;
#   2. `recserve load --swap-at`: --swap-seconds of Rank at half the sweep's peak concurrency,
#      closed loop, with version 1 promoted (set-label stable 1) a third of the way in while
#      version 2 serves, report swap.html;
#   3. a 10% canary of version 2 under the same load for 65 s: `models status --watch` once;
# and screenshots both pages (sweep.png, swap.png) and the status page during the canary
# (status.png) into --out (default Benchmarks/images). Prints the tables. About 3 minutes.
# Nothing else should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."

out=Benchmarks/images sweep=1,2,4,8,16,32,64,128,256 seconds=5 swap_seconds=20
data=../shared/data/ml-latest-small/ratings.csv
while (($#)); do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --sweep) sweep=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --swap-seconds) swap_seconds=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -f "$data" ]] || { echo "no data file $data" >&2; exit 1; }
chromium=$(command -v chromium || command -v chromium-browser || true)
[[ -n "$chromium" ]] || { echo "needs chromium (apt-get install chromium)" >&2; exit 1; }

bin=${RECSERVE_BIN:-.build/release/recserve}
[[ -n "${RECSERVE_BIN:-}" ]] || swift build -c release --product recserve >/dev/null
mkdir -p "$out"
work=$(mktemp -d)
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for seed in 1 2; do
  "$bin" train --data "$data" --kind als --name ml --models "$work/models" --seed "$seed" --quiet >/dev/null
done
metrics=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --models "$work/models" --port 0 --threads 2 --metrics-port "$metrics" >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
for _ in $(seq 1 600); do grep -q "listening on" "$work/serve.out" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on .*:\([0-9]*\).*/\1/p' "$work/serve.out" | head -1)
[[ -n "$port" ]] || { echo "server did not start: $(cat "$work/serve.err")" >&2; exit 1; }
target=127.0.0.1:$port
common=(--target "$target" --model ml --rpc rank --ids-from "$work/models/ml/1" --zipf 1 --threads 2)

echo "## sweep (${seconds} s a level)"
"$bin" load "${common[@]}" --sweep "$sweep" --duration "$seconds" --quiet --report "$out/sweep.html" \
  --json >"$work/sweep.json"
python3 - "$work/sweep.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print("| in flight | calls/s | p50 ms | p90 ms | p99 ms | max ms | errors |")
print("|---|---|---|---|---|---|---|")
for l in s["levels"]:
    m = l["latency_ms"]
    print(f"| {l['concurrency']} | {l['calls_per_s']:.0f} | {m['p50']:.3f} | {m['p90']:.3f} | {m['p99']:.3f} | {m['max']:.3f} | {l['errors']} |")
print(s["verdict"])
EOF
peak=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(max(s["levels"], key=lambda l: l["calls_per_s"])["concurrency"])' "$work/sweep.json")
inflight=$(( peak / 2 > 2 ? peak / 2 : 2 ))

echo
echo "## swap under load (${swap_seconds} s, ${inflight} in flight, set-label stable 1 at $(python3 -c "print(round($swap_seconds/3,1))") s)"
"$bin" load "${common[@]}" --concurrency "$inflight" --duration "$swap_seconds" \
  --swap-at "$(python3 -c "print(round($swap_seconds/3,1))")" --swap-version 1 --report "$out/swap.html" \
  2>"$work/swap.err" | sed -n '/^swap:/,$p'

shot() { # page png
  "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1000,1500 \
    --user-data-dir="$work/chromium" --screenshot="$2" "$1" >/dev/null 2>&1
}
shot "file://$PWD/$out/sweep.html" "$out/sweep.png"
shot "file://$PWD/$out/swap.html" "$out/swap.png"
# A 10% canary under the same load for 65 s, so that the last minute's rates cover only it.
"$bin" models canary ml 2 --fraction 0.1 --target "$target" >/dev/null
"$bin" load "${common[@]}" --concurrency "$inflight" --duration 65 --quiet >/dev/null &
loader=$!
sleep 66
echo
echo "## models status ml --watch, a 10% canary of version 2 under load"
"$bin" models status ml --watch --count 1 --target "$target"
shot "http://127.0.0.1:$metrics/" "$out/status.png"
wait "$loader"
echo
echo "screenshots: $out/sweep.png $out/swap.png $out/status.png"
