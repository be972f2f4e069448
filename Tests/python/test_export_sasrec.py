"""Scripts/export_sasrec.py without torch: a state dict of numpy arrays (as PyTorch's, conv
weights with their kernel dimension) goes into a model folder the server serves, and bad weights
are refused with the tensor named."""

import pathlib
import shutil
import sys

import grpc
import numpy as np
import pytest

from conftest import Server
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc
from rollout import read_safetensors

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "Scripts"))
import export_sasrec  # noqa: E402

FIXTURE = REPO / "Tests" / "Fixtures" / "sasrec-parity"
VERSION = FIXTURE / "models" / "parity" / "1"


@pytest.fixture(scope="module")
def source():
    """The parity fixture taken apart into what a PyTorch user has: a state dict, the item ids,
    the users' sequences."""
    tensors, _ = read_safetensors(VERSION / "weights.safetensors")
    items = (VERSION / "items.txt").read_text().splitlines()
    users = (VERSION / "users.txt").read_text().splitlines()
    indptr, flat = tensors["sequence_indptr"], tensors["sequence_items"]
    sequences = [(u, [items[j] for j in flat[indptr[k]:indptr[k + 1]]]) for k, u in enumerate(users)]
    state = {name: (value[..., None] if ".conv" in name and name.endswith(".weight") else value)
             for name, value in tensors.items() if not name.startswith(("sequence_", "seen_"))
             and name not in ("user_states", "item_popularity")}
    return state, items, sequences, tensors


def test_exported_state_dict_serves_as_the_fixture(source, tmp_path):
    import json
    state, items, sequences, tensors = source
    path = export_sasrec.export(state, {"heads": 2, "dropout": 0.2}, items, sequences, tmp_path / "models", "again")
    assert path == tmp_path / "models" / "again" / "1"
    exported, _ = read_safetensors(path / "weights.safetensors")
    for name in ["item_emb.weight", "attention_layers.1.in_proj_weight", "forward_layers.0.conv1.weight"]:
        np.testing.assert_array_equal(exported[name].reshape(tensors[name].shape), tensors[name])
    expected = json.loads((FIXTURE / "expected.json").read_text())
    server = Server(tmp_path / "models")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = rpc.RecommenderStub(channel)
            for case in expected["cases"]:
                response = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="again"), recent_items=case["recent_items"],
                                                    k=len(items)), timeout=10)
                assert [i.item_id for i in response.items] == case["top"], case["name"]
    finally:
        assert server.stop() == 0
    # A second export is the next version, written beside the first.
    again = export_sasrec.export(state, {"heads": 2}, items, sequences, tmp_path / "models", "again")
    assert again.name == "2"


@pytest.mark.parametrize("change,words", [
    (lambda s: s.pop("pos_emb.weight"), ["pos_emb.weight"]),
    (lambda s: s.__setitem__("attention_layers.0.out_proj.weight", np.zeros((3, 3), np.float32)),
     ["attention_layers.0.out_proj.weight", "shape"]),
    (lambda s: s["forward_layers.1.conv2.bias"].__setitem__(0, np.nan), ["forward_layers.1.conv2.bias", "finite"]),
])
def test_bad_weights_are_refused_by_name(source, tmp_path, change, words):
    state, items, sequences, _ = source
    state = {k: v.copy() for k, v in state.items()}
    change(state)
    with pytest.raises(export_sasrec.ExportError) as error:
        export_sasrec.export(state, {"heads": 2}, items, sequences, tmp_path / "models", "bad")
    for word in words:
        assert word in str(error.value)
    assert not (tmp_path / "models" / "bad" / "1").exists()


def test_heads_are_required_and_must_divide_dim(source, tmp_path):
    state, items, sequences, _ = source
    with pytest.raises(export_sasrec.ExportError, match="heads"):
        export_sasrec.export(state, {}, items, sequences, tmp_path / "models", "x")
    with pytest.raises(export_sasrec.ExportError, match="divide"):
        export_sasrec.export(state, {"heads": 3}, items, sequences, tmp_path / "models", "x")
