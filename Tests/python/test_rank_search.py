"""Rank batching and SEARCH_F16 over gRPC (issue 10).

Concurrent Ranks of one version are scored together by the batcher; each must get exactly what it
gets alone (same items, same float scores, same order), whatever its k, filters and strategies.
SEARCH_F16 (a half-precision shortlist re-scored in f32) must give exactly the exact answer. Bad
`search` / `nprobe` values are refused with the field named.
"""

import concurrent.futures
import socket
import urllib.request

import grpc
import pytest

from conftest import Server, run_cli
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc

ITEMS = 3000


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank-search")
    data = root / "ratings.csv"
    run_cli("gen-data", "--users", 300, "--items", ITEMS, "--density", 0.01, "--out", data, "--seed", 21)
    models = root / "models"
    run_cli("train", "--data", data, "--kind", "bpr", "--name", "cat", "--models", models, "--dim", 16,
            "--epochs", 5, "--seed", 2)
    return models


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def batching_server(catalog):
    metrics = free_port()
    # Every Rank may join a batch (--batch-min-work 1), and a batch waits 3 ms for company, so
    # concurrent calls do meet; the half-precision copy for SEARCH_F16 is made by default.
    server = Server(catalog, "--batch-min-work", "1", "--batch-threads", "2", "--batch-wait-us", "3000",
                    "--max-batch", "16", "--metrics-port", str(metrics))
    server.metrics = metrics
    yield server
    assert server.stop() == 0


def metric(server, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def requests():
    """Mixed k, exclusions, seen items, thresholds, diversity, popularity penalty, new users."""
    out = []
    for j in range(48):
        r = pb.RankRequest(model=pb.ModelSpec(name="cat"), k=[1, 10, 50, 700][j % 4])
        if j % 7 == 6:
            r.recent_items.extend([f"i{1 + (j * 37 + t) % ITEMS}" for t in range(5)])
        else:
            r.user_id = f"u{1 + (j * 13) % 300}"
        if j % 3 == 0:
            r.exclude.extend([f"i{1 + (j * 7 + t * 101) % ITEMS}" for t in range(40)])
        if j % 4 == 1:
            r.exclude_seen = True
        if j % 5 == 2:
            r.min_score = 0.5
        if j % 6 == 3:
            r.diversity = 0.3
        if j % 8 == 5:
            r.popularity_penalty = 0.2
        out.append(r)
    return out


def answer(response):
    return [(item.item_id, item.score) for item in response.items]


def test_batched_answers_equal_lone_answers(batching_server):
    channel = grpc.insecure_channel(batching_server.target)
    stub = rpc.RecommenderStub(channel)
    batch = requests()
    # One at a time: each finds no other Rank in flight and is served alone, never by the batcher.
    alone = [answer(stub.Rank(r, timeout=30)) for r in batch]
    assert metric(batching_server, "recserve_rank_batched_requests_total") == 0
    assert any(len(a) == 700 for a in alone) and any(len(a) < 700 for a in alone)
    # All at once, three rounds: many join batches.
    with concurrent.futures.ThreadPoolExecutor(max_workers=24) as pool:
        for _ in range(3):
            futures = [pool.submit(stub.Rank, r, timeout=60) for r in batch]
            together = [answer(f.result()) for f in futures]
            for j, (a, b) in enumerate(zip(alone, together)):
                assert a == b, f"request {j} ({batch[j]}) differs when batched"
    batches = metric(batching_server, "recserve_rank_batches_total")
    batched = metric(batching_server, "recserve_rank_batched_requests_total")
    assert batched > batches > 0, f"no batch held two requests ({batches} batches, {batched} requests)"
    for j, r in enumerate(batch):
        excluded = set(r.exclude) | set(r.recent_items if r.exclude_seen else [])
        assert not excluded & {item for item, _ in alone[j]}, f"request {j} returned an excluded item"
    channel.close()


def test_f16_search_gives_the_exact_answer(batching_server):
    with grpc.insecure_channel(batching_server.target) as channel:
        stub = rpc.RecommenderStub(channel)
        for j, r in enumerate(requests()):
            exact = pb.RankRequest()
            exact.CopyFrom(r)
            exact.search = pb.SEARCH_EXACT
            half = pb.RankRequest()
            half.CopyFrom(r)
            half.search = pb.SEARCH_F16
            assert answer(stub.Rank(exact, timeout=30)) == answer(stub.Rank(half, timeout=30)), f"request {j}"


def test_bad_search_fields_are_named(batching_server):
    with grpc.insecure_channel(batching_server.target) as channel:
        stub = rpc.RecommenderStub(channel)
        base = dict(model=pb.ModelSpec(name="cat"), user_id="u1", k=5)
        cases = [
            (pb.RankRequest(**base, nprobe=-1), grpc.StatusCode.INVALID_ARGUMENT, "nprobe"),
            (pb.RankRequest(**base, search=pb.SEARCH_EXACT, nprobe=4), grpc.StatusCode.INVALID_ARGUMENT, "nprobe"),
            (pb.RankRequest(**base, search=77), grpc.StatusCode.INVALID_ARGUMENT, "search 77"),
            (pb.RankRequest(**base, search=pb.SEARCH_IVF), grpc.StatusCode.FAILED_PRECONDITION, "--ivf-min-items"),
        ]
        for request, code, words in cases:
            with pytest.raises(grpc.RpcError) as error:
                stub.Rank(request, timeout=10)
            assert error.value.code() == code, request
            assert words in error.value.details(), error.value.details()
        # The server still serves.
        assert len(stub.Rank(pb.RankRequest(**base), timeout=10).items) == 5


def test_f16_needs_the_copy(catalog):
    server = Server(catalog, "--no-f16")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = rpc.RecommenderStub(channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="cat"), user_id="u1", k=5, search=pb.SEARCH_F16),
                          timeout=10)
            assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "--no-f16" in error.value.details()
    finally:
        assert server.stop() == 0


def test_default_search_flag_checks(catalog):
    result = run_cli("serve", "--models", catalog, "--search", "f16", "--no-f16", check=False, timeout=30)
    assert result.returncode != 0 and "--no-f16" in result.stderr
    result = run_cli("serve", "--models", catalog, "--search", "fast", check=False, timeout=30)
    assert result.returncode != 0 and "--search" in result.stderr
