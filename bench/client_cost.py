"""What one proxied request costs the forwarder's HTTP client: requests vs urllib3 vs ours.

    .venv/bin/python bench/client_cost.py [--requests 2000] [--rounds 3]   # ~20 s

The decision behind the forwarder (docs/deploy.md, "Why the forwarder is
built on http.client"), measured: one process sends keep-alive GETs, one
at a time, to the same asyncio upstream (bench/upstream.py) with each client
in turn, in alternating rounds, and reports the CPU time this process spent
per request (user + system; the upstream runs in another process) and the
requests per second of one thread. Every client reads the whole body and
keeps its connection; requests and urllib3 are used as a streaming forwarder
would use them (no redirects, no retries, body streamed).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
import urllib3

from ory_wsgi.upstream.pool import UpstreamPool
from ory_wsgi.upstream.transport import Transport, parse_upstream

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import EXPECTED_BODY, HOST, PATH, fetch, free_port  # noqa: E402

HEADERS = {"Host": "app.example.com", "X-Forwarded-For": "127.0.0.1", "Accept": "*/*"}
Client = Callable[[], bytes]


def ours(upstream: str) -> tuple[Client, Callable[[], None]]:
    pool = UpstreamPool(Transport(parse_upstream(upstream)))

    def get() -> bytes:
        response = pool.request("GET", PATH, HEADERS)
        body = response.read()
        response.release()
        return body

    return get, pool.close


def with_urllib3(url: str) -> tuple[Client, Callable[[], None]]:
    pool = urllib3.HTTPConnectionPool(HOST, int(url.rsplit(":", 1)[1]), maxsize=1)

    def get() -> bytes:
        response = pool.urlopen(
            "GET", PATH, headers=HEADERS, retries=False, redirect=False, preload_content=False
        )
        body = b"".join(response.stream(65536))
        response.release_conn()
        return body

    return get, pool.close


def with_requests(url: str, trust_env: bool = True) -> tuple[Client, Callable[[], None]]:
    session = requests.Session()
    # trust_env=False: no proxy variables, netrc or CA-bundle variables looked up per request.
    session.trust_env = trust_env

    def get() -> bytes:
        response = session.request(
            "GET", url + PATH, headers=HEADERS, allow_redirects=False, stream=True
        )
        body = b"".join(response.iter_content(65536))
        response.close()
        return body

    return get, session.close


def wait_for_body(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if fetch(url + PATH)[1] == EXPECTED_BODY:
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the upstream did not answer on {url} within {timeout:g}s")


def measure(get: Client, count: int) -> tuple[float, float]:
    """(CPU microseconds per request, requests per second) over `count` requests."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        if get() != EXPECTED_BODY:
            raise RuntimeError("the upstream's body did not come back")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / count * 1e6, count / wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round and client")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ory-wsgi-clients-"))
    socket_path = workdir / "upstream.sock"
    port = free_port()
    url = f"http://{HOST}:{port}"
    upstream = subprocess.Popen(
        [sys.executable, str(BENCH / "upstream.py"), str(port), str(socket_path)],
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for_body(url)
        clients = {
            "ory_wsgi UpstreamPool, TCP": ours(url),
            "ory_wsgi UpstreamPool, unix socket": ours(f"unix:{socket_path}"),
            f"urllib3 {urllib3.__version__} HTTPConnectionPool": with_urllib3(url),
            f"requests {requests.__version__} Session": with_requests(url),
            "requests Session, trust_env=False": with_requests(url, trust_env=False),
        }
        for get, _ in clients.values():
            measure(get, max(1, args.requests // 10))  # warm-up: connections, caches
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        for round_index in range(args.rounds):
            names = list(clients) if round_index % 2 == 0 else list(clients)[::-1]
            for name in names:
                results[name].append(measure(clients[name][0], args.requests))
        base = statistics.median(cpu for cpu, _ in results["ory_wsgi UpstreamPool, TCP"])
        print(
            f"{args.requests} keep-alive GET {PATH} x {args.rounds} rounds per client, "
            f"one thread, same upstream process (bench/upstream.py)"
        )
        print(f"{'client':<40} {'CPU us/req':>10} {'req/s':>7} {'CPU vs ours':>11}")
        for name, rows in results.items():
            cpu = statistics.median(row[0] for row in rows)
            rate = statistics.median(row[1] for row in rows)
            print(f"{name:<40} {cpu:>10.1f} {rate:>7.0f} {cpu / base:>10.2f}x")
        for _, close in clients.values():
            close()
    finally:
        upstream.terminate()
        upstream.wait(5)
        socket_path.unlink(missing_ok=True)
        workdir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
