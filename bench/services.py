"""Rules that ask other services (issue 12's Speed), against the cached Ory-session case.

    .venv/bin/python bench/services.py             # ~1.5 min: 3 cases x (2 s warm-up + 3 x 6 s)
    .venv/bin/python bench/services.py --help

Each case is one proxy configuration driven with one kind of request; all of
them run in one process tree with the same upstream, the same Kratos stand-in
and the same gunicorn settings, measured in alternating rounds by the
bench/run.py machinery (servers, wrk or the Python load, medians, CPU per
request). The cases:
- `ory session, cached` (the baseline): `make_app(upstream=..., ory=...)`
  with the `X-Session-Token` of one session, as bench/run.py's
  "ory_wsgi, logged in, cached";
- `keto check, cache on` / `cache off`: an access rule with `bearer_token`,
  `ory_permissions` against the Keto stand-in (bench/keto.py, seeded with the
  one tuple the rule asks about) and `id_token`, with the decision cache's TTL
  at `--ttl` or 0.
Printed: each case's throughput as a ratio to the baseline (the median of
per-round ratios; target: cache on within 15 %), and each case's calls to
its service per round against what "at most one call per tuple per TTL per
worker" allows (`workers x (floor(round / TTL) + 1)`).

A case for another service (the introspection stand-in) is one more `Case`
in `CASES` and, when it needs one, one more stand-in in `StandIns`.
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
from collections.abc import Callable
from dataclasses import dataclass, field
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

BASELINE = "ory session, cached"
# Throughput targets as ratios to the baseline's requests/s in the same run.
TARGETS = {"keto check, cache on": 0.85}
KETO_TUPLE = ("bench", "hello", "view")  # namespace, object, relation; the subject is the user
READY_PATH = "/ready"  # any path: the upstream answers them all alike


class Keto(Kratos):
    """The Keto stand-in (bench/keto.py), on the same one-line command pipe as Kratos'."""

    def __init__(self, workdir: Path) -> None:
        self.name = "Keto stand-in"
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = workdir / f"keto-{self.port}.log"
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, str(BENCH / "keto.py"), str(self.port)],
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
            raise BenchError(f"the Keto stand-in did not start: {ready!r}\n{self.log_tail()}")

    def allow(self, subject: str) -> None:
        if self.command(f"allow {' '.join(KETO_TUPLE)} {subject}") != "ok":
            raise BenchError("the Keto stand-in did not take the relation tuple")

    def checks(self) -> int:
        return int(self.command("checks"))


@dataclass
class StandIns:
    """What the cases talk to: the upstream, Ory and the services, and one logged-in user."""

    workdir: Path
    upstream: Server
    kratos: Kratos
    keto: Keto
    token: str  # an `ory_st_` session token
    subject: str  # its identity id


@dataclass
class Case:
    """One proxy configuration and the requests it is measured with.

    `spec` is the gunicorn app spec; `calls` (when the case asks a service)
    reads that service's call count for the case's one tuple or token, and
    `ttl` is how long the case's cache keeps an answer (0: no cache).
    """

    name: str
    spec: Callable[[StandIns, argparse.Namespace], str]
    headers: Callable[[StandIns], dict[str, str]]
    calls: Callable[[StandIns], int] | None = None
    ttl: Callable[[argparse.Namespace], float] = lambda args: 0.0
    per_round: list[int] = field(default_factory=list)  # service calls in each measured round


def session_headers(stand_ins: StandIns) -> dict[str, str]:
    return {"X-Session-Token": stand_ins.token}


def rule_spec(
    label: str, authorizer: Callable[[StandIns, argparse.Namespace], dict[str, object]]
) -> Callable[[StandIns, argparse.Namespace], str]:
    """An access rule for `/hello`: `bearer_token`, `authorizer`, `id_token` (as the
    session case mints one), and an open rule for the start-up check."""

    def spec(stand_ins: StandIns, args: argparse.Namespace) -> str:
        config = stand_ins.workdir / f"{label}.toml"
        config.write_text(
            f'[proxy]\nupstream = "{stand_ins.upstream.url}"\n'
            f'[ory]\nsdk_url = "{stand_ins.kratos.url}"\n'
            "[authenticators.bearer_token]\nenabled = true\n"
            "[authorizers.ory_permissions]\nenabled = true\n"
            "[mutators.id_token]\nenabled = true\n"
            "[authenticators.anonymous]\nenabled = true\n[authorizers.allow]\nenabled = true\n"
            "[mutators.noop]\nenabled = true\n"
            # Open, for the start-up check (`Server.wait_ready` asks without credentials).
            f'[[rule]]\nid = "ready"\nmatch = {{ url = "http://<[^/]+>{READY_PATH}",'
            ' methods = ["GET"] }\n'
            'authenticators = [{ handler = "anonymous" }]\nauthorizer = { handler = "allow" }\n'
            'mutators = [{ handler = "noop" }]\n'
            "[[rule]]\n"
            'id = "hello"\n'
            'match = { url = "http://<[^/]+>/hello", methods = ["GET"] }\n'
            'authenticators = [{ handler = "bearer_token" }]\n'
            f"authorizer = {_toml(authorizer(stand_ins, args))}\n"
            'mutators = [{ handler = "id_token" }]\n'
        )
        return f'ory_wsgi:make_app("{config}")'

    return spec


def keto_check(
    ttl: Callable[[argparse.Namespace], float],
) -> Callable[[StandIns, argparse.Namespace], dict[str, object]]:
    """`ory_permissions` asking for `KETO_TUPLE` with the user as subject, cached `ttl`."""

    def authorizer(stand_ins: StandIns, args: argparse.Namespace) -> dict[str, object]:
        namespace, obj, relation = KETO_TUPLE
        config = {
            "url": stand_ins.keto.url,
            "namespace": namespace,
            "object": obj,
            "relation": relation,
            "subject_id": "{{ print .Subject }}",
            "cache": {"ttl": f"{ttl(args):g}s"},
        }
        return {"handler": "ory_permissions", "config": config}

    return authorizer


def _toml(value: object) -> str:
    """An inline TOML table of strings and tables (what a rule's config needs here)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + " }"
    return json.dumps(value)  # a TOML basic string is a JSON string


def keto_calls(stand_ins: StandIns) -> int:
    return stand_ins.keto.checks()


CASES = [
    Case(
        BASELINE,
        lambda stand_ins, args: ory_spec(stand_ins.upstream.url, stand_ins.kratos.url, True),
        session_headers,
    ),
    # What the rule costs before any service is asked: the same rule, authorizer `allow`.
    Case(
        "session rule, allow",
        rule_spec("allow", lambda stand_ins, args: {"handler": "allow"}),
        session_headers,
    ),
    Case(
        "keto check, cache on",
        rule_spec("keto-cached", keto_check(lambda args: float(args.ttl))),
        session_headers,
        keto_calls,
        lambda args: float(args.ttl),
    ),
    Case(
        "keto check, cache off",
        rule_spec("keto-uncached", keto_check(lambda args: 0.0)),
        session_headers,
        keto_calls,
    ),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per case")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per case (median)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn --workers of each proxy")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn --threads of each proxy")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk -t")
    parser.add_argument(
        "--ttl", type=float, default=2.0, help="the decision cache's TTL of the cache-on cases"
    )
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument(
        "--python-load", action="store_true", help="the Python load generator even with wrk"
    )
    parser.add_argument(
        "--upstream", choices=("asyncio", "gunicorn"), default="asyncio", help="as in run.py"
    )
    args = parser.parse_args(argv)
    args.memory = False  # start_upstream's question
    if args.rounds < 1 or args.duration <= 0 or args.ttl <= 0 or args.connections < 1:
        parser.error("--rounds, --duration, --ttl and --connections must be positive")
    return args


def run_services(args: argparse.Namespace, out: IO[str]) -> None:
    tool: LoadTool = (
        PythonLoad() if args.python_load else find_load_tool(args.wrk_threads, not args.no_install)
    )
    servers: list[Server] = []
    workdir = Path(tempfile.mkdtemp(prefix="ory-wsgi-bench-services-"))
    try:
        upstream = start_upstream(args, workdir, servers)
        kratos = Kratos(workdir)
        servers.append(kratos)
        keto = Keto(workdir)
        servers.append(keto)
        token = kratos.new_session()
        status, body = fetch(f"{kratos.url}/sessions/whoami", {"X-Session-Token": token})
        if status != 200:
            raise BenchError(f"the Kratos stand-in's whoami answered {status} {body[:200]!r}")
        subject = str(json.loads(body)["identity"]["id"])
        keto.allow(subject)
        stand_ins = StandIns(workdir, upstream, kratos, keto, token, subject)

        targets: list[tuple[Case, Target]] = []
        for case in CASES:
            server = Server.gunicorn(
                case.name, case.spec(stand_ins, args), gunicorn_args(args), workdir
            )
            servers.append(server)
            targets.append((case, Target(case.name, server, [upstream, kratos, keto])))
        for case, target in targets:
            target.server.wait_ready(args.workers, path=READY_PATH)
            target.headers = case.headers(stand_ins)
            status, body = fetch(target.server.url + PATH, target.headers)
            if (status, body) != (200, EXPECTED_BODY):
                raise BenchError(f"{case.name}: a request got {status} {body[:200]!r}")

        print_machine(out)
        print(
            f"load tool: {tool.label}; Ory: the Kratos stand-in; Keto: the Keto stand-in"
            f" (bench/keto.py); GET {PATH}, {args.connections} connections, {args.duration:g}s"
            f" x {args.rounds} rounds per case; gunicorn {' '.join(gunicorn_args(args))};"
            f" decision cache TTL {args.ttl:g}s",
            file=out,
            flush=True,
        )
        for _case, target in targets:
            tool.run(target.server.url + PATH, args.warmup, args.connections, target.headers)
        for round_index in range(args.rounds):
            order = targets if round_index % 2 == 0 else targets[::-1]
            for case, target in order:
                before = case.calls(stand_ins) if case.calls else 0
                result = target.measure(tool, args.duration, args.connections)
                if case.calls:
                    case.per_round.append(case.calls(stand_ins) - before)
                print(
                    f"  round {round_index + 1}: {case.name:<26}"
                    f" {result.requests_per_s:>7.0f} req/s",
                    file=out,
                    flush=True,
                )
        report(targets, args, out)
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def report(targets: list[tuple[Case, Target]], args: argparse.Namespace, out: IO[str]) -> None:
    baseline = next(target for case, target in targets if case.name == BASELINE)
    print(
        f"\n{'case':<26} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
        f" {'CPU us/req':>10} {'+behind':>8} {'vs session':>11}",
        file=out,
    )
    for case, target in targets:
        median = target.median()
        paired = [
            mine.requests_per_s / theirs.requests_per_s
            for mine, theirs in zip(target.results, baseline.results, strict=True)
        ]
        ratio = float(statistics.median(paired))
        print(
            f"{case.name:<26} {median.requests_per_s:>7.0f} {median.p50_ms:>7.2f}"
            f" {median.p99_ms:>7.2f} {median.errors:>6} {median.cpu_us:>10.0f}"
            f" {median.upstream_cpu_us:>8.0f} {ratio:>10.2f}x",
            file=out,
        )
    print(
        "CPU us/req: the proxy's processes; +behind: the upstream's, Ory's and Keto's, for the"
        " same requests. vs session: median of the per-round ratios to the baseline.\n",
        file=out,
    )
    for case, target in targets:
        wanted = TARGETS.get(case.name)
        if wanted is not None:
            paired = [
                mine.requests_per_s / theirs.requests_per_s
                for mine, theirs in zip(target.results, baseline.results, strict=True)
            ]
            ratio = float(statistics.median(paired))
            verdict = "meets" if ratio >= wanted else "misses"
            ours, theirs = target.median().cpu_us, baseline.median().cpu_us
            cpu = theirs / ours if ours else 0.0
            print(
                f"{case.name} / {BASELINE}: {ratio:.2f}x req/s (per round "
                + ", ".join(f"{r:.2f}x" for r in paired)
                + f"); {verdict} the >= {wanted:.2f}x target (within 15 %);"
                f" the baseline's CPU per request / this case's {cpu:.2f}x",
                file=out,
            )
    for case, target in targets:
        if not case.calls:
            continue
        ttl = case.ttl(args)
        requests = [round(r.requests_per_s * args.duration) for r in target.results]
        if ttl <= 0:
            print(
                f"{case.name}: service calls per round {case.per_round} for about"
                f" {requests} requests (no cache; concurrent requests for the tuple still share"
                " one call, single-flight)",
                file=out,
            )
            continue
        # A round of D seconds touches at most floor(D / TTL) + 1 TTL periods in each worker.
        periods = math.floor(args.duration / ttl) + 1
        allowed = args.workers * periods
        per_ttl = max(case.per_round) / allowed
        verdict = "meets" if max(case.per_round) <= allowed else "misses"
        print(
            f"{case.name}: service calls per round {case.per_round} for about {requests}"
            f" requests; one tuple, {args.workers} workers, TTL {ttl:g}s, {args.duration:g}s"
            f" rounds ({periods} TTL periods each): at most {allowed} allowed; {per_ttl:.2f}"
            f" calls per tuple per TTL per worker ({verdict} the at-most-one target)",
            file=out,
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded_main(lambda: run_services(args, sys.stdout), "services benchmark")


if __name__ == "__main__":
    sys.exit(main())
