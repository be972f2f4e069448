#!/usr/bin/env bash
# Rank latency through gRPC on a SASRec trained on MovieLens (release build): one call in flight
# and at saturation, ranking by user_id (the user's state, computed when the version loaded) and
# by recent_items (a session encoded by the network on every call), with MF (the same data,
# dim 64) beside it for scale. The same C gRPC-core load client (`recserve load`) for every row.
#
#   Benchmarks/sasrec_rank_latency.sh [--epochs 200] [--duration 10] [--recent 20,200]
#                                     [--saturation 32] [--models DIR]
#
# --models DIR reuses a folder that already holds `seq` (sasrec) and `mf` versions; otherwise
# both are trained here on ../shared/data/ml-latest-small/ratings.csv (SASRec at its defaults:
# maxlen 200, dim 50, 2 blocks, 1 head). The server runs with --threads 2 on this machine's
# 2 cores, beside the load client: saturation figures are for both on one box.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=200 duration=10 recent_list=20,200 saturation=32 models=""
while (($#)); do
  case "$1" in
    --epochs) epochs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --recent) recent_list=$2; shift 2 ;;
    --saturation) saturation=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
ratings=$(cd .. && pwd)/shared/data/ml-latest-small/ratings.csv
swift build -c release --product recserve >/dev/null
bin=$PWD/.build/release/recserve
work=$(mktemp -d)
server=""
cleanup() { [[ -n $server ]] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
if [[ -z $models ]]; then
  [[ -f $ratings ]] || { echo "missing $ratings" >&2; exit 1; }
  models=$work/models
  "$bin" train --data "$ratings" --kind sasrec --name seq --models "$models" --epochs "$epochs" \
    --split none --progress none >/dev/null
  "$bin" train --data "$ratings" --kind mf --name mf --models "$models" --holdout 0 --quiet >/dev/null
fi
seq_version=$(ls "$models/seq" | grep -E '^[0-9]+$' | sort -n | tail -1)
mf_version=$(ls "$models/mf" | grep -E '^[0-9]+$' | sort -n | tail -1)
"$bin" serve --models "$models" --port 0 --threads 2 >"$work/out" 2>"$work/err" &
server=$!
for _ in $(seq 1 300); do grep -q "listening on" "$work/out" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on .*:\([0-9]*\).*/\1/p' "$work/out")
[[ -n $port ]] || { cat "$work/err" >&2; exit 1; }

# load NAME MODEL INFLIGHT RECENT
run() {
  local label=$1 model=$2 inflight=$3 recent=$4
  local threads=1
  ((inflight > 1)) && threads=2
  "$bin" load --target "127.0.0.1:$port" --rpc rank --model "$model" --k 10 \
    --concurrency "$inflight" --threads "$threads" --duration "$duration" --warmup 1 \
    --recent "$recent" --users-file "$models/$model/$([[ $model == seq ]] && echo "$seq_version" || echo "$mf_version")/users.txt" \
    --items-file "$models/$model/$([[ $model == seq ]] && echo "$seq_version" || echo "$mf_version")/items.txt" \
    --json --quiet | python3 -c "import json,sys; r=json.load(sys.stdin); r['label']='$label'; print(json.dumps(r))"
}
{
  for inflight in 1 "$saturation"; do
    run "mf, by user_id" mf "$inflight" 0
    run "sasrec, by user_id" seq "$inflight" 0
    IFS=, read -ra recents <<<"$recent_list"
    for r in "${recents[@]}"; do
      run "sasrec, recent_items x$r" seq "$inflight" "$r"
    done
  done
} >"$work/results.jsonl"
python3 - "$work/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"| query | in flight | calls/s | p50 ms | p99 ms | p99.9 ms | errors |")
print(f"|---|---|---|---|---|---|---|")
for r in rows:
    l = r["latency_ms"]
    print(f"| {r['label']} | {r['concurrency']} | {r['calls_per_s']:.0f} | {l['p50']:.3f} | {l['p99']:.3f} | "
          f"{l['p999']:.3f} | {r['errors']} |")
PY
