"""Issue 14, done-when 3: servers that share one model folder never lose each other's label
writes. Two `recserve serve` processes on the same folder each set a different label at the same
moment, 100 times; labels.json ends with all 200, and both servers report all of them within a
poll.
"""

import json
import threading

import grpc

from conftest import Server
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc
from rollout import clone, wait_for

ROUNDS = 100
POLL = 0.2


def test_two_replicas_setting_labels_at_the_same_moment_lose_no_write(versions, tmp_path):
    models = tmp_path / "models"
    for number, source in enumerate(versions, start=1):
        clone(source, models / "movies", number)
    replicas = [Server(models, "--poll-interval", str(POLL)) for _ in range(2)]
    channels = [grpc.insecure_channel(r.target) for r in replicas]
    try:
        admins = [rpc.ModelAdminStub(c) for c in channels]
        barrier = threading.Barrier(2)
        failures = []
        expected = {}
        for i in range(ROUNDS):
            for side in ("a", "b"):
                expected[f"{side}{i}"] = 1 + (i + (side == "b")) % 3

        def writer(side, admin):
            for i in range(ROUNDS):
                label = f"{side}{i}"
                barrier.wait(timeout=30)
                try:
                    admin.SetLabel(pb.SetLabelRequest(name="movies", label=label, version=expected[label]),
                                   timeout=30)
                except grpc.RpcError as error:
                    failures.append(f"{label}: {error.code()} {error.details()}")

        threads = [threading.Thread(target=writer, args=(side, admin)) for side, admin in zip("ab", admins)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not failures, failures[:5]

        written = json.loads((models / "movies" / "labels.json").read_text())["labels"]
        lost = sorted(set(expected) - set(written))
        assert not lost, f"{len(lost)} of {len(expected)} label writes were lost, e.g. {lost[:5]}"
        assert {k: written[k] for k in expected} == expected

        # Each server reads the other's writes at its next poll.
        for admin in admins:
            wait_for(lambda admin=admin: dict(admin.GetModelStatus(
                pb.GetModelStatusRequest(name="movies"), timeout=10).status.labels) == written,
                timeout=4 * POLL + 2, what="the replica's labels matching labels.json")
    finally:
        for c in channels:
            c.close()
        for r in replicas:
            assert r.stop() == 0, r.log_text()
