#!/usr/bin/env python3
"""RecServe's hybrid model vs LightFM, genre popularity and random, on cold and warm movies
(issue 16, "Done when" item 1).

Data: MovieLens ml-latest-small `ratings.csv` and `movies.csv`, read from --data-dir (default
`../shared/data/ml-latest-small` beside the repository root; never copied into the repository).
Every rating is an interaction (implicit feedback, whatever its value), as LightFM's MovieLens
examples use all ratings; `--min-rating R` keeps only the ratings >= R. Ratings of movies missing
from movies.csv are dropped (none in ml-latest-small).

Split, one per seed S (`--split-seed N` fixes one split for every seed instead):
  - cold: 10% (`--cold-fraction`) of the rated movies, drawn with seed S, are held out entirely:
    no method trains on any interaction with them;
  - warm: over the other movies, leave-last-out: each user's latest warm interaction by timestamp
    is the user's test item (ties broken by a seeded random choice; a user with a single warm
    interaction keeps it in training); the rest is the training set (train.csv), the same rows
    for every method. Every method may read movies.csv (titles and genres) for every movie.

Metrics (binary relevance, top K = 10, positions p = 0..9 from the top;
DCG@10 = sum over the top 10 of rel(p) / log2(p + 2)):
  - cold NDCG@10 / HR@10: for each user with at least one interaction with a cold movie (and at
    least one training row), rank ONLY the cold movies; relevant = the user's cold movies.
    NDCG@10 = DCG@10 / IDCG@10, IDCG@10 = sum_{p < min(10, #relevant)} 1 / log2(p + 2);
    HR@10 = 1 when at least one relevant movie is in the top 10, else 0;
  - warm NDCG@10 / HR@10: for each test user whose test movie has some training interaction,
    rank every warm movie that has a training interaction except the user's own training
    movies; relevant = the test movie (so NDCG@10 = 1 / log2(rank + 2) when rank < 10).
  Ties in a method's score are broken by a seeded random order, the same for every method. Each
  figure is the mean over users, then the mean over seeds.

Methods (each trained on train.csv; each seed S trains with seed S):
  - RecServe hybrid: `recserve train --kind hybrid --item-features movies.csv --split none
    --dim 64 --seed S --threads 2 --loss warp` (its default 40 epochs, or --hybrid-epochs; +
    `--recserve-args`), scored from
    the published version DIR/hyb/1/weights.safetensors: user_factors[u]·item_factors[i] +
    item_bias[i] (items.txt includes the cold movies, which come from the features file);
  - RecServe BPR (warm only: it cannot score a movie it never saw): `recserve train --kind bpr
    --split none --dim 64 --seed S --threads 2` (+ `--recserve-bpr-args`), scored the same way
    (its bias is a factor column; item_bias is zero);
  - LightFM (64 components, 30 epochs, its defaults otherwise: adagrad, lr 0.05, no
    regularisation; num_threads=2), loss warp and bpr, each with the content features only
    ("features only") or with an identity feature per movie that has training interactions
    ("ids + features"; cold movies get none), each row then normalised to sum 1 as LightFM's Dataset does
    (identity 1/2, content 1/2). The content features are RecServe's own, read from the hybrid
    version's item_features.* (CSR rows `row_start`, `feature_index`, `weight` in the order of
    item_features.ids.txt); when the hybrid did not run, they are built in Python the same way:
    one feature per genre, title tokens lower-cased and split on non-alphanumerics, tokens
    shorter than 2 characters or in fewer than 2 movies dropped, weight count x idf with
    idf = ln((1 + N) / (1 + df)) + 1 (N movies in movies.csv, df movies with the token), each
    column's weights in a row then scaled so the genres and the title each take half the row (all
    of it when the other has no feature). When both exist the output says how far they differ.
    Scored as user_repr·item_repr + item_bias. "LightFM best" is the variant with the highest
    mean cold NDCG@10;
  - genre popularity, personal: a movie's score is the mean, over its genres, of the genre's
    share of the user's training interactions; ties by the movie's training popularity (cold
    movies have none, so their ties fall to the random order). Global: the genre's share of all
    training interactions instead (the same ranking for every user);
  - random.

Time: RecServe's reported train_seconds (training only; the process wall time is in --json),
LightFM's fit call, the baselines' scoring set-up. A debug build of recserve is flagged in the
output: its times are not representative.

Usage:
  swift build -c release --product recserve        # or --recserve PATH / $RECSERVE_BIN
  python3 Benchmarks/hybrid_vs_lightfm.py [--data-dir DIR] [--seeds 6] [--recserve PATH]
      [--recserve-args "..."] [--recserve-bpr-args "..."] [--min-rating R] [--json]
      [--no-recserve] [--no-lightfm] [--work DIR]
Needs numpy, scipy and lightfm 1.17. lightfm builds from source; with current pip:
  pip install wheel "setuptools<70" cython
  pip install --no-build-isolation --no-use-pep517 lightfm
(`pip install --no-build-isolation "setuptools<70" cython lightfm` in one command fails on
pip 23's PEP 517 path with "'dict' object has no attribute '__LIGHTFM_SETUP__'").
"""

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, namedtuple

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from implicit_vs_recserve import read_safetensors  # noqa: E402  (the repository's tiny reader)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_DIR = os.path.join(os.path.dirname(REPO), "shared", "data", "ml-latest-small")
DEFAULT_BINARY = os.path.join(REPO, ".build", "release", "recserve")
K = 10
DISCOUNT = 1 / np.log2(np.arange(2, K + 2))
IDEAL = np.cumsum(DISCOUNT)
LIGHTFM_VARIANTS = (("warp", True), ("warp", False), ("bpr", True), ("bpr", False))
HYBRID, BPR = "RecServe hybrid", "RecServe BPR"

# A ranking task: the users (global indexes), the candidate items (global indexes), which
# candidates are relevant per user [users, candidates], which are excluded (or None), the
# seeded tie-break keys [users, candidates] and how many users were skipped.
Task = namedtuple("Task", "users candidates relevant exclude tiebreak skipped")
# Factor scores aligned to the global indexes: score = user[u]·item[i] + bias[i]; items the
# model does not know score -inf.
Factors = namedtuple("Factors", "user item bias known")


def id_key(s):
    """Sort key: numeric ids in numeric order, then the others."""
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def read_ratings(path, min_rating):
    """(user, movie, rating, timestamp) of the rows rated at least `min_rating` (all when None);
    ids and ratings are kept as the strings in the file."""
    rows = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for r in reader:
            if len(r) < 4 or (min_rating is not None and float(r[2]) < min_rating):
                continue
            rows.append((r[0], r[1], r[2], int(float(r[3]))))
    return rows


def split_genres(value):
    """A movies.csv genres value as its distinct genres, in order ('|'-separated, trimmed)."""
    out = []
    for g in value.split("|"):
        g = g.strip(" \t")
        if g and g not in out:
            out.append(g)
    return out


def read_movies(path):
    """movies.csv as (ids, titles, genre lists), in file order."""
    ids, titles, genres = [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        for r in reader:
            ids.append(r[0])
            titles.append(r[1])
            genres.append(split_genres(r[2]))
    return ids, titles, genres


class Data:
    """The ratings over movies.csv's movies as index arrays: `u`, `i`, `t` per row; users in id
    order (`user_ids`), movies in movies.csv order (`item_ids`, `titles`, `genres`)."""

    def __init__(self, ratings, movies):
        self.item_ids, self.titles, self.genres = movies
        self.item_index = {x: k for k, x in enumerate(self.item_ids)}
        kept = [r for r in ratings if r[1] in self.item_index]
        self.dropped = len(ratings) - len(kept)
        self.user_ids = sorted({r[0] for r in kept}, key=id_key)
        self.user_index = {x: k for k, x in enumerate(self.user_ids)}
        self.u = np.array([self.user_index[r[0]] for r in kept], dtype=np.int64)
        self.i = np.array([self.item_index[r[1]] for r in kept], dtype=np.int64)
        self.t = np.array([r[3] for r in kept], dtype=np.int64)
        self.rows = kept

    @property
    def shape(self):
        """(users, items)."""
        return len(self.user_ids), len(self.item_ids)


class Split:
    """One seed's split: `cold` (bool per item), `train_rows`, `test_rows` (one warm row per test
    user) and `cold_rows` (row indexes into Data), the binary training matrix `train` [users,
    items] and each item's training `popularity`."""

    def __init__(self, data, seed, cold_fraction):
        rng = np.random.default_rng([seed, 16])
        rated = np.unique(data.i)
        n_cold = max(1, int(round(cold_fraction * len(rated))))
        self.cold = np.zeros(data.shape[1], dtype=bool)
        self.cold[rng.choice(rated, n_cold, replace=False)] = True
        warm = np.flatnonzero(~self.cold[data.i])
        order = warm[np.lexsort((rng.random(len(warm)), data.t[warm], data.u[warm]))]
        users = data.u[order]
        last = np.flatnonzero(np.r_[users[1:] != users[:-1], True])
        first = np.r_[0, last[:-1] + 1]
        self.test_rows = np.sort(order[last[last > first]])  # users with >= 2 warm rows
        is_test = np.zeros(len(data.u), dtype=bool)
        is_test[self.test_rows] = True
        self.train_rows = warm[~is_test[warm]]
        self.cold_rows = np.flatnonzero(self.cold[data.i])
        u, i = data.u[self.train_rows], data.i[self.train_rows]
        self.train = sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=data.shape)
        self.train.data[:] = 1  # binary, even if a pair repeats
        self.popularity = np.asarray(self.train.sum(axis=0)).ravel()


def cold_task(data, split, rng):
    """Rank only the cold movies for each user with a cold interaction and some training rows."""
    candidates = np.flatnonzero(split.cold)
    col = np.full(data.shape[1], -1)
    col[candidates] = np.arange(len(candidates))
    has_train = np.diff(split.train.indptr) > 0
    users = np.unique(data.u[split.cold_rows])
    skipped = int((~has_train[users]).sum())
    users = users[has_train[users]]
    pos = np.full(data.shape[0], -1)
    pos[users] = np.arange(len(users))
    rows = split.cold_rows[pos[data.u[split.cold_rows]] >= 0]
    relevant = np.zeros((len(users), len(candidates)), dtype=bool)
    relevant[pos[data.u[rows]], col[data.i[rows]]] = True
    return Task(users, candidates, relevant, None, rng.random(relevant.shape), skipped)


def warm_task(data, split, rng):
    """Rank every warm movie with training interactions, minus the user's own, for each test
    user whose test movie has a training interaction."""
    candidates = np.flatnonzero(split.popularity > 0)
    col = np.full(data.shape[1], -1)
    col[candidates] = np.arange(len(candidates))
    tu, ti = data.u[split.test_rows], data.i[split.test_rows]
    ok = col[ti] >= 0
    users, items = tu[ok], ti[ok]
    relevant = np.zeros((len(users), len(candidates)), dtype=bool)
    relevant[np.arange(len(users)), col[items]] = True
    exclude = split.train[users][:, candidates].toarray() > 0
    return Task(users, candidates, relevant, exclude, rng.random(relevant.shape), int((~ok).sum()))


def evaluate(task, scorer):
    """(NDCG@10, HR@10) of `scorer(users, items) -> (scores, secondary or None)` on `task`:
    order by score, then secondary, then the task's tie-break keys; both higher first."""
    primary, secondary = scorer(task.users, task.candidates)
    primary = np.asarray(primary, dtype=np.float64)
    if task.exclude is not None:
        primary = np.where(task.exclude, -np.inf, primary)
    keys = [task.tiebreak]
    if secondary is not None:
        keys.append(-np.broadcast_to(np.asarray(secondary, dtype=np.float64), primary.shape))
    keys.append(-primary)
    top = np.lexsort(keys, axis=-1)[:, :K]
    hits = np.take_along_axis(task.relevant, top, axis=1)
    ideal = IDEAL[np.minimum(task.relevant.sum(axis=1), K) - 1]
    ndcg = (hits @ DISCOUNT) / ideal
    return float(ndcg.mean()), float(hits.any(axis=1).mean())


def factor_scorer(f):
    """A scorer of Factors: user·item + item bias, -inf for items the model does not know."""
    def score(users, items):
        s = f.user[users] @ f.item[items].T + f.bias[items]
        return np.where(f.known[items], s, -np.inf), None
    return score


def score_tasks(tasks, scorer, cold=True):
    """The four figures of one trained method (cold ones None when `cold` is False)."""
    out = {"cold_ndcg": None, "cold_hr": None}
    if cold:
        out["cold_ndcg"], out["cold_hr"] = evaluate(tasks["cold"], scorer)
    out["warm_ndcg"], out["warm_hr"] = evaluate(tasks["warm"], scorer)
    return out


# --- item features -----------------------------------------------------------------------


def tokens(text):
    """`text` lower-cased, split on anything that is not a letter or a digit, without the
    tokens shorter than 2 characters (RecServe's text tokeniser)."""
    out, current = [], []
    for ch in text.lower():
        if ch.isalnum():
            current.append(ch)
            continue
        if len(current) >= 2:
            out.append("".join(current))
        current = []
    if len(current) >= 2:
        out.append("".join(current))
    return out


def balanced(columns):
    """One row's {feature: weight} per column, scaled so that each column with features takes an
    equal share of 1."""
    present = [c for c in columns if c]
    out = {}
    for column in present:
        total = sum(column.values())
        for k, w in column.items():
            out[k] = w / total / len(present)
    return out


def build_features(data):
    """RecServe's item features of movies.csv rebuilt in Python (see the module docstring):
    (ids, vocabulary, CSR matrix [movies, features])."""
    n = len(data.item_ids)
    title_tokens = [tokens(t) for t in data.titles]
    df = Counter(tok for toks in title_tokens for tok in set(toks))
    kept = sorted((t for t, c in df.items() if c >= 2), key=lambda t: (-df[t], t))
    idf = {t: math.log((1 + n) / (1 + df[t])) + 1 for t in kept}
    genre_names = list(dict.fromkeys(g for gs in data.genres for g in gs))
    vocabulary = [f"title:{t}" for t in kept] + [f"genres={g}" for g in genre_names]
    column = {name: k for k, name in enumerate(vocabulary)}
    rows, cols, vals = [], [], []
    for r in range(n):
        counts = Counter(t for t in title_tokens[r] if t in idf)
        title = {column[f"title:{t}"]: c * idf[t] for t, c in counts.items()}
        genres = {column[f"genres={g}"]: 1.0 for g in data.genres[r]}
        for k, w in balanced([title, genres]).items():
            rows.append(r)
            cols.append(k)
            vals.append(w)
    matrix = sp.csr_matrix((np.array(vals, dtype=np.float32), (rows, cols)), shape=(n, len(vocabulary)))
    return list(data.item_ids), vocabulary, matrix


def read_lines(path):
    """A file of one name a line."""
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def read_recserve_features(version):
    """The item features RecServe keeps beside a version (item_features.vocab.txt, .ids.txt and
    .safetensors: `row_start`, `feature_index`, `weight`) as (ids, vocabulary, CSR matrix), or
    None when the version has none."""
    base = os.path.join(version, "item_features")
    if not all(os.path.exists(base + ext) for ext in (".vocab.txt", ".ids.txt", ".safetensors")):
        return None
    t = read_safetensors(base + ".safetensors")
    ids, vocabulary = read_lines(base + ".ids.txt"), read_lines(base + ".vocab.txt")
    matrix = sp.csr_matrix(
        (np.array(t["weight"], dtype=np.float32), np.array(t["feature_index"], dtype=np.int64),
         np.array(t["row_start"], dtype=np.int64)), shape=(len(ids), len(vocabulary)))
    return ids, vocabulary, matrix


def aligned_features(features, data):
    """A feature table (ids, vocabulary, matrix) with its rows in Data's item order (an item
    without a row gets an empty one)."""
    ids, vocabulary, matrix = features
    rows = np.array([data.item_index.get(x, -1) for x in ids])
    ok = rows >= 0
    select = sp.csr_matrix((np.ones(ok.sum(), dtype=np.float32), (rows[ok], np.flatnonzero(ok))),
                           shape=(data.shape[1], len(ids)))
    return vocabulary, (select @ matrix).tocsr()


def feature_agreement(a, b, data):
    """How two feature tables of the same movies differ: the largest weight difference after
    aligning rows by id and features by name, and the feature names only one of them has."""
    va, ma = aligned_features(a, data)
    vb, mb = aligned_features(b, data)
    names = sorted(set(va) | set(vb))
    where = {n: k for k, n in enumerate(names)}

    def widen(vocab, m):
        cols = np.array([where[n] for n in vocab])
        m = m.tocoo()
        return sp.csr_matrix((m.data, (m.row, cols[m.col])), shape=(m.shape[0], len(names)))

    diff = abs(widen(va, ma) - widen(vb, mb))
    return {"max_weight_difference": float(diff.max()) if diff.nnz else 0.0,
            "features": [len(va), len(vb)], "nonzeros": [int(ma.nnz), int(mb.nnz)],
            "only_in_first": len(set(va) - set(vb)), "only_in_second": len(set(vb) - set(va))}


# --- RecServe ------------------------------------------------------------------------------


def resolve_binary(a):
    """The recserve binary: --recserve, else $RECSERVE_BIN, else .build/release/recserve, built
    with `swift build -c release --product recserve` when that default is missing (as the other
    Benchmarks scripts do); None with --no-recserve."""
    if a.no_recserve:
        return None
    path = a.recserve or os.environ.get("RECSERVE_BIN") or DEFAULT_BINARY
    if not os.path.exists(path):
        if path != DEFAULT_BINARY:
            sys.exit(f"{path} does not exist (--recserve / $RECSERVE_BIN), or pass --no-recserve")
        print("building the release binary ...", file=sys.stderr)
        subprocess.run(["swift", "build", "-c", "release", "--product", "recserve"], cwd=REPO, check=True)
    return os.path.abspath(path)


def hybrid_missing(binary):
    """None when `recserve train` has --kind hybrid and --item-features, else why not."""
    out = subprocess.run([binary, "train", "--help"], capture_output=True, text=True)
    text = out.stdout + out.stderr
    if "--item-features" not in text or "hybrid" not in text:
        return (f"{binary} has no `train --kind hybrid --item-features` (a build from before the "
                "hybrid CLI?): RecServe's hybrid is skipped")
    return None


def with_defaults(defaults, extra):
    """`recserve train` arguments: `defaults` (flag, value) pairs unless `extra` gives the flag,
    then `extra`."""
    out = []
    for flag, value in defaults:
        if flag not in extra:
            out += [flag, value]
    return out + extra


def recserve_train(binary, train_csv, models, name, args):
    """Runs `recserve train ... --split none --json`; returns (version directory, train seconds,
    process seconds). Without a JSON line, the version is MODELS/NAME/1 and the time the
    process's."""
    cmd = [binary, "train", "--data", train_csv, "--models", models, "--name", name] + args + ["--json", "--quiet"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"recserve failed: {shlex.join(cmd)}\n{out.stderr[-3000:]}")
    result = {}
    for line in reversed(out.stdout.strip().splitlines()):
        try:
            result = json.loads(line)
            break
        except ValueError:
            continue
    directory = result.get("directory") or os.path.join(models, name, "1")
    return directory, float(result.get("train_seconds", wall)), wall


def read_version(directory, data):
    """A published version's factors (weights.safetensors, users.txt, items.txt) as Factors
    aligned to Data's users and items."""
    w = read_safetensors(os.path.join(directory, "weights.safetensors"))
    users, items = read_lines(os.path.join(directory, "users.txt")), read_lines(os.path.join(directory, "items.txt"))
    d = w["user_factors"].shape[1]
    user = np.zeros((data.shape[0], d), dtype=np.float32)
    item = np.zeros((data.shape[1], d), dtype=np.float32)
    bias = np.zeros(data.shape[1], dtype=np.float32)
    known = np.zeros(data.shape[1], dtype=bool)
    ui = np.array([data.user_index.get(x, -1) for x in users])
    ii = np.array([data.item_index.get(x, -1) for x in items])
    user[ui[ui >= 0]] = w["user_factors"][ui >= 0]
    item[ii[ii >= 0]] = w["item_factors"][ii >= 0]
    if "item_bias" in w:
        bias[ii[ii >= 0]] = w["item_bias"][ii >= 0]
    known[ii[ii >= 0]] = True
    return Factors(user, item, bias, known)


def run_recserve(ctx, seed, tasks, train_csv, work):
    """RecServe's hybrid (when the binary has it) and BPR for one seed: {label: figures}. The
    first hybrid version's stored item features become LightFM's."""
    a, out = ctx.args, {}
    models = os.path.join(work, "models")
    common = [("--split", "none"), ("--dim", str(a.dim)), ("--seed", str(seed)), ("--threads", str(a.threads))]
    if ctx.hybrid_missing is None:
        args = with_defaults([("--kind", "hybrid"), ("--item-features", ctx.movies_csv)] + common
                             + ([("--epochs", str(a.hybrid_epochs))] if a.hybrid_epochs else [])
                             + [("--loss", "warp")], shlex.split(a.recserve_args))
        version, secs, wall = recserve_train(ctx.binary, train_csv, models, "hyb", args)
        factors = read_version(version, ctx.data)
        cold_unknown = int((~factors.known[tasks["cold"].candidates]).sum())
        out[HYBRID] = dict(score_tasks(tasks, factor_scorer(factors)), train_seconds=secs,
                           process_seconds=wall, cold_items_not_in_model=cold_unknown)
        stored = read_recserve_features(version)
        if stored is not None and ctx.features_source != "recserve":
            ctx.features_agreement = feature_agreement(stored, ctx.features, ctx.data)
            ctx.features, ctx.features_source = stored, "recserve"
    args = with_defaults([("--kind", "bpr")] + common, shlex.split(a.recserve_bpr_args))
    version, secs, wall = recserve_train(ctx.binary, train_csv, models, "bpr", args)
    out[BPR] = dict(score_tasks(tasks, factor_scorer(read_version(version, ctx.data)), cold=False),
                    train_seconds=secs, process_seconds=wall)
    return out


# --- LightFM and the baselines ---------------------------------------------------------------


def lightfm_item_features(ctx, split, identity):
    """LightFM's item-feature matrix over Data's items: the content features and, with
    `identity`, one column per item with training interactions; rows normalised to sum 1."""
    _, content = aligned_features(ctx.features, ctx.data)
    if identity:
        has = np.flatnonzero(split.popularity > 0)
        ident = sp.csr_matrix((np.ones(len(has), dtype=np.float32), (has, np.arange(len(has)))),
                              shape=(ctx.data.shape[1], len(has)))
        content = sp.hstack([ident, content]).tocsr()
    sums = np.asarray(content.sum(axis=1)).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return (sp.diags(scale) @ content).tocsr().astype(np.float32)


def run_lightfm(ctx, seed, tasks, split):
    """LightFM's four variants (loss warp/bpr, with and without identity features) for one
    seed: {label: figures}."""
    from lightfm import LightFM

    a, out = ctx.args, {}
    interactions = split.train.tocoo()
    for loss, identity in LIGHTFM_VARIANTS:
        features = lightfm_item_features(ctx, split, identity)
        model = LightFM(no_components=a.dim, loss=loss, random_state=seed,
                        item_alpha=a.lightfm_alpha, user_alpha=a.lightfm_alpha)
        t0 = time.perf_counter()
        model.fit(interactions, item_features=features, epochs=a.epochs, num_threads=a.threads)
        secs = time.perf_counter() - t0
        bias, item = model.get_item_representations(features)
        _, user = model.get_user_representations()
        factors = Factors(user, item, bias, np.ones(ctx.data.shape[1], dtype=bool))
        label = f"LightFM {loss}, " + ("ids + features" if identity else "features only")
        out[label] = dict(score_tasks(tasks, factor_scorer(factors)), train_seconds=secs)
    return out


def genre_matrix(data):
    """[items, genres]: 1/(the item's number of genres) for each of its genres (a mean over
    them when multiplied by per-genre values)."""
    names = {g: k for k, g in enumerate(dict.fromkeys(g for gs in data.genres for g in gs))}
    rows, cols, vals = [], [], []
    for r, gs in enumerate(data.genres):
        for g in gs:
            rows.append(r)
            cols.append(names[g])
            vals.append(1.0 / len(gs))
    return sp.csr_matrix((vals, (rows, cols)), shape=(data.shape[1], len(names)))


def run_baselines(ctx, seed, tasks, split):
    """Genre popularity (personal and global) and random for one seed: {label: figures}."""
    t0 = time.perf_counter()
    mean_genres = genre_matrix(ctx.data)
    has_genre = (mean_genres > 0).astype(np.float64)
    counts = np.asarray((split.train @ has_genre).todense())  # [users, genres]
    per_user = np.maximum(np.asarray(split.train.sum(axis=1)), 1)
    personal = counts / per_user
    overall = counts.sum(axis=0) / max(split.train.nnz, 1)
    secs = time.perf_counter() - t0
    pop = split.popularity

    def personal_scorer(users, items):
        return personal[users] @ mean_genres[items].T.toarray(), pop[items]

    def global_scorer(users, items):
        return np.broadcast_to(mean_genres[items] @ overall, (len(users), len(items))), pop[items]

    rng = np.random.default_rng([seed, 7])

    def random_scorer(users, items):
        return rng.random((len(users), len(items))), None

    return {
        "genre popularity, personal": dict(score_tasks(tasks, personal_scorer), train_seconds=secs),
        "genre popularity, global": dict(score_tasks(tasks, global_scorer), train_seconds=secs),
        "random": dict(score_tasks(tasks, random_scorer), train_seconds=0.0),
    }


# --- one seed, the summary, the output ------------------------------------------------------


def write_train_csv(data, split, path):
    """The training rows, in file order, as userId,movieId,rating,timestamp."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "movieId", "rating", "timestamp"])
        for k in split.train_rows:
            w.writerow(data.rows[k])


def run_seed(ctx, seed):
    """Splits (seed or --split-seed), writes train.csv and runs every method with `seed`:
    ({label: figures}, the split's counts)."""
    a, data = ctx.args, ctx.data
    split = Split(data, a.split_seed if a.split_seed is not None else seed, a.cold_fraction)
    rng = np.random.default_rng([seed, 1])
    tasks = {"cold": cold_task(data, split, rng), "warm": warm_task(data, split, rng)}
    work = os.path.join(ctx.work, f"seed{seed}")
    os.makedirs(work, exist_ok=True)
    train_csv = os.path.join(work, "train.csv")
    write_train_csv(data, split, train_csv)
    results = {}
    if ctx.binary:
        results.update(run_recserve(ctx, seed, tasks, train_csv, work))
    if not a.no_lightfm:
        results.update(run_lightfm(ctx, seed, tasks, split))
    results.update(run_baselines(ctx, seed, tasks, split))
    info = {"cold_movies": int(split.cold.sum()), "train_rows": len(split.train_rows),
            "cold_rows": len(split.cold_rows), "cold_users": len(tasks["cold"].users),
            "cold_users_skipped_no_training_rows": tasks["cold"].skipped,
            "warm_candidates": len(tasks["warm"].candidates), "warm_test_users": len(tasks["warm"].users),
            "warm_test_users_skipped_item_not_in_train": tasks["warm"].skipped}
    return results, info


FIGURES = ("cold_ndcg", "cold_hr", "warm_ndcg", "warm_hr", "train_seconds", "process_seconds")


def summarise(per_seed):
    """{label: mean of each figure over the seeds (None where a method has none), plus the
    per-seed figures}, in the order the methods first ran; and LightFM's best label."""
    summary = {}
    for results in per_seed:
        for label, fig in results.items():
            summary.setdefault(label, {"per_seed": []})["per_seed"].append(fig)
    for label, s in summary.items():
        for key in FIGURES:
            vals = [f.get(key) for f in s["per_seed"] if f.get(key) is not None]
            s[key] = float(np.mean(vals)) if vals else None
    lightfm = [k for k in summary if k.startswith("LightFM")]
    best = max(lightfm, key=lambda k: summary[k]["cold_ndcg"]) if lightfm else None
    return summary, best


def checks(summary, best):
    """Issue 16's two checks as (line, passed or None)."""
    hyb, bpr = summary.get(HYBRID), summary.get(BPR)
    out = []
    if hyb and best:
        x, y = hyb["cold_ndcg"], summary[best]["cold_ndcg"]
        out.append((f"hybrid cold NDCG@10 vs LightFM best: {x:.4f} vs {y:.4f} ({x / y:.3f}; "
                    f"best is {best}; at least LightFM's best? {'yes' if x >= y else 'no'})", x >= y))
    else:
        why = "RecServe's hybrid did not run (see the note above)" if not hyb else "LightFM did not run"
        out.append((f"hybrid cold NDCG@10 vs LightFM best: n/a ({why})", None))
    if hyb and bpr:
        x, y = hyb["warm_ndcg"], bpr["warm_ndcg"]
        ok = x >= 0.97 * y
        out.append((f"hybrid warm NDCG@10 vs BPR: {x:.4f} vs {y:.4f} ({x / y:.3f}, within 3%? "
                    f"{'yes' if ok else 'no'})", ok))
    else:
        out.append(("hybrid warm NDCG@10 vs BPR: n/a (RecServe's hybrid or BPR did not run)", None))
    return out


def print_table(summary, best):
    """The table: each method's means, then the LightFM best row."""
    def cell(v, width, digits=4):
        return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"

    hdr = f"{'method':<36} {'cold NDCG@10':>12} {'cold HR@10':>10} {'warm NDCG@10':>12} {'warm HR@10':>10} {'train s':>8}"
    print(hdr)
    print("-" * len(hdr))
    rows = list(summary.items())
    if best:
        rows.insert(max(k for k, (label, _) in enumerate(rows) if label.startswith("LightFM")) + 1,
                    (f"LightFM best ({best[8:]})", summary[best]))
    for label, s in rows:
        print(f"{label:<36} {cell(s['cold_ndcg'], 12)} {cell(s['cold_hr'], 10)} "
              f"{cell(s['warm_ndcg'], 12)} {cell(s['warm_hr'], 10)} {cell(s['train_seconds'], 8, 2)}")


def print_setup(ctx, seeds, infos):
    """What ran on what: the data, the split, the binary, the features."""
    a, d = ctx.args, ctx.data
    mean = {k: float(np.mean([i[k] for i in infos])) for k in infos[0]}
    print(f"data {a.data_dir}: {len(d.rows)} interactions ({'every rating' if a.min_rating is None else f'rating >= {a.min_rating}'}), "
          f"{d.shape[0]} users, {d.shape[1]} movies; seeds {seeds}"
          + (f", one split (seed {a.split_seed})" if a.split_seed is not None else ", a split per seed"))
    print(f"per split (mean): {mean['cold_movies']:.0f} cold movies ({mean['cold_rows']:.0f} interactions, "
          f"{mean['cold_users']:.0f} users ranked), {mean['train_rows']:.0f} training rows, "
          f"{mean['warm_test_users']:.0f} warm test users over {mean['warm_candidates']:.0f} movies "
          f"({mean['warm_test_users_skipped_item_not_in_train']:.1f} skipped: test movie not in training)")
    if ctx.binary:
        debug = "/debug/" in ctx.binary
        print(f"recserve: {ctx.binary}" + (" (DEBUG build: its times are not representative)" if debug else ""))
    if ctx.hybrid_missing:
        print(f"note: {ctx.hybrid_missing}")
    hybrid_epochs = a.hybrid_epochs or "its default (40)"
    print(f"dim {a.dim}, epochs: hybrid {hybrid_epochs}, LightFM {a.epochs}; {a.threads} threads; LightFM {ctx.lightfm_version}; "
          f"item features: {ctx.features_source}"
          + (f" (vs the Python build: {json.dumps(ctx.features_agreement)})" if ctx.features_agreement else ""))


def parse_args(argv=None):
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="holds ratings.csv and movies.csv")
    p.add_argument("--seeds", type=int, default=6, help="seeds 42, 43, ... (means are reported)")
    p.add_argument("--split-seed", type=int, help="one split for every seed (default: a split per seed)")
    p.add_argument("--cold-fraction", type=float, default=0.1)
    p.add_argument("--min-rating", type=float, help="only ratings >= this are interactions (default: all)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--epochs", type=int, default=30, help="LightFM's epochs")
    p.add_argument("--hybrid-epochs", type=int, help="the hybrid's epochs (default: recserve's, 40)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lightfm-alpha", type=float, default=0.0, help="LightFM item_alpha and user_alpha")
    p.add_argument("--recserve", help="the recserve binary (default $RECSERVE_BIN, else .build/release/recserve)")
    p.add_argument("--recserve-args", default="", help="extra `recserve train` args for the hybrid")
    p.add_argument("--recserve-bpr-args", default="", help="extra `recserve train` args for BPR")
    p.add_argument("--no-recserve", action="store_true", help="skip RecServe (hybrid and BPR)")
    p.add_argument("--no-lightfm", action="store_true", help="skip LightFM")
    p.add_argument("--work", help="work folder to keep (default: a temporary one, removed)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return p.parse_args(argv)


class Context:
    """What every seed shares: the arguments, the data, the binary and the item features."""

    def __init__(self, a, work):
        self.args, self.work = a, work
        self.movies_csv = os.path.abspath(os.path.join(a.data_dir, "movies.csv"))
        movies = read_movies(self.movies_csv)
        self.data = Data(read_ratings(os.path.join(a.data_dir, "ratings.csv"), a.min_rating), movies)
        self.binary = resolve_binary(a)
        self.hybrid_missing = hybrid_missing(self.binary) if self.binary else "RecServe skipped (--no-recserve)"
        if self.hybrid_missing and self.binary:
            print(f"note: {self.hybrid_missing}", file=sys.stderr)
        self.features = build_features(self.data)
        self.features_source, self.features_agreement = "built in Python", None
        self.lightfm_version = None
        if not a.no_lightfm:
            import lightfm
            self.lightfm_version = lightfm.__version__


def main(argv=None):
    """Runs every seed, then prints the setup, the table and the checks (or --json)."""
    a = parse_args(argv)
    work = a.work or tempfile.mkdtemp(prefix="hybrid-vs-lightfm-")
    os.makedirs(work, exist_ok=True)
    try:
        ctx = Context(a, work)
        seeds = [42 + k for k in range(a.seeds)]
        per_seed, infos = [], []
        for seed in seeds:
            print(f"seed {seed} ...", file=sys.stderr)
            results, info = run_seed(ctx, seed)
            per_seed.append(results)
            infos.append(info)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    summary, best = summarise(per_seed)
    lines = checks(summary, best)
    if a.json:
        print(json.dumps({
            "data_dir": a.data_dir, "seeds": seeds, "split_seed": a.split_seed, "min_rating": a.min_rating,
            "binary": ctx.binary, "debug_build": bool(ctx.binary and "/debug/" in ctx.binary),
            "hybrid_skipped": ctx.hybrid_missing, "lightfm_version": ctx.lightfm_version,
            "features_source": ctx.features_source, "features_agreement": ctx.features_agreement,
            "splits": infos, "methods": summary, "lightfm_best": best,
            "checks": [{"line": line, "passed": ok} for line, ok in lines]}, indent=1))
        return
    print_setup(ctx, seeds, infos)
    print()
    print_table(summary, best)
    print()
    for line, _ in lines:
        print(line)


if __name__ == "__main__":
    main()
