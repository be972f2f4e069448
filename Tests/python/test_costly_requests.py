"""Issue 9, done-when 1: the costliest requests the API allows, from two clients at once with 2 s
deadlines, do not hold up a third client's cheap Rank calls; each costly call ends by its
deadline; and the server's CPU goes idle soon after.

The models are written here, straight into a model folder (random factors: what is measured is
the cost of the work, not its quality): `big`, an MF model of 100,000 items x 64 dims, and `wide`,
one of 3,000 items at dim 4,096, the largest MF dim, for folding new users in.
"""

import json
import os
import pathlib
import random
import threading
import time

import grpc
import numpy as np
import pytest

from conftest import Server
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc
from rollout import sha256_file, write_safetensors

DEADLINE = 2.0


def write_mf_version(models: pathlib.Path, name: str, users: int, items: int, dim: int, seed: int):
    folder = models / name / "1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    scale = 1 / np.sqrt(dim)
    tensors = {
        "user_factors": (rng.standard_normal((users, dim)) * scale).astype(np.float32),
        "item_factors": (rng.standard_normal((items, dim)) * scale).astype(np.float32),
        "user_bias": (rng.standard_normal(users) * 0.1).astype(np.float32),
        "item_bias": (rng.standard_normal(items) * 0.1).astype(np.float32),
        "global_mean": np.array([3.5], dtype=np.float32),
    }
    write_safetensors(folder / "weights.safetensors", tensors, {"format": "recserve-model", "kind": "mf"})
    (folder / "users.txt").write_text("".join(f"u{u}\n" for u in range(users)))
    (folder / "items.txt").write_text("".join(f"i{i}\n" for i in range(items)))
    manifest = {
        "format": "recserve-model", "format_version": 1, "kind": "mf", "name": name,
        "created_at": "2026-12-02T00:00:00Z", "hyperparameters": {"dim": dim},
        "counts": {"users": users, "items": items, "dim": dim}, "training_data": {}, "metrics": {},
        "files": {f: sha256_file(folder / f) for f in ["weights.safetensors", "users.txt", "items.txt"]},
    }
    (folder / "model.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("costly")
    write_mf_version(models, "big", users=2000, items=100_000, dim=64, seed=1)
    write_mf_version(models, "wide", users=10, items=3000, dim=4096, seed=2)
    server = Server(models, threads=2, log=tmp_path_factory.mktemp("costly-log") / "server.log")
    yield server
    assert server.stop() == 0, server.log_text()[-3000:]


def costly_requests():
    """The most each list and option allows (within the server's documented limits)."""
    every_item = [f"i{i}" for i in range(100_000)]
    big = pb.ModelSpec(name="big")
    return [
        ("diversity at the largest k the limit allows",
         "Rank", pb.RankRequest(model=big, user_id="u1", k=1000, diversity=0.5)),
        ("100,000 candidates, k 10,000",
         "Rank", pb.RankRequest(model=big, user_id="u2", k=10_000, candidates=every_item)),
        ("a new user from 100,000 recent items, k 10,000, exclude 100,000",
         "Rank", pb.RankRequest(model=big, recent_items=every_item, k=10_000, exclude=every_item[::-1],
                                exclude_seen=True)),
        ("a new user folded in at dim 4096",
         "Rank", pb.RankRequest(model=pb.ModelSpec(name="wide"), recent_items=[f"i{i}" for i in range(3000)],
                                k=1000, diversity=0.0)),
        ("100,000 Predict pairs", "Predict",
         pb.PredictRequest(model=big, pairs=[pb.UserItem(user_id=f"u{i % 2000}", item_id=f"i{i}")
                                             for i in range(100_000)])),
        ("SimilarItems over 100,000 items, exclude 100,000", "SimilarItems",
         pb.SimilarItemsRequest(model=big, item_id="i5", k=10_000, exclude=every_item)),
    ]


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_costly_requests_do_not_slow_cheap_ones_and_stop_at_their_deadline(server):
    requests = costly_requests()
    # Each costly request is valid and answered on its own.
    with grpc.insecure_channel(server.target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = rpc.RecommenderStub(channel)
        for label, method, request in requests:
            getattr(stub, method)(request, timeout=30)

    stop = threading.Event()
    costly = []  # (label, code, seconds)
    cheap = []  # seconds
    lock = threading.Lock()

    def hammer(offset):
        with grpc.insecure_channel(server.target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            stub = rpc.RecommenderStub(channel)
            n = offset
            while not stop.is_set():
                label, method, request = requests[n % len(requests)]
                n += 1
                start = time.monotonic()
                try:
                    getattr(stub, method)(request, timeout=DEADLINE)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()
                with lock:
                    costly.append((label, code, time.monotonic() - start))

    def cheap_client():
        rng = random.Random(7)
        with grpc.insecure_channel(server.target) as channel:
            stub = rpc.RecommenderStub(channel)
            while not stop.is_set():
                start = time.monotonic()
                response = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="big"), user_id=f"u{rng.randrange(2000)}",
                                                    k=10), timeout=5)
                assert len(response.items) == 10
                with lock:
                    cheap.append(time.monotonic() - start)
                time.sleep(0.01)

    threads = [threading.Thread(target=hammer, args=(i * 3,)) for i in range(2)] + [threading.Thread(target=cheap_client)]
    for t in threads:
        t.start()
    time.sleep(12)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    last_deadline = time.monotonic()

    assert len(costly) >= 10 and len(cheap) >= 200, (len(costly), len(cheap))
    cheap.sort()
    p99 = cheap[int(0.99 * len(cheap)) - 1]
    codes = {}
    for label, code, seconds in costly:
        codes.setdefault(code.name, 0)
        codes[code.name] += 1
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED), \
            (label, code)
        assert seconds <= DEADLINE * 1.1, f"{label}: {seconds:.2f} s with a {DEADLINE} s deadline ({code.name})"
    print(f"\ncheap Rank: {len(cheap)} calls, p50 {cheap[len(cheap) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
          f"costly: {len(costly)} calls {codes}")
    assert p99 < 0.050, f"cheap Rank p99 {p99 * 1000:.1f} ms while costly calls ran ({codes})"

    # The server stops working once nobody waits: within 1 s of the last deadline its CPU is idle.
    time.sleep(1.0)
    before = cpu_seconds(server.process.pid)
    time.sleep(1.0)
    used = cpu_seconds(server.process.pid) - before
    assert used < 0.1, f"the server used {used:.2f} s of CPU in the second after the clients stopped"


def test_diversity_over_the_limit_is_refused_by_name(server):
    with grpc.insecure_channel(server.target) as channel:
        stub = rpc.RecommenderStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="big"), user_id="u1", k=10_000, diversity=0.5), timeout=5)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "--max-diversity-work" in error.value.details() and "k" in error.value.details()
