"""Rank with SEARCH_IVF over gRPC: a model with planted clusters written straight to a model folder,
a server that builds IVF indexes (`--ivf-min-items 1`), answers checked against numpy and against
SEARCH_EXACT; the errors a client gets when it asks for what the server does not have."""

import json

import grpc
import numpy as np
import pytest

from conftest import Server
from rollout import sha256_file, write_safetensors
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc

ITEMS, DIM, USERS, LISTS = 4000, 16, 80, 40


def write_model(models, name="clustered", seed=7):
    """An MF model (with biases) whose items sit around 60 centres, users near the centres."""
    folder = models / name / "1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((60, DIM))
    items = (centres[rng.integers(0, 60, ITEMS)] + 0.3 * rng.standard_normal((ITEMS, DIM))) / np.sqrt(DIM)
    users = centres[rng.integers(0, 60, USERS)] + 0.5 * rng.standard_normal((USERS, DIM))
    tensors = {
        "user_factors": users.astype(np.float32),
        "item_factors": items.astype(np.float32),
        "user_bias": (0.1 * rng.standard_normal(USERS)).astype(np.float32),
        "item_bias": (0.2 * rng.standard_normal(ITEMS)).astype(np.float32),
        "global_mean": np.array([3.0], np.float32),
    }
    write_safetensors(folder / "weights.safetensors", tensors, {"format": "recserve-model", "kind": "bpr"})
    (folder / "users.txt").write_text("".join(f"u{u}\n" for u in range(USERS)))
    (folder / "items.txt").write_text("".join(f"i{i}\n" for i in range(ITEMS)))
    manifest = {
        "format": "recserve-model", "format_version": 1, "kind": "bpr", "name": name,
        "created_at": "2026-12-02T00:00:00Z", "hyperparameters": {"dim": DIM},
        "counts": {"users": USERS, "items": ITEMS, "dim": DIM}, "training_data": {}, "metrics": {},
        "files": {f: sha256_file(folder / f) for f in ["weights.safetensors", "users.txt", "items.txt"]},
    }
    (folder / "model.json").write_text(json.dumps(manifest))
    return tensors


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    models = tmp_path_factory.mktemp("ivf-models")
    tensors = write_model(models)
    log = tmp_path_factory.mktemp("ivf-log") / "server.log"
    with_index = Server(models, "--ivf-min-items", "1", "--ivf-lists", str(LISTS), log=log)
    without = Server(models)
    channels = [grpc.insecure_channel(s.target) for s in (with_index, without)]
    yield {"tensors": tensors, "ivf": rpc.RecommenderStub(channels[0]), "plain": rpc.RecommenderStub(channels[1]),
           "log": with_index.log_text}
    for c in channels:
        c.close()
    assert with_index.stop() == 0
    assert without.stop() == 0


def exact_top(tensors, u, k=10, exclude=()):
    t = tensors
    scores = t["global_mean"][0] + t["user_bias"][u] + t["item_bias"] + t["item_factors"] @ t["user_factors"][u]
    scores = scores.astype(np.float64)
    scores[list(exclude)] = -np.inf
    return [f"i{i}" for i in np.argsort(-scores, kind="stable")[:k]]


def rank(stub, user, **fields):
    return stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="clustered"), user_id=f"u{user}", k=10, **fields))


def test_the_server_reports_the_index_it_built(setup):
    # Built at load, on the loader thread, before the version serves.
    rank(setup["ivf"], 0, search=pb.SEARCH_IVF)
    assert f"IVF index of {LISTS} lists" in setup["log"]()


def test_every_list_probed_is_exactly_the_exact_answer(setup):
    for u in range(0, USERS, 4):
        exact = rank(setup["ivf"], u, search=pb.SEARCH_EXACT)
        for nprobe in (LISTS, 10 * LISTS):  # more lists than there are: all of them
            ivf = rank(setup["ivf"], u, search=pb.SEARCH_IVF, nprobe=nprobe)
            assert [i.item_id for i in ivf.items] == [i.item_id for i in exact.items]
            assert [i.score for i in ivf.items] == [i.score for i in exact.items]
        assert [i.item_id for i in exact.items] == exact_top(setup["tensors"], u)


def test_default_nprobe_finds_most_of_the_exact_top_10(setup):
    hits = 0
    for u in range(USERS):
        ivf = rank(setup["ivf"], u, search=pb.SEARCH_IVF)
        assert len(ivf.items) == 10
        hits += len({i.item_id for i in ivf.items} & set(exact_top(setup["tensors"], u)))
    assert hits / (10 * USERS) >= 0.9


def test_exclude_and_min_score_hold_on_what_ivf_returns(setup):
    tensors = setup["tensors"]
    for u in range(0, USERS, 8):
        best = exact_top(tensors, u, k=5)
        ivf = rank(setup["ivf"], u, search=pb.SEARCH_IVF, nprobe=3, exclude=best)
        assert len(ivf.items) == 10
        assert not {i.item_id for i in ivf.items} & set(best)
        everything = rank(setup["ivf"], u, search=pb.SEARCH_IVF, nprobe=LISTS, exclude=best)
        assert [i.item_id for i in everything.items] == exact_top(tensors, u, exclude=[int(b[1:]) for b in best])
        floor = ivf.items[4].score
        above = rank(setup["ivf"], u, search=pb.SEARCH_IVF, nprobe=3, exclude=best, min_score=floor)
        assert [i.item_id for i in above.items] == [i.item_id for i in ivf.items[:5]]
        assert all(i.score >= floor for i in above.items)


def test_ivf_on_a_version_without_an_index_names_the_flag(setup):
    with pytest.raises(grpc.RpcError) as error:
        rank(setup["plain"], 0, search=pb.SEARCH_IVF)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--ivf-min-items" in error.value.details()
    # Exact still answers there.
    assert len(rank(setup["plain"], 0).items) == 10


def test_bad_nprobe_is_invalid_argument(setup):
    for fields in ({"search": pb.SEARCH_IVF, "nprobe": -1}, {"search": pb.SEARCH_EXACT, "nprobe": 5}):
        with pytest.raises(grpc.RpcError) as error:
            rank(setup["ivf"], 0, **fields)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "nprobe" in error.value.details()
