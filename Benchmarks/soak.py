#!/usr/bin/env python3
"""Soak (issue 13): RecServe under steady Rank load for --minutes while new versions land on disk
every --publish-every seconds and a corrupt one every --corrupt-every seconds.

1. Trains a few ALS versions of the data (different seeds) into a staging folder, serves a model
   folder holding the first one (release build, 2 request threads, --poll-interval 1).
2. Measures the server's maximum Rank throughput (`recserve load --sweep 8,32,128`, 3 s a level),
   then drives it open-loop at half that (`recserve load --rate`, 64 calls in flight at most,
   latency from each call's intended start) for the whole soak, Rank by user id (Zipf 1).
3. Meanwhile publishes the staged versions in turn as new version numbers (copied into a
   dot-folder, fsynced, renamed into place), and every --corrupt-every seconds one with a flipped
   bit in its weights (its checksum no longer matches: it must be refused and never serve).
4. Samples the server's RSS, open file descriptors and threads every 10 s (/proc).

Prints: failed calls by status code, p99 per minute (the worst and the median second of each
minute), versions published / refused / serving at the end, and RSS, descriptors and threads at
the start and the end.

    swift build -c release --product recserve
    python3 Benchmarks/soak.py [--minutes 10] [--publish-every 30] [--corrupt-every 120]
"""

import argparse
import csv
import json
import os
import pathlib
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent

SHARED = REPO.parent / "shared" / "data" / "ml-latest-small" / "ratings.csv"


def publish(source: pathlib.Path, model_dir: pathlib.Path, version: int, corrupt: bool = False):
    """Copies a version folder in as `version`: into a dot-folder the server ignores, fsynced,
    renamed into place. `corrupt` flips one bit in the middle of the weights first (the file still
    parses; its checksum in model.json no longer matches)."""
    staged = model_dir / f".incoming-{version}"
    shutil.copytree(source, staged)
    if corrupt:
        weights = staged / "weights.safetensors"
        data = bytearray(weights.read_bytes())
        (header_length,) = struct.unpack("<Q", data[:8])
        data[8 + header_length + (len(data) - 8 - header_length) // 2] ^= 0x01
        weights.write_bytes(bytes(data))
    for path in [*staged.iterdir(), staged]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.rename(staged, model_dir / str(version))


def proc_stats(pid: int) -> dict:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    fds = len(list(pathlib.Path(f"/proc/{pid}/fd").iterdir()))
    return {"rss_mb": round(rss, 1), "fds": fds, "threads": threads}


def parse_args():
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--publish-every", type=float, default=30)
    parser.add_argument("--corrupt-every", type=float, default=120)
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--binary", default=str(REPO / ".build" / "release" / "recserve"))
    return parser.parse_args()


def stage_versions(binary: str, data: pathlib.Path, work: pathlib.Path) -> list:
    """Trains three ALS versions (seeds 1, 2, 3) into `work`/staging, from `data`, or from generated
    ratings when it does not exist; returns their folders in version order."""
    if not data.exists():
        data = work / "ratings.csv"
        subprocess.run([binary, "gen-data", "--users", "3000", "--items", "2000", "--out", str(data)], check=True,
                       capture_output=True)
    staging = work / "staging"
    for seed in (1, 2, 3):
        subprocess.run([binary, "train", "--data", str(data), "--kind", "als", "--name", "soak", "--models",
                        str(staging), "--seed", str(seed), "--quiet"], check=True, capture_output=True)
    return sorted((staging / "soak").iterdir(), key=lambda p: int(p.name))


def start_server(binary: str, models: pathlib.Path):
    """Starts `recserve serve` on `models` (2 request threads, --poll-interval 1); returns the process
    and its target once it listens (exits if it does not within 120 s)."""
    process = subprocess.Popen([binary, "serve", "--models", str(models), "--port", "0", "--threads", "2",
                                "--poll-interval", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    target = None
    deadline = time.monotonic() + 120
    while target is None and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            match = re.match(r"listening on ([^\s]+):(\d+)", process.stdout.readline())
            if match:
                target = f"127.0.0.1:{match.group(2)}"
    if target is None:
        sys.exit("recserve serve did not start")
    # The server's stderr (one line per event) is drained by a thread, kept for the report.
    events = []
    threading.Thread(target=lambda: events.extend(process.stderr), daemon=True).start()
    return process, target


def peak_rate(common: list) -> float:
    """The highest Rank throughput (calls/s) of a `recserve load --sweep 8,32,128`, 3 s a level."""
    sweep = json.loads(subprocess.run(common + ["--sweep", "8,32,128", "--duration", "3", "--json", "--quiet"],
                                      capture_output=True, text=True, check=True).stdout)
    return max(level["calls_per_s"] for level in sweep["levels"])


def run_soak(args, common: list, rate: float, series: pathlib.Path, staged: list, model_dir: pathlib.Path,
             pid: int, start: dict):
    """Drives the server open-loop at `rate` for the whole soak (per-second rows into `series`) while
    publishing good and corrupt versions and sampling /proc every 10 s; returns the load's summary,
    the good and the corrupt versions published, and the samples (`start` first, at 0 s)."""
    seconds = args.minutes * 60
    load = subprocess.Popen(common + ["--rate", f"{rate:.0f}", "--concurrency", "64", "--duration", str(seconds),
                                      "--warmup", "0", "--json", "--quiet", "--csv", str(series)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    began = time.monotonic()
    published, corrupted, samples = [], [], [(0.0, start)]
    next_version, next_publish, next_corrupt, next_sample = 2, args.publish_every, args.corrupt_every, 10.0
    while load.poll() is None:
        now = time.monotonic() - began
        if now >= next_corrupt:
            publish(staged[next_version % len(staged)], model_dir, next_version, corrupt=True)
            corrupted.append(next_version)
            next_version += 1
            next_corrupt += args.corrupt_every
        elif now >= next_publish:
            publish(staged[next_version % len(staged)], model_dir, next_version)
            published.append(next_version)
            next_version += 1
            next_publish += args.publish_every
        if now >= next_sample:
            samples.append((now, proc_stats(pid)))
            next_sample += 10
        time.sleep(0.2)
    out, err = load.communicate()
    if load.returncode not in (0, 1) or not out.strip():
        sys.exit(f"recserve load failed: {err}")
    return json.loads(out), published, corrupted, samples


def print_calls(args, rate: float, peak: float, summary: dict, rows: list):
    """The soak's setup, its calls (failed by status code, latency) and the table of each minute."""
    print(f"soak: {args.minutes:g} min of Rank at {rate:.0f} calls/s (half the {peak:.0f} calls/s peak of a "
          f"sweep), open loop; a new version every {args.publish_every:g} s, a corrupt one every "
          f"{args.corrupt_every:g} s\n")
    codes = summary["status_codes"]
    failed = sum(n for code, n in codes.items() if code != "OK")
    print(f"calls {summary['calls']}, failed {failed} ({', '.join(f'{c} {n}' for c, n in codes.items() if c != 'OK') or 'none'}), "
          f"calls due and never sent {summary['unsent']}; p50 {summary['latency_ms']['p50']:.2f} ms, "
          f"p99 {summary['latency_ms']['p99']:.2f} ms, max {summary['latency_ms']['max']:.2f} ms\n")
    print("| minute | calls/s | errors | p99 ms, worst second | p99 ms, median second |")
    print("|---|---|---|---|---|")
    for minute in range(0, len(rows), 60):
        chunk = rows[minute:minute + 60]
        p99s = sorted(float(r["p99_ms"]) for r in chunk)
        print(f"| {minute // 60 + 1} | {sum(int(r['ok']) for r in chunk) / len(chunk):.0f} | "
              f"{sum(int(r['errors']) for r in chunk)} | {p99s[-1]:.2f} | {p99s[len(p99s) // 2]:.2f} |")


def print_versions(status: dict, published: list, corrupted: list):
    """Versions published and refused, and the one serving at the end."""
    states = {v["version"]: v.get("state", "?") for v in status["versions"]}
    refused = [v for v in corrupted if states.get(v) == "FAILED"]
    print(f"\nversions published {len(published)} (good) + {len(corrupted)} (corrupt); corrupt ones FAILED: "
          f"{len(refused)} of {len(corrupted)}; serving at the end: version {status.get('servingVersion')} "
          f"(the last good one published: {published[-1] if published else 1})")


def print_process(start: dict, end: dict, samples: list):
    """The server's RSS, open descriptors and threads: at the start, minute 2, the end, the highest."""
    print("\n| | RSS MB | open fds | threads |")
    print("|---|---|---|---|")
    print(f"| start | {start['rss_mb']} | {start['fds']} | {start['threads']} |")
    minute2 = next((s for at, s in samples if at >= 120), None)
    if minute2:
        print(f"| minute 2 | {minute2['rss_mb']} | {minute2['fds']} | {minute2['threads']} |")
    peak_rss = max(s["rss_mb"] for _, s in samples + [(0, end)])
    print(f"| end | {end['rss_mb']} | {end['fds']} | {end['threads']} |")
    print(f"| highest sample | {peak_rss} | {max(s['fds'] for _, s in samples)} | "
          f"{max(s['threads'] for _, s in samples)} |")


def main():
    args = parse_args()
    binary = args.binary
    work = pathlib.Path(tempfile.mkdtemp(prefix="recserve-soak-"))
    staged = stage_versions(binary, pathlib.Path(args.data), work)
    models = work / "models"
    model_dir = models / "soak"
    model_dir.mkdir(parents=True)
    publish(staged[0], model_dir, 1)

    process, target = start_server(binary, models)
    common = [binary, "load", "--target", target, "--model", "soak", "--rpc", "rank", "--ids-from", str(staged[0]),
              "--zipf", "1", "--threads", "2"]
    series = work / "soak.csv"
    try:
        peak = peak_rate(common)
        rate = peak / 2
        start = proc_stats(process.pid)
        summary, published, corrupted, samples = run_soak(args, common, rate, series, staged, model_dir,
                                                          process.pid, start)
        time.sleep(2)  # the last poll
        end = proc_stats(process.pid)
        status = json.loads(subprocess.run([binary, "models", "status", "soak", "--target", target, "--json"],
                                           capture_output=True, text=True, check=True).stdout)["status"]
    finally:
        process.terminate()
        process.wait(timeout=30)

    print_calls(args, rate, peak, summary, list(csv.DictReader(series.open())))
    print_versions(status, published, corrupted)
    print_process(start, end, samples)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
