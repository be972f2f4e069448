#!/usr/bin/env python3
"""Crash test of the event log (issue 17, done-when 1): SIGKILL `recserve serve` at random moments
while clients append events, restart it on the same --events-dir, and check what it kept.

    python3 Scripts/crash-events.py --recserve .build/release/recserve --kills 50 \\
        [--fsync always|interval-ms=N] [--seed S] [--threads 4] [--json]

Each round starts the server (a tiny MF model, --events-dir shared by every round,
--history-length large enough for every user's events), runs --threads client threads that append
batches of 1..500 events with AppendEvents and, in about one call of five, streams of 2..8 such
batches with AppendEventStream, then SIGKILLs the server after a random delay. Every event has its
own item id (x<n>, n counting up over the whole run), so each one is traceable to its batch.

After each restart GetUserEvents reads every user the round touched (and a sample of older ones;
after the last kill, every user) and checks:
  (a) every acknowledged event (its call returned OK) is present, exactly once, in its user's
      history, and the events with known sequence numbers (acknowledged AppendEvents calls:
      first_sequence + index) come in increasing order; one batch's events are never interleaved
      with another's, a user's events of an earlier round come before a later round's;
  (b) every batch that was in flight at the kill (a message of a stream counts as one batch) is
      fully present or fully absent, a stream's recorded messages are a prefix of it, and that
      outcome stays the same after later restarts;
  (c) nothing unknown appears (an event no client sent, or with another user, type or value).
Exits 1 on any violation (the work folder is then kept for inspection).
"""

import argparse
import bisect
import json
import os
import pathlib
import random
import shutil
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Tests" / "python"))

TYPES = ["click", "view", "add_to_cart", "purchase", "like", "rating", "play"]
VALUES = [1.0, 2.0, 3.0, 4.0, 5.0, 0.5, 1.5]  # exact in float32; 0 would mean 1 for most types
# Codes a call may end with when the server is killed under it (or the channel sees the socket close).
KILL_CODES = {"UNAVAILABLE", "CANCELLED", "UNKNOWN", "INTERNAL"}

PENDING, ACKED, IN_FLIGHT, APPLIED, ABSENT, HALF = "pending", "acked", "in-flight", "applied", "absent", "half"


def event_fields(n: int) -> tuple:
    """The type and value of event n (item x<n>): a function of n, so nothing else is stored."""
    return TYPES[n % len(TYPES)], VALUES[(n // len(TYPES)) % len(VALUES)]


class Batch:
    """One AppendEvents call, or one message of an AppendEventStream: events start..start+size-1."""

    __slots__ = ("start", "users", "round", "stream", "index", "state", "first", "late")

    def __init__(self, start: int, users: list, round_: int, stream=None, index: int = 0, late: bool = False):
        self.start, self.users, self.round = start, users, round_
        self.stream, self.index = stream, index
        self.state, self.first = PENDING, None
        # Made after the kill was decided (its call fails on the dead server): not counted as in flight.
        self.late = late

    @property
    def size(self) -> int:
        return len(self.users)


class Ledger:
    """Every batch the clients made, the users they went to, and what became of each call."""

    def __init__(self, seed: int, pool: int, cap: int):
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.cap, self.next_event, self.next_user = cap, 0, 0
        self.pool = [self._new_user() for _ in range(pool)]
        self.batches: list[Batch] = []
        self.user_events: dict[str, list[int]] = {}
        self.touched: set[str] = set()
        self.killed = False
        self.violations: list[str] = []
        self.acked_ranges: list[tuple] = []

    def _new_user(self) -> str:
        self.next_user += 1
        return f"cu{self.next_user}"

    def new_batch(self, size: int, round_: int, stream=None, index: int = 0) -> Batch:
        """Numbers `size` new events, each for a random user of the pool; a user that reaches the
        cap (the server's --history-length) is replaced by a new one, so every history fits."""
        with self.lock:
            users = []
            for _ in range(size):
                slot = self.rng.randrange(len(self.pool))
                user = self.pool[slot]
                events = self.user_events.setdefault(user, [])
                events.append(self.next_event + len(users))
                users.append(user)
                self.touched.add(user)
                if len(events) >= self.cap:
                    self.pool[slot] = self._new_user()
            batch = Batch(self.next_event, users, round_, stream, index, self.killed)
            self.next_event += size
            self.batches.append(batch)
            return batch

    def batch_of(self, n: int) -> Batch | None:
        """The batch event n belongs to (batches are made in order of their first event)."""
        at = bisect.bisect_right(self.batches, n, key=lambda b: b.start) - 1
        if at < 0 or n >= self.batches[at].start + self.batches[at].size:
            return None
        return self.batches[at]

    def violation(self, text: str):
        with self.lock:
            self.violations.append(text)

    def acknowledge(self, batches: list, response, unary: bool):
        """A call returned OK: its batches are acknowledged; checks the counts it answered."""
        total = sum(b.size for b in batches)
        if response.appended != total:
            self.violation(f"call of {total} events (x{batches[0].start}..) answered appended={response.appended}")
        if unary and response.last_sequence - response.first_sequence + 1 != total:
            self.violation(f"call of {total} events (x{batches[0].start}..) answered sequences "
                           f"{response.first_sequence}..{response.last_sequence}")
        with self.lock:
            for batch in batches:
                batch.state = ACKED
            if unary:
                batches[0].first = response.first_sequence
                self.acked_ranges.append((response.first_sequence, response.last_sequence, batches[0].start))

    def fail(self, batches: list, error):
        """A call failed: after the kill (with a code a dead server gives) its batches were in flight;
        any other failure is a violation, and its batches must still be all or nothing."""
        code = error.code().name if hasattr(error, "code") else type(error).__name__
        if not self.killed or code not in KILL_CODES:
            details = error.details() if hasattr(error, "details") else str(error)
            self.violation(f"call of {sum(b.size for b in batches)} events (x{batches[0].start}..) failed "
                           f"{'after' if self.killed else 'before'} the kill: {code} {details}")
        with self.lock:
            for batch in batches:
                batch.state = IN_FLIGHT


def request_of(pb, batch: Batch):
    events = []
    for k, user in enumerate(batch.users):
        kind, value = event_fields(batch.start + k)
        events.append(pb.Event(user_id=user, item_id=f"x{batch.start + k}", type=kind, value=value))
    return pb.AppendEventsRequest(events=events)


def client(target: str, ledger: Ledger, round_: int, stop: threading.Event, seed: int, stream_share: float):
    """Appends batches until `stop`: AppendEvents, or with probability `stream_share` one
    AppendEventStream of 2..8 messages."""
    import grpc  # noqa: PLC0415
    from recserve.v1 import recserve_pb2 as pb  # noqa: PLC0415
    from recserve.v1 import recserve_pb2_grpc as rpc  # noqa: PLC0415

    rng = random.Random(seed)
    with grpc.insecure_channel(target) as channel:
        stub = rpc.RecommenderStub(channel)
        while not stop.is_set():
            if rng.random() < stream_share:
                stream = object()
                batches = [ledger.new_batch(rng.randint(1, 500), round_, stream, m) for m in range(rng.randint(2, 8))]
                requests = [request_of(pb, b) for b in batches]
                call, unary = (lambda: stub.AppendEventStream(iter(requests), timeout=60)), False
            else:
                batches = [ledger.new_batch(rng.randint(1, 500), round_)]
                request = request_of(pb, batches[0])
                call, unary = (lambda: stub.AppendEvents(request, timeout=60)), True
            try:
                response = call()
            except grpc.RpcError as error:
                ledger.fail(batches, error)
            else:
                ledger.acknowledge(batches, response, unary)


def read_histories(target: str, users) -> dict:
    """GetUserEvents (all the server keeps) of each user: item id, user, type, value, timestamp."""
    import grpc  # noqa: PLC0415
    from recserve.v1 import recserve_pb2 as pb  # noqa: PLC0415
    from recserve.v1 import recserve_pb2_grpc as rpc  # noqa: PLC0415

    histories = {}
    with grpc.insecure_channel(target) as channel:
        stub = rpc.RecommenderStub(channel)
        for user in users:
            response = stub.GetUserEvents(pb.GetUserEventsRequest(user_id=user), timeout=30)
            histories[user] = [(e.item_id, e.user_id, e.type, e.value, e.timestamp_ms) for e in response.events]
    return histories


def check_event(ledger: Ledger, user: str, event: tuple, seen: set, started_ms: int) -> int | None:
    """Event n of `user`'s history when it is one the clients sent to that user, unchanged and not
    seen before; else records the violation and returns None."""
    item, owner, kind, value, timestamp = event
    n = int(item[1:]) if item.startswith("x") and item[1:].isdigit() else None
    batch = ledger.batch_of(n) if n is not None else None
    if batch is None or batch.users[n - batch.start] != user:
        ledger.violation(f"{user}: unknown event {event}")
        return None
    if n in seen:
        ledger.violation(f"{user}: event {item} appears twice")
        return None
    seen.add(n)
    if owner not in ("", user) or (kind, value) != event_fields(n):
        ledger.violation(f"{user}: event {item} came back as {event}, sent as {event_fields(n)}")
    if not started_ms - 60_000 <= timestamp <= time.time() * 1000 + 60_000:
        ledger.violation(f"{user}: event {item} has timestamp {timestamp}, not when it was sent")
    return n


def check_order(ledger: Ledger, user: str, order: list):
    """A user's history comes in the order of the log: known sequence numbers increase, rounds do not
    go back, a batch's events come in its order and are not interleaved with another batch's."""
    last_sequence, last_round, last_batch, finished = -1, -1, None, set()
    for n in order:
        batch = ledger.batch_of(n)
        if batch.first is not None:
            sequence = batch.first + n - batch.start
            if sequence <= last_sequence:
                ledger.violation(f"{user}: x{n} (sequence {sequence}) after sequence {last_sequence}")
            last_sequence = sequence
        if batch.round < last_round:
            ledger.violation(f"{user}: x{n} of round {batch.round} after an event of round {last_round}")
        last_round = max(last_round, batch.round)
        if batch is not last_batch:
            if id(batch) in finished:
                ledger.violation(f"{user}: the batch of x{batch.start}.. is interleaved with another")
            if last_batch is not None:
                finished.add(id(last_batch))
            last_batch, previous = batch, -1
        if n <= previous:
            ledger.violation(f"{user}: x{n} after x{previous} of the same batch")
        previous = n


def check_users(ledger: Ledger, histories: dict, started_ms: int) -> dict:
    """Checks (a)-(c) on the histories read; returns how many events of each still unresolved
    (in-flight) batch were found, keyed by the batch."""
    found: dict[Batch, list] = {}
    for user, history in histories.items():
        seen: set[int] = set()
        order = [n for n in (check_event(ledger, user, e, seen, started_ms) for e in history) if n is not None]
        check_order(ledger, user, order)
        for n in ledger.user_events.get(user, []):
            batch = ledger.batch_of(n)
            present = n in seen
            if batch.state in (ACKED, APPLIED) and not present:
                ledger.violation(f"{user}: {batch.state} event x{n} is missing")
            elif batch.state == ABSENT and present:
                ledger.violation(f"{user}: event x{n} of a batch found absent after an earlier restart is back")
            elif batch.state == IN_FLIGHT:
                found.setdefault(batch, [0, 0])[0 if present else 1] += 1
    return found


def resolve(ledger: Ledger, found: dict) -> tuple:
    """Turns each in-flight batch into applied or absent (half-applied is a violation), then checks
    that each in-flight stream recorded a prefix of its messages."""
    for batch, (present, missing) in found.items():
        if present + missing != batch.size:
            ledger.violation(f"batch x{batch.start}.. was not read whole ({present + missing} of {batch.size})")
        if missing == 0:
            batch.state = APPLIED
        elif present == 0:
            batch.state = ABSENT
        else:
            batch.state = HALF
            ledger.violation(f"batch x{batch.start}.. (in flight at the kill) is half applied: "
                             f"{present} of {batch.size} events present")
    streams: dict[int, list] = {}
    for batch in found:
        if batch.stream is not None:
            streams.setdefault(id(batch.stream), []).append(batch)
    for messages in streams.values():
        states = [b.state for b in sorted(messages, key=lambda b: b.index)]
        if any(a != APPLIED and b == APPLIED for a, b in zip(states, states[1:])):
            ledger.violation(f"stream of x{messages[0].start}..: recorded messages are not a prefix: {states}")


def overlapping_sequences(ledger: Ledger):
    """Two acknowledged calls were given overlapping sequence numbers (one reused after a restart)."""
    ranges = sorted(ledger.acked_ranges)
    for (_, last, start), (first, _, other) in zip(ranges, ranges[1:]):
        if first <= last:
            ledger.violation(f"calls x{start}.. and x{other}.. were both acknowledged with sequence {first}")


def start_server(conftest, work: pathlib.Path, args):
    """`recserve serve` on the tiny model and the run's events folder; its log goes to work/server.log."""
    return conftest.Server(work / "models", "--events-dir", str(work / "events"), "--events-fsync", args.fsync,
                           "--history-length", str(args.history_length), *args.server_args.split(),
                           log=work / "server.log")


def load_and_kill(server, ledger: Ledger, round_: int, args, rng: random.Random) -> dict:
    """Runs the client threads, SIGKILLs the server after a random delay, waits for the clients."""
    stop = threading.Event()
    threads = [threading.Thread(target=client, args=(server.target, ledger, round_, stop, rng.getrandbits(32),
                                                     args.stream_share), daemon=True) for _ in range(args.threads)]
    ledger.killed = False
    for thread in threads:
        thread.start()
    delay = rng.uniform(args.min_delay, args.max_delay)
    time.sleep(delay)
    stop.set()
    with ledger.lock:
        ledger.killed = True
    server.process.kill()
    server.process.wait()
    for thread in threads:
        thread.join(timeout=90)
        if thread.is_alive():
            ledger.violation(f"round {round_}: a client call did not end within 90 s of the kill")
    return {"delay_s": round(delay, 3)}


def verify(server, ledger: Ledger, users, started_ms: int) -> dict:
    """Reads `users`' histories from the restarted server and checks them; resolves the batches
    that were in flight. Returns the round's counts."""
    before = len(ledger.violations)
    histories = read_histories(server.target, sorted(users))
    resolve(ledger, check_users(ledger, histories, started_ms))
    return {"users_read": len(histories), "events_read": sum(map(len, histories.values())),
            "violations": len(ledger.violations) - before}


def counts_of(batches: list) -> dict:
    """Batches and events sent, acknowledged, and in flight at the kill by what became of them
    (`late`: made after the kill was decided, so their calls met a dead server)."""
    acked = [b for b in batches if b.state == ACKED]
    in_flight = [b.state for b in batches if b.state != ACKED and not b.late]
    return {"batches": len(batches), "events": sum(b.size for b in batches),
            "acked_batches": len(acked), "acked_events": sum(b.size for b in acked),
            "in_flight": len(in_flight), "in_flight_applied": in_flight.count(APPLIED),
            "in_flight_absent": in_flight.count(ABSENT), "half_applied": in_flight.count(HALF),
            "late": sum(b.late for b in batches)}


def old_users(ledger: Ledger, rng: random.Random, touched: set, count: int) -> set:
    """A sample of users from earlier rounds, read again to see that their history survived."""
    others = sorted(set(ledger.user_events) - touched)
    return set(rng.sample(others, min(count, len(others))))


def prepare(conftest, work: pathlib.Path):
    """A tiny MF model for the server to serve (an empty model folder would train the demo models)."""
    data = work / "ratings.csv"
    conftest.run_cli("gen-data", "--users", 30, "--items", 30, "--out", data, "--seed", 1)
    conftest.run_cli("train", "--data", data, "--kind", "mf", "--name", "tiny", "--models", work / "models",
                     "--dim", 4, "--epochs", 2, "--seed", 1, "--quiet")


def run_rounds(conftest, work: pathlib.Path, ledger: Ledger, args, report) -> tuple:
    """The kills: load, SIGKILL, restart, check. Returns the rounds' counts and the last server
    (None when one did not come back)."""
    rng = random.Random(args.seed + 1)
    rounds, server = [], start_server(conftest, work, args)
    for round_ in range(1, args.kills + 1):
        ledger.touched = set()
        kill = load_and_kill(server, ledger, round_, args, rng)
        began = time.monotonic()
        try:
            server = start_server(conftest, work, args)
        except RuntimeError as error:
            ledger.violation(f"round {round_}: the server did not come back after the kill: {error}")
            return rounds, None
        restart = round(time.monotonic() - began, 3)
        users = ledger.touched | old_users(ledger, rng, ledger.touched, args.recheck_users)
        checked = verify(server, ledger, users, args.started_ms)
        counts = {"round": round_, **kill, "restart_s": restart, **checked,
                  **counts_of([b for b in ledger.batches if b.round == round_])}
        rounds.append(counts)
        report(f"round {round_}: killed after {counts['delay_s']:.2f} s, {counts['acked_batches']} batches "
               f"acknowledged ({counts['acked_events']:,} events), {counts['in_flight']} in flight: "
               f"{counts['in_flight_applied']} applied, {counts['in_flight_absent']} not; restart "
               f"{restart:.2f} s; {counts['users_read']} users read; violations {counts['violations']}")
    return rounds, server


def stream_counts(batches: list) -> dict:
    """AppendEventStream calls: acknowledged, in flight at a kill, and of those how many had
    recorded some of their messages but not all (where the prefix check had work to do)."""
    streams: dict[int, list] = {}
    for batch in batches:
        if batch.stream is not None and not batch.late:
            streams.setdefault(id(batch.stream), []).append(batch.state)
    in_flight = [states for states in streams.values() if ACKED not in states]
    return {"streams": len(streams), "streams_in_flight": len(in_flight),
            "streams_partly_recorded": sum(APPLIED in states and ABSENT in states for states in in_flight)}


def summarize(ledger: Ledger, rounds: list, final: dict, args) -> dict:
    counts = counts_of(ledger.batches)
    restarts = sorted(r["restart_s"] for r in rounds) or [0]
    return {
        "kills": len(rounds), "fsync": args.fsync, "server_args": args.server_args, "seed": args.seed,
        "threads": args.threads, "recserve": args.recserve,
        "batches": counts["batches"], "events": counts["events"],
        "acknowledged_batches": counts["acked_batches"], "acknowledged_events": counts["acked_events"],
        "in_flight_batches": counts["in_flight"], "in_flight_applied": counts["in_flight_applied"],
        "in_flight_absent": counts["in_flight_absent"], "half_applied": counts["half_applied"],
        "after_kill_batches": counts["late"], **stream_counts(ledger.batches),
        "kills_with_in_flight": sum(r["in_flight"] > 0 for r in rounds),
        "kills_with_in_flight_applied": sum(r["in_flight_applied"] > 0 for r in rounds),
        "users": len(ledger.user_events), "final_check": final,
        "restart_s": {"median": restarts[len(restarts) // 2], "max": restarts[-1]},
        "violations": len(ledger.violations), "first_violations": ledger.violations[:20],
    }


def run(args, report=print) -> dict:
    """The whole test; returns the summary (see `summarize`)."""
    os.environ["RECSERVE_BIN"] = args.recserve
    import conftest  # noqa: PLC0415  (generates the gRPC stubs from Protos/)

    work = pathlib.Path(args.work) if args.work else pathlib.Path(tempfile.mkdtemp(prefix="crash-events-"))
    work.mkdir(parents=True, exist_ok=True)
    prepare(conftest, work)
    args.started_ms = int(time.time() * 1000)
    ledger = Ledger(args.seed, args.users, args.history_length)
    rounds, server, final = [], None, {}
    try:
        rounds, server = run_rounds(conftest, work, ledger, args, report)
        if server is not None:
            final = verify(server, ledger, set(ledger.user_events), args.started_ms)
            overlapping_sequences(ledger)
            try:
                if server.stop() != 0:
                    ledger.violation(f"the server exited with {server.process.returncode} on SIGTERM")
            except AssertionError as error:
                ledger.violation(f"graceful stop: {error}")
    finally:
        if server is not None and server.alive():
            server.process.kill()
            server.process.wait()
    summary = summarize(ledger, rounds, final, args)
    summary["work"] = str(work)
    if summary["violations"] == 0 and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def parse_args(argv=None):
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recserve", default=os.environ.get("RECSERVE_BIN", str(REPO / ".build" / "release" / "recserve")),
                        help="the recserve binary (default: $RECSERVE_BIN, else .build/release/recserve)")
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs (rounds)")
    parser.add_argument("--fsync", default="always", help="--events-fsync of the server: always or interval-ms=N")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4, help="client threads appending at once")
    parser.add_argument("--stream-share", type=float, default=0.2, help="share of calls that are AppendEventStream")
    parser.add_argument("--min-delay", type=float, default=0.2, help="least seconds of load before a kill")
    parser.add_argument("--max-delay", type=float, default=2.0, help="most seconds of load before a kill")
    parser.add_argument("--users", type=int, default=64, help="users receiving events at once")
    parser.add_argument("--history-length", type=int, default=1000,
                        help="the server's --history-length, and the most events a user is sent (so all are kept)")
    parser.add_argument("--recheck-users", type=int, default=20, help="users of earlier rounds read again each round")
    parser.add_argument("--server-args", default="", help="more arguments for `recserve serve`, e.g. "
                                                          "'--events-segment-mb 1 --events-memory-mb 1'")
    parser.add_argument("--work", help="folder for the model, events and server log (default: a temporary one, "
                                       "removed when the run passes)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args(argv)
    if not pathlib.Path(args.recserve).is_file():
        parser.error(f"no recserve binary at {args.recserve}: build it (swift build -c release) or pass --recserve")
    if args.fsync != "always" and not (args.fsync.startswith("interval-ms=") and args.fsync[12:].isdigit()):
        parser.error("--fsync takes always or interval-ms=N")
    if not 0 < args.min_delay <= args.max_delay:
        parser.error("--min-delay must be positive and at most --max-delay")
    return args


def print_summary(summary: dict):
    flags = " ".join(filter(None, [f"--events-fsync {summary['fsync']}", summary["server_args"]]))
    print(f"\n{summary['kills']} kills of {summary['recserve']} ({flags}, seed {summary['seed']}, "
          f"{summary['threads']} client threads)")
    print(f"  sent:            {summary['batches']:,} batches, {summary['events']:,} events to {summary['users']:,} users")
    print(f"  acknowledged:    {summary['acknowledged_batches']:,} batches, {summary['acknowledged_events']:,} events")
    print(f"  in flight:       {summary['in_flight_batches']:,} batches: {summary['in_flight_applied']:,} found "
          f"applied, {summary['in_flight_absent']:,} not applied, {summary['half_applied']} half applied "
          f"({summary['kills_with_in_flight']} of {summary['kills']} kills hit in-flight batches)")
    print(f"  streams:         {summary['streams']:,}, {summary['streams_in_flight']} in flight at a kill, "
          f"{summary['streams_partly_recorded']} of them with some messages recorded and the rest not")
    final = summary["final_check"]
    if final:
        print(f"  final check:     {final['users_read']:,} users, {final['events_read']:,} events read back")
    print(f"  restart:         median {summary['restart_s']['median']:.2f} s, max {summary['restart_s']['max']:.2f} s")
    print(f"  violations:      {summary['violations']}")
    for line in summary["first_violations"]:
        print(f"    {line}")
    if summary["violations"]:
        print(f"  work folder kept: {summary['work']}")


def main():
    args = parse_args()
    report = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else \
        (lambda line: print(line, flush=True))
    summary = run(args, report)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    sys.exit(1 if summary["violations"] else 0)


if __name__ == "__main__":
    main()
