"""Issue 9: streams are bounded. 10,000 Health.Watch streams, opened from 100 connections, get at
most --max-streams handler threads; the rest are refused with RESOURCE_EXHAUSTED, and other calls
are served all the while."""

import pathlib
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import Server
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc

STREAMS = 10_000
CONNECTIONS = 100
MAX_STREAMS = 64


def threads_of(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_ten_thousand_watch_streams_are_bounded_and_other_calls_go_on(dataset, tmp_path):
    server = Server(dataset["models"], "--max-streams", str(MAX_STREAMS), log=tmp_path / "server.log")
    channels = [grpc.insecure_channel(server.target) for _ in range(CONNECTIONS)]
    calls = []
    try:
        baseline = threads_of(server.process.pid)
        request = health_pb2.HealthCheckRequest(service="recserve.v1.Recommender")
        for i in range(STREAMS):
            calls.append(health_pb2_grpc.HealthStub(channels[i % CONNECTIONS]).Watch(request, timeout=120))
        user = (dataset["models"] / "movies" / "1" / "users.txt").read_text().split()[0]
        with grpc.insecure_channel(server.target) as channel:
            stub = rpc.RecommenderStub(channel)
            # Other calls are answered while the streams arrive and are refused.
            deadline = time.monotonic() + 60
            slowest = 0.0
            while time.monotonic() < deadline:
                start = time.monotonic()
                response = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="movies"), user_id=user, k=5), timeout=5)
                slowest = max(slowest, time.monotonic() - start)
                assert len(response.items) == 5
                refused = sum(1 for c in calls if c.done())
                if refused >= STREAMS - MAX_STREAMS:
                    break
                time.sleep(0.05)
            peak = threads_of(server.process.pid)
        refused_calls = [c for c in calls if c.done()]
        codes = {c.code() for c in refused_calls}
        open_calls = [c for c in calls if not c.done()]
        print(f"\n{len(open_calls)} streams open, {len(refused_calls)} refused {codes}; threads {baseline} -> {peak}; "
              f"slowest Rank meanwhile {slowest * 1000:.0f} ms")
        assert codes <= {grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        assert len(open_calls) <= MAX_STREAMS
        assert len(refused_calls) >= STREAMS - MAX_STREAMS
        assert "--max-streams" in refused_calls[0].details()
        assert peak <= baseline + MAX_STREAMS + 8, f"{peak} threads for {STREAMS} streams (baseline {baseline})"
        # The open streams got their first status.
        assert next(open_calls[0]).status == health_pb2.HealthCheckResponse.SERVING
        # Once they end, their slots serve new streams.
        for c in open_calls:
            c.cancel()
        time.sleep(1.0)
        again = health_pb2_grpc.HealthStub(channels[0]).Watch(request, timeout=10)
        assert next(again).status == health_pb2.HealthCheckResponse.SERVING
        again.cancel()
    finally:
        for c in calls:
            c.cancel()
        for channel in channels:
            channel.close()
        assert server.stop() == 0, server.log_text()[-2000:]
