"""The server's log (issue 13): one line per event on stderr, as text or as JSON objects a log
pipeline can read; the start-up configuration, versions loaded, labels moved and shutdown are
events; --log-level filters; the admin token never appears."""

import json
import shutil

import grpc
import pytest

from conftest import Server, run_cli
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc


def test_json_log_has_one_object_per_event_with_its_fields(versions, tmp_path):
    """A run with a swap, a version that fails verification, a training and a training refused:
    every stderr line is one JSON object, each event is there with its fields, and neither the
    token nor the training's data path appears anywhere."""
    models = tmp_path / "models"
    for number, source in ((1, versions[0]), (2, versions[1]), (3, versions[2])):
        shutil.copytree(source, models / "movies" / str(number))
    (models / "movies" / "3" / "items.txt").write_text("x\n")  # fails its checksum
    root = tmp_path / "data-root"
    root.mkdir()
    secret_path = tmp_path / "elsewhere-secret-data.csv"
    token = tmp_path / "token"
    token.write_text("s3cret-token-for-the-log-test\n")
    log = tmp_path / "server.log"
    server = Server(models, "--log-format", "json", "--admin-token-file", token, "--data-root", root, log=log)
    try:
        auth = [("authorization", "Bearer s3cret-token-for-the-log-test")]
        with grpc.insecure_channel(server.target) as channel:
            rpc.ModelAdminStub(channel).SetLabel(pb.SetLabelRequest(name="movies", label="stable", version=1),
                                                 metadata=auth, timeout=30)
            stub = rpc.RecommenderStub(channel)
            rows = [pb.Interaction(user_id=f"u{u}", item_id=f"i{(u * 7 + j) % 40}", rating=float(1 + (u + j) % 5))
                    for u in range(60) for j in range(8)]
            final = list(stub.Train(pb.TrainRequest(name="fresh", interactions=rows, epochs=3, dim=4),
                                    metadata=auth, timeout=60))[-1]
            assert final.done and final.version == 1
            with pytest.raises(grpc.RpcError):
                list(stub.Train(pb.TrainRequest(name="other", data_path=str(secret_path), epochs=3, dim=4),
                                metadata=auth, timeout=60))
    finally:
        assert server.stop() == 0
    text = log.read_text()
    events = [json.loads(line) for line in text.splitlines() if line.strip()]  # each line one object
    assert all({"ts", "level", "msg"} <= set(e) for e in events)

    def find(**fields):
        found = [e for e in events if all(e.get(k) == v for k, v in fields.items())]
        assert found, f"no event with {fields} in:\n{text}"
        return found[0]

    starting = find(msg="starting")
    assert starting["admin"] == "token" and starting["tls"] == "off" and starting["port"] == 0
    find(event="version_loaded", model="movies", version=1, level="info")
    failed = find(event="version_failed", model="movies", version=3, level="warning")
    assert "checksum mismatch" in failed["reason"]
    find(event="label_moved", model="movies", label="stable", version=1)
    find(event="serving_changed", model="movies", version=1)
    find(event="training_started", model="fresh", kind="mf")
    find(event="training_finished", model="fresh", kind="mf")
    find(event="version_loaded", model="fresh", version=1)
    find(event="training_failed", model="other", level="warning")
    assert events[-1]["msg"] == "stopped"
    assert "s3cret-token" not in text
    assert "elsewhere-secret-data" not in text


def test_text_log_and_level_filter(versions, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(versions[0], models / "movies" / "1")
    # A version that fails verification: a warning.
    broken = models / "movies" / "2"
    shutil.copytree(versions[1], broken)
    (broken / "items.txt").write_text("x\n")
    log = tmp_path / "info.log"
    server = Server(models, log=log)
    assert server.stop() == 0
    text = log.read_text()
    info = [line for line in text.splitlines() if " info " in line]
    assert any("version 1 of 'movies' loaded and verified" in line for line in info), text
    warning = [line for line in text.splitlines() if " warning " in line and "version 2" in line]
    assert warning and "FAILED verification" in warning[0], text

    quiet = tmp_path / "warning.log"
    server = Server(models, "--log-level", "warning", log=quiet)
    assert server.stop() == 0
    lines = quiet.read_text().splitlines()
    assert lines and all(" warning " in line or " error " in line for line in lines), lines


def test_bad_log_options_are_named(dataset):
    result = run_cli("serve", "--models", dataset["models"], "--log-format", "xml", check=False, timeout=30)
    assert result.returncode != 0 and "--log-format" in result.stderr
    result = run_cli("serve", "--models", dataset["models"], "--log-level", "loud", check=False, timeout=30)
    assert result.returncode != 0 and "--log-level" in result.stderr


def test_a_failed_call_carries_a_request_id_back_and_into_the_log(versions, tmp_path):
    """A failed call's response metadata carries x-request-id (the client's own, or a new one),
    and the server's debug log has a line for it with the same id; a call that succeeds carries
    none (nothing is added to the request path of good calls)."""
    models = tmp_path / "models"
    shutil.copytree(versions[0], models / "movies" / "1")
    log = tmp_path / "server.log"
    server = Server(models, "--log-format", "json", "--log-level", "debug", log=log)
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = rpc.RecommenderStub(channel)
            bad = pb.RankRequest(model=pb.ModelSpec(name="nothing"), user_id="u1", k=3)
            with pytest.raises(grpc.RpcError) as mine:
                stub.Rank(bad, metadata=[("x-request-id", "client-chose-this-42")], timeout=10)
            with pytest.raises(grpc.RpcError) as theirs:
                stub.Rank(bad, timeout=10)
            good, call = stub.Rank.with_call(
                pb.RankRequest(model=pb.ModelSpec(name="movies"), user_id=(models / "movies" / "1" / "users.txt")
                               .read_text().split()[0], k=3), timeout=10)
    finally:
        assert server.stop() == 0

    def request_id(error):
        metadata = dict(error.value.initial_metadata() or ()) | dict(error.value.trailing_metadata() or ())
        return metadata.get("x-request-id")

    assert mine.value.code() == grpc.StatusCode.NOT_FOUND
    assert request_id(mine) == "client-chose-this-42"
    generated = request_id(theirs)
    assert generated and generated.startswith("rs-")
    assert "x-request-id" not in dict(call.initial_metadata()) and len(good.items) == 3
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    failed = [e for e in events if e.get("event") == "call_failed"]
    assert {e["request_id"] for e in failed} == {"client-chose-this-42", generated}
    assert all(e["level"] == "debug" and e["code"] == "NOT_FOUND" and e["method"] == "/recserve.v1.Recommender/Rank"
               for e in failed)
    assert all("not found" in e["message"] for e in failed)
