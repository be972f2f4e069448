#!/usr/bin/env python3
"""Rank top-10 with the IVF index (SEARCH_IVF) against exact Rank and FAISS, in one run (issue 10).

A generated BPR-kind model (`--items` x `--dim`, item vectors drawn around `--clusters` Gaussian
centres plus noise, users near the centres) is written straight into a model folder; `recserve
serve --ivf-min-items 1` (release build) builds its IVF index at load, and `recserve load` (the C
gRPC-core client) measures:
  - exact Rank k=10 with 1 and 16 calls in flight (calls/s, p50, p99);
  - SEARCH_IVF Rank k=10 with 1 call in flight, same nlist and nprobe as FAISS below.
Recall@10 of SEARCH_IVF against the exact top-10 is measured over `--recall-users` users with a
Python grpcio client (the exact top-10 from FAISS IndexFlatIP), also for a sweep of nprobe values.
FAISS (faiss-cpu, one thread, in process, no RPC): IndexFlatIP single-query q/s, and IndexIVFFlat
(METRIC_INNER_PRODUCT, same nlist, same nprobe) recall@10 and single-query q/s.
Prints a markdown table with the ratios.

    swift build -c release --product recserve
    pip install faiss-cpu numpy grpcio grpcio-tools
    python3 Benchmarks/ivf_vs_faiss.py [--items 1000000] [--dim 64] [--clusters 2000] \
        [--lists 0] [--nprobe 0] [--duration 10] [--json OUT]
"""

import argparse
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
sys.path.insert(0, str(REPO / "Benchmarks"))
from rank_vs_faiss import write_folder as write_model  # noqa: E402

K = 10


def clustered_tensors(users: int, items: int, dim: int, clusters: int, noise: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    scale = np.float32(1 / np.sqrt(dim))
    item_factors = np.empty((items, dim), np.float32)
    step = 100_000
    for lo in range(0, items, step):
        hi = min(items, lo + step)
        a = rng.integers(0, clusters, hi - lo)
        offsets = rng.standard_normal((hi - lo, dim), dtype=np.float32) * np.float32(noise)
        item_factors[lo:hi] = (centres[a] + offsets) * scale
    b = rng.integers(0, clusters, users)
    user_factors = (centres[b] + 0.7 * rng.standard_normal((users, dim), dtype=np.float32)).astype(np.float32)
    return {
        "user_factors": user_factors,
        "item_factors": item_factors,
        "user_bias": np.zeros(users, np.float32),
        "item_bias": np.zeros(items, np.float32),
        "global_mean": np.zeros(1, np.float32),
    }


def recall(found, truth):
    hits = sum(len(set(f[:K]) & set(t[:K])) for f, t in zip(found, truth))
    return hits / (K * len(truth))


def single_query_rate(search, queries, duration: float):
    """Queries per second, one query at a time, cycling over `queries` for `duration` seconds."""
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < duration:
        search(queries[count % len(queries)][None, :])
        count += 1
    return count / (time.perf_counter() - start)


def faiss_side(tensors, lists: int, nprobe: int, sweep, recall_users: int, duration: float):
    import faiss  # noqa: PLC0415

    items, users = tensors["item_factors"], tensors["user_factors"]
    dim = items.shape[1]
    queries = users[:recall_users]
    faiss.omp_set_num_threads(1)
    flat = faiss.IndexFlatIP(dim)
    flat.add(items)
    _, truth = flat.search(queries, K)
    out = {"flat_qps": single_query_rate(lambda q: flat.search(q, K), users, duration)}
    # The IVF index's build may use both cores (as RecServe's does); queries run on one thread.
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = 12
    rng = np.random.default_rng(5)
    sample = items[rng.choice(len(items), min(len(items), 96 * lists), replace=False)]
    start = time.perf_counter()
    ivf.train(sample)
    ivf.add(items)
    out["ivf_build_s"] = time.perf_counter() - start
    faiss.omp_set_num_threads(1)
    out["ivf_recall"] = {}
    for p in sorted(set(sweep) | {nprobe}):
        ivf.nprobe = p
        _, found = ivf.search(queries, K)
        out["ivf_recall"][p] = recall(found.tolist(), truth.tolist())
    ivf.nprobe = nprobe
    out["ivf_qps"] = single_query_rate(lambda q: ivf.search(q, K), users, duration)
    return out, truth


def start_server(binary: str, models: pathlib.Path, log: pathlib.Path, lists: int, nprobe: int):
    args = [binary, "serve", "--models", str(models), "--port", "0", "--threads", "2", "--ivf-min-items", "1",
            "--ivf-lists", str(lists), "--ivf-nprobe", str(nprobe)]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)
    started = time.monotonic()
    port = None
    deadline = started + 600
    while time.monotonic() < deadline and port is None:
        line = server.stdout.readline()
        match = re.search(r"listening on .*:(\d+)", line)
        if match:
            port = int(match.group(1))
        elif line == "" and server.poll() is not None:
            break
    built = None
    while time.monotonic() < deadline and built is None and server.poll() is None:
        match = re.search(r"IVF index of (\d+) lists \(default nprobe (\d+)\) over \d+ items built in ([0-9.]+) s",
                          log.read_text(errors="replace"))
        if match:
            built = {"lists": int(match.group(1)), "nprobe": int(match.group(2)), "build_s": float(match.group(3))}
        else:
            time.sleep(0.2)
    if port is None or built is None:
        server.kill()
        raise RuntimeError(f"the server did not start:\n{log.read_text(errors='replace')}")
    return server, port, built


def load(binary, port, users_file, duration, inflight, *extra):
    result = subprocess.run(
        [binary, "load", "--target", f"127.0.0.1:{port}", "--rpc", "rank", "--model", "big", "--k", str(K),
         "--concurrency", str(inflight), "--threads", "1" if inflight == 1 else "2", "--duration", str(duration),
         "--warmup", "1", "--users-file", str(users_file), "--json", "--quiet", *extra],
        capture_output=True, text=True, check=True)
    r = json.loads(result.stdout)
    return {"queries_per_s": r["calls_per_s"], "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
            "errors": r["errors"]}


def grpc_recall(port, truth, nprobes):
    import grpc  # noqa: PLC0415

    sys.path.insert(0, str(REPO / "Tests" / "python"))
    from conftest import STUBS  # noqa: F401, PLC0415  (generates the stubs from Protos/)
    from recserve.v1 import recserve_pb2 as pb  # noqa: PLC0415
    from recserve.v1 import recserve_pb2_grpc as rpc  # noqa: PLC0415

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = rpc.RecommenderStub(channel)
    out = {}
    for nprobe in nprobes:
        found = []
        for u in range(len(truth)):
            request = pb.RankRequest(model=pb.ModelSpec(name="big"), user_id=f"u{u}", k=K)
            if nprobe is None:
                request.search = pb.SEARCH_EXACT
            else:
                request.search, request.nprobe = pb.SEARCH_IVF, nprobe
            found.append([int(i.item_id[1:]) for i in stub.Rank(request, timeout=30).items])
        out[nprobe] = recall(found, truth.tolist())
    channel.close()
    return out


def parse_args():
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--noise", type=float, default=0.5,
                        help="std of an item's offset from its centre, per coordinate (the centres' is 1)")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--lists", type=int, default=0, help="0: RecServe's default, about 4 x sqrt(items)")
    parser.add_argument("--nprobe", type=int, default=0, help="0: RecServe's default for the lists")
    parser.add_argument("--sweep", default="10,25,50,100,200,400", help="nprobe values for the recall sweep")
    parser.add_argument("--recall-users", type=int, default=500)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--binary", default=str(REPO / ".build" / "release" / "recserve"))
    parser.add_argument("--json")
    return parser.parse_args()


def write_generated_model(args, models: pathlib.Path):
    """Generates the clustered tensors and writes them as the model "big"; returns them and its folder."""
    started = time.perf_counter()
    tensors = clustered_tensors(args.users, args.items, args.dim, args.clusters, args.noise)
    folder = write_model(models, "big", tensors)
    print(f"model written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return tensors, folder


def rank_loads(binary, port, users_file, duration, nprobe):
    """`recserve load` Rank k=10 with each search (exact, f16, ivf at `nprobe`), 1 and 16 calls in flight."""
    return {
        "exact_1": load(binary, port, users_file, duration, 1, "--search", "exact"),
        "exact_16": load(binary, port, users_file, duration, 16, "--search", "exact"),
        # The default search: the f16 copy, re-scored (the exact answer).
        "f16_1": load(binary, port, users_file, duration, 1, "--search", "f16"),
        "f16_16": load(binary, port, users_file, duration, 16, "--search", "f16"),
        "ivf_1": load(binary, port, users_file, duration, 1, "--search", "ivf", "--nprobe", str(nprobe)),
        "ivf_16": load(binary, port, users_file, duration, 16, "--search", "ivf", "--nprobe", str(nprobe)),
    }


def exact_top(tensors, recall_users: int):
    """The exact top-10 item indices (numpy, in blocks of 25 users) of the first `recall_users` users."""
    queries = tensors["user_factors"][:recall_users]
    truth = np.empty((len(queries), K), np.int64)
    for lo in range(0, len(queries), 25):
        s = queries[lo:lo + 25] @ tensors["item_factors"].T
        top = np.argpartition(-s, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable")
        truth[lo:lo + 25] = np.take_along_axis(top, order, 1)
    return truth


def recserve_side(args, tensors, models: pathlib.Path, users_file: pathlib.Path, log: pathlib.Path, sweep):
    """Serves the model (its IVF index decides nlist and the default nprobe), measures Rank with
    `recserve load` and recall@10 with grpcio (exact, then each nprobe); returns the loads, the
    recalls and the index the server reported."""
    server, port, built = start_server(args.binary, models, log, args.lists, args.nprobe)
    nprobe = built["nprobe"]
    print(f"server up: {built}", file=sys.stderr)
    try:
        rec = rank_loads(args.binary, port, users_file, args.duration, nprobe)
        print(f"recserve: {rec}", file=sys.stderr)
        truth = exact_top(tensors, args.recall_users)
        rec_recall = grpc_recall(port, truth, [None] + sorted(set(sweep) | {nprobe}))
        print(f"recserve recall: {rec_recall}", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return rec, rec_recall, built


def print_table(args, rec, rec_recall, fa, built):
    """The markdown table of RecServe and FAISS at the index's nprobe, the ratios and the build times."""
    lists, nprobe = built["lists"], built["nprobe"]
    e1, e16, i1, i16 = rec["exact_1"], rec["exact_16"], rec["ivf_1"], rec["ivf_16"]
    print(f"Rank top-10, {args.items:,} items x {args.dim} in {args.clusters:,} planted clusters (noise {args.noise}), "
          f"{os.cpu_count()} cores; nlist {lists}, nprobe {nprobe}. RecServe through gRPC (`recserve load`, C client), "
          f"FAISS one thread in process. Recall@10 against the exact top-10 over {args.recall_users} users.\n")
    print("| | in flight | recall@10 | queries/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    print(f"| RecServe Rank exact | 1 | {rec_recall[None]:.3f} | {e1['queries_per_s']:.0f} | {e1['p50_ms']:.3f} | {e1['p99_ms']:.3f} |")
    print(f"| RecServe Rank exact | 16 | | {e16['queries_per_s']:.0f} | {e16['p50_ms']:.3f} | {e16['p99_ms']:.3f} |")
    for n in (1, 16):
        f = rec[f"f16_{n}"]
        print(f"| RecServe Rank SEARCH_F16 (default; exact answer) | {n} | | {f['queries_per_s']:.0f} | "
              f"{f['p50_ms']:.3f} | {f['p99_ms']:.3f} |")
    print(f"| RecServe Rank SEARCH_IVF | 1 | {rec_recall[nprobe]:.3f} | {i1['queries_per_s']:.0f} | {i1['p50_ms']:.3f} | {i1['p99_ms']:.3f} |")
    print(f"| RecServe Rank SEARCH_IVF | 16 | | {i16['queries_per_s']:.0f} | {i16['p50_ms']:.3f} | {i16['p99_ms']:.3f} |")
    print(f"| FAISS IndexFlatIP | 1 | 1.000 | {fa['flat_qps']:.0f} | | |")
    print(f"| FAISS IndexIVFFlat | 1 | {fa['ivf_recall'][nprobe]:.3f} | {fa['ivf_qps']:.0f} | | |")
    print(f"\nSEARCH_IVF / exact, 1 in flight: {i1['queries_per_s'] / e1['queries_per_s']:.1f}x; "
          f"SEARCH_IVF / FAISS IndexIVFFlat: {i1['queries_per_s'] / fa['ivf_qps']:.2f}x; "
          f"SEARCH_IVF / FAISS IndexFlatIP: {i1['queries_per_s'] / fa['flat_qps']:.1f}x")
    print(f"Index build at load: RecServe {built['build_s']:.1f} s (2 cores); "
          f"FAISS IndexIVFFlat train + add {fa['ivf_build_s']:.1f} s (2 threads, same sample size and iterations)\n")


def print_recall_sweep(rec_recall, fa, probes):
    """The markdown table of RecServe's and FAISS's recall@10 for each nprobe in `probes`."""
    print("| nprobe | " + " | ".join(str(p) for p in probes) + " |")
    print("|---|" + "---|" * len(probes))
    print("| RecServe recall@10 | " + " | ".join(f"{rec_recall[p]:.3f}" for p in probes) + " |")
    print("| FAISS recall@10 | " + " | ".join(f"{fa['ivf_recall'][p]:.3f}" for p in probes) + " |")


def main():
    args = parse_args()
    sweep = [int(s) for s in args.sweep.split(",") if s]
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        models = work / "models"
        tensors, folder = write_generated_model(args, models)
        # RecServe first (its index decides nlist and the default nprobe), alone on the machine.
        rec, rec_recall, built = recserve_side(args, tensors, models, folder / "users.txt", work / "server.log", sweep)
        fa, _ = faiss_side(tensors, built["lists"], built["nprobe"], sweep, args.recall_users, args.duration)
        print(f"faiss: {fa}", file=sys.stderr)

    print_table(args, rec, rec_recall, fa, built)
    print_recall_sweep(rec_recall, fa, sorted(set(sweep) | {built["nprobe"]}))
    errors = sum(r["errors"] for r in rec.values())
    if errors:
        print(f"\nwarning: {errors} failed calls")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"recserve": rec, "recserve_recall": {str(k): v for k, v in rec_recall.items()}, "faiss": fa,
             "build": built, "items": args.items, "dim": args.dim, "clusters": args.clusters}, indent=2, default=str))


if __name__ == "__main__":
    main()
