#!/usr/bin/env python3
"""Rank top-10 through gRPC against FAISS, side by side in one run (issue 10).

A generated MF model (random factors, `--items` x `--dim`, 2,000 users) is written straight into a
model folder; `recserve serve` (release build) serves it, and `recserve load` (the C gRPC-core
client) calls Rank k=10 by user with 1 call in flight and with 16. FAISS `IndexFlatIP` (faiss-cpu,
one thread, in process, no RPC) answers the same users' top-10 one query at a time, and a batch of
16 at a time. Prints a markdown table with calls/s, p50 and p99, and the ratios RecServe / FAISS.

    swift build -c release --product recserve
    pip install faiss-cpu numpy
    python3 Benchmarks/rank_vs_faiss.py [--items 100000] [--dim 64] [--duration 10] [--json OUT]
"""

import argparse
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Scripts"))
from export_sasrec import safetensors_bytes  # noqa: E402


def sha256_file(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_folder(models: pathlib.Path, name: str, tensors: dict) -> pathlib.Path:
    """Version 1 of a BPR-kind model `name` under `models`, from its tensors, with ids u0.. and i0.."""
    folder = models / name / "1"
    folder.mkdir(parents=True)
    users, items = len(tensors["user_factors"]), len(tensors["item_factors"])
    dim = tensors["item_factors"].shape[1]
    (folder / "weights.safetensors").write_bytes(
        safetensors_bytes(tensors, {"format": "recserve-model", "kind": "bpr"}))
    (folder / "users.txt").write_text("".join(f"u{u}\n" for u in range(users)))
    (folder / "items.txt").write_text("".join(f"i{i}\n" for i in range(items)))
    manifest = {
        "format": "recserve-model", "format_version": 1, "kind": "bpr", "name": name,
        "created_at": "2026-12-02T00:00:00Z", "hyperparameters": {"dim": dim},
        "counts": {"users": users, "items": items, "dim": dim}, "training_data": {}, "metrics": {},
        "files": {f: sha256_file(folder / f) for f in ["weights.safetensors", "users.txt", "items.txt"]},
    }
    (folder / "model.json").write_text(json.dumps(manifest))
    return folder


def write_model(models: pathlib.Path, name: str, users: int, items: int, dim: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    scale = 1 / np.sqrt(dim)
    # Items with a popularity-like spread of norms, as trained factors have.
    item_factors = (rng.standard_normal((items, dim)) * scale * rng.lognormal(0, 0.3, (items, 1))).astype(np.float32)
    tensors = {
        "user_factors": (rng.standard_normal((users, dim)) * scale).astype(np.float32),
        "item_factors": item_factors,
        "user_bias": np.zeros(users, np.float32),
        "item_bias": np.zeros(items, np.float32),
        "global_mean": np.zeros(1, np.float32),
    }
    write_folder(models, name, tensors)
    return tensors


def faiss_rates(tensors, duration: float):
    import faiss  # noqa: PLC0415

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(tensors["item_factors"].shape[1])
    index.add(tensors["item_factors"])
    users = tensors["user_factors"]
    out = {}
    for batch in (1, 16):
        latencies = []
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < duration:
            q = users[(i * batch) % len(users):(i * batch) % len(users) + batch]
            if len(q) < batch:
                q = users[:batch]
            t = time.perf_counter()
            index.search(q, 10)
            latencies.append(time.perf_counter() - t)
            i += 1
        elapsed = time.perf_counter() - start
        lat = np.array(latencies) * 1000
        out[batch] = {"queries_per_s": i * batch / elapsed, "p50_ms": float(np.percentile(lat, 50)),
                      "p99_ms": float(np.percentile(lat, 99))}
    return out


def recserve_rates(binary: str, models: pathlib.Path, duration: float, users_file: pathlib.Path,
                   runs=((1, "exact"), (16, "exact"), (1, "default"), (16, "default")), extra=(), recall=True):
    server = subprocess.Popen([binary, "serve", "--models", str(models), "--port", "0", "--threads", "2",
                               *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and port is None:
            line = server.stdout.readline()
            match = re.search(r"listening on .*:(\d+)", line)
            if match:
                port = int(match.group(1))
        if port is None:
            raise RuntimeError("the server did not start")
        out = {}
        for inflight, search in runs:
            result = subprocess.run(
                [binary, "load", "--target", f"127.0.0.1:{port}", "--rpc", "rank", "--model", "big", "--k", "10",
                 "--concurrency", str(inflight), "--threads", "1" if inflight == 1 else "2", *([] if search == "default" else ["--search", search]),
                 "--duration", str(duration), "--warmup", "1", "--users-file", str(users_file), "--json", "--quiet"],
                capture_output=True, text=True, check=True)
            r = json.loads(result.stdout)
            out[(inflight, search)] = {"queries_per_s": r["calls_per_s"], "p50_ms": r["latency_ms"]["p50"],
                                       "p99_ms": r["latency_ms"]["p99"], "errors": r["errors"]}
        if recall:
            out["recall"] = f16_recall(port, users_file)
        return out
    finally:
        server.terminate()
        server.wait(timeout=30)


def f16_recall(port: int, users_file: pathlib.Path, users: int = 300) -> float:
    """recall@10 of SEARCH_F16 against SEARCH_EXACT over `users` users, through gRPC (grpcio)."""
    try:
        import grpc  # noqa: PLC0415
        from grpc_tools import protoc  # noqa: PLC0415
    except ImportError:
        return float("nan")
    import grpc_tools  # noqa: PLC0415

    out = pathlib.Path(tempfile.mkdtemp(prefix="recserve-bench-stubs-"))
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    protoc.main(["protoc", f"-I{REPO / 'Protos'}", f"-I{well_known}", f"--python_out={out}",
                 f"--grpc_python_out={out}", "recserve/v1/recserve.proto"])
    for package in ["recserve", "recserve/v1"]:
        (out / package / "__init__.py").touch()
    sys.path.insert(0, str(out))
    from recserve.v1 import recserve_pb2 as pb  # noqa: PLC0415
    from recserve.v1 import recserve_pb2_grpc as rpc  # noqa: PLC0415

    ids = users_file.read_text().split()[:users]
    hits = 0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = rpc.RecommenderStub(channel)
        for user in ids:
            exact = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="big"), user_id=user, k=10,
                                             search=pb.SEARCH_EXACT), timeout=30)
            half = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="big"), user_id=user, k=10,
                                            search=pb.SEARCH_F16), timeout=30)
            hits += len({i.item_id for i in exact.items} & {i.item_id for i in half.items})
    return hits / (10 * len(ids))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--binary", default=str(REPO / ".build" / "release" / "recserve"))
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        models = pathlib.Path(work) / "models"
        tensors = write_model(models, "big", 2000, args.items, args.dim)
        users_file = models / "big" / "1" / "users.txt"
        faiss_out = faiss_rates(tensors, args.duration)
        rec = recserve_rates(args.binary, models, args.duration, users_file)
        # A lone request with the batcher off, to show that batching adds no wait to it.
        off = recserve_rates(args.binary, models, args.duration, users_file, runs=((1, "exact"),),
                             extra=("--batch-threads", "0"), recall=False)[(1, "exact")]
    print(f"Rank top-10, {args.items:,} items x {args.dim}, {os.cpu_count()} cores; FAISS IndexFlatIP one thread in "
          f"process, RecServe through gRPC (recserve load)\n")
    single = faiss_out[1]["queries_per_s"]
    print("| | in flight / batch | queries/s | p50 ms | p99 ms | vs FAISS single |")
    print("|---|---|---|---|---|---|")
    for n in (1, 16):
        f = faiss_out[n]
        print(f"| FAISS IndexFlatIP | {n} | {f['queries_per_s']:.0f} | {f['p50_ms']:.3f} | {f['p99_ms']:.3f} | "
              f"{f['queries_per_s'] / single:.2f}x |")
    for (n, search), r in ((key, value) for key, value in rec.items() if key != "recall"):
        label = "SEARCH_EXACT (f32 scan)" if search == "exact" else "default search (f16 copy, exact answer)"
        print(f"| RecServe Rank, {label} | {n} | {r['queries_per_s']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
              f"{r['queries_per_s'] / single:.2f}x |")
    print(f"| RecServe Rank, SEARCH_EXACT, batching off | 1 | {off['queries_per_s']:.0f} | {off['p50_ms']:.3f} | "
          f"{off['p99_ms']:.3f} | {off['queries_per_s'] / single:.2f}x |")
    on = rec[(1, "exact")]
    print(f"\nrecall@10 of SEARCH_F16 against SEARCH_EXACT: {rec['recall']:.4f}")
    print(f"lone request, batching on / off: p50 {on['p50_ms'] / off['p50_ms']:.2f}x, "
          f"p99 {on['p99_ms'] / off['p99_ms']:.2f}x")
    if args.json:
        recserve = {f"{n}-{search}": value for (n, search), value in
                    ((key, value) for key, value in rec.items() if key != "recall")}
        pathlib.Path(args.json).write_text(json.dumps({"faiss": faiss_out, "recserve": recserve,
                                                       "f16_recall": rec["recall"], "batching_off": off,
                                                       "items": args.items,
                                                       "dim": args.dim}, indent=2))


if __name__ == "__main__":
    main()
