"""make_app: read the settings once and stack the wrappers."""

from __future__ import annotations

import os
from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.forwarder import Forwarder
from ory_wsgi.logs import configure_logging
from ory_wsgi.settings import Settings, load_settings
from ory_wsgi.wrappers.access_log import AccessLog
from ory_wsgi.wrappers.namespace import ProxyNamespace
from ory_wsgi.wsgi import WSGIApplication


def make_app(config: str | os.PathLike[str] | None = None, **overrides: Any) -> WSGIApplication:
    """The proxy as a WSGI app: `gunicorn 'ory_wsgi:make_app("ory.toml")'`.

    `config` is a TOML file (or None: environment and defaults only);
    `overrides` use the TOML key names (`upstream="http://127.0.0.1:3000"`,
    or a section: `jwt={"ttl": "30s"}`) and win over file and environment.
    Raises `ConfigError` with a one-line message for any bad setting.
    """
    settings = load_settings(config, overrides=overrides)
    return build_app(settings)


def public_url(settings: Settings) -> str:
    return (settings.proxy.public_url or f"http://localhost:{settings.server.port}").rstrip("/")


def build_app(settings: Settings) -> WSGIApplication:
    """The whole stack for already-loaded settings."""
    proxy = settings.proxy
    if not proxy.upstream:
        raise ConfigError(
            "[proxy] upstream is not set: name the application to protect, "
            'e.g. upstream = "http://127.0.0.1:3000" (or ORY_WSGI_PROXY_UPSTREAM)'
        )
    if settings.protect:
        raise ConfigError("[[protect]]: path protection is not available in this version yet")
    configure_logging(settings.log.format, settings.log.level)
    app: WSGIApplication = Forwarder(
        proxy.upstream,
        public_url(settings),
        rewrite_host=proxy.rewrite_host,
        trusted_proxies=proxy.trusted_proxies,
        connect_timeout=proxy.connect_timeout,
        read_timeout=proxy.read_timeout,
        max_body_size=proxy.max_body_size,
    )
    app = ProxyNamespace(app)
    return AccessLog(app)
