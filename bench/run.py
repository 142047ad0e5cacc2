"""ory_wsgi against werkzeug's ProxyMiddleware, nginx and a bare WSGI app: one run, same gunicorn.

    .venv/bin/python bench/run.py              # throughput, latency, Unix vs TCP upstream,
                                               # 100 rules vs one [[protect]], ~4 min
    .venv/bin/python bench/run.py --rules-only # only 100 rules vs one [[protect]], ~1 min
    .venv/bin/python bench/run.py --memory     # 1 GiB download and 1 GiB chunked upload

Starts one upstream, the Kratos stand-in (as Ory) and every server under
identical settings on free loopback ports, drives each with wrk (or a small
Python load generator when wrk cannot be had) in alternating rounds, and
prints requests/s, p50/p99, the CPU each server spent per request and the
ratios against werkzeug. Exits non-zero only when the benchmark could not
run, never because a target was missed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import IO, Protocol

from hundred_rules import RULE_COUNT, hundred_rules, one_protect

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
PATH = "/hello?page=1"
EXPECTED_BODY = b"Hello from the upstream application.\n"
START_TIMEOUT = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
GIB = 1024 * MIB
MEMORY_BUDGET = 32 * MIB
# Targets of the issue, as ratios to werkzeug's requests/s in the same run.
TARGETS = {"ory_wsgi, anonymous": 1.5, "ory_wsgi, logged in, cached": 1.25}
WERKZEUG = "werkzeug ProxyMiddleware"
UNIX_TARGET = "ory_wsgi, anonymous, unix upstream"
CONCURRENT_FIRST_REQUESTS = 30
# The rule-set comparison: 100 access rules against one [[protect]] (bench/hundred_rules.py).
ONE_RULE = "ory_wsgi, 1 [[protect]], {}"
HUNDRED_RULES = f"ory_wsgi, {RULE_COUNT} rules, {{}}"
RULES_TARGET = 0.9  # 100 rules within 10% of the 1-rule case


class BenchError(Exception):
    """The benchmark could not run (a server did not start, the load tool failed)."""


@dataclass
class Load:
    """What the load tool saw."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class Result:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float  # CPU time of the measured server per request
    upstream_cpu_us: float  # CPU time of the upstream (and Ory) per request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def split_url(url: str) -> tuple[str, int, str]:
    netloc, _, target = url.removeprefix("http://").partition("/")
    host, _, port = netloc.partition(":")
    return host, int(port), "/" + target


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    host, port, target = split_url(url)
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def process_group(leader: int) -> list[tuple[int, list[str]]]:
    """(pid, /proc/PID/stat fields after the command name) of each process in a group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == leader:
                members.append((int(stat.parent.name), fields))
    return members


def rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Server:
    """A server process in its own process group, so that stopping it stops its workers."""

    def __init__(
        self,
        name: str,
        command: list[str],
        workdir: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = workdir / f"{''.join(ch for ch in name if ch.isalnum())}-{self.port}.log"
        # The checkout first, so that the code measured is the code in this tree.
        python_path = os.pathsep.join(
            [str(ROOT), str(BENCH), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [part.replace("{port}", str(self.port)) for part in command],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                env={**os.environ, "PYTHONPATH": python_path, **(env or {})},
                start_new_session=True,
            )

    @classmethod
    def gunicorn(
        cls,
        name: str,
        app_spec: str,
        args: list[str],
        workdir: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> Server:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{HOST}:{{port}}",
            "--no-control-socket",
            "--reuse-port",
            *args,
            app_spec,
        ]
        return cls(name, command, workdir, env, port)

    def wait_ready(self, workers: int, path: str = PATH) -> None:
        """Wait until `workers` gunicorn workers have booted and the upstream's body comes back."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            booted = self.log_path.read_text(errors="replace").count("Booting worker")
            if booted >= workers:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    status, body = fetch(self.url + path)
                    if status == 200 and body == EXPECTED_BODY:
                        return
                    raise BenchError(
                        f"{self.name} answered {status} {body[:200]!r}, not the upstream's "
                        f"body:\n{self.log_tail()}"
                    )
            time.sleep(0.1)
        raise BenchError(
            f"{self.name} did not start within {START_TIMEOUT:.0f}s:\n{self.log_tail()}"
        )

    def cpu_seconds(self) -> float:
        """User + system CPU time of the master and its workers so far."""
        members = process_group(self.process.pid)
        return sum(int(fields[11]) + int(fields[12]) for _, fields in members) / CLOCK_TICKS

    def workers(self) -> list[int]:
        """The processes of the group other than its leader (gunicorn's or nginx's workers)."""
        return [pid for pid, _ in process_group(self.process.pid) if pid != self.process.pid]

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Kratos(Server):
    """The Kratos stand-in (bench/kratos.py), driven by one-line commands on a pipe."""

    def __init__(self, workdir: Path) -> None:
        self.name = "Ory (Kratos stand-in)"
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = workdir / f"kratos-{self.port}.log"
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, str(BENCH / "kratos.py"), str(self.port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                cwd=workdir,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                start_new_session=True,
            )
        self.lock = threading.Lock()
        ready = self._read_line()
        if not ready.startswith("ready"):
            raise BenchError(f"the Kratos stand-in did not start: {ready!r}\n{self.log_tail()}")

    def _read_line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise BenchError(f"the Kratos stand-in exited:\n{self.log_tail()}")
        return line.strip()

    def command(self, text: str) -> str:
        assert self.process.stdin is not None
        with self.lock:
            self.process.stdin.write(text + "\n")
            self.process.stdin.flush()
            return self._read_line()

    def new_session(self) -> str:
        """A fresh identity's session token (`ory_st_...`)."""
        return self.command("session")

    def whoami_calls(self, token: str) -> int:
        return int(self.command(f"whoami {token}"))


def nginx_server(upstream_url: str, workdir: Path, workers: int) -> Server:
    """nginx as a plain reverse proxy: keep-alive upstream connections, buffered access log."""
    executable = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    home = workdir / f"nginx-{port}"
    home.mkdir()
    _, upstream_port, _ = split_url(upstream_url)
    user = "user root;\n" if os.geteuid() == 0 else ""
    (home / "nginx.conf").write_text(
        f"""{user}worker_processes {workers};
pid {home}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log {home}/access.log combined buffer=64k flush=1s;
    client_body_temp_path {home}/body;
    proxy_temp_path {home}/proxy;
    fastcgi_temp_path {home}/fastcgi;
    uwsgi_temp_path {home}/uwsgi;
    scgi_temp_path {home}/scgi;
    upstream app {{
        server {HOST}:{upstream_port};
        keepalive 32;
    }}
    server {{
        listen {HOST}:{port} reuseport;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""
    )
    command = [executable, "-e", "stderr", "-p", str(home), "-c", str(home / "nginx.conf")]
    return Server("nginx", [*command, "-g", "daemon off;"], workdir, port=port)


def find_nginx(allow_install: bool) -> bool:
    """nginx present, or installed with apt-get (Debian's nginx-light) when root."""
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        return True
    return apt_install("nginx-light", allow_install) and bool(shutil.which("nginx"))


def apt_install(package: str, allow_install: bool) -> bool:
    if not (allow_install and os.geteuid() == 0 and shutil.which("apt-get")):
        return False
    print(f"installing {package} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        for command in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", package],
        ):
            subprocess.run(
                command,
                timeout=180,
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return True
    return False


class LoadTool(Protocol):
    label: str

    def run(self, url: str, duration: float, connections: int, headers: dict[str, str]) -> Load: ...


class Wrk:
    """wrk, with a Lua `done` hook that prints its summary as JSON."""

    def __init__(self, executable: str, threads: int) -> None:
        self.executable = executable
        self.threads = threads
        version = subprocess.run([executable, "-v"], capture_output=True, text=True, check=False)
        words = (version.stdout or version.stderr).split()
        self.label = f"wrk {words[1] if len(words) > 1 else ''} -t{threads}".replace("  ", " ")

    def run(self, url: str, duration: float, connections: int, headers: dict[str, str]) -> Load:
        command = [
            self.executable,
            f"-t{self.threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "5s",
            "-s",
            str(BENCH / "wrk_report.lua"),
        ]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        finished = subprocess.run(
            [*command, url], capture_output=True, text=True, timeout=duration + 30, check=False
        )
        for line in finished.stdout.splitlines():
            if line.startswith("BENCH_JSON "):
                report = json.loads(line.removeprefix("BENCH_JSON "))
                break
        else:
            raise BenchError(
                f"wrk failed ({finished.returncode}):\n{finished.stdout}{finished.stderr}"
            )
        errors = sum(
            report[key]
            for key in (
                "connect_errors",
                "read_errors",
                "write_errors",
                "status_errors",
                "timeouts",
            )
        )
        return Load(
            report["requests"],
            report["duration_us"] / 1e6,
            report["p50_us"] / 1000.0,
            report["p99_us"] / 1000.0,
            errors,
        )


class PythonLoad:
    """Threads, each with one keep-alive http.client connection, as fast as they can go.

    The GIL caps it well below wrk, so its figures understate every server.
    """

    label = "python load generator (threads, keep-alive http.client)"

    def run(self, url: str, duration: float, connections: int, headers: dict[str, str]) -> Load:
        host, port, target = split_url(url)
        deadline = time.perf_counter() + duration
        latencies: list[list[float]] = [[] for _ in range(connections)]
        errors = [0] * connections

        def drive(index: int) -> None:
            own = latencies[index]
            connection = http.client.HTTPConnection(host, port, timeout=5)
            while (started := time.perf_counter()) < deadline:
                try:
                    connection.request("GET", target, headers=headers)
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    errors[index] += 1
                    connection.close()
                    continue
                if response.status != 200:
                    errors[index] += 1
                if response.will_close:
                    connection.close()
                own.append(time.perf_counter() - started)
            connection.close()

        started = time.perf_counter()
        threads = [
            threading.Thread(target=drive, args=(index,), daemon=True)
            for index in range(connections)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(duration + 10)
        elapsed = time.perf_counter() - started
        samples = sorted(value for own in latencies for value in own)
        if not samples:
            raise BenchError(f"no request to {url} succeeded")

        def percentile(fraction: float) -> float:
            return samples[min(len(samples) - 1, int(fraction * len(samples)))] * 1000.0

        return Load(len(samples), elapsed, percentile(0.50), percentile(0.99), sum(errors))


def find_load_tool(wrk_threads: int, allow_install: bool) -> LoadTool:
    """wrk if present or installable with apt-get (as root), else the Python generator."""
    executable = shutil.which("wrk")
    if executable is None and apt_install("wrk", allow_install):
        executable = shutil.which("wrk")
    if executable is None:
        return PythonLoad()
    return Wrk(executable, wrk_threads)


@dataclass
class Target:
    """One server under one kind of load, what else it makes work, and its rounds' results."""

    name: str
    server: Server
    behind: list[Server]  # the upstream (and Ory) whose CPU the requests also cost
    headers: dict[str, str] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)

    def measure(self, tool: LoadTool, duration: float, connections: int) -> Result:
        cpu = self.server.cpu_seconds()
        behind_cpu = sum(server.cpu_seconds() for server in self.behind)
        load = tool.run(self.server.url + PATH, duration, connections, self.headers)
        cpu = self.server.cpu_seconds() - cpu
        behind_cpu = sum(server.cpu_seconds() for server in self.behind) - behind_cpu
        per_request = 1e6 / max(load.requests, 1)
        result = Result(
            load.requests / load.seconds,
            load.p50_ms,
            load.p99_ms,
            load.errors,
            cpu * per_request,
            behind_cpu * per_request,
        )
        self.results.append(result)
        return result

    def median(self) -> Result:
        def middle(values: list[float]) -> float:
            return float(statistics.median(values))

        results = self.results
        return Result(
            middle([r.requests_per_s for r in results]),
            middle([r.p50_ms for r in results]),
            middle([r.p99_ms for r in results]),
            sum(r.errors for r in results),
            middle([r.cpu_us for r in results]),
            middle([r.upstream_cpu_us for r in results]),
        )


def version_of(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def report(targets: list[Target], out: IO[str]) -> None:
    """The table of medians; with werkzeug among the targets, every ratio to it."""
    by_name = {target.name: target for target in targets}
    werkzeug = by_name.get(WERKZEUG)
    base = werkzeug.median() if werkzeug is not None else None
    print(
        f"\n{'server':<34} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'CPU us/req':>10} {'+behind':>8} {'vs werkzeug' if base else '':>12}",
        file=out,
    )
    for target in targets:
        median = target.median()
        ratio = f"{median.requests_per_s / base.requests_per_s:>11.2f}x" if base else ""
        print(
            f"{target.name:<34} {median.requests_per_s:>7.0f} {median.p50_ms:>7.2f} "
            f"{median.p99_ms:>7.2f} {median.errors:>6} {median.cpu_us:>10.0f} "
            f"{median.upstream_cpu_us:>8.0f} {ratio}",
            file=out,
        )
    print(
        "CPU us/req: user+system CPU of the server's processes per request; +behind: the "
        "upstream's and Ory's, for the same requests. vs werkzeug: ratio of the medians.",
        file=out,
    )
    print("", file=out)
    if werkzeug is None or base is None:
        return
    for name in [target.name for target in targets if target.name.startswith("ory_wsgi")]:
        ours = by_name[name]
        # Rounds are measured seconds apart in alternating order: the median of the
        # per-round ratios cancels most of the drift that neighbours on the machine cause.
        paired = [
            mine.requests_per_s / theirs.requests_per_s
            for mine, theirs in zip(ours.results, werkzeug.results, strict=True)
        ]
        headline = float(statistics.median(paired))
        wanted = TARGETS.get(name)
        verdict = (
            f" ({'meets' if headline >= wanted else 'misses'} the {wanted}x target)"
            if wanted
            else ""
        )
        cpu_ratio = base.cpu_us / ours.median().cpu_us if ours.median().cpu_us else 0.0
        print(
            f"{name} / werkzeug: {headline:.2f}x req/s (per round "
            + ", ".join(f"{ratio:.2f}x" for ratio in paired)
            + f"){verdict}; werkzeug's CPU per request / ours {cpu_ratio:.2f}x",
            file=out,
        )


def unix_report(targets: list[Target], out: IO[str]) -> None:
    """The Unix-socket upstream against loopback TCP: same proxy settings, same upstream process."""
    by_name = {target.name: target for target in targets}
    tcp, unix = by_name["ory_wsgi, anonymous"], by_name[UNIX_TARGET]
    paired = [
        mine.requests_per_s / theirs.requests_per_s
        for mine, theirs in zip(unix.results, tcp.results, strict=True)
    ]
    tcp_median, unix_median = tcp.median(), unix.median()
    proxy_cpu = tcp_median.cpu_us / unix_median.cpu_us if unix_median.cpu_us else 0.0
    behind_cpu = (
        tcp_median.upstream_cpu_us / unix_median.upstream_cpu_us
        if unix_median.upstream_cpu_us
        else 0.0
    )
    print(
        f"unix-socket upstream / loopback TCP (ory_wsgi, anonymous): "
        f"{statistics.median(paired):.2f}x req/s (per round "
        + ", ".join(f"{ratio:.2f}x" for ratio in paired)
        + f"); proxy CPU per request TCP/unix {proxy_cpu:.2f}x, "
        f"upstream+Ory CPU per request TCP/unix {behind_cpu:.2f}x",
        file=out,
    )


def single_flight_check(proxy: Server, kratos: Kratos, workers: int, out: IO[str]) -> None:
    """30 concurrent first requests of one new session: how many whoami calls they cost."""
    token = kratos.new_session()
    barrier = threading.Barrier(CONCURRENT_FIRST_REQUESTS)
    statuses: list[int] = []
    host, port, _ = split_url(proxy.url)

    def first_request() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=10)
        try:
            connection.connect()
            barrier.wait(10)
            connection.request("GET", PATH, headers={"X-Session-Token": token})
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        except (OSError, http.client.HTTPException, threading.BrokenBarrierError):
            statuses.append(0)
        finally:
            connection.close()

    threads = [threading.Thread(target=first_request) for _ in range(CONCURRENT_FIRST_REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    calls = kratos.whoami_calls(token)
    ok = statuses.count(200)
    verdict = "meets" if calls <= workers and ok == CONCURRENT_FIRST_REQUESTS else "misses"
    print(
        f"{CONCURRENT_FIRST_REQUESTS} concurrent first requests of one session: {ok} answered "
        f"200, {calls} whoami call(s) for {workers} workers ({verdict} the 1-per-worker target)",
        file=out,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per target (median)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn --workers of each server")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn --threads of each server")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk -t")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="instead of throughput: a 1 GiB download and a 1 GiB chunked upload through "
        "ory_wsgi, reporting the growth of its workers' resident memory",
    )
    parser.add_argument(
        "--memory-size", type=int, default=1024, metavar="MIB", help="transfer size of --memory"
    )
    parser.add_argument(
        "--upstream",
        choices=("asyncio", "gunicorn"),
        default="asyncio",
        help="the upstream server: the cheap asyncio responder (default) or "
        "upstream:app under gunicorn gthread",
    )
    parser.add_argument("--no-nginx", action="store_true", help="leave nginx out")
    parser.add_argument(
        "--rules-only",
        action="store_true",
        help=f"only the rule-set comparison: {RULE_COUNT} access rules vs one [[protect]]",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="never apt-get install wrk or nginx; fall back to the Python generator",
    )
    parser.add_argument(
        "--python-load",
        action="store_true",
        help="use the Python load generator even when wrk is present",
    )
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="LABEL=SPEC",
        help="also measure this gunicorn app spec under the same settings; "
        "{upstream} and {ory} in SPEC (and $BENCH_UPSTREAM) name the upstream and Ory URLs",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.connections < 1 or args.threads < 1:
        parser.error("--rounds, --duration, --connections and --threads must be positive")
    return args


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into SystemExit, so that `finally` stops the servers."""

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def guarded_main(body: Callable[[], object], what: str = "benchmark") -> int:
    """Run `body` as a bench script's main: servers stopped on SIGTERM, SIGHUP and Ctrl-C,
    a `BenchError` one line on stderr; returns the exit status (0, 1, or 130 when interrupted).

    Shared by run.py, fleet.py and soak.py.
    """
    try:
        with exit_on_signals():
            body()
    except BenchError as exc:
        print(f"{what} failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: servers stopped", file=sys.stderr)
        return 130
    return 0


def ory_spec(upstream_url: str, ory_url: str, cache: bool, config: Path | None = None) -> str:
    """ory_wsgi with Ory: default settings (JSON access log on), the session cache on or off;
    `config`: an ory.toml with the rules."""
    extra = "" if cache else ', session_cache={"ttl": 0}'
    file = f'"{config}", ' if config else ""
    return (
        f'ory_wsgi:make_app({file}upstream="{upstream_url}", ory={{"sdk_url": "{ory_url}"}}{extra})'
    )


def rules_report(targets: list[Target], out: IO[str]) -> None:
    """100 rules against one [[protect]], per round (the rounds are measured side by side)."""
    by_name = {target.name: target for target in targets}
    for who in ("anonymous", "logged in"):
        one, hundred = by_name[ONE_RULE.format(who)], by_name[HUNDRED_RULES.format(who)]
        paired = [
            many.requests_per_s / single.requests_per_s
            for many, single in zip(hundred.results, one.results, strict=True)
        ]
        headline = float(statistics.median(paired))
        verdict = "meets" if headline >= RULES_TARGET else "misses"
        cpu = one.median().cpu_us / hundred.median().cpu_us if hundred.median().cpu_us else 0.0
        print(
            f"{RULE_COUNT} rules / 1 [[protect]], {who}: {headline:.2f}x req/s (per round "
            + ", ".join(f"{ratio:.2f}x" for ratio in paired)
            + f") ({verdict} the {RULES_TARGET}x target); CPU per request 1 rule / "
            f"{RULE_COUNT} rules {cpu:.2f}x",
            file=out,
        )


def gunicorn_args(args: argparse.Namespace) -> list[str]:
    return [
        "--worker-class",
        "gthread",
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
    ]


def unix_socket(workdir: Path) -> Path:
    """Where the upstream also listens on a Unix socket (the same process as its TCP port)."""
    return workdir / "upstream.sock"


def start_upstream(args: argparse.Namespace, workdir: Path, servers: list[Server]) -> Server:
    if args.upstream == "gunicorn" or args.memory:
        upstream = Server.gunicorn(
            "upstream",
            "upstream:app",
            [
                *("--worker-class", "gthread", "--workers", "2", "--threads", "16"),
                *("--bind", f"unix:{unix_socket(workdir)}"),
            ],
            workdir,
        )
        servers.append(upstream)
        upstream.wait_ready(2)
    else:
        upstream = Server(
            "upstream",
            [sys.executable, str(BENCH / "upstream.py"), "{port}", str(unix_socket(workdir))],
            workdir,
        )
        servers.append(upstream)
        upstream.wait_ready(0)
    return upstream


def print_machine(out: IO[str]) -> None:
    print(
        f"{os.cpu_count()} CPUs ({cpu_model()}), load average {os.getloadavg()[0]:.2f} "
        f"before the run; Python {platform.python_version()}, gunicorn "
        f"{version_of('gunicorn')}, werkzeug {version_of('werkzeug')}",
        file=out,
    )
    if os.getloadavg()[0] > 1.0:
        print("other processes keep the CPUs busy: expect noisy figures", file=out)


def rule_set_targets(
    one: Server, hundred: Server, behind: list[Server], token: str
) -> list[Target]:
    """Anonymous and logged in, one [[protect]] and 100 rules side by side."""
    logged_in = {"X-Session-Token": token}
    for server in (one, hundred):
        status, body = fetch(server.url + PATH, logged_in)
        if (status, body) != (200, EXPECTED_BODY):
            raise BenchError(f"{server.name}: a logged-in request got {status} {body[:200]!r}")
    return [
        Target(ONE_RULE.format("anonymous"), one, behind),
        Target(HUNDRED_RULES.format("anonymous"), hundred, behind),
        Target(ONE_RULE.format("logged in"), one, behind, logged_in),
        Target(HUNDRED_RULES.format("logged in"), hundred, behind, logged_in),
    ]


def measure_rounds(
    tool: LoadTool, targets: list[Target], args: argparse.Namespace, out: IO[str]
) -> None:
    """A warm-up of each target, then rounds in alternating order."""
    for target in targets:
        tool.run(target.server.url + PATH, args.warmup, args.connections, target.headers)
    for round_index in range(args.rounds):
        # Alternate the order so that drift (neighbours, CPU boost) favours no one.
        order = targets if round_index % 2 == 0 else targets[::-1]
        for target in order:
            result = target.measure(tool, args.duration, args.connections)
            print(
                f"  round {round_index + 1}: {target.name:<34} {result.requests_per_s:>7.0f} req/s",
                file=out,
                flush=True,
            )


def run_throughput(args: argparse.Namespace, out: IO[str]) -> None:
    tool: LoadTool = (
        PythonLoad() if args.python_load else find_load_tool(args.wrk_threads, not args.no_install)
    )
    with_nginx = not args.no_nginx and find_nginx(not args.no_install)
    proxy_args = gunicorn_args(args)
    servers: list[Server] = []
    workdir = Path(tempfile.mkdtemp(prefix="ory-wsgi-bench-"))
    try:
        upstream = start_upstream(args, workdir, servers)
        kratos = Kratos(workdir)
        servers.append(kratos)
        env = {"BENCH_UPSTREAM": upstream.url}

        def gunicorn(label: str, spec: str) -> Server:
            server = Server.gunicorn(label, spec, proxy_args, workdir, env)
            servers.append(server)
            return server

        # The rules name the proxy's own origin: the port is chosen before they are written.
        rules_port = free_port()
        rules_config = hundred_rules(workdir, f"{HOST}:{rules_port}", upstream.url)
        ory_rules = Server.gunicorn(
            f"ory_wsgi {RULE_COUNT} rules",
            ory_spec(upstream.url, kratos.url, cache=True, config=rules_config),
            proxy_args,
            workdir,
            env,
            rules_port,
        )
        servers.append(ory_rules)
        ory_protect = gunicorn(
            "ory_wsgi 1 protect",
            ory_spec(upstream.url, kratos.url, cache=True, config=one_protect(workdir)),
        )
        rule_servers = [ory_protect, ory_rules]
        if args.rules_only:
            for server in rule_servers:
                server.wait_ready(args.workers)
            token = kratos.new_session()
            rule_targets = rule_set_targets(ory_protect, ory_rules, [upstream, kratos], token)
            print_machine(out)
            print(
                f"load tool: {tool.label}; GET {PATH}, {args.connections} connections, "
                f"{args.duration:g}s x {args.rounds} rounds per target",
                file=out,
                flush=True,
            )
            measure_rounds(tool, rule_targets, args, out)
            report(rule_targets, out)
            rules_report(rule_targets, out)
            return
        bare = gunicorn("bare WSGI app", "upstream:app")
        ory = gunicorn("ory_wsgi", ory_spec(upstream.url, kratos.url, cache=True))
        # The same proxy and upstream process, the upstream reached over its Unix socket.
        ory_unix = gunicorn(
            "ory_wsgi unix", ory_spec(f"unix:{unix_socket(workdir)}", kratos.url, cache=True)
        )
        ory_uncached = gunicorn("ory_wsgi cache off", ory_spec(upstream.url, kratos.url, False))
        werkzeug = gunicorn(WERKZEUG, "werkzeug_proxy:app")
        extras = []
        for extra in args.app:
            label, _, spec = extra.partition("=")
            if not spec:
                raise BenchError(f"--app {extra!r}: expected LABEL=SPEC")
            spec = spec.replace("{upstream}", upstream.url).replace("{ory}", kratos.url)
            extras.append((label, gunicorn(label, spec)))
        nginx = None
        if with_nginx:
            nginx = nginx_server(upstream.url, workdir, args.workers)
            servers.append(nginx)
        for server in [
            bare,
            ory,
            ory_unix,
            ory_uncached,
            werkzeug,
            *rule_servers,
            *(s for _, s in extras),
        ]:
            server.wait_ready(args.workers)
        if nginx is not None:
            nginx.wait_ready(0)

        token = kratos.new_session()
        logged_in = {"X-Session-Token": token}
        status, body = fetch(ory.url + PATH, logged_in)
        if (status, body) != (200, EXPECTED_BODY):
            raise BenchError(f"a logged-in request got {status} {body[:200]!r}")
        targets = [Target("upstream alone (reference)", upstream, [])]
        targets.append(Target("bare WSGI app (no hop)", bare, []))
        if nginx is not None:
            targets.append(Target("nginx reverse proxy", nginx, [upstream]))
        targets += [
            Target("ory_wsgi, anonymous", ory, [upstream, kratos]),
            Target(UNIX_TARGET, ory_unix, [upstream, kratos]),
            Target(WERKZEUG, werkzeug, [upstream]),
            Target("ory_wsgi, logged in, cached", ory, [upstream, kratos], logged_in),
            Target("ory_wsgi, logged in, cache off", ory_uncached, [upstream, kratos], logged_in),
        ]
        targets += rule_set_targets(ory_protect, ory_rules, [upstream, kratos], token)
        targets += [Target(label, server, [upstream, kratos]) for label, server in extras]

        load_seconds = len(targets) * (args.warmup + args.rounds * args.duration)
        print_machine(out)
        print(
            f"load tool: {tool.label}; upstream: "
            + (
                "gunicorn gthread 2x16, upstream:app"
                if args.upstream == "gunicorn"
                else "asyncio responder, bench/upstream.py"
            )
            + "; Ory: the Kratos stand-in (bench/kratos.py)",
            file=out,
        )
        print(
            f"GET {PATH} ({len(EXPECTED_BODY)}-byte body), {args.connections} connections, "
            f"{args.duration:g}s x {args.rounds} rounds per target, ~{load_seconds:.0f}s of load; "
            f"logged in = X-Session-Token of one session",
            file=out,
        )
        print(
            f"gunicorn {' '.join(proxy_args)} --reuse-port --no-control-socket for every "
            f"Python server; nginx {args.workers} worker processes, upstream keepalive 32",
            file=out,
            flush=True,
        )
        measure_rounds(tool, targets, args, out)
        report(targets, out)
        unix_report(targets, out)
        rules_report(targets, out)
        single_flight_check(ory, kratos, args.workers, out)
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class PeakRss:
    """Samples the resident memory of some processes every 10 ms while a transfer runs."""

    def __init__(self, pids: list[int]) -> None:
        self.baseline = {pid: rss_bytes(pid) for pid in pids}
        self.peak = dict(self.baseline)
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self.running:
            for pid in self.peak:
                self.peak[pid] = max(self.peak[pid], rss_bytes(pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()

    @property
    def growth(self) -> int:
        return max(self.peak[pid] - self.baseline[pid] for pid in self.peak)


def download(url: str, size: int) -> int:
    host, port, _ = split_url(url)
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request("GET", f"/big?size={size}")
        response = connection.getresponse()
        if response.status != 200:
            raise BenchError(f"the download answered {response.status}")
        received = 0
        while data := response.read(MIB):
            received += len(data)
        return received
    finally:
        connection.close()


def chunked_upload(url: str, size: int) -> int:
    host, port, _ = split_url(url)
    block = os.urandom(MIB)

    def chunks() -> Iterator[bytes]:
        left = size
        while left > 0:
            part = block[: min(MIB, left)]
            left -= len(part)
            yield part

    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request(
            "POST",
            "/upload",
            body=chunks(),
            headers={"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise BenchError(f"the upload answered {response.status}: {answer[:200]!r}")
        return int(answer)
    finally:
        connection.close()


def run_memory(args: argparse.Namespace, out: IO[str]) -> None:
    size = args.memory_size * MIB
    servers: list[Server] = []
    workdir = Path(tempfile.mkdtemp(prefix="ory-wsgi-bench-"))
    try:
        upstream = start_upstream(args, workdir, servers)
        proxy = Server.gunicorn(
            "ory_wsgi",
            f'ory_wsgi:make_app(upstream="{upstream.url}")',
            gunicorn_args(args),
            workdir,
        )
        servers.append(proxy)
        proxy.wait_ready(args.workers)
        print_machine(out)
        print(
            f"ory_wsgi under gunicorn {' '.join(gunicorn_args(args))}, upstream:app under "
            f"gunicorn; {size / MIB:.0f} MiB each way, resident memory of every worker "
            f"sampled every 10 ms (budget {MEMORY_BUDGET // MIB} MiB of growth)",
            file=out,
            flush=True,
        )
        for label, transfer in (
            ("download (Content-Length)", download),
            ("chunked upload", chunked_upload),
        ):
            workers = proxy.workers()
            started = time.perf_counter()
            with PeakRss(workers) as rss:
                moved = transfer(proxy.url, size)
            seconds = time.perf_counter() - started
            if moved != size:
                raise BenchError(f"the {label} moved {moved} bytes, not {size}")
            verdict = "pass" if rss.growth < MEMORY_BUDGET else "FAIL"
            print(
                f"{label:<26} {size / MIB:>6.0f} MiB in {seconds:5.1f}s "
                f"({size / MIB / seconds:5.0f} MiB/s), worker memory growth "
                f"{rss.growth / MIB:5.1f} MiB: {verdict}",
                file=out,
                flush=True,
            )
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if version_of("gunicorn") == "?":
        print(
            f"benchmark failed: gunicorn is not installed for {sys.executable}; "
            "run the benchmark with the project's .venv/bin/python",
            file=sys.stderr,
        )
        return 1
    return guarded_main(lambda: (run_memory if args.memory else run_throughput)(args, sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
