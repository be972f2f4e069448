#!/usr/bin/env python3
"""RecServe BPR and ALS vs the `implicit` library's BPR and ALS, leave-last-out, full ranking.

Makes ONE leave-last-out split in Python (each user's row with the latest timestamp is held out;
ties go to the last such row in file order; users with one row keep it in train), writes
train.csv, and then for each repeat (seed) and model:
  - RecServe: `recserve train --kind bpr|als --split none --data train.csv --json` with the release
    binary (`swift build -c release --product recserve` if missing); the published factors are
    read back from weights.safetensors;
  - implicit: `implicit.cpu.bpr.BayesianPersonalizedRanking` / `implicit.cpu.als.
    AlternatingLeastSquares` fitted on the same training matrix (binary, one per distinct pair);
and evaluates both sets of factors with the SAME Python code: for every test user whose held-out
item occurs in train, rank all items not in the user's training history by p_u·q_i; HR@10 is
whether the held-out item is in the top 10, NDCG@10 = 1/log2(rank + 2) (rank 0-based; ties count
against the held-out item). Both use the same factors, iterations, regularisation and confidence
(ALS), and 2 threads; the BPR learning rate is each library's default (see below). Time is the training call only (implicit's `fit`;
RecServe's reported train_seconds, which excludes reading the CSV, evaluation and publishing);
the RecServe process wall time (load + train + eval + publish) is shown too.

ALS confidence: RecServe uses c = 1 + alpha*r (Hu et al.); implicit uses c = alpha*r as given.
On binary data implicit alpha=A is RecServe alpha=A-1, so both configurations below train the same
objective: "c=1" (implicit's default alpha=1.0) and "c=40" (Hu et al.'s alpha 40).

BPR: both learn an item bias as an extra factor column (65 columns for 64 factors, as implicit).
The "BPR" row runs each library with its own defaults apart from factors, epochs, threads and
reg: RecServe's sampler is uniform negatives, the highest-scored of 3 draws per step (dynamic
negative sampling, Zhang et al. 2013) with learning rate 0.05; implicit draws one negative per
step in proportion to popularity, skips the step when it is one of the user's items, and uses
learning rate 0.01. `--variants` adds "BPR implicit lr .05" (implicit at RecServe's learning rate:
it gets worse) and "BPR plain, lr .01", where RecServe runs implicit's exact algorithm
(`--negative-sampling popularity --negative-candidates 1 --lr 0.01`): a tie within seed noise.

Explicit MF: the same script then runs `Benchmarks/mf_vs_surprise.py`'s comparison on one seeded
random 90/10 split of the same file: RecServe MF with Adam (`--optimizer adam`) against
scikit-surprise `SVD()` with its defaults, RMSE/MAE on the 10% and training time (skip with
--no-mf).

Usage: python3 Benchmarks/implicit_vs_recserve.py [RATINGS_CSV] [--repeats N] [--factors 64]
          [--threads 2] [--bpr-iterations 100] [--als-iterations 15] [--binary PATH] [--json]
          [--variants] [--no-mf] [--only bpr|als]
Needs numpy, scipy, implicit and scikit-surprise (`pip install implicit scikit-surprise`).
"""

import argparse
import csv
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "ml-latest-small", "ratings.csv")


def read_ratings(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if rows and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]
    return [(r[0], r[1], float(r[2]), int(float(r[3]))) for r in rows if len(r) >= 4]


def leave_last_out(rows):
    last = {}
    count = {}
    for k, (u, _, _, t) in enumerate(rows):
        count[u] = count.get(u, 0) + 1
        if u not in last or t >= rows[last[u]][3]:
            last[u] = k
    test_rows = {k for u, k in last.items() if count[u] >= 2}
    train = [r for k, r in enumerate(rows) if k not in test_rows]
    test = [rows[k] for k in sorted(test_rows)]
    return train, test


class Split:
    def __init__(self, train, test):
        self.users = sorted({r[0] for r in train})
        self.items = sorted({r[1] for r in train})
        self.uidx = {u: j for j, u in enumerate(self.users)}
        self.iidx = {i: j for j, i in enumerate(self.items)}
        pairs = {(self.uidx[r[0]], self.iidx[r[1]]) for r in train}
        ui = np.array(sorted(pairs), dtype=np.int64)
        self.matrix = sp.csr_matrix(
            (np.ones(len(ui), dtype=np.float32), (ui[:, 0], ui[:, 1])),
            shape=(len(self.users), len(self.items)))
        self.test = [(self.uidx[u], self.iidx[i]) for u, i, _, _ in test
                     if u in self.uidx and i in self.iidx]
        self.skipped = len(test) - len(self.test)

    def evaluate(self, user_ids, user_factors, item_ids, item_factors, k=10):
        """Full-ranking NDCG@k and HR@k; factors are aligned to this split's ids by id."""
        gains = self.user_ndcg(user_ids, user_factors, item_ids, item_factors, k)
        n = max(1, len(gains))
        return float(gains.sum()) / n, float((gains > 0).sum()) / n

    def user_ndcg(self, user_ids, user_factors, item_ids, item_factors, k=10):
        """Each scored test user's NDCG@k (0 for a miss), in the order of `self.test`."""
        U = np.zeros((len(self.users), user_factors.shape[1]), dtype=np.float32)
        I = np.zeros((len(self.items), item_factors.shape[1]), dtype=np.float32)
        for j, u in enumerate(user_ids):
            if u in self.uidx:
                U[self.uidx[u]] = user_factors[j]
        for j, i in enumerate(item_ids):
            if i in self.iidx:
                I[self.iidx[i]] = item_factors[j]
        scores = U @ I.T
        scores[self.matrix.nonzero()] = -np.inf
        gains = np.zeros(len(self.test))
        for n, (u, i) in enumerate(self.test):
            s = scores[u]
            rank = int((s >= s[i]).sum()) - 1  # ties count against the held-out item
            if rank < k:
                gains[n] = 1 / np.log2(rank + 2)
        return gains


def ratio_interval(a, b, draws=2000, seed=0):
    """The 5th and 95th percentiles of mean(a) / mean(b) over test users resampled with
    replacement (paired: one user's two gains stay together): how far the test rows alone can
    move a ratio, whatever the training seed."""
    rng = np.random.default_rng(seed)
    n = len(a)
    ratios = []
    for _ in range(draws):
        k = rng.integers(0, n, n)
        den = b[k].mean()
        if den > 0:
            ratios.append(a[k].mean() / den)
    return tuple(np.percentile(ratios, [5, 95])) if ratios else (float("nan"), float("nan"))


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        dtype = {"F32": np.float32, "I32": np.int32, "I64": np.int64}[meta["dtype"]]
        out[name] = np.frombuffer(data[a:b], dtype=dtype).reshape(meta["shape"])
    return out


def ensure_binary(path):
    if os.path.exists(path):
        return path
    print("building the release binary ...", file=sys.stderr)
    subprocess.run(["swift", "build", "-c", "release", "--product", "recserve"], cwd=REPO, check=True)
    return path


def run_recserve(binary, train_csv, models, name, kind, args, seed):
    cmd = [binary, "train", "--data", train_csv, "--kind", kind, "--split", "none",
           "--models", models, "--name", name, "--seed", str(seed), "--json", "--quiet"] + args
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"recserve failed: {' '.join(cmd)}\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    d = result["directory"]
    w = read_safetensors(os.path.join(d, "weights.safetensors"))
    users = open(os.path.join(d, "users.txt")).read().split("\n")[:-1]
    items = open(os.path.join(d, "items.txt")).read().split("\n")[:-1]
    return users, w["user_factors"], items, w["item_factors"], result["train_seconds"], wall


def run_implicit(model, split):
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, single-threaded BLAS
        t0 = time.perf_counter()
        model.fit(split.matrix, show_progress=False)
        seconds = time.perf_counter() - t0
    uf = np.asarray(model.user_factors)
    itf = np.asarray(model.item_factors)
    return split.users, uf, split.items, itf, seconds


def parse_args():
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", default=DEFAULT_DATA)
    p.add_argument("--repeats", type=int, default=10,
                   help="seeds per model (means are reported); 587 test users make one seed noisy")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bpr-iterations", type=int, default=100)
    p.add_argument("--bpr-lr", type=float, default=None,
                   help="BPR learning rate for both (default: each library's own, RecServe 0.05, "
                        "implicit 0.01)")
    p.add_argument("--bpr-reg", type=float, default=0.01)
    p.add_argument("--als-iterations", type=int, default=15)
    p.add_argument("--als-reg", type=float, default=0.01)
    p.add_argument("--recserve-bpr-args", default="", help="extra `recserve train` args for BPR")
    p.add_argument("--recserve-als-args", default="", help="extra `recserve train` args for ALS")
    p.add_argument("--only", choices=["bpr", "als"], help="run one model family")
    p.add_argument("--binary", default=os.path.join(REPO, ".build", "release", "recserve"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--variants", action="store_true",
                   help="also run implicit BPR at lr 0.05, and RecServe BPR as implicit's algorithm")
    p.add_argument("--no-mf", action="store_true", help="skip the explicit MF vs surprise part")
    return p.parse_args()


def make_configs(a):
    """The models to compare, as (label, kind, `recserve train` args, seed -> implicit model):
    BPR, the --variants, ALS c=1 and c=40; only the --only family when it is given."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    F, T = a.factors, a.threads

    def bpr_config(label, extra, recserve_lr=a.bpr_lr, implicit_lr=a.bpr_lr or 0.01):
        lr = ["--lr", str(recserve_lr)] if recserve_lr else []
        return (label, "bpr",
                ["--factors", str(F), "--epochs", str(a.bpr_iterations), "--reg", str(a.bpr_reg),
                 "--threads", str(T)] + lr + extra + a.recserve_bpr_args.split(),
                lambda seed: BayesianPersonalizedRanking(
                    factors=F, learning_rate=implicit_lr, regularization=a.bpr_reg,
                    iterations=a.bpr_iterations, num_threads=T, random_state=seed))

    configs = [bpr_config("BPR", [])]
    if a.variants:
        # implicit at RecServe's learning rate, and RecServe running implicit's exact algorithm.
        configs.append(bpr_config("BPR implicit lr .05", [], implicit_lr=0.05))
        configs.append(bpr_config("BPR plain, lr .01",
                                  ["--negative-sampling", "popularity", "--negative-candidates", "1"],
                                  recserve_lr=0.01, implicit_lr=0.01))
    for c in (1.0, 40.0):
        configs.append((
            f"ALS c={c:g}", "als",
            ["--factors", str(F), "--iterations", str(a.als_iterations), "--reg", str(a.als_reg),
             "--alpha", str(c - 1), "--threads", str(T)] + a.recserve_als_args.split(),
            lambda seed, c=c: AlternatingLeastSquares(
                factors=F, regularization=a.als_reg, alpha=c, iterations=a.als_iterations,
                num_threads=T, random_state=seed)))

    if a.only:
        configs = [c for c in configs if c[1] == a.only]
    return configs


def write_train_csv(train, tmp):
    """Writes the training rows, with a header, as `tmp`/train.csv; returns its path."""
    train_csv = os.path.join(tmp, "train.csv")
    with open(train_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "movieId", "rating", "timestamp"])
        w.writerows(train)
    return train_csv


def run_configs(configs, binary, train_csv, models, split, repeats):
    """Trains each config `repeats` times (seeds 42, 43, ...) with RecServe and with implicit and
    evaluates both on `split`; returns each config's means and its runs."""
    results = []
    for label, kind, rargs, make in configs:
        acc = {"rs": [], "im": []}
        for rep in range(repeats):
            seed = 42 + rep
            u, uf, i, itf, secs, wall = run_recserve(binary, train_csv, models, f"{kind}{rep}{len(results)}", kind, rargs, seed)
            nd, hr = split.evaluate(u, uf, i, itf)
            acc["rs"].append((nd, hr, secs, wall))
            u, uf, i, itf, secs = run_implicit(make(seed), split)
            nd, hr = split.evaluate(u, uf, i, itf)
            acc["im"].append((nd, hr, secs, secs))
        mean = {k: [float(np.mean([x[j] for x in v])) for j in range(4)] for k, v in acc.items()}
        results.append({
            "model": label,
            "recserve": {"ndcg@10": mean["rs"][0], "hr@10": mean["rs"][1],
                         "train_seconds": mean["rs"][2], "process_seconds": mean["rs"][3]},
            "implicit": {"ndcg@10": mean["im"][0], "hr@10": mean["im"][1],
                         "train_seconds": mean["im"][2]},
            "runs": acc,
        })
    return results


def print_setup(a, info):
    """The data, the split and the training settings."""
    skipped = info["test_users_skipped_item_not_in_train"]
    print(f"data {a.data}: {info['rows']} rows, leave-last-out: {info['train_rows']} train rows, "
          f"{info['test_users']} test users ({skipped} skipped: held-out item not in train); "
          f"factors {info['factors']}, threads {info['threads']}, mean of {a.repeats} seeds; "
          f"implicit {info['implicit_version']}")
    lr = f"lr {a.bpr_lr}" if a.bpr_lr else "each library's default lr (RecServe 0.05, implicit 0.01)"
    print(f"BPR: {a.bpr_iterations} epochs, {lr}, reg {a.bpr_reg}; "
          f"ALS: {a.als_iterations} iterations, reg {a.als_reg}, 3 CG steps")


def print_ranking(results):
    """The table of NDCG@10, HR@10 and training time, RecServe against implicit, with the ratios."""
    hdr = (f"{'model':<20} {'RecServe NDCG@10':>16} {'implicit NDCG@10':>16} {'ratio':>6} "
           f"{'RecServe HR@10':>14} {'implicit HR@10':>14} {'ratio':>6} "
           f"{'RecServe s':>10} {'implicit s':>10} {'ratio':>6} {'RecServe process s':>18}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        rs, im = r["recserve"], r["implicit"]
        print(f"{r['model']:<20} {rs['ndcg@10']:>16.4f} {im['ndcg@10']:>16.4f} "
              f"{rs['ndcg@10'] / max(im['ndcg@10'], 1e-12):>6.2f} "
              f"{rs['hr@10']:>14.4f} {im['hr@10']:>14.4f} {rs['hr@10'] / max(im['hr@10'], 1e-12):>6.2f} "
              f"{rs['train_seconds']:>10.3f} {im['train_seconds']:>10.3f} "
              f"{rs['train_seconds'] / max(im['train_seconds'], 1e-12):>6.2f} {rs['process_seconds']:>18.3f}")


def print_seed_differences(results):
    """Each seed's NDCG@10 difference, RecServe - implicit, with their mean and sd."""
    print("per seed, NDCG@10 RecServe - implicit (paired on the same split and seed):")
    for r in results:
        diffs = [x[0] - y[0] for x, y in zip(r["runs"]["rs"], r["runs"]["im"])]
        sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else float("nan")
        print(f"  {r['model']:<20} " + " ".join(f"{d:+.4f}" for d in diffs)
              + f"   mean {np.mean(diffs):+.4f}, sd {sd:.4f}")


def print_mf(mf, repeats):
    """The explicit MF table, surprise SVD() against RecServe MF (Adam), with the ratios."""
    print(f"explicit MF on a random 90/10 split of the same file (mean of {repeats} split seeds):")
    h = f"{'model':<28}{'RMSE':>8}{'MAE':>8}{'train s':>10}"
    print(h)
    print("-" * len(h))
    for label, m in (("surprise SVD() defaults", mf["surprise"]), ("RecServe mf --optimizer adam", mf["recserve"])):
        print(f"{label:<28}{m['rmse']:>8.4f}{m['mae']:>8.4f}{m['train_seconds']:>10.3f}")
    rs, su = mf["recserve"], mf["surprise"]
    print(f"RMSE ratio {rs['rmse'] / su['rmse']:.3f}, time ratio {rs['train_seconds'] / su['train_seconds']:.2f}; "
          f"RecServe RMSE lower in {mf['wins']} of {repeats} splits")


def print_checks(results, mf):
    """Issue 4's checks: quality at least implicit's in at most 1.5x its time; MF beats SVD() on both."""
    print("checks (issue 4):")
    for r in results:
        rs, im = r["recserve"], r["implicit"]
        ok_q = rs["ndcg@10"] >= im["ndcg@10"]
        ok_t = rs["train_seconds"] <= 1.5 * im["train_seconds"]
        print(f"  {r['model']:<20} NDCG@10 >= implicit: {'yes' if ok_q else 'NO'}; "
              f"time <= 1.5x implicit: {'yes' if ok_t else 'NO'}")
    if mf:
        rs, su = mf["recserve"], mf["surprise"]
        print(f"  {'MF adam vs SVD()':<20} RMSE lower: {'yes' if rs['rmse'] < su['rmse'] else 'NO'}; "
              f"less time: {'yes' if rs['train_seconds'] < su['train_seconds'] else 'NO'}")


def main():
    a = parse_args()

    import implicit

    configs = make_configs(a)
    binary = ensure_binary(a.binary)
    rows = read_ratings(a.data)
    train, test = leave_last_out(rows)
    split = Split(train, test)
    tmp = tempfile.mkdtemp(prefix="implicit-vs-recserve-")
    train_csv = write_train_csv(train, tmp)
    results = run_configs(configs, binary, train_csv, os.path.join(tmp, "models"), split, a.repeats)

    mf = None if a.no_mf else run_mf_vs_surprise(binary, a.data, a.repeats)

    info = {
        "data": a.data, "rows": len(rows), "train_rows": len(train), "test_users": len(split.test),
        "test_users_skipped_item_not_in_train": split.skipped, "users": len(split.users),
        "items": len(split.items), "factors": a.factors, "threads": a.threads, "repeats": a.repeats,
        "implicit_version": implicit.__version__,
    }
    if a.json:
        print(json.dumps({"setup": info, "results": results, "mf_vs_surprise": mf}, indent=1))
        return
    print_setup(a, info)
    print_ranking(results)
    print()
    print_seed_differences(results)
    if mf:
        print()
        print_mf(mf, a.repeats)
    print()
    print_checks(results, mf)


def run_mf_vs_surprise(binary, data, repeats):
    """RecServe MF (Adam) and surprise SVD() on `repeats` seeded random 90/10 splits; the means."""
    import random

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import mf_vs_surprise as mfs

    rows = mfs.read_ratings(data)
    runs = {"recserve": [], "surprise": []}
    for rep in range(repeats):
        seed = 42 + rep
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        n_test = len(rows) // 10
        test = [rows[k] for k in sorted(order[:n_test])]
        train = [rows[k] for k in sorted(order[n_test:])]
        with tempfile.TemporaryDirectory(prefix="mf-vs-surprise-") as tmp:
            train_csv = os.path.join(tmp, "train.csv")
            test_csv = os.path.join(tmp, "test.csv")
            mfs.write_csv(train_csv, train)
            mfs.write_csv(test_csv, test)
            runs["recserve"].append(mfs.run_recserve(binary, train_csv, test_csv, tmp, seed, ["--optimizer", "adam"]))
            scale = (min(r for _, _, r, _ in train), max(r for _, _, r, _ in train))
            runs["surprise"].append(mfs.run_surprise(train_csv, test, seed, scale))
    keys = ("rmse", "mae", "train_seconds")
    mean = {k: {m: float(np.mean([r[m] for r in v])) for m in keys} for k, v in runs.items()}
    mean["wins"] = sum(a["rmse"] < b["rmse"] for a, b in zip(runs["recserve"], runs["surprise"]))
    mean["runs"] = {k: [{m: r[m] for m in keys} for r in v] for k, v in runs.items()}
    return mean

if __name__ == "__main__":
    main()
