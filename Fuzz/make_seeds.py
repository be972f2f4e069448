#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (Fuzz/Corpus/<target>/), committed with the repository.

Run once after a change to what the targets read (a new RPC, a new model file):

    swift build --product recserve && python3 Fuzz/make_seeds.py

Needs grpcio-tools (the RPC seeds are messages of Protos/recserve/v1/recserve.proto). The model
seeds come from tiny models that `recserve train` publishes from `recserve gen-data` files.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPUS = REPO / "Fuzz" / "Corpus"
MARKER = b"\x00\x00RSF\x00"  # FuzzFiles.marker


def recserve(*args):
    binary = os.environ.get("RECSERVE_BIN", str(REPO / ".build" / "debug" / "recserve"))
    subprocess.run([binary, *map(str, args)], check=True, capture_output=True)


def write(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def ratings_seeds():
    files = {
        # (options byte, text): the byte picks delimiter, header and columns (FuzzRatings.options)
        "csv-header": (0, b"userId,movieId,rating,timestamp\n1,10,4.0,964982703\n1,20,3.5,964981247\n2,10,5,964982224\n"),
        "udata-tabs": (0, b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"),
        "ml1m-colons": (4, b"1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"),
        "implicit-two-columns": (2, b"user_id,item_id\nu1,i1\nu1,i2\nu2,i1\n"),
        "skip-bad-lines": (1, b"user,item,rating\nu1,i1,4\nu2,i2,not-a-number\nu3,,5\nu4,i4,nan\n"),
        "quoted-named-columns": (0x80 | 2, b'"user","item","rating","time"\n"a,b","x",1,5\n"c","y",2,6\n'),
        "spaces": (0, b"u1  i1  4.5  100\nu2  i2  3  200\n"),
        "semicolons-crlf": (0, b"user;item;rating\r\nu1;i1;4\r\nu2;i2;5\r\n"),
    }
    for name, (byte, text) in files.items():
        write("FuzzRatings", name, bytes([byte]) + text)


def model_seeds(work):
    ratings = work / "ratings.csv"
    sequences = work / "sequences.csv"
    recserve("gen-data", "--users", 12, "--items", 15, "--density", 0.4, "--out", ratings, "--seed", 3)
    recserve("gen-data", "--kind", "sequences", "--users", 10, "--items", 12, "--chain-length", 4,
             "--events", "5-7", "--out", sequences, "--seed", 3)
    # Item features for the hybrid seed: a genre and a title per item, and one item only here.
    features = work / "items.csv"
    items = sorted({line.split(",")[1] for line in ratings.read_text().splitlines()[1:] if line})
    features.write_text("item,genre,title,year\n" + "".join(
        f"{item},g{k % 3}|g{(k + 1) % 3},\"word{k % 4} the {item}\",{1990 + k}\n"
        for k, item in enumerate(items + ["only-in-features"])))
    models = work / "models"
    runs = {
        "mf": ["--data", ratings, "--kind", "mf", "--dim", 3, "--epochs", 2],
        "bpr": ["--data", ratings, "--kind", "bpr", "--dim", 3, "--epochs", 2],
        "als": ["--data", ratings, "--kind", "als", "--dim", 3, "--epochs", 2],
        "sasrec": ["--data", sequences, "--kind", "sasrec", "--dim", 4, "--heads", 2, "--maxlen", 4,
                   "--blocks", 1, "--epochs", 1],
        "hybrid": ["--data", ratings, "--kind", "hybrid", "--item-features", features, "--dim", 3,
                   "--epochs", 1],
    }
    hybrid_files = ["item_features.json", "item_features.vocab.txt", "item_features.ids.txt",
                    "item_features.safetensors", "item_feature_embeddings.safetensors"]
    labels = b'{"labels": {"stable": 1, "canary": 1}, "canary_fraction": 0.25}'
    for kind, args in runs.items():
        recserve("train", "--name", kind, "--models", models, *args)
        version = models / kind / "1"
        manifest = json.loads((version / "model.json").read_text())
        files = ["weights.safetensors", "users.txt", "items.txt"]
        extra = hybrid_files if kind == "hybrid" else []
        # Each checksum by its file's name (two files may have the same bytes, hence digest).
        for name in files + extra:
            manifest["files"][name] = f"@sha:{name}@"
        manifest = json.dumps(manifest, indent=2)
        parts = [manifest.encode()] + [(version / name).read_bytes() for name in files] + [labels]
        if kind == "hybrid":
            added = b'{"id": "added-1", "features": {"genre": "g1", "title": "word2 new", "year": "2001"}}\n'
            parts += [(version / name).read_bytes() for name in extra] + [added]
        write("FuzzModelDirectory", kind, MARKER.join(parts))


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def string_field(number, text):
    data = text.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def rpc_seeds():
    sys.path.insert(0, str(REPO / "Tests" / "python"))
    import conftest  # noqa: F401, PLC0415  (generates the stubs and puts them on sys.path)
    from recserve.v1 import recserve_pb2 as pb  # noqa: PLC0415

    paths = sorted([
        "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] + [f"/recserve.v1.{service.name}/{method.name}"
         for service in pb.DESCRIPTOR.services_by_name.values() for method in service.methods])
    paths.append("/recserve.v1.Recommender/NoSuchMethod")

    def seed(name, path, body, flags=1):
        method = path.rsplit("/", 1)[1]
        write("FuzzRPC", f"{method}-{name}", bytes([paths.index(path), flags]) + body)

    spec = pb.ModelSpec
    rec = "/recserve.v1.Recommender/"
    admin = "/recserve.v1.ModelAdmin/"
    seed("pairs", rec + "Predict", pb.PredictRequest(
        model=spec(name="mf"), pairs=[pb.UserItem(user_id="u1", item_id="i2"),
                                      pb.UserItem(user_id="nobody", item_id="i3")]).SerializeToString())
    seed("canary", rec + "Predict", pb.PredictRequest(
        model=spec(name="mf", label="canary"), pairs=[pb.UserItem(user_id="u7", item_id="i1")]).SerializeToString())
    for strategy in [pb.SEARCH_DEFAULT, pb.SEARCH_EXACT, pb.SEARCH_F16, pb.SEARCH_IVF]:
        seed(f"search{strategy}", rec + "Rank", pb.RankRequest(
            model=spec(name="als"), user_id="u3", k=5, exclude_seen=True, search=strategy,
            nprobe=2 if strategy == pb.SEARCH_IVF else 0).SerializeToString())
    seed("candidates", rec + "Rank", pb.RankRequest(
        model=spec(name="mf", version=2), user_id="u2", k=3, candidates=["i1", "i2", "i9"], exclude=["i2"],
        min_score=0.5).SerializeToString())
    seed("diversity", rec + "Rank", pb.RankRequest(
        model=spec(name="bpr"), recent_items=["i4", "i5"], k=10, diversity=0.5,
        popularity_penalty=0.3).SerializeToString())
    seed("sequence", rec + "Rank", pb.RankRequest(
        model=spec(name="seq"), user_id="u1", recent_items=["i2", "i3", "i4"], k=4,
        exclude_seen=True).SerializeToString())
    seed("items", rec + "SimilarItems", pb.SimilarItemsRequest(
        model=spec(name="bpr"), item_id="i3", k=4, exclude=["i4"]).SerializeToString())
    seed("sequence", rec + "SimilarItems", pb.SimilarItemsRequest(
        model=spec(name="seq", label="stable"), item_id="i1", k=2).SerializeToString())
    seed("inline", rec + "Train", pb.TrainRequest(
        name="fuzzed", kind="bpr", dim=2, epochs=1, interactions=[
            pb.Interaction(user_id="u1", item_id="i1", rating=1), pb.Interaction(user_id="u1", item_id="i2", rating=1),
            pb.Interaction(user_id="u2", item_id="i2", rating=1, timestamp=5)]).SerializeToString())
    seed("file", rec + "Train", pb.TrainRequest(
        name="fuzzed", kind="als", data_path="ratings.csv", dim=2, epochs=1, holdout=0.2,
        promote=True, promote_metric="ndcg@10").SerializeToString())
    seed("sasrec", rec + "Train", pb.TrainRequest(
        name="fuzzed", kind="sasrec", data_path="ratings.csv", dim=4, heads=2, maxlen=4, blocks=1,
        epochs=1, dropout=0.1, batch_size=8).SerializeToString())
    seed("no-token", rec + "Train", pb.TrainRequest(name="x", data_path="/etc/passwd").SerializeToString(), flags=0)
    seed("all", admin + "ListModels", b"")
    seed("mf", admin + "GetModelStatus", pb.GetModelStatusRequest(name="mf").SerializeToString())
    seed("canary", admin + "SetLabel", pb.SetLabelRequest(
        name="mf", label="canary", version=1, canary_fraction=0.3).SerializeToString())
    seed("wrong-token", admin + "SetLabel", pb.SetLabelRequest(
        name="mf", label="stable", version=2).SerializeToString(), flags=2)
    seed("hyb", admin + "AddItems", pb.AddItemsRequest(
        model=spec(name="hyb"), items=[pb.NewItem(id="fresh", features={"genres": "g1|g2", "title": "word1"}),
                                       pb.NewItem(id="bare")]).SerializeToString())
    seed("not-hybrid", admin + "AddItems", pb.AddItemsRequest(
        model=spec(name="mf", version=1), items=[pb.NewItem(id="x")]).SerializeToString())
    seed("hybrid", rec + "Train", pb.TrainRequest(
        name="fuzzed", kind="hybrid", data_path="ratings.csv", item_features_path="items.csv", dim=2,
        epochs=1, loss="bpr").SerializeToString())
    seed("v2", admin + "UnloadVersion", pb.UnloadVersionRequest(name="mf", version=2).SerializeToString())
    seed("all", admin + "ReloadRepository", b"", flags=5)
    seed("service", "/grpc.health.v1.Health/Check", string_field(1, "recserve.v1.Recommender"))
    seed("all", "/grpc.health.v1.Health/Check", b"")
    seed("service", "/grpc.health.v1.Health/Watch", string_field(1, ""))
    v1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
    seed("list", v1, string_field(7, ""))
    seed("symbol", v1, string_field(4, "recserve.v1.Recommender"))
    seed("file", v1, string_field(3, "recserve/v1/recserve.proto"))
    seed("extension", v1, string_field(6, "recserve.v1.RankRequest"))
    seed("list-alpha", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", string_field(7, "*"))
    seed("unknown", paths[-1], b"\x0a\x02mf")
    events = pb.AppendEventsRequest(events=[
        pb.Event(user_id="u1", item_id="i2", type="click"),
        pb.Event(user_id="newcomer", item_id="i3", type="rating", value=4.5, timestamp_ms=1_700_000_000_000)])
    seed("batch", rec + "AppendEvents", events.SerializeToString())
    seed("bad-type", rec + "AppendEvents", pb.AppendEventsRequest(events=[
        pb.Event(user_id="u1", item_id="i2", type="teleport")]).SerializeToString())
    seed("batch", rec + "AppendEventStream", events.SerializeToString())
    seed("u1", rec + "GetUserEvents", pb.GetUserEventsRequest(user_id="u1", limit=5).SerializeToString())
    seed("events", rec + "Rank", pb.RankRequest(
        model=spec(name="seq"), user_id="newcomer", k=3, exclude_seen=True).SerializeToString())


def main():
    for target in ["FuzzRatings", "FuzzModelDirectory", "FuzzRPC"]:
        shutil.rmtree(CORPUS / target, ignore_errors=True)
    ratings_seeds()
    with tempfile.TemporaryDirectory() as work:
        model_seeds(pathlib.Path(work))
    rpc_seeds()
    for target in sorted(CORPUS.iterdir()):
        print(f"{target.name}: {len(list(target.iterdir()))} seeds")


if __name__ == "__main__":
    main()
