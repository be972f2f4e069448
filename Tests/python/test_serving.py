"""Predict, Rank and SimilarItems over gRPC from Python grpcio, checked against the weights on disk."""

import json
import pathlib
import struct

import grpc
import numpy as np
import pytest

from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc


def read_safetensors(path: pathlib.Path) -> dict:
    raw = path.read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_length])
    body = raw[8 + header_length :]
    dtypes = {"F32": np.float32, "I32": np.int32, "I64": np.int64}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return tensors


@pytest.fixture(scope="module")
def model(dataset):
    version = dataset["models"] / "movies" / "1"
    tensors = read_safetensors(version / "weights.safetensors")
    users = (version / "users.txt").read_text().splitlines()
    items = (version / "items.txt").read_text().splitlines()
    return tensors, users, items


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.target)
    yield rpc.RecommenderStub(channel)
    channel.close()


def spec(name="movies", **selector):
    return pb.ModelSpec(name=name, **selector)


def expected_scores(tensors, u):
    q = tensors["item_factors"]
    return tensors["global_mean"][0] + tensors["user_bias"][u] + tensors["item_bias"] + q @ tensors["user_factors"][u]


def test_predict_matches_the_weights_on_disk(stub, model):
    tensors, users, items = model
    pairs = [(users[u], items[i]) for u, i in [(0, 0), (5, 17), (42, 3), (len(users) - 1, len(items) - 1)]]
    response = stub.Predict(pb.PredictRequest(model=spec(), pairs=[pb.UserItem(user_id=u, item_id=i) for u, i in pairs]))
    assert response.model_name == "movies"
    assert response.model_version == 1
    assert list(response.known) == [True] * len(pairs)
    for (user, item), score in zip(pairs, response.scores):
        u, i = users.index(user), items.index(item)
        raw = expected_scores(tensors, u)[i]
        # Predictions are clipped to the training rating range (0.5..5 here).
        assert score == pytest.approx(float(np.clip(raw, 0.5, 5.0)), abs=1e-4)


def test_predict_flags_unknown_ids_per_pair(stub, model):
    tensors, users, items = model
    response = stub.Predict(pb.PredictRequest(model=spec(), pairs=[
        pb.UserItem(user_id=users[1], item_id=items[2]),
        pb.UserItem(user_id="nobody", item_id=items[2]),
        pb.UserItem(user_id=users[1], item_id="nothing"),
    ]))
    assert list(response.known) == [True, False, False]
    mean = tensors["global_mean"][0]
    assert response.scores[1] == pytest.approx(mean + tensors["item_bias"][2], abs=1e-4)
    assert response.scores[2] == pytest.approx(mean + tensors["user_bias"][1], abs=1e-4)


def test_rank_returns_the_exact_top_k(stub, model):
    tensors, users, items = model
    u = 7
    response = stub.Rank(pb.RankRequest(model=spec(), user_id=users[u], k=10))
    assert response.model_name == "movies" and response.model_version == 1
    scores = expected_scores(tensors, u)
    best = np.argsort(-scores, kind="stable")[:10]
    assert [r.item_id for r in response.items] == [items[i] for i in best]
    assert [r.score for r in response.items] == pytest.approx([float(scores[i]) for i in best], abs=1e-4)


def test_rank_honours_exclude_and_exclude_seen(stub, model):
    tensors, users, items = model
    u = 3
    seen = set(tensors["seen_indices"][tensors["seen_indptr"][u] : tensors["seen_indptr"][u + 1]].tolist())
    assert seen, "the generated user should have a training history"
    plain = stub.Rank(pb.RankRequest(model=spec(), user_id=users[u], k=20))
    excluded = [plain.items[0].item_id, plain.items[1].item_id]
    response = stub.Rank(pb.RankRequest(model=spec(), user_id=users[u], k=20, exclude=excluded, exclude_seen=True))
    returned = [r.item_id for r in response.items]
    assert len(returned) == 20
    assert not set(excluded) & set(returned)
    assert not {items[i] for i in seen} & set(returned)
    scores = expected_scores(tensors, u)
    allowed = [i for i in np.argsort(-scores, kind="stable") if i not in seen and items[i] not in excluded]
    assert returned == [items[i] for i in allowed[:20]]


def test_rank_candidates_and_min_score(stub, model):
    tensors, users, items = model
    candidates = items[10:30]
    response = stub.Rank(pb.RankRequest(model=spec(), user_id=users[0], k=5, candidates=candidates + ["unknown-item"]))
    assert len(response.items) == 5
    assert all(r.item_id in candidates for r in response.items)
    threshold = response.items[2].score
    limited = stub.Rank(pb.RankRequest(model=spec(), user_id=users[0], k=5, candidates=candidates, min_score=threshold))
    assert [r.item_id for r in limited.items] == [r.item_id for r in response.items[:3]]


def test_rank_by_version_and_label_selector(stub, model):
    _, users, _ = model
    by_version = stub.Rank(pb.RankRequest(model=spec(version=1), user_id=users[0], k=3))
    assert by_version.model_version == 1
    with pytest.raises(grpc.RpcError) as error:
        stub.Rank(pb.RankRequest(model=spec(version=99), user_id=users[0], k=3))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "version 99" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        stub.Rank(pb.RankRequest(model=spec(label="canary"), user_id=users[0], k=3))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "canary" in error.value.details()


def test_rank_diversity_and_popularity_penalty_change_the_list(stub, model):
    _, users, _ = model
    base = stub.Rank(pb.RankRequest(model=spec(), user_id=users[4], k=10))
    diverse = stub.Rank(pb.RankRequest(model=spec(), user_id=users[4], k=10, diversity=0.9))
    assert len(diverse.items) == 10
    assert [r.item_id for r in diverse.items] != [r.item_id for r in base.items]
    assert diverse.items[0].item_id == base.items[0].item_id  # the most relevant item still leads
    penalised = stub.Rank(pb.RankRequest(model=spec(), user_id=users[4], k=10, popularity_penalty=5.0))
    assert len(penalised.items) == 10


def test_rank_cold_user_from_recent_items(stub, model):
    _, _, items = model
    response = stub.Rank(pb.RankRequest(model=spec(), user_id="brand-new-user", recent_items=items[:3], k=5,
                                        exclude_seen=True))
    assert len(response.items) == 5
    assert not set(items[:3]) & {r.item_id for r in response.items}


def test_similar_items_are_nearest_by_cosine(stub, model):
    tensors, _, items = model
    q = tensors["item_factors"]
    normed = q / np.linalg.norm(q, axis=1, keepdims=True)
    similarity = normed @ normed[12]
    similarity[12] = -np.inf
    best = np.argsort(-similarity, kind="stable")[:5]
    response = stub.SimilarItems(pb.SimilarItemsRequest(model=spec(), item_id=items[12], k=5))
    assert [r.item_id for r in response.items] == [items[i] for i in best]
