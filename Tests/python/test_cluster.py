"""Issue 14, done-when 1: three replicas on one model folder behind HAProxy (Scripts/cluster.py's
configuration: HTTP/2 to the replicas, gRPC health checks). Rank goes through the balancer at a
steady rate while every replica is restarted in turn (each drains first: health NOT_SERVING while
it still serves, so the balancer moves traffic away before the port closes) and then a new version
is promoted through one replica's ModelAdmin: no call fails, and every replica serves the new
version within two polls of the folder.
"""

import json
import socket
import sys
import time

import grpc

from conftest import REPO
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc
from rollout import RankLoad, clone, wait_for

sys.path.insert(0, str(REPO / "Scripts"))
import cluster  # noqa: E402

POLL = 0.5
DRAIN = 1.5
CHECK_MS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_version(target: str, user: str) -> int | None:
    with grpc.insecure_channel(target) as channel:
        try:
            return rpc.RecommenderStub(channel).Rank(
                pb.RankRequest(model=pb.ModelSpec(name="movies"), user_id=user, k=3), timeout=5).model_version
        except grpc.RpcError:
            return None


def test_rolling_restart_and_promotion_behind_haproxy_fail_no_call(versions, tmp_path):
    models = tmp_path / "models"
    clone(versions[0], models / "movies", 1)
    clone(versions[1], models / "movies", 2)
    (models / "movies" / "labels.json").write_text(json.dumps({"labels": {"stable": 1}}))
    users = (versions[0] / "users.txt").read_text().split()

    ports = [free_port() for _ in range(3)]
    extra = ("--poll-interval", str(POLL), "--drain-seconds", str(DRAIN), "--threads", "2")
    replicas = [cluster.Replica(models, p, *extra, log=tmp_path / f"replica-{p}.log") for p in ports]
    balancer = free_port()
    stats = str(tmp_path / "haproxy.sock")
    haproxy = None
    try:
        for r in replicas:
            r.start()
        haproxy = cluster.start_haproxy(
            cluster.haproxy_config(balancer, ports, "movies", CHECK_MS, stats_socket=stats), tmp_path)
        wait_for(lambda: all(cluster.servers_up(stats).values()) and len(cluster.servers_up(stats)) == 3,
                 timeout=20, what="all three replicas in rotation")
        target = f"127.0.0.1:{balancer}"
        assert served_version(target, users[0]) == 1

        with RankLoad(target, "movies", users, rate=100, threads=2) as load:
            time.sleep(1)
            for index, replica in enumerate(replicas):
                assert replica.stop() == 0, (tmp_path / f"replica-{replica.port}.log").read_text()
                replica.start()
                wait_for(lambda i=index: cluster.servers_up(stats).get(f"r{i}"), timeout=20,
                         what=f"replica r{index} back in rotation")
            time.sleep(0.5)
            with grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as channel:
                rpc.ModelAdminStub(channel).SetLabel(
                    pb.SetLabelRequest(name="movies", label="stable", version=2), timeout=30)
            promoted = time.monotonic()
            # Every replica answers from version 2 within two polls of the folder.
            for port in ports:
                wait_for(lambda p=port: served_version(f"127.0.0.1:{p}", users[1]) == 2, timeout=10,
                         interval=0.02, what=f"replica on {port} serving version 2")
            took = time.monotonic() - promoted
            time.sleep(1)

        calls = load.snapshot()
        failed = load.failures()
        assert not failed, f"{len(failed)} of {len(calls)} calls failed, e.g. {[(c.code, c.details) for c in failed[:3]]}"
        assert len(calls) > 500
        assert took <= 2 * POLL + 0.3, f"the last replica served version 2 after {took:.2f} s"
        assert any(c.version == 2 for c in calls[-50:]), "the balancer's answers never came from version 2"
    finally:
        for r in replicas:
            r.stop()
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(timeout=10)


def test_client_side_round_robin_over_replicas_spreads_calls_and_survives_a_restart(versions, tmp_path):
    """Clients that balance themselves: one grpcio channel over two replicas' addresses with the
    round_robin policy and gRPC's client-side health checking (the service config README gives)
    sends calls to both, and keeps every call succeeding while one replica drains, stops and comes
    back."""
    models = tmp_path / "models"
    clone(versions[0], models / "movies", 1)
    users = (versions[0] / "users.txt").read_text().split()
    ports = [free_port() for _ in range(2)]
    extra = ("--poll-interval", str(POLL), "--drain-seconds", str(DRAIN), "--threads", "2")
    replicas = [cluster.Replica(models, p, *extra, log=tmp_path / f"replica-{p}.log").start() for p in ports]
    try:
        target = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)
        options = [("grpc.service_config", json.dumps(cluster.CLIENT_SERVICE_CONFIG("movies"))),
                   # Reconnect to a restarted replica within a second (gRPC's default backoff
                   # grows to two minutes).
                   ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]
        with grpc.insecure_channel(target, options=options) as channel:
            stub = rpc.RecommenderStub(channel)
            request = pb.RankRequest(model=pb.ModelSpec(name="movies"), user_id=users[0], k=3)
            for _ in range(40):
                stub.Rank(request, timeout=5)

            def calls_on(port):
                with grpc.insecure_channel(f"127.0.0.1:{port}") as admin_channel:
                    status = rpc.ModelAdminStub(admin_channel).GetModelStatus(
                        pb.GetModelStatusRequest(name="movies"), timeout=5).status
                return sum(v.traffic.calls for v in status.versions)

            counts = [calls_on(p) for p in ports]
            assert sum(counts) == 40 and min(counts) >= 10, counts

            failures = []
            done = time.monotonic() + DRAIN + 3
            replicas[0].process.send_signal(15)
            while time.monotonic() < done:
                try:
                    stub.Rank(request, timeout=5)
                except grpc.RpcError as error:
                    failures.append((error.code(), error.details()))
                time.sleep(0.01)
            assert replicas[0].process.wait(timeout=30) == 0
            replicas[0].start()
            back = time.monotonic() + 10
            while calls_on(ports[0]) == 0 and time.monotonic() < back:
                for _ in range(20):
                    try:
                        stub.Rank(request, timeout=5)
                    except grpc.RpcError as error:
                        failures.append((error.code(), error.details()))
            assert not failures, failures[:3]
            assert calls_on(ports[0]) > 0, "no call reached the restarted replica in 10 s"
    finally:
        for r in replicas:
            r.stop()
