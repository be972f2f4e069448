"""End-to-end tests: the real `recserve` binary, real sockets, and clients nobody here wrote.

Python stubs are generated from Protos/ by grpcio-tools at the start of every run, so the tests
speak exactly the wire contract an outside client would.
"""

import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTOS = REPO / "Protos"


def _generate_stubs() -> pathlib.Path:
    from grpc_tools import protoc  # noqa: PLC0415

    out = pathlib.Path(tempfile.mkdtemp(prefix="recserve-stubs-"))
    # Health and reflection clients come from grpcio-health-checking and grpcio-reflection.
    files = ["recserve/v1/recserve.proto"]
    import grpc_tools  # noqa: PLC0415

    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTOS}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + files) != 0:
        raise RuntimeError("grpcio-tools could not compile Protos/")
    for package in ["recserve", "recserve/v1"]:
        (out / package / "__init__.py").touch()
    return out


STUBS = _generate_stubs()
sys.path.insert(0, str(STUBS))


def binary() -> str:
    path = os.environ.get("RECSERVE_BIN")
    if path:
        return path
    for candidate in [REPO / ".build" / "debug" / "recserve", REPO / ".build" / "release" / "recserve"]:
        if candidate.exists():
            return str(candidate)
    raise RuntimeError("recserve is not built: run `swift build -c release` or set RECSERVE_BIN")


def run_cli(*args, check=True, timeout=300):
    result = subprocess.run([binary(), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"recserve {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
    return result


class Server:
    """A `recserve serve` process on a free port."""

    def __init__(self, models: pathlib.Path, *extra: str, threads: int = 2, log: pathlib.Path | None = None):
        """`extra` goes to `recserve serve`. With `log`, the server's stderr is appended to that file
        (read it with `log_text()`) instead of a pipe nobody drains while the server runs."""
        self.models = models
        self.log = log
        stderr = open(log, "ab") if log is not None else subprocess.PIPE
        try:
            self.process = subprocess.Popen(
                [binary(), "serve", "--models", str(models), "--port", "0", "--threads", str(threads), *extra],
                stdout=subprocess.PIPE, stderr=stderr, text=True,
            )
        finally:
            if log is not None:
                stderr.close()
        self._stderr: str | None = None
        self.port = self._wait_for_listening()
        self.target = f"127.0.0.1:{self.port}"

    def _wait_for_listening(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if ready:
                line = self.process.stdout.readline()
                match = re.match(r"listening on ([^\s]+):(\d+)", line)
                if match:
                    return int(match.group(2))
            if self.process.poll() is not None:
                raise RuntimeError(f"recserve serve exited with {self.process.returncode}:\n{self.log_text()}")
        self.process.kill()
        raise RuntimeError("recserve serve did not print 'listening on' in time")

    def log_text(self) -> str:
        """The server's stderr: so far when it logs to a file, everything once stopped when piped."""
        if self.log is not None:
            return pathlib.Path(self.log).read_text(errors="replace")
        if self._stderr is None and self.process.poll() is not None:
            self._stderr = self.process.stderr.read()
        return self._stderr or ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError("recserve serve did not stop after a signal")
        # The server checks at shutdown that every call record it allocated was freed; one that
        # was not is a reference-count bug that would leak memory with every such call.
        unreleased = [line for line in self.log_text().splitlines() if "not released at shutdown" in line]
        assert not unreleased, "\n".join(unreleased)
        return self.process.returncode


def cancel_and_expect_nothing_published(stream, folder: pathlib.Path, settle: float = 1.0):
    """Cancels a Train stream: it ends CANCELLED, and after `settle` seconds the server has left no
    version of the model in `folder` (at most the folder itself, or hidden staging entries)."""
    import grpc  # noqa: PLC0415

    stream.cancel()
    with pytest.raises(grpc.RpcError) as error:
        list(stream)
    assert error.value.code() == grpc.StatusCode.CANCELLED
    time.sleep(settle)
    published = [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.exists() else []
    assert published == []


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """Generated ratings with planted structure, and an MF model trained on them."""
    root = tmp_path_factory.mktemp("data")
    data = root / "ratings.csv"
    run_cli("gen-data", "--users", 300, "--items", 200, "--out", data, "--seed", 11)
    models = root / "models"
    result = run_cli("train", "--data", data, "--kind", "mf", "--name", "movies", "--models", models,
                     "--dim", 16, "--epochs", 20, "--seed", 3, "--json")
    return {"data": data, "models": models, "train": result.stdout}


@pytest.fixture(scope="session")
def server(dataset):
    server = Server(dataset["models"])
    yield server
    code = server.stop()
    assert code == 0, f"server exited with {code}: {server.log_text()}"


@pytest.fixture(scope="session")
def versions(dataset, tmp_path_factory):
    """Three versions of 'movies' trained on the session's data with different seeds and
    `--holdout 0` (so every version knows the same users), in a staging folder no server watches.
    Tests copy them into their own model folders."""
    staging = tmp_path_factory.mktemp("staged-versions")
    for seed in (101, 102, 103):
        run_cli("train", "--data", dataset["data"], "--kind", "mf", "--name", "movies", "--models", staging,
                "--dim", 8, "--epochs", 8, "--seed", seed, "--holdout", 0)
    return [staging / "movies" / str(v) for v in (1, 2, 3)]
