"""Throughput of ory_wsgi against werkzeug's ProxyMiddleware: same gunicorn, same upstream.

    .venv/bin/python bench/run.py [--duration 6] [--rounds 3] [--connections 16]

Starts one upstream and the proxies under identical gunicorn settings on free
loopback ports, drives each with wrk (or a small Python load generator when
wrk cannot be had), alternating rounds, and prints the medians, the CPU each
server spent per request, and the ratio ory_wsgi / werkzeug. Exits non-zero
only when the benchmark could not run, never because a target was missed.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import IO, Protocol

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HOST = "127.0.0.1"
PATH = "/hello?page=1"
EXPECTED_BODY = b"Hello from the upstream application.\n"
START_TIMEOUT = 20.0
TARGET_RATIO = 1.25
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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
    upstream_cpu_us: float  # CPU time of the upstream per request (0 for the upstream itself)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def split_url(url: str) -> tuple[str, int, str]:
    netloc, _, target = url.removeprefix("http://").partition("/")
    host, _, port = netloc.partition(":")
    return host, int(port), "/" + target


def fetch(url: str) -> tuple[int, bytes]:
    host, port, target = split_url(url)
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class Server:
    """A server process in its own process group, so that stopping it stops its workers."""

    def __init__(
        self, name: str, command: list[str], workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.port = free_port()
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
        return cls(name, command, workdir, env)

    def wait_ready(self, workers: int) -> None:
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
                    status, body = fetch(self.url + PATH)
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
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # Fields after the parenthesised command name; pgrp is the 5th field overall.
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.process.pid:
                    total += int(fields[11]) + int(fields[12])
        return total / CLOCK_TICKS

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


class LoadTool(Protocol):
    label: str

    def run(self, url: str, duration: float, connections: int) -> Load: ...


class Wrk:
    """wrk, with a Lua `done` hook that prints its summary as JSON."""

    def __init__(self, executable: str, threads: int) -> None:
        self.executable = executable
        self.threads = threads
        version = subprocess.run([executable, "-v"], capture_output=True, text=True, check=False)
        words = (version.stdout or version.stderr).split()
        self.label = f"wrk {words[1] if len(words) > 1 else ''} -t{threads}".replace("  ", " ")

    def run(self, url: str, duration: float, connections: int) -> Load:
        command = [
            self.executable,
            f"-t{self.threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "5s",
            "-s",
            str(BENCH / "wrk_report.lua"),
            url,
        ]
        finished = subprocess.run(
            command, capture_output=True, text=True, timeout=duration + 30, check=False
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

    def run(self, url: str, duration: float, connections: int) -> Load:
        host, port, target = split_url(url)
        deadline = time.perf_counter() + duration
        latencies: list[list[float]] = [[] for _ in range(connections)]
        errors = [0] * connections

        def drive(index: int) -> None:
            own = latencies[index]
            connection = http.client.HTTPConnection(host, port, timeout=5)
            while (started := time.perf_counter()) < deadline:
                try:
                    connection.request("GET", target)
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
    if executable is None and allow_install and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing it with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            for command in (
                ["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends", "wrk"],
            ):
                subprocess.run(
                    command,
                    timeout=90,
                    check=True,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        executable = shutil.which("wrk")
    if executable is None:
        return PythonLoad()
    return Wrk(executable, wrk_threads)


@dataclass
class Target:
    """One server under load, the upstream behind it, and the results of its rounds."""

    name: str
    server: Server
    upstream: Server | None
    results: list[Result] = field(default_factory=list)

    def measure(self, tool: LoadTool, duration: float, connections: int) -> Result:
        cpu = self.server.cpu_seconds()
        upstream_cpu = self.upstream.cpu_seconds() if self.upstream else 0.0
        load = tool.run(self.server.url + PATH, duration, connections)
        cpu = self.server.cpu_seconds() - cpu
        upstream_cpu = (self.upstream.cpu_seconds() - upstream_cpu) if self.upstream else 0.0
        per_request = 1e6 / max(load.requests, 1)
        result = Result(
            load.requests / load.seconds,
            load.p50_ms,
            load.p99_ms,
            load.errors,
            cpu * per_request,
            upstream_cpu * per_request,
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


def report(targets: list[Target], ory: Target, werkzeug: Target, out: IO[str]) -> None:
    base = werkzeug.median()
    print(
        f"\n{'server':<30} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'CPU us/req':>10} {'+upstream':>9} {'req/s vs werkzeug':>18}",
        file=out,
    )
    for target in targets:
        median = target.median()
        ratio = median.requests_per_s / base.requests_per_s
        print(
            f"{target.name:<30} {median.requests_per_s:>7.0f} {median.p50_ms:>7.2f} "
            f"{median.p99_ms:>7.2f} {median.errors:>6} {median.cpu_us:>10.0f} "
            f"{median.upstream_cpu_us:>9.0f} {ratio:>17.2f}x",
            file=out,
        )
    print(
        "CPU us/req: user+system CPU of the server's processes per request; "
        "+upstream: the upstream's, for the same requests.",
        file=out,
    )
    ory_median = ory.median()
    throughput = ory_median.requests_per_s / base.requests_per_s
    paired = [
        mine.requests_per_s / theirs.requests_per_s
        for mine, theirs in zip(ory.results, werkzeug.results, strict=True)
    ]
    proxy_cpu = base.cpu_us / ory_median.cpu_us if ory_median.cpu_us else 0.0
    total_cpu = (base.cpu_us + base.upstream_cpu_us) / (
        (ory_median.cpu_us + ory_median.upstream_cpu_us) or 1.0
    )
    # Rounds of the two are run back to back, so their ratio cancels most of the drift
    # that neighbours cause; its median is the headline figure.
    headline = float(statistics.median(paired))
    verdict = "meets" if headline >= TARGET_RATIO else "misses"
    print(
        f"\nory_wsgi / werkzeug throughput: {headline:.2f}x, median of the per-round ratios "
        + ", ".join(f"{ratio:.2f}x" for ratio in paired)
        + f" ({verdict} the {TARGET_RATIO}x target); ratio of the medians {throughput:.2f}x",
        file=out,
    )
    print(
        f"werkzeug / ory_wsgi CPU per request: proxy alone {proxy_cpu:.2f}x, "
        f"proxy + upstream {total_cpu:.2f}x",
        file=out,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per server (median)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn --threads of each proxy")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk -t")
    parser.add_argument(
        "--upstream",
        choices=("asyncio", "gunicorn"),
        default="asyncio",
        help="the upstream server: the cheap asyncio responder (default) or "
        "upstream:app under gunicorn gthread",
    )
    parser.add_argument(
        "--no-quiet",
        action="store_true",
        help="skip the second ory_wsgi figure with log level warning",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="never apt-get install wrk; fall back to the Python generator",
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
        "{upstream} in SPEC and $BENCH_UPSTREAM name the upstream URL",
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


def proxy_specs(args: argparse.Namespace, upstream_url: str) -> list[tuple[str, str]]:
    """(label, gunicorn app spec) of each proxy, ending with ory_wsgi and werkzeug.

    The two compared come last and side by side, so that in every round (forward
    or reversed) one is measured right after the other.
    """
    specs = []
    if not args.no_quiet:
        quiet = f'ory_wsgi:make_app(upstream="{upstream_url}", log={{"level": "warning"}})'
        specs.append(("ory_wsgi (log level warning)", quiet))
    for extra in args.app:
        label, _, spec = extra.partition("=")
        if not spec:
            raise BenchError(f"--app {extra!r}: expected LABEL=SPEC")
        specs.append((label, spec.replace("{upstream}", upstream_url)))
    specs.append(("ory_wsgi (access log on)", f'ory_wsgi:make_app(upstream="{upstream_url}")'))
    specs.append(("werkzeug ProxyMiddleware", "werkzeug_proxy:app"))
    return specs


def run(args: argparse.Namespace, out: IO[str]) -> None:
    if version_of("gunicorn") == "?":
        raise BenchError(
            f"gunicorn is not installed for {sys.executable}; "
            "run the benchmark with the project's .venv/bin/python"
        )
    tool: LoadTool = (
        PythonLoad() if args.python_load else find_load_tool(args.wrk_threads, not args.no_install)
    )
    proxy_args = ["--worker-class", "gthread", "--workers", "2", "--threads", str(args.threads)]
    servers: list[Server] = []
    workdir = Path(tempfile.mkdtemp(prefix="ory-wsgi-bench-"))
    try:
        if args.upstream == "gunicorn":
            upstream = Server.gunicorn(
                "upstream",
                "upstream:app",
                ["--worker-class", "gthread", "--workers", "2", "--threads", "16"],
                workdir,
            )
            upstream_label, upstream_workers = "gunicorn gthread 2x16, upstream:app", 2
        else:
            upstream = Server(
                "upstream", [sys.executable, str(BENCH / "upstream.py"), "{port}"], workdir
            )
            upstream_label, upstream_workers = "asyncio responder, bench/upstream.py", 0
        servers.append(upstream)
        upstream.wait_ready(upstream_workers)
        targets = [Target("upstream alone (reference)", upstream, None)]
        for label, spec in proxy_specs(args, upstream.url):
            server = Server.gunicorn(
                label, spec, proxy_args, workdir, {"BENCH_UPSTREAM": upstream.url}
            )
            servers.append(server)
            targets.append(Target(label, server, upstream))
        for target in targets[1:]:
            target.server.wait_ready(2)

        load_seconds = len(targets) * (args.warmup + args.rounds * args.duration)
        print(
            f"{os.cpu_count()} CPUs ({cpu_model()}), load average {os.getloadavg()[0]:.2f} "
            f"before the run; Python {platform.python_version()}, gunicorn "
            f"{version_of('gunicorn')}, werkzeug {version_of('werkzeug')}, "
            f"urllib3 {version_of('urllib3')}",
            file=out,
        )
        if os.getloadavg()[0] > 1.0:
            print("other processes keep the CPUs busy: expect noisy figures", file=out)
        print(f"load tool: {tool.label}; upstream: {upstream_label}", file=out)
        print(
            f"GET {PATH} ({len(EXPECTED_BODY)}-byte body), {args.connections} connections, "
            f"{args.duration:g}s x {args.rounds} rounds per server, ~{load_seconds:.0f}s of load",
            file=out,
        )
        print(
            f"proxies: gunicorn {' '.join(proxy_args)} --reuse-port --no-control-socket",
            file=out,
            flush=True,
        )
        for target in targets:
            tool.run(target.server.url + PATH, args.warmup, args.connections)
        for round_index in range(args.rounds):
            # Alternate the order so that drift (neighbours, CPU boost) favours neither side.
            order = targets if round_index % 2 == 0 else targets[::-1]
            for target in order:
                result = target.measure(tool, args.duration, args.connections)
                print(
                    f"  round {round_index + 1}: {target.name:<30} "
                    f"{result.requests_per_s:>7.0f} req/s",
                    file=out,
                    flush=True,
                )
        report(targets, targets[-2], targets[-1], out)
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with exit_on_signals():
            run(args, sys.stdout)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: servers stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
