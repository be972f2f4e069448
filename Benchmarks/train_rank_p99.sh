#!/usr/bin/env bash
# Rank latency seen by a client while the server trains: idle, during a Train RPC (BPR on
# MovieLens, 1000 epochs), and after. Release build; open-loop Rank load at --rate calls/s.
#
#   Benchmarks/train_rank_p99.sh [--rate 500] [--epochs 1000] [--kind bpr]
#
# Reads ../shared/data/ml-latest-small/ratings.csv beside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=500 epochs=1000 kind=bpr
while (($#)); do
  case "$1" in
    --rate) rate=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --kind) kind=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
ratings=$(cd .. && pwd)/shared/data/ml-latest-small/ratings.csv
[[ -f $ratings ]] || { echo "missing $ratings" >&2; exit 1; }
swift build -c release --product recserve >/dev/null
bin=$PWD/.build/release/recserve
work=$(mktemp -d)
server=""
cleanup() { [[ -n $server ]] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/root"
cp "$ratings" "$work/root/ratings.csv"
"$bin" train --data "$work/root/ratings.csv" --name ml --models "$work/models" --quiet >/dev/null
cut -d, -f1 "$ratings" | tail -n +2 | sort -u >"$work/users.txt"
cut -d, -f2 "$ratings" | tail -n +2 | sort -u >"$work/items.txt"
"$bin" serve --models "$work/models" --port 0 --data-root "$work/root" >"$work/out" 2>"$work/err" &
server=$!
for _ in $(seq 1 100); do grep -q "listening on" "$work/out" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on .*:\([0-9]*\).*/\1/p' "$work/out")

load() {
  "$bin" load --target "127.0.0.1:$port" --rpc rank --model ml --rate "$rate" --concurrency 16 --threads 1 \
    --duration 8 --warmup 0.5 --users-file "$work/users.txt" --items-file "$work/items.txt" --json --quiet
}
idle=$(load)
python3 - "$port" "$kind" "$epochs" >"$work/train.txt" 2>&1 <<'PY' &
import subprocess, sys, tempfile, time
port, kind, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = tempfile.mkdtemp()
subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-IProtos", f"--python_out={out}",
                f"--grpc_python_out={out}", "recserve/v1/recserve.proto"], check=True)
sys.path.insert(0, out)
import grpc
from recserve.v1 import recserve_pb2 as pb, recserve_pb2_grpc as rpc
with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    start = time.time()
    for message in rpc.RecommenderStub(channel).Train(
            pb.TrainRequest(name="trained", kind=kind, data_path="ratings.csv", dim=64, epochs=epochs), timeout=600):
        pass
    print(f"training took {time.time() - start:.1f} s: {message.message}")
PY
trainer=$!
sleep 1.5
during=$(load)
wait "$trainer"
after=$(load)
cat "$work/train.txt"
python3 - "$idle" "$during" "$after" <<'PY'
import json, sys
rows = [json.loads(a) for a in sys.argv[1:]]
print(f"{'phase':<10}{'calls':>7}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}")
for name, r in zip(["idle", "training", "after"], rows):
    l = r["latency_ms"]
    print(f"{name:<10}{r['calls']:>7}{r['errors']:>8}{l['p50']:>9.3f}{l['p99']:>9.3f}{l['p999']:>10.3f}")
print(f"p99 during training / idle: {rows[1]['latency_ms']['p99'] / rows[0]['latency_ms']['p99']:.2f}")
PY
