"""Events (issue 17) from a grpcio client: AppendEvents, AppendEventStream and GetUserEvents on a
real server with an event log on disk; Rank reading the users' latest events; bad input; restarts.
(SASRec's use of the events is in test_sasrec.py, the crash test in test_events_crash.py.)"""

import json
import shutil
import signal
import time

import grpc
import pytest

from conftest import Server, run_cli
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc

MODEL = pb.ModelSpec(name="movies")


def click(user, item, type_="click", **fields):
    return pb.Event(user_id=user, item_id=item, type=type_, **fields)


@pytest.fixture(scope="module")
def events_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("events") / "log"


@pytest.fixture(scope="module")
def served(dataset, events_dir, tmp_path_factory):
    """A server on the session's MF model with an event log; yields (stub, server)."""
    log = tmp_path_factory.mktemp("events-log") / "server.log"
    server = Server(dataset["models"], "--events-dir", str(events_dir), "--history-length", "50", log=log)
    channel = grpc.insecure_channel(server.target)
    yield rpc.RecommenderStub(channel), server
    channel.close()
    assert server.stop() == 0


def ranked(stub, **fields):
    return [i.item_id for i in stub.Rank(pb.RankRequest(model=MODEL, **fields), timeout=10).items]


def test_appended_events_come_back_in_order_with_their_sequences(served):
    stub, _ = served
    first = stub.AppendEvents(pb.AppendEventsRequest(events=[
        click("fresh-1", "i3"), click("fresh-1", "i7", "rating", value=4.5, timestamp_ms=1_700_000_000_000)]),
        timeout=10)
    assert first.appended == 2 and first.last_sequence == first.first_sequence + 1
    second = stub.AppendEvents(pb.AppendEventsRequest(events=[click("fresh-1", "i9", "view")]), timeout=10)
    assert second.first_sequence == first.last_sequence + 1
    events = stub.GetUserEvents(pb.GetUserEventsRequest(user_id="fresh-1"), timeout=10).events
    assert [(e.item_id, e.type) for e in events] == [("i3", "click"), ("i7", "rating"), ("i9", "view")]
    assert events[1].value == 4.5 and events[1].timestamp_ms == 1_700_000_000_000
    assert events[0].value == 1  # 0 means 1 for a type other than rating
    assert abs(events[0].timestamp_ms / 1000 - time.time()) < 60  # 0 means now
    latest = stub.GetUserEvents(pb.GetUserEventsRequest(user_id="fresh-1", limit=1), timeout=10).events
    assert [e.item_id for e in latest] == ["i9"]
    assert list(stub.GetUserEvents(pb.GetUserEventsRequest(user_id="nobody-here"), timeout=10).events) == []


def test_recserve_load_appends_batches_the_server_records(served, tmp_path):
    """`recserve load --rpc append` (the native client of the ingestion benchmark) sends
    AppendEvents of --batch events of --event-type for the users it is given; a type the server
    does not take is counted as INVALID_ARGUMENT and fails the run."""
    stub, server = served
    users = [f"loader-{k}" for k in range(20)]
    (tmp_path / "users.txt").write_text("\n".join(users) + "\n")
    result = run_cli("load", "--target", server.target, "--rpc", "append", "--batch", 10, "--count", 10,
                     "--warmup", 0, "--concurrency", 2, "--threads", 1, "--users-file", tmp_path / "users.txt",
                     "--event-type", "view", "--json", timeout=120)
    summary = json.loads(result.stdout)
    assert summary["status_codes"] == {"OK": 10} and summary["events_per_call"] == 10
    kept = [e for user in users for e in stub.GetUserEvents(pb.GetUserEventsRequest(user_id=user), timeout=10).events]
    assert len(kept) == 100 and {e.type for e in kept} == {"view"}  # 100 over 20 users: none past 50
    refused = run_cli("load", "--target", server.target, "--rpc", "append", "--count", 3, "--warmup", 0,
                      "--concurrency", 1, "--threads", 1, "--event-type", "teleport", "--json", check=False,
                      timeout=120)
    assert refused.returncode != 0 and json.loads(refused.stdout)["status_codes"] == {"INVALID_ARGUMENT": 3}


def test_exclude_seen_drops_an_item_appended_a_moment_ago(served):
    stub, _ = served
    before = ranked(stub, user_id="u5", k=5, exclude_seen=True)
    stub.AppendEvents(pb.AppendEventsRequest(events=[click("u5", before[0])]), timeout=10)
    after = ranked(stub, user_id="u5", k=5, exclude_seen=True)
    assert before[0] not in after and after[:4] == before[1:]
    # ignore_events ranks as if the server had none.
    assert ranked(stub, user_id="u5", k=5, exclude_seen=True, ignore_events=True) == before


def test_a_user_the_model_never_saw_is_ranked_from_their_events(served):
    stub, _ = served
    with pytest.raises(grpc.RpcError) as error:
        ranked(stub, user_id="walk-in", k=5)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    stub.AppendEvents(pb.AppendEventsRequest(events=[click("walk-in", "i1"), click("walk-in", "i2")]), timeout=10)
    folded = ranked(stub, user_id="walk-in", k=5, exclude_seen=True)
    assert len(folded) == 5 and not {"i1", "i2"} & set(folded)
    # The same as folding the items in by hand.
    assert folded == ranked(stub, recent_items=["i1", "i2"], k=5, exclude_seen=True, ignore_events=True)


def test_the_history_keeps_the_latest_events_only(served):
    stub, _ = served
    stub.AppendEvents(pb.AppendEventsRequest(events=[click("busy", f"i{k}") for k in range(1, 81)]), timeout=10)
    events = stub.GetUserEvents(pb.GetUserEventsRequest(user_id="busy"), timeout=10).events
    assert [e.item_id for e in events] == [f"i{k}" for k in range(31, 81)]  # --history-length 50


@pytest.mark.parametrize("events, words", [
    ([], "events is empty"),
    ([click("bad-1", "i1"), click("bad-1", "i2", "teleport")], "events[1].type 'teleport'"),
    ([click("bad-1", "i1"), click("bad-1\x00", "i2")], "events[1].user_id"),
    ([click("bad-1", "")], "events[0].item_id is empty"),
    ([click("bad-1", "i1", timestamp_ms=12)], "events[0].timestamp_ms 12"),
    ([click("bad-1", "i1", timestamp_ms=4_000_000_000_000)], "events[0].timestamp_ms"),
    ([click("bad-1", "i1", value=float("nan"))], "events[0].value"),
    ([click("bad-1", f"i{k}") for k in range(10_001)], "at most 10000"),
])
def test_a_bad_event_fails_the_call_naming_it_and_nothing_is_recorded(served, events, words):
    stub, _ = served
    with pytest.raises(grpc.RpcError) as error:
        stub.AppendEvents(pb.AppendEventsRequest(events=events), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in error.value.details()
    assert list(stub.GetUserEvents(pb.GetUserEventsRequest(user_id="bad-1"), timeout=10).events) == []


def test_a_stream_records_each_message_and_stops_at_a_bad_one(served):
    stub, _ = served
    messages = [pb.AppendEventsRequest(events=[click("streamer", f"i{m}{k}") for k in range(3)]) for m in range(4)]
    response = stub.AppendEventStream(iter(messages), timeout=10)
    assert response.appended == 12 and response.last_sequence - response.first_sequence == 11
    bad = [pb.AppendEventsRequest(events=[click("streamer-2", "i1")]),
           pb.AppendEventsRequest(events=[click("streamer-2", "i2"), click("streamer-2", "i3", "nope")]),
           pb.AppendEventsRequest(events=[click("streamer-2", "i4")])]
    with pytest.raises(grpc.RpcError) as error:
        stub.AppendEventStream(iter(bad), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages[1].events[1].type" in error.value.details()
    assert "the message before it was recorded" in error.value.details()
    kept = stub.GetUserEvents(pb.GetUserEventsRequest(user_id="streamer-2"), timeout=10).events
    assert [e.item_id for e in kept] == ["i1"]


def test_events_survive_a_restart_and_a_kill(dataset, tmp_path):
    events = tmp_path / "events"
    for base, stop in ((10, signal.SIGTERM), (20, signal.SIGKILL)):
        server = Server(dataset["models"], "--events-dir", str(events), "--events-fsync", "interval-ms=500")
        stub = rpc.RecommenderStub(grpc.insecure_channel(server.target))
        stub.AppendEvents(pb.AppendEventsRequest(events=[click("stayer", f"i{base + k}") for k in range(3)]),
                          timeout=10)
        before = ranked(stub, user_id="stayer", k=5, exclude_seen=True)
        if stop == signal.SIGKILL:
            server.process.kill()
            server.process.wait()
        else:
            assert server.stop(stop) == 0
        server = Server(dataset["models"], "--events-dir", str(events))
        stub = rpc.RecommenderStub(grpc.insecure_channel(server.target))
        kept = [e.item_id for e in stub.GetUserEvents(pb.GetUserEventsRequest(user_id="stayer"), timeout=10).events]
        assert kept[-3:] == [f"i{base + k}" for k in range(3)]
        assert ranked(stub, user_id="stayer", k=5, exclude_seen=True) == before
        assert server.stop() == 0


def test_a_torn_record_at_the_end_of_the_log_is_cut_off_at_start(dataset, tmp_path):
    events = tmp_path / "events"
    server = Server(dataset["models"], "--events-dir", str(events))
    stub = rpc.RecommenderStub(grpc.insecure_channel(server.target))
    stub.AppendEvents(pb.AppendEventsRequest(events=[click("torn", "i1")]), timeout=10)
    assert server.stop() == 0
    segment = sorted(events.glob("events-*.log"))[-1]
    with open(segment, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # a record header and part of a body: a torn append
    server = Server(dataset["models"], "--events-dir", str(events))
    stub = rpc.RecommenderStub(grpc.insecure_channel(server.target))
    stub.AppendEvents(pb.AppendEventsRequest(events=[click("torn", "i2")]), timeout=10)
    kept = [e.item_id for e in stub.GetUserEvents(pb.GetUserEventsRequest(user_id="torn"), timeout=10).events]
    assert kept == ["i1", "i2"]
    assert server.stop() == 0
    assert "cut off at byte" in server.log_text()


def test_damage_inside_the_log_stops_the_server_naming_the_file(dataset, tmp_path):
    events = tmp_path / "events"
    server = Server(dataset["models"], "--events-dir", str(events), "--events-segment-mb", "1")
    stub = rpc.RecommenderStub(grpc.insecure_channel(server.target))
    for batch in range(6):  # about 1.4 MB: two segments
        stub.AppendEvents(pb.AppendEventsRequest(events=[
            click(f"user-{batch}-{k}", "i" * 20) for k in range(5000)]), timeout=30)
    assert server.stop() == 0
    segments = sorted(events.glob("events-*.log"))
    assert len(segments) >= 2
    assert len(list(events.glob("snapshot-*.bin"))) == 1  # written when the first segment filled
    data = bytearray(segments[0].read_bytes())
    data[100] ^= 0xFF
    segments[0].write_bytes(bytes(data))
    # The snapshot covers the damaged segment: starting does not read it, and the users are back.
    server = Server(dataset["models"], "--events-dir", str(events))
    stub = rpc.RecommenderStub(grpc.insecure_channel(server.target))
    assert len(stub.GetUserEvents(pb.GetUserEventsRequest(user_id="user-0-7"), timeout=10).events) == 1
    assert server.stop() == 0
    # Training reads every segment, and names the damage.
    result = run_cli("train", "--events", events, "--kind", "bpr", "--name", "x", "--models", tmp_path / "m",
                     check=False)
    assert result.returncode != 0 and segments[0].name in result.stderr and "checksum" in result.stderr
    # Without the snapshot, starting replays every segment and stops naming the damaged one.
    for snapshot in events.glob("snapshot-*.bin"):
        snapshot.unlink()
    with pytest.raises(RuntimeError) as error:
        Server(dataset["models"], "--events-dir", str(events))
    assert segments[0].name in str(error.value) and "checksum" in str(error.value)


def test_metrics_count_events_commits_fsyncs_and_users(dataset, tmp_path):
    import socket  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    server = Server(dataset["models"], "--events-dir", str(tmp_path / "events"), "--metrics-port", str(metrics_port))
    stub = rpc.RecommenderStub(grpc.insecure_channel(server.target))
    for k in range(5):
        stub.AppendEvents(pb.AppendEventsRequest(events=[click(f"m{k}", "i1"), click(f"m{k}", "i2")]), timeout=10)
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith("recserve_event")}
    assert values["recserve_events_appended_total"] == 10
    assert values["recserve_event_batches_total"] == 5
    assert 1 <= values["recserve_event_commits_total"] <= 5
    assert values["recserve_events_users_in_memory"] == 5
    assert values["recserve_events_fsync_seconds_count"] >= values["recserve_event_commits_total"]
    assert values["recserve_events_log_bytes"] > 8 and values["recserve_events_log_segments"] == 1
    assert server.stop() == 0


def test_without_an_events_dir_appends_are_refused_with_the_flag_named(server):
    stub = rpc.RecommenderStub(grpc.insecure_channel(server.target))
    for call in (lambda: stub.AppendEvents(pb.AppendEventsRequest(events=[click("u1", "i1")]), timeout=10),
                 lambda: stub.AppendEventStream(iter([pb.AppendEventsRequest(events=[click("u1", "i1")])]),
                                                timeout=10),
                 lambda: stub.GetUserEvents(pb.GetUserEventsRequest(user_id="u1"), timeout=10)):
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--events-dir" in error.value.details()
    # And Rank is as it was.
    assert len(ranked(stub, user_id="u1", k=3)) == 3


def test_a_retrain_from_the_events_is_promoted_and_serves(dataset, tmp_path):
    """The loop closed: events in through AppendEvents, a Train RPC with from_events, promotion,
    the new version serving; then `recserve train --events` on the same log from the CLI."""
    import csv  # noqa: PLC0415

    with open(dataset["data"]) as f:
        rows = list(csv.DictReader(f))
    events = [click(r["user_id"], r["item_id"], "rating", value=float(r["rating"]),
                    timestamp_ms=int(r["timestamp"]) * 1000) for r in rows]
    models, log = tmp_path / "models", tmp_path / "events"
    shutil.copytree(dataset["models"], models)  # not empty: no demo models
    server = Server(models, "--events-dir", str(log), "--poll-interval", "0.2")
    stub = rpc.RecommenderStub(grpc.insecure_channel(server.target))
    half = len(events) // 2
    for start in range(0, half, 5000):
        stub.AppendEvents(pb.AppendEventsRequest(events=events[start:min(start + 5000, half)]), timeout=30)

    def train():
        progress = list(stub.Train(pb.TrainRequest(name="live", kind="bpr", from_events=True, dim=8, epochs=20,
                                                   promote=True), timeout=120))
        return progress[-1]

    first = train()
    assert first.done and first.version == 1 and first.promoted
    assert stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="live"), user_id=rows[0]["user_id"], k=3),
                     timeout=10).model_version == 1
    for start in range(half, len(events), 5000):
        stub.AppendEvents(pb.AppendEventsRequest(events=events[start:start + 5000]), timeout=30)
    second = train()
    assert second.done and second.version == 2
    served = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="live"), user_id=rows[-1]["user_id"], k=3),
                       timeout=10).model_version
    assert served == (2 if second.promoted else 1)
    # A user only the second half of the events has is known to version 2.
    late = {r["user_id"] for r in rows[half:]} - {r["user_id"] for r in rows[:half]}
    if late and second.promoted:
        user = sorted(late)[0]
        ranked_ = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="live"), user_id=user, k=3, ignore_events=True),
                            timeout=10)
        assert ranked_.model_version == 2
    assert server.stop() == 0
    # The same log from the command line: every event is a row.
    result = run_cli("train", "--events", log, "--kind", "bpr", "--name", "offline", "--models", models,
                     "--dim", 8, "--epochs", 5, "--split", "none", "--json")
    assert json.loads(result.stdout)["rows"] == len(events)


def test_from_events_on_a_server_without_events_is_refused(server):
    stub = rpc.RecommenderStub(grpc.insecure_channel(server.target))
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Train(pb.TrainRequest(name="live", kind="bpr", from_events=True), timeout=30))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--events-dir" in error.value.details()
