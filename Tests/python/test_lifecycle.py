"""Start-up on an empty folder, and graceful shutdown under load."""

import signal
import threading
import time

import grpc
import pytest

from conftest import Server
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc


def test_empty_folder_trains_and_serves_the_demo_model(tmp_path):
    server = Server(tmp_path / "models")
    try:
        assert (tmp_path / "models" / "demo" / "1" / "model.json").exists()
        with grpc.insecure_channel(server.target) as channel:
            stub = rpc.RecommenderStub(channel)
            response = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="demo"), user_id="u1", k=10), timeout=10)
            assert response.model_name == "demo" and response.model_version == 1
            assert len(response.items) == 10
            scores = [item.score for item in response.items]
            assert scores == sorted(scores, reverse=True)
            # The sequence demo: sessions walk chains of 20 consecutive items.
            assert (tmp_path / "models" / "demo-seq" / "1" / "model.json").exists()
            session = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="demo-seq"), recent_items=["i21", "i22", "i23"],
                                               k=5, exclude_seen=True), timeout=10)
            assert session.model_name == "demo-seq" and session.items[0].item_id == "i24", session
            # The hybrid demo: items cycle through six genres (i1 Action, i2 Comedy, ...) and
            # nobody touched i901..i1000; a user's top new items share the genre of their top old one.
            new = [f"i{k}" for k in range(901, 1001)]
            for user in ["u1", "u2", "u3"]:
                top = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="demo-hybrid"), user_id=user, k=1,
                                               exclude_seen=True), timeout=10).items[0].item_id
                fresh = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="demo-hybrid"), user_id=user, k=5,
                                                 candidates=new), timeout=10)
                genre = (int(top[1:]) - 1) % 6
                same = sum((int(item.item_id[1:]) - 1) % 6 == genre for item in fresh.items)
                assert same >= 4, (user, top, [item.item_id for item in fresh.items])
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_gracefully_under_load(dataset, sig):
    server = Server(dataset["models"])
    user = (dataset["models"] / "movies" / "1" / "users.txt").read_text().splitlines()[0]
    outcomes = []
    lock = threading.Lock()
    stop = threading.Event()

    def client():
        with grpc.insecure_channel(server.target) as channel:
            stub = rpc.RecommenderStub(channel)
            while not stop.is_set():
                try:
                    stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="movies"), user_id=user, k=10), timeout=5)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()
                with lock:
                    outcomes.append(code)
                if code != grpc.StatusCode.OK:
                    time.sleep(0.01)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    with lock:
        before = len(outcomes)
    assert before > 0
    code = server.stop(sig)
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert code == 0
    # Every call either completed or was refused as UNAVAILABLE (the drain): none broke half way.
    # The one exception is gRPC core's: a call that reaches the server in the instant between its
    # GOAWAY and the client reading it is cancelled before any processing, at most one per client
    # here since each keeps one call in flight.
    assert set(outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, set(outcomes)
    assert outcomes.count(grpc.StatusCode.CANCELLED) <= len(threads)
    assert grpc.StatusCode.UNAVAILABLE in outcomes
    assert outcomes.count(grpc.StatusCode.OK) >= before
    # Once stopped, new calls are refused.
    with grpc.insecure_channel(server.target) as channel:
        with pytest.raises(grpc.RpcError) as error:
            rpc.RecommenderStub(channel).Rank(pb.RankRequest(model=pb.ModelSpec(name="movies"), user_id=user, k=3),
                                              timeout=2)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_metrics_endpoint_counts_calls_by_method_and_code(dataset):
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    server = Server(dataset["models"], "--metrics-port", str(metrics_port))
    try:
        user = (dataset["models"] / "movies" / "1" / "users.txt").read_text().splitlines()[0]
        with grpc.insecure_channel(server.target) as channel:
            stub = rpc.RecommenderStub(channel)
            for _ in range(5):
                stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="movies"), user_id=user, k=3), timeout=10)
            with pytest.raises(grpc.RpcError):
                stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="movies"), user_id=user, k=0), timeout=10)
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert 'recserve_rpc_calls_total{method="/recserve.v1.Recommender/Rank",code="OK"} 5' in text
        assert 'recserve_rpc_calls_total{method="/recserve.v1.Recommender/Rank",code="INVALID_ARGUMENT"} 1' in text
        assert 'recserve_rpc_latency_seconds_count{method="/recserve.v1.Recommender/Rank"} 6' in text
        assert 'recserve_model_serving_version{model="movies"} 1' in text
    finally:
        assert server.stop() == 0
