"""Prometheus metrics, optional (`pip install ory_wsgi[metrics]`): requests, whoami, session cache.

    metrics = Metrics.from_settings(settings.metrics)   # None when switched off
    cache = metrics.session_cache(ttl, negative_ttl, max_entries)
    routes[settings.metrics.path] = metrics.endpoint   # METRICS_PATH by default
    app = AccessLog(metrics.wrap(app))

Switched on by `[metrics] enabled = true`, or by `PROMETHEUS_MULTIPROC_DIR` alone
(the gunicorn way). That variable (an empty directory, set before the master starts)
puts prometheus_client in multiprocess mode: every worker writes its own files there
and a scrape of any worker sums them all. Without it, metrics count for this process
(this worker) only.

Paths are collapsed to a few `route` values, so that no client can make the
label set grow: `proxy` (`/.ory/proxy/*`, JWKS), `ory` (Ory-bound), the
`[[protect]]`/`[[public]]` rule that governed the request (`protect /members`),
or `app`. The cache hit ratio is
`rate(ory_wsgi_session_cache_lookups_total{result="hit"}[5m])
/ rate(ory_wsgi_session_cache_lookups_total[5m])`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ory_wsgi.answers import error_answer
from ory_wsgi.errors import ConfigError
from ory_wsgi.headers import TrustedProxies
from ory_wsgi.ory.cache import SessionCache
from ory_wsgi.ory.client import Credentials, Lookup
from ory_wsgi.settings import MetricsSettings
from ory_wsgi.wrappers.access_log import status_sent, write_failed
from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram
    from prometheus_client.registry import CollectorRegistry

METRICS_PATH = "/.ory/proxy/metrics"
LOOPBACK = ("127.0.0.0/8", "::1/128")
# Seconds; a proxy hop is milliseconds, an upstream or Ory call up to the timeouts.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
WHOAMI_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0)


class Metrics:
    """The proxy's metrics, for one worker; build it once, in `make_app`.

    `scrapers` are the networks (CIDRs) allowed to read `METRICS_PATH`; for
    anyone else it does not exist (404). Loopback only by default.
    """

    def __init__(self, *, scrapers: Sequence[str] = LOOPBACK) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram
            from prometheus_client.multiprocess import MultiProcessCollector
        except ImportError:
            raise ConfigError(
                "metrics need prometheus_client: pip install 'ory_wsgi[metrics]'"
            ) from None
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        registry: CollectorRegistry | None
        if directory:
            if not os.path.isdir(directory):
                raise ConfigError(
                    f"PROMETHEUS_MULTIPROC_DIR={directory}: not a directory (create it empty "
                    "before gunicorn starts)"
                )
            # Values go to files in the directory; a scrape reads every worker's.
            registry = None
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, directory)  # type: ignore[no-untyped-call]
        else:
            registry = self.registry = CollectorRegistry()
        self.multiprocess = bool(directory)
        self.requests: Counter = Counter(
            "ory_wsgi_requests",
            "Requests answered, by route (collapsed path), decision and status.",
            ["route", "decision", "status"],
            registry=registry,
        )
        self.request_seconds: Histogram = Histogram(
            "ory_wsgi_request_duration_seconds",
            "Time from the request to the end of its response body, by route.",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.whoami_seconds: Histogram = Histogram(
            "ory_wsgi_whoami_duration_seconds",
            "Time of Ory's whoami call (cache misses only), by outcome.",
            ["outcome"],
            buckets=WHOAMI_BUCKETS,
            registry=registry,
        )
        lookups = Counter(
            "ory_wsgi_session_cache_lookups",
            "Session lookups of requests with credentials: answered by the cache or by Ory.",
            ["result"],
            registry=registry,
        )
        self.cache_hits = lookups.labels("hit")
        self.cache_misses = lookups.labels("miss")
        self.scrapers = TrustedProxies(scrapers)

    @classmethod
    def from_environment(cls) -> Metrics | None:
        """Metrics when `PROMETHEUS_MULTIPROC_DIR` is set (the gunicorn way), else None."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return None
        return cls()

    @classmethod
    def from_settings(cls, settings: MetricsSettings) -> Metrics | None:
        """Metrics when `[metrics] enabled` or `PROMETHEUS_MULTIPROC_DIR` is set, else None."""
        return cls() if settings.enabled else cls.from_environment()

    def wrap(self, app: WSGIApplication) -> WSGIApplication:
        """Count and time every request; goes right inside the access log."""
        return MeasuredApp(app, self)

    def session_cache(
        self, ttl: float = 10.0, negative_ttl: float = 2.0, max_entries: int = 10000
    ) -> SessionCache:
        """A `SessionCache` that counts hits and misses and times the whoami calls."""
        return MeteredSessionCache(self, ttl, negative_ttl, max_entries)

    def endpoint(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """`METRICS_PATH`: the text exposition, to scrapers only."""
        if environ.get("REMOTE_ADDR", "") not in self.scrapers:
            return error_answer(environ, start_response, 404, "No such proxy endpoint.")
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self.registry)
        start_response(
            "200 OK",
            [
                ("Content-Type", CONTENT_TYPE_LATEST),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]


def route_of(environ: WSGIEnvironment) -> str:
    """The request's path collapsed to a bounded label: proxy, ory, its rule, or app."""
    path: str = environ.get("PATH_INFO", "")
    if path.startswith("/.ory/proxy/") or path == "/.ory/jwks.json":
        return "proxy"
    if environ.get("ory.decision") == "ory":
        return "ory"
    rule = environ.get("ory.rule")
    if rule is not None:
        matcher = rule.rule
        kind = "protect" if rule.protect else "public"
        return f"{kind} {matcher.prefix or matcher.glob or matcher.regex}"
    return "app"


class MeasuredApp:
    """Counts each request by route, decision and status, and times it, when its body ends.

    The status is the one the client got, by the access log's rule: 499 only
    when the client went away (a write to it failed, or its request body
    stopped short); a body the server stopped sending without an error keeps
    its status; one that broke off on our side counts with the failure's.
    """

    def __init__(self, app: WSGIApplication, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        measure = _Measure(self.metrics, environ)

        def measured_start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            measure.status = int(status[:3])
            return start_response(status, headers, *exc)

        try:
            body = self.app(environ, measured_start_response)
        except Exception:
            measure.done(500)
            raise
        return MeasuredBody(body, measure)


class _Measure:
    __slots__ = ("environ", "metrics", "started", "status")

    def __init__(self, metrics: Metrics, environ: WSGIEnvironment) -> None:
        self.metrics = metrics
        self.environ = environ
        self.started = time.perf_counter()
        self.status = 0

    def done(self, status: int) -> None:
        environ = self.environ
        route = route_of(environ)
        decision = environ.get("ory.decision") or "none"
        metrics = self.metrics
        metrics.requests.labels(route, decision, str(status)).inc()
        metrics.request_seconds.labels(route).observe(time.perf_counter() - self.started)


class MeasuredBody:
    def __init__(self, body: Iterable[bytes], measure: _Measure) -> None:
        self.body = body
        self.measure = measure
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.body
        except Exception as exc:
            failed = getattr(exc, "status", None)
            self.measure.status = failed if isinstance(failed, int) else 500
            self.finished = True
            raise
        self.finished = True

    def close(self) -> None:
        measure = self.measure
        failed = write_failed(self.finished)
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            measure.done(status_sent(measure.environ, measure.status, failed))


class MeteredSessionCache(SessionCache):
    """The session cache, counting hits and misses and timing the whoami call of each miss.

    A caller that waited for another's call under way (single-flight) counts
    as a hit: it cost Ory nothing.
    """

    def __init__(self, metrics: Metrics, ttl: float, negative_ttl: float, max_entries: int) -> None:
        super().__init__(ttl, negative_ttl, max_entries)
        self.metrics = metrics

    def get(self, credentials: Credentials, fetch: Callable[[], Lookup]) -> Lookup:
        asked = False

        def timed_fetch() -> Lookup:
            nonlocal asked
            asked = True
            started = time.perf_counter()
            lookup = fetch()
            elapsed = time.perf_counter() - started
            self.metrics.whoami_seconds.labels(lookup.outcome).observe(elapsed)
            return lookup

        lookup = super().get(credentials, timed_fetch)
        (self.metrics.cache_misses if asked else self.metrics.cache_hits).inc()
        return lookup
