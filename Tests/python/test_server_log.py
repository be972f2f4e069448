"""The server's log (issue 13): one line per event on stderr, as text or as JSON objects a log
pipeline can read; the start-up configuration, versions loaded, labels moved and shutdown are
events; --log-level filters; the admin token never appears."""

import json
import shutil

import grpc

from conftest import Server, run_cli
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc


def test_json_log_has_one_object_per_event(versions, tmp_path):
    models = tmp_path / "models"
    for number, source in ((1, versions[0]), (2, versions[1])):
        shutil.copytree(source, models / "movies" / str(number))
    token = tmp_path / "token"
    token.write_text("s3cret-token-for-the-log-test\n")
    log = tmp_path / "server.log"
    server = Server(models, "--log-format", "json", "--admin-token-file", token, log=log)
    try:
        auth = [("authorization", "Bearer s3cret-token-for-the-log-test")]
        with grpc.insecure_channel(server.target) as channel:
            rpc.ModelAdminStub(channel).SetLabel(pb.SetLabelRequest(name="movies", label="stable", version=1),
                                                 metadata=auth, timeout=30)
    finally:
        assert server.stop() == 0
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "msg"} <= set(e) for e in events)
    starting = [e for e in events if e["msg"] == "starting"]
    assert len(starting) == 1
    assert starting[0]["admin"] == "token" and starting[0]["tls"] == "off" and starting[0]["port"] == 0
    messages = [e["msg"] for e in events]
    assert "version 1 of 'movies' loaded and verified" in messages
    assert "version 2 of 'movies' loaded and verified" in messages
    assert "label 'stable' of 'movies' now points to version 1" in messages
    assert messages[-1] == "stopped"
    assert "s3cret-token" not in log.read_text()


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
