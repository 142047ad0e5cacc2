"""The fleet on Redis: two ory_wsgi instances x 2 workers on one redis-server and the stand-in.

    .venv/bin/python bench/fleet.py            # ~2.5 min
    .venv/bin/python bench/fleet.py --sessions 200 --minutes 0.25   # a quick look

One run, four phases, all on loopback:

1. mixed traffic over `--sessions` sessions for `--minutes` (90% logged in,
   half of it on a protected path; 10% anonymous), spread over both
   instances; meanwhile a revocation every 0.5 s: a session that every
   worker has cached is ended in the stand-in and `ory_wsgi.revoke`d, then
   replayed on both instances for 300 ms on new connections. Reported: the
   whoami calls in total against sessions x run time / TTL; how long after
   `revoke` returned a replay was still served (propagation p50/p99);
2. throughput of one logged-in session (wrk, or the Python generator) on
   one instance against werkzeug's ProxyMiddleware under the same gunicorn
   settings, alternating rounds (as bench/run.py);
3. the same mixed traffic for 30 s with redis-server killed (SIGKILL) from
   10 s to 20 s: 5xx answers (none expected), and revoked sessions served
   later than the memory layer's TTL after their revocation (none expected).

Exits non-zero only when the benchmark could not run, never because a target was missed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from run import (
    HOST,
    PATH,
    WERKZEUG,
    BenchError,
    LoadTool,
    PythonLoad,
    Server,
    Target,
    find_load_tool,
    free_port,
    guarded_main,
    print_machine,
    split_url,
    version_of,
)

import ory_wsgi
from ory_wsgi.testing.server import FakeKratosServer, serve

TTL = 10.0
MEMORY_TTL = 1.0
PROTECTED = "/members/page"
REPLAY_WINDOW = 0.3  # phase 1: revocations arrive in milliseconds
FAULT_REPLAY_WINDOW = MEMORY_TTL + 0.5  # phase 3: past the memory layer's TTL
FAULT_PHASE = 30.0
FAULT_FROM, FAULT_TO = 10.0, 20.0


class RedisProcess:
    """redis-server on a free port with its own directory; kill() and start() keep the port."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            raise BenchError("redis-server is not installed (apt-get install redis-server)")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                *("--port", str(self.port), "--bind", HOST, "--dir", str(self.workdir)),
                *("--save", "", "--appendonly", "no", "--logfile", str(self.workdir / "redis.log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                http.client.HTTPConnection(HOST, self.port, timeout=0.2).connect()
                return
            time.sleep(0.05)
        raise BenchError("redis-server did not start")

    def version(self) -> str:
        answer = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.split()
        return "redis-server " + next((word[2:] for word in answer if word.startswith("v=")), "?")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int) -> None:
        with self.lock:
            self.statuses[status] += 1

    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


@dataclass
class Revocations:
    propagation_ms: list[float] = field(default_factory=list)
    served_late: int = 0  # replays served after the memory TTL: must stay 0
    failed: int = 0  # revoke() could not reach Redis (during the outage)


def request(url_base: str, path: str, token: str | None) -> int:
    """One request on a new connection (so that any worker may take it); its status."""
    host, port, _ = split_url(url_base)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        headers = {"X-Session-Token": token} if token else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def mixed_traffic(
    instances: list[str],
    tokens: list[str],
    seconds: float,
    clients: int,
    tally: Tally,
    at: Callable[[float], None] | None = None,
) -> None:
    """`clients` threads on keep-alive connections for `seconds`; `at(elapsed)` each 0.1 s."""
    deadline = time.monotonic() + seconds
    started = time.monotonic()

    def drive(seed: int) -> None:
        chooser = random.Random(seed)
        connections = {
            url: http.client.HTTPConnection(*split_url(url)[:2], timeout=10) for url in instances
        }
        while time.monotonic() < deadline:
            url = chooser.choice(instances)
            token = chooser.choice(tokens) if chooser.random() < 0.9 else None
            path = PROTECTED if token and chooser.random() < 0.5 else PATH
            connection = connections[url]
            try:
                connection.request("GET", path, headers={"X-Session-Token": token} if token else {})
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                # A keep-alive connection the server closed as the request left shows
                # here too (RemoteDisconnected), as with any HTTP client.
                with tally.lock:
                    tally.transport_errors[type(exc).__name__] += 1
                connection.close()
                continue
            tally.add(response.status)
        for connection in connections.values():
            connection.close()

    threads = [threading.Thread(target=drive, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    while time.monotonic() < deadline:
        if at is not None:
            at(time.monotonic() - started)
        time.sleep(0.1)
    for thread in threads:
        thread.join(15)


def revoke_and_replay(
    stand_in: FakeKratosServer,
    instances: list[str],
    session: tuple[str, str],
    redis_url: str,
    result: Revocations,
    window: float,
) -> None:
    """End `session` in Ory, revoke it in the fleet, replay it for `window` seconds."""
    session_id, token = session
    for url in instances * 4:  # cached on every worker first
        request(url, PROTECTED, token)
    stand_in.kratos.revoke_session(session_id)
    try:
        ory_wsgi.revoke(session_id, session_cache={"backend": "redis", "redis_url": redis_url})
    except ory_wsgi.RevocationFailed:
        result.failed += 1
    returned = time.monotonic()
    served: list[float] = []

    def replay(url: str) -> None:
        while (sent := time.monotonic() - returned) < window:
            if request(url, PROTECTED, token) == 200:
                served.append(sent)

    threads = [threading.Thread(target=replay, args=(url,)) for url in instances * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    result.propagation_ms.append(max(served, default=0.0) * 1000)
    result.served_late += sum(1 for sent in served if sent > MEMORY_TTL)


def revocation_loop(
    stand_in: FakeKratosServer,
    instances: list[str],
    pool: list[tuple[str, str]],
    redis_url: str,
    result: Revocations,
    stop: threading.Event,
    window: float,
) -> None:
    while pool and not stop.is_set():
        revoke_and_replay(stand_in, instances, pool.pop(), redis_url, result, window)
        stop.wait(0.5)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def ory_spec(upstream: str, ory: str, redis_url: str) -> str:
    return (
        f'ory_wsgi:make_app(upstream="{upstream}", ory={{"sdk_url": "{ory}"}}, '
        f'session_cache={{"backend": "redis", "redis_url": "{redis_url}", "ttl": "{TTL:g}s", '
        f'"memory_ttl": "{MEMORY_TTL:g}s"}}, protect=[{{"prefix": "/members"}}])'
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=1.0, help="length of phase 1")
    parser.add_argument("--clients", type=int, default=12, help="threads of mixed traffic")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per throughput round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--python-load", action="store_true")
    parser.add_argument("--no-install", action="store_true")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, out: IO[str]) -> None:
    tool: LoadTool = PythonLoad() if args.python_load else find_load_tool(2, not args.no_install)
    workdir = Path(tempfile.mkdtemp(prefix="ory-wsgi-fleet-"))
    servers: list[Server] = []
    redis_server: RedisProcess | None = None
    stand_in = serve(HOST, 0)
    try:
        redis_server = RedisProcess(workdir)
        upstream = Server(
            "upstream",
            [sys.executable, str(Path(__file__).parent / "upstream.py"), "{port}"],
            workdir,
        )
        servers.append(upstream)
        upstream.wait_ready(0)
        gunicorn_args = ["--worker-class", "gthread", "--workers", "2", "--threads", "8"]
        spec = ory_spec(upstream.url, stand_in.url, redis_server.url)
        instances = [
            Server.gunicorn(f"ory_wsgi {name}", spec, gunicorn_args, workdir) for name in "AB"
        ]
        werkzeug = Server.gunicorn(
            WERKZEUG, "werkzeug_proxy:app", gunicorn_args, workdir, {"BENCH_UPSTREAM": upstream.url}
        )
        servers += [*instances, werkzeug]
        for server in [*instances, werkzeug]:
            server.wait_ready(2)
        kratos = stand_in.kratos
        sessions = []
        for n in range(args.sessions + 200):
            identity = kratos.add_identity(f"fleet{n}@example.com", "not a secret")
            issued = kratos.create_session(identity["id"])
            sessions.append((str(issued.session["id"]), issued.token))
        traffic_tokens = [token for _, token in sessions[: args.sessions]]
        revocable = sessions[args.sessions :]
        urls = [server.url for server in instances]

        print_machine(out)
        print(
            f"2 ory_wsgi instances x gunicorn {' '.join(gunicorn_args)} --reuse-port, one "
            f"{redis_server.version()} (redis-py {version_of('redis')}), the Kratos stand-in "
            "in-process; "
            f"ttl {TTL:g}s, memory_ttl {MEMORY_TTL:g}s; {args.clients} client threads",
            file=out,
            flush=True,
        )

        # Phase 1: mixed traffic, whoami count, revocations.
        seconds = args.minutes * 60
        tally, revocations, stop = Tally(), Revocations(), threading.Event()
        kratos.reset_counters()
        revoker = threading.Thread(
            target=revocation_loop,
            args=(
                stand_in,
                urls,
                revocable[:100],
                redis_server.url,
                revocations,
                stop,
                REPLAY_WINDOW,
            ),
        )
        revoker.start()
        mixed_traffic(urls, traffic_tokens, seconds, args.clients, tally)
        stop.set()
        revoker.join(30)
        whoami = kratos.whoami_calls
        traffic_whoami = sum(kratos.whoami_calls_for(token) for token in traffic_tokens)
        bound = args.sessions * seconds / TTL
        requests = sum(tally.statuses.values())
        print(f"\nphase 1: {seconds:.0f}s of mixed traffic over {args.sessions} sessions", file=out)
        print(
            f"  requests: {requests} ({requests / seconds:.0f}/s), statuses "
            f"{dict(tally.statuses)}, transport errors {dict(tally.transport_errors)}",
            file=out,
        )
        print(
            f"  whoami calls for the traffic's sessions: {traffic_whoami}, bound sessions x run "
            f"time / TTL = {bound:.0f}; all whoami calls (revoked sessions too): {whoami}",
            file=out,
        )
        print(
            f"  revocations: {len(revocations.propagation_ms)}; served after revoke() returned: "
            f"p50 {percentile(revocations.propagation_ms, 0.5):.1f} ms, p99 "
            f"{percentile(revocations.propagation_ms, 0.99):.1f} ms, max "
            f"{max(revocations.propagation_ms, default=0):.1f} ms (0 = no replay served)",
            file=out,
            flush=True,
        )

        # Phase 2: logged-in throughput against werkzeug.
        token = traffic_tokens[0]
        logged_in = Target(
            "ory_wsgi + Redis, logged in", instances[0], [upstream], {"X-Session-Token": token}
        )
        baseline = Target(WERKZEUG, werkzeug, [upstream])
        for target in (logged_in, baseline):
            tool.run(target.server.url + PATH, 2.0, args.connections, target.headers)
        ratios = []
        for index in range(args.rounds):
            order = (logged_in, baseline) if index % 2 == 0 else (baseline, logged_in)
            for target in order:
                target.measure(tool, args.duration, args.connections)
            ratios.append(
                logged_in.results[-1].requests_per_s / baseline.results[-1].requests_per_s
            )
        print(
            f"\nphase 2: throughput, {tool.label}, {args.connections} connections, "
            f"{args.rounds} x {args.duration:g}s",
            file=out,
        )
        for target in (logged_in, baseline):
            median = target.median()
            print(
                f"  {target.name:<30} {median.requests_per_s:>7.0f} req/s  p50 "
                f"{median.p50_ms:.2f} ms  p99 {median.p99_ms:.2f} ms  CPU {median.cpu_us:.0f} "
                f"us/req  errors {median.errors}",
                file=out,
            )
        print(
            f"  logged in with Redis vs werkzeug: {statistics.median(ratios):.2f}x "
            "(target >= 1.25x)",
            file=out,
            flush=True,
        )

        # Phase 3: Redis killed for 10 s in the middle of 30 s of traffic.
        tally, revocations, stop = Tally(), Revocations(), threading.Event()
        kratos.reset_counters()
        killed = {"done": False, "back": False}

        def fault(elapsed: float) -> None:
            assert redis_server is not None
            if elapsed >= FAULT_FROM and not killed["done"]:
                killed["done"] = True
                redis_server.kill()
            if elapsed >= FAULT_TO and not killed["back"]:
                killed["back"] = True
                redis_server.start()

        revoker = threading.Thread(
            target=revocation_loop,
            args=(
                stand_in,
                urls,
                revocable[100:],
                redis_server.url,
                revocations,
                stop,
                FAULT_REPLAY_WINDOW,
            ),
        )
        revoker.start()
        mixed_traffic(urls, traffic_tokens, FAULT_PHASE, args.clients, tally, fault)
        stop.set()
        revoker.join(30)
        print(
            f"\nphase 3: {FAULT_PHASE:g}s of mixed traffic, redis-server killed from "
            f"{FAULT_FROM:g}s to {FAULT_TO:g}s",
            file=out,
        )
        print(
            f"  requests: {sum(tally.statuses.values())}, statuses {dict(tally.statuses)}, "
            f"5xx {tally.server_errors()}, transport errors {dict(tally.transport_errors)}",
            file=out,
        )
        print(f"  whoami calls: {kratos.whoami_calls}", file=out)
        print(
            f"  revocations: {len(revocations.propagation_ms)} ({revocations.failed} refused while "
            f"Redis was down); replays served more than memory_ttl after revoke: "
            f"{revocations.served_late}; max served after revoke "
            f"{max(revocations.propagation_ms, default=0):.0f} ms",
            file=out,
            flush=True,
        )
    finally:
        for server in reversed(servers):
            server.stop()
        if redis_server is not None:
            redis_server.kill()
        stand_in.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded_main(lambda: run(args, sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
