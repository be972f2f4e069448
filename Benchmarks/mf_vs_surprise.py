#!/usr/bin/env python3
"""RecServe MF vs scikit-surprise SVD on one random 90/10 split of a ratings file.

Makes ONE seeded random split in Python, writes train/test CSVs to a temp dir, then
  - fits surprise.SVD() (default parameters, fixed random_state) on train and tests on test;
  - runs `recserve train --holdout 0 --data train.csv` and `recserve eval --data test.csv --json`
    with the release binary (built with `swift build -c release` if missing), once per RecServe
    variant: SGD (the default), Adam (`--optimizer adam`, lr 0.002), and Adam with early stopping
    (`--epochs 40 --early-stopping 3`: 10% of train.csv, seeded, becomes the validation slice
    that picks the epoch; test.csv is never seen during training);
and prints RMSE, MAE and training seconds side by side.

Usage: python3 Benchmarks/mf_vs_surprise.py [RATINGS_CSV] [--seed S] [--binary PATH]
                                            [--test-fraction F] [--recserve-args ARGS] [--json]
                                            [--only-default]
The default ratings file is <repo>/../shared/data/ml-latest-small/ratings.csv.
"""

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "ml-latest-small", "ratings.csv")


def read_ratings(path):
    """Rows (user, item, rating, timestamp) as strings/float; header detected."""
    with open(path, newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
        reader = csv.reader(f, delimiter=delimiter)
        rows = []
        for i, rec in enumerate(reader):
            if not rec:
                continue
            if i == 0:
                try:
                    float(rec[2])
                except (ValueError, IndexError):
                    continue  # header
            rows.append((rec[0], rec[1], float(rec[2]), rec[3] if len(rec) > 3 else "0"))
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "rating", "timestamp"])
        for u, i, r, t in rows:
            w.writerow([u, i, repr(r) if r != int(r) else int(r), t])


def ensure_binary(path):
    if os.path.exists(path):
        return path
    print(f"building {path} (swift build -c release) ...", file=sys.stderr)
    subprocess.run(["swift", "build", "-c", "release", "--product", "recserve"], cwd=REPO, check=True)
    if not os.path.exists(path):
        sys.exit(f"error: {path} not found after building")
    return path


def run_surprise(train_csv, test, seed, rating_scale):
    from surprise import SVD, Dataset, Reader, accuracy

    reader = Reader(line_format="user item rating timestamp", sep=",", skip_lines=1,
                    rating_scale=rating_scale)
    data = Dataset.load_from_file(train_csv, reader=reader)
    t0 = time.perf_counter()
    trainset = data.build_full_trainset()
    algo = SVD(random_state=seed)
    algo.fit(trainset)
    fit_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    predictions = algo.test([(u, i, r) for u, i, r, _ in test])
    test_seconds = time.perf_counter() - t1
    rmse = accuracy.rmse(predictions, verbose=False)
    mae = accuracy.mae(predictions, verbose=False)
    return {"rmse": rmse, "mae": mae, "train_seconds": fit_seconds, "eval_seconds": test_seconds}


def run_recserve(binary, train_csv, test_csv, workdir, seed, extra):
    models = os.path.join(workdir, "models")
    cmd = [binary, "train", "--data", train_csv, "--kind", "mf", "--name", "bench", "--models", models,
           "--holdout", "0", "--seed", str(seed), "--json", "--quiet"] + extra
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    trained = json.loads(out.stdout)
    cmd = [binary, "eval", "--models", models, "--name", "bench", "--data", test_csv, "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    evaluated = json.loads(out.stdout)
    return {
        "epochs_run": trained["metrics"].get("epochs_run"),
        "best_epoch": trained["metrics"].get("best_epoch"),
        "rmse": evaluated["metrics"]["rmse"],
        "mae": evaluated["metrics"]["mae"],
        "train_seconds": trained["train_seconds"],
        "train_wall_seconds": wall,
        "eval_seconds": evaluated["eval_seconds"],
        "unknown_pairs": evaluated["unknown_pairs"],
        "train_command": " ".join(cmd[:1]) + " train ...",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ratings", nargs="?", default=DEFAULT_DATA)
    ap.add_argument("--seed", type=int, default=42, help="seed of the split and of both models")
    ap.add_argument("--test-fraction", type=float, default=0.1)
    ap.add_argument("--binary", default=os.path.join(REPO, ".build", "release", "recserve"))
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    ap.add_argument("--recserve-args", default="",
                    help="extra `recserve train` options for every variant, e.g. '--threads 2'")
    ap.add_argument("--only-default", action="store_true", help="run only the default (SGD) variant")
    args = ap.parse_args()

    if not os.path.exists(args.ratings):
        sys.exit(f"error: {args.ratings} not found")
    binary = ensure_binary(args.binary)
    rows = read_ratings(args.ratings)
    rng = random.Random(args.seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    n_test = int(len(rows) * args.test_fraction)
    test = [rows[k] for k in sorted(order[:n_test])]
    train = [rows[k] for k in sorted(order[n_test:])]

    with tempfile.TemporaryDirectory(prefix="mf-bench-") as tmp:
        train_csv = os.path.join(tmp, "train.csv")
        test_csv = os.path.join(tmp, "test.csv")
        write_csv(train_csv, train)
        write_csv(test_csv, test)
        extra = args.recserve_args.split()
        variants = [("recserve mf sgd (release)", [])]
        if not args.only_default:
            variants += [
                ("recserve mf (adam)", ["--optimizer", "adam"]),
                ("recserve mf (adam, early stop)",
                 ["--optimizer", "adam", "--epochs", "40", "--early-stopping", "3"]),
            ]
        recs = [(label, run_recserve(binary, train_csv, test_csv, tmp, args.seed, opts + extra))
                for label, opts in variants]
        rec = recs[0][1]
        rating_scale = (min(r for _, _, r, _ in train), max(r for _, _, r, _ in train))
        sup = run_surprise(train_csv, test, args.seed, rating_scale)

    print(f"data: {args.ratings}")
    print(f"split: {len(train)} train / {len(test)} test rows (seed {args.seed}); "
          f"{rec['unknown_pairs']} test pairs with an unknown user or item")
    print()
    header = f"{'model':<34}{'RMSE':>8}{'MAE':>8}{'train s':>10}{'epochs':>15}"
    print(header)
    print("-" * len(header))
    print(f"{'surprise SVD() defaults':<34}{sup['rmse']:>8.4f}{sup['mae']:>8.4f}{sup['train_seconds']:>10.3f}"
          f"{20:>15}")
    for label, r in recs:
        epochs = f"{r['epochs_run']:.0f}" if r["epochs_run"] is not None else "?"
        if r["best_epoch"] is not None:
            epochs += f" (kept {r['best_epoch']:.0f})"
        print(f"{label:<34}{r['rmse']:>8.4f}{r['mae']:>8.4f}{r['train_seconds']:>10.3f}{epochs:>15}")
    print()
    for label, r in recs:
        print(f"{label}: RMSE {r['rmse'] - sup['rmse']:+.4f} vs surprise "
              f"(ratio {r['rmse'] / sup['rmse']:.4f}), MAE ratio {r['mae'] / sup['mae']:.4f}, "
              f"train time {sup['train_seconds'] / r['train_seconds']:.1f}x faster "
              f"(whole `recserve train` process: {r['train_wall_seconds']:.3f} s)")
    if args.json:
        print(json.dumps({"surprise": sup, "recserve": rec,
                          "recserve_variants": {label: r for label, r in recs}}))


if __name__ == "__main__":
    main()
