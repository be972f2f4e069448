#!/usr/bin/env python3
"""N `recserve serve` replicas on one model folder behind HAProxy, with gRPC health checks.

    python3 Scripts/cluster.py --models models --model demo --replicas 3 --port 8080

Starts the replicas on ports --first-port, --first-port + 1, ... (each with `--drain-seconds`, so
that a stopping replica turns NOT_SERVING first and HAProxy moves its traffic away before it
closes the port), then HAProxy (Debian's `haproxy`) on --port, speaking HTTP/2 to the replicas and
checking each with `grpc.health.v1.Health/Check` for the service `recserve.v1.Recommender/MODEL`
every --check-ms: a replica that is starting, draining, or has no version of MODEL serving
receives no traffic. Clients call the balancer's address as they would one server. Ctrl-C stops
everything. Extra arguments after `--` go to every `recserve serve`.

The test suite imports `haproxy_config` and `Replica` from here (Tests/python/test_cluster.py).
"""

import argparse
import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def health_check_frame(model: str) -> bytes:
    """A gRPC frame holding HealthCheckRequest{service: "recserve.v1.Recommender/<model>"}."""
    service = f"recserve.v1.Recommender/{model}".encode()
    message = bytes([0x0A, len(service)]) + service
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _literal(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 127
    return bytes([len(data)]) + data


def http2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def health_check_bytes(model: str) -> bytes:
    """What a gRPC client sends for one Health/Check call on a new plain-text HTTP/2 connection
    (prior knowledge): the preface, empty SETTINGS, HEADERS (HPACK literals, no Huffman coding)
    and one DATA frame that ends the stream.

    HAProxy has no gRPC health check, and its HTTP/2 `http-check` does not see a gRPC response's
    body (2.6: "HTTP content check could not find a response body"), so the balancer sends
    these bytes with `tcp-check` and looks for the SERVING response in what comes back, as other
    projects do (envoyproxy/envoy#369, ray-project/ray#63735).
    """
    headers = (
        b"\x83"  # :method POST (static table 3)
        + b"\x86"  # :scheme http (6)
        + b"\x04" + _literal("/grpc.health.v1.Health/Check")  # :path, literal value
        + b"\x01" + _literal("localhost")  # :authority
        + b"\x0f\x10" + _literal("application/grpc")  # content-type (31)
        + b"\x00" + _literal("te") + _literal("trailers")
    )
    return (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + http2_frame(0x4, 0, 0, b"")  # SETTINGS
        + http2_frame(0x1, 0x4, 1, headers)  # HEADERS, END_HEADERS
        + http2_frame(0x0, 0x1, 1, health_check_frame(model))  # DATA, END_STREAM
    )


# The gRPC frame of HealthCheckResponse{status: SERVING} (NOT_SERVING ends 08 02; an unknown
# service answers with no message): a replica passes the check only when it is in the answer.
SERVING_FRAME = "00000000020801"


def haproxy_config(port: int, backends: list[int], model: str, check_ms: int = 250, host: str = "127.0.0.1",
                   stats_socket: str | None = None) -> str:
    """HAProxy in front of replicas on `backends` (ports on 127.0.0.1): HTTP/2 both ways, round robin,
    a replica in rotation after 2 passed checks and out after 2 failed ones, `check_ms` apart."""
    servers = "\n".join(f"  server r{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    stats = f"\n  stats socket {stats_socket} mode 600" if stats_socket else ""
    return f"""global
  maxconn 4096{stats}

defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout check {max(check_ms, 200)}ms
  retries 3
  option redispatch
  retry-on conn-failure empty-response response-timeout

frontend grpc
  bind {host}:{port} proto h2
  default_backend replicas

backend replicas
  balance roundrobin
  option tcp-check
  tcp-check connect
  tcp-check send-binary {health_check_bytes(model).hex()}
  tcp-check expect binary {SERVING_FRAME}
  default-server proto h2 check inter {check_ms}ms fall 2 rise 2
{servers}
"""


def CLIENT_SERVICE_CONFIG(model: str) -> dict:
    """The gRPC service config for clients that balance over several replicas themselves:
    round_robin over every address, skipping replicas whose grpc.health.v1 Watch of the model says
    NOT_SERVING (starting, draining), and retrying UNAVAILABLE (a replica in its last instant)."""
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": f"recserve.v1.Recommender/{model}"},
        "methodConfig": [{
            "name": [{"service": "recserve.v1.Recommender"}],
            "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
        }],
    }


def binary() -> str:
    path = os.environ.get("RECSERVE_BIN")
    if path:
        return path
    for candidate in [REPO / ".build" / "release" / "recserve", REPO / ".build" / "debug" / "recserve"]:
        if candidate.exists():
            return str(candidate)
    raise SystemExit("recserve is not built: run `swift build -c release --product recserve` or set RECSERVE_BIN")


class Replica:
    """One `recserve serve` on a fixed port (so that the balancer finds it again after a restart)."""

    def __init__(self, models, port: int, *extra: str, log=None):
        self.models, self.port, self.extra, self.log = str(models), port, extra, log
        self.process = None

    def start(self, timeout: float = 120):
        stderr = open(self.log, "ab") if self.log else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [binary(), "serve", "--models", self.models, "--port", str(self.port), *self.extra],
                stdout=subprocess.PIPE, stderr=stderr, text=True)
        finally:
            if self.log:
                stderr.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if ready and re.match(r"listening on ", self.process.stdout.readline()):
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"replica on port {self.port} exited with {self.process.returncode}")
        raise RuntimeError(f"replica on port {self.port} did not start in time")

    def stop(self, timeout: float = 60) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=timeout)
        return self.process.returncode if self.process else 0


def servers_up(stats_socket: str) -> dict:
    """{server name: True when in rotation} from HAProxy's stats socket ({} before HAProxy made it)."""
    import socket  # noqa: PLC0415

    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(stats_socket)
        except (FileNotFoundError, ConnectionRefusedError):
            return {}
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
    return {r["svname"]: r["status"] == "UP" for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")}


def start_haproxy(config: str, folder: pathlib.Path) -> subprocess.Popen:
    path = folder / "haproxy.cfg"
    path.write_text(config)
    check = subprocess.run(["haproxy", "-c", "-q", "-f", str(path)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy refused its configuration:\n{check.stdout}{check.stderr}")
    return subprocess.Popen(["haproxy", "-db", "-f", str(path)], stdout=subprocess.DEVNULL,
                            stderr=open(folder / "haproxy.log", "ab"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", required=True, help="the model folder the replicas share")
    parser.add_argument("--model", required=True, help="a replica receives traffic only while this model serves")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--port", type=int, default=8080, help="the balancer's port")
    parser.add_argument("--host", default="127.0.0.1", help="the balancer's address")
    parser.add_argument("--first-port", type=int, default=50061, help="the first replica's port")
    parser.add_argument("--check-ms", type=int, default=250, help="milliseconds between health checks")
    parser.add_argument("--drain-seconds", type=float, default=2.0)
    parser.add_argument("serve_args", nargs="*", help="after --: arguments for every recserve serve")
    args = parser.parse_args()
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    folder = pathlib.Path(tempfile.mkdtemp(prefix="recserve-cluster-"))
    ports = [args.first_port + i for i in range(args.replicas)]
    extra = ["--drain-seconds", str(args.drain_seconds), *args.serve_args]
    replicas = [Replica(args.models, p, *extra, log=folder / f"replica-{p}.log") for p in ports]
    haproxy = None
    try:
        for r in replicas:
            r.start()
            print(f"replica on 127.0.0.1:{r.port} (log: {r.log})", flush=True)
        haproxy = start_haproxy(haproxy_config(args.port, ports, args.model, args.check_ms, args.host), folder)
        print(f"balancer on {args.host}:{args.port} (haproxy; config and logs in {folder})", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM}) if hasattr(signal, "sigwait") else haproxy.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for r in replicas:
            r.stop()
        if haproxy:
            haproxy.terminate()
            haproxy.wait()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main())
