"""make_app: read the settings once and stack the wrappers."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ory_wsgi.decisions import Decisions
from ory_wsgi.errors import ConfigError, StartupConfigError
from ory_wsgi.forwarder import Forwarder
from ory_wsgi.keys import KeySet
from ory_wsgi.logs import configure_logging
from ory_wsgi.ory.cache import SessionCache
from ory_wsgi.ory.client import OryClient, session_cookie_names
from ory_wsgi.ory.rewrite import OryRewriter
from ory_wsgi.paths import PathRules
from ory_wsgi.proxy_endpoints import JwksEndpoint, LogoutEndpoint
from ory_wsgi.readiness import READY_PATH, Readiness
from ory_wsgi.settings import Settings, load_settings
from ory_wsgi.tokens import TokenMinter
from ory_wsgi.wrappers.access_log import AccessLog
from ory_wsgi.wrappers.cors import Cors
from ory_wsgi.wrappers.namespace import Handler, ProxyNamespace
from ory_wsgi.wrappers.ory_route import OryForwarder, OryRoute
from ory_wsgi.wrappers.path_check import PathCheck
from ory_wsgi.wrappers.protect import Protect
from ory_wsgi.wrappers.session import SessionLookup
from ory_wsgi.wrappers.session_token import SessionToken
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
    except StartupConfigError:
        raise
    except ConfigError as exc:
        raise StartupConfigError(str(exc)) from None


def public_url(settings: Settings) -> str:
    return (settings.proxy.public_url or f"http://localhost:{settings.server.port}").rstrip("/")


def build_app(settings: Settings) -> WSGIApplication:
    """The whole stack for already-loaded settings, innermost layer first."""
    proxy = settings.proxy
    if not proxy.upstream:
        raise ConfigError(
            "[proxy] upstream is not set: name the application to protect, "
            'e.g. upstream = "http://127.0.0.1:3000" (or ORY_WSGI_PROXY_UPSTREAM)'
        )
    configure_logging(settings.log.format, settings.log.level)
    public = public_url(settings)
    app: WSGIApplication = Forwarder(
        proxy.upstream,
        public,
        rewrite_host=proxy.rewrite_host,
        trusted_proxies=proxy.trusted_proxies,
        max_body_size=proxy.max_body_size,
        connect_timeout=proxy.connect_timeout,
        read_timeout=proxy.read_timeout,
    )
    routes: dict[str, Handler] = {}
    ory_forwarder: OryForwarder | None = None
    around: Callable[[WSGIApplication], WSGIApplication] | None = None
    ory_url = settings.ory_url
    if ory_url:
        around, routes = _ory_layers(settings, public)
        app = around(app)
        rewriter = OryRewriter(
            ory_url,
            public,
            cookie_domain=settings.ory.cookie_domain,
            default_redirect_url=proxy.default_redirect_url,
        )
        ory_forwarder = OryForwarder(
            ory_url,
            public,
            rewriter,
            api_key=settings.ory.api_key,
            rate_limit_header=settings.ory.rate_limit_header,
            session_cookie=settings.ory.session_cookie,
            trusted_proxies=proxy.trusted_proxies,
            max_body_size=proxy.max_body_size,
            connect_timeout=proxy.connect_timeout,
            read_timeout=proxy.read_timeout,
        )
    elif settings.protect or settings.decisions.enabled:
        what = "[[protect]]" if settings.protect else "[decisions] enabled"
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
    app = ProxyNamespace(app, routes)
    if around is not None and settings.decisions.enabled:
        if not settings.protect:
            log.warning("[decisions] enabled without [[protect]] rules: every decision is 200")
        app = Decisions(app, around, proxy.trusted_proxies)
    return AccessLog(app)


def _ory_layers(
    settings: Settings, public: str
) -> tuple[Callable[[WSGIApplication], WSGIApplication], dict[str, Handler]]:
    """Session lookup, protection and session → JWT, to wrap around an app, and their endpoints.

    The forwarder and the decisions endpoint are wrapped in the same layers,
    which share one Ory client, session cache and minter.
    """
    jwt = settings.jwt
    routes: dict[str, Handler] = {}
    keys = minter = None
    if jwt.enabled:
        keys = KeySet.ensure(jwt.keys_file, settings.proxy.state_dir)
        minter = TokenMinter(keys, jwt.issuer or public, jwt.audience, jwt.ttl, jwt.claims)
        jwks = JwksEndpoint(keys)
        routes["/.ory/jwks.json"] = jwks
        routes["/.ory/proxy/jwks.json"] = jwks
    rules = PathRules(settings.protect, settings.public)
    client = OryClient(
        settings.ory_url,
        timeout=settings.ory.timeout,
        api_key=settings.ory.api_key,
        base_url_rewrite=public + "/.ory",
    )
    cache = SessionCache(
        settings.session_cache.ttl,
        settings.session_cache.negative_ttl,
        settings.session_cache.max_entries,
    )
    cookie_names = session_cookie_names(
        settings.ory_url, settings.ory.project, settings.ory.session_cookie
    )

    def around(app: WSGIApplication) -> WSGIApplication:
        app = SessionToken(app, minter, jwt.keep_client_authorization)
        if rules:
            app = Protect(app, public)
        app = SessionLookup(app, client, cache, cookie_names)
        if rules:
            app = PathCheck(app, rules)
        return app

    routes[READY_PATH] = Readiness(keys, client)
    routes["/.ory/proxy/logout"] = LogoutEndpoint(
        client, cache, cookie_names, settings.proxy.default_redirect_url or public + "/"
    )
    return around, routes
