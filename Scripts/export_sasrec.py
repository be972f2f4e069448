#!/usr/bin/env python3
"""Export a PyTorch SASRec model into a RecServe model directory (kind "sasrec").

Writes MODELS/NAME/<next version>/ with items.txt, users.txt, weights.safetensors and model.json,
first into a dot-folder MODELS/NAME/.tmp-<random> that is then renamed into place, so a server
watching MODELS never sees half a version.

Command line:

    python3 Scripts/export_sasrec.py --checkpoint CKPT.pt --item-ids ITEMS.txt \\
        --ratings TRAIN.csv --heads H --models DIR --name NAME [--dropout P]

  CKPT.pt     torch.save'd state_dict of a SASRec with the pmixer/SASRec.pytorch parameter
              names (item_emb, pos_emb, attention_layernorms, attention_layers,
              forward_layernorms, forward_layers.{b}.conv1/conv2, last_layernorm), or a dict
              {"state_dict": ..., "hyperparameters": {...}}; hyperparameters found there are
              recorded in model.json (and "heads"/"dropout" there stand in for the options).
  ITEMS.txt   external item ids, one a line: line i is embedding row i+1 (row 0 is padding).
  TRAIN.csv   the interactions the model was trained on: user,item,rating,timestamp with a
              header, or MovieLens files (ratings.csv, u.data, ratings.dat). Each user's
              sequence is their rows stably sorted by timestamp (ties keep file order); users
              are listed in order of first appearance. Rows naming items that are not in
              ITEMS.txt are skipped and counted on stderr; users left with no items are dropped.
  --heads     number of attention heads (the weights do not tell it).
  --dropout   recorded in model.json only (inference does not use it); default 0.2.

Prints the path of the new version folder.

From Python: `export(state_dict, hyperparameters, item_ids, user_sequences, models_dir, name,
user_states=None)`; state_dict values may be torch tensors or numpy arrays, and torch is only
imported to read a checkpoint file.
"""

import argparse
import contextlib
import csv
import datetime
import errno
import hashlib
import json
import os
import pathlib
import re
import secrets
import struct
import sys

import numpy as np

LAYER_NORM_EPS = 1e-8
SAFETENSORS_ALIGNMENT = 64
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


class ExportError(ValueError):
    """A problem with the inputs, in one line that names what is wrong."""


# ---------------------------------------------------------------------------------------------
# safetensors


def safetensors_bytes(tensors: dict, metadata: dict) -> bytes:
    """A complete safetensors file: contiguous data (no holes, as the RecServe loader requires),
    the header padded with spaces so that the data starts at a multiple of 64 bytes.

    Tensors are laid out I64 first, then F32 largest first, then I32, so every tensor is
    naturally aligned and the first one sits at a 64-byte boundary; every tensor cannot be
    64-aligned without holes between them, which the loader rejects."""
    dtypes = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32", np.dtype(np.int64): "I64"}
    arrays = {}
    for name, value in tensors.items():
        array = np.ascontiguousarray(value)
        if array.dtype not in dtypes:
            raise ExportError(f"tensor '{name}' has dtype {array.dtype}; only float32, int32, int64")
        arrays[name] = array.astype(array.dtype.newbyteorder("<"), copy=False)
    order = sorted(arrays, key=lambda n: (-arrays[n].dtype.itemsize, arrays[n].dtype.kind != "f",
                                          -arrays[n].nbytes, n))
    header = {}
    offset = 0
    for name in order:
        array = arrays[name]
        header[name] = {
            "dtype": dtypes[array.dtype.newbyteorder("=")],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % SAFETENSORS_ALIGNMENT)
    return b"".join([struct.pack("<Q", len(text)), text] + [arrays[n].tobytes() for n in order])


# ---------------------------------------------------------------------------------------------
# weights


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; torch itself is not imported here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def sasrec_tensor_names(blocks: int) -> list:
    names = ["item_emb.weight", "pos_emb.weight"]
    for b in range(blocks):
        names += [
            f"attention_layernorms.{b}.weight", f"attention_layernorms.{b}.bias",
            f"attention_layers.{b}.in_proj_weight", f"attention_layers.{b}.in_proj_bias",
            f"attention_layers.{b}.out_proj.weight", f"attention_layers.{b}.out_proj.bias",
            f"forward_layernorms.{b}.weight", f"forward_layernorms.{b}.bias",
            f"forward_layers.{b}.conv1.weight", f"forward_layers.{b}.conv1.bias",
            f"forward_layers.{b}.conv2.weight", f"forward_layers.{b}.conv2.bias",
        ]
    return names + ["last_layernorm.weight", "last_layernorm.bias"]


def count_blocks(state: dict) -> int:
    blocks = 0
    while f"attention_layers.{blocks}.in_proj_weight" in state:
        blocks += 1
    return blocks


def sasrec_weights(state_dict: dict, item_count: int, hyperparameters: dict):
    """Checks a SASRec state_dict against the spec and returns (float32 tensors by name in the
    RecServe layout, dim, maxlen, blocks). Raises ExportError naming the first bad tensor."""
    state = {k: _to_numpy(v) for k, v in state_dict.items()}
    for key in ("item_emb.weight", "pos_emb.weight"):
        if key not in state:
            raise ExportError(f"state_dict has no '{key}'")
        if state[key].ndim != 2:
            raise ExportError(f"'{key}' has shape {list(state[key].shape)}; expected 2 dimensions")
    dim = state["item_emb.weight"].shape[1]
    maxlen = state["pos_emb.weight"].shape[0]
    blocks = count_blocks(state)
    if blocks == 0:
        raise ExportError("state_dict has no 'attention_layers.0.in_proj_weight': no blocks")
    for key, found in (("dim", dim), ("maxlen", maxlen), ("blocks", blocks)):
        given = hyperparameters.get(key)
        if given is not None and int(given) != found:
            raise ExportError(f"hyperparameters say {key}={given}, but the weights have {key}={found}")
    heads = hyperparameters.get("heads")
    if heads is None:
        raise ExportError("hyperparameters must give 'heads' (the weights do not tell it)")
    if int(heads) < 1 or dim % int(heads) != 0:
        raise ExportError(f"heads={heads} does not divide dim={dim}")
    if state["item_emb.weight"].shape[0] != item_count + 1:
        raise ExportError(
            f"'item_emb.weight' has {state['item_emb.weight'].shape[0]} rows, but there are "
            f"{item_count} item ids (expected {item_count + 1} rows: row 0 is padding)")

    d = dim
    expected = {"item_emb.weight": [item_count + 1, d], "pos_emb.weight": [maxlen, d],
                "last_layernorm.weight": [d], "last_layernorm.bias": [d]}
    for b in range(blocks):
        expected.update({
            f"attention_layernorms.{b}.weight": [d], f"attention_layernorms.{b}.bias": [d],
            f"attention_layers.{b}.in_proj_weight": [3 * d, d], f"attention_layers.{b}.in_proj_bias": [3 * d],
            f"attention_layers.{b}.out_proj.weight": [d, d], f"attention_layers.{b}.out_proj.bias": [d],
            f"forward_layernorms.{b}.weight": [d], f"forward_layernorms.{b}.bias": [d],
            f"forward_layers.{b}.conv1.weight": [d, d], f"forward_layers.{b}.conv1.bias": [d],
            f"forward_layers.{b}.conv2.weight": [d, d], f"forward_layers.{b}.conv2.bias": [d],
        })
    out = {}
    for name in sasrec_tensor_names(blocks):
        if name not in state:
            raise ExportError(f"state_dict has no '{name}' (blocks={blocks}, dim={d})")
        array = state[name]
        if name.startswith("forward_layers.") and name.endswith(".weight") and array.ndim == 3:
            if array.shape[2] != 1:
                raise ExportError(f"'{name}' has shape {list(array.shape)}; a Conv1d with kernel size 1 was expected")
            array = array[:, :, 0]  # Conv1d [out, in, 1] -> [out, in]
        if list(array.shape) != expected[name]:
            raise ExportError(f"'{name}' has shape {list(array.shape)}; expected {expected[name]}")
        if not np.issubdtype(array.dtype, np.floating):
            raise ExportError(f"'{name}' has dtype {array.dtype}; expected floating point")
        array = array.astype(np.float32)
        if name != "item_emb.weight" and not np.isfinite(array).all():
            raise ExportError(f"'{name}' has non-finite values")
        if name == "item_emb.weight" and not np.isfinite(array[1:]).all():
            raise ExportError(f"'{name}' has non-finite values")
        out[name] = array
    extra = sorted(set(state) - set(sasrec_tensor_names(blocks)))
    if extra:
        print(f"export_sasrec: ignoring {len(extra)} state_dict entries: {', '.join(extra[:5])}"
              + (" ..." if len(extra) > 5 else ""), file=sys.stderr)
    return out, d, maxlen, blocks


# ---------------------------------------------------------------------------------------------
# ids and sequences


def _check_ids(ids, what: str) -> list:
    ids = [str(x) for x in ids]
    if not ids:
        raise ExportError(f"no {what} ids")
    seen = set()
    for i, x in enumerate(ids):
        if x == "" or x.strip() != x or "\n" in x or "\r" in x:
            raise ExportError(f"{what} id #{i} ({x!r}) is empty, has surrounding spaces or a line break")
        if x in seen:
            raise ExportError(f"{what} id '{x}' occurs twice")
        seen.add(x)
    return ids


def _id_file(ids) -> bytes:
    return ("\n".join(ids) + "\n").encode()


def sequence_tensors(user_sequences, item_index: dict):
    """(user ids, indptr I64 [U+1], items I32 [nnz]) from a dict or list of (user, [item ids])."""
    pairs = list(user_sequences.items()) if isinstance(user_sequences, dict) else list(user_sequences)
    users = _check_ids([u for u, _ in pairs], "user")
    indptr = np.zeros(len(pairs) + 1, dtype=np.int64)
    flat = []
    for u, (user, items) in enumerate(pairs):
        if len(items) == 0:
            raise ExportError(f"user '{user}' has an empty sequence")
        for item in items:
            if str(item) not in item_index:
                raise ExportError(f"user '{user}' has item '{item}', which is not in the item ids")
            flat.append(item_index[str(item)])
        indptr[u + 1] = len(flat)
    return users, indptr, np.asarray(flat, dtype=np.int32)


# ---------------------------------------------------------------------------------------------
# publishing


def _next_version(model_dir: pathlib.Path) -> int:
    versions = [int(p.name) for p in model_dir.iterdir()
                if p.is_dir() and p.name.isdigit() and not p.name.startswith("0")]
    return max(versions, default=0) + 1


def _write_synced(path: pathlib.Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export(state_dict, hyperparameters: dict, item_ids, user_sequences, models_dir, name,
           user_states=None, training_data: dict | None = None, metrics: dict | None = None) -> pathlib.Path:
    """Writes a new version of SASRec model `name` under `models_dir` and returns its folder.

    state_dict: pmixer-named SASRec parameters (torch tensors or numpy arrays; Conv1d weights
      [d, d, 1] or [d, d]). hyperparameters: must give "heads"; "dim", "maxlen" and "blocks" are
      checked against the weights when given; "dropout" is recorded (default 0.2); any other
      entries are recorded as they are. item_ids: line i of items.txt = embedding row i+1.
      user_sequences: {user id: [item ids oldest first]} or a list of (user id, [item ids]), the
      full training sequences. user_states: optional [U, d] array of each user's final hidden
      state (eval mode); the server computes it when absent."""
    if not NAME_PATTERN.match(str(name)) or str(name).startswith("-"):
        raise ExportError(f"invalid model name '{name}': use 1-128 letters, digits, '.', '_' or '-', "
                          "not starting with '.' or '-'")
    hyperparameters = dict(hyperparameters)
    items = _check_ids(item_ids, "item")
    weights, dim, maxlen, blocks = sasrec_weights(state_dict, len(items), hyperparameters)
    users, indptr, flat = sequence_tensors(user_sequences, {x: i for i, x in enumerate(items)})
    tensors = dict(weights)
    tensors["sequence_indptr"] = indptr
    tensors["sequence_items"] = flat
    if user_states is not None:
        states = _to_numpy(user_states).astype(np.float32)
        if list(states.shape) != [len(users), dim]:
            raise ExportError(f"'user_states' has shape {list(states.shape)}; expected {[len(users), dim]}")
        if not np.isfinite(states).all():
            raise ExportError("'user_states' has non-finite values")
        tensors["user_states"] = states

    weights_bytes = safetensors_bytes(tensors, {"format": "recserve-model", "kind": "sasrec"})
    users_bytes = _id_file(users)
    items_bytes = _id_file(items)
    recorded = {k: v for k, v in hyperparameters.items()
                if k not in ("dim", "maxlen", "blocks", "heads", "dropout", "layer_norm_eps")}
    manifest = {
        "format": "recserve-model",
        "format_version": 1,
        "kind": "sasrec",
        "name": str(name),
        "created_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hyperparameters": {
            "dim": dim, "maxlen": maxlen, "blocks": blocks, "heads": int(hyperparameters["heads"]),
            "dropout": float(hyperparameters.get("dropout", 0.2)), "layer_norm_eps": LAYER_NORM_EPS,
            **recorded,
        },
        "counts": {"users": len(users), "items": len(items), "dim": dim,
                   "sequence_interactions": int(len(flat))},
        "training_data": training_data if training_data is not None
        else {"users": len(users), "interactions": int(len(flat))},
        "metrics": metrics or {},
        "files": {
            "weights.safetensors": hashlib.sha256(weights_bytes).hexdigest(),
            "users.txt": hashlib.sha256(users_bytes).hexdigest(),
            "items.txt": hashlib.sha256(items_bytes).hexdigest(),
        },
    }

    model_dir = pathlib.Path(models_dir) / str(name)
    with staging_folder(model_dir) as tmp:
        _write_synced(tmp / "weights.safetensors", weights_bytes)
        _write_synced(tmp / "users.txt", users_bytes)
        _write_synced(tmp / "items.txt", items_bytes)
        _write_synced(tmp / "model.json", (json.dumps(manifest, indent=2) + "\n").encode())
        return publish(tmp, model_dir)


@contextlib.contextmanager
def staging_folder(model_dir: pathlib.Path):
    """A new dot-folder in `model_dir` (made if needed) to write a version into; removed with
    what is in it unless `publish` renamed it into place."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".tmp-{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        if tmp.exists():
            for child in tmp.iterdir():
                child.unlink()
            tmp.rmdir()


def publish(tmp: pathlib.Path, model_dir: pathlib.Path) -> pathlib.Path:
    """Syncs the finished folder `tmp` and renames it to the next free version number of
    `model_dir` (the next one when another writer takes a number first); returns the version."""
    _fsync_dir(tmp)
    for _ in range(1000):
        target = model_dir / str(_next_version(model_dir))
        try:
            os.rename(tmp, target)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue  # another writer took this number
            raise
        _fsync_dir(model_dir)
        return target
    raise ExportError(f"{model_dir}: could not find a free version number")


# ---------------------------------------------------------------------------------------------
# interaction files


USER_COLUMNS = {"user", "userid", "user_id", "uid"}
ITEM_COLUMNS = {"item", "itemid", "item_id", "movie", "movieid", "movie_id", "iid"}
TIME_COLUMNS = {"timestamp", "time", "ts", "datetime"}


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def read_interactions(path) -> list:
    """Rows (user, item, timestamp) in file order from a user,item[,rating[,timestamp]] file:
    comma, tab, ';', '|', '::' (MovieLens 1M/10M) or space separated, with or without a header
    (a first line whose third field is not a number, or that names user/item columns).
    Without a timestamp column the file order is the time order."""
    with open(path, newline="", encoding="utf-8") as f:
        lines = [line.rstrip("\r\n") for line in f]
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise ExportError(f"{path}: no rows")
    if "::" in first:
        split = lambda line: line.split("::")  # noqa: E731
    else:
        delimiter = next((d for d in ("\t", ",", ";", "|") if d in first), None)
        if delimiter is None:
            split = lambda line: line.split()  # noqa: E731
        else:
            split = lambda line: next(csv.reader([line], delimiter=delimiter))  # noqa: E731
    fields = [x.strip() for x in split(first)]
    names = [re.sub(r"[^a-z_]", "", x.lower()) for x in fields]
    has_header = (len(fields) >= 3 and _number(fields[2]) is None) or bool(set(names) & (USER_COLUMNS | ITEM_COLUMNS))
    user_col, item_col, time_col = 0, 1, 3
    if has_header:
        user_col = next((i for i, n in enumerate(names) if n in USER_COLUMNS), 0)
        item_col = next((i for i, n in enumerate(names) if n in ITEM_COLUMNS), 1)
        time_col = next((i for i, n in enumerate(names) if n in TIME_COLUMNS), None)
    rows = []
    started = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if has_header and not started:
            started = True
            continue
        parts = [x.strip() for x in split(line)]
        if len(parts) <= max(user_col, item_col):
            raise ExportError(f"{path}:{number}: expected user and item fields, got {line!r}")
        t = 0.0
        if time_col is not None and time_col < len(parts):
            t = _number(parts[time_col])
            if t is None:
                raise ExportError(f"{path}:{number}: timestamp {parts[time_col]!r} is not a number")
        rows.append((parts[user_col], parts[item_col], t))
    return rows


def user_sequences_from_rows(rows) -> dict:
    """{user: [item, ...]} with users in order of first appearance and each sequence stably
    sorted by timestamp (ties keep file order)."""
    by_user = {}
    for position, (user, item, t) in enumerate(rows):
        by_user.setdefault(user, []).append((t, position, item))
    return {u: [item for _, _, item in sorted(events)] for u, events in by_user.items()}


# ---------------------------------------------------------------------------------------------
# command line


def load_checkpoint(path):
    import torch  # noqa: PLC0415 (only the command line needs torch)

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        return checkpoint["state_dict"], dict(checkpoint.get("hyperparameters") or {})
    if isinstance(checkpoint, dict):
        return checkpoint, {}
    raise ExportError(f"{path}: expected a state_dict or {{'state_dict': ..., 'hyperparameters': ...}}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--item-ids", required=True)
    parser.add_argument("--ratings", required=True)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--dropout", type=float)
    parser.add_argument("--models", required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    try:
        state_dict, hyperparameters = load_checkpoint(args.checkpoint)
        for key, value in (("heads", args.heads), ("dropout", args.dropout)):
            if value is None:
                continue
            if key in hyperparameters and float(hyperparameters[key]) != float(value):
                raise ExportError(f"--{key} {value} contradicts the checkpoint's {key}={hyperparameters[key]}")
            hyperparameters[key] = value
        if "heads" not in hyperparameters:
            raise ExportError("give --heads (the checkpoint does not record it)")
        hyperparameters.setdefault("source", "pytorch")
        with open(args.item_ids, encoding="utf-8") as f:
            item_ids = [line.rstrip("\r\n") for line in f if line.strip()]
        known = set(item_ids)
        rows = read_interactions(args.ratings)
        kept = [r for r in rows if r[1] in known]
        if len(kept) < len(rows):
            print(f"export_sasrec: skipped {len(rows) - len(kept)} of {len(rows)} rows whose item is not "
                  f"in {args.item_ids}", file=sys.stderr)
        sequences = user_sequences_from_rows(kept)
        dropped = len({r[0] for r in rows}) - len(sequences)
        if dropped:
            print(f"export_sasrec: dropped {dropped} users with no known items", file=sys.stderr)
        path = export(state_dict, hyperparameters, item_ids, sequences, args.models, args.name,
                      training_data={"file": os.path.abspath(args.ratings), "rows": len(rows),
                                     "rows_used": len(kept), "users": len(sequences)})
    except (ExportError, OSError) as e:
        print(f"export_sasrec: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
