"""The Train RPC: progress streams, the new version serves, bad data is refused clearly."""

import shutil

import grpc
import pytest

from conftest import Server, cancel_and_expect_nothing_published
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc


@pytest.fixture(scope="module")
def trainer(dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("data-root")
    shutil.copy(dataset["data"], root / "ratings.csv")
    (root / "empty.csv").write_text("")
    (root / "bad.csv").write_text("user_id,item_id,rating,timestamp\nu1,i1,4,1\nu2,i2,abc,2\n")
    (root / "nan.csv").write_text("user_id,item_id,rating,timestamp\nu1,i1,4,1\nu1,i2,nan,2\n")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (root / "sub").mkdir()
    (root.parent / "secret.csv").write_text("user_id,item_id,rating\nu1,i1,5\n")
    models = tmp_path_factory.mktemp("train-models")
    # Two trainings at once, so that another model trains while one model's queue is full.
    server = Server(models, "--data-root", str(root), "--max-trainings", "2")
    channel = grpc.insecure_channel(server.target)
    yield rpc.RecommenderStub(channel), models, server
    channel.close()
    assert server.stop() == 0


def test_train_streams_progress_and_the_version_serves(trainer):
    stub, models, _ = trainer
    messages = list(stub.Train(pb.TrainRequest(name="fresh", kind="mf", data_path="ratings.csv", dim=8, epochs=5,
                                               seed=9), timeout=120))
    epochs = [m for m in messages if m.epoch and not m.done]
    assert [m.epoch for m in epochs] == [1, 2, 3, 4, 5]
    assert all(m.total_epochs == 5 and m.loss > 0 and "rmse" in m.metrics for m in epochs)
    final = messages[-1]
    assert final.done and final.version == 1 and final.metrics["rmse"] > 0
    assert "published fresh version 1" in final.message
    assert (models / "fresh" / "1" / "weights.safetensors").exists()
    users = (models / "fresh" / "1" / "users.txt").read_text().splitlines()
    response = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="fresh"), user_id=users[0], k=3), timeout=10)
    assert response.model_version == 1 and len(response.items) == 3


def test_train_inline_interactions_publishes_the_next_version(trainer):
    stub, models, _ = trainer
    rows = [pb.Interaction(user_id=f"u{u}", item_id=f"i{(u * 7 + j) % 40}", rating=float(1 + (u + j) % 5))
            for u in range(60) for j in range(8)]
    final = list(stub.Train(pb.TrainRequest(name="inline", interactions=rows, epochs=3, dim=4), timeout=60))[-1]
    assert final.done and final.version == 1
    again = list(stub.Train(pb.TrainRequest(name="inline", interactions=rows, epochs=3, dim=4), timeout=60))[-1]
    assert again.version == 2
    response = stub.Predict(pb.PredictRequest(model=pb.ModelSpec(name="inline"),
                                              pairs=[pb.UserItem(user_id="u1", item_id="i7")]), timeout=10)
    assert response.model_version == 2 and response.known[0]


def test_cancelled_training_publishes_nothing(trainer):
    stub, models, _ = trainer
    stream = stub.Train(pb.TrainRequest(name="cancelled", data_path="ratings.csv", dim=64, epochs=5000), timeout=120)
    first = next(stream)
    assert first.message.startswith("training cancelled")
    next(stream)  # an epoch finished
    # The server notices, stops, and leaves no version behind.
    cancel_and_expect_nothing_published(stream, models / "cancelled")


@pytest.mark.parametrize("path,code,words", [
    ("empty.csv", grpc.StatusCode.INVALID_ARGUMENT, ["empty.csv"]),
    ("bad.csv", grpc.StatusCode.INVALID_ARGUMENT, ["bad.csv:3", "abc"]),
    ("nan.csv", grpc.StatusCode.INVALID_ARGUMENT, ["nan.csv:3"]),
    ("binary.bin", grpc.StatusCode.INVALID_ARGUMENT, ["binary.bin"]),
    ("../secret.csv", grpc.StatusCode.PERMISSION_DENIED, ["outside"]),
    ("/etc/passwd", grpc.StatusCode.PERMISSION_DENIED, ["outside"]),
    ("sub/../../secret.csv", grpc.StatusCode.PERMISSION_DENIED, ["outside"]),
    ("missing.csv", grpc.StatusCode.NOT_FOUND, ["missing.csv"]),
    ("sub", grpc.StatusCode.INVALID_ARGUMENT, ["folder"]),
])
def test_bad_training_data_is_refused(trainer, path, code, words):
    stub, _, server = trainer
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Train(pb.TrainRequest(name="bad", data_path=path, epochs=2), timeout=30))
    assert error.value.code() == code, error.value.details()
    for word in words:
        assert word in error.value.details(), error.value.details()
    assert "/tmp" not in error.value.details() or "outside" in error.value.details()
    assert server.alive()


@pytest.mark.parametrize("request_fields,word", [
    ({"name": "", "data_path": "ratings.csv"}, "name"),
    ({"name": "../evil", "data_path": "ratings.csv"}, "name"),
    ({"name": "x", "kind": "magic", "data_path": "ratings.csv"}, "kind"),
    ({"name": "x"}, "data_path"),
    ({"name": "x", "data_path": "ratings.csv", "dim": -4}, "dim"),
    ({"name": "x", "data_path": "ratings.csv", "holdout": 1.5}, "holdout"),
    ({"name": "x", "data_path": "ratings.csv", "optimizer": "rmsprop"}, "optimizer"),
    ({"name": "x", "data_path": "ratings.csv", "early_stopping": -1}, "early_stopping"),
    ({"name": "x", "data_path": "ratings.csv", "alpha": 2.0}, "alpha"),
    ({"name": "x", "kind": "bpr", "data_path": "ratings.csv", "alpha": 2.0}, "alpha"),
    ({"name": "x", "kind": "bpr", "data_path": "ratings.csv", "optimizer": "adam"}, "optimizer"),
    ({"name": "x", "kind": "bpr", "data_path": "ratings.csv", "negative_candidates": 100}, "candidates"),
    ({"name": "x", "kind": "als", "data_path": "ratings.csv", "negative_candidates": 2}, "negative_candidates"),
    ({"name": "x", "kind": "als", "data_path": "ratings.csv", "alpha": -1.0}, "alpha"),
    ({"name": "x", "kind": "als", "data_path": "ratings.csv", "early_stopping": 3}, "early_stopping"),
    ({"name": "x", "kind": "bpr", "data_path": "ratings.csv", "negative_sampling": "random"}, "negative_sampling"),
    ({"name": "x", "kind": "bpr", "data_path": "ratings.csv", "cg_steps": 5}, "cg_steps"),
    ({"name": "x", "kind": "als", "data_path": "ratings.csv", "negative_sampling": "popularity"}, "negative_sampling"),
    ({"name": "x", "kind": "als", "data_path": "ratings.csv", "popularity_exponent": -1.0}, "popularity exponent"),
    ({"name": "x", "data_path": "ratings.csv", "cg_steps": 5}, "cg_steps"),
    ({"name": "x", "kind": "sasrec", "data_path": "ratings.csv", "tune": 3}, "tune applies to kinds mf, bpr, als and hybrid"),
    ({"name": "x", "data_path": "ratings.csv", "tune": 201}, "tune must be in 1...200"),
    ({"name": "x", "data_path": "ratings.csv", "recency_boost": 2.0}, "recency_boost applies to kinds bpr, als and hybrid"),
    ({"name": "x", "kind": "sasrec", "data_path": "ratings.csv", "recency_half_life": 0.2}, "recency_half_life applies"),
    ({"name": "x", "kind": "als", "data_path": "ratings.csv", "recency_boost": -1.0}, "recency_boost must be in [0, 1000]"),
    ({"name": "x", "kind": "bpr", "data_path": "ratings.csv", "recency_half_life": 0.0}, "recency_half_life must be in (0, 10]"),
    ({"name": "x", "kind": "bpr", "data_path": "ratings.csv", "tune": -1}, "tune must be in 1...200"),
    ({"name": "x", "kind": "als", "data_path": "ratings.csv", "tune": 500}, "tune must be in 1...200"),
])
def test_bad_train_requests(trainer, request_fields, word):
    stub, _, _ = trainer
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Train(pb.TrainRequest(**request_fields), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert word in error.value.details()


@pytest.mark.parametrize("kind", ["bpr", "als"])
def test_train_implicit_kinds_stream_and_serve(trainer, kind):
    stub, models, _ = trainer
    messages = list(stub.Train(pb.TrainRequest(name=f"implicit-{kind}", kind=kind, data_path="ratings.csv", dim=8,
                                               epochs=4, seed=3), timeout=120))
    epochs = [m for m in messages if m.epoch and not m.done]
    assert [m.epoch for m in epochs] == [1, 2, 3, 4]
    final = messages[-1]
    assert final.done and final.version == 1
    assert 0 <= final.metrics["ndcg@10"] <= 1 and "hr@10" in final.metrics
    users = (models / f"implicit-{kind}" / "1" / "users.txt").read_text().splitlines()
    response = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name=f"implicit-{kind}"), user_id=users[0], k=5,
                                        exclude_seen=True), timeout=10)
    assert response.model_version == 1 and len(response.items) == 5


def test_one_training_per_model_with_a_bounded_queue(trainer):
    stub, _, _ = trainer
    long = pb.TrainRequest(name="queue", data_path="ratings.csv", dim=32, epochs=100000)
    first = stub.Train(long, timeout=120)
    assert next(first).message.startswith("training")
    second = stub.Train(long, timeout=120)
    assert next(second).message.startswith("queued: waiting for 1")
    third = stub.Train(long, timeout=120)
    assert next(third).message.startswith("queued: waiting for 2")
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Train(long, timeout=30))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue" in error.value.details() and "waiting" in error.value.details()
    # Another model trains at once.
    other = list(stub.Train(pb.TrainRequest(name="queue-other", data_path="ratings.csv", dim=4, epochs=2),
                            timeout=60))
    assert other[-1].done
    # When the running one ends (cancelled), the next in line starts.
    first.cancel()
    started = next(second)
    while not started.message.startswith("training"):
        started = next(second)
    assert started.message.startswith("training queue")
    second.cancel()
    third.cancel()


def _model_json(models, name, version):
    import json
    return json.loads((models / name / str(version) / "model.json").read_text())


def test_train_rpc_takes_each_kinds_own_options(trainer):
    """optimizer/early_stopping (mf), alpha/cg_steps/popularity_exponent (als) and
    negative_candidates/negative_sampling (bpr) reach the trainer: the published model.json
    records them, and early stopping stops early."""
    stub, models, _ = trainer
    final = list(stub.Train(pb.TrainRequest(name="opt-mf", kind="mf", data_path="ratings.csv", dim=8, epochs=200,
                                            optimizer="adam", learning_rate=0.05, early_stopping=2, seed=5), timeout=300))[-1]
    assert final.done, final
    hyper = _model_json(models, "opt-mf", final.version)["hyperparameters"]
    assert hyper["optimizer"] == "adam", hyper
    assert final.metrics["epochs_run"] < 200 and final.metrics["best_epoch"] <= final.metrics["epochs_run"], \
        dict(final.metrics)

    final = list(stub.Train(pb.TrainRequest(name="opt-als", kind="als", data_path="ratings.csv", dim=8, epochs=2,
                                            alpha=0.0, cg_steps=5, popularity_exponent=0.5), timeout=120))[-1]
    hyper = _model_json(models, "opt-als", final.version)["hyperparameters"]
    assert (hyper["alpha"], hyper["cg_steps"], hyper["popularity_exponent"]) == (0.0, 5, 0.5), hyper

    final = list(stub.Train(pb.TrainRequest(name="opt-bpr", kind="bpr", data_path="ratings.csv", dim=8, epochs=2,
                                            negative_candidates=5, negative_sampling="popularity"), timeout=120))[-1]
    hyper = _model_json(models, "opt-bpr", final.version)["hyperparameters"]
    assert (hyper["negative_candidates"], hyper["negative_sampling"]) == (5, "popularity"), hyper


def test_train_rpc_tunes_and_records_the_search(trainer):
    """Issue 11: `tune` on the Train RPC runs the same search as `recserve train --tune`: a
    progress message per trial, the winner published, the search in model.json."""
    import json  # noqa: PLC0415

    stub, models, _ = trainer
    messages = list(stub.Train(pb.TrainRequest(name="tuned", kind="als", data_path="ratings.csv", dim=8, epochs=6,
                                               seed=5, tune=4, regularization=0.05), timeout=120))
    trials = [m.message for m in messages if m.message.startswith("tune: trial")]
    assert len(trials) >= 4, [m.message for m in messages]
    final = messages[-1]
    assert final.done and final.version == 1
    tuning = json.loads((models / "tuned" / "1" / "model.json").read_text())["hyperparameters"]["tuning"]
    assert len(tuning["trials"]) == 4
    assert all(t["settings"]["reg"] == pytest.approx(0.05) for t in tuning["trials"])  # given: fixed


def test_cancelled_tuning_publishes_nothing(trainer):
    stub, models, _ = trainer
    stream = stub.Train(pb.TrainRequest(name="tune-cancelled", kind="bpr", data_path="ratings.csv", dim=16,
                                        epochs=300, tune=60), timeout=120)
    for message in stream:
        if message.message.startswith("tune: trial"):
            break
    cancel_and_expect_nothing_published(stream, models / "tune-cancelled", settle=2.0)
