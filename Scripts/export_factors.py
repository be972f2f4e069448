#!/usr/bin/env python3
"""Export a factor model trained elsewhere (Spark MLlib's ALSModel, or plain numpy arrays) as a
RecServe model version: MODELS/NAME/<next version>/ with weights.safetensors (user_factors,
item_factors, zero biases), users.txt, items.txt and model.json with the checksums, written into a
dot-folder and renamed into place, so a server watching MODELS never sees half a version. A
server scores a user's item as the dot product of their factors, as Spark's ALSModel does.

Command line:

    python3 Scripts/export_factors.py --spark-model PATH --models DIR --name NAME
    python3 Scripts/export_factors.py --npz FILE.npz --models DIR --name NAME [--kind als]

  PATH      a folder written by ALSModel.save (pyspark and Java needed; Spark runs in local mode
            unless SPARK_MASTER names a cluster).
  FILE.npz  arrays user_ids, user_factors [U, D], item_ids, item_factors [I, D] (numpy.savez).

Prints the path of the new version folder.

From Python: `from_spark_als(model, models_dir, name)` with a fitted `pyspark.ml.recommendation.
ALSModel`, or `from_numpy(user_ids, user_factors, item_ids, item_factors, models_dir, name)`.
Spark's factors are read with `toLocalIterator()`, one partition at a time, and written as they
arrive (the file's layout is fixed by the counts and the rank, known before the first row), so
the driver never holds a whole factor matrix: a model larger than the driver's memory exports.
Spark's ALS ids are integers; they become the ids RecServe serves ("42").
"""

import argparse
import datetime
import hashlib
import json
import os
import pathlib
import struct
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from export_sasrec import (  # noqa: E402
    NAME_PATTERN, SAFETENSORS_ALIGNMENT, ExportError, _check_ids, _write_synced, publish, staging_folder)

CHUNK_ROWS = 4096


class _HashedFile:
    """A file written once from start to end, hashed as it is written."""

    def __init__(self, path: pathlib.Path):
        self.file = open(path, "wb")
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes):
        self.file.write(data)
        self.sha.update(data)
        self.size += len(data)

    def close(self) -> str:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return self.sha.hexdigest()


def _header(users: int, items: int, dim: int, kind: str) -> bytes:
    """The safetensors header for the factor layout, padded so the data starts at a multiple of
    64 bytes; the tensors follow in this order, contiguous."""
    shapes = [("user_factors", [users, dim]), ("item_factors", [items, dim]),
              ("user_bias", [users]), ("item_bias", [items]), ("global_mean", [1])]
    header, offset = {}, 0
    for name, shape in shapes:
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "recserve-model", "kind": kind}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % SAFETENSORS_ALIGNMENT)
    return struct.pack("<Q", len(text)) + text


def _check_id(value, what: str, row: int) -> str:
    text = str(value)
    if text == "" or text.strip() != text or "\n" in text or "\r" in text:
        raise ExportError(f"{what} id #{row} ({text!r}) is empty, has surrounding spaces or a line break")
    return text


def _write_rows(rows, count: int, dim: int, weights: _HashedFile, ids: _HashedFile, what: str):
    """Writes `count` (id, vector) rows: vectors to the weights, ids a line each."""
    written = 0
    block, lines = [], []

    def flush():
        if block:
            weights.write(np.asarray(block, dtype="<f4").tobytes())
            ids.write(("\n".join(lines) + "\n").encode())
            block.clear()
            lines.clear()

    for row, (identifier, vector) in enumerate(rows):
        text = _check_id(identifier, what, row)
        values = np.asarray(vector, dtype=np.float32)
        if values.shape != (dim,):
            raise ExportError(f"{what} '{text}' has a vector of shape {list(values.shape)}; expected [{dim}]")
        if not np.isfinite(values).all():
            raise ExportError(f"{what} '{text}' has non-finite factors")
        block.append(values)
        lines.append(text)
        written += 1
        if written > count:
            raise ExportError(f"more {what} rows than the {count} counted")
        if len(block) == CHUNK_ROWS:
            flush()
    flush()
    if written != count:
        raise ExportError(f"{written} {what} rows arrived but {count} were counted")


def export_rows(models_dir, name, user_rows, user_count: int, item_rows, item_count: int, dim: int,
                kind: str = "als", hyperparameters: dict | None = None, training_data: dict | None = None,
                source: str = "") -> pathlib.Path:
    """Writes a new version of factor model `name` from (id, vector) rows, streamed: `user_rows`
    and `item_rows` are iterables yielding exactly `user_count` and `item_count` rows of `dim`
    floats. Returns the version folder."""
    if not NAME_PATTERN.match(str(name)) or str(name).startswith("-"):
        raise ExportError(f"invalid model name '{name}': use 1-128 letters, digits, '.', '_' or '-', "
                          "not starting with '.' or '-'")
    if kind not in ("als", "bpr", "mf"):
        raise ExportError(f"kind must be als, bpr or mf (got '{kind}')")
    if user_count < 1 or item_count < 1 or dim < 1:
        raise ExportError(f"a factor model needs users, items and a dimension (got {user_count}, "
                          f"{item_count}, {dim})")
    model_dir = pathlib.Path(models_dir) / str(name)
    with staging_folder(model_dir) as tmp:
        weights = _HashedFile(tmp / "weights.safetensors")
        users = _HashedFile(tmp / "users.txt")
        items = _HashedFile(tmp / "items.txt")
        weights.write(_header(user_count, item_count, dim, kind))
        _write_rows(user_rows, user_count, dim, weights, users, "user")
        _write_rows(item_rows, item_count, dim, weights, items, "item")
        for count in (user_count, item_count):  # zero biases, a chunk at a time
            left = count
            while left:
                n = min(left, 1 << 20)
                weights.write(bytes(4 * n))
                left -= n
        weights.write(struct.pack("<f", 0.0))  # global_mean
        manifest = {
            "format": "recserve-model",
            "format_version": 1,
            "kind": kind,
            "name": str(name),
            "created_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "hyperparameters": {"dim": dim, **(hyperparameters or {})},
            "counts": {"users": user_count, "items": item_count, "dim": dim},
            "training_data": training_data or {"source": source or "exported"},
            "metrics": {},
            "files": {"weights.safetensors": weights.close(), "users.txt": users.close(),
                      "items.txt": items.close()},
        }
        _write_synced(tmp / "model.json", (json.dumps(manifest, indent=2) + "\n").encode())
        return publish(tmp, model_dir)


def from_numpy(user_ids, user_factors, item_ids, item_factors, models_dir, name, kind: str = "als",
               hyperparameters: dict | None = None) -> pathlib.Path:
    """A version from in-memory arrays: user_factors [U, D] and item_factors [I, D] (row i
    belongs to user_ids[i] / item_ids[i])."""
    users = _check_ids(user_ids, "user")
    items = _check_ids(item_ids, "item")
    uf = np.asarray(user_factors, dtype=np.float32)
    itf = np.asarray(item_factors, dtype=np.float32)
    if uf.ndim != 2 or itf.ndim != 2 or uf.shape[1] != itf.shape[1]:
        raise ExportError(f"user_factors {list(uf.shape)} and item_factors {list(itf.shape)} must be "
                          "[U, D] and [I, D] with the same D")
    if uf.shape[0] != len(users) or itf.shape[0] != len(items):
        raise ExportError(f"{len(users)} user ids for {uf.shape[0]} rows of user_factors, "
                          f"{len(items)} item ids for {itf.shape[0]} rows of item_factors")
    return export_rows(models_dir, name, zip(users, uf), len(users), zip(items, itf), len(items),
                       uf.shape[1], kind, hyperparameters, source="numpy arrays")


def from_spark_als(model, models_dir, name) -> pathlib.Path:
    """A version from a fitted pyspark.ml.recommendation.ALSModel, its factor DataFrames read a
    partition at a time."""
    rank = int(model.rank)
    user_count = model.userFactors.count()
    item_count = model.itemFactors.count()

    def rows(frame):
        for row in frame.toLocalIterator():
            yield row["id"], row["features"]

    parameters = {"source": "spark-mllib ALSModel", "spark_rank": rank}
    return export_rows(models_dir, name, rows(model.userFactors), user_count, rows(model.itemFactors),
                       item_count, rank, "als", parameters, source="spark-mllib ALSModel")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spark-model", help="a folder written by ALSModel.save")
    source.add_argument("--npz", help="user_ids, user_factors, item_ids, item_factors (numpy.savez)")
    parser.add_argument("--models", required=True, help="the models folder")
    parser.add_argument("--name", required=True, help="the model's name")
    parser.add_argument("--kind", default="als", choices=["als", "bpr", "mf"], help="for --npz (default als)")
    args = parser.parse_args(argv)
    try:
        if args.npz:
            try:
                arrays = np.load(args.npz, allow_pickle=False)
                missing = [k for k in ("user_ids", "user_factors", "item_ids", "item_factors") if k not in arrays]
            except (OSError, ValueError) as e:
                raise ExportError(f"{args.npz}: cannot read ({e})") from e
            if missing:
                raise ExportError(f"{args.npz} has no array {', '.join(missing)}")
            path = from_numpy(arrays["user_ids"], arrays["user_factors"], arrays["item_ids"],
                              arrays["item_factors"], args.models, args.name, args.kind)
        else:
            from pyspark.ml.recommendation import ALSModel  # noqa: PLC0415
            from pyspark.sql import SparkSession  # noqa: PLC0415

            spark = (SparkSession.builder.master(os.environ.get("SPARK_MASTER", "local[*]"))
                     .appName("recserve-export").getOrCreate())
            try:
                path = from_spark_als(ALSModel.load(args.spark_model), args.models, args.name)
            finally:
                spark.stop()
    except ExportError as e:
        print(f"export_factors: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
