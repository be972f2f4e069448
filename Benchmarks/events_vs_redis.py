#!/usr/bin/env python3
"""Event ingestion, RecServe vs Redis at equal durability (issue 17, done-when 2).

Two kinds of client (--client):
  - native (the default): each server's own native load generator, so that the figures measure
    the servers: `recserve load --rpc append --batch B` (gRPC core, C) against `redis-benchmark
    -P B XADD ...` (hiredis, C). Each runs its --clients connections' worth of calls, one batch in
    flight per client (redis-benchmark: -c clients, each pipelining -P B XADDs; recserve load:
    --concurrency clients over at most 2 threads). redis-benchmark runs by count, not time: a
    1-second probe sets the count that lasts --duration. Its p50/p99 are per XADD (with -P B, a
    pipeline's wait), recserve load's per call (one batch).
  - python: the client processes described below (grpcio against redis-py with hiredis), which
    also cover AppendEventStream; at batch 1 the grpcio client's own CPU (about 0.3 ms a call)
    sets the pace, so these figures measure the clients as much as the servers.

With --client python, the same events go side by side into
  - RecServe: `recserve serve --events-dir DIR --events-fsync always | interval-ms=1000`, through
    AppendEvents (one call a batch: the answer is the acknowledgement) and AppendEventStream
    (one stream per client, one message a batch; only the stream's end is answered, so it has
    throughput but no per-batch latency);
  - Redis (Debian's `redis-server`, our own instance on a free port in a temporary folder,
    `appendonly yes`, `appendfsync always | everysec`): one `XADD user:<id> * item .. type ..
    value .. ts ..` per event, a batch's XADDs pipelined on one connection (redis-py, its hiredis
    parser when installed), the batch acknowledged when its last reply is read.
Durability pairs: RecServe `always` with Redis `always` (fsync before the answer), RecServe
`interval-ms=1000` with Redis `everysec` (answer once written to the OS, fsync once a second:
survives a process kill, not a power cut within a second).

Each client is its own process (Python's GIL would make threads the bottleneck), sending one
batch at a time and waiting for its acknowledgement. Every client cycles through 64 batches made
before the clock starts, already encoded (protobuf bytes for gRPC, the packed RESP commands for
Redis), so the figures measure the servers and not the encoding in Python. Events: users
u1..u<--users> and items i1..i100000 drawn uniformly, type click, value 1, timestamp = now.
Each cell runs --warmup s unmeasured, then --duration s; events/s counts acknowledged events,
p50 / p99 are per call (one batch); the table gives the median of --rounds runs of each cell (the
three systems take turns, in reversed order every other round). CPU columns: the server process's
and the clients' CPU time over the measured seconds, in cores (the machine's cores are shared by
servers and clients). A grpcio call costs the client several times the CPU of a pipelined Redis
round trip with hiredis, so at batch 1 the client CPU column says whether the clients, not the
server, set the pace. The last column, server CPU per acknowledged event in microseconds, does
not depend on the client.

    sudo apt-get install -y redis-server && pip install redis hiredis
    python3 Benchmarks/events_vs_redis.py --recserve .build/release/recserve \\
        [--client native|python] [--duration 5] [--rounds 3] [--clients 1,4,16] [--batches 1,100] [--json]

The figures are only meaningful for a release build; a binary under .../debug/ (or with
--debug-build) is marked DEBUG build in the output.
"""

import argparse
import csv
import json
import multiprocessing
import os
import pathlib
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Tests" / "python"))

# (RecServe --events-fsync, Redis appendfsync): the same promise to the client.
SETTINGS = {"always": ("always", "always"), "everysec": ("interval-ms=1000", "everysec")}
BATCHES_PER_CLIENT = 64
TICKS = os.sysconf("SC_CLK_TCK")


def make_events(seed: int, size: int, users: int) -> list:
    """BATCHES_PER_CLIENT batches of `size` events as (user, item, type, value, timestamp_ms)."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    return [[(f"u{rng.randint(1, users)}", f"i{rng.randint(1, 100_000)}", "click", 1.0, now)
             for _ in range(size)] for _ in range(BATCHES_PER_CLIENT)]


def percentile(sorted_values: list, p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_loop(call, batches: list, sizes: list, start: float, warmup: float, duration: float) -> dict:
    """Calls `call(batch)` back to back until start + warmup + duration (time.monotonic, the same clock
    in every process); counts the calls that began after the warm-up and ended within the window.
    Returns events, latencies, the client's CPU seconds, and whether it was ready too late."""
    measured_from, until = start + warmup, start + warmup + duration
    late = time.monotonic() > measured_from
    latencies, events, k = [], 0, 0
    cpu_before = None
    while True:
        began = time.monotonic()
        if began >= until:
            break
        if cpu_before is None and began >= measured_from:
            cpu_before = time.process_time()
        acked = call(batches[k % len(batches)])
        ended = time.monotonic()
        if acked != sizes[k % len(batches)]:
            raise RuntimeError(f"a batch of {sizes[k % len(batches)]} events was acknowledged as {acked}")
        if began >= measured_from and ended <= until:
            latencies.append(ended - began)
            events += acked
        k += 1
    return {"events": events, "latencies": latencies, "late": late,
            "cpu": time.process_time() - (cpu_before if cpu_before is not None else time.process_time())}


def recserve_client(job: dict) -> dict:
    """One client process: AppendEvents (one call a batch) or one AppendEventStream (one message a
    batch, sent until the window ends; its events/s comes from the stream's answer)."""
    sys.path.insert(0, job["stubs"])
    import grpc  # noqa: PLC0415
    from recserve.v1 import recserve_pb2 as pb  # noqa: PLC0415

    events = make_events(job["seed"], job["size"], job["users"])
    batches = [pb.AppendEventsRequest(events=[pb.Event(user_id=u, item_id=i, type=t, value=v, timestamp_ms=ts)
                                              for u, i, t, v, ts in batch]).SerializeToString() for batch in events]
    answer = pb.AppendEventsResponse.FromString
    with grpc.insecure_channel(job["target"]) as channel:
        append = channel.unary_unary("/recserve.v1.Recommender/AppendEvents", request_serializer=None,
                                     response_deserializer=answer)
        append(batches[0], timeout=30)  # connected before the clock starts
        if job["kind"] == "recserve":
            return timed_loop(lambda b: append(b, timeout=30).appended, batches, [job["size"]] * len(batches),
                              job["start"], job["warmup"], job["duration"])
        stream = channel.stream_unary("/recserve.v1.Recommender/AppendEventStream", request_serializer=None,
                                      response_deserializer=answer)
        began, until = job["start"] + job["warmup"], job["start"] + job["warmup"] + job["duration"]

        def messages():
            k = 0
            while time.monotonic() < until:
                yield batches[k % len(batches)]
                k += 1

        late = time.monotonic() > began
        time.sleep(max(0.0, began - time.monotonic()))
        cpu = time.process_time()
        response = stream(messages(), timeout=job["duration"] + 60)
        return {"events": response.appended, "latencies": [], "elapsed": time.monotonic() - began,
                "cpu": time.process_time() - cpu, "late": late}


def redis_client(job: dict) -> dict:
    """One client process: a batch is its XADDs (one per event, stream key user:<id>) sent at once
    on one connection, acknowledged when the last reply is read."""
    import redis  # noqa: PLC0415

    connection = redis.connection.Connection(host="127.0.0.1", port=job["port"])
    connection.connect()
    batches = [connection.pack_commands([("XADD", f"user:{u}", "*", "item", i, "type", t, "value", str(v), "ts", ts)
                                         for u, i, t, v, ts in batch])
               for batch in make_events(job["seed"], job["size"], job["users"])]

    def call(packed) -> int:
        connection.send_packed_command(packed, check_health=False)
        for _ in range(job["size"]):
            connection.read_response()  # raises on an error reply
        return job["size"]

    call(batches[0])  # connected before the clock starts
    try:
        return timed_loop(call, batches, [job["size"]] * len(batches), job["start"], job["warmup"], job["duration"])
    finally:
        connection.disconnect()


def client_main(job: dict) -> dict:
    return redis_client(job) if job["kind"] == "redis" else recserve_client(job)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def native_cell(kind: str, server: dict, clients: int, size: int, args) -> dict:
    """One window of a native load generator: `recserve load` (kind recserve-load) or
    `redis-benchmark` (kind redis-benchmark); the same figures as run_cell."""
    if kind == "recserve-load":
        command = [args.recserve, "load", "--target", server["target"], "--rpc", "append", "--batch", str(size),
                   "--concurrency", str(clients), "--threads", str(min(clients, 2)), "--users", str(args.users),
                   "--items", "100000", "--duration", str(args.duration), "--warmup", str(args.warmup),
                   "--quiet", "--json"]
        client_before = children_cpu()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(args.warmup)
        cpu = cpu_seconds(server["pid"])
        began = time.monotonic()
        out, err = process.communicate(timeout=args.warmup + args.duration + 120)
        server_cpu = (cpu_seconds(server["pid"]) - cpu) / (time.monotonic() - began)
        if process.returncode != 0:
            sys.exit(f"recserve load failed: {err[-2000:]}")
        summary = json.loads(out)
        if summary["errors"]:
            sys.exit(f"recserve load had errors: {summary['status_codes']}")
        client_cpu = (children_cpu() - client_before) / (args.warmup + args.duration)
        return {"system": kind, "clients": clients, "batch": size, "events_per_s": summary["calls_per_s"] * size,
                "calls": summary["ok"], "p50_ms": summary["latency_ms"]["p50"], "p99_ms": summary["latency_ms"]["p99"],
                "server_cpu": server_cpu, "client_cpu": client_cpu, "late_clients": 0}

    def benchmark(requests: int) -> tuple:
        """redis-benchmark for `requests` XADDs: (its CSV row, seconds, server CPU s, client CPU s)."""
        command = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(server["port"]), "-c", str(clients),
                   "-P", str(size), "-n", str(requests), "-r", str(args.users), "--csv",
                   "XADD", "user:__rand_int__", "*", "item", "i__rand_int__", "type", "click", "value", "1",
                   "ts", str(int(time.time() * 1000))]
        client_before, cpu, began = children_cpu(), cpu_seconds(server["pid"]), time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, timeout=args.duration * 10 + 120)
        seconds = time.monotonic() - began
        rows = [line for line in result.stdout.splitlines() if line.startswith('"XADD')]
        if result.returncode != 0 or not rows:
            sys.exit(f"redis-benchmark failed: {result.stdout[-1000:]} {result.stderr[-1000:]}")
        row = next(csv.reader([rows[-1]]))
        return row, seconds, cpu_seconds(server["pid"]) - cpu, children_cpu() - client_before

    probe, _, _, _ = benchmark(max(2_000, clients * size * 20))  # also the warm-up
    row, seconds, server_cpu, client_cpu = benchmark(max(clients * size * 10, int(float(probe[1]) * args.duration)))
    return {"system": kind, "clients": clients, "batch": size, "events_per_s": float(row[1]),
            "calls": int(float(row[1]) * seconds), "p50_ms": float(row[4]), "p99_ms": float(row[6]),
            "server_cpu": server_cpu / seconds, "client_cpu": client_cpu / seconds, "late_clients": 0}


def run_cell(kind: str, server: dict, clients: int, size: int, args, stubs: str) -> dict:
    """`clients` processes of `kind` (recserve, recserve-stream or redis) against `server` for one
    window; returns events/s, per-call p50/p99 (ms) and the server's and the clients' CPU (cores)."""
    context = multiprocessing.get_context("spawn")
    start = time.monotonic() + 2.0 + 0.25 * clients  # time for the processes to start and connect
    jobs = [{"kind": kind, "target": server.get("target"), "port": server.get("port"), "stubs": stubs,
             "seed": 1000 * size + k, "size": size, "users": args.users, "start": start,
             "warmup": args.warmup, "duration": args.duration} for k in range(clients)]
    with context.Pool(clients) as pool:
        pending = pool.map_async(client_main, jobs)
        time.sleep(max(0.0, start + args.warmup - time.monotonic()))
        cpu = cpu_seconds(server["pid"])
        time.sleep(max(0.0, start + args.warmup + args.duration - time.monotonic()))
        server_cpu = cpu_seconds(server["pid"]) - cpu
        parts = pending.get(timeout=args.warmup + args.duration + 120)
    latencies = sorted(x for part in parts for x in part["latencies"])
    seconds = max(part.get("elapsed", args.duration) for part in parts)
    return {"system": kind, "clients": clients, "batch": size,
            "events_per_s": sum(part["events"] for part in parts) / seconds, "calls": len(latencies),
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
            "server_cpu": server_cpu / args.duration, "client_cpu": sum(p["cpu"] for p in parts) / args.duration,
            "late_clients": sum(part["late"] for part in parts)}


def start_redis(work: pathlib.Path, appendfsync: str):
    """Our own redis-server on a free port, AOF on with `appendfsync`, RDB snapshots off."""
    import redis  # noqa: PLC0415

    folder = work / f"redis-{appendfsync}"
    folder.mkdir()
    port = free_port()
    process = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                                "--dir", str(folder), "--appendonly", "yes", "--appendfsync", appendfsync,
                                "--save", "", "--daemonize", "no", "--logfile", str(folder / "redis.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                sys.exit(f"redis-server did not start: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
    config = client.config_get("append*")
    if config.get("appendonly") != "yes" or config.get("appendfsync") != appendfsync:
        sys.exit(f"redis-server runs with {config}, not appendonly yes / appendfsync {appendfsync}")
    return process, client, {"port": port, "pid": process.pid}


def start_recserve(conftest, work: pathlib.Path, fsync: str):
    """`recserve serve` (2 request threads) on a tiny model, with a fresh events folder."""
    models = work / "models"
    if not models.exists():
        data = work / "ratings.csv"
        conftest.run_cli("gen-data", "--users", 30, "--items", 30, "--out", data, "--seed", 1)
        conftest.run_cli("train", "--data", data, "--kind", "mf", "--name", "tiny", "--models", models,
                         "--dim", 4, "--epochs", 2, "--seed", 1, "--quiet")
    events = work / f"events-{fsync.replace('=', '-')}"
    server = conftest.Server(models, "--events-dir", str(events), "--events-fsync", fsync, log=work / "recserve.log")
    return server, {"target": server.target, "pid": server.process.pid}


def check_kept(server, redis_client, stubs: str, users: int):
    """After a setting's cells, both servers kept events: RecServe some user's among the first
    thousand (every client draws from u1..u<users>), Redis some keys (redis-benchmark names them
    user:000000000001, zero-padded; the Python clients user:u1)."""
    sys.path.insert(0, stubs)
    import grpc  # noqa: PLC0415
    from recserve.v1 import recserve_pb2 as pb  # noqa: PLC0415
    from recserve.v1 import recserve_pb2_grpc as rpc  # noqa: PLC0415

    with grpc.insecure_channel(server.target) as channel:
        stub = rpc.RecommenderStub(channel)
        kept = next((user for user in range(1, min(users, 1000) + 1)
                     if stub.GetUserEvents(pb.GetUserEventsRequest(user_id=f"u{user}"), timeout=30).events), None)
    if kept is None or not redis_client.dbsize():
        sys.exit(f"a server kept no events: RecServe {'none' if kept is None else 'some'} for u1..u1000, "
                 f"Redis {redis_client.dbsize()} keys")


def median_of_rounds(results: list) -> dict:
    """One row from a cell's rounds: the median of each figure, and every round's events/s."""
    row = dict(results[0])
    for key in ["events_per_s", "p50_ms", "p99_ms", "server_cpu", "client_cpu"]:
        row[key] = sorted(r[key] for r in results)[len(results) // 2]
    row["calls"] = sum(r["calls"] for r in results)
    row["late_clients"] = sum(r["late_clients"] for r in results)
    row["rounds_events_per_s"] = [round(r["events_per_s"]) for r in results]
    return row


def run_setting(conftest, work: pathlib.Path, setting: str, args, report) -> list:
    """Both servers up at once; each (clients, batch) cell runs RecServe AppendEvents, RecServe
    AppendEventStream and Redis in turn, --rounds times, the order reversed every other round, so a
    change in the machine's load hits all three alike."""
    fsync, appendfsync = SETTINGS[setting]
    server, recserve = start_recserve(conftest, work, fsync)
    process, client, redis = start_redis(work, appendfsync)
    if args.client == "native":
        systems = [("recserve-load", recserve), ("redis-benchmark", redis)]
    else:
        systems = [("recserve", recserve), ("recserve-stream", recserve), ("redis", redis)]
    rows = []
    try:
        for clients in args.clients:
            for size in args.batches:
                results = {kind: [] for kind, _ in systems}
                for round_ in range(args.rounds):
                    for kind, target in (systems if round_ % 2 == 0 else systems[::-1]):
                        results[kind].append(
                            native_cell(kind, target, clients, size, args) if args.client == "native"
                            else run_cell(kind, target, clients, size, args, str(conftest.STUBS)))
                cell = [{"setting": setting, "durability": f"{fsync} / {appendfsync}",
                         **median_of_rounds(results[kind])} for kind, _ in systems]
                for row in cell:
                    report(format_row(row, cell))
                rows += cell
        check_kept(server, client, str(conftest.STUBS), args.users)
    finally:
        process.terminate()
        process.wait()
        if server.stop() != 0:
            print(f"warning: recserve exited with {server.process.returncode}", file=sys.stderr)
    return rows


NAMES = {"recserve": "RecServe AppendEvents", "recserve-stream": "RecServe AppendEventStream",
         "redis": "Redis XADD pipelined", "recserve-load": "RecServe AppendEvents (recserve load)",
         "redis-benchmark": "Redis XADD (redis-benchmark -P batch)"}
REDIS_SYSTEMS = {"redis", "redis-benchmark"}


def format_row(row: dict, rows: list) -> str:
    redis = next((r for r in rows if r["system"] in REDIS_SYSTEMS and r["setting"] == row["setting"]
                  and r["clients"] == row["clients"] and r["batch"] == row["batch"]), None)
    ratio = f"{row['events_per_s'] / redis['events_per_s']:.2f}" if redis and row["system"] not in REDIS_SYSTEMS else ""
    stream = row["system"] == "recserve-stream"
    p50 = "–" if stream else f"{row['p50_ms']:.2f}"
    p99 = "–" if stream else f"{row['p99_ms']:.2f}"
    late = f" ({row['late_clients']} late)" if row["late_clients"] else ""
    return (f"| {row['durability']} | {row['clients']} | {row['batch']} | {NAMES[row['system']]} | "
            f"{row['events_per_s']:,.0f} | {p50} | {p99} | {ratio} | {row['server_cpu']:.2f} | "
            f"{row['client_cpu']:.2f}{late} | {1e6 * row['server_cpu'] / row['events_per_s']:.1f} |")


HEADER = ("| durability (RecServe / Redis) | clients | batch | system | events/s | p50 ms | p99 ms | "
          "RecServe/Redis | server CPU | client CPU | server µs/event |\n|---|---|---|---|---|---|---|---|---|---|---|")


def parse_args():
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recserve", default=os.environ.get("RECSERVE_BIN", str(REPO / ".build" / "release" / "recserve")),
                        help="the recserve binary (default: $RECSERVE_BIN, else .build/release/recserve)")
    parser.add_argument("--debug-build", action="store_true", help="mark the output as measured on a debug build")
    parser.add_argument("--client", choices=["native", "python"], default="native",
                        help="native: recserve load vs redis-benchmark; python: grpcio vs redis-py processes")
    parser.add_argument("--settings", default="always,everysec", help="durability pairs: always, everysec")
    parser.add_argument("--clients", default="1,4,16", help="client processes, each one batch in flight")
    parser.add_argument("--batches", default="1,100", help="events a call (a stream message, a pipeline)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds a cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each cell")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each cell (the table gives the medians)")
    parser.add_argument("--users", type=int, default=10_000, help="distinct users the events go to")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args()
    if not pathlib.Path(args.recserve).is_file():
        parser.error(f"no recserve binary at {args.recserve}: build it (swift build -c release) or pass --recserve")
    if shutil.which("redis-server") is None:
        parser.error("redis-server is not installed: `sudo apt-get install -y redis-server` (Debian; without "
                     "sudo as root). The benchmark starts its own instance; the system service is not used.")
    if shutil.which("redis-benchmark") is None:
        parser.error("redis-benchmark is missing (Debian's redis-tools, which redis-server pulls in)")
    try:
        import redis  # noqa: F401, PLC0415
    except ImportError:
        parser.error("the Python client is missing: `pip install redis hiredis` (it also starts and checks the server)")
    args.settings = args.settings.split(",")
    if not set(args.settings) <= set(SETTINGS):
        parser.error(f"--settings takes {', '.join(SETTINGS)}")
    args.clients = [int(c) for c in args.clients.split(",")]
    args.batches = [int(b) for b in args.batches.split(",")]
    return args


def main():
    args = parse_args()
    os.environ["RECSERVE_BIN"] = args.recserve
    import conftest  # noqa: PLC0415  (generates the gRPC stubs from Protos/)
    from redis.utils import HIREDIS_AVAILABLE  # noqa: PLC0415

    debug = args.debug_build or "/debug/" in args.recserve
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    build = "DEBUG build: not a figure to quote" if debug else "release build"
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if args.json else (lambda text: print(text, flush=True))
    say(f"clients: {args.client}; {args.recserve} ({build}); Redis {version[2].removeprefix('v=') if len(version) > 2 else '?'}, redis-py parser "
        f"{'hiredis' if HIREDIS_AVAILABLE else 'pure Python'}; {os.cpu_count()} cores; {args.duration:g} s a cell "
        f"after {args.warmup:g} s of warm-up, median of {args.rounds} rounds; {args.users:,} users; load average {os.getloadavg()[0]:.2f} at the start")
    rows = []
    say(HEADER)
    with tempfile.TemporaryDirectory(prefix="events-vs-redis-") as work:
        for setting in args.settings:
            rows += run_setting(conftest, pathlib.Path(work), setting, args, say)
    if args.json:
        print(json.dumps({"recserve": args.recserve, "debug_build": debug, "rows": rows}, indent=2))
    else:
        print(f"\n{build}\n{HEADER}")
        for row in rows:
            print(format_row(row, rows))


if __name__ == "__main__":
    main()
