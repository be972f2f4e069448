#!/usr/bin/env python3
"""How far can any ALS setting get on one data set? An oracle check for issue 11's `--tune 20`
line (tuned at least 1.1x implicit's defaults): every point of a grid of ALS settings is scored on
the TEST rows of tune_vs_implicit.py's leave-last-out split, which no tuner may read. If even the
best grid point (an upward-biased pick: the maximum of many noisy scores) stays below 1.1x, no
search over these settings can reach it on that data set.

Grid: alpha 0.1, 0.3, 1, 3, 10, 30 x reg 0.01, 0.1, 1, 10, 100 x recency weight off / default;
64 factors, 15 iterations, 2 threads (tune_vs_implicit.py's protocol); mean of --seeds seeds,
against implicit's ALS at its defaults on the same seeds.

    swift build -c release --product recserve && pip install implicit threadpoolctl numpy scipy
    python3 Benchmarks/datasets.py
    python3 Benchmarks/als_oracle_grid.py [--dataset instacart] [--seeds 2]   # about 3 minutes
"""

import argparse
import itertools
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="instacart")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/recserve-datasets"))
    parser.add_argument("--binary", default=str(HERE.parent / ".build" / "release" / "recserve"))
    args = parser.parse_args()
    from implicit.cpu.als import AlternatingLeastSquares  # noqa: PLC0415

    binary = ivr.ensure_binary(args.binary)
    path = datasets.fetch(args.dataset, pathlib.Path(args.data_dir))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="als-oracle-"))
    split, train_csv, _ = prepare(path, tmp)
    seeds = range(42, 42 + args.seeds)
    baseline = []
    for seed in seeds:
        model = AlternatingLeastSquares(factors=64, iterations=15, num_threads=2, random_state=seed)
        u, uf, i, itf, _ = ivr.run_implicit(model, split)
        baseline.append(split.evaluate(u, uf, i, itf)[0])
    base = float(np.mean(baseline))
    print(f"{args.dataset}: {len(split.test)} test users; implicit ALS defaults NDCG@10 {base:.4f} "
          f"(mean of {args.seeds} seeds)\n")
    print("| alpha | reg | recency | NDCG@10 | / implicit |\n|---|---|---|---|---|")
    rows = []
    for alpha, reg, recency in itertools.product([0.1, 0.3, 1, 3, 10, 30], [0.01, 0.1, 1, 10, 100],
                                                 ["off", "default"]):
        extra = ["--dim", "64", "--threads", "2", "--epochs", "15", "--alpha", str(alpha), "--reg", str(reg)]
        if recency == "off":
            extra += ["--recency-boost", "0"]
        scores = []
        for seed in seeds:
            u, uf, i, itf, _, _ = ivr.run_recserve(binary, str(train_csv), str(tmp / "models"), "grid", "als",
                                                   extra, seed)
            scores.append(split.evaluate(u, uf, i, itf)[0])
        score = float(np.mean(scores))
        rows.append((score, alpha, reg, recency))
        print(f"| {alpha:g} | {reg:g} | {recency} | {score:.4f} | {score / base:.2f} |", flush=True)
    best = max(rows)
    print(f"\nbest of {len(rows)}: alpha {best[1]:g}, reg {best[2]:g}, recency {best[3]}: "
          f"{best[0]:.4f} = {best[0] / base:.2f}x implicit")


if __name__ == "__main__":
    main()
