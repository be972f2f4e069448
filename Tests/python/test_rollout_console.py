"""A canary under load, seen from outside (issue 12): per-version counters on /metrics split the
calls about 10/90, GetModelStatus reports each version's traffic and role, `models status
--watch` prints them side by side, and the status page on the metrics port, loaded in headless
Chromium, lists both versions with their rates and the registry's recent events."""

import re
import shutil
import socket
import urllib.request

import grpc
import pytest

import browser
from conftest import Server, run_cli
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def canary(versions, tmp_path_factory):
    """Versions 1 (stable) and 2 (canary for 10% of users) of 'movies', under a Rank load by
    user id from every user of the model."""
    models = tmp_path_factory.mktemp("canary-models")
    for number, source in ((1, versions[0]), (2, versions[1])):
        shutil.copytree(source, models / "movies" / str(number))
    metrics = free_port()
    server = Server(models, "--metrics-port", str(metrics))
    try:
        run_cli("models", "set-label", "movies", "stable", 1, "--target", server.target)
        run_cli("models", "canary", "movies", 2, "--fraction", 0.1, "--target", server.target)
        load = run_cli("load", "--target", server.target, "--model", "movies", "--rpc", "rank",
                       "--ids-from", models / "movies" / "1", "--duration", 3, "--warmup", 0,
                       "--concurrency", 4, "--json", "--quiet", timeout=120)
        yield {"server": server, "metrics": f"http://127.0.0.1:{metrics}", "load": load.stdout, "models": models}
    finally:
        assert server.stop() == 0


def version_calls(metrics_text: str) -> dict:
    """{(version, role, code): count} of recserve_version_calls_total for 'movies'."""
    calls = {}
    pattern = r'^recserve_version_calls_total\{model="movies",version="(\d+)",role="(\w+)",code="(\w+)"\} (\d+)$'
    for match in re.finditer(pattern, metrics_text, re.M):
        calls[(int(match.group(1)), match.group(2), match.group(3))] = int(match.group(4))
    return calls


def test_per_version_counters_split_about_10_90(canary):
    text = urllib.request.urlopen(canary["metrics"] + "/metrics", timeout=10).read().decode()
    calls = version_calls(text)
    stable = calls.get((1, "stable", "OK"), 0)
    canaried = calls.get((2, "canary", "OK"), 0)
    assert stable + canaried > 1000, calls
    share = canaried / (stable + canaried)
    # 10% of the users by a hash of their id; 300 users, so the slice holds about 30 of them.
    assert 0.05 < share < 0.16, (share, calls)
    # Latency histograms per version, with the same roles.
    for version, role in ((1, "stable"), (2, "canary")):
        count = re.search(
            rf'^recserve_version_latency_seconds_count\{{model="movies",version="{version}",role="{role}"\}} (\d+)$',
            text, re.M)
        assert count and int(count.group(1)) == calls[(version, role, "OK")]


def test_a_request_the_chosen_version_refuses_is_its_error(canary):
    """SEARCH_IVF on a version built without an index is refused once that version was chosen:
    an error of that version (a canary lacking what stable has shows here), unlike a request for a
    model that does not exist, which no version answers."""
    def errors(version):
        text = urllib.request.urlopen(canary["metrics"] + "/metrics", timeout=10).read().decode()
        return sum(n for (v, _, code), n in version_calls(text).items() if v == version and code != "OK")

    before = errors(2)
    with grpc.insecure_channel(canary["server"].target) as channel:
        stub = rpc.RecommenderStub(channel)
        user = (canary["models"] / "movies" / "2" / "users.txt").read_text().split()[0]
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as error:
                stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="movies", version=2), user_id=user, k=5,
                                         search=pb.SEARCH_IVF), timeout=10)
            assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError):
            stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="nothing"), user_id=user, k=5), timeout=10)
    assert errors(2) == before + 3


def test_model_status_reports_each_versions_traffic_and_role(canary):
    with grpc.insecure_channel(canary["server"].target) as channel:
        status = rpc.ModelAdminStub(channel).GetModelStatus(pb.GetModelStatusRequest(name="movies"), timeout=10).status
    traffic = {v.version: v.traffic for v in status.versions}
    assert traffic[1].role == "stable" and traffic[2].role == "canary"
    assert traffic[1].errors == 0
    for version in (1, 2):
        t = traffic[version]
        assert t.calls > 0 and t.calls_per_second > 0
        assert 0 < t.p50_ms <= t.p99_ms
    assert traffic[1].calls > traffic[2].calls

    watch = run_cli("models", "status", "movies", "--watch", "--count", 2, "--interval", 0.3,
                    "--target", canary["server"].target)
    rows = [line.split() for line in watch.stdout.splitlines() if re.match(r"^\s+\d+\s+(stable|canary)\s", line)]
    assert [(r[0], r[1]) for r in rows] == [("1", "stable"), ("2", "canary")] * 2, watch.stdout
    assert all(float(r[2]) > 0 for r in rows)  # calls/s over the last minute


def test_status_page_lists_both_versions_with_their_rates(canary):
    page = browser.dom(canary["metrics"] + "/")
    table = re.search(r'<table class="versions" data-model="movies">(.*?)</table>', page, re.S)
    assert table, page[:2000]
    rates = {}
    for version in (1, 2):
        row = re.search(rf'<tr data-version="{version}" class="available (\w+)">(.*?)</tr>', table.group(1), re.S)
        assert row, table.group(1)
        rate = re.search(r'<td class="rate">([\d.]+)</td>', row.group(2))
        rates[version] = (row.group(1), float(rate.group(1)))
    assert rates[1][0] == "stable" and rates[2][0] == "canary"
    assert rates[1][1] > rates[2][1] > 0
    events = re.search(r'<ol id="events"[^>]*>(.*?)</ol>', page, re.S).group(1)
    assert "label 'canary' of 'movies' now points to version 2" in events
    assert "version 1 of 'movies' loaded and verified" in events
    # Anything else on the port is a 404 that says where things are.
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(canary["metrics"] + "/nothing", timeout=10)
    assert error.value.code == 404
