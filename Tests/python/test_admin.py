"""Issue 3, done-when 5 and the admin surface: with --admin-token-file every ModelAdmin method and
Recommender.Train need `authorization: Bearer <token>` (none: UNAUTHENTICATED, wrong:
PERMISSION_DENIED) while serving, health and reflection need nothing, and the token is never
logged; SetLabel / UnloadVersion / ReloadRepository happy paths and bad input; Train with
promote=true moves `stable` only when the new version is not worse.

One server for the module (tests run in file order and leave the shared models as they found them).
"""

import math
import re
import secrets
import shutil
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import rollout
from conftest import Server
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc
from rollout import bearer, clone, states, version_status, wait_for


class Env:
    pass


@pytest.fixture(scope="module")
def env(dataset, versions, tmp_path_factory):
    root = tmp_path_factory.mktemp("admin")
    models = root / "models"
    for name in ["movies", "spare"]:
        clone(versions[0], models / name, 1, name=name)
        clone(versions[1], models / name, 2, name=name)
    # A model with a version that fails verification from the start.
    clone(versions[0], models / "broken", 1, name="broken")
    staged = rollout.stage(versions[1], models / "broken", name="broken")
    rollout.corrupt_checksum(staged)
    rollout.publish(staged, 2)
    data_root = root / "data"
    data_root.mkdir()
    shutil.copy(dataset["data"], data_root / "ratings.csv")
    token = secrets.token_hex(24)
    token_file = root / "token"
    token_file.write_text(token + "\n")
    e = Env()
    e.models, e.token, e.versions = models, token, versions
    e.users = (versions[0] / "users.txt").read_text().split()
    e.items = (versions[0] / "items.txt").read_text().split()
    e.server = Server(models, "--admin-token-file", str(token_file), "--data-root", str(data_root),
                      log=root / "server.log")
    e.channel = grpc.insecure_channel(e.server.target)
    e.admin = rpc.ModelAdminStub(e.channel)
    e.stub = rpc.RecommenderStub(e.channel)
    e.auth = bearer(token)
    yield e
    e.channel.close()
    code = e.server.stop()
    assert code == 0, e.server.log_text()[-3000:]


def status_of(e, name):
    return e.admin.GetModelStatus(pb.GetModelStatusRequest(name=name), metadata=e.auth, timeout=10).status


def rank_version(e, name="movies", **selector):
    return e.stub.Rank(pb.RankRequest(model=pb.ModelSpec(name=name, **selector), user_id=e.users[0], k=3),
                       timeout=10).model_version


# ---------------------------------------------------------------------------------------------
# Authentication

# Each method: (call with metadata, check that a refused call changed nothing, restore after the
# call that was let through).

def _list_models(e, md):
    return e.admin.ListModels(pb.ListModelsRequest(), metadata=md, timeout=10)


def _get_model_status(e, md):
    return e.admin.GetModelStatus(pb.GetModelStatusRequest(name="movies"), metadata=md, timeout=10)


def _set_label(e, md):
    return e.admin.SetLabel(pb.SetLabelRequest(name="movies", label="auth-probe", version=1), metadata=md,
                            timeout=10)


def _set_label_unchanged(e):
    assert "auth-probe" not in status_of(e, "movies").labels


def _set_label_restore(e):
    e.admin.SetLabel(pb.SetLabelRequest(name="movies", label="auth-probe", version=0), metadata=e.auth, timeout=10)


def _unload(e, md):
    return e.admin.UnloadVersion(pb.UnloadVersionRequest(name="spare", version=1), metadata=md, timeout=10)


def _unload_unchanged(e):
    assert states(status_of(e, "spare"))[1] == "AVAILABLE"


def _unload_restore(e):
    assert states(status_of(e, "spare"))[1] == "UNLOADED"
    e.admin.ReloadRepository(pb.ReloadRepositoryRequest(), metadata=e.auth, timeout=60)
    wait_for(lambda: states(status_of(e, "spare")).get(1) == "AVAILABLE", what="spare version 1 to reload")


def _reload(e, md):
    return e.admin.ReloadRepository(pb.ReloadRepositoryRequest(), metadata=md, timeout=60)


def _train(e, md):
    return list(e.stub.Train(pb.TrainRequest(name="authtrain", kind="mf", data_path="ratings.csv", dim=4, epochs=2),
                             metadata=md, timeout=120))


def _train_unchanged(e):
    folder = e.models / "authtrain"
    assert not folder.exists() or not [p for p in folder.iterdir() if not p.name.startswith(".")], \
        "a refused Train published a version"


def _train_check(e):
    assert (e.models / "authtrain" / "1" / "model.json").exists()


METHODS = {
    "ListModels": (_list_models, None, None),
    "GetModelStatus": (_get_model_status, None, None),
    "SetLabel": (_set_label, _set_label_unchanged, _set_label_restore),
    "UnloadVersion": (_unload, _unload_unchanged, _unload_restore),
    "ReloadRepository": (_reload, None, None),
    "Train": (_train, _train_unchanged, _train_check),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_admin_methods_and_train_need_the_token(env, method):
    call, unchanged, after = METHODS[method]
    with pytest.raises(grpc.RpcError) as error:
        call(env, None)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED, (error.value.code(), error.value.details())
    wrong_tokens = ["not-the-token", env.token + "x", env.token[:-1], env.token.upper()]
    for wrong in wrong_tokens:
        with pytest.raises(grpc.RpcError) as error:
            call(env, bearer(wrong))
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED, (wrong, error.value.code(),
                                                                         error.value.details())
        assert env.token not in error.value.details()
    if unchanged:
        unchanged(env)
    result = call(env, env.auth)
    assert result is not None
    if after:
        after(env)
    assert env.server.alive()


def test_serving_health_and_reflection_need_no_token(env):
    assert rank_version(env) in (1, 2)
    predicted = env.stub.Predict(pb.PredictRequest(model=pb.ModelSpec(name="movies"),
                                                   pairs=[pb.UserItem(user_id=env.users[0], item_id=env.items[0])]),
                                 timeout=10)
    assert predicted.known[0]
    similar = env.stub.SimilarItems(pb.SimilarItemsRequest(model=pb.ModelSpec(name="movies"), item_id=env.items[0],
                                                           k=3), timeout=10)
    assert len(similar.items) == 3
    health = health_pb2_grpc.HealthStub(env.channel)
    for service in ["", "recserve.v1.Recommender", "recserve.v1.Recommender/movies", "recserve.v1.ModelAdmin"]:
        check = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING, service
    assert "recserve.v1.ModelAdmin" in set(ProtoReflectionDescriptorDatabase(env.channel).get_services())


def test_health_names_a_model_once_a_version_of_it_serves(env):
    health = health_pb2_grpc.HealthStub(env.channel)
    request = health_pb2.HealthCheckRequest(service="recserve.v1.Recommender/late")

    def late_status():
        try:
            return health.Check(request, timeout=10).status
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error
            return None

    assert late_status() != health_pb2.HealthCheckResponse.SERVING
    clone(env.versions[2], env.models / "late", 1, name="late")
    wait_for(lambda: late_status() == health_pb2.HealthCheckResponse.SERVING, timeout=20,
             what="health to report the new model SERVING")
    assert rank_version(env, name="late") == 1


# ---------------------------------------------------------------------------------------------
# SetLabel, UnloadVersion, ReloadRepository


def test_set_label_moves_what_serves_and_version_zero_removes_it(env):
    assert rank_version(env) == 2
    response = env.admin.SetLabel(pb.SetLabelRequest(name="movies", label="stable", version=1), metadata=env.auth,
                                  timeout=10)
    assert response.status.labels["stable"] == 1 and response.status.serving_version == 1
    assert "stable" in version_status(response.status, 1).labels
    assert rank_version(env) == 1
    assert rank_version(env, label="stable") == 1
    response = env.admin.SetLabel(pb.SetLabelRequest(name="movies", label="stable", version=0), metadata=env.auth,
                                  timeout=10)
    assert "stable" not in response.status.labels and response.status.serving_version == 2
    assert rank_version(env) == 2
    listed = {m.name: m for m in env.admin.ListModels(pb.ListModelsRequest(), metadata=env.auth, timeout=10).models}
    assert {"movies", "spare", "broken"} <= set(listed)
    assert listed["movies"].serving_version == 2


def test_unload_and_reload(env):
    def unload(version):
        return env.admin.UnloadVersion(pb.UnloadVersionRequest(name="spare", version=version), metadata=env.auth,
                                       timeout=10)

    assert rank_version(env, name="spare") == 2
    # Unloading the serving (highest, unlabelled) version: the other one serves from the next request.
    status = unload(2).status
    assert states(status)[2] == "UNLOADED" and status.serving_version == 1
    assert rank_version(env, name="spare") == 1
    with pytest.raises(grpc.RpcError) as error:
        rank_version(env, name="spare", version=2)
    assert error.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
    # The last available version cannot go.
    with pytest.raises(grpc.RpcError) as error:
        unload(1)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION, error.value.details()
    assert rank_version(env, name="spare") == 1
    # Not automatically reloaded by the poll; ReloadRepository brings it back.
    time.sleep(1.5)
    assert states(status_of(env, "spare"))[2] == "UNLOADED"
    response = env.admin.ReloadRepository(pb.ReloadRepositoryRequest(), metadata=env.auth, timeout=60)
    assert "spare" in {m.name for m in response.models}
    wait_for(lambda: states(status_of(env, "spare")) == {1: "AVAILABLE", 2: "AVAILABLE"}, timeout=20,
             what="both versions of spare to be AVAILABLE again")
    assert rank_version(env, name="spare") == 2
    # A labelled version cannot be unloaded.
    env.admin.SetLabel(pb.SetLabelRequest(name="spare", label="pinned", version=1), metadata=env.auth, timeout=10)
    with pytest.raises(grpc.RpcError) as error:
        unload(1)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION, error.value.details()
    assert "pinned" in error.value.details() or "label" in error.value.details()
    env.admin.SetLabel(pb.SetLabelRequest(name="spare", label="pinned", version=0), metadata=env.auth, timeout=10)
    assert states(status_of(env, "spare")) == {1: "AVAILABLE", 2: "AVAILABLE"}


def test_failed_version_reports_its_reason_and_cannot_be_labelled(env):
    status = status_of(env, "broken")
    failed = version_status(status, 2)
    assert failed.state == pb.FAILED and "checksum" in failed.reason
    assert status.serving_version == 1
    with pytest.raises(grpc.RpcError) as error:
        env.admin.SetLabel(pb.SetLabelRequest(name="broken", label="stable", version=2), metadata=env.auth,
                           timeout=10)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION, error.value.details()
    assert "stable" not in status_of(env, "broken").labels
    assert rank_version(env, name="broken") == 1


NAN = float("nan")
BAD_REQUESTS = [
    # (id, method, request, code, words the message must contain)
    ("status-unknown-model", "GetModelStatus", pb.GetModelStatusRequest(name="nosuch"),
     grpc.StatusCode.NOT_FOUND, ["nosuch"]),
    ("status-empty-name", "GetModelStatus", pb.GetModelStatusRequest(name=""),
     grpc.StatusCode.INVALID_ARGUMENT, ["name"]),
    ("label-unknown-model", "SetLabel", pb.SetLabelRequest(name="nosuch", label="stable", version=1),
     grpc.StatusCode.NOT_FOUND, ["nosuch"]),
    ("label-empty-model-name", "SetLabel", pb.SetLabelRequest(name="", label="stable", version=1),
     grpc.StatusCode.INVALID_ARGUMENT, ["name"]),
    ("label-empty", "SetLabel", pb.SetLabelRequest(name="movies", label="", version=1),
     grpc.StatusCode.INVALID_ARGUMENT, ["label"]),
    ("label-path", "SetLabel", pb.SetLabelRequest(name="movies", label="../up", version=1),
     grpc.StatusCode.INVALID_ARGUMENT, ["label"]),
    ("label-slash", "SetLabel", pb.SetLabelRequest(name="movies", label="a/b", version=1),
     grpc.StatusCode.INVALID_ARGUMENT, ["label"]),
    ("label-space", "SetLabel", pb.SetLabelRequest(name="movies", label="white space", version=1),
     grpc.StatusCode.INVALID_ARGUMENT, ["label"]),
    ("label-newline", "SetLabel", pb.SetLabelRequest(name="movies", label="new\nline", version=1),
     grpc.StatusCode.INVALID_ARGUMENT, ["label"]),
    ("canary-fraction-1.5", "SetLabel", pb.SetLabelRequest(name="movies", label="canary", version=2,
                                                           canary_fraction=1.5),
     grpc.StatusCode.INVALID_ARGUMENT, ["canary_fraction"]),
    ("canary-fraction-negative", "SetLabel", pb.SetLabelRequest(name="movies", label="canary", version=2,
                                                                canary_fraction=-0.1),
     grpc.StatusCode.INVALID_ARGUMENT, ["canary_fraction"]),
    ("canary-fraction-nan", "SetLabel", pb.SetLabelRequest(name="movies", label="canary", version=2,
                                                           canary_fraction=NAN),
     grpc.StatusCode.INVALID_ARGUMENT, ["canary_fraction"]),
    ("label-missing-version", "SetLabel", pb.SetLabelRequest(name="movies", label="stable", version=99),
     grpc.StatusCode.NOT_FOUND, ["99"]),
    ("label-negative-version", "SetLabel", pb.SetLabelRequest(name="movies", label="stable", version=-1),
     grpc.StatusCode.INVALID_ARGUMENT, ["version"]),
    ("remove-missing-label", "SetLabel", pb.SetLabelRequest(name="movies", label="never-set", version=0),
     grpc.StatusCode.NOT_FOUND, ["never-set"]),
    ("unload-unknown-model", "UnloadVersion", pb.UnloadVersionRequest(name="nosuch", version=1),
     grpc.StatusCode.NOT_FOUND, ["nosuch"]),
    ("unload-missing-version", "UnloadVersion", pb.UnloadVersionRequest(name="movies", version=99),
     grpc.StatusCode.NOT_FOUND, ["99"]),
]


@pytest.mark.parametrize("method,request_message,code,words", [b[1:] for b in BAD_REQUESTS],
                         ids=[b[0] for b in BAD_REQUESTS])
def test_bad_admin_requests(env, method, request_message, code, words):
    before = status_of(env, "movies")
    with pytest.raises(grpc.RpcError) as error:
        getattr(env.admin, method)(request_message, metadata=env.auth, timeout=10)
    assert error.value.code() == code, (error.value.code(), error.value.details())
    for word in words:
        assert word in error.value.details(), error.value.details()
    after = status_of(env, "movies")
    assert dict(after.labels) == dict(before.labels) and after.serving_version == before.serving_version
    assert after.canary_fraction == before.canary_fraction
    assert env.server.alive()


# ---------------------------------------------------------------------------------------------
# Metric-gated promotion

NUMBER = re.compile(r"\d+\.\d+")


def _train(env, **fields):
    messages = list(env.stub.Train(pb.TrainRequest(name="promo", kind="mf", data_path="ratings.csv", **fields),
                                   metadata=env.auth, timeout=300))
    final = messages[-1]
    assert final.done, messages
    return final


def test_train_promotes_only_a_version_that_is_not_worse(env):
    bad = dict(dim=1, epochs=1, learning_rate=1e-5)
    first = _train(env, seed=1, **bad)
    assert first.version == 1 and not first.promoted
    env.admin.SetLabel(pb.SetLabelRequest(name="promo", label="stable", version=1), metadata=env.auth, timeout=10)

    good = _train(env, seed=2, dim=8, epochs=20, promote=True)
    print(f"\ngood version: promoted={good.promoted}: {good.message}")
    assert good.version == 2
    assert good.promoted, good.message
    assert "rmse" in good.message.lower(), good.message
    assert len(NUMBER.findall(good.message)) >= 2, f"the message should give both values: {good.message}"
    assert "stable" in good.message.lower() or "version 1" in good.message, \
        f"the message should say what the new version was compared with: {good.message}"
    status = status_of(env, "promo")
    assert status.labels["stable"] == 2 and status.serving_version == 2
    assert env.stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="promo"), user_id=env.users[0], k=3),
                         timeout=10).model_version == 2

    worse = _train(env, seed=3, promote=True, **bad)
    print(f"worse version: promoted={worse.promoted}: {worse.message}")
    assert worse.version == 3
    assert not worse.promoted, worse.message
    assert "rmse" in worse.message.lower(), worse.message
    assert len(NUMBER.findall(worse.message)) >= 2, f"the message should give both values: {worse.message}"
    assert "stable" in worse.message.lower() or "version 2" in worse.message, \
        f"the message should say what the new version was compared with: {worse.message}"
    assert re.search(r"not promoted|worse|kept|keep|unchanged|stays", worse.message.lower()), worse.message
    assert math.isfinite(worse.metrics["rmse"]) and worse.metrics["rmse"] > good.metrics["rmse"]
    wait_for(lambda: states(status_of(env, "promo")).get(3) in ("AVAILABLE", "FAILED"), timeout=20,
             what="version 3 to be verified")
    status = status_of(env, "promo")
    assert states(status)[3] == "AVAILABLE"
    assert status.labels["stable"] == 2 and status.serving_version == 2
    assert env.stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="promo"), user_id=env.users[0], k=3),
                         timeout=10).model_version == 2


# ---------------------------------------------------------------------------------------------
# The token is never logged (last: it stops the server to read everything it wrote)


def test_train_promotes_implicit_models_by_a_ranking_metric(env):
    """bpr/als promotion compares NDCG@10 (or another ranking metric) of the new version and of
    the stable one on the new run's leave-last-out rows; higher is better."""
    def train(**fields):
        return _train_kind(env, name="promo-bpr", kind="bpr", **fields)

    bad = dict(dim=1, epochs=1, learning_rate=1e-5)
    first = train(seed=1, promote=True, **bad)
    assert first.version == 1 and first.promoted, first.message  # nothing to compare with
    good = train(seed=2, dim=16, epochs=30, learning_rate=0.05, promote=True, promote_metric="ndcg@10")
    print(f"\ngood bpr: promoted={good.promoted}: {good.message}")
    assert good.promoted, good.message
    assert "ndcg@10" in good.message and len(NUMBER.findall(good.message)) >= 2, good.message
    assert "version 1" in good.message and "leave-last-out" in good.message, good.message
    worse = train(seed=3, promote=True, promote_metric="hr@5", **bad)
    print(f"worse bpr: promoted={worse.promoted}: {worse.message}")
    assert not worse.promoted, worse.message
    assert "hr@5" in worse.message and "stays at version 2" in worse.message, worse.message
    assert "hr@5" in worse.metrics  # computed for the comparison
    assert status_of(env, "promo-bpr").labels["stable"] == 2

    # An ALS version is compared with the BPR stable version the same way (both rank items).
    als = _train_kind(env, name="promo-bpr", kind="als", dim=16, epochs=10, promote=True,
                      promote_tolerance=1.0)
    assert als.promoted and "tolerance 1.0000" in als.message, als.message
    assert status_of(env, "promo-bpr").labels["stable"] == als.version


@pytest.mark.parametrize("fields, needle", [
    (dict(promote_metric="rmse"), "promote_metric"),
    (dict(promote_metric="ndcg@0"), "promote_metric"),
    (dict(promote_metric="ndcg"), "promote_metric"),
    (dict(promote_tolerance=-1.0), "promote_tolerance"),
    (dict(holdout=0.0), "holdout"),
])
def test_implicit_promotion_rejects_bad_fields(env, fields, needle):
    with pytest.raises(grpc.RpcError) as error:
        _train_kind(env, name="promo-bad", kind="als", promote=True, **fields)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value
    assert needle in error.value.details(), error.value.details()


def _train_kind(env, name, kind, **fields):
    messages = list(env.stub.Train(pb.TrainRequest(name=name, kind=kind, data_path="ratings.csv", **fields),
                                   metadata=env.auth, timeout=300))
    final = messages[-1]
    assert final.done, messages
    return final


def test_the_token_never_appears_in_the_logs(env):
    # Right and wrong tokens once more, so that this test means something when run alone.
    env.admin.ListModels(pb.ListModelsRequest(), metadata=env.auth, timeout=10)
    for metadata in [bearer(env.token + "x"), bearer("Bearer " + env.token), None]:
        with pytest.raises(grpc.RpcError):
            env.admin.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=10)
    env.channel.close()
    assert env.server.stop() == 0
    stdout = env.server.process.stdout.read()
    stderr = env.server.log_text()
    assert stderr, "expected the server to log something"
    assert env.token not in stderr, "the admin token appears in the server's stderr"
    assert env.token not in stdout, "the admin token appears in the server's stdout"
    assert env.token[: len(env.token) // 2] not in stderr + stdout, "part of the admin token was logged"
