"""Issue 9, the registry: a disk hiccup is not a disk without models.

A model folder or a labels.json that cannot be read (here made to fail for real with a symlink
loop, so that opendir/open give ELOOP even as root) keeps what the model had: the same version
serves, no call fails, labels.json is never rewritten, and the log says so once and says once
when it can be read again. An admin call that has to load a version does it on the registry's
loader thread, so calls to other models do not wait for it.

Each test runs its own `recserve serve` with a short --poll-interval, so that a fault of a
second or two spans several polls.
"""

import errno
import hashlib
import json
import os
import pathlib
import time

import grpc
import numpy as np
import pytest

import rollout
from conftest import Server
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc
from rollout import RankLoad, clone, describe_failures, states, wait_for

POLL = 0.25  # --poll-interval of every server here
FAULT = 8 * POLL  # how long each fault lasts: at least 8 polls
ELOOP_TEXT = os.strerror(errno.ELOOP)  # "Too many levels of symbolic links"


@pytest.fixture
def served(tmp_path):
    """Starts servers on folders under tmp_path and stops them (asserting a clean exit) at the end."""
    servers = []

    def start(models, *extra):
        server = Server(models, "--poll-interval", str(POLL), *extra, log=tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        code = server.stop()
        assert code == 0, f"server exited with {code}:\n{server.log_text()[-3000:]}"


def users_of(version_dir):
    return (version_dir / "users.txt").read_text().split()


def status_of(admin, name):
    return admin.GetModelStatus(pb.GetModelStatusRequest(name=name), timeout=10).status


def rank_version(stub, name, user):
    return stub.Rank(pb.RankRequest(model=pb.ModelSpec(name=name), user_id=user, k=3), timeout=10).model_version


def loop_in_place_of(path: pathlib.Path) -> pathlib.Path:
    """Moves `path` aside (to a dot-name the server ignores) and puts a symlink loop in its place,
    so that opening or listing `path` fails with ELOOP. Returns where the original went."""
    aside = path.parent / f".{path.name}.aside"
    os.rename(path, aside)
    os.symlink(path.name, path)
    with pytest.raises(OSError) as caught:
        os.stat(path)
    assert caught.value.errno == errno.ELOOP
    return aside


def restore(path: pathlib.Path, aside: pathlib.Path):
    os.unlink(path)
    os.rename(aside, path)


def lines_with(text: str, *parts: str) -> list:
    return [line for line in text.splitlines() if all(part in line for part in parts)]


def identity(path: pathlib.Path):
    st = os.stat(path)
    return st.st_ino, hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# 1. A model folder that cannot be listed


def test_an_unreadable_model_folder_keeps_serving_and_recovers(versions, tmp_path, served):
    models = tmp_path / "models"
    clone(versions[0], models / "m", 1, name="m")
    clone(versions[1], models / "m", 2, name="m")
    # Another model, read fine all along: the registry publishes snapshots for it meanwhile.
    clone(versions[2], models / "other", 1, name="other")
    server = served(models)
    users = users_of(versions[0])
    with grpc.insecure_channel(server.target) as channel:
        stub, admin = rpc.RecommenderStub(channel), rpc.ModelAdminStub(channel)
        assert rank_version(stub, "m", users[0]) == 2

        folder = models / "m"
        with RankLoad(server.target, "m", users, rate=100) as load:
            time.sleep(0.5)
            aside = loop_in_place_of(folder)
            fault_start = time.monotonic()
            time.sleep(FAULT)
            during = status_of(admin, "m")
            fault_end = time.monotonic()
            restore(folder, aside)
            time.sleep(3 * POLL)

        failures = load.failures()
        assert not failures, f"{len(failures)} calls failed: {describe_failures(failures)}"
        phase = load.phase(fault_start, fault_end)
        assert phase["calls"] > 50 and phase["versions"] == [2], phase
        assert during.serving_version == 2 and states(during) == {1: "AVAILABLE", 2: "AVAILABLE"}, during

        # One line when it started failing (with the path and the error), one when it recovered.
        log = server.log_text()
        failed = lines_with(log, f"cannot read {folder}:", ELOOP_TEXT)
        assert len(failed) == 1, f"expected one line about {folder}, got {failed}\n{log}"
        assert "version 2" in failed[0], failed
        recovered = lines_with(log, f"{folder} can be read again")
        assert len(recovered) == 1, log

        # Reading works again: a new version is picked up as before.
        clone(versions[2], folder, 3, name="m")
        wait_for(lambda: rank_version(stub, "m", users[0]) == 3, timeout=10, what="version 3 to serve")


# ---------------------------------------------------------------------------------------------
# 2. A labels.json that cannot be read, or is malformed


def _labelled_server(versions, tmp_path, served):
    """A server on `m` with versions 1..3 and `stable` on version 1 (so losing the label would
    switch serving to version 3)."""
    models = tmp_path / "models"
    for index in range(3):
        clone(versions[index], models / "m", index + 1, name="m")
    server = served(models)
    channel = grpc.insecure_channel(server.target)
    stub, admin = rpc.RecommenderStub(channel), rpc.ModelAdminStub(channel)
    users = users_of(versions[0])
    assert rank_version(stub, "m", users[0]) == 3
    admin.SetLabel(pb.SetLabelRequest(name="m", label="stable", version=1), timeout=30)
    assert rank_version(stub, "m", users[0]) == 1
    return server, channel, stub, admin, users, models / "m" / "labels.json"


def test_unreadable_labels_keep_stable_and_are_never_rewritten(versions, tmp_path, served):
    server, channel, stub, admin, users, labels = _labelled_server(versions, tmp_path, served)
    with channel:
        before = identity(labels)
        with RankLoad(server.target, "m", users, rate=100) as load:
            time.sleep(0.5)
            aside = loop_in_place_of(labels)
            entries = sorted(os.listdir(labels.parent))
            fault_start = time.monotonic()
            time.sleep(FAULT)

            # SetLabel cannot read the labels: it fails, naming the file and the error, and
            # writes nothing (the symlink is still there, no new file appeared).
            with pytest.raises(grpc.RpcError) as refused:
                admin.SetLabel(pb.SetLabelRequest(name="m", label="stable", version=3), timeout=30)
            assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION)
            assert str(labels) in refused.value.details() and ELOOP_TEXT in refused.value.details(), \
                refused.value.details()
            assert os.path.islink(labels) and os.readlink(labels) == "labels.json"
            assert sorted(os.listdir(labels.parent)) == entries

            during = status_of(admin, "m")
            time.sleep(2 * POLL)
            fault_end = time.monotonic()
            restore(labels, aside)
            time.sleep(3 * POLL)

        failures = load.failures()
        assert not failures, f"{len(failures)} calls failed: {describe_failures(failures)}"
        phase = load.phase(fault_start, fault_end)
        assert phase["calls"] > 50 and phase["versions"] == [1], phase
        assert during.serving_version == 1 and dict(during.labels) == {"stable": 1}, during
        assert identity(labels) == before, "labels.json was rewritten"

        log = server.log_text()
        failed = lines_with(log, f"cannot read {labels}:", ELOOP_TEXT)
        assert len(failed) == 1, f"expected one line about {labels}, got {failed}\n{log}"
        assert lines_with(log, f"{labels} can be read again"), log

        # Labels work again.
        admin.SetLabel(pb.SetLabelRequest(name="m", label="stable", version=3), timeout=30)
        assert rank_version(stub, "m", users[0]) == 3
        assert json.loads(labels.read_text())["labels"] == {"stable": 3}


def test_malformed_labels_keep_the_last_good_ones(versions, tmp_path, served):
    server, channel, stub, admin, users, labels = _labelled_server(versions, tmp_path, served)
    with channel:
        good = labels.read_bytes()
        with RankLoad(server.target, "m", users, rate=100) as load:
            time.sleep(0.5)
            broken = b'{"labels": {"stable": 1'  # cut short: not valid JSON
            temporary = labels.parent / ".labels.broken"
            temporary.write_bytes(broken)
            os.rename(temporary, labels)
            fault_start = time.monotonic()
            time.sleep(FAULT)
            with pytest.raises(grpc.RpcError) as refused:
                admin.SetLabel(pb.SetLabelRequest(name="m", label="stable", version=3), timeout=30)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
            assert str(labels) in refused.value.details() and "not valid JSON" in refused.value.details()
            assert labels.read_bytes() == broken, "a malformed labels.json was rewritten"
            during = status_of(admin, "m")
            fault_end = time.monotonic()
            temporary.write_bytes(good)
            os.rename(temporary, labels)
            time.sleep(3 * POLL)

        failures = load.failures()
        assert not failures, f"{len(failures)} calls failed: {describe_failures(failures)}"
        phase = load.phase(fault_start, fault_end)
        assert phase["calls"] > 50 and phase["versions"] == [1], phase
        assert during.serving_version == 1 and dict(during.labels) == {"stable": 1}, during
        log = server.log_text()
        assert len(lines_with(log, f"{labels} is malformed", "not valid JSON")) == 1, log
        assert len(lines_with(log, f"{labels} is valid again")) == 1, log

        admin.SetLabel(pb.SetLabelRequest(name="m", label="stable", version=3), timeout=30)
        assert rank_version(stub, "m", users[0]) == 3


# ---------------------------------------------------------------------------------------------
# 3. Loading a version for SetLabel does not hold up other calls


def write_large_version(source: pathlib.Path, target: pathlib.Path, name: str, items: int, dim: int):
    """A valid MF version of `name` with the users of `source`, its items plus `items` more
    (never rated), and `dim` dimensions: large enough that reading, verifying and warming it
    takes seconds. Written to a dot-folder and renamed into place."""
    tensors, metadata = rollout.read_safetensors(source / "weights.safetensors")
    manifest = rollout.read_manifest(source)
    user_ids = (source / "users.txt").read_text().split("\n")
    item_ids = (source / "items.txt").read_text().split("\n")
    user_ids = [u for u in user_ids if u]
    item_ids = [i for i in item_ids if i] + [f"big-{k}" for k in range(items)]
    rng = np.random.default_rng(7)
    scale = np.float32(0.1 / np.sqrt(dim))
    big = {
        "user_factors": (rng.standard_normal((len(user_ids), dim), dtype=np.float32) * scale),
        "item_factors": (rng.standard_normal((len(item_ids), dim), dtype=np.float32) * scale),
        "user_bias": tensors["user_bias"],
        "item_bias": np.concatenate([tensors["item_bias"], np.zeros(items, np.float32)]),
        "global_mean": tensors["global_mean"],
        "seen_indptr": tensors["seen_indptr"],
        "seen_indices": tensors["seen_indices"],
        "item_popularity": np.concatenate([tensors["item_popularity"], np.zeros(items, np.int32)]),
    }
    staged = target.parent / f".staging-{target.name}"
    staged.mkdir(parents=True)
    rollout.write_safetensors(staged / "weights.safetensors", big, metadata)
    (staged / "users.txt").write_text("\n".join(user_ids) + "\n")
    (staged / "items.txt").write_text("\n".join(item_ids) + "\n")
    manifest["name"] = name
    manifest["counts"]["items"] = len(item_ids)
    manifest["counts"]["dim"] = dim
    manifest["hyperparameters"]["dim"] = dim
    manifest["files"] = {}
    rollout.write_manifest(staged, manifest)
    manifest["files"] = {f: rollout.sha256_file(staged / f) for f in ["weights.safetensors", "users.txt", "items.txt"]}
    rollout.write_manifest(staged, manifest)
    rollout.publish(staged, int(target.name))


def test_set_label_loading_a_version_does_not_stall_other_calls(versions, tmp_path, served):
    models = tmp_path / "models"
    # `big` version 1 is large and, beyond --keep-versions 2, UNLOADED; versions 2 and 3 serve.
    write_large_version(versions[0], models / "big" / "1", "big", items=2_500_000, dim=32)
    clone(versions[1], models / "big", 2, name="big")
    clone(versions[2], models / "big", 3, name="big")
    clone(versions[0], models / "movies", 1, name="movies")
    server = served(models)
    users = users_of(versions[0])
    with grpc.insecure_channel(server.target) as channel:
        admin = rpc.ModelAdminStub(channel)
        assert states(status_of(admin, "big")) == {1: "UNLOADED", 2: "AVAILABLE", 3: "AVAILABLE"}

        with RankLoad(server.target, "movies", users, rate=100) as load:
            time.sleep(1.0)
            start = time.monotonic()
            response = admin.SetLabel(pb.SetLabelRequest(name="big", label="stable", version=1), timeout=60)
            took = time.monotonic() - start
            time.sleep(0.5)

        assert response.status.serving_version == 1
        assert states(response.status)[1] == "AVAILABLE"
        failures = load.failures()
        assert not failures, f"{len(failures)} calls failed: {describe_failures(failures)}"
        # The load must take long enough for a stall to show; the calls meanwhile stay quick.
        assert took > 0.6, f"loading the large version took only {took:.2f} s: make it larger"
        during = load.phase(start, start + took)
        assert during["calls"] >= 0.5 * 100 * took, during
        slowest = during["max_ms"] / 1000
        assert slowest < max(0.3, took / 4), (
            f"a Rank call on another model took {slowest:.2f} s while SetLabel loaded a version for "
            f"{took:.2f} s: {during}")
