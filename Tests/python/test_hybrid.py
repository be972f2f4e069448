"""Issue 16: the hybrid (content + collaborative) model through the real binary and server.

A generated catalog with planted structure: every item has a genre and a title (a word tied to
its genre and noise words), every user a favourite genre most of their items come from, and a
share of the catalog nobody has touched (present only in the item feature file). The tests demand
that the served model rank a user's favourite-genre items first among those cold items, that
`AddItems` adds items to a serving version under load with zero failed calls (rankable on the next
request, still there after a restart, picked up from the folder by another server), and that bad
feature files and bad AddItems requests get errors naming what is wrong.
"""

import json
import random
import threading
import time

import grpc
import pytest

from conftest import Server, run_cli
from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc

GENRES = ["action", "comedy", "drama", "horror", "scifi", "romance"]


def planted(root, users=120, items=300, cold_share=0.15, per_user=25, seed=7):
    """Writes ratings.csv (interactions with warm items only) and items.csv (every item's genres
    and title); returns the folder's facts."""
    rng = random.Random(seed)
    genre = {f"m{i}": rng.randrange(len(GENRES)) for i in range(items)}
    cold = {f"m{i}" for i in range(items) if rng.random() < cold_share}
    warm_by_genre = [[m for m, g in genre.items() if g == k and m not in cold] for k in range(len(GENRES))]
    favourite = {}
    rows = []
    for u in range(users):
        g = rng.randrange(len(GENRES))
        favourite[f"u{u}"] = g
        for t in range(per_user):
            pool = warm_by_genre[g] if rng.random() < 0.85 else warm_by_genre[rng.randrange(len(GENRES))]
            rows.append(f"u{u},{rng.choice(pool)},{rng.choice([3, 4, 5])},{1000 + t}")
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    lines = ["movieId,title,genres"]
    for m, g in genre.items():
        title = f"{GENRES[g]}word {rng.choice(['the', 'a', 'night', 'day', 'city'])} {m}"
        second = GENRES[(g + 1) % len(GENRES)] if rng.random() < 0.2 else None
        genres = GENRES[g].capitalize() + (f"|{second.capitalize()}" if second else "")
        lines.append(f'"{title}",{genres}'.join([f"{m},", ""]))
    (root / "items.csv").write_text("\n".join(lines) + "\n")
    return {"genre": genre, "cold": sorted(cold), "favourite": favourite}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("hybrid")
    facts = planted(root)
    models = root / "models"
    out = run_cli("train", "--data", root / "ratings.csv", "--kind", "hybrid", "--item-features", root / "items.csv",
                  "--name", "shop", "--models", models, "--dim", 16, "--epochs", 15, "--split", "none",
                  "--threads", 1, "--json")
    facts.update(root=root, models=models, train=json.loads(out.stdout))
    return facts


def cold_precision(stub, facts, users, model="shop", k=5, candidates=None):
    """Mean over `users` of the share of their top k among `candidates` (default: the cold items)
    in their favourite genre."""
    candidates = candidates or facts["cold"]
    total = 0.0
    for user in users:
        reply = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name=model), user_id=user, k=k, candidates=candidates),
                          timeout=10)
        hits = sum(facts["genre"].get(item.item_id, -1) == facts["favourite"][user] for item in reply.items)
        total += hits / k
    return total / len(users)


def test_features_cli_reads_the_catalog_as_a_user_would(catalog):
    out = run_cli("features", catalog["root"] / "items.csv", "--json")
    report = json.loads(out.stdout)
    types = {c["name"]: c["type"] for c in report["columns"]}
    assert types == {"title": "text", "genres": "multi"}
    assert report["rows"] == 300


def test_training_publishes_every_item_of_the_feature_file(catalog):
    train = catalog["train"]
    assert train["kind"] == "hybrid"
    assert train["items"] == 300, "items only in the feature file join the model"
    version = catalog["models"] / "shop" / "1"
    manifest = json.loads((version / "model.json").read_text())
    for name in ["item_features.json", "item_features.vocab.txt", "item_features.safetensors",
                 "item_feature_embeddings.safetensors"]:
        assert name in manifest["files"], name
    assert manifest["hyperparameters"]["loss"] == "warp"


def test_cold_items_of_a_users_taste_rank_first_through_the_server(catalog):
    server = Server(catalog["models"])
    try:
        stub = rpc.RecommenderStub(grpc.insecure_channel(server.target))
        users = sorted(catalog["favourite"])[:60]
        precision = cold_precision(stub, catalog, users)
        # Chance is about 1/6; only the features tell these items apart.
        assert precision > 0.6, precision
        # SimilarItems for an item nobody touched: its feature vector finds its genre.
        item = catalog["cold"][0]
        similar = stub.SimilarItems(pb.SimilarItemsRequest(model=pb.ModelSpec(name="shop"), item_id=item, k=5))
        same = sum(catalog["genre"][s.item_id] == catalog["genre"][item] for s in similar.items)
        assert same >= 3, [(s.item_id, catalog["genre"][s.item_id]) for s in similar.items]
    finally:
        assert server.stop() == 0


def new_items(count, genre, prefix):
    name = GENRES[genre]
    return [pb.NewItem(id=f"{prefix}{k}", features={"genres": name.capitalize(), "title": f"{name}word night {prefix}{k}"})
            for k in range(count)]


def test_add_items_under_load_then_restart(catalog, tmp_path):
    models = tmp_path / "models"
    run_cli("train", "--data", catalog["root"] / "ratings.csv", "--kind", "hybrid", "--item-features",
            catalog["root"] / "items.csv", "--name", "shop", "--models", models, "--dim", 16, "--epochs", 15,
            "--split", "none", "--threads", 1)
    server = Server(models, "--poll-interval", "0.5")
    channel = grpc.insecure_channel(server.target)
    stub, admin = rpc.RecommenderStub(channel), rpc.ModelAdminStub(channel)
    users = sorted(catalog["favourite"])
    failures, calls, stop = [], [0], threading.Event()

    def load():
        rng = random.Random(3)
        while not stop.is_set():
            try:
                stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="shop"), user_id=rng.choice(users), k=10), timeout=10)
                calls[0] += 1
            except grpc.RpcError as error:
                failures.append(f"{error.code()}: {error.details()}")

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        added = []
        for batch in range(4):
            items = new_items(5, batch % len(GENRES), f"new{batch}-")
            reply = admin.AddItems(pb.AddItemsRequest(model=pb.ModelSpec(name="shop"), items=items), timeout=30)
            assert reply.added == 5 and reply.model_version == 1
            added += [i.id for i in items]
            assert reply.item_count == 300 + len(added)
            # Rankable on the very next request.
            ranked = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="shop"), user_id=users[0], k=5,
                                              candidates=[i.id for i in items]), timeout=10)
            assert sorted(i.item_id for i in ranked.items) == sorted(i.id for i in items)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and calls[0] > 20, (failures[:5], calls[0])

    # The new items follow the planted taste: a user who likes genre g gets the new genre-g items
    # first among all added ones.
    for batch in range(4):
        fans = [u for u in users if catalog["favourite"][u] == batch % len(GENRES)][:5]
        facts = dict(catalog, genre={**catalog["genre"], **{i: b % len(GENRES) for b in range(4)
                                                             for i in [f"new{b}-{k}" for k in range(5)]}})
        assert cold_precision(stub, facts, fans, candidates=added) > 0.6

    # A retried call is a no-op; a changed item is refused and nothing of its call is applied.
    again = admin.AddItems(pb.AddItemsRequest(model=pb.ModelSpec(name="shop"), items=new_items(5, 0, "new0-")))
    assert again.added == 0 and sorted(again.already_present) == sorted(f"new0-{k}" for k in range(5))
    with pytest.raises(grpc.RpcError) as error:
        admin.AddItems(pb.AddItemsRequest(model=pb.ModelSpec(name="shop"),
                                          items=new_items(1, 3, "fresh-") + new_items(1, 2, "new0-")))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "new0-0" in error.value.details() and "other features" in error.value.details()
    def ranks(item):
        """Whether the model has `item` (Rank passes over candidates it does not know)."""
        reply = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="shop"), user_id=users[0], k=1, candidates=[item]))
        return [i.item_id for i in reply.items] == [item]

    assert not ranks("fresh-0")

    # An admin appending a line to the version's file: the poller picks it up.
    line = {"id": "dropped-1", "features": {"genres": "Horror", "title": "horrorword city"}}
    with open(models / "shop" / "1" / "added_items.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    deadline = time.monotonic() + 15
    while not ranks("dropped-1"):
        assert time.monotonic() < deadline, "the appended item never served"
        time.sleep(0.2)

    assert server.stop() == 0
    # After a restart every added item is still there.
    server = Server(models)
    try:
        stub = rpc.RecommenderStub(grpc.insecure_channel(server.target))
        ranked = stub.Rank(pb.RankRequest(model=pb.ModelSpec(name="shop"), user_id=users[0], k=50,
                                          candidates=added + ["dropped-1"]))
        assert len(ranked.items) == len(added) + 1
    finally:
        assert server.stop() == 0


def test_add_items_bad_input_is_named(catalog, dataset, tmp_path):
    models = tmp_path / "models"
    run_cli("train", "--data", catalog["root"] / "ratings.csv", "--kind", "hybrid", "--item-features",
            catalog["root"] / "items.csv", "--name", "shop", "--models", models, "--dim", 8, "--epochs", 2,
            "--split", "none", "--threads", 1)
    run_cli("train", "--data", dataset["data"], "--kind", "mf", "--name", "plain", "--models", models,
            "--dim", 4, "--epochs", 2)
    server = Server(models)
    admin = rpc.ModelAdminStub(grpc.insecure_channel(server.target))
    shop = pb.ModelSpec(name="shop")
    cases = [
        (pb.AddItemsRequest(model=shop), grpc.StatusCode.INVALID_ARGUMENT, "items is empty"),
        (pb.AddItemsRequest(items=new_items(1, 0, "x")), grpc.StatusCode.INVALID_ARGUMENT, "model.name"),
        (pb.AddItemsRequest(model=pb.ModelSpec(name="plain"), items=new_items(1, 0, "x")),
         grpc.StatusCode.FAILED_PRECONDITION, "only hybrid versions"),
        (pb.AddItemsRequest(model=pb.ModelSpec(name="nope"), items=new_items(1, 0, "x")),
         grpc.StatusCode.NOT_FOUND, "'nope'"),
        (pb.AddItemsRequest(model=shop, items=[pb.NewItem(id="a"), pb.NewItem(id="a")]),
         grpc.StatusCode.INVALID_ARGUMENT, "items[1]: id 'a' appears twice"),
        (pb.AddItemsRequest(model=shop, items=[pb.NewItem(id="")]), grpc.StatusCode.INVALID_ARGUMENT,
         "items[0]: the id is empty"),
        (pb.AddItemsRequest(model=shop, items=[pb.NewItem(id="bad\nid")]), grpc.StatusCode.INVALID_ARGUMENT,
         "line break"),
        (pb.AddItemsRequest(model=shop, items=[pb.NewItem(id="m1")]), grpc.StatusCode.FAILED_PRECONDITION,
         "item 'm1' is already in version 1"),
        (pb.AddItemsRequest(model=shop, items=[pb.NewItem(id="z", features={"colour": "red"})]),
         grpc.StatusCode.INVALID_ARGUMENT, "no feature column 'colour'"),
        (pb.AddItemsRequest(model=pb.ModelSpec(name="shop", version=9), items=new_items(1, 0, "x")),
         grpc.StatusCode.NOT_FOUND, "no version 9"),
        (pb.AddItemsRequest(model=shop, items=new_items(10_001, 0, "many")), grpc.StatusCode.INVALID_ARGUMENT,
         "at most 10000"),
    ]
    try:
        for request, code, words in cases:
            with pytest.raises(grpc.RpcError) as error:
                admin.AddItems(request, timeout=30)
            assert error.value.code() == code, (words, error.value.details())
            assert words in error.value.details(), (words, error.value.details())
        # Nothing of a refused call reached the folder.
        assert not (models / "shop" / "1" / "added_items.jsonl").exists()
    finally:
        assert server.stop() == 0


def test_a_broken_added_items_file_fails_the_version_by_name(catalog, tmp_path):
    models = tmp_path / "models"
    run_cli("train", "--data", catalog["root"] / "ratings.csv", "--kind", "hybrid", "--item-features",
            catalog["root"] / "items.csv", "--name", "shop", "--models", models, "--dim", 8, "--epochs", 2,
            "--split", "none", "--threads", 1)
    (models / "shop" / "1" / "added_items.jsonl").write_text('{"id": "ok", "features": {}}\n{"id": 5}\n')
    server = Server(models)
    try:
        admin = rpc.ModelAdminStub(grpc.insecure_channel(server.target))
        status = admin.GetModelStatus(pb.GetModelStatusRequest(name="shop")).status
        version = status.versions[0]
        assert version.state == pb.FAILED
        assert "added_items.jsonl:2" in version.reason and "'id'" in version.reason, version.reason
    finally:
        assert server.stop() == 0


def test_bad_feature_files_are_named(catalog, dataset, tmp_path):
    data = catalog["root"] / "ratings.csv"

    def train(features, *extra):
        path = tmp_path / "items.csv"
        path.write_text(features)
        return run_cli("train", "--data", data, "--kind", "hybrid", "--item-features", path, "--name", "x",
                       "--models", tmp_path / "models", "--epochs", 1, *extra, check=False)

    cases = [
        ("movieId,title\n1,A\n1,B\n", [], "items.csv:3", "duplicate id '1'"),
        ("", [], "items.csv", "empty"),
        ("movieId\n1\n2\n", [], "items.csv", "feature"),
        ("movieId,genres\n1,Action\n2,Comedy\n", ["--feature-types", "genres:colour"], "--feature-types",
         "unknown column type 'colour'"),
        ("movieId,genres\n1,\n2,\n", [], "items.csv", "genres"),
        ("itemId,genres\nzz1,Action\nzz2,Comedy\n", [], "items.csv", "another model"),
    ]
    for text, extra, where, words in cases:
        result = train(text, *extra)
        assert result.returncode != 0, text
        assert where in result.stderr and words in result.stderr, (text, result.stderr)
    missing = run_cli("train", "--data", data, "--kind", "hybrid", "--name", "x", "--models", tmp_path / "m",
                      check=False)
    assert missing.returncode != 0 and "--item-features" in missing.stderr
    wrong_kind = run_cli("train", "--data", data, "--kind", "bpr", "--item-features", "x.csv", "--name", "x",
                         "--models", tmp_path / "m", check=False)
    assert wrong_kind.returncode != 0 and "--item-features is for --kind hybrid" in wrong_kind.stderr


def test_train_rpc_trains_a_hybrid_version(catalog, tmp_path):
    import shutil

    models, data_root = tmp_path / "models", tmp_path / "data"
    data_root.mkdir()
    shutil.copy(catalog["root"] / "ratings.csv", data_root / "ratings.csv")
    shutil.copy(catalog["root"] / "items.csv", data_root / "items.csv")
    server = Server(models, "--data-root", str(data_root))
    stub = rpc.RecommenderStub(grpc.insecure_channel(server.target))
    try:
        request = pb.TrainRequest(name="shop", kind="hybrid", data_path="ratings.csv", item_features_path="items.csv",
                                  dim=8, epochs=3, loss="bpr")
        final = list(stub.Train(request, timeout=120))[-1]
        assert final.done and final.version == 1 and final.metrics["ndcg@10"] > 0
        for bad, code, words in [
            (pb.TrainRequest(name="s", kind="hybrid", data_path="ratings.csv"), grpc.StatusCode.INVALID_ARGUMENT,
             "item_features_path"),
            (pb.TrainRequest(name="s", kind="hybrid", data_path="ratings.csv", item_features_path="../x.csv"),
             grpc.StatusCode.PERMISSION_DENIED, "item_features_path '../x.csv' lies outside"),
            (pb.TrainRequest(name="s", kind="hybrid", data_path="ratings.csv", item_features_path="items.csv",
                             loss="hinge"), grpc.StatusCode.INVALID_ARGUMENT, "loss must be warp or bpr"),
            (pb.TrainRequest(name="s", kind="bpr", data_path="ratings.csv", item_features_path="items.csv"),
             grpc.StatusCode.INVALID_ARGUMENT, "item_features_path does not apply to kind bpr"),
            (pb.TrainRequest(name="s", kind="hybrid", data_path="ratings.csv", item_features_path="ratings.csv"),
             grpc.StatusCode.INVALID_ARGUMENT, "item_features_path"),
        ]:
            with pytest.raises(grpc.RpcError) as error:
                list(stub.Train(bad, timeout=60))
            assert error.value.code() == code, (words, error.value.details())
            assert words in error.value.details(), (words, error.value.details())
    finally:
        assert server.stop() == 0


def test_models_add_items_cli_sends_a_feature_file_in_batches(catalog, tmp_path):
    models = tmp_path / "models"
    run_cli("train", "--data", catalog["root"] / "ratings.csv", "--kind", "hybrid", "--item-features",
            catalog["root"] / "items.csv", "--name", "shop", "--models", models, "--dim", 8, "--epochs", 2,
            "--split", "none", "--threads", 1)
    new = tmp_path / "new.csv"
    new.write_text("movieId,title,genres\n" + "".join(f'n{k},"comedyword day n{k}",Comedy\n' for k in range(7)))
    server = Server(models)
    try:
        args = ("models", "add-items", "shop", new, "--target", server.target, "--batch", 3)
        first = run_cli(*args)
        assert "added 7 items (0 were there already); 307 items now" in first.stdout, first.stdout
        again = run_cli(*args)
        assert "added 0 items (7 were there already)" in again.stdout, again.stdout
        bad = tmp_path / "bad.csv"
        bad.write_text("movieId,colour\nq1,red\n")
        refused = run_cli("models", "add-items", "shop", bad, "--target", server.target, check=False)
        assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr and "'colour'" in refused.stderr
        broken = tmp_path / "broken.csv"
        broken.write_text("movieId,title\nq1,a\nq1,b\n")
        refused = run_cli("models", "add-items", "shop", broken, "--target", server.target, check=False)
        assert refused.returncode == 1 and "broken.csv:3" in refused.stderr
    finally:
        assert server.stop() == 0


def test_user_features_and_tune_train_through_the_cli(catalog, tmp_path):
    users = tmp_path / "users.csv"
    # A user feature that tells the favourite genre: the hybrid trains with it and still ranks.
    users.write_text("userId,taste\n" + "".join(f"{u},{GENRES[g]}\n" for u, g in catalog["favourite"].items()))
    models = tmp_path / "models"
    out = run_cli("train", "--data", catalog["root"] / "ratings.csv", "--kind", "hybrid", "--item-features",
                  catalog["root"] / "items.csv", "--user-features", users, "--name", "shop", "--models", models,
                  "--dim", 8, "--epochs", 4, "--threads", 1, "--json")
    summary = json.loads(out.stdout)
    assert summary["hyperparameters"]["user_features"].endswith("users.csv")
    assert summary["metrics"]["ndcg@10"] > 0
    tuned = run_cli("train", "--data", catalog["root"] / "ratings.csv", "--kind", "hybrid", "--item-features",
                    catalog["root"] / "items.csv", "--name", "tuned", "--models", models, "--dim", 8,
                    "--epochs", 3, "--threads", 1, "--tune", 3, "--json")
    tuning = json.loads(tuned.stdout)["tuning"]
    assert len(tuning["trials"]) == 3 and "identity_weight" in tuning["trials"][0]["settings"], tuning
    refused = run_cli("train", "--data", catalog["root"] / "ratings.csv", "--kind", "hybrid", "--item-features",
                      catalog["root"] / "items.csv", "--user-feature-types", "taste:text", "--name", "x",
                      "--models", models, check=False)
    assert refused.returncode != 0 and "--user-feature-types needs --user-features" in refused.stderr


def test_gen_data_writes_a_catalog_the_hybrid_learns(tmp_path):
    ratings, items = tmp_path / "ratings.csv", tmp_path / "items.csv"
    out = run_cli("gen-data", "--kind", "catalog", "--users", 300, "--items", 240, "--out", ratings,
                  "--features-out", items, "--seed", 5)
    assert "24 without interactions" in out.stdout, out.stdout
    header, *rows = items.read_text().splitlines()
    assert header == "item_id,title,genres" and len(rows) == 240
    again = tmp_path / "again.csv"
    run_cli("gen-data", "--kind", "catalog", "--users", 300, "--items", 240, "--out", again,
            "--features-out", tmp_path / "items2.csv", "--seed", 5)
    assert again.read_bytes() == ratings.read_bytes(), "the same seed writes the same file"
    models = tmp_path / "models"
    run_cli("train", "--data", ratings, "--kind", "hybrid", "--item-features", items, "--name", "c",
            "--models", models, "--dim", 16, "--epochs", 10, "--split", "none", "--threads", 1)
    assert len((models / "c" / "1" / "items.txt").read_text().split()) == 240
    missing = run_cli("gen-data", "--kind", "catalog", "--users", 3, "--items", 20, "--out", ratings, check=False)
    assert missing.returncode != 0 and "--features-out" in missing.stderr
