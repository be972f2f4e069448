#!/usr/bin/env python3
"""What one replica costs: resident memory and start-up time (process start to "listening", the
version loaded and verified) of `recserve serve` for factor models of 1M items at several
dimensions, written with Scripts/export_factors.py (100k users each).

    swift build -c release --product recserve
    python3 Benchmarks/replica_cost.py [--items 1000000] [--users 100000] [--dims 32,64,128]

RSS is read from /proc after start-up and again after 2,000 Rank calls; the model's files are
memory-mapped, so their pages count in RSS once read (verification reads them all).
"""

import argparse
import os
import pathlib
import re
import select
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Scripts"))
sys.path.insert(0, str(REPO / "Tests" / "python"))
import export_factors  # noqa: E402


def rss_mb(pid: int) -> float:
    text = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def serve(binary: str, models: pathlib.Path):
    start = time.monotonic()
    process = subprocess.Popen([binary, "serve", "--models", str(models), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while True:
        ready, _, _ = select.select([process.stdout], [], [], 300)
        if not ready:
            raise RuntimeError("no 'listening on' within 300 s")
        line = process.stdout.readline()
        match = re.match(r"listening on [^\s]+:(\d+)", line)
        if match:
            return process, int(match.group(1)), time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--dims", default="32,64,128")
    parser.add_argument("--binary", default=str(REPO / ".build" / "release" / "recserve"))
    args = parser.parse_args()
    import conftest  # noqa: F401, PLC0415  (generates the gRPC stubs)
    import grpc  # noqa: PLC0415
    from recserve.v1 import recserve_pb2 as pb  # noqa: PLC0415
    from recserve.v1 import recserve_pb2_grpc as rpc  # noqa: PLC0415

    rng = np.random.default_rng(1)
    print(f"{args.items:,} items, {args.users:,} users; release build {args.binary}")
    print("| dim | files MB | start-up s | RSS after start MB | RSS after 2,000 Rank MB | RSS per (1M items x dim) MB |")
    print("|---|---|---|---|---|---|")
    for dim in [int(d) for d in args.dims.split(",")]:
        with tempfile.TemporaryDirectory() as work:
            models = pathlib.Path(work) / "models"
            uf = rng.normal(scale=0.1, size=(args.users, dim)).astype(np.float32)
            itf = rng.normal(scale=0.1, size=(args.items, dim)).astype(np.float32)
            version = export_factors.from_numpy([f"u{i}" for i in range(args.users)], uf,
                                                [f"i{i}" for i in range(args.items)], itf, models, "big")
            del uf, itf
            size = sum(p.stat().st_size for p in version.iterdir()) / 2**20
            os.system("sync")
            process, port, startup = serve(args.binary, models)
            try:
                after_start = rss_mb(process.pid)
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = rpc.RecommenderStub(channel)
                    for n in range(2000):
                        stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="big"), user_id=f"u{n}", k=10),
                                  timeout=30)
                after_calls = rss_mb(process.pid)
            finally:
                process.terminate()
                process.wait()
            per = after_calls / (args.items / 1e6 * dim)
            print(f"| {dim} | {size:.0f} | {startup:.2f} | {after_start:.0f} | {after_calls:.0f} | {per:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
