"""`recserve models ...`: the ModelAdmin service from the command line, against a real server.

The server runs with an admin token on its own copy of the session's model folder, with a second
trained version of `movies` and a third one that is corrupt (FAILED), so labels, unloading and
reloading never disturb the other test modules.
"""

import json
import os
import shutil
import socket
import subprocess

import grpc
import pytest

from conftest import Server, binary, run_cli
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc

TOKEN = "models-cli-token"


@pytest.fixture(scope="module")
def admin(dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("models-cli")
    models = root / "models"
    shutil.copytree(dataset["models"], models)
    for seed in (4, 5):
        run_cli("train", "--data", dataset["data"], "--kind", "mf", "--name", "movies", "--models", models,
                "--dim", 8, "--epochs", 5, "--seed", seed)
    assert sorted(p.name for p in (models / "movies").iterdir() if p.is_dir()) == ["1", "2", "3"]
    with open(models / "movies" / "3" / "weights.safetensors", "ab") as weights:
        weights.write(b"junk")
    token_file = root / "token"
    token_file.write_text(f"  {TOKEN}\n")  # the CLI trims, as the server does
    server = Server(models, "--admin-token-file", str(token_file))
    channel = grpc.insecure_channel(server.target)
    yield {"server": server, "target": server.target, "token_file": token_file, "root": root,
           "stub": rpc.RecommenderStub(channel)}
    channel.close()
    assert server.stop() == 0


def models_cli(admin, *args, token=True, env=None):
    """Runs `recserve models ARGS --target ...` (with the token file unless token=False)."""
    command = [binary(), "models", *map(str, args), "--target", admin["target"]]
    if token:
        command += ["--token-file", str(admin["token_file"])]
    environment = {k: v for k, v in os.environ.items() if k != "RECSERVE_ADMIN_TOKEN"}
    environment.update(env or {})
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=environment)


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr}"
    return result


def failed(result, *words):
    """A clean failure: exit status 1, one `error: ...` line, the given words, no Swift trap."""
    assert result.returncode == 1, f"exit {result.returncode}:\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.stderr.startswith("error: "), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    for trap in ["Fatal error", "Stack dump", "backtrace", "Crash", "Illegal instruction"]:
        assert trap not in result.stderr, result.stderr
    return result


def status_json(admin, name="movies"):
    return json.loads(ok(models_cli(admin, "status", name, "--json")).stdout)["status"]


def versions(status):
    return {v["version"]: v for v in status["versions"]}


def serving_version(admin, user="u1"):
    response = admin["stub"].Rank(pb.RankRequest(model=pb.ModelSpec(name="movies"), user_id=user, k=1), timeout=10)
    return response.model_version


def test_list_shows_each_model_with_its_versions(admin):
    out = ok(models_cli(admin, "list")).stdout
    assert "model movies" in out
    assert "serving version: 2" in out  # the highest that verified; 3 is corrupt
    lines = out.splitlines()
    header = next(line for line in lines if "VERSION" in line)
    for column in ["STATE", "LABELS", "KIND", "SIZE MB", "CREATED", "METRICS"]:
        assert column in header
    rows = {line.split()[0]: line for line in lines if line.strip()[:1].isdigit()}
    assert set(rows) == {"1", "2", "3"}
    assert "AVAILABLE" in rows["1"] and "AVAILABLE" in rows["2"] and "FAILED" in rows["3"]
    assert "mf" in rows["2"] and "rmse=" in rows["2"] and "mae=" in rows["2"]
    assert "reason: " in out and "weights.safetensors" in out


def test_status_shows_one_model(admin):
    out = ok(models_cli(admin, "status", "movies")).stdout
    assert out.startswith("model movies")
    assert "FAILED" in out and "reason: " in out


def test_json_is_one_object_that_parses(admin):
    listed = json.loads(ok(models_cli(admin, "list", "--json")).stdout)
    [movies] = [m for m in listed["models"] if m["name"] == "movies"]
    assert movies["servingVersion"] == 2
    by_version = versions(movies)
    assert by_version[1]["state"] == "AVAILABLE" and by_version[1]["kind"] == "mf"
    assert by_version[1]["metrics"]["rmse"] > 0 and by_version[1]["sizeBytes"] > 0
    assert by_version[3]["state"] == "FAILED" and by_version[3]["reason"]
    status = status_json(admin)
    assert status["name"] == "movies" and len(status["versions"]) == 3


def test_token_from_the_environment(admin):
    ok(models_cli(admin, "list", token=False, env={"RECSERVE_ADMIN_TOKEN": TOKEN + "\n"}))


def test_missing_token_is_unauthenticated(admin):
    failed(models_cli(admin, "list", token=False), "UNAUTHENTICATED", "--token-file")


def test_wrong_token_is_permission_denied(admin):
    wrong = admin["root"] / "wrong-token"
    wrong.write_text("not-the-token\n")
    command = [binary(), "models", "list", "--target", admin["target"], "--token-file", str(wrong)]
    failed(subprocess.run(command, capture_output=True, text=True, timeout=60), "error: PERMISSION_DENIED")
    failed(models_cli(admin, "status", "movies", token=False, env={"RECSERVE_ADMIN_TOKEN": "nope"}),
           "PERMISSION_DENIED")


def test_unreadable_token_file(admin):
    failed(run_cli("models", "list", "--target", admin["target"], "--token-file", admin["root"] / "absent",
                   check=False), "cannot read --token-file")


def test_unknown_model_is_not_found(admin):
    failed(models_cli(admin, "status", "no-such-model"), "error: NOT_FOUND", "no-such-model")


def test_no_server_gives_a_clear_message():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for args in [["list"], ["status", "movies", "--json"], ["promote", "movies", "1"]]:
        result = run_cli("models", *args, "--target", f"127.0.0.1:{port}", "--timeout", 5, check=False)
        failed(result, "error: UNAVAILABLE", f"127.0.0.1:{port}", "is `recserve serve` running")
        assert result.stdout == ""


def test_bad_arguments_are_usage_errors():
    for args in [["promote", "movies", "0"], ["canary", "movies", "2", "--fraction", "1.5"],
                 ["unload", "movies", "x"], ["list", "--target", "nohostport"], ["list", "--timeout", "0"]]:
        result = run_cli("models", *args, check=False)
        assert result.returncode == 64, f"{args}: {result.returncode} {result.stderr}"


# SetLabel, UnloadVersion and ReloadRepository (hot swap, commit 67beaf6).

def test_promote_rollback_and_set_label(admin):
    try:
        out = ok(models_cli(admin, "promote", "movies", 1)).stdout
        assert "promoted version 1" in out and "stable=1" in out
        assert status_json(admin)["labels"] == {"stable": 1}
        assert serving_version(admin) == 1

        ok(models_cli(admin, "rollback", "movies", 2))
        assert status_json(admin)["labels"] == {"stable": 2}
        assert serving_version(admin) == 2

        out = ok(models_cli(admin, "set-label", "movies", "stable", 1)).stdout
        assert "label 'stable' -> version 1" in out
        assert versions(status_json(admin))[1]["labels"] == ["stable"]

        response = json.loads(ok(models_cli(admin, "set-label", "movies", "stable", 0, "--json")).stdout)
        assert "stable" not in response["status"].get("labels", {})
        assert serving_version(admin) == 2
        failed(models_cli(admin, "set-label", "movies", "stable", 0), "NOT_FOUND")  # already removed
        failed(models_cli(admin, "promote", "movies", 3), "movies")  # FAILED never serves
        failed(models_cli(admin, "promote", "movies", 99), "NOT_FOUND")
        failed(models_cli(admin, "promote", "no-such-model", 1), "NOT_FOUND")
    finally:
        models_cli(admin, "set-label", "movies", "stable", 0)


def test_canary_splits_users(admin, dataset):
    users = (dataset["models"] / "movies" / "1" / "users.txt").read_text().split()[:60]
    try:
        out = ok(models_cli(admin, "canary", "movies", 1, "--fraction", 0.5)).stdout
        assert "canary version 1 for 50% of users" in out
        status = status_json(admin)
        assert status["labels"]["canary"] == 1 and status["canaryFraction"] == pytest.approx(0.5)
        served = {user: serving_version(admin, user) for user in users}
        assert set(served.values()) == {1, 2}
        assert all(serving_version(admin, user) == version for user, version in served.items())  # sticky

        ok(models_cli(admin, "set-label", "movies", "canary", 0))
        assert "canary" not in status_json(admin).get("labels", {})
        assert {serving_version(admin, user) for user in users} == {2}
    finally:
        models_cli(admin, "set-label", "movies", "canary", 0)


def test_unload_and_reload(admin):
    ok(models_cli(admin, "promote", "movies", 2))
    try:
        failed(models_cli(admin, "unload", "movies", 2), "FAILED_PRECONDITION")  # labelled
        out = ok(models_cli(admin, "unload", "movies", 1)).stdout
        assert "unloaded version 1" in out and "UNLOADED" in out
        assert versions(status_json(admin))[1]["state"] == "UNLOADED"
        failed(models_cli(admin, "unload", "movies", 99), "NOT_FOUND")

        out = ok(models_cli(admin, "reload")).stdout
        assert "model movies" in out
        reloaded = json.loads(ok(models_cli(admin, "reload", "--json")).stdout)
        [movies] = [m for m in reloaded["models"] if m["name"] == "movies"]
        by_version = versions(movies)
        assert by_version[1]["state"] == "AVAILABLE"  # reload retries unloaded versions
        assert by_version[3]["state"] == "FAILED"  # and a corrupt one stays FAILED
    finally:
        models_cli(admin, "set-label", "movies", "stable", 0)


def test_status_shows_how_a_tuned_version_was_chosen(admin, dataset):
    """Issue 11: a version trained with --tune carries its search; `models status` (and the
    ModelAdmin status it prints) says which trial won with which settings; an untuned version
    says nothing about tuning."""
    run_cli("train", "--data", dataset["data"], "--kind", "als", "--name", "tuned", "--models",
            admin["root"] / "models", "--dim", 8, "--epochs", 4, "--tune", 3, "--quiet")
    ok(models_cli(admin, "reload"))
    out = ok(models_cli(admin, "status", "tuned")).stdout
    assert "tuned: trial " in out and " of 3 won (" in out and "validation ndcg@10" in out
    assert "searched in" in out
    assert status_json(admin, "tuned")["versions"][0]["tuning"].startswith("trial ")
    assert "tuned:" not in ok(models_cli(admin, "status", "movies")).stdout
