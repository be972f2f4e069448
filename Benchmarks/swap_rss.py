#!/usr/bin/env python3
"""Server memory across repeated hot swaps of a ~50 MB model (issue 3, done-when 6).

Builds an MF model directly in the format the server reads (weights.safetensors with
user_factors [U,D], item_factors [I,D], user_bias, item_bias, global_mean as F32; users.txt,
items.txt; model.json with the SHA-256 of every other file), serves it with `recserve serve`, keeps
a client calling Rank throughout, and then swaps versions the way an admin's tool would: write
version k+1 into a dot-folder beside the served ones, rename it into place, wait until a Rank
response reports it. The server's RSS (VmRSS, with its RssAnon / RssFile parts, from
/proc/PID/status) is read after the first swap and after each further one: once the new version
serves and then --settle seconds (one poll interval + 0.5 s) for the swap's clean-up (unloading the
version that fell out of the latest N); the RSS the moment the new version first served is
reported beside it.

Every version holds different values (global_mean and one factor row change), so nothing can be
shared between versions except by the server's own design.

Usage: python3 Benchmarks/swap_rss.py [--binary PATH] [--swaps 20] [--megabytes 50] [--dim 64]
                                      [--poll-interval 1] [--rate 200] [--settle S]
                                      [--limit 1.5] [--json FILE] [--keep]
Exit status 1 when RSS after the last swap is more than --limit times RSS after the first.
"""

import argparse
import hashlib
import json
import os
import pathlib
import random
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Stubs and binary


def generate_stubs() -> pathlib.Path:
    from grpc_tools import protoc  # noqa: PLC0415
    import grpc_tools  # noqa: PLC0415

    out = pathlib.Path(tempfile.mkdtemp(prefix="recserve-stubs-"))
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{REPO / 'Protos'}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}",
            "recserve/v1/recserve.proto"]
    if protoc.main(args) != 0:
        raise RuntimeError("grpcio-tools could not compile Protos/")
    for package in ["recserve", "recserve/v1"]:
        (out / package / "__init__.py").touch()
    return out


def find_binary(path: str | None) -> str:
    for candidate in [path, os.environ.get("RECSERVE_BIN"), REPO / ".build" / "release" / "recserve",
                      REPO / ".build" / "debug" / "recserve"]:
        if candidate and pathlib.Path(candidate).exists():
            return str(candidate)
    raise SystemExit("recserve is not built: run `swift build -c release --product recserve` or pass --binary")


# --------------------------------------------------------------------------------------------
# The model, written the way the server reads it


class ModelFiles:
    """An MF model of about `megabytes` MB of weights; `write(folder, k)` writes variant k."""

    def __init__(self, megabytes: float, dim: int, seed: int = 7):
        import numpy as np  # noqa: PLC0415

        self.np = np
        rows = int(megabytes * 1e6 / 4 / dim)
        self.items = max(1000, rows // 4)
        self.users = rows - self.items
        self.dim = dim
        rng = np.random.default_rng(seed)
        scale = np.float32(0.3)
        self.user_factors = (rng.standard_normal((self.users, dim), dtype=np.float32) * scale)
        self.item_factors = (rng.standard_normal((self.items, dim), dtype=np.float32) * scale)
        self.user_bias = (rng.standard_normal(self.users, dtype=np.float32) * np.float32(0.1))
        self.item_bias = (rng.standard_normal(self.items, dtype=np.float32) * np.float32(0.1))
        self.user_ids = [f"u{u + 1}" for u in range(self.users)]
        self.item_ids = [f"i{i + 1}" for i in range(self.items)]
        self.users_txt = ("\n".join(self.user_ids) + "\n").encode()
        self.items_txt = ("\n".join(self.item_ids) + "\n").encode()

    def weights(self, variant: int) -> bytes:
        np = self.np
        user_factors = self.user_factors
        user_factors[variant % self.users, 0] = np.float32(variant * 1e-3)  # every version differs
        tensors = {
            "user_factors": user_factors, "item_factors": self.item_factors, "user_bias": self.user_bias,
            "item_bias": self.item_bias, "global_mean": np.array([3.5 + variant * 1e-4], dtype=np.float32),
        }
        # Layout as the server's own writer: by name (all F32), header padded to 8 bytes.
        header, blobs, offset = {}, [], 0
        for name in sorted(tensors):
            data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
            header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                            "data_offsets": [offset, offset + len(data)]}
            blobs.append(data)
            offset += len(data)
        header["__metadata__"] = {"format": "recserve-model", "kind": "mf"}
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * ((8 - (8 + len(text)) % 8) % 8)
        return len(text).to_bytes(8, "little") + text + b"".join(blobs)

    def write(self, folder: pathlib.Path, variant: int, name: str):
        folder.mkdir(parents=True)
        files = {"weights.safetensors": self.weights(variant), "users.txt": self.users_txt,
                 "items.txt": self.items_txt}
        for file, data in files.items():
            with open(folder / file, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        manifest = {
            "format": "recserve-model", "format_version": 1, "kind": "mf", "name": name,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "hyperparameters": {"dim": self.dim, "source": "Benchmarks/swap_rss.py"},
            "counts": {"users": self.users, "items": self.items, "dim": self.dim},
            "training_data": {}, "metrics": {}, "rating_range": [0.5, 5.0],
            "files": {file: hashlib.sha256(data).hexdigest() for file, data in files.items()},
        }
        (folder / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")
        fd = os.open(folder, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        return len(files["weights.safetensors"])


def publish(model: ModelFiles, model_dir: pathlib.Path, version: int, name: str) -> int:
    staged = model_dir / f".staging-{version}"
    size = model.write(staged, version, name)
    os.rename(staged, model_dir / str(version))
    return size


# --------------------------------------------------------------------------------------------
# Server and client


def proc_status(pid: int) -> dict:
    """VmRSS, RssAnon, RssFile, VmHWM in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values


class Serve:
    def __init__(self, binary: str, models: pathlib.Path, log: pathlib.Path, poll_interval: float, threads: int):
        self.log = open(log, "wb")
        self.process = subprocess.Popen(
            [binary, "serve", "--models", str(models), "--port", "0", "--threads", str(threads),
             "--poll-interval", str(poll_interval)],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if ready:
                match = re.match(r"listening on ([^\s]+):(\d+)", self.process.stdout.readline())
                if match:
                    self.target = f"127.0.0.1:{match.group(2)}"
                    return
            if self.process.poll() is not None:
                raise RuntimeError(f"recserve serve exited with {self.process.returncode}; see {log}")
        self.process.kill()
        raise RuntimeError("recserve serve did not start")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


class RankClient:
    """Paced Rank calls from one thread; remembers the latest version served and every failure."""

    def __init__(self, target: str, name: str, users: list, rate: float):
        import grpc  # noqa: PLC0415
        from recserve.v1 import recserve_pb2 as pb  # noqa: PLC0415
        from recserve.v1 import recserve_pb2_grpc as rpc  # noqa: PLC0415

        self.grpc, self.pb = grpc, pb
        self.channel = grpc.insecure_channel(target)
        self.stub = rpc.RecommenderStub(self.channel)
        self.name, self.users, self.rate = name, users, rate
        self.latest = 0
        self.calls = 0
        self.failures = []
        self.latencies = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        rng = random.Random(1)
        period = 1.0 / self.rate
        next_send = time.monotonic()
        while not self.done.is_set():
            now = time.monotonic()
            if now < next_send:
                time.sleep(min(next_send - now, 0.05))
                continue
            next_send += period
            request = self.pb.RankRequest(model=self.pb.ModelSpec(name=self.name), user_id=rng.choice(self.users),
                                          k=10)
            start = time.monotonic()
            try:
                version = self.stub.Rank(request, timeout=30).model_version
                with self.lock:
                    self.latest = max(self.latest, version)
                    self.calls += 1
                    self.latencies.append((start, time.monotonic() - start))
            except self.grpc.RpcError as error:
                with self.lock:
                    self.calls += 1
                    self.failures.append(f"{error.code().name}: {error.details()}")

    def wait_for(self, version: int, timeout: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            with self.lock:
                if self.latest >= version:
                    return time.monotonic() - start
            time.sleep(0.01)
        raise RuntimeError(f"no Rank response from version {version} within {timeout} s")

    def stop(self):
        self.done.set()
        self.thread.join(timeout=60)
        self.channel.close()


# --------------------------------------------------------------------------------------------


def measure(binary: str, swaps: int = 20, megabytes: float = 50, dim: int = 64, poll_interval: float = 1.0,
            rate: float = 200, settle: float | None = None, threads: int = 2, keep: bool = False, log=print) -> dict:
    """Runs the measurement; returns {'rows': [...], 'ratio': last/first, ...}. `settle` (default: one
    poll interval plus 0.5 s) is how long after a version first serves its RSS is read, so that the
    swap's own clean-up (unloading the version that fell out of the latest N) is included."""
    if settle is None:
        settle = poll_interval + 0.5
    stubs = generate_stubs()
    if str(stubs) not in sys.path:
        sys.path.insert(0, str(stubs))
    work = pathlib.Path(tempfile.mkdtemp(prefix="recserve-swap-rss-"))
    name = "big"
    model_dir = work / "models" / name
    model_dir.mkdir(parents=True)
    try:
        t = time.monotonic()
        model = ModelFiles(megabytes, dim)
        weights_bytes = publish(model, model_dir, 1, name)
        log(f"model: {model.users} users x {model.items} items x dim {dim}: weights.safetensors "
            f"{weights_bytes / 1e6:.1f} MB (built in {time.monotonic() - t:.1f} s)")
        server = Serve(binary, work / "models", work / "server.log", poll_interval, threads)
        pid = server.process.pid
        client = None
        rows = []
        swap_windows = []  # (rename, first response from the new version + 0.5 s)
        try:
            log(f"server pid {pid} at {server.target}; RSS at start {proc_status(pid)['VmRSS']:.1f} MB")
            client = RankClient(server.target, name, model.user_ids[:5000], rate)
            client.wait_for(1, timeout=60)
            for swap in range(1, swaps + 1):
                version = swap + 1
                t = time.monotonic()
                publish(model, model_dir, version, name)
                published = time.monotonic()
                seconds = client.wait_for(version, timeout=120)
                swap_windows.append((published, time.monotonic() + 0.5))
                at_swap = proc_status(pid)["VmRSS"]
                time.sleep(settle)
                status = proc_status(pid)
                row = {"swap": swap, "version": version, "rss_mb": round(status["VmRSS"], 1),
                       "anon_mb": round(status.get("RssAnon", 0), 1), "file_mb": round(status.get("RssFile", 0), 1),
                       "hwm_mb": round(status.get("VmHWM", 0), 1), "rss_at_swap_mb": round(at_swap, 1),
                       "write_s": round(published - t, 2), "to_serve_s": round(seconds, 2)}
                rows.append(row)
                log(f"swap {swap:2d} -> v{version:<3d} RSS {row['rss_mb']:7.1f} MB (anon {row['anon_mb']:7.1f}, "
                    f"file {row['file_mb']:7.1f}, peak {row['hwm_mb']:7.1f}; {row['rss_at_swap_mb']:7.1f} the moment "
                    f"it served)  served {row['to_serve_s']:.2f} s after the rename")
        finally:
            if client is not None:
                client.stop()
            code = server.stop()
        def pct(values, q):
            values = sorted(values)
            return round(values[min(len(values) - 1, int(len(values) * q))] * 1000, 3) if values else None

        swapping = [lat for start, lat in client.latencies if any(a <= start < b for a, b in swap_windows)]
        steady = [lat for start, lat in client.latencies if not any(a <= start < b for a, b in swap_windows)]
        result = {
            "binary": binary, "megabytes": round(weights_bytes / 1e6, 1), "users": model.users, "items": model.items,
            "dim": dim, "swaps": swaps, "poll_interval": poll_interval, "rows": rows,
            "ratio": round(rows[-1]["rss_mb"] / rows[0]["rss_mb"], 3), "calls": client.calls,
            "failed_calls": len(client.failures), "failures": client.failures[:5], "exit_code": code,
            "rank_steady": {"calls": len(steady), "p50_ms": pct(steady, 0.5), "p99_ms": pct(steady, 0.99)},
            "rank_swapping": {"calls": len(swapping), "p50_ms": pct(swapping, 0.5), "p99_ms": pct(swapping, 0.99)},
        }
        return result
    finally:
        if keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(stubs, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary")
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--megabytes", type=float, default=50)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=200, help="Rank calls per second during the run")
    parser.add_argument("--settle", type=float, default=None,
                        help="seconds after a version first serves before reading RSS (default: poll interval + 0.5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=float, default=1.5)
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary model folder")
    args = parser.parse_args()
    binary = find_binary(args.binary)
    start = time.monotonic()
    result = measure(binary, args.swaps, args.megabytes, args.dim, args.poll_interval, args.rate, args.settle,
                     args.threads, args.keep)
    result["seconds"] = round(time.monotonic() - start, 1)
    rows = result["rows"]
    print()
    print("| swap | version | VmRSS MB | RssAnon MB | RssFile MB | VmRSS when it first served | served after rename (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['swap']} | {row['version']} | {row['rss_mb']:.1f} | {row['anon_mb']:.1f} | "
              f"{row['file_mb']:.1f} | {row['rss_at_swap_mb']:.1f} | {row['to_serve_s']:.2f} |")
    print()
    print(f"RSS after swap {rows[-1]['swap']} / after swap 1: {rows[-1]['rss_mb']:.1f} / {rows[0]['rss_mb']:.1f} MB "
          f"= {result['ratio']:.3f}x (limit {args.limit}x)")
    steady, swapping = result["rank_steady"], result["rank_swapping"]
    print(f"Rank: {result['calls']} calls, {result['failed_calls']} failed; p50/p99 {steady['p50_ms']}/"
          f"{steady['p99_ms']} ms between swaps ({steady['calls']} calls), {swapping['p50_ms']}/{swapping['p99_ms']} ms "
          f"from each rename to 0.5 s after the new version first served ({swapping['calls']} calls)")
    print(f"{result['seconds']} s in all; binary {binary}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    ok = result["ratio"] <= args.limit and result["failed_calls"] == 0 and result["exit_code"] == 0
    if result["failed_calls"]:
        print(f"FAILED calls: {result['failures']}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
