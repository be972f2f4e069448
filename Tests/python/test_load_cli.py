"""`recserve load` against real servers (issue 12): the JSON summary and the per-second CSV agree,
every RPC and request source works, a swap under load is seen in the answers with zero errors and
drawn in the HTML report (opened in headless Chromium), a sweep reports each level, and an
open-loop run above a server's capacity reports growing latency (coordinated omission corrected).

The slow server of the last test is a Python grpcio server written here: `recserve load` only
checks statuses (and reads model_version when swapping), so any server answering the method can
be measured.
"""

import concurrent.futures
import csv
import json
import pathlib
import shutil
import time

import grpc
import pytest

import browser
from conftest import Server, run_cli


@pytest.fixture(scope="module")
def rollout(versions, tmp_path_factory):
    """A server on a folder holding versions 1 and 2 of 'movies' (2 serves: the highest)."""
    models = tmp_path_factory.mktemp("load-models")
    for number, source in ((1, versions[0]), (2, versions[1])):
        shutil.copytree(source, models / "movies" / str(number))
    server = Server(models, "--poll-interval", "0")
    yield {"server": server, "models": models}
    assert server.stop() == 0


def load(server, *args, check=True):
    return run_cli("load", "--target", server.target, "--model", "movies", "--threads", 2, *args,
                   check=check, timeout=180)


def test_json_summary_matches_the_per_second_csv(rollout, tmp_path):
    version = rollout["models"] / "movies" / "2"
    series = tmp_path / "series.csv"
    result = load(rollout["server"], "--rpc", "rank", "--ids-from", version, "--zipf", 1, "--duration", 2,
                  "--warmup", 0.2, "--concurrency", 4, "--json", "--csv", series)
    summary = json.loads(result.stdout)
    assert summary["errors"] == 0 and summary["ok"] == summary["calls"] > 0
    assert summary["status_codes"] == {"OK": summary["ok"]}
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p999"] <= latency["max"]
    assert summary["latency_from"] == "call start" and summary["loop"] == "closed"
    rows = list(csv.DictReader(series.open()))
    assert [int(r["second"]) for r in rows] == [1, 2]
    assert sum(int(r["ok"]) for r in rows) == summary["ok"]
    assert all(float(r["p50_ms"]) <= float(r["p99_ms"]) <= float(r["max_ms"]) for r in rows)
    # A line per second went to stderr while it ran.
    assert len([line for line in result.stderr.splitlines() if "calls/s" in line]) == 2


@pytest.mark.parametrize("rpc", ["predict", "similar"])
def test_count_mode_measures_exactly_that_many_calls(rollout, rpc):
    version = rollout["models"] / "movies" / "1"
    summary = json.loads(load(rollout["server"], "--rpc", rpc, "--ids-from", version, "--count", 300,
                              "--warmup", 0, "--concurrency", 3, "--json", "--quiet").stdout)
    assert summary["calls"] == 300 and summary["errors"] == 0


def test_requests_file_is_sent_and_its_errors_are_counted_by_code(rollout, tmp_path):
    users = (rollout["models"] / "movies" / "1" / "users.txt").read_text().split()
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        json.dumps({"userId": users[0], "k": 5}) + "\n"
        + json.dumps({"userId": users[1], "k": 0}) + "\n")  # k 0: INVALID_ARGUMENT
    summary = json.loads(load(rollout["server"], "--rpc", "rank", "--requests-file", requests, "--count", 200,
                              "--warmup", 0, "--concurrency", 2, "--json", "--quiet").stdout)
    codes = summary["status_codes"]
    assert set(codes) == {"OK", "INVALID_ARGUMENT"} and sum(codes.values()) == 200
    assert 40 < codes["OK"] < 160  # the two requests drawn at random

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"userId": "u1"}) + "\n" + "{not json\n")
    result = load(rollout["server"], "--rpc", "rank", "--requests-file", bad, check=False)
    assert result.returncode != 0 and f"{bad} line 2" in result.stderr


def test_swap_under_load_has_no_errors_and_the_report_marks_it(rollout, tmp_path):
    server, models = rollout["server"], rollout["models"]
    report = tmp_path / "swap.html"
    try:
        result = load(server, "--rpc", "rank", "--ids-from", models / "movies" / "1", "--duration", 3,
                      "--warmup", 0.5, "--concurrency", 4, "--swap-at", 1.2, "--swap-version", 1,
                      "--json", "--report", report)
        summary = json.loads(result.stdout)
        swap = summary["swap"]
        assert summary["errors"] == 0 and swap["version"] == 1 and "error" not in swap
        assert [w["name"] for w in swap["windows"]] == ["before", "during", "after"]
        assert all(w["errors"] == 0 and w["calls_per_s"] > 0 for w in swap["windows"])
        # Answers named version 2 before the swap and version 1 from (about) when it was answered on.
        assert swap["requested_s"] <= swap["first_answer_naming_version_s"] <= swap["answered_s"] + 1.0
        assert swap["all_answers_new_from_s"] <= 3
        seconds = [line for line in result.stderr.splitlines() if "calls/s" in line]
        assert "v2 100%" in seconds[0] and "v1 100%" in seconds[-1]
    finally:
        run_cli("models", "set-label", "movies", "stable", 0, "--target", server.target)

    page = browser.dom(report.as_uri())
    for element in ('id="throughput-chart"', 'id="latency-chart"', 'class="swap-marker"', 'id="swap-windows"'):
        assert element in page, element
    shot = browser.screenshot(report.as_uri(), tmp_path / "swap.png", width=900, height=1100)
    colours = browser.colours(shot)
    # Not a blank page: text, axes and coloured chart lines (the p99 red, the marker's purple).
    assert len(colours) > 20
    assert max(colours.values()) < 0.98 * sum(colours.values())


def test_swap_publish_rolls_out_a_copied_version(rollout, versions, tmp_path):
    server, models = rollout["server"], rollout["models"]
    try:
        summary = json.loads(load(
            server, "--rpc", "predict", "--ids-from", models / "movies" / "1", "--duration", 2.5, "--warmup", 0.3,
            "--concurrency", 2, "--swap-at", 0.8, "--swap-publish", versions[2], "--models", models,
            "--json", "--quiet").stdout)
        assert summary["errors"] == 0 and summary["swap"]["version"] == 3
        assert (models / "movies" / "3" / "model.json").exists()
        assert "first_answer_naming_version_s" in summary["swap"]
    finally:
        run_cli("models", "set-label", "movies", "stable", 0, "--target", server.target)
        run_cli("models", "unload", "movies", 3, "--target", server.target)
        shutil.rmtree(models / "movies" / "3")


def test_sweep_reports_every_level_and_draws_the_curve(rollout, tmp_path):
    report = tmp_path / "sweep.html"
    result = load(rollout["server"], "--rpc", "rank", "--ids-from", rollout["models"] / "movies" / "1",
                  "--sweep", "1,2,4", "--duration", 0.6, "--warmup", 0.2, "--json", "--quiet",
                  "--report", report)
    summary = json.loads(result.stdout)
    assert [level["concurrency"] for level in summary["levels"]] == [1, 2, 4]
    assert all(level["ok"] > 0 and level["errors"] == 0 for level in summary["levels"])
    assert "in flight" in summary["verdict"]
    page = browser.dom(report.as_uri())
    assert 'id="sweep-chart"' in page and 'id="sweep-table"' in page


class SlowServer:
    """A grpcio server whose Predict takes `delay` seconds and answers an empty PredictResponse."""

    def __init__(self, delay: float):
        def predict(request, context):
            time.sleep(delay)
            return b""

        handler = grpc.method_handlers_generic_handler(
            "recserve.v1.Recommender",
            {"Predict": grpc.unary_unary_rpc_method_handler(predict)})
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self):
        self.server.stop(0)


def test_open_loop_above_capacity_reports_growing_latency(tmp_path):
    """One call in flight against a 20 ms server is at most 50 calls/s; asked for 200/s, calls
    fall behind the schedule by more every second. Charged from their intended start, the
    latency grows through the run; a closed loop on the same server stays near 20 ms."""
    slow = SlowServer(0.02)
    try:
        target = f"127.0.0.1:{slow.port}"
        series = tmp_path / "open.csv"
        result = run_cli("load", "--target", target, "--rpc", "predict", "--threads", 1, "--concurrency", 1,
                         "--rate", 200, "--duration", 3, "--warmup", 0, "--json", "--quiet", "--csv", series,
                         timeout=120)
        summary = json.loads(result.stdout)
        assert summary["latency_from"].startswith("intended start")
        rows = list(csv.DictReader(series.open()))
        first, last = float(rows[0]["p50_ms"]), float(rows[-1]["p50_ms"])
        assert last > 2 * first, (first, last)
        assert summary["latency_ms"]["p99"] > 1000  # far beyond the 20 ms service time
        assert summary["unsent"] > 0

        closed = json.loads(run_cli("load", "--target", target, "--rpc", "predict", "--threads", 1,
                                    "--concurrency", 1, "--duration", 1.5, "--warmup", 0, "--json", "--quiet",
                                    timeout=120).stdout)
        assert closed["latency_ms"]["p99"] < summary["latency_ms"]["p50"]
    finally:
        slow.stop()


def test_bad_options_are_named(rollout):
    for args, message in [
        (["--swap-at", "1"], "--swap-version"),
        (["--sweep", "1,zero"], "--sweep"),
        (["--ids-from", "/no/such/version"], "/no/such/version/users.txt"),
        (["--rpc", "rank", "--requests-file", "/no/such/file"], "/no/such/file"),
        (["--rpc", "rank", "--batch", "5"], "--batch is for --rpc append"),
        (["--rpc", "append", "--batch", "0"], "--batch must be in 1...10000"),
        (["--rpc", "append", "--swap-at", "1", "--swap-version", "1"], "not for --rpc append"),
    ]:
        result = load(rollout["server"], *args, check=False)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
