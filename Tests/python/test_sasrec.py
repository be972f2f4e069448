"""SASRec end to end (issue 8): trained by `recserve train` and by the Train RPC on logs with
planted item chains, served over gRPC to grpcio clients, checked against the weights on disk,
hot-swapped under load, and refused when a version is broken."""

import json
import shutil
import time

import grpc
import numpy as np
import pytest

import rollout
from conftest import Server, cancel_and_expect_nothing_published, run_cli
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc
from rollout import RankLoad, describe_failures, read_safetensors, states, version_status, wait_for

CHAIN = 20  # items per chain in the generated log
ITEMS = 400


def successor(item_id: str):
    """The chain's next item after `item_id` ("i<k>", 1-based), or None at a chain's end."""
    k = int(item_id[1:])
    return None if k % CHAIN == 0 or k >= ITEMS else f"i{k + 1}"


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    root = tmp_path_factory.mktemp("sasrec")
    data = root / "sequences.csv"
    run_cli("gen-data", "--kind", "sequences", "--users", 400, "--items", ITEMS, "--chain-length", CHAIN,
            "--out", data, "--seed", 5)
    models = root / "models"
    result = run_cli("train", "--data", data, "--kind", "sasrec", "--name", "seq", "--models", models,
                     "--dim", 32, "--maxlen", 30, "--heads", 2, "--epochs", 60, "--lr", 0.005, "--batch-size", 64,
                     "--seed", 3, "--json", "--progress", "none")
    return {"data": data, "models": models, "train": json.loads(result.stdout), "root": root}


@pytest.fixture(scope="module")
def weights(chains):
    version = chains["models"] / "seq" / "1"
    tensors, metadata = read_safetensors(version / "weights.safetensors")
    users = (version / "users.txt").read_text().splitlines()
    items = (version / "items.txt").read_text().splitlines()
    return tensors, users, items


@pytest.fixture(scope="module")
def stub(chains):
    server = Server(chains["models"])
    channel = grpc.insecure_channel(server.target)
    yield rpc.RecommenderStub(channel)
    channel.close()
    assert server.stop() == 0


def spec(**selector):
    return pb.ModelSpec(name="seq", **selector)


def test_train_reports_ranking_metrics_and_the_architecture(chains):
    out = chains["train"]
    assert out["kind"] == "sasrec" and out["version"] == 1 and out["split"] == "leave-last-out"
    metrics = out["metrics"]
    for key in ["ndcg@10", "hr@10", "sampled_ndcg@10", "sampled_hr@10", "coverage@10"]:
        assert key in metrics, sorted(metrics)
    assert metrics["hr@10"] > 0.5, metrics  # the chains are learned
    hyper = out["hyperparameters"]
    assert (hyper["dim"], hyper["maxlen"], hyper["heads"], hyper["blocks"], hyper["batch_size"]) == (32, 30, 2, 2, 64)
    manifest = json.loads((chains["models"] / "seq" / "1" / "model.json").read_text())
    assert manifest["kind"] == "sasrec" and manifest["metrics"]["hr@10"] == metrics["hr@10"]


def test_eval_reproduces_the_training_metrics(chains):
    """`recserve eval` with the same split gives what training reported (full and sampled)."""
    result = run_cli("eval", "--models", chains["models"], "--name", "seq", "--data", chains["data"],
                     "--split", "leave-last-out", "--seed", 3, "--protocol", "full,sampled", "--json")
    metrics = json.loads(result.stdout)["metrics"]
    trained = chains["train"]["metrics"]
    for key in ["hr@10", "ndcg@10", "sampled_hr@10", "sampled_ndcg@10"]:
        assert metrics[key] == pytest.approx(trained[key], abs=1e-9), key


def test_rank_from_recent_items_of_a_chain_returns_its_continuation(stub):
    first, asked = 0, 0
    for chain in range(0, ITEMS // CHAIN, 2):
        session = [f"i{chain * CHAIN + j}" for j in range(1, 5)]
        response = stub.Rank(pb.RankRequest(model=spec(), recent_items=session, k=3, exclude_seen=True), timeout=10)
        ranked = [i.item_id for i in response.items]
        assert response.model_name == "seq" and response.model_version == 1
        assert not set(ranked) & set(session)
        want = successor(session[-1])
        assert want in ranked, f"after {session}: {ranked}"
        first += ranked[0] == want
        asked += 1
    assert first >= asked - 2, f"{first} of {asked} sessions ranked their continuation first"


def test_rank_by_user_matches_the_weights_on_disk(stub, weights):
    tensors, users, items = weights
    embeddings = tensors["item_emb.weight"][1:]
    for u in [0, 17, len(users) - 1]:
        expected = embeddings @ tensors["user_states"][u]
        response = stub.Rank(pb.RankRequest(model=spec(), user_id=users[u], k=10), timeout=10)
        order = np.argsort(-expected, kind="stable")[:10]
        assert [i.item_id for i in response.items] == [items[j] for j in order]
        assert [i.score for i in response.items] == pytest.approx(expected[order], abs=1e-4)
        # exclude_seen drops the user's training sequence.
        seen = {items[j] for j in tensors["sequence_items"][tensors["sequence_indptr"][u]:tensors["sequence_indptr"][u + 1]]}
        response = stub.Rank(pb.RankRequest(model=spec(), user_id=users[u], k=50, exclude_seen=True), timeout=10)
        assert len(response.items) == 50 and not {i.item_id for i in response.items} & seen


def test_a_known_users_session_continues_from_its_last_item(stub, weights):
    _, users, _ = weights
    session = [f"i{5 * CHAIN + j}" for j in range(3, 7)]
    with_session = stub.Rank(pb.RankRequest(model=spec(), user_id=users[3], recent_items=session, k=3,
                                            exclude_seen=True), timeout=10)
    alone = stub.Rank(pb.RankRequest(model=spec(), user_id=users[3], k=3, exclude_seen=True), timeout=10)
    assert successor(session[-1]) in [i.item_id for i in with_session.items]
    assert [i.item_id for i in with_session.items] != [i.item_id for i in alone.items]


@pytest.fixture(scope="module")
def events_stub(chains):
    """A second server on the same version, keeping events."""
    server = Server(chains["models"], "--events-dir", str(chains["root"] / "events"))
    channel = grpc.insecure_channel(server.target)
    yield rpc.RecommenderStub(channel)
    channel.close()
    assert server.stop() == 0


def test_appended_events_move_a_users_ranking_along_the_chain(events_stub, weights):
    """Without a new version: the events are the sequence's tail, so the next items of the chain
    the user just walked rank first, and the version answering stays 1."""
    _, users, _ = weights
    for u, chain in ((5, 3), (40, 11), (123, 17)):
        user = users[u]
        before = events_stub.Rank(pb.RankRequest(model=spec(), user_id=user, k=3, exclude_seen=True), timeout=10)
        walked = [f"i{chain * CHAIN + j}" for j in range(2, 8)]
        events_stub.AppendEvents(pb.AppendEventsRequest(events=[
            pb.Event(user_id=user, item_id=item, type="click") for item in walked]), timeout=10)
        after = events_stub.Rank(pb.RankRequest(model=spec(), user_id=user, k=3, exclude_seen=True), timeout=10)
        ranked = [i.item_id for i in after.items]
        assert after.model_version == before.model_version == 1
        assert ranked[0] == successor(walked[-1]), f"user {user} after {walked}: {ranked}"
        assert not set(ranked) & set(walked)
        assert ranked != [i.item_id for i in before.items]


def test_a_new_users_events_are_a_sequence_to_continue(events_stub):
    walked = [f"i{8 * CHAIN + j}" for j in range(5, 9)]
    events_stub.AppendEvents(pb.AppendEventsRequest(events=[
        pb.Event(user_id="first-visit", item_id=item, type="view") for item in walked]), timeout=10)
    response = events_stub.Rank(pb.RankRequest(model=spec(), user_id="first-visit", k=3, exclude_seen=True),
                                timeout=10)
    assert response.items[0].item_id == successor(walked[-1])


def test_predict_scores_pairs_from_the_users_sequence(stub, weights):
    tensors, users, items = weights
    embeddings = tensors["item_emb.weight"][1:]
    states_ = tensors["user_states"]
    pairs = [(users[0], items[0]), (users[9], items[33]), ("nobody", items[5]), (users[2], "no-such-item")]
    response = stub.Predict(pb.PredictRequest(model=spec(), pairs=[pb.UserItem(user_id=u, item_id=i) for u, i in pairs]),
                            timeout=10)
    assert list(response.known) == [True, True, False, False]
    assert response.scores[0] == pytest.approx(float(states_[0] @ embeddings[0]), abs=1e-4)
    assert response.scores[1] == pytest.approx(float(states_[9] @ embeddings[33]), abs=1e-4)
    # A user the model never saw: the mean user state.
    assert response.scores[2] == pytest.approx(float(states_.mean(axis=0) @ embeddings[5]), abs=1e-4)
    assert response.scores[3] == 0


def test_rank_strategies_apply_to_sasrec(stub, weights):
    _, users, items = weights
    user = users[4]
    base = stub.Rank(pb.RankRequest(model=spec(), user_id=user, k=20), timeout=10)
    ranked = [i.item_id for i in base.items]
    candidates = items[100:140]
    only = stub.Rank(pb.RankRequest(model=spec(), user_id=user, k=5, candidates=candidates), timeout=10)
    assert len(only.items) == 5 and {i.item_id for i in only.items} <= set(candidates)
    excluded = stub.Rank(pb.RankRequest(model=spec(), user_id=user, k=5, exclude=ranked[:2]), timeout=10)
    assert [i.item_id for i in excluded.items] == ranked[2:7]
    threshold = base.items[5].score
    above = stub.Rank(pb.RankRequest(model=spec(), user_id=user, k=20, min_score=threshold), timeout=10)
    assert [i.item_id for i in above.items] == ranked[:6]
    diverse = stub.Rank(pb.RankRequest(model=spec(), user_id=user, k=10, diversity=0.7), timeout=10)
    assert len(diverse.items) == 10 and [i.item_id for i in diverse.items] != ranked[:10]
    penalised = stub.Rank(pb.RankRequest(model=spec(), user_id=user, k=10, popularity_penalty=5), timeout=10)
    assert len(penalised.items) == 10


def test_similar_items_by_embedding_cosine(stub, weights):
    tensors, _, items = weights
    e = tensors["item_emb.weight"][1:]
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    response = stub.SimilarItems(pb.SimilarItemsRequest(model=spec(), item_id=items[7], k=5), timeout=10)
    cosine = unit @ unit[7]
    cosine[7] = -np.inf
    assert [i.item_id for i in response.items] == [items[j] for j in np.argsort(-cosine, kind="stable")[:5]]


def test_long_sessions_keep_their_last_maxlen_items(stub):
    # 29 unrelated items then the window's last item: only the last 30 (maxlen) count.
    noise = [f"i{k}" for k in range(1, 400, 7)]
    session = noise + [f"i{9 * CHAIN + j}" for j in range(1, 5)]
    long = stub.Rank(pb.RankRequest(model=spec(), recent_items=session, k=5), timeout=10)
    tail = stub.Rank(pb.RankRequest(model=spec(), recent_items=session[-30:], k=5), timeout=10)
    assert [i.item_id for i in long.items] == [i.item_id for i in tail.items]
    assert [i.score for i in long.items] == pytest.approx([i.score for i in tail.items], abs=1e-5)


@pytest.mark.parametrize("request_fields,code,words", [
    ({"recent_items": ["nope", "nada"]}, grpc.StatusCode.NOT_FOUND, ["recent_items"]),
    ({"user_id": "stranger"}, grpc.StatusCode.NOT_FOUND, ["stranger", "recent_items"]),
    ({}, grpc.StatusCode.INVALID_ARGUMENT, ["user_id"]),
    ({"recent_items": ["i1"], "k": 0}, grpc.StatusCode.INVALID_ARGUMENT, ["k"]),
    ({"recent_items": ["i1"] * 100_001}, grpc.StatusCode.INVALID_ARGUMENT, ["recent_items"]),
])
def test_bad_rank_requests(stub, request_fields, code, words):
    fields = {"k": 5, **request_fields}
    with pytest.raises(grpc.RpcError) as error:
        stub.Rank(pb.RankRequest(model=spec(), **fields), timeout=10)
    assert error.value.code() == code, error.value.details()
    for word in words:
        assert word in error.value.details()
    # The server still serves.
    assert len(stub.Rank(pb.RankRequest(model=spec(), recent_items=["i1", "i2"], k=2), timeout=10).items) == 2


# -------------------------------------------------------------------------------------------
# The Train RPC


@pytest.fixture(scope="module")
def trainer(chains, tmp_path_factory):
    root = tmp_path_factory.mktemp("sasrec-data-root")
    shutil.copy(chains["data"], root / "sequences.csv")
    models = tmp_path_factory.mktemp("sasrec-train-models")
    server = Server(models, "--data-root", str(root))
    channel = grpc.insecure_channel(server.target)
    yield rpc.RecommenderStub(channel), models
    channel.close()
    assert server.stop() == 0


def test_train_rpc_streams_publishes_and_serves_sasrec(trainer):
    stub, models = trainer
    messages = list(stub.Train(pb.TrainRequest(name="rpc-seq", kind="sasrec", data_path="sequences.csv", dim=16,
                                               epochs=4, maxlen=20, blocks=1, heads=2, dropout=0.1, batch_size=32,
                                               learning_rate=0.003, seed=3, promote=True), timeout=300))
    epochs = [m for m in messages if m.epoch and not m.done]
    assert [m.epoch for m in epochs] == [1, 2, 3, 4]
    assert all(m.loss > 0 and "correct" in m.metrics and m.total_epochs == 4 for m in epochs)
    final = messages[-1]
    assert final.done and final.version == 1 and final.promoted
    assert "ndcg@10" in final.metrics and "sampled_hr@10" in final.metrics
    hyper = json.loads((models / "rpc-seq" / "1" / "model.json").read_text())["hyperparameters"]
    assert (hyper["dim"], hyper["maxlen"], hyper["blocks"], hyper["heads"], hyper["dropout"], hyper["batch_size"]) \
        == (16, 20, 1, 2, 0.1, 32)
    response = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="rpc-seq", label="stable"),
                                        recent_items=["i1", "i2"], k=4), timeout=10)
    assert response.model_version == 1 and len(response.items) == 4


@pytest.mark.parametrize("request_fields,word", [
    ({"kind": "sasrec", "dim": 10, "heads": 3}, "heads"),
    ({"kind": "sasrec", "dropout": 1.0}, "dropout"),
    ({"kind": "sasrec", "maxlen": -5}, "maxlen"),
    ({"kind": "sasrec", "batch_size": 70000}, "batch size"),
    ({"kind": "sasrec", "regularization": 0.1}, "regularization"),
    ({"kind": "sasrec", "alpha": 1.0}, "alpha"),
    ({"kind": "bpr", "maxlen": 50}, "maxlen"),
    ({"kind": "mf", "dropout": 0.3}, "dropout"),
    ({"kind": "als", "heads": 2}, "heads"),
])
def test_bad_sasrec_train_requests(trainer, request_fields, word):
    stub, _ = trainer
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Train(pb.TrainRequest(name="bad-seq", data_path="sequences.csv", **request_fields), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert word in error.value.details()


def test_cancelled_sasrec_training_publishes_nothing(trainer):
    stub, models = trainer
    stream = stub.Train(pb.TrainRequest(name="cancel-seq", kind="sasrec", data_path="sequences.csv", dim=16,
                                        maxlen=20, epochs=100000), timeout=120)
    assert next(stream).message.startswith("training cancel-seq")
    next(stream)  # an epoch finished
    cancel_and_expect_nothing_published(stream, models / "cancel-seq")


# -------------------------------------------------------------------------------------------
# Hot swap and broken versions


@pytest.fixture(scope="module")
def second_version(chains):
    """Another SASRec of the same data (other seed), staged where no server looks."""
    staging = chains["root"] / "staging"
    run_cli("train", "--data", chains["data"], "--kind", "sasrec", "--name", "seq", "--models", staging,
            "--dim", 16, "--maxlen", 30, "--epochs", 5, "--seed", 9, "--split", "none", "--progress", "none")
    return staging / "seq" / "1"


def test_sasrec_hot_swaps_under_load_with_no_failed_call(chains, second_version, tmp_path):
    models = tmp_path / "models"
    rollout.clone(chains["models"] / "seq" / "1", models / "seq", 1)
    users = (chains["models"] / "seq" / "1" / "users.txt").read_text().split()
    server = Server(models, log=tmp_path / "server.log")
    try:
        with RankLoad(server.target, "seq", users, rate=200, threads=2) as load:
            load.wait_for_version(1)
            time.sleep(1.0)
            staged = rollout.stage(second_version, models / "seq")
            rollout.publish(staged, 2)
            load.wait_for_version(2, timeout=20)
            time.sleep(1.0)
        calls = load.snapshot()
        failed = [c for c in calls if c.code != grpc.StatusCode.OK]
        assert not failed, f"{len(failed)} of {len(calls)} calls failed: {describe_failures(failed)}"
        assert {c.version for c in calls} == {1, 2}
    finally:
        assert server.stop() == 0, server.log_text()[-2000:]


def _tamper_user_states(folder):
    """States that belong to another network (as an exporter with the wrong architecture would
    write): the server recomputes a sample of users at load and compares."""
    tensors, metadata = read_safetensors(folder / "weights.safetensors")
    tensors["user_states"] *= 1.1
    rollout.write_safetensors(folder / "weights.safetensors", tensors, metadata)
    rollout.refresh_checksums(folder)


def _nan_in_attention(folder):
    tensors, metadata = read_safetensors(folder / "weights.safetensors")
    tensors["attention_layers.0.in_proj_weight"][2, 1] = np.nan
    rollout.write_safetensors(folder / "weights.safetensors", tensors, metadata)
    rollout.refresh_checksums(folder)


def _no_heads(folder):
    manifest = rollout.read_manifest(folder)
    del manifest["hyperparameters"]["heads"]
    rollout.write_manifest(folder, manifest)


def _sequence_out_of_range(folder):
    tensors, metadata = read_safetensors(folder / "weights.safetensors")
    tensors["sequence_items"][4] = 10_000
    rollout.write_safetensors(folder / "weights.safetensors", tensors, metadata)
    rollout.refresh_checksums(folder)


@pytest.mark.parametrize("corrupt,words", [
    (_tamper_user_states, ["user_states", "do not belong together"]),
    (_nan_in_attention, ["attention_layers.0.in_proj_weight", "nan"]),
    (_no_heads, ["heads"]),
    (_sequence_out_of_range, ["sequence_items", "out of range"]),
])
def test_broken_sasrec_version_fails_and_the_previous_keeps_serving(chains, second_version, tmp_path, corrupt, words):
    models = tmp_path / "models"
    rollout.clone(chains["models"] / "seq" / "1", models / "seq", 1)
    users = (chains["models"] / "seq" / "1" / "users.txt").read_text().split()
    server = Server(models, log=tmp_path / "server.log")
    try:
        with grpc.insecure_channel(server.target) as channel:
            admin = rpc.ModelAdminStub(channel)
            with RankLoad(server.target, "seq", users, rate=100, threads=1) as load:
                load.wait_for_version(1)
                staged = rollout.stage(second_version, models / "seq")
                corrupt(staged)
                rollout.publish(staged, 2)

                def settled():
                    v = version_status(admin.GetModelStatus(pb.GetModelStatusRequest(name="seq"), timeout=10).status, 2)
                    return v if v is not None and v.state in (pb.AVAILABLE, pb.FAILED) else None

                v2 = wait_for(settled, timeout=20, what="version 2 to be verified")
                time.sleep(1.0)
            status = admin.GetModelStatus(pb.GetModelStatusRequest(name="seq"), timeout=10).status
            assert v2.state == pb.FAILED, states(status)
            for word in words:
                assert word in v2.reason.lower() or word in v2.reason, v2.reason
            assert status.serving_version == 1
        calls = load.snapshot()
        failed = [c for c in calls if c.code != grpc.StatusCode.OK]
        assert not failed, describe_failures(failed)
        assert {c.version for c in calls} == {1}
    finally:
        assert server.stop() == 0, server.log_text()[-2000:]
