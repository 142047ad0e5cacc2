"""A soak run: minutes of mixed traffic through ory_wsgi at a bounded rate, then a health check.

    .venv/bin/python bench/soak.py                 # 5 minutes, 40 requests/s
    .venv/bin/python bench/soak.py --minutes 1 --rate 60

Everything runs on loopback: the upstream (bench/upstream.py's app under
gunicorn, which drops idle keep-alive connections after 2 s), the Kratos
stand-in as Ory, and ory_wsgi under gunicorn (2 gthread workers, read
timeout 2 s). The traffic mixes anonymous and logged-in requests, sized and
chunked uploads, downloads, slow answers (some slower than the read timeout,
whose 504 the scenario causes), and clients that leave mid-download or
mid-upload. Afterwards it reports every status by scenario, the 5xx the
scenario did not cause, and the workers' open files, resident memory and
upstream connections before and after. A bench, not a test: it exits 0
unless it could not run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from run import (
    MIB,
    Kratos,
    Server,
    guarded_main,
    gunicorn_args,
    print_machine,
    rss_bytes,
    split_url,
)

READ_TIMEOUT = 2.0
# Settling time before a snapshot: longer than the upstream's 2 s keep-alive,
# so that both snapshots see the pool in the same state.
SETTLE = 4.0
TCP_STATES = {"01": "established", "08": "close_wait"}
RSS_EVERY = 30.0  # seconds between samples of the workers' memory during the run
# Allocator pools fill up over the first minutes; a leak keeps growing after that.
LATE_GROWTH_BUDGET = 8 * MIB


@dataclass
class Snapshot:
    pids: list[int]
    fds: int
    rss: int
    upstream_sockets: collections.Counter[str]

    def describe(self) -> str:
        sockets = ", ".join(
            f"{count} {state}" for state, count in sorted(self.upstream_sockets.items())
        )
        return (
            f"workers {self.pids}: {self.fds} open files, {self.rss / MIB:.1f} MiB resident, "
            f"upstream sockets: {sockets or 'none'}"
        )


def upstream_sockets(upstream_port: int) -> collections.Counter[str]:
    """Sockets on this host whose far end is the upstream's port, by TCP state."""
    states: collections.Counter[str] = collections.Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == upstream_port and fields[3] in TCP_STATES:
                    states[TCP_STATES[fields[3]]] += 1
    return states


def snapshot(proxy: Server, upstream_port: int) -> Snapshot:
    pids = sorted(proxy.workers())
    fds = sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)
    return Snapshot(pids, fds, sum(rss_bytes(pid) for pid in pids), upstream_sockets(upstream_port))


class Traffic:
    """The scenarios, each a function returning the status it got (0 for a client-side end)."""

    def __init__(self, url: str, tokens: list[str]) -> None:
        self.host, self.port, _ = split_url(url)
        self.tokens = tokens
        self.block = os.urandom(64 * 1024)
        # name: (weight, function, whether a 5xx is what the scenario asks for)
        self.scenarios: dict[str, tuple[int, Callable[[], int], bool]] = {
            "anonymous GET": (30, self.anonymous, False),
            "logged-in GET": (30, self.logged_in, False),
            "sized upload 256 KiB": (8, self.sized_upload, False),
            "chunked upload 256 KiB": (8, self.chunked_upload, False),
            "download 2 MiB": (8, self.download, False),
            "slow answer 0.5 s": (5, self.slow, False),
            "answer slower than read timeout": (2, self.too_slow, True),
            "client leaves mid-download": (4, self.leave_download, False),
            "client leaves mid-upload": (3, self.leave_upload, False),
        }

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def exchange(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> int:
        connection = self.connection()
        try:
            connection.request(method, target, body=body, headers=headers or {})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def anonymous(self) -> int:
        return self.exchange("GET", "/hello?page=1")

    def logged_in(self) -> int:
        token = random.choice(self.tokens)
        return self.exchange("GET", "/hello?page=1", {"X-Session-Token": token})

    def sized_upload(self) -> int:
        return self.exchange("POST", "/upload", body=self.block * 4)

    def chunked_upload(self) -> int:
        connection = self.connection()
        try:
            connection.request(
                "POST",
                "/upload",
                body=iter([self.block] * 4),
                headers={"Transfer-Encoding": "chunked"},
                encode_chunked=True,
            )
            response = connection.getresponse()
            answer = response.read()
            if response.status == 200 and answer != b"%d\n" % (4 * len(self.block)):
                return -1
            return response.status
        finally:
            connection.close()

    def download(self) -> int:
        connection = self.connection()
        try:
            connection.request("GET", f"/big?size={2 * MIB}")
            response = connection.getresponse()
            if len(response.read()) != 2 * MIB and response.status == 200:
                return -1
            return response.status
        finally:
            connection.close()

    def slow(self) -> int:
        return self.exchange("GET", "/slow?delay=0.5")

    def too_slow(self) -> int:
        return self.exchange("GET", f"/slow?delay={READ_TIMEOUT + 1.5}")

    def leave_download(self) -> int:
        connection = self.connection()
        connection.request("GET", f"/big?size={64 * MIB}")
        response = connection.getresponse()
        response.read(256 * 1024)
        assert connection.sock is not None
        connection.sock.shutdown(socket.SHUT_RDWR)
        connection.close()
        return 0

    def leave_upload(self) -> int:
        with socket.create_connection((self.host, self.port), 10) as sock:
            sock.sendall(
                b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: 1048576\r\n\r\n"
                + self.block
            )
        return 0


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def add(self, scenario: str, outcome: str) -> None:
        with self.lock:
            self.statuses[scenario][outcome] += 1


def drive(traffic: Traffic, seconds: float, rate: float, clients: int, tally: Tally) -> None:
    """`clients` threads share one schedule of `rate` requests a second."""
    names = list(traffic.scenarios)
    weights = [traffic.scenarios[name][0] for name in names]
    deadline = time.monotonic() + seconds
    schedule = {"next": time.monotonic()}
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                slot = schedule["next"]
                schedule["next"] = slot + 1.0 / rate
            if slot >= deadline:
                return
            time.sleep(max(0.0, slot - time.monotonic()))
            name = random.choices(names, weights)[0]
            try:
                status = traffic.scenarios[name][1]()
                outcome = "left" if status == 0 else ("bad body" if status < 0 else str(status))
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"client error {type(exc).__name__}"
            tally.add(name, outcome)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the run")
    parser.add_argument("--rate", type=float, default=40.0, help="requests a second, at most")
    parser.add_argument("--clients", type=int, default=12, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn --workers of ory_wsgi")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn --threads of ory_wsgi")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.clients < 1:
        parser.error("--minutes, --rate and --clients must be positive")
    return args


def soak(args: argparse.Namespace) -> None:
    servers: list[Server] = []
    workdir = Path(tempfile.mkdtemp(prefix="ory-wsgi-soak-"))
    try:
        upstream = Server.gunicorn(
            "upstream",
            "upstream:app",
            ["--worker-class", "gthread", "--workers", "2", "--threads", "16"],
            workdir,
        )
        servers.append(upstream)
        upstream.wait_ready(2)
        kratos = Kratos(workdir)
        servers.append(kratos)
        spec = (
            f'ory_wsgi:make_app(upstream="{upstream.url}", ory={{"sdk_url": "{kratos.url}"}}, '
            f'read_timeout="{READ_TIMEOUT}s")'
        )
        proxy = Server.gunicorn("ory_wsgi", spec, gunicorn_args(args), workdir)
        servers.append(proxy)
        proxy.wait_ready(args.workers)
        traffic = Traffic(proxy.url, [kratos.new_session() for _ in range(5)])
        print_machine(sys.stdout)
        print(
            f"ory_wsgi under gunicorn {' '.join(gunicorn_args(args))}, read timeout "
            f"{READ_TIMEOUT:g}s; {args.minutes:g} min at <= {args.rate:g} requests/s from "
            f"{args.clients} clients",
            flush=True,
        )
        warmup = Tally()
        drive(traffic, 10.0, args.rate, args.clients, warmup)
        time.sleep(SETTLE)
        before = snapshot(proxy, upstream.port)
        print(f"before: {before.describe()}", flush=True)

        tally = Tally()
        rss_series: list[int] = []
        sampling = threading.Event()

        def sample_rss() -> None:
            while not sampling.wait(RSS_EVERY):
                rss_series.append(sum(rss_bytes(pid) for pid in proxy.workers()))

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        started = time.monotonic()
        drive(traffic, args.minutes * 60.0, args.rate, args.clients, tally)
        elapsed = time.monotonic() - started
        sampling.set()
        sampler.join()
        time.sleep(SETTLE)
        after = snapshot(proxy, upstream.port)
        rss_series.append(after.rss)
        print(f"after:  {after.describe()}")
        print(
            f"workers' memory every {RSS_EVERY:g}s (MiB): "
            + " ".join(f"{value / MIB:.1f}" for value in [before.rss, *rss_series])
        )
        report(traffic, tally, elapsed, before, after, args.workers * args.threads, rss_series)
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def report(
    traffic: Traffic,
    tally: Tally,
    elapsed: float,
    before: Snapshot,
    after: Snapshot,
    pool_bound: int,
    rss_series: list[int],
) -> None:
    total = sum(sum(counter.values()) for counter in tally.statuses.values())
    print(f"\n{total} requests in {elapsed:.0f}s ({total / elapsed:.1f}/s)")
    unexpected_5xx = 0
    client_errors = 0
    for name, (_, _, caused) in traffic.scenarios.items():
        counter = tally.statuses.get(name, collections.Counter())
        outcomes = ", ".join(f"{outcome} x{count}" for outcome, count in counter.most_common())
        print(f"  {name:<34} {outcomes}")
        for outcome, count in counter.items():
            if outcome.startswith("5") and not caused:
                unexpected_5xx += count
            if outcome.startswith(("client error", "bad body")):
                client_errors += count
    restarted = before.pids != after.pids
    sockets_after = sum(after.upstream_sockets.values())
    print(
        f"\n5xx the scenario did not cause: {unexpected_5xx}; client-side errors: "
        f"{client_errors}; workers restarted: {'yes' if restarted else 'no'}"
    )
    print(
        f"open files: {before.fds} -> {after.fds} ({after.fds - before.fds:+d}); resident memory: "
        f"{before.rss / MIB:.1f} -> {after.rss / MIB:.1f} MiB "
        f"({(after.rss - before.rss) / MIB:+.1f}); upstream sockets: "
        f"{sum(before.upstream_sockets.values())} -> {sockets_after} "
        f"(at most {pool_bound} can be pooled: workers x threads)"
    )
    # Growth over the second half of the run: a leak shows there, warm-up does not.
    late = rss_series[len(rss_series) // 2 :] or [after.rss]
    late_growth = after.rss - min(late[0], after.rss) if len(rss_series) > 1 else 0
    print(
        f"memory growth over the second half of the run: {late_growth / MIB:+.1f} MiB "
        f"(budget {LATE_GROWTH_BUDGET // MIB} MiB)"
    )
    healthy = (
        late_growth <= LATE_GROWTH_BUDGET
        and unexpected_5xx == 0
        and not restarted
        and sockets_after <= pool_bound
        and after.fds - before.fds <= pool_bound
    )
    print("verdict: " + ("healthy" if healthy else "look closer"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded_main(lambda: soak(args), "soak")


if __name__ == "__main__":
    sys.exit(main())
