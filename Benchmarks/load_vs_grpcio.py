#!/usr/bin/env python3
"""Does `recserve load` measure what another client measures? (issue 12, done-when 1)

1. One call in flight, the same server, the same Rank requests: `recserve load --concurrency 1`
   against a Python grpcio client (stubs generated from Protos/ by grpcio-tools) timing each call
   with perf_counter; alternated `--rounds` times, p50 compared. Two request weights: a light Rank
   (a trained MF model of 1,000 items: the client's own cost per call is a large part of what is
   measured) and a heavy one (1,000,000 random 64-dimensional items, an exact scan of the whole
   catalog: the server's work dominates).
2. Open loop above capacity: the closed-loop capacity at one call in flight is measured, then
   `--rate` at twice it for `--open-seconds`: with latency charged from each call's intended start
   (coordinated omission corrected) the per-second p50 grows through the run.

    swift build -c release --product recserve && pip install grpcio grpcio-tools numpy
    python3 Benchmarks/load_vs_grpcio.py [--seconds 5] [--rounds 3] [--binary .build/release/recserve]

Prints markdown tables. Nothing else should run: on 2 cores the client competes with the server.
"""

import argparse
import json
import pathlib
import re
import select
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent


def stubs(out: pathlib.Path):
    out.mkdir(parents=True, exist_ok=True)
    import grpc_tools  # noqa: PLC0415
    from grpc_tools import protoc  # noqa: PLC0415

    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{REPO / 'Protos'}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}",
            "recserve/v1/recserve.proto"]
    if protoc.main(args) != 0:
        sys.exit("grpcio-tools could not compile Protos/")
    for package in ("recserve", "recserve/v1"):
        (out / package / "__init__.py").touch()
    sys.path.insert(0, str(out))


def serve(binary, models):
    process = subprocess.Popen([binary, "serve", "--models", str(models), "--port", "0", "--threads", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            match = re.match(r"listening on ([^\s]+):(\d+)", process.stdout.readline())
            if match:
                return process, f"127.0.0.1:{match.group(2)}"
        if process.poll() is not None:
            sys.exit("recserve serve exited")
    sys.exit("recserve serve did not start")


def python_p50(target, model, users, seconds, k):
    import grpc  # noqa: PLC0415
    from recserve.v1 import recserve_pb2 as pb  # noqa: PLC0415
    from recserve.v1 import recserve_pb2_grpc as rpc  # noqa: PLC0415

    rng = np.random.default_rng(12345)
    requests = [pb.RankRequest(model=pb.ModelSpec(name=model), user_id=users[i], k=k)
                for i in rng.integers(0, len(users), 4096)]
    with grpc.insecure_channel(target) as channel:
        stub = rpc.RecommenderStub(channel)
        for request in requests[:200]:  # warm-up
            stub.Rank(request, timeout=10)
        latencies = []
        end = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            stub.Rank(requests[n % len(requests)], timeout=10)
            latencies.append(time.perf_counter() - t0)
            n += 1
    return float(np.median(latencies)) * 1000, len(latencies) / seconds


def recserve_load(binary, target, model, version_dir, seconds, k, *extra):
    out = subprocess.run([binary, "load", "--target", target, "--model", model, "--rpc", "rank", "--k", str(k),
                          "--ids-from", str(version_dir), "--threads", "1", "--concurrency", "1",
                          "--duration", str(seconds), "--json", "--quiet", *map(str, extra)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"recserve load failed: {out.stderr}")
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--open-seconds", type=float, default=6)
    parser.add_argument("--binary", default=str(REPO / ".build" / "release" / "recserve"))
    args = parser.parse_args()
    binary = args.binary
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="load-vs-grpcio-"))
    stubs(tmp / "stubs")

    models = tmp / "models"
    weights = ["light", "heavy"]
    data = tmp / "light.csv"
    subprocess.run([binary, "gen-data", "--users", "2000", "--items", "1000", "--out", str(data), "--seed", "1"],
                   check=True, capture_output=True)
    subprocess.run([binary, "train", "--data", str(data), "--kind", "mf", "--name", "light", "--models", str(models),
                    "--dim", "64", "--epochs", "2", "--quiet"], check=True, capture_output=True)
    sys.path.insert(0, str(HERE))
    from rank_vs_faiss import write_model  # noqa: PLC0415

    write_model(models, "heavy", users=5000, items=1_000_000, dim=64)
    server, target = serve(binary, models)
    try:
        print("| request | client | p50 ms per round | median p50 ms | calls/s |")
        print("|---|---|---|---|---|")
        ratios = {}
        for name in weights:
            version = models / name / "1"
            users = (version / "users.txt").read_text().split()
            ours, theirs, our_rate, their_rate = [], [], [], []
            for _ in range(args.rounds):
                summary = recserve_load(binary, target, name, version, args.seconds, 10)
                ours.append(summary["latency_ms"]["p50"])
                our_rate.append(summary["calls_per_s"])
                p50, rate = python_p50(target, name, users, args.seconds, 10)
                theirs.append(p50)
                their_rate.append(rate)
            for label, values, rates in (("recserve load", ours, our_rate), ("grpcio (Python)", theirs, their_rate)):
                print(f"| {name} | {label} | {' / '.join(f'{v:.3f}' for v in values)} | {np.median(values):.3f} | "
                      f"{np.median(rates):.0f} |")
            ratios[name] = np.median(ours) / np.median(theirs)
        for name, ratio in ratios.items():
            print(f"\n{name}: recserve load p50 / grpcio p50 = {ratio:.3f}")

        # Open loop above capacity.
        version = models / "heavy" / "1"
        capacity = recserve_load(binary, target, "heavy", version, 3, 10)["calls_per_s"]
        rate = 2 * capacity
        with tempfile.NamedTemporaryFile(suffix=".csv") as series:
            summary = recserve_load(binary, target, "heavy", version, args.open_seconds, 10, "--rate", f"{rate:.0f}",
                                    "--warmup", 0, "--csv", series.name)
            rows = [line.split(",") for line in pathlib.Path(series.name).read_text().splitlines()[1:]]
        print(f"\nopen loop at {rate:.0f} calls/s (2x the {capacity:.0f} calls/s measured at one call in flight):")
        print("| second | calls/s | p50 ms | p99 ms |")
        print("|---|---|---|---|")
        for row in rows:
            print(f"| {row[0]} | {row[2]} | {float(row[5]):.1f} | {float(row[7]):.1f} |")
        print(f"calls due but never sent: {summary['unsent']}; overall p50 {summary['latency_ms']['p50']:.1f} ms, "
              f"p99 {summary['latency_ms']['p99']:.1f} ms")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
