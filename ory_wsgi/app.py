"""make_app: read the settings once and stack the wrappers."""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

from ory_wsgi.decisions import Decisions
from ory_wsgi.errors import ConfigError
from ory_wsgi.layers import Around, ory_forwarder_for, ory_layers
from ory_wsgi.logs import configure_logging
from ory_wsgi.metrics import Metrics
from ory_wsgi.readiness import READY_PATH, Readiness
from ory_wsgi.settings import Settings, load_settings
from ory_wsgi.startup_check import startup_failure
from ory_wsgi.upstream.router import UpstreamRouter
from ory_wsgi.upstream.websocket import websocket_origins
from ory_wsgi.wrappers.access_log import AccessLog
from ory_wsgi.wrappers.cors import Cors
from ory_wsgi.wrappers.namespace import Handler, ProxyNamespace
from ory_wsgi.wrappers.ory_route import OryForwarder, OryRoute
from ory_wsgi.wsgi import WSGIApplication

log = logging.getLogger("ory_wsgi")


def make_app(config: str | os.PathLike[str] | None = None, **overrides: Any) -> WSGIApplication:
    """The proxy as a WSGI app: `gunicorn 'ory_wsgi:make_app("ory.toml")'`.

    `config` is a TOML file (or None: environment and defaults only);
    `overrides` use the TOML key names (`upstream="http://127.0.0.1:3000"`,
    or a section: `jwt={"ttl": "30s"}`) and win over file and environment.
    Raises `ConfigError` with a one-line message for any bad setting.
    """
    try:
        return build_app(load_settings(config, overrides=overrides))
    except ConfigError as exc:
        startup_failure(exc)


def public_url(settings: Settings) -> str:
    return (settings.proxy.public_url or f"http://localhost:{settings.server.port}").rstrip("/")


def build_app(settings: Settings, metrics: Metrics | None = None) -> WSGIApplication:
    """The whole stack for already-loaded settings, innermost layer first.

    `metrics`: Prometheus metrics; by default as `[metrics]` (or PROMETHEUS_MULTIPROC_DIR) says.
    """
    proxy = settings.proxy
    metrics = metrics or Metrics.from_settings(settings.metrics)
    if not proxy.upstream:
        raise ConfigError(
            "[proxy] upstream is not set: name the application to protect, "
            'e.g. upstream = "http://127.0.0.1:3000" (or ORY_WSGI_PROXY_UPSTREAM)'
        )
    configure_logging(settings.log.format, settings.log.level)
    public = public_url(settings)
    # One transport, pool and forwarder per upstream (the app's requests and its
    # WebSockets): `[proxy] upstream` now, each rule's own as its rule loads.
    upstreams = UpstreamRouter(
        settings, public, websocket_origins(settings.cors.allowed_origins, public)
    )
    app: WSGIApplication = upstreams.default
    routes: dict[str, Handler] = {}
    ory_forwarder: OryForwarder | None = None
    around: Around | None = None
    ory_url = settings.ory_url
    if ory_url:
        around, routes = ory_layers(settings, public, metrics, upstreams)
        app = around(upstreams)
        ory_forwarder = ory_forwarder_for(settings, public)
    elif (
        settings.protect
        or settings.decisions.enabled
        or settings.rule
        or settings.access_rules.repositories
    ):
        what = (
            "[[protect]]"
            if settings.protect
            else "[decisions] enabled"
            if settings.decisions.enabled
            else "access rules"
        )
        raise ConfigError(
            f"{what} needs Ory to check sessions: set [ory] sdk_url or project "
            "(ORY_SDK_URL, ORY_PROJECT)"
        )
    else:
        log.warning("no Ory URL set ([ory] sdk_url or project): every request is anonymous")
    app = OryRoute(app, ory_forwarder, urlsplit(ory_url).path)
    app = Cors(
        app,
        settings.cors.allowed_origins,
        public,
        settings.cors.additional_headers,
        settings.cors.max_age,
    )
    routes.setdefault(READY_PATH, Readiness())
    if metrics is not None:
        routes[settings.metrics.path] = metrics.endpoint
    app = ProxyNamespace(app, routes)
    if around is not None and settings.decisions.enabled:
        if not (settings.protect or settings.rule or settings.access_rules.repositories):
            log.warning("[decisions] enabled without [[protect]] rules: every decision is 200")
        app = Decisions(app, around, proxy.trusted_proxies)
    if metrics is not None:
        app = metrics.wrap(app)
    return AccessLog(app)
