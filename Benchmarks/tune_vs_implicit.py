#!/usr/bin/env python3
"""RecServe's defaults, RecServe with `--tune N`, and `implicit`'s defaults, on every data set
(issue 11, done-when 1); and explicit MF's defaults against MF with `--tune N` (done-when 2).

Each data set is split leave-last-out in Python (each user's latest interaction held out);
`recserve train --split none` and `implicit` train on the rest, RecServe's `--tune` carving its
own validation rows out of that training part (it never sees the held-out rows); every model's
factors are scored by the same full ranking of every item not in the user's training history.
64 factors, 2 threads, BPR 100 epochs and ALS 15 iterations for everyone, each library's own
defaults otherwise (implicit 0.7.3: BPR lr 0.01 with plain sampling, ALS alpha 1.0).

    swift build -c release --product recserve && pip install implicit threadpoolctl numpy scipy
    python3 Benchmarks/datasets.py
    python3 Benchmarks/tune_vs_implicit.py [--tune 20] [--seeds 2] [--datasets ml-100k,...]
    python3 Benchmarks/tune_vs_implicit.py --datasets completejourney --kinds bpr,als   # the larger purchase log

Prints a markdown table per kind: NDCG@10 and HR@10 (means over seeds), the ratios to implicit,
and seconds (RecServe's whole `recserve train` process, tuning included; implicit's fit). Each
ratio comes with the 5-95% range of the same ratio over the test users resampled with replacement
(each user's NDCG averaged over seeds first): on a set with few test users a ratio moves that much
with the users alone, so a ratio whose range straddles 1 is a tie.

MF (`--kinds mf`, on the data sets with explicit ratings, so not instacart or completejourney):
`recserve train --kind mf` on the whole file with its default random 10% holdout (seeded, so the
defaults and the tuned run are scored on the same held-out rows, which the search never sees: it
carves its validation rows from the other 90%); 20 epochs, dim 64 unless the search picks
another; RMSE, mean over seeds.
"""

import json
import subprocess
import time

import argparse
import os
import pathlib
import sys
import tempfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import datasets  # noqa: E402
import implicit_vs_recserve as ivr  # noqa: E402
from defaults_sweep import prepare  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data" / "ml-latest-small" / "ratings.csv"
# Purchase logs: their "rating" is a purchase count, not an explicit rating, so no MF row.
IMPLICIT_ONLY = {"instacart", "completejourney"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="ml-latest-small,ml-100k,ml-1m,instacart,insteval")
    parser.add_argument("--kinds", default="bpr,als,mf")
    parser.add_argument("--tune", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/recserve-datasets"))
    parser.add_argument("--binary", default=str(HERE.parent / ".build" / "release" / "recserve"))
    args = parser.parse_args()

    from implicit.cpu.als import AlternatingLeastSquares  # noqa: PLC0415
    from implicit.cpu.bpr import BayesianPersonalizedRanking  # noqa: PLC0415

    binary = ivr.ensure_binary(args.binary)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tune-vs-implicit-"))
    rows_out = {kind: [] for kind in args.kinds.split(",") if kind != "mf"}
    mf_rows = []
    for name in args.datasets.split(","):
        path = SHARED if name == "ml-latest-small" else datasets.fetch(name, pathlib.Path(args.data_dir))
        if not path.exists():
            print(f"skipping {name}: {path} is not there", file=sys.stderr)
            continue
        if "mf" in args.kinds.split(",") and name not in IMPLICIT_ONLY:
            runs = {label: [run_mf(binary, path, tmp / "models", seed, extra)
                            for seed in range(42, 42 + args.seeds)]
                    for label, extra in (("default", []), ("tuned", ["--tune", str(args.tune)]))}
            mean = {k: [float(np.mean([r[j] for r in v])) for j in range(2)] for k, v in runs.items()}
            mf_rows.append((name, mean, runs))
            print(f"{name} mf: rmse defaults {mean['default'][0]:.4f}, tuned {mean['tuned'][0]:.4f}",
                  file=sys.stderr, flush=True)
        if not rows_out:
            continue
        split, train_csv, _ = prepare(path, tmp)
        for kind in rows_out:
            common = ["--dim", "64", "--threads", "2", "--epochs", "100" if kind == "bpr" else "15"]
            runs = {"default": [], "tuned": [], "implicit": []}
            gains = {"default": [], "tuned": [], "implicit": []}
            for seed in range(42, 42 + args.seeds):
                for label, extra in (("default", []), ("tuned", ["--tune", str(args.tune)])):
                    u, uf, i, itf, _, wall = ivr.run_recserve(
                        binary, str(train_csv), str(tmp / "models"), f"{kind}-{label}", kind, common + extra, seed)
                    runs[label].append((*split.evaluate(u, uf, i, itf), wall))
                    gains[label].append(split.user_ndcg(u, uf, i, itf))
                model = (BayesianPersonalizedRanking(factors=64, iterations=100, num_threads=2, random_state=seed)
                         if kind == "bpr" else
                         AlternatingLeastSquares(factors=64, iterations=15, num_threads=2, random_state=seed))
                u, uf, i, itf, seconds = ivr.run_implicit(model, split)
                runs["implicit"].append((*split.evaluate(u, uf, i, itf), seconds))
                gains["implicit"].append(split.user_ndcg(u, uf, i, itf))
            mean = {k: [float(np.mean([r[j] for r in v])) for j in range(3)] for k, v in runs.items()}
            user = {k: np.mean(v, axis=0) for k, v in gains.items()}  # each test user's mean over seeds
            spread = {k: ivr.ratio_interval(user[k], user["implicit"]) for k in ("default", "tuned")}
            rows_out[kind].append((name, mean, spread, len(split.test)))
            print(f"{name} {kind}: " + ", ".join(f"{k} ndcg@10 {v[0]:.4f} ({v[2]:.1f} s)" for k, v in mean.items()),
                  file=sys.stderr, flush=True)

    for kind, table in rows_out.items():
        print(f"\n{kind}: NDCG@10 / HR@10, mean of {args.seeds} seeds; --tune {args.tune}; ratios with the "
              "5-95% range over test users resampled (paired bootstrap)")
        print("| data set | test users | defaults | --tune | implicit | defaults / implicit | tuned / implicit | "
              "HR@10 defaults / tuned / implicit | seconds defaults / tuned / implicit |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, m, spread, users in table:
            d, t, im = m["default"], m["tuned"], m["implicit"]
            (dl, dh), (tl, th) = spread["default"], spread["tuned"]
            print(f"| {name} | {users} | {d[0]:.4f} | {t[0]:.4f} | {im[0]:.4f} | {d[0] / im[0]:.2f} ({dl:.2f}-{dh:.2f}) | "
                  f"{t[0] / im[0]:.2f} ({tl:.2f}-{th:.2f}) | "
                  f"{d[1]:.4f} / {t[1]:.4f} / {im[1]:.4f} | {d[2]:.1f} / {t[2]:.1f} / {im[2]:.1f} |")

    if mf_rows:
        print(f"\nmf: held-out RMSE (random 10%), mean of {args.seeds} seeds; --tune {args.tune}")
        print("| data set | defaults RMSE | --tune RMSE | tuned / defaults | tuned lower on every seed | "
              "seconds defaults / tuned |")
        print("|---|---|---|---|---|---|")
        for name, m, runs in mf_rows:
            d, t = m["default"], m["tuned"]
            every = all(b[0] < a[0] for a, b in zip(runs["default"], runs["tuned"]))
            print(f"| {name} | {d[0]:.4f} | {t[0]:.4f} | {t[0] / d[0]:.3f} | {'yes' if every else 'no'} | "
                  f"{d[1]:.1f} / {t[1]:.1f} |")


def run_mf(binary, data, models, seed, extra):
    """(held-out RMSE, wall seconds) of `recserve train --kind mf` with its default holdout."""
    cmd = [binary, "train", "--data", str(data), "--kind", "mf", "--models", str(models), "--name", "mf",
           "--seed", str(seed), "--threads", "2", "--json", "--quiet", *extra]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"recserve failed: {' '.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])["metrics"]["rmse"], wall


if __name__ == "__main__":
    main()
