"""Helpers for the hot-swap and admin tests (issue 3): model versions on disk (copy, corrupt,
publish atomically from this or another process), a paced Rank load that records every call, and
small polling utilities. Not a test module: pytest collects nothing here.
"""

import hashlib
import json
import math
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import threading
import time
import uuid

import grpc
import numpy as np

from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc

# --------------------------------------------------------------------------------------------
# Version folders on disk


def sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_DTYPES = {"F32": np.float32, "I32": np.int32, "I64": np.int64}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def read_safetensors(path: pathlib.Path):
    """(tensors by name as numpy arrays, the __metadata__ dict)."""
    raw = pathlib.Path(path).read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_length])
    body = raw[8 + header_length :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(body[start:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
        tensors[name] = array.copy()
    return tensors, header.get("__metadata__", {})


def safetensors_bytes(tensors: dict, metadata: dict | None = None) -> bytes:
    """A safetensors file laid out like the server's writer: 8-byte dtypes first, then by name, the
    header padded with spaces so the data starts 8-byte aligned."""
    ordered = sorted(tensors.items(), key=lambda kv: (-np.dtype(kv[1].dtype).itemsize, kv[0]))
    header, blobs, offset = {}, [], 0
    for name, array in ordered:
        array = np.ascontiguousarray(array)
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _NAMES[np.dtype(array.dtype)], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write_safetensors(path: pathlib.Path, tensors: dict, metadata: dict | None = None):
    pathlib.Path(path).write_bytes(safetensors_bytes(tensors, metadata))


def read_manifest(version_dir: pathlib.Path) -> dict:
    return json.loads((pathlib.Path(version_dir) / "model.json").read_text())


def write_manifest(version_dir: pathlib.Path, manifest: dict):
    (pathlib.Path(version_dir) / "model.json").write_text(json.dumps(manifest, indent=2) + "\n")


def refresh_checksums(version_dir: pathlib.Path):
    """Recomputes the SHA-256 of every file model.json lists, so that only the defect planted on
    purpose (a shape, a NaN) is left for verification to find."""
    manifest = read_manifest(version_dir)
    manifest["files"] = {name: sha256_file(pathlib.Path(version_dir) / name) for name in manifest["files"]}
    write_manifest(version_dir, manifest)


def fsync_tree(folder: pathlib.Path):
    for entry in pathlib.Path(folder).iterdir():
        fd = os.open(entry, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage(source: pathlib.Path, model_dir: pathlib.Path, name: str | None = None) -> pathlib.Path:
    """Copies a version folder into a dot-folder inside `model_dir` (which the server ignores) and
    returns it. With `name`, model.json is rewritten to name that model (model.json carries no
    checksum of itself)."""
    model_dir = pathlib.Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    staged = model_dir / f".incoming-{uuid.uuid4().hex[:12]}"
    shutil.copytree(source, staged)
    if name is not None:
        manifest = read_manifest(staged)
        manifest["name"] = name
        write_manifest(staged, manifest)
    return staged


def publish(staged: pathlib.Path, version: int) -> pathlib.Path:
    """Renames a staged dot-folder into place as `version`: the atomic publish."""
    fsync_tree(staged)
    target = staged.parent / str(version)
    os.rename(staged, target)
    return target


def clone(source: pathlib.Path, model_dir: pathlib.Path, version: int, name: str | None = None) -> pathlib.Path:
    """Publishes a copy of `source` as `model_dir/<version>`, atomically, from this process."""
    return publish(stage(source, model_dir, name), version)


# Run by `python3 -c` in another process: copy SOURCE into a dot-folder beside the target, fsync,
# rename into place, print the CLOCK_MONOTONIC time of the rename (system-wide on Linux, so it is
# comparable with this process's time.monotonic()).
PUBLISH_SNIPPET = r"""
import os, shutil, sys, time
source, model_dir, version = sys.argv[1], sys.argv[2], sys.argv[3]
staged = os.path.join(model_dir, ".copying-%s-%d" % (version, os.getpid()))
os.makedirs(staged)
for name in sorted(os.listdir(source)):
    with open(os.path.join(source, name), "rb") as src, open(os.path.join(staged, name), "wb") as dst:
        shutil.copyfileobj(src, dst)
        dst.flush()
        os.fsync(dst.fileno())
fd = os.open(staged, os.O_RDONLY); os.fsync(fd); os.close(fd)
os.rename(staged, os.path.join(model_dir, version))
print(repr(time.monotonic()), flush=True)
"""


def publish_from_another_process(source: pathlib.Path, model_dir: pathlib.Path, version: int) -> float:
    """Publishes a copy of `source` as `model_dir/<version>` from a separate Python process; returns
    the monotonic time of the rename."""
    result = subprocess.run([sys.executable, "-c", PUBLISH_SNIPPET, str(source), str(model_dir), str(version)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return float(result.stdout.strip().splitlines()[-1])


# Corruptions of a staged copy, each leaving exactly one defect for verification to find.

def corrupt_truncated(folder: pathlib.Path):
    weights = folder / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * 0.6)])


def corrupt_checksum(folder: pathlib.Path):
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    (header_length,) = struct.unpack("<Q", data[:8])
    middle = 8 + header_length + (len(data) - 8 - header_length) // 2
    data[middle] ^= 0x01  # one bit of one float: the file still parses, only the checksum differs
    weights.write_bytes(bytes(data))


def corrupt_shape(folder: pathlib.Path):
    tensors, metadata = read_safetensors(folder / "weights.safetensors")
    factors = tensors["item_factors"]
    tensors["item_factors"] = np.concatenate([factors, np.zeros((factors.shape[0], 1), np.float32)], axis=1)
    write_safetensors(folder / "weights.safetensors", tensors, metadata)
    refresh_checksums(folder)


def corrupt_nan(folder: pathlib.Path):
    tensors, metadata = read_safetensors(folder / "weights.safetensors")
    tensors["item_factors"][3, 1] = np.nan
    write_safetensors(folder / "weights.safetensors", tensors, metadata)
    refresh_checksums(folder)


def corrupt_no_manifest(folder: pathlib.Path):
    (folder / "model.json").unlink()


def corrupt_unknown_kind(folder: pathlib.Path):
    manifest = read_manifest(folder)
    manifest["kind"] = "xyz"
    write_manifest(folder, manifest)


def write_in_place_slowly(source: pathlib.Path, target: pathlib.Path, seconds: float = 2.0, chunks: int = 20):
    """Creates the version folder in place (no rename) and fills it slowly: model.json first, then
    the id maps, then the weights in `chunks` pieces over `seconds`."""
    target.mkdir()
    for name in ["model.json", "users.txt", "items.txt"]:
        shutil.copyfile(source / name, target / name)
    data = (source / "weights.safetensors").read_bytes()
    step = max(1, math.ceil(len(data) / chunks))
    with open(target / "weights.safetensors", "wb") as f:
        for start in range(0, len(data), step):
            f.write(data[start : start + step])
            f.flush()
            os.fsync(f.fileno())
            time.sleep(seconds / chunks)


# --------------------------------------------------------------------------------------------
# Waiting, status, percentiles


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Polls `predicate` until it returns something truthy; returns it, or fails naming `what` and
    the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


STATE_NAMES = {pb.LOADING: "LOADING", pb.AVAILABLE: "AVAILABLE", pb.FAILED: "FAILED", pb.UNLOADED: "UNLOADED",
               pb.VERSION_STATE_UNSPECIFIED: "UNSPECIFIED"}


def states(status: pb.ModelStatus) -> dict:
    """{version: state name} of a ModelStatus."""
    return {v.version: STATE_NAMES[v.state] for v in status.versions}


def version_status(status: pb.ModelStatus, version: int):
    for v in status.versions:
        if v.version == version:
            return v
    return None


def percentile(values, p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank]


def bearer(token: str):
    return (("authorization", f"Bearer {token}"),)


# --------------------------------------------------------------------------------------------
# A paced Rank load


class Call:
    __slots__ = ("start", "end", "version", "code", "details")

    def __init__(self, start, end, version, code, details):
        self.start, self.end, self.version, self.code, self.details = start, end, version, code, details


class RankLoad:
    """Keeps Rank calls going at `rate` per second (open loop: each thread sends on a fixed schedule
    and catches up when late) from `threads` threads sharing one channel, recording every call's
    start, end, served version and status code."""

    def __init__(self, target: str, model: str, users: list, rate: float = 250, threads: int = 2, k: int = 10,
                 timeout: float = 10.0):
        self.target, self.model, self.users = target, model, list(users)
        self.rate, self.threads, self.k, self.timeout = rate, threads, k, timeout
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = []
        self._channel = None
        self.started = None
        self.stopped = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self._channel = grpc.insecure_channel(self.target)
        grpc.channel_ready_future(self._channel).result(timeout=10)
        self.started = time.monotonic()
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _run(self, index: int):
        stub = rpc.RecommenderStub(self._channel)
        period = self.threads / self.rate
        next_send = self.started + index * period / self.threads
        n = index
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_send:
                time.sleep(min(next_send - now, 0.05))
                continue
            next_send += period
            user = self.users[n % len(self.users)]
            n += self.threads
            request = pb.RankRequest(model=pb.ModelSpec(name=self.model), user_id=user, k=self.k)
            start = time.monotonic()
            try:
                response = stub.Rank(request, timeout=self.timeout)
                call = Call(start, time.monotonic(), response.model_version, grpc.StatusCode.OK, "")
            except grpc.RpcError as error:
                call = Call(start, time.monotonic(), None, error.code(), error.details())
            with self._lock:
                self.calls.append(call)

    def stop(self):
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)
        self.stopped = time.monotonic()
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def snapshot(self) -> list:
        with self._lock:
            return list(self.calls)

    def failures(self) -> list:
        return [c for c in self.snapshot() if c.code != grpc.StatusCode.OK]

    def first_with_version(self, version: int):
        hits = [c for c in self.snapshot() if c.version == version]
        return min(hits, key=lambda c: c.end) if hits else None

    def wait_for_version(self, version: int, timeout: float = 20.0):
        return wait_for(lambda: self.first_with_version(version), timeout=timeout,
                        what=f"a Rank response from version {version}")

    def phase(self, start: float, end: float) -> dict:
        """Calls started in [start, end): count, achieved rate, p50/p99 latency in ms, versions."""
        calls = [c for c in self.snapshot() if start <= c.start < end]
        latencies = [(c.end - c.start) * 1000 for c in calls]
        span = max(1e-9, min(end, self.stopped or time.monotonic()) - start)
        return {
            "calls": len(calls),
            "rate_per_s": round(len(calls) / span, 1),
            "p50_ms": round(percentile(latencies, 50), 3),
            "p99_ms": round(percentile(latencies, 99), 3),
            "max_ms": round(max(latencies), 3) if latencies else float("nan"),
            "failed": sum(1 for c in calls if c.code != grpc.StatusCode.OK),
            "versions": sorted({c.version for c in calls if c.version is not None}),
        }


def describe_failures(calls, limit: int = 5) -> str:
    return "; ".join(f"{c.code.name}: {c.details}" for c in calls[:limit])
