"""SASRec parity: RecServe's sasrec kind against PyTorch, through a committed fixture.

Tests/Fixtures/sasrec-parity/ holds a tiny SASRec (d=16, 2 heads, 2 blocks, maxlen 8, 20 items,
4 users) with fixed random weights, exported by Scripts/export_sasrec.py, and expected.json with
PyTorch's eval-mode scores (Scripts/make_sasrec_fixture.py made both; torch is not needed here).

- A pure-numpy forward pass, written from the spec, reproduces expected.json from the
  safetensors file: the fixture, the exporter's layout and the spec agree.
- The real server loads the fixture and must return the same order and scores from Rank (by
  user_id, and from recent_items for sequences no user has) and Predict.
"""

import hashlib
import json
import pathlib
import shutil
import struct

import grpc
import numpy as np
import pytest

from conftest import Server
from rollout import read_safetensors
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "Fixtures" / "sasrec-parity"
VERSION = FIXTURE / "models" / "parity" / "1"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def expected():
    return json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def model():
    manifest = json.loads((VERSION / "model.json").read_text())
    tensors = {k: v.astype(np.float64) if v.dtype == np.float32 else v
               for k, v in read_safetensors(VERSION / "weights.safetensors")[0].items()}
    items = (VERSION / "items.txt").read_text().splitlines()
    users = (VERSION / "users.txt").read_text().splitlines()
    return manifest, tensors, items, users


# ---------------------------------------------------------------------------------------------
# The forward pass, in float64 numpy, from the spec


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def hidden_last(tensors, hp, sequence):
    """h at the last position for a sequence of 1-based item rows (oldest first). Only the real
    items are computed (no padding rows): they take window slots maxlen-L .. maxlen-1."""
    d, maxlen, heads, eps = hp["dim"], hp["maxlen"], hp["heads"], hp["layer_norm_eps"]
    seq = np.asarray(sequence[-maxlen:])
    n = len(seq)
    x = tensors["item_emb.weight"][seq] * np.sqrt(d) + tensors["pos_emb.weight"][maxlen - n :]
    causal = np.tril(np.ones((n, n), dtype=bool))
    hd = d // heads
    for b in range(hp["blocks"]):
        t = lambda name: tensors[name.format(b=b)]  # noqa: E731
        q = layer_norm(x, t("attention_layernorms.{b}.weight"), t("attention_layernorms.{b}.bias"), eps)
        w, bias = t("attention_layers.{b}.in_proj_weight"), t("attention_layers.{b}.in_proj_bias")
        Q = q @ w[:d].T + bias[:d]
        K = x @ w[d : 2 * d].T + bias[d : 2 * d]
        V = x @ w[2 * d :].T + bias[2 * d :]
        out = np.zeros((n, d))
        for h in range(heads):
            s = slice(h * hd, (h + 1) * hd)
            logits = Q[:, s] @ K[:, s].T / np.sqrt(hd)
            out[:, s] = softmax(np.where(causal, logits, -np.inf)) @ V[:, s]
        a = out @ t("attention_layers.{b}.out_proj.weight").T + t("attention_layers.{b}.out_proj.bias")
        x = q + a
        f = layer_norm(x, t("forward_layernorms.{b}.weight"), t("forward_layernorms.{b}.bias"), eps)
        y = np.maximum(f @ t("forward_layers.{b}.conv1.weight").T + t("forward_layers.{b}.conv1.bias"), 0)
        x = f + y @ t("forward_layers.{b}.conv2.weight").T + t("forward_layers.{b}.conv2.bias")
    return layer_norm(x, tensors["last_layernorm.weight"], tensors["last_layernorm.bias"], eps)[-1]


def numpy_scores(model, recent_items):
    manifest, tensors, items, _ = model
    row = {x: i + 1 for i, x in enumerate(items)}
    h = hidden_last(tensors, manifest["hyperparameters"], [row[x] for x in recent_items])
    return tensors["item_emb.weight"][1:] @ h


def user_sequence(model, user_id):
    _, tensors, items, users = model
    u = users.index(user_id)
    lo, hi = tensors["sequence_indptr"][u], tensors["sequence_indptr"][u + 1]
    return [items[i] for i in tensors["sequence_items"][lo:hi]]


# ---------------------------------------------------------------------------------------------
# The fixture on its own


def test_manifest_checksums_and_layout(model):
    manifest, tensors, items, users = model
    assert manifest["format"] == "recserve-model" and manifest["format_version"] == 1
    assert manifest["kind"] == "sasrec" and manifest["name"] == "parity"
    files = sorted(p.name for p in VERSION.iterdir())
    assert files == sorted(["model.json", *manifest["files"]])
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((VERSION / name).read_bytes()).hexdigest() == digest, name
    hp = manifest["hyperparameters"]
    assert (hp["dim"], hp["maxlen"], hp["blocks"], hp["heads"], hp["layer_norm_eps"]) == (16, 8, 2, 2, 1e-8)
    assert manifest["counts"] == {**manifest["counts"], "users": len(users), "items": len(items), "dim": 16}
    assert tensors["item_emb.weight"].shape == (len(items) + 1, 16)
    assert "user_states" not in tensors  # the server must compute them

    raw = (VERSION / "weights.safetensors").read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_length])
    assert (8 + header_length) % 64 == 0
    assert header["__metadata__"] == {"format": "recserve-model", "kind": "sasrec"}
    spans = sorted(v["data_offsets"] for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert spans[-1][1] == len(raw) - 8 - header_length


def test_numpy_forward_reproduces_pytorch(model, expected):
    _, _, items, _ = model
    assert expected["items"] == items
    for case in expected["cases"]:
        if "user_id" in case:
            assert user_sequence(model, case["user_id"]) == case["recent_items"], case["name"]
        scores = numpy_scores(model, case["recent_items"])
        np.testing.assert_allclose(scores, case["scores"], atol=TOLERANCE, rtol=0, err_msg=case["name"])
        order = [items[i] for i in np.argsort(-scores, kind="stable")]
        assert order == case["top"], case["name"]


def test_fixture_covers_the_edge_cases(model, expected):
    manifest, _, items, users = model
    maxlen = manifest["hyperparameters"]["maxlen"]
    lengths = {len(c["recent_items"]) for c in expected["cases"]}
    assert {1, 5, maxlen} <= lengths and max(lengths) > maxlen
    assert any(len(set(c["recent_items"])) < len(c["recent_items"]) for c in expected["cases"])
    assert {c.get("user_id") for c in expected["cases"]} >= set(users)
    for case in expected["cases"]:
        top10 = sorted(case["scores"], reverse=True)[:10]
        assert min(a - b for a, b in zip(top10, top10[1:])) > 1e-3, case["name"]


# ---------------------------------------------------------------------------------------------
# The server


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    models = tmp_path_factory.mktemp("sasrec-parity") / "models"
    shutil.copytree(FIXTURE / "models", models)
    server = Server(models)
    channel = grpc.insecure_channel(server.target)
    yield rpc.RecommenderStub(channel)
    channel.close()
    code = server.stop()
    assert code == 0, f"server exited with {code}: {server.log_text()}"


def rank_request(case):
    model = pb.ModelSpec(name="parity")
    if "user_id" in case:
        return pb.RankRequest(model=model, user_id=case["user_id"], k=20)
    return pb.RankRequest(model=model, recent_items=case["recent_items"], k=20)


def test_server_rank_matches_pytorch(stub, expected):
    items = expected["items"]
    for case in expected["cases"]:
        response = stub.Rank(rank_request(case))
        assert (response.model_name, response.model_version) == ("parity", 1)
        assert [r.item_id for r in response.items] == case["top"], case["name"]
        by_item = dict(zip(items, case["scores"]))
        assert [r.score for r in response.items] == pytest.approx([by_item[x] for x in case["top"]], abs=TOLERANCE), case["name"]


def test_server_rank_from_a_users_sequence_equals_rank_by_user_id(stub, expected):
    for case in expected["cases"]:
        if "user_id" not in case:
            continue
        response = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="parity"), recent_items=case["recent_items"], k=20))
        assert [r.item_id for r in response.items] == case["top"], case["name"]


def test_server_predict_matches_pytorch(stub, expected):
    items = expected["items"]
    for case in expected["cases"]:
        if "user_id" not in case:
            continue
        pairs = [pb.UserItem(user_id=case["user_id"], item_id=x) for x in items]
        response = stub.Predict(pb.PredictRequest(model=pb.ModelSpec(name="parity"), pairs=pairs))
        assert list(response.known) == [True] * len(items), case["name"]
        assert list(response.scores) == pytest.approx(case["scores"], abs=TOLERANCE), case["name"]
