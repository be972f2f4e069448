"""Issue 14, done-when 2: factor models trained elsewhere (Spark MLlib's ALS, plain numpy arrays)
exported with Scripts/export_factors.py serve through RecServe exactly as their trainer scores
them. pyspark runs in local mode; the same exporter reads a cluster's model a partition at a time.
"""

import sys

import grpc
import numpy as np
import pytest

from conftest import REPO, Server, run_cli
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc

sys.path.insert(0, str(REPO / "Scripts"))
import export_factors  # noqa: E402
from export_sasrec import ExportError  # noqa: E402


def rank_all(server, model, users, k=10):
    with grpc.insecure_channel(server.target) as channel:
        stub = rpc.RecommenderStub(channel)
        out = {}
        for user in users:
            response = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name=model), user_id=str(user), k=k), timeout=10)
            out[str(user)] = [(i.item_id, i.score) for i in response.items]
        return out


def assert_same_top(expected, served, user):
    """Same items in the same order and scores within 1e-4; two items whose scores differ by less
    than 1e-5 may come in either order."""
    assert len(served) == len(expected), (user, served, expected)
    for (want_item, want_score), (got_item, got_score) in zip(expected, served):
        assert abs(want_score - got_score) <= 1e-4, (user, want_item, want_score, got_item, got_score)
        if want_item != got_item:
            scores = dict(expected)
            assert got_item in scores and abs(scores[got_item] - want_score) < 1e-5, (user, expected, served)


def test_numpy_factors_serve_their_dot_products(tmp_path):
    rng = np.random.default_rng(7)
    users = [f"user-{u}" for u in range(40)]
    items = [f"item-{i}" for i in range(120)]
    uf = rng.normal(size=(40, 6)).astype(np.float32)
    itf = rng.normal(size=(120, 6)).astype(np.float32)
    path = export_factors.from_numpy(users, uf, items, itf, tmp_path / "models", "plain")
    assert path.name == "1"
    server = Server(tmp_path / "models")
    try:
        served = rank_all(server, "plain", users)
    finally:
        assert server.stop() == 0
    scores = uf @ itf.T
    for u, user in enumerate(users):
        top = np.argsort(-scores[u], kind="stable")[:10]
        assert_same_top([(items[i], float(scores[u, i])) for i in top], served[user], user)


@pytest.mark.parametrize("case", ["nan", "shape", "duplicate", "count"])
def test_bad_factors_are_refused_by_name_and_nothing_is_published(tmp_path, case):
    users, items = ["a", "b"], ["x", "y"]
    uf, itf = np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)
    models = tmp_path / "models"
    if case == "nan":
        uf[1, 2] = np.nan
        with pytest.raises(ExportError, match="user 'b' has non-finite factors"):
            export_factors.from_numpy(users, uf, items, itf, models, "m")
    elif case == "shape":
        with pytest.raises(ExportError, match=r"item 'y' has a vector of shape \[2\]; expected \[3\]"):
            export_factors.export_rows(models, "m", zip(users, uf), 2, [("x", [1, 2, 3]), ("y", [1, 2])], 2, 3)
    elif case == "duplicate":
        with pytest.raises(ExportError, match="item id 'x' occurs twice"):
            export_factors.from_numpy(users, uf, ["x", "x"], itf, models, "m")
    else:
        with pytest.raises(ExportError, match="1 item rows arrived but 2 were counted"):
            export_factors.export_rows(models, "m", zip(users, uf), 2, [("x", [1, 2, 3])], 2, 3)
    left = list((models / "m").iterdir()) if (models / "m").exists() else []
    assert left == [], left


def test_spark_als_exported_ranks_like_recommend_for_all_users(tmp_path):
    from pyspark.ml.recommendation import ALS  # noqa: PLC0415
    from pyspark.sql import SparkSession  # noqa: PLC0415

    data = tmp_path / "ratings.csv"
    run_cli("gen-data", "--users", 150, "--items", 90, "--density", 0.1, "--out", data, "--seed", 5)
    rows = []
    for line in data.read_text().splitlines()[1:]:
        user, item, rating, _ = line.split(",")
        rows.append((int(user[1:]), int(item[1:]), float(rating)))

    spark = (SparkSession.builder.master("local[2]").appName("recserve-test")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
             .config("spark.driver.memory", "1g").getOrCreate())
    try:
        frame = spark.createDataFrame(rows, ["user", "item", "rating"]).repartition(3)
        model = ALS(rank=8, maxIter=6, regParam=0.05, implicitPrefs=True, alpha=2.0, seed=3,
                    userCol="user", itemCol="item", ratingCol="rating").fit(frame)
        path = export_factors.from_spark_als(model, tmp_path / "models", "spark")
        expected = {str(r["user"]): [(str(x["item"]), float(x["rating"])) for x in r["recommendations"]]
                    for r in model.recommendForAllUsers(10).collect()}
    finally:
        spark.stop()
    assert (path / "model.json").exists()
    assert len(expected) == len((path / "users.txt").read_text().split())

    server = Server(tmp_path / "models")
    try:
        served = rank_all(server, "spark", expected.keys())
    finally:
        assert server.stop() == 0
    for user, top in expected.items():
        assert_same_top(top, served[user], user)
