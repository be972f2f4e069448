#!/usr/bin/env python3
"""Memory and time of `recserve train` on a MovieLens-20M-sized ratings file.

Generates (seeded, streamed in chunks with numpy) a ratings CSV shaped like MovieLens 20M:
`userId,movieId,rating,timestamp` with a header, 20,000,000 rows by default, 138,493 users with
a heavy-tailed number of ratings each (at least 20, rows grouped by user and sorted by movieId
as in ML-20M), 26,744 movies with sparse ids up to 131,262 drawn by a Zipf-like popularity
(no user rates a movie twice), half-star ratings with ML's distribution and 10-digit
timestamps. Then runs the release binary once per kind (2 threads):

    recserve train --kind als --iterations 3 --split none --json
    recserve train --kind bpr --epochs 3     --split none --json
    recserve train --kind mf  --epochs 3     --holdout 0  --json

and with `--splits none,default` also with each kind's default split (leave-last-out plus a
full-ranking evaluation of every user for bpr/als, a 10% holdout for mf),
reporting, per run: rows, file size, wall seconds for load / train / eval / the rest (publish,
start-up; from the `--json` timings) and total (measured here), CPU seconds, peak RSS (the
child's ru_maxrss via /usr/bin/time, exact) and peak RSS per interaction, plus the highest RSS
seen while the file was loading (sampled from /proc every 20 ms) and the published version's
size on disk.
With --serve it also starts `recserve serve` on the published models and reports the seconds
until `listening on` (every version is loaded and verified before that line) and the server's
RSS. The same is then done for ../shared/data/ml-latest-small/ratings.csv (100k rows) for
comparison.

Usage:
  python3 Benchmarks/capacity_20m.py [--binary .build/release/recserve] [--rows 20000000]
      [--data PATH (use or create this file; kept)] [--kinds als,bpr,mf] [--threads 2]
      [--splits none[,default]] [--serve] [--small PATH|none] [--json] [--generate-only]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = os.path.join(os.path.dirname(REPO), "shared", "data", "ml-latest-small", "ratings.csv")

# MovieLens 20M: 20,000,263 ratings, 138,493 users, 26,744 movies (ids up to 131,262).
ML20M_ROWS = 20_000_263
ML20M_USERS = 138_493
ML20M_ITEMS = 26_744
ML20M_MAX_ID = 131_262
# ML-20M's share of each half-star rating, 0.5 ... 5.0.
RATING_SHARE = [0.012, 0.034, 0.014, 0.072, 0.044, 0.214, 0.105, 0.277, 0.077, 0.151]


# ---------------------------------------------------------------------------------------------
# Data generation


def ascii_digits(x, width=None):
    """Unsigned ints -> (uint8 matrix [n, width] of right-aligned digits, digit counts)."""
    x = np.asarray(x, dtype=np.int64)
    if width is None:
        width = max(1, len(str(int(x.max())))) if x.size else 1
    pows = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = ((x[:, None] // pows) % 10 + 48).astype(np.uint8)
    counts = np.ones(x.shape[0], dtype=np.int64)
    for k in range(1, width):
        counts += x >= 10**k
    return digits, counts


def csv_bytes(users, items, ratings_x2, timestamps):
    """`user,item,r.r,timestamp\\n` lines, built column-wise without a Python loop per row."""
    n = users.shape[0]
    parts = []  # (matrix, mask)
    for col in (users, items):
        d, c = ascii_digits(col)
        w = d.shape[1]
        parts.append((d, np.arange(w)[None, :] >= (w - c)[:, None]))
        parts.append((np.full((n, 1), ord(","), np.uint8), None))
    # rating r/2 as "R.0" or "R.5" (ML-20M writes "4.0", "3.5"); 0.5 -> "0.5".
    whole = ratings_x2 // 2
    r = np.empty((n, 3), np.uint8)
    r[:, 0] = whole + 48
    r[:, 1] = ord(".")
    r[:, 2] = np.where(ratings_x2 % 2 == 1, ord("5"), ord("0"))
    parts.append((r, None))
    parts.append((np.full((n, 1), ord(","), np.uint8), None))
    d, c = ascii_digits(timestamps)
    w = d.shape[1]
    parts.append((d, np.arange(w)[None, :] >= (w - c)[:, None]))
    parts.append((np.full((n, 1), ord("\n"), np.uint8), None))
    mat = np.concatenate([p for p, _ in parts], axis=1)
    mask = np.concatenate([np.ones(p.shape, bool) if m is None else m for p, m in parts], axis=1)
    return mat[mask].tobytes()


def user_counts(rng, users, rows, lo=20, hi=9_254):
    """Heavy-tailed ratings per user (lognormal, as ML's), at least `lo`, summing to `rows`."""
    if users * lo > rows:
        raise SystemExit(f"--rows {rows} is too few for {users} users with {lo} ratings each")
    raw = rng.lognormal(mean=0.0, sigma=1.25, size=users)
    extra = rows - users * lo
    counts = lo + np.floor(raw / raw.sum() * extra).astype(np.int64)
    counts = np.minimum(counts, hi)
    # Hand out what is left one at a time to random users below the cap.
    short = rows - int(counts.sum())
    while short > 0:
        cand = np.flatnonzero(counts < hi)
        pick = rng.choice(cand, size=min(short, cand.size), replace=False)
        counts[pick] += 1
        short -= pick.size
    return counts


def generate(path, rows, users, items, seed, chunk_rows=1_000_000):
    rng = np.random.default_rng(seed)
    hi = max(20, min(9_254, items // 2))
    counts = user_counts(rng, users, rows, hi=hi)
    # Movie ids: a sorted random subset of 1..ML20M_MAX_ID (ML's ids are sparse); popularity
    # rank is independent of the id.
    max_id = max(items, ML20M_MAX_ID * items // ML20M_ITEMS)
    ids = np.sort(rng.choice(np.arange(1, max_id + 1), size=items, replace=False))
    rank_of = rng.permutation(items)  # item index -> popularity rank
    weight = 1.0 / (rank_of + 10.0) ** 1.05
    p = weight / weight.sum()
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    share = np.array(RATING_SHARE) / sum(RATING_SHARE)
    t_lo, t_hi = 789_652_009, 1_427_784_002  # ML-20M's timestamp range (1995 .. 2015)

    written = 0
    with open(path, "wb") as f:
        f.write(b"userId,movieId,rating,timestamp\n")
        u0 = 0
        while u0 < users:
            # A block of consecutive users holding about chunk_rows rows.
            cum = np.cumsum(counts[u0:])
            u1 = u0 + max(1, int(np.searchsorted(cum, chunk_rows)))
            u1 = min(u1, users)
            k = counts[u0:u1]
            nb = u1 - u0
            # Oversample with replacement, keep distinct (user, item) pairs in random order.
            m = np.ceil(k * 1.6).astype(np.int64) + 8
            owner = np.repeat(np.arange(nb), m)
            draw = np.searchsorted(cdf, rng.random(owner.size), side="right")
            key = np.unique(owner * items + draw)
            ku = key // items
            prio = rng.random(key.size)
            order = np.lexsort((prio, ku))
            key = key[order]
            ku = key // items
            start = np.searchsorted(ku, np.arange(nb))
            pos = np.arange(key.size) - start[ku]
            have = np.bincount(ku, minlength=nb)
            keep = pos < k[ku]
            key = key[keep]
            pairs_u = key // items
            pairs_i = key % items
            lacking = np.flatnonzero(have < k)
            if lacking.size:
                # Heavy users whose draws repeat too often: exact draws without replacement.
                fix_u = [pairs_u[~np.isin(pairs_u, lacking)]]
                fix_i = [pairs_i[~np.isin(pairs_u, lacking)]]
                for lu in lacking:
                    fix_u.append(np.full(k[lu], lu))
                    fix_i.append(rng.choice(items, size=k[lu], replace=False, p=p))
                pairs_u = np.concatenate(fix_u)
                pairs_i = np.concatenate(fix_i)
            # Rows grouped by user, movieId ascending within a user (as ML-20M).
            order = np.lexsort((ids[pairs_i], pairs_u))
            pairs_u = pairs_u[order]
            pairs_i = pairs_i[order]
            n = pairs_u.size
            assert n == int(k.sum()), (n, int(k.sum()))
            rx2 = rng.choice(10, size=n, p=share) + 1
            # Each user rates within a window that starts at a random time.
            first = rng.integers(t_lo, t_hi - 86_400 * 30, size=nb)
            span = rng.integers(3_600, 86_400 * 400, size=nb)
            ts = first[pairs_u] + (rng.random(n) * span[pairs_u]).astype(np.int64)
            ts = np.minimum(ts, t_hi)
            f.write(csv_bytes(pairs_u + u0 + 1, ids[pairs_i], rx2, ts))
            written += n
            u0 = u1
    assert written == rows, (written, rows)
    return written


# ---------------------------------------------------------------------------------------------
# Measurement


def vm_kb(pid):
    """(VmRSS, VmHWM) of a process in KiB, or (None, None)."""
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


TIME = "/usr/bin/time"


def run_measured(cmd):
    """Runs cmd; returns (stdout, stderr, wall s, CPU s, peak RSS bytes, RSS samples).

    The peak is the child's ru_maxrss as GNU time reports it: time is a small process, so the
    forked child starts small (a child forked straight from this Python process would count
    this process's own resident memory, e.g. the generator's, as its peak). Without
    /usr/bin/time, the last VmHWM read from /proc is used instead.
    """
    out_f = tempfile.TemporaryFile()
    err_f = tempfile.TemporaryFile()
    stats = tempfile.NamedTemporaryFile(prefix="capacity-time-", delete=False)
    stats.close()
    use_time = os.access(TIME, os.X_OK)
    full = [TIME, "-f", "%M %U %S", "-o", stats.name] + cmd if use_time else cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(full, stdout=out_f, stderr=err_f)
    samples = []  # (seconds since start, RSS bytes)
    hwm = [0]
    done = threading.Event()

    def target_pid():
        if not use_time:
            return proc.pid
        try:
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                kids = f.read().split()
            return int(kids[0]) if kids else None
        except OSError:
            return None

    def sample():
        pid = None
        while not done.is_set():
            pid = pid or target_pid()
            if pid:
                rss, peak = vm_kb(pid)
                if rss is not None:
                    samples.append((time.perf_counter() - t0, rss * 1024))
                    hwm[0] = max(hwm[0], (peak or 0) * 1024)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    code = os.waitstatus_to_exitcode(status)
    out_f.seek(0)
    err_f.seek(0)
    out = out_f.read().decode(errors="replace")
    err = err_f.read().decode(errors="replace")
    with open(stats.name) as f:
        reported = f.read().split()
    os.unlink(stats.name)
    if code != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited {code}:\n{err[-3000:]}")
    if use_time and len(reported) >= 3:
        peak = int(reported[-3]) * 1024
        cpu = float(reported[-2]) + float(reported[-1])
    else:
        peak = hwm[0]
        cpu = usage.ru_utime + usage.ru_stime
    return out, err, wall, cpu, peak, samples


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


def measure_serve(binary, models):
    """Seconds until `listening on` and the server's RSS then (VmRSS, VmHWM)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [binary, "serve", "--models", models, "--port", "0", "--poll-interval", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        seconds = time.perf_counter() - t0
        if not line.startswith("listening on"):
            raise SystemExit(f"error: serve printed {line!r}")
        hwm = rss = None
        with open(f"/proc/{proc.pid}/status") as f:
            for entry in f:
                if entry.startswith("VmRSS:"):
                    rss = int(entry.split()[1]) * 1024
                elif entry.startswith("VmHWM:"):
                    hwm = int(entry.split()[1]) * 1024
        return seconds, rss, hwm
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


KIND_ARGS = {
    "als": ["--kind", "als", "--iterations", "3"],
    "bpr": ["--kind", "bpr", "--epochs", "3"],
    "mf": ["--kind", "mf", "--epochs", "3"],
}
# "none": train on every row. "default": each kind's default split (leave-last-out with a
# full-ranking evaluation for bpr/als, a 10% random holdout for mf).
SPLIT_ARGS = {
    "none": {"als": ["--split", "none"], "bpr": ["--split", "none"], "mf": ["--holdout", "0"]},
    "default": {"als": [], "bpr": [], "mf": []},
}


def measure(binary, data, kinds, splits, threads, serve, label):
    size = os.path.getsize(data)
    results = []
    for split in splits:
        for kind in kinds:
            results.append(measure_one(binary, data, size, kind, split, threads, serve, label))
    return results


def measure_one(binary, data, size, kind, split, threads, serve, label):
    models = tempfile.mkdtemp(prefix="capacity-models-")
    try:
        cmd = [binary, "train", "--data", data, "--name", f"cap-{kind}", "--models", models,
               "--threads", str(threads), "--json", "--quiet"]
        cmd += KIND_ARGS[kind] + SPLIT_ARGS[split][kind]
        out, _, wall, cpu, peak, samples = run_measured(cmd)
        j = json.loads(out.strip().splitlines()[-1])
        rows = int(j["rows"])
        load = float(j.get("load_seconds", float("nan")))
        train = float(j.get("train_seconds", float("nan")))
        ev = float(j.get("eval_seconds", 0.0))
        load_peak = max((b for t, b in samples if t <= load + 0.05), default=0)
        r = {
            "data": label, "kind": kind,
            "split": j.get("split", "holdout") if split == "default" else "none",
            "rows": rows, "file_mb": size / 1e6, "users": j.get("users"), "items": j.get("items"),
            "load_s": load, "train_s": train, "eval_s": ev,
            "other_s": wall - load - train - ev, "total_s": wall, "cpu_s": cpu,
            "peak_rss_mb": peak / 2**20, "bytes_per_row": peak / rows,
            "load_rss_mb": load_peak / 2**20, "model_mb": dir_bytes(models) / 1e6,
        }
        if serve:
            s, rss, hwm = measure_serve(binary, models)
            r.update(serve_s=s, serve_rss_mb=rss / 2**20, serve_hwm_mb=hwm / 2**20)
        print_row(r, serve)
        return r
    finally:
        shutil.rmtree(models, ignore_errors=True)


HEADER = ("| data | kind | split | rows | file MB | load s | train s | eval s | other s | total s "
          "| CPU s | peak RSS MB | B/row | load peak MB | model MB |")


def print_row(r, serve):
    line = (f"| {r['data']} | {r['kind']} | {r['split']} | {r['rows']:,} | {r['file_mb']:.0f} "
            f"| {r['load_s']:.2f} | {r['train_s']:.2f} | {r['eval_s']:.2f} | {r['other_s']:.2f} "
            f"| {r['total_s']:.2f} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} "
            f"| {r['bytes_per_row']:.0f} | {r['load_rss_mb']:.0f} | {r['model_mb']:.0f} |")
    if serve:
        line += f" serve: listening after {r['serve_s']:.2f} s, RSS {r['serve_rss_mb']:.0f} MB |"
    print(line, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(REPO, ".build", "release", "recserve"))
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--users", type=int, help="default: ML-20M's users scaled to --rows")
    ap.add_argument("--items", type=int, help=f"default: {ML20M_ITEMS} (fewer for small --rows)")
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--data", help="ratings file to use; generated there (and kept) if missing")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--kinds", default="als,bpr,mf")
    ap.add_argument("--splits", default="none",
                    help="comma-separated: none (every row) and/or default (each kind's own)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--serve", action="store_true", help="also time `recserve serve` start-up")
    ap.add_argument("--small", default=SMALL, help="comparison file, or 'none'")
    ap.add_argument("--json", action="store_true", help="print all results as one JSON list too")
    a = ap.parse_args()

    users = a.users or max(1, round(ML20M_USERS * a.rows / ML20M_ROWS))
    items = a.items or max(50, min(ML20M_ITEMS, round(ML20M_ITEMS * (a.rows / ML20M_ROWS) ** 0.5)))
    tmp = None
    data = a.data
    if data is None:
        tmp = tempfile.mkdtemp(prefix="capacity-20m-")
        data = os.path.join(tmp, "ratings.csv")
    try:
        if not os.path.exists(data):
            t0 = time.perf_counter()
            generate(data, a.rows, users, items, a.seed)
            print(f"generated {data}: {a.rows:,} rows, {users:,} users, {items:,} items, "
                  f"{os.path.getsize(data) / 1e6:.0f} MB in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr, flush=True)
        if a.generate_only:
            return
        if not os.path.exists(a.binary):
            raise SystemExit(f"error: {a.binary} not found (swift build -c release --product recserve)")
        kinds = [k for k in a.kinds.split(",") if k]
        splits = [k for k in a.splits.split(",") if k]
        for k in kinds + splits:
            if k not in KIND_ARGS and k not in SPLIT_ARGS:
                raise SystemExit(f"error: unknown kind or split '{k}'")
        print(HEADER)
        print("|" + "---|" * (HEADER.count("|") - 1))
        label = f"generated {a.rows / 1e6:g}M" if a.data is None else os.path.basename(data)
        results = measure(a.binary, data, kinds, splits, a.threads, a.serve, label)
        if a.small != "none" and os.path.exists(a.small):
            results += measure(a.binary, a.small, kinds, splits, a.threads, a.serve,
                               "ml-latest-small")
        if a.json:
            print(json.dumps(results, indent=1))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
