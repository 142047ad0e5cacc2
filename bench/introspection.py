"""Throughput of access rules whose handlers ask another service, cache on and off.

    .venv/bin/python bench/introspection.py [--duration 6] [--rounds 3]

Every case is measured beside the reference: ory_wsgi logged in with a Kratos
session answered from the session cache (run.py's "ory_wsgi, logged in,
cached", the same settings). A case starts its stand-in (in its own process,
driven over a pipe like bench/kratos.py) and one ory_wsgi per cache setting,
each under `gunicorn -k gthread --workers 2 --threads 8`, all serving
`GET /hello?page=1` from the asyncio upstream through an access rule that
ends in the `id_token` mutator (the session case mints the same JWT).
Targets: with the cache on, within 15% of the reference's requests per
second (the median of per-round ratios), and at most one call to the
stand-in per token per cache TTL per worker.

Cases (`CASES`):
- `introspection`: the `oauth2_introspection` authenticator against the
  Hydra stand-in (bench/hydra.py), one bearer token, `required_scope`,
  `target_audience`; the cache on (`ttl` 10 s) and off.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from run import (
    BENCH,
    EXPECTED_BODY,
    HOST,
    PATH,
    ROOT,
    BenchError,
    Kratos,
    LoadTool,
    PythonLoad,
    Server,
    Target,
    fetch,
    find_load_tool,
    free_port,
    guarded_main,
    gunicorn_args,
    ory_spec,
    print_machine,
    start_upstream,
)

REFERENCE = "session, cached (reference)"
WITHIN = 0.85  # cache on: at least this share of the reference's req/s
INTROSPECTION_TTL = 10.0


class StandIn(Kratos):
    """A stand-in script of bench/ (`hydra.py`, ...) in its own process, driven over a pipe."""

    def __init__(self, name: str, script: str, workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = workdir / f"{Path(script).stem}-{self.port}.log"
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, str(BENCH / script), str(self.port)],
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
            raise BenchError(f"{name} did not start: {ready!r}\n{self.log_tail()}")


@dataclass
class Context:
    """What every case gets: the shared servers, and where to start its own."""

    args: argparse.Namespace
    workdir: Path
    upstream: Server
    kratos: Kratos
    servers: list[Server]

    def gunicorn(self, label: str, spec: str) -> Server:
        server = Server.gunicorn(
            label,
            spec,
            gunicorn_args(self.args),
            self.workdir,
            {"BENCH_UPSTREAM": self.upstream.url},
        )
        self.servers.append(server)
        return server

    def proxy_with_rules(self, label: str, rules: list[dict[str, object]], enabled: str) -> Server:
        """ory_wsgi in front of the upstream, deciding by `rules` (Oathkeeper's JSON)."""
        name = "".join(ch for ch in label if ch.isalnum())
        rules_file = self.workdir / f"rules-{name}.json"
        rules_file.write_text(json.dumps(rules))
        config = self.workdir / f"ory-{name}.toml"
        config.write_text(
            f'[proxy]\nupstream = "{self.upstream.url}"\n'
            f'[ory]\nsdk_url = "{self.kratos.url}"\n'
            f'[access_rules]\nrepositories = ["{rules_file}"]\n'
            "[authorizers.allow]\nenabled = true\n[mutators.id_token]\nenabled = true\n" + enabled
        )
        return self.gunicorn(label, f'ory_wsgi:make_app("{config}")')


@dataclass
class Case:
    """Targets to measure beside the reference, and a check of the stand-in's calls after."""

    targets: list[Target]
    cached: str  # the name of the cache-on target
    calls: Callable[[float, IO[str]], None]  # (the cache-on target's wall-clock span, out)


def introspection_case(ctx: Context) -> Case:
    hydra = StandIn("Hydra stand-in", "hydra.py", ctx.workdir)
    ctx.servers.append(hydra)

    def rule(cache: bool) -> list[dict[str, object]]:
        config = {
            "introspection_url": f"{hydra.url}/admin/oauth2/introspect",
            "required_scope": ["photos.read"],
            "scope_strategy": "exact",
            "target_audience": ["api"],
            "cache": {"enabled": cache, "ttl": f"{INTROSPECTION_TTL:g}s"},
        }
        return [
            {
                "id": "api",
                "match": {"methods": ["GET"], "url": "<https?>://<[^/]+>/hello<.*>"},
                "authenticators": [{"handler": "oauth2_introspection", "config": config}],
                "authorizer": {"handler": "allow"},
                "mutators": [{"handler": "id_token"}],
            }
        ]

    enabled = "[authenticators.oauth2_introspection]\nenabled = true\n"
    cached = ctx.proxy_with_rules("introspection cache on", rule(True), enabled)
    uncached = ctx.proxy_with_rules("introspection cache off", rule(False), enabled)
    # One token per target, so that the cache-on target's calls can be counted alone.
    tokens = [hydra.command("token"), hydra.command("token")]
    bearers = [{"Authorization": f"Bearer {token}"} for token in tokens]
    for server, bearer in zip((cached, uncached), bearers, strict=True):
        wait_allowed(server, ctx.args.workers, bearer)
    behind = [ctx.upstream, hydra]
    on = Target("introspection, cache on", cached, behind, bearers[0])
    off = Target("introspection, cache off", uncached, behind, bearers[1])

    def calls(seconds: float, out: IO[str]) -> None:
        made = int(hydra.command(f"calls {tokens[0]}"))
        ttls = math.ceil(seconds / INTROSPECTION_TTL)
        allowed = ctx.args.workers * ttls
        requests = sum(r.requests_per_s for r in on.results) * ctx.args.duration
        verdict = "meets" if made <= allowed else "misses"
        print(
            f"introspection, cache on: {made} introspection(s) of its token over {seconds:.0f}s "
            f"and ~{requests:.0f} measured requests; at most {allowed} allowed "
            f"({ctx.args.workers} workers x {ttls} TTLs of {INTROSPECTION_TTL:g}s): {verdict} "
            f"the one-per-token-per-TTL-per-worker target; cache off: "
            f"{hydra.command(f'calls {tokens[1]}')}",
            file=out,
        )

    return Case([on, off], on.name, calls)


CASES: dict[str, Callable[[Context], Case]] = {"introspection": introspection_case}


def wait_allowed(server: Server, workers: int, headers: dict[str, str]) -> None:
    """Wait until the server has booted and lets a request with `headers` through."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        booted = server.log_path.read_text(errors="replace").count("Booting worker")
        if booted >= workers:
            try:
                status, body = fetch(server.url + PATH, headers)
            except OSError:
                status, body = 0, b""
            if (status, body) == (200, EXPECTED_BODY):
                return
            if status:
                raise BenchError(
                    f"{server.name} answered {status} {body[:200]!r}:\n{server.log_tail()}"
                )
        time.sleep(0.1)
    raise BenchError(f"{server.name} did not start:\n{server.log_tail()}")


def measure(
    tool: LoadTool, targets: list[Target], args: argparse.Namespace, out: IO[str]
) -> dict[str, float]:
    """Warm-up, then rounds in alternating order; returns each target's wall-clock span
    (from its warm-up to the end of the last round: what its cache's TTLs ran through)."""
    started = {}
    for target in targets:
        started[target.name] = time.monotonic()
        tool.run(target.server.url + PATH, args.warmup, args.connections, target.headers)
    for index in range(args.rounds):
        for target in targets if index % 2 == 0 else targets[::-1]:
            result = target.measure(tool, args.duration, args.connections)
            print(
                f"  round {index + 1}: {target.name:<34} {result.requests_per_s:>7.0f} req/s",
                file=out,
                flush=True,
            )
    ended = time.monotonic()
    return {name: ended - start for name, start in started.items()}


def report(targets: list[Target], cached: list[str], out: IO[str]) -> None:
    reference = next(t for t in targets if t.name == REFERENCE)
    print(
        f"\n{'target':<34} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'CPU us/req':>10} {'+behind':>8}",
        file=out,
    )
    for target in targets:
        median = target.median()
        print(
            f"{target.name:<34} {median.requests_per_s:>7.0f} {median.p50_ms:>7.2f} "
            f"{median.p99_ms:>7.2f} {median.errors:>6} {median.cpu_us:>10.0f} "
            f"{median.upstream_cpu_us:>8.0f}",
            file=out,
        )
    for target in targets:
        if target is reference:
            continue
        paired = [
            mine.requests_per_s / theirs.requests_per_s
            for mine, theirs in zip(target.results, reference.results, strict=True)
        ]
        ratio = float(statistics.median(paired))
        verdict = ""
        if target.name in cached:
            verdict = f" ({'meets' if ratio >= WITHIN else 'misses'} the within-15% target)"
        print(f"{target.name} / {REFERENCE}: {ratio:.2f}x req/s{verdict}", file=out)


def run(args: argparse.Namespace, out: IO[str]) -> None:
    tool: LoadTool = PythonLoad() if args.python_load else find_load_tool(args.wrk_threads, False)
    servers: list[Server] = []
    workdir = Path(tempfile.mkdtemp(prefix="ory-wsgi-bench-introspection-"))
    try:
        upstream = start_upstream(
            argparse.Namespace(upstream="asyncio", memory=False), workdir, servers
        )
        kratos = Kratos(workdir)
        servers.append(kratos)
        ctx = Context(args, workdir, upstream, kratos, servers)
        session = ctx.gunicorn("ory_wsgi", ory_spec(upstream.url, kratos.url, cache=True))
        session.wait_ready(args.workers)
        logged_in = {"X-Session-Token": kratos.new_session()}
        wait_allowed(session, args.workers, logged_in)
        targets = [Target(REFERENCE, session, [upstream, kratos], logged_in)]
        cases = [CASES[name](ctx) for name in args.case]
        for case in cases:
            targets += case.targets
        print_machine(out)
        print(
            f"load tool: {tool.label}; GET {PATH}, {args.connections} connections, "
            f"{args.duration:g}s x {args.rounds} rounds per target; gunicorn "
            f"{' '.join(gunicorn_args(args))}",
            file=out,
            flush=True,
        )
        ran = measure(tool, targets, args, out)
        report(targets, [case.cached for case in cases], out)
        for case in cases:
            case.calls(ran[case.cached], out)
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per target (median)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn --workers of each server")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn --threads of each server")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--python-load", action="store_true", help="never use wrk")
    parser.add_argument(
        "--case",
        action="append",
        choices=sorted(CASES),
        help="the cases to measure (default: all)",
    )
    args = parser.parse_args(argv)
    args.case = args.case or sorted(CASES)
    return args


if __name__ == "__main__":
    arguments = parse_args(None)
    sys.exit(guarded_main(lambda: run(arguments, sys.stdout)))
