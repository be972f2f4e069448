#!/usr/bin/env python3
"""RecServe SASRec (and BPR, ALS) vs the PyTorch SASRec reference, leave-last-out, sampled metrics.

One leave-last-out split of the ratings file is made in Python: per user, rows stably sorted by
timestamp (ties keep file order), the last row is the test row, the rest train (users with one
row keep it in train). train.csv and test.csv (user_id,item_id,rating,timestamp; train rows
grouped per user in that order) go to a work folder. Then, for each seed:

  - PyTorch: Benchmarks/sasrec_torch.py trains SASRec on train.csv's sequences with the same
    hyperparameters (maxlen 200, dim 50, 2 blocks, 1 head, dropout 0.2, Adam lr 1e-3 betas
    (0.9, 0.98), batch 128, --epochs) on --threads threads; the fit is timed, and the model is
    exported with Scripts/export_sasrec.py into MODELS/torch;
  - RecServe: `recserve train --kind sasrec` with the same hyperparameters, and `--kind bpr` and
    `--kind als` with their defaults, all with --split none on train.csv; train_seconds from its
    JSON and the whole process's wall time;
  - every model is evaluated by `recserve eval --protocol sampled --ks 10 --json` on test.csv
    (the model's history is "seen"; the held-out item ranked among 100 items the user never
    touched), and both SASRec models also by this script's own evaluator with the authors'
    protocol (100 uniform negatives not in the user's history nor the test item, drawn with
    replacement, the same negatives for both models; a tie counts against the held-out item).

Prints a markdown table (means over seeds) with the ratios RecServe/PyTorch of NDCG@10 and of
training time; --json OUT writes every number.

Usage:
    swift build -c release --product recserve
    python3 Benchmarks/sasrec_vs_torch.py [RATINGS_CSV] [--epochs 200] [--seeds 1,2,3]
        [--only torch|recserve|all] [--threads 2] [--binary PATH] [--json OUT] [--keep DIR]
        [--log-every N]
`--only torch` needs no RecServe binary (PyTorch training, export and the Python evaluator).
Needs torch and numpy.
"""

import argparse
import csv
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Benchmarks"))
sys.path.insert(0, str(REPO / "Scripts"))
import export_sasrec  # noqa: E402
import sasrec_torch  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "ml-latest-small" / "ratings.csv"
HYPER = dict(maxlen=200, dim=50, blocks=2, heads=1, dropout=0.2, lr=1e-3, batch=128)
NEGATIVES = 100
K = 10


# ---------------------------------------------------------------------------------------------
# data


def read_rows(path):
    """(user, item, rating, timestamp) strings/numbers in file order; a header line is skipped."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if rows and export_sasrec._number(rows[0][2]) is None:
        rows = rows[1:]
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def leave_last_out(rows):
    """(train rows, test rows): per user, stable sort by timestamp; the last row is the test."""
    by_user = {}
    for position, row in enumerate(rows):
        by_user.setdefault(row[0], []).append((float(row[3]), position, row))
    train, test = [], []
    for events in by_user.values():
        ordered = [row for _, _, row in sorted(events)]
        if len(ordered) >= 2:
            train += ordered[:-1]
            test.append(ordered[-1])
        else:
            train += ordered
    return train, test


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "rating", "timestamp"])
        w.writerows(rows)


# ---------------------------------------------------------------------------------------------
# models on disk


def read_safetensors(path):
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    dtypes = {"F32": np.float32, "I32": np.int32, "I64": np.int64}
    return {k: np.frombuffer(body[v["data_offsets"][0] : v["data_offsets"][1]], dtype=dtypes[v["dtype"]]).reshape(v["shape"])
            for k, v in header.items() if k != "__metadata__"}


def load_sasrec_version(directory):
    """(torch SASRec in eval mode, item ids, {user: 1-based sequence}) from a published version."""
    directory = pathlib.Path(directory)
    manifest = json.loads((directory / "model.json").read_text())
    hp = manifest["hyperparameters"]
    tensors = read_safetensors(directory / "weights.safetensors")
    items = (directory / "items.txt").read_text().splitlines()
    users = (directory / "users.txt").read_text().splitlines()
    model = sasrec_torch.SASRec(len(items), maxlen=hp["maxlen"], dim=hp["dim"], blocks=hp["blocks"],
                                heads=hp["heads"], dropout=hp.get("dropout", 0.0))
    model.load_state_dict(sasrec_torch.state_dict_from_tensors(tensors))
    indptr, flat = tensors["sequence_indptr"], tensors["sequence_items"]
    sequences = {u: flat[indptr[k] : indptr[k + 1]].astype(np.int64) + 1 for k, u in enumerate(users)}
    return model.eval(), items, sequences


# ---------------------------------------------------------------------------------------------
# the authors' sampled evaluation, in Python


def sampled_candidates(train_rows, test_rows, seed=42):
    """{user: [test item, 100 negatives]} in external ids: negatives uniform over the training
    items, not in the user's history nor the test item, with replacement (as the authors)."""
    catalog = list(dict.fromkeys(r[1] for r in train_rows))
    known = set(catalog)
    history = {}
    for u, i, _, _ in train_rows:
        history.setdefault(u, set()).add(i)
    rng = np.random.default_rng(seed)
    out = {}
    for u, test_item, _, _ in test_rows:
        seen = history.get(u)
        if not seen or test_item in seen or test_item not in known:
            continue
        negatives = []
        while len(negatives) < NEGATIVES:
            x = catalog[rng.integers(len(catalog))]
            if x not in seen and x != test_item:
                negatives.append(x)
        out[u] = [test_item] + negatives
    return out


def python_sampled_eval(model, item_ids, sequences, candidates):
    """HR@10 and NDCG@10 of a SASRec over the users in `candidates` it knows."""
    index = {x: k + 1 for k, x in enumerate(item_ids)}
    users = [u for u, c in candidates.items() if u in sequences and all(x in index for x in c)]
    h = sasrec_torch.last_hidden(model, [sequences[u] for u in users])
    emb = model.item_emb.weight.detach().numpy()
    hits, ndcg = 0.0, 0.0
    for row, u in enumerate(users):
        s = emb[[index[x] for x in candidates[u]]] @ h[row]
        rank = int((s[1:] >= s[0]).sum())
        if rank < K:
            hits += 1
            ndcg += 1 / float(np.log2(rank + 2))
    n = max(len(users), 1)
    return {"hr@10": hits / n, "ndcg@10": ndcg / n, "users": len(users)}


# ---------------------------------------------------------------------------------------------
# RecServe


def recserve(binary, *args):
    start = time.perf_counter()
    result = subprocess.run([binary, *map(str, args)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"recserve {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1]), wall


def recserve_eval(binary, models, name, version, test_csv):
    out, _ = recserve(binary, "eval", "--models", models, "--name", name, "--version", version,
                      "--data", test_csv, "--protocol", "sampled", "--ks", K, "--json")
    m = out["metrics"]
    return {"hr@10": m.get(f"sampled_hr@{K}"), "ndcg@10": m.get(f"sampled_ndcg@{K}"), "ranking": out.get("ranking")}


# ---------------------------------------------------------------------------------------------


def run_seed(seed, args, work, train_rows, test_rows, candidates):
    models = work / "models"
    train_csv, test_csv = work / "train.csv", work / "test.csv"
    result = {}

    if args.only in ("torch", "all"):
        users, items, seqs = sasrec_torch.load_sequences(train_csv)
        log = None
        if args.log_every:
            def log(epoch, loss, seconds):
                if epoch % args.log_every == 0 or epoch == args.epochs:
                    print(f"  torch seed {seed} epoch {epoch}: loss {loss:.4f}, {seconds:.1f} s", file=sys.stderr)
        model, seconds = sasrec_torch.train(seqs, len(items), epochs=args.epochs, seed=seed, threads=args.threads,
                                            log=log, **HYPER)
        hyper = dict(HYPER, epochs=args.epochs, seed=seed, source="pytorch", torch=torch.__version__)
        path = export_sasrec.export(
            model.state_dict(), hyper, items, [(u, [items[i - 1] for i in s]) for u, s in zip(users, seqs)],
            models, "torch", training_data={"file": "train.csv", "rows": len(train_rows), "users": len(users)})
        entry = {"train_seconds": seconds, "seconds_per_epoch": seconds / args.epochs, "version": int(path.name)}
        entry["python"] = python_sampled_eval(model, items, dict(zip(users, seqs)), candidates)
        result["PyTorch SASRec"] = entry
        print(f"seed {seed}: PyTorch SASRec {args.epochs} epochs in {seconds:.1f} s; python eval {entry['python']}",
              file=sys.stderr)

    if args.only in ("recserve", "all"):
        common = ["--data", train_csv, "--models", models, "--split", "none", "--json", "--seed", seed,
                  "--progress", "none"]
        runs = [
            ("RecServe SASRec", "sasrec", ["--epochs", args.epochs, "--maxlen", HYPER["maxlen"], "--dim", HYPER["dim"],
                                           "--blocks", HYPER["blocks"], "--heads", HYPER["heads"],
                                           "--dropout", HYPER["dropout"], "--lr", HYPER["lr"],
                                           "--batch-size", HYPER["batch"]]),
            ("RecServe BPR", "bpr", []),
            ("RecServe ALS", "als", []),
        ]
        for label, kind, extra in runs:
            out, wall = recserve(args.binary, "train", "--kind", kind, "--name", kind, *common, *extra)
            entry = {"train_seconds": out["train_seconds"], "process_seconds": wall, "version": out["version"]}
            if kind == "sasrec":
                model, items, sequences = load_sasrec_version(out["directory"])
                entry["python"] = python_sampled_eval(model, items, sequences, candidates)
            result[label] = entry
            print(f"seed {seed}: {label} trained in {out['train_seconds']:.2f} s ({wall:.2f} s process)", file=sys.stderr)
        names = {"PyTorch SASRec": "torch", "RecServe SASRec": "sasrec", "RecServe BPR": "bpr", "RecServe ALS": "als"}
        for label, entry in result.items():
            entry["recserve_eval"] = recserve_eval(args.binary, models, names[label], entry["version"], test_csv)
    return result


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def fmt(x, digits=4):
    return "-" if x is None else f"{x:.{digits}f}"


def summarize(per_seed):
    labels = list(dict.fromkeys(label for r in per_seed for label in r))
    summary = {}
    for label in labels:
        entries = [r[label] for r in per_seed if label in r]
        summary[label] = {
            "hr@10": mean([e.get("recserve_eval", {}).get("hr@10") for e in entries]),
            "ndcg@10": mean([e.get("recserve_eval", {}).get("ndcg@10") for e in entries]),
            "python_hr@10": mean([e.get("python", {}).get("hr@10") for e in entries]),
            "python_ndcg@10": mean([e.get("python", {}).get("ndcg@10") for e in entries]),
            "train_seconds": mean([e["train_seconds"] for e in entries]),
            "process_seconds": mean([e.get("process_seconds") for e in entries]),
        }
    return summary


def table(summary):
    lines = ["| model | HR@10 | NDCG@10 | Python HR@10 | Python NDCG@10 | train s | process s |",
             "|---|---|---|---|---|---|---|"]
    for label, s in summary.items():
        lines.append(f"| {label} | {fmt(s['hr@10'])} | {fmt(s['ndcg@10'])} | {fmt(s['python_hr@10'])} | "
                     f"{fmt(s['python_ndcg@10'])} | {fmt(s['train_seconds'], 2)} | {fmt(s['process_seconds'], 2)} |")
    torch_s, ours = summary.get("PyTorch SASRec"), summary.get("RecServe SASRec")
    ratios = {}
    if torch_s and ours:
        def ratio(a, b):
            return a / b if a is not None and b else None
        ratios = {
            "ndcg@10": ratio(ours["ndcg@10"], torch_s["ndcg@10"]),
            "python_ndcg@10": ratio(ours["python_ndcg@10"], torch_s["python_ndcg@10"]),
            "train_seconds": ratio(ours["train_seconds"], torch_s["train_seconds"]),
        }
        lines.append("")
        lines.append(f"RecServe/PyTorch SASRec: NDCG@10 ratio {fmt(ratios['ndcg@10'], 3)} (recserve eval), "
                     f"{fmt(ratios['python_ndcg@10'], 3)} (Python evaluator); "
                     f"train time ratio {fmt(ratios['train_seconds'], 3)}")
    return "\n".join(lines), ratios


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seeds", default="42", help="comma-separated training seeds")
    parser.add_argument("--only", choices=["torch", "recserve", "all"], default="all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--binary", default=os.environ.get("RECSERVE_BIN", str(REPO / ".build" / "release" / "recserve")))
    parser.add_argument("--json", dest="json_out")
    parser.add_argument("--keep", help="work folder to keep (default: a temporary one, removed)")
    parser.add_argument("--log-every", type=int, default=0, help="PyTorch loss every N epochs on stderr")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.only != "torch" and not os.path.exists(args.binary):
        parser.error(f"{args.binary} does not exist: `swift build -c release --product recserve`, "
                     "--binary PATH, or --only torch")

    work = pathlib.Path(args.keep) if args.keep else pathlib.Path(tempfile.mkdtemp(prefix="sasrec-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rows = read_rows(args.data)
        train_rows, test_rows = leave_last_out(rows)
        write_csv(work / "train.csv", train_rows)
        write_csv(work / "test.csv", test_rows)
        candidates = sampled_candidates(train_rows, test_rows)
        print(f"{len(rows)} rows: {len(train_rows)} train, {len(test_rows)} test; "
              f"{len(candidates)} users in the Python evaluation", file=sys.stderr)
        per_seed = [run_seed(seed, args, work, train_rows, test_rows, candidates) for seed in seeds]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    summary = summarize(per_seed)
    text, ratios = table(summary)
    print(f"SASRec on {os.path.basename(args.data)}, leave-last-out, {args.epochs} epochs, seeds {seeds}, "
          f"{args.threads} threads, torch {torch.__version__}\n")
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"data": args.data, "epochs": args.epochs, "seeds": seeds, "threads": args.threads,
                       "hyperparameters": HYPER, "torch": torch.__version__, "summary": summary,
                       "ratios": ratios, "per_seed": per_seed}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
