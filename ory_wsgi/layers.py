"""The Ory layers shared by the proxy (`make_app`) and the embedded middleware."""

from __future__ import annotations

from collections.abc import Callable

from ory_wsgi.fleet.wiring import attach_fleet, key_set, memory_ttl, redis_health
from ory_wsgi.metrics import Metrics
from ory_wsgi.ory.cache import SessionCache
from ory_wsgi.ory.client import OryClient, session_cookie_names
from ory_wsgi.ory.rewrite import OryRewriter
from ory_wsgi.paths import PathRules
from ory_wsgi.proxy_endpoints import JwksEndpoint, LogoutEndpoint
from ory_wsgi.readiness import READY_PATH, Readiness
from ory_wsgi.settings import Settings
from ory_wsgi.tokens import TokenMinter
from ory_wsgi.wrappers.namespace import Handler
from ory_wsgi.wrappers.ory_route import OryForwarder
from ory_wsgi.wrappers.path_check import PathCheck
from ory_wsgi.wrappers.protect import Protect
from ory_wsgi.wrappers.session import SessionLookup
from ory_wsgi.wrappers.session_token import SessionToken
from ory_wsgi.wsgi import WSGIApplication

Around = Callable[[WSGIApplication], WSGIApplication]


def ory_layers(
    settings: Settings, public: str, metrics: Metrics | None = None
) -> tuple[Around, dict[str, Handler]]:
    """Session lookup, protection and session → JWT, to wrap around an app, and their endpoints.

    The forwarder and the decisions endpoint are wrapped in the same layers,
    which share one Ory client, session cache and minter.
    """
    jwt = settings.jwt
    routes: dict[str, Handler] = {}
    keys = minter = None
    if jwt.enabled:
        keys = key_set(settings)
        minter = TokenMinter(
            keys,
            jwt.issuer or public,
            jwt.audience,
            jwt.ttl,
            jwt.claims,
            rewriter=OryRewriter(settings.ory_url, public) if settings.ory_url else None,
        )
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
    cache = (metrics.session_cache if metrics else SessionCache)(
        memory_ttl(settings),
        settings.session_cache.negative_ttl,
        settings.session_cache.max_entries,
    )
    fleet = attach_fleet(settings, cache)
    cookie_names = session_cookie_names(
        settings.ory_url, settings.ory.project, settings.ory.session_cookie
    )

    def around(app: WSGIApplication) -> WSGIApplication:
        app = SessionToken(app, minter, jwt.keep_client_authorization)
        if rules:
            app = Protect(app, public, settings.proxy.protected_cache_control)
        app = SessionLookup(app, client, cache, cookie_names)
        if rules:
            app = PathCheck(app, rules)
        return app

    routes[READY_PATH] = Readiness(keys, client, degraded=redis_health(fleet, keys))
    routes["/.ory/proxy/logout"] = LogoutEndpoint(
        client, cache, cookie_names, settings.proxy.default_redirect_url or public + "/", fleet
    )
    return around, routes


def ory_forwarder_for(settings: Settings, public: str) -> OryForwarder:
    """The forwarder for `/.ory/*`, with Ory's answers rewritten onto `public`."""
    proxy = settings.proxy
    rewriter = OryRewriter(
        settings.ory_url,
        public,
        cookie_domain=settings.ory.cookie_domain,
        default_redirect_url=proxy.default_redirect_url,
    )
    return OryForwarder(
        settings.ory_url,
        public,
        rewriter,
        api_key=settings.ory.api_key,
        rate_limit_header=settings.ory.rate_limit_header,
        session_cookie=settings.ory.session_cookie,
        trusted_proxies=proxy.trusted_proxies,
        max_body_size=proxy.max_body_size,
        connect_timeout=proxy.connect_timeout,
        read_timeout=proxy.read_timeout,
        body_timeout=proxy.body_timeout,
        body_min_rate=proxy.body_min_rate,
    )
