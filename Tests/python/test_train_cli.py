"""`recserve train` progress on stderr: a bar redrawn in place on a terminal, plain lines on a pipe."""

import fcntl
import os
import pathlib
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pytest

from conftest import binary, run_cli

BARE_CR = re.compile(r"\r(?!\n)")  # a terminal turns "\n" into "\r\n"; a redraw is "\r" alone


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-cli")
    data = root / "ratings.csv"
    run_cli("gen-data", "--users", 100, "--items", 60, "--out", data, "--seed", 5)
    return data


def train_args(data, models, kind, *extra):
    return ["train", "--data", data, "--kind", kind, "--name", "m", "--models", models,
            "--dim", 4, "--epochs", 30, *extra]


def run_on_pipe(args):
    """Runs recserve with stderr on a pipe; returns its stderr with every "\r" kept (run_cli's
    text mode would turn them into newlines)."""
    result = subprocess.run([binary(), *map(str, args)], capture_output=True, timeout=120)
    return result.returncode, result.stderr.decode()


def run_on_terminal(args, columns=100, term="xterm", timeout=120):
    """Runs recserve with stderr on a pseudo-terminal `columns` wide; returns (code, stdout, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["TERM"] = term
    try:
        process = subprocess.Popen([binary(), *map(str, args)], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=slave, env=env)
    finally:
        os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.5)[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not data:
                break
            chunks.append(data)
        else:
            process.kill()
            raise AssertionError("recserve train did not finish in time")
    finally:
        os.close(master)
    stdout = process.communicate(timeout=30)[0]
    return process.returncode, stdout.decode(), b"".join(chunks).decode()


@pytest.mark.parametrize("kind", ["mf", "bpr"])
def test_train_draws_a_bar_on_a_terminal_and_lines_on_a_pipe(small_data, tmp_path, kind):
    code, stdout, stderr = run_on_terminal(train_args(small_data, tmp_path / "tty", kind))
    assert code == 0, stderr
    assert "published" in stdout
    assert BARE_CR.search(stderr) and "%" in stderr and "\x1b[K" in stderr, repr(stderr)
    draws = [d.split("\x1b[K")[0] for d in BARE_CR.split(stderr)[1:]]
    assert draws[-1].startswith("epoch 30/30 [") and "100%" in draws[-1], draws
    assert all(len(d) <= 99 for d in draws), draws  # fits the 100 columns
    assert stderr.endswith("\r\n")  # the bar ends its line

    code, piped = run_on_pipe(train_args(small_data, tmp_path / "pipe", kind))
    assert code == 0, piped
    assert "\r" not in piped and "%" not in piped
    lines = piped.splitlines()
    assert len(lines) == 30 and lines[0].startswith("epoch 1/30  loss ") and lines[-1].endswith("s")


def test_progress_flag_and_dumb_terminals(small_data, tmp_path):
    code, forced = run_on_pipe(train_args(small_data, tmp_path / "a", "als", "--progress", "bar"))
    assert code == 0 and forced.startswith("\repoch  1/30 [") and forced.endswith("\x1b[K\n")
    assert "%" in forced

    code, _, dumb = run_on_terminal(train_args(small_data, tmp_path / "e", "mf"), term="dumb")
    assert code == 0 and not BARE_CR.search(dumb) and len(dumb.splitlines()) == 30

    code, _, plain = run_on_terminal(train_args(small_data, tmp_path / "b", "mf", "--progress", "plain"))
    assert code == 0 and not BARE_CR.search(plain) and len(plain.splitlines()) == 30

    for flags in (["--progress", "none"], ["--quiet"], ["--quiet", "--progress", "bar"]):
        code, _, silent = run_on_terminal(train_args(small_data, tmp_path / "c", "mf", *flags))
        assert code == 0 and silent == "", (flags, silent)

    bad = run_cli(*train_args(small_data, tmp_path / "d", "mf", "--progress", "fancy"), check=False)
    assert bad.returncode != 0 and "--progress" in bad.stderr


def test_a_failure_starts_on_a_fresh_line_after_the_bar(small_data, tmp_path):
    # This learning rate diverges after an epoch or more has been drawn.
    code, stderr = run_on_pipe(train_args(small_data, tmp_path, "mf", "--lr", 1, "--lr-decay", 1,
                                          "--progress", "bar"))
    assert code == 1 and stderr.startswith("\repoch  1/30 ["), stderr
    assert "\x1b[K\nerror: training diverged" in stderr, repr(stderr)


@pytest.mark.parametrize("kind", ["bpr", "als"])
def test_split_flags_say_what_they_do(small_data, tmp_path, kind):
    """Issue 11: `--holdout 0` holds out nothing for every kind (it used to leave bpr/als on the
    default leave-last-out, training without each user's latest item); a fraction on an implicit
    kind is a random holdout; flags that contradict each other are refused, naming both; the JSON
    summary says which split was used."""
    import json  # noqa: PLC0415

    models = tmp_path / "models"

    def train(*extra):
        return run_cli(*train_args(small_data, models, kind, "--epochs", 2, "--json", *extra), check=False)

    default = train()
    assert default.returncode == 0, default.stderr
    summary = json.loads(default.stdout)
    assert summary["split"] == "leave-last-out"
    assert summary["test_rows"] > 0

    nothing = train("--holdout", 0)
    assert nothing.returncode == 0, nothing.stderr
    summary = json.loads(nothing.stdout)
    assert summary["split"] == "none"
    assert summary["test_rows"] == 0
    assert summary["train_rows"] == summary["rows"]

    fraction = train("--holdout", 0.2)
    assert fraction.returncode == 0, fraction.stderr
    summary = json.loads(fraction.stdout)
    assert summary["split"].startswith("holdout")
    assert 0.1 * summary["rows"] < summary["test_rows"] < 0.3 * summary["rows"]

    for extra, words in [(("--split", "leave-last-out", "--holdout", 0.2), ["--holdout", "--split leave-last-out"]),
                         (("--split", "none", "--holdout", 0.2), ["--split none", "--holdout"]),
                         (("--split", "holdout", "--holdout", 0), ["--split holdout", "--holdout 0"])]:
        refused = train(*extra)
        assert refused.returncode != 0, extra
        for word in words:
            assert word in refused.stderr, (extra, refused.stderr)


def test_mf_summary_names_its_split(small_data, tmp_path):
    import json  # noqa: PLC0415

    models = tmp_path / "models"
    for extra, split, holdout in [((), "holdout", 0.1), (("--holdout", 0), "none", 0.0),
                                  (("--split", "none"), "none", 0.0)]:
        result = run_cli(*train_args(small_data, models, "mf", "--epochs", 2, "--json", *extra))
        summary = json.loads(result.stdout)
        assert (summary["split"], summary["holdout"]) == (split, holdout), extra
        assert (summary["test_rows"] == 0) == (split == "none")


def test_tune_searches_and_records_the_search(small_data, tmp_path):
    """`--tune N` (issue 11): N trials, the given settings among them, the winner trained and
    published with the search in model.json and in the JSON summary; flags given stay fixed;
    kinds it does not cover are refused by name."""
    import json  # noqa: PLC0415

    models = tmp_path / "models"
    result = run_cli(*train_args(small_data, models, "als", "--epochs", 6, "--tune", 4, "--reg", 0.05, "--json"))
    summary = json.loads(result.stdout)
    tuning = summary["tuning"]
    assert len(tuning["trials"]) == 4
    assert 0 <= tuning["winner"] < 4
    assert all(t["settings"]["reg"] == pytest.approx(0.05) for t in tuning["trials"])
    assert tuning["trials"][0]["settings"]["alpha"] == pytest.approx(1.0)  # the defaults are trial 0
    winner = tuning["trials"][tuning["winner"]]["settings"]
    assert summary["hyperparameters"]["alpha"] == pytest.approx(winner["alpha"])
    manifest = json.loads((pathlib.Path(summary["directory"]) / "model.json").read_text())
    assert manifest["hyperparameters"]["tuning"]["winner"] == tuning["winner"]

    refused = run_cli(*train_args(small_data, models, "sasrec", "--tune", 3), check=False)
    assert refused.returncode != 0
    assert "--tune is for --kind mf, bpr, als and hybrid" in refused.stderr
    refused = run_cli(*train_args(small_data, models, "bpr", "--tune", 0), check=False)
    assert refused.returncode != 0 and "--tune must be in 1...200" in refused.stderr


def test_tune_mf_searches_by_rmse_on_training_rows_only(small_data, tmp_path):
    """`--tune N` on mf (issue 11): trials scored by validation RMSE on a tenth of the training
    rows (the held-out tenth stays out of the search), the given --dim kept by every trial, the
    winner trained and recorded; and the search shown by `recserve eval`."""
    import json  # noqa: PLC0415

    models = tmp_path / "models"
    result = run_cli(*train_args(small_data, models, "mf", "--tune", 5, "--json"))
    summary = json.loads(result.stdout)
    tuning = summary["tuning"]
    assert tuning["metric"] == "validation rmse"
    assert len(tuning["trials"]) == 5
    assert all(t["settings"]["dim"] == 4 for t in tuning["trials"])  # --dim 4 was given
    assert len({t["settings"]["lr"] for t in tuning["trials"]}) > 1  # lr was searched
    # Every trial has an RMSE at each budget it reached; trial 0 (the defaults) reached the end.
    assert all(all(s["rmse"] > 0 for s in t["scores"]) for t in tuning["trials"])
    assert tuning["trials"][0]["scores"][-1]["budget"] == 30
    # The tuning rows are 10% of the training rows: the held-out rows are not among them.
    assert tuning["validation_rows"] == pytest.approx(summary["train_rows"] * 0.1, abs=2)
    winner = tuning["trials"][tuning["winner"]]["settings"]
    assert summary["hyperparameters"]["lr"] == pytest.approx(winner["lr"])
    assert summary["metrics"]["rmse"] > 0
    shown = run_cli("eval", "--models", models, "--name", "m", "--data", small_data)
    assert "tuned: trial" in shown.stdout
