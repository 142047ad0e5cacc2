"""Per-rule upstreams: the proxy's WSGI app that forwards an allowed request where its rule says.

    router = UpstreamRouter(settings, public_url, origins)   # `[proxy] upstream` built now
    source = RuleSource(settings, validate=router.validate, on_swap=router.retain)
    app = Decide(router, pipeline, ...)

Each distinct upstream -- its origin (`scheme://host:port` or `unix:PATH`)
and TLS options -- gets one `Transport`, one `Forwarder` (so one
`UpstreamPool` of kept-alive connections) and its `WebSocketSplice`, built
when a rule naming it is loaded (`validate`, the loader's hook: at startup,
and for a reloaded rule file before its set is swapped in), never per
request. A rule without `upstream.url` goes to `[proxy] upstream`, which
is built here at startup. An upstream that cannot be used (a TLS file that
is missing or not PEM, a TLS key on an http URL, a query in the URL...)
makes its rule invalid: it matches and fails closed, and the load logs one
line naming the rule, like any other rule error.

Per request (after `Decide` allowed it) the rule's `upstream` is read from
`environ["ory.state"]`, its route is one dict lookup, and the forwarded
target is rewritten once when the rule asks (SPEC §16, Oathkeeper's
`upstream`):
- `strip_path`: that literal prefix (compared as `/` + it without slashes
  around) is removed from the path the rule was judged on (the normalised
  path, still percent-encoded) when the path starts with it at a segment
  boundary; the rest of the path and the query are kept.
- A path in `upstream.url` is put in front of the (stripped) path, as
  Oathkeeper joins them: `http://app/base` + `/x?q` -> `/base/x?q`.
- Host: for a rule with `upstream.url`, `preserve_host` alone decides (true:
  the client's Host; false, the default: the URL's host, and the client's in
  X-Forwarded-Host). A rule without `upstream.url` follows `[proxy]
  rewrite_host`, unless it sets `preserve_host = true`.
X-Forwarded-*, identity headers, body limits and timeouts are the same for
every upstream (the `[proxy]` settings).

Reloads: `retain(rule_set)` runs after each swap and drops the routes that
neither the new set nor the one before it uses (a request decided on the
previous set may still be on its way here), closing their idle connections.

The embedded middleware has no upstream (the app is it): `IgnoredUpstreams`
is its hook, logging one warning per rule that names one. The decisions
endpoint forwards nothing and reads no upstream.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ory_wsgi.answers import error_answer
from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.state import STATE_KEY, RequestState
from ory_wsgi.rules.model import AccessRule, RuleSet, Upstream
from ory_wsgi.settings import Settings
from ory_wsgi.upstream.forwarder import Forwarder
from ory_wsgi.upstream.transport import (
    TLS_KEYS,
    TLSOptions,
    Transport,
    UpstreamTarget,
    parse_upstream,
    proxy_setting,
)
from ory_wsgi.upstream.websocket import WebSocketSplice
from ory_wsgi.wrappers.cors import OriginPolicy
from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("ory_wsgi.upstream")

# What a rule without an `upstream` table has: `[proxy] upstream`, as configured.
DEFAULT = Upstream()
# Visible ASCII but `?` and `#`: a strip_path is a path prefix, compared with the encoded path.
_PATH_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"?", "#"}


def _rule_setting(key: str) -> str:
    return f"upstream.{key}"


@dataclass(frozen=True, slots=True)
class Backend:
    """One upstream's transport and pool, with its two Host policies (client's, upstream's)."""

    target: UpstreamTarget
    forwarder: Forwarder
    apps: tuple[WSGIApplication, WSGIApplication]  # index: rewrite_host (False, True)

    def close(self) -> None:
        self.forwarder.pool.close()


@dataclass(frozen=True, slots=True)
class Route:
    """Where one rule's `upstream` table sends a request, and how its target changes."""

    backend: Backend
    app: WSGIApplication
    strip: str = ""  # "/api": a path prefix to remove; "" for none
    prefix: str = ""  # "/base": the upstream URL's path, put in front; "" for none

    def target(self, target: str) -> str:
        path, mark, query = target.partition("?")
        strip = self.strip
        if strip and path.startswith(strip) and path[len(strip) : len(strip) + 1] in ("", "/"):
            path = path[len(strip) :]
        if self.prefix:
            path = self.prefix + path
        return (path or "/") + mark + query


class UpstreamRouter:
    """Forward each allowed request to its rule's upstream; routes built at rule load.

    Thread-safe: request threads read `_routes`, which is only ever replaced
    whole (under `_lock`) by the loading thread.
    """

    def __init__(
        self, settings: Settings, public_url: str, origins: OriginPolicy | None = None
    ) -> None:
        proxy = settings.proxy
        self.settings = settings
        self.public_url = public_url
        self.origins = origins
        self._lock = threading.Lock()
        self._backends: dict[UpstreamTarget, Backend] = {}
        default = self._backend(parse_upstream(proxy.upstream, proxy.upstream_tls), None)
        self.default = default.apps[proxy.rewrite_host]
        self.default_backend = default
        self._routes: dict[Upstream, Route] = {DEFAULT: Route(default, self.default)}
        self._previous: frozenset[Upstream] = frozenset()

    @property
    def backends(self) -> int:
        """How many distinct upstreams (pools) exist now."""
        return len(self._backends)

    def backend_for(self, upstream: Upstream) -> Backend | None:
        """The backend a rule's `upstream` table routes to (for tests and diagnostics)."""
        route = self._routes.get(upstream)
        return route.backend if route is not None else None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        state: RequestState | None = environ.get(STATE_KEY)
        upstream = state.rule_upstream if state is not None else None
        if state is None or upstream is None:
            return self.default(environ, start_response)
        route = self._routes.get(upstream)
        if route is None:
            # Only when two reloads passed between this request's decision and now.
            log.error(
                "upstream_unavailable: rule %r: its upstream %r is no longer loaded",
                state.rule_id,
                upstream.url,
            )
            environ["ory.error"] = "upstream_unavailable"
            return error_answer(environ, start_response, 502, "This rule's upstream is not served.")
        if route.strip or route.prefix:
            target = environ.get("ory.target")
            if target:
                environ["ory.target"] = route.target(target)
        return route.app(environ, start_response)

    def validate(self, rule: AccessRule) -> str:
        """The loader's hook: build the rule's route now, or say why its upstream cannot be used."""
        upstream = rule.upstream
        if upstream in self._routes:
            return ""
        try:
            route = self._route(upstream)
        except (ConfigError, ValueError) as exc:
            return str(exc)
        with self._lock:
            self._routes = {**self._routes, upstream: route}
        return ""

    def retain(self, rule_set: RuleSet) -> None:
        """After a swap: keep the routes of this set and the one before it, drop the rest."""
        used = frozenset(rule.upstream for rule in rule_set.rules if not rule.invalid)
        with self._lock:
            keep = used | self._previous | {DEFAULT}
            self._previous = used
            routes = {key: route for key, route in self._routes.items() if key in keep}
            live = {route.backend.target for route in routes.values()}
            dropped = [b for t, b in self._backends.items() if t not in live]
            self._backends = {t: b for t, b in self._backends.items() if t in live}
            self._routes = routes
        for backend in dropped:
            log.info("upstream %s: no rule uses it any more", backend.target.describe())
            backend.close()

    def _route(self, upstream: Upstream) -> Route:
        tls = TLSOptions(
            upstream.ca_file, upstream.client_cert, upstream.client_key, upstream.server_name
        )
        strip = _strip(upstream.strip_path)
        if not upstream.url:
            if tls:
                first = next(key for key in TLS_KEYS if getattr(tls, key))
                raise ConfigError(f"upstream.{first}: set upstream.url too (the https upstream)")
            default = self.default_backend
            app = default.apps[False] if upstream.preserve_host else self.default
            return Route(default, app, strip)
        parts = urlsplit(upstream.url)
        if parts.query or parts.fragment or "?" in upstream.url or "#" in upstream.url:
            raise ConfigError(
                f"upstream.url: no query or fragment, the request's own is sent: {upstream.url!r}"
            )
        if parts.username is not None or parts.password is not None:
            raise ConfigError(f"upstream.url: no user or password in it: {upstream.url!r}")
        prefix = parts.path.rstrip("/")
        if prefix and not set(prefix) <= _PATH_CHARS:
            raise ConfigError(f"upstream.url: not a plain path: {upstream.url!r}")
        target = parse_upstream(f"{parts.scheme}://{parts.netloc}", tls)
        with self._lock:
            backend = self._backends.get(target)
        if backend is None:
            backend = self._backend(target, _rule_setting)
        return Route(backend, backend.apps[not upstream.preserve_host], strip, prefix)

    def _backend(self, target: UpstreamTarget, setting: Callable[[str], str] | None) -> Backend:
        """A new backend; `setting` names a TLS key in errors (None: `[proxy] upstream_*`)."""
        proxy = self.settings.proxy
        transport = Transport(
            target,
            connect_timeout=proxy.connect_timeout,
            read_timeout=proxy.read_timeout,
            setting=setting or proxy_setting,
        )
        forwarder = Forwarder(
            transport,
            self.public_url,
            trusted_proxies=proxy.trusted_proxies,
            max_body_size=proxy.max_body_size,
            body_timeout=proxy.body_timeout,
            body_min_rate=proxy.body_min_rate,
        )
        rewriting = forwarder.with_rewrite_host(True)
        backend = Backend(
            target,
            forwarder,
            (
                WebSocketSplice(forwarder, origins=self.origins),
                WebSocketSplice(rewriting, origins=self.origins),
            ),
        )
        with self._lock:
            # Two loads never race (one loading thread), but keep the first if they did.
            backend = self._backends.setdefault(target, backend)
        return backend


def _strip(strip_path: str) -> str:
    """`/api` for "api", "/api/" or "/api"; "" for nothing to strip."""
    inner = strip_path.strip("/")
    if not inner:
        return ""
    if not set(inner) <= _PATH_CHARS:
        raise ConfigError(
            f"upstream.strip_path: a path prefix as it is sent (percent-encoded, no ? or #): "
            f"{strip_path!r}"
        )
    return "/" + inner


class IgnoredUpstreams:
    """The embedded middleware's hook: the app is the upstream, so a rule's is ignored.

    One warning per rule (by id and upstream) that names an upstream, so a
    rule file shared with the proxy loads unchanged.
    """

    def __init__(self) -> None:
        self._warned: set[tuple[str, Upstream]] = set()

    def validate(self, rule: AccessRule) -> str:
        upstream = rule.upstream
        if upstream != DEFAULT and (rule.id, upstream) not in self._warned:
            self._warned.add((rule.id, upstream))
            log.warning(
                "%s: upstream ignored: embedded, the application itself serves the request",
                rule.where,
            )
        return ""
