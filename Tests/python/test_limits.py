"""Issue 9: no request, client or disk hiccup takes the server down.

Admin methods are not left open on a public address by accident; Train has a memory budget and a
server-wide cap on trainings at once; the metrics endpoint survives slow clients, speaks IPv6 and
never holds up shutdown; ids that could never be stored one a line are refused; Predict's canary
choice is right for every pair of a batch; Train's learning_rate and regularization say what they
mean when 0.
"""

import json
import math
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import grpc
import pytest

from conftest import Server, binary
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc
from rollout import clone


def free_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@pytest.fixture
def models(dataset, tmp_path):
    """A private copy of the session's model folder (model 'movies', version 1)."""
    folder = tmp_path / "models"
    shutil.copytree(dataset["models"], folder)
    return folder


def a_user(models):
    return (models / "movies" / "1" / "users.txt").read_text().splitlines()[0]


def inline_rows(users: int, items: int, per_user: int = 2):
    return [pb.Interaction(user_id=f"u{u}", item_id=f"i{(u * 7 + j) % items}", rating=float(1 + (u + j) % 5))
            for u in range(users) for j in range(per_user)]


def rank_answers(target, user) -> bool:
    with grpc.insecure_channel(target) as channel:
        response = rpc.RecommenderStub(channel).Rank(
            pb.RankRequest(model=pb.ModelSpec(name="movies"), user_id=user, k=3), timeout=10)
        return len(response.items) == 3


# ---------------------------------------------------------------------------------------------
# Open by default


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_public_address_without_an_admin_token_is_refused(models, host):
    process = subprocess.Popen([binary(), "serve", "--models", str(models), "--host", host, "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"serve --host {host} without a token did not refuse to start:\n{out}\n{err}")
    assert process.returncode != 0
    assert "listening on" not in out
    for words in ["--admin-token-file", "--insecure-admin", host]:
        assert words in err, err


def test_insecure_admin_starts_on_a_public_address_and_says_so(models, tmp_path):
    log = tmp_path / "server.log"
    server = Server(models, "--host", "0.0.0.0", "--insecure-admin", log=log)
    try:
        with grpc.insecure_channel(server.target) as channel:
            listed = rpc.ModelAdminStub(channel).ListModels(pb.ListModelsRequest(), timeout=10)
            assert "movies" in [m.name for m in listed.models]
        lines = [line for line in server.log_text().splitlines() if "--insecure-admin" in line]
        assert len(lines) == 1 and "without a token" in lines[0], server.log_text()
    finally:
        assert server.stop() == 0


def test_loopback_addresses_need_no_token(models):
    server = Server(models, "--host", "localhost")
    try:
        assert rank_answers(server.target, a_user(models))
    finally:
        assert server.stop() == 0


# ---------------------------------------------------------------------------------------------
# Training budget


def test_a_training_over_the_memory_budget_is_refused_and_the_server_serves_on(models, tmp_path):
    server = Server(models, "--train-memory-mb", "64", log=tmp_path / "server.log")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = rpc.RecommenderStub(channel)
            # 3,000 users and 50 items at dim 4096: the factors alone are 50 MB, with Adam 150 MB.
            rows = inline_rows(3000, 50)
            with pytest.raises(grpc.RpcError) as error:
                list(stub.Train(pb.TrainRequest(name="huge", kind="mf", interactions=rows, dim=4096, epochs=1,
                                                optimizer="adam"), timeout=60))
            details = error.value.details()
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, details
            assert "64 MiB" in details and "--train-memory-mb" in details, details
            estimate = int(details.split("needs about ")[1].split(" MiB")[0])
            assert 150 <= estimate <= 400, details
            assert not [p for p in (models / "huge").glob("*") if not p.name.startswith(".")] \
                if (models / "huge").exists() else True
            assert server.alive()
            assert rank_answers(server.target, a_user(models))
            # The same data at a small dim fits, and trains.
            final = list(stub.Train(pb.TrainRequest(name="small", kind="mf", interactions=rows, dim=8, epochs=1),
                                    timeout=60))[-1]
            assert final.done and final.version == 1
            # A SASRec's estimate counts its Adam moments, per-thread gradients and activations.
            with pytest.raises(grpc.RpcError) as error:
                list(stub.Train(pb.TrainRequest(name="huge-seq", kind="sasrec", interactions=rows, dim=512,
                                                maxlen=2048, blocks=4, epochs=1), timeout=60))
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.value.details()
            assert "sasrec" in error.value.details()
    finally:
        assert server.stop() == 0


def test_trainings_of_different_models_wait_for_the_server_wide_cap(models, dataset, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(dataset["data"], root / "ratings.csv")
    server = Server(models, "--max-trainings", "1", "--data-root", str(root), log=tmp_path / "server.log")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = rpc.RecommenderStub(channel)

            def long(name):
                return stub.Train(pb.TrainRequest(name=name, data_path="ratings.csv", dim=32, epochs=100000),
                                  timeout=120)

            first = long("first")
            assert next(first).message.startswith("training first")
            second = long("second")
            assert next(second).message.startswith("queued: waiting for 1")
            third = long("third")
            assert next(third).message.startswith("queued: waiting for 2")
            with pytest.raises(grpc.RpcError) as error:
                list(long("fourth"))
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-trainings" in error.value.details(), error.value.details()
            # Serving goes on meanwhile.
            assert rank_answers(server.target, a_user(models))
            # When the running one ends, the first in line starts.
            first.cancel()
            started = next(second)
            while not started.message.startswith("training"):
                started = next(second)
            assert started.message.startswith("training second")
            second.cancel()
            third.cancel()
    finally:
        assert server.stop() == 0


# ---------------------------------------------------------------------------------------------
# Metrics endpoint


class SlowLoris(threading.Thread):
    """Sends a request head one byte a second and never finishes it; records when the server hung up."""

    def __init__(self, family, address):
        super().__init__(daemon=True)
        self.sock = socket.socket(family)
        self.sock.connect(address)
        self.sock.settimeout(0.1)
        self.started = time.monotonic()
        self.closed_after = None
        self.stopping = False

    def run(self):
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 10_000
        for byte in head:
            if self.stopping:
                return
            try:
                self.sock.send(bytes([byte]))
            except OSError:
                self.closed_after = time.monotonic() - self.started
                return
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    if self.sock.recv(4096) == b"":
                        self.closed_after = time.monotonic() - self.started
                        return
                except socket.timeout:
                    pass
                except OSError:
                    self.closed_after = time.monotonic() - self.started
                    return


def scrape(url: str) -> float:
    start = time.monotonic()
    text = urllib.request.urlopen(url, timeout=3).read().decode()
    assert "recserve_model_serving_version" in text
    return time.monotonic() - start


def test_slow_metrics_clients_block_neither_scrapes_nor_shutdown(models, tmp_path):
    metrics_port = free_port()
    server = Server(models, "--metrics-port", str(metrics_port), "--grace-period", "2", log=tmp_path / "server.log")
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    lorises = [SlowLoris(socket.AF_INET, ("127.0.0.1", metrics_port)) for _ in range(3)]
    try:
        for loris in lorises:
            loris.start()
        time.sleep(1.5)
        # Scrapes answer at once while the slow clients dribble.
        durations = [scrape(url) for _ in range(5)]
        assert max(durations) < 1.0, durations
        # The server gives up on a request head that takes more than its deadline (5 s).
        for loris in lorises:
            loris.join(timeout=10)
            assert loris.closed_after is not None and loris.closed_after < 8, loris.closed_after
        # A new slow client is connected when the server is told to stop: it exits in time.
        late = SlowLoris(socket.AF_INET, ("127.0.0.1", metrics_port))
        late.start()
        time.sleep(1.2)
        start = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=8)
        assert server.process.returncode == 0
        assert time.monotonic() - start < 5, time.monotonic() - start
        late.stopping = True
    finally:
        for loris in lorises:
            loris.stopping = True
        if server.alive():
            server.process.kill()
            server.process.wait()


def test_metrics_and_grpc_listen_on_ipv6(models, tmp_path):
    metrics_port = free_port(socket.AF_INET6, "::1")
    server = Server(models, "--host", "::1", "--metrics-port", str(metrics_port), log=tmp_path / "server.log")
    try:
        server.target = f"[::1]:{server.port}"
        assert rank_answers(server.target, a_user(models))
        assert scrape(f"http://[::1]:{metrics_port}/metrics") < 2
    finally:
        assert server.stop() == 0


# ---------------------------------------------------------------------------------------------
# Ids that could never be stored one a line


@pytest.mark.parametrize("field,bad,words", [
    ("user_id", "u\x00x", "interactions[3].user_id contains a NUL byte"),
    ("item_id", "i\x00", "interactions[3].item_id contains a NUL byte"),
    ("user_id", "u\nx", "interactions[3].user_id contains a line break"),
    ("item_id", "i\r", "interactions[3].item_id contains a line break"),
])
def test_ids_that_cannot_be_stored_are_refused(models, field, bad, words):
    server = Server(models)
    try:
        rows = inline_rows(20, 10)
        setattr(rows[3], field, bad)
        with grpc.insecure_channel(server.target) as channel:
            with pytest.raises(grpc.RpcError) as error:
                list(rpc.RecommenderStub(channel).Train(pb.TrainRequest(name="ids", interactions=rows, epochs=1,
                                                                        dim=4), timeout=60))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
        assert words in error.value.details(), error.value.details()
        assert not (models / "ids").exists() or not [p for p in (models / "ids").iterdir()
                                                       if not p.name.startswith(".")]
        assert rank_answers(server.target, a_user(models))
    finally:
        assert server.stop() == 0


def test_a_data_file_with_a_carriage_return_inside_an_id_names_file_and_line(tmp_path):
    data = tmp_path / "ratings.csv"
    data.write_bytes(b"user_id,item_id,rating\nu1,i1,4\nu2\r,i2,3\nu3,i1,5\n")
    result = subprocess.run([binary(), "train", "--data", str(data), "--kind", "mf", "--name", "cr", "--models",
                             str(tmp_path / "models"), "--epochs", "1", "--dim", "2"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, result.stderr
    assert "ratings.csv:3" in result.stderr and "line break" in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------
# Predict and the canary


def test_predict_picks_the_canary_for_the_whole_batch_rightly(versions, tmp_path):
    models = tmp_path / "models"
    clone(versions[0], models / "movies", 1)
    clone(versions[1], models / "movies", 2)
    users = (versions[0] / "users.txt").read_text().split()
    item = (versions[0] / "items.txt").read_text().split()[0]
    server = Server(models)
    try:
        with grpc.insecure_channel(server.target) as channel:
            admin = rpc.ModelAdminStub(channel)
            stub = rpc.RecommenderStub(channel)
            admin.SetLabel(pb.SetLabelRequest(name="movies", label="stable", version=1), timeout=10)
            admin.SetLabel(pb.SetLabelRequest(name="movies", label="canary", version=2, canary_fraction=0.5),
                           timeout=10)
            side = {u: stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="movies"), user_id=u, k=1),
                                 timeout=10).model_version for u in users[:40]}
            canary = [u for u in side if side[u] == 2]
            stable = [u for u in side if side[u] == 1]
            assert len(canary) >= 2 and len(stable) >= 2, side

            def predict(*batch):
                return stub.Predict(pb.PredictRequest(model=pb.ModelSpec(name="movies"), pairs=[
                    pb.UserItem(user_id=u, item_id=item) for u in batch]), timeout=10).model_version

            # One user: that user's slice, however many pairs.
            assert predict(canary[0], canary[0]) == 2
            assert predict(stable[0], stable[0]) == 1
            # Users all on one side: that side.
            assert predict(canary[0], canary[1]) == 2
            assert predict(stable[0], stable[1]) == 1
            # Users on both sides: the version that serves users outside the canary, whatever
            # the order.
            assert predict(canary[0], stable[0]) == 1
            assert predict(stable[0], canary[0]) == 1
            assert predict(canary[0], canary[1], stable[1]) == 1
    finally:
        assert server.stop() == 0


# ---------------------------------------------------------------------------------------------
# learning_rate and regularization


@pytest.fixture(scope="module")
def trainer(dataset, tmp_path_factory):
    models = tmp_path_factory.mktemp("limits-train-models")
    server = Server(models)
    channel = grpc.insecure_channel(server.target)
    yield rpc.RecommenderStub(channel), models
    channel.close()
    assert server.stop() == 0


@pytest.mark.parametrize("kind,fields,word", [
    ("mf", {"learning_rate": 0.0}, "learning_rate"),
    ("mf", {"learning_rate": -0.01}, "learning_rate"),
    ("mf", {"learning_rate": math.nan}, "learning_rate"),
    ("bpr", {"learning_rate": 0.0}, "learning_rate"),
    ("sasrec", {"learning_rate": 0.0}, "learning_rate"),
    ("als", {"learning_rate": 0.01}, "learning_rate does not apply to kind als"),
    ("mf", {"regularization": -0.1}, "regularization"),
    ("als", {"regularization": math.nan}, "regularization"),
    ("sasrec", {"regularization": 0.0}, "regularization does not apply to kind sasrec"),
])
def test_learning_rate_and_regularization_are_checked_when_given(trainer, kind, fields, word):
    stub, _ = trainer
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Train(pb.TrainRequest(name="lr", kind=kind, interactions=inline_rows(30, 10, 3), epochs=1, dim=4,
                                        **fields), timeout=60))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert word in error.value.details(), error.value.details()


@pytest.mark.parametrize("kind,fields,expected", [
    ("mf", {}, {"lr": 0.03, "reg": 0.05}),
    ("mf", {"regularization": 0.0, "learning_rate": 0.02}, {"lr": 0.02, "reg": 0.0}),
    ("bpr", {"regularization": 0.0}, {"reg": 0.0}),
    ("als", {"regularization": 0.0}, {"reg": 0.0}),
])
def test_unset_means_the_default_and_zero_regularization_means_none(trainer, kind, fields, expected):
    stub, models = trainer
    name = f"reg-{kind}-{len(fields)}"
    final = list(stub.Train(pb.TrainRequest(name=name, kind=kind, interactions=inline_rows(30, 10, 3), epochs=1, dim=4,
                                            **fields), timeout=60))[-1]
    hyper = json.loads((models / name / str(final.version) / "model.json").read_text())["hyperparameters"]
    for key, value in expected.items():
        assert hyper[key] == pytest.approx(value), hyper
