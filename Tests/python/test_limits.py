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
