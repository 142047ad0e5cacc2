"""The Ory layers shared by the proxy (`make_app`) and the embedded middleware."""

from __future__ import annotations

from collections.abc import Callable

from ory_wsgi.errors import ConfigError
from ory_wsgi.fleet.wiring import attach_fleet, key_set, memory_ttl, redis_health
from ory_wsgi.metrics import Metrics
from ory_wsgi.ory.cache import SessionCache
from ory_wsgi.ory.client import OryClient, session_cookie_names
from ory_wsgi.ory.rewrite import OryRewriter
from ory_wsgi.pipeline.decision import Pipeline
from ory_wsgi.pipeline.layer import Decide
from ory_wsgi.pipeline.registry import default_registry
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.shorthand import ShorthandIndex, shorthand_registry
from ory_wsgi.proxy_endpoints import JwksEndpoint, LogoutEndpoint
from ory_wsgi.readiness import READY_PATH, Readiness
from ory_wsgi.rules.model import AccessRule
from ory_wsgi.rules.watch import RuleSource
from ory_wsgi.settings import Settings
from ory_wsgi.upstream.router import IgnoredUpstreams, UpstreamRouter
from ory_wsgi.wrappers.namespace import Handler
from ory_wsgi.wrappers.ory_route import OryForwarder
from ory_wsgi.wsgi import WSGIApplication

Around = Callable[[WSGIApplication], WSGIApplication]


def ory_layers(
    settings: Settings,
    public: str,
    metrics: Metrics | None = None,
    upstreams: UpstreamRouter | None = None,
) -> tuple[Around, dict[str, Handler]]:
    """The decision pipeline as one layer to wrap around an app, and the endpoints.

    The forwarder, the decisions endpoint and the embedded app are wrapped in
    the same `Decide` layer around one `Pipeline`, which shares one Ory
    client, session cache and key set. `upstreams`: the proxy's router, which
    builds each rule's upstream at load; None (embedded) ignores rules' upstreams.
    """
    jwt = settings.jwt
    routes: dict[str, Handler] = {}
    keys = None
    if jwt.enabled:
        # The id_token mutators sign with these keys (one TokenMinter per rule's claims).
        keys = key_set(settings)
        jwks = JwksEndpoint(keys)
        routes["/.ory/jwks.json"] = jwks
        routes["/.ory/proxy/jwks.json"] = jwks
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

    services = Services(
        settings=settings,
        public_url=public,
        keys=keys,
        client=client,
        cache=cache,
        cookie_names=cookie_names,
        rewriter=OryRewriter(settings.ory_url, public) if settings.ory_url else None,
    )
    pipeline, shorthand, rules = build_pipeline(services, upstreams)

    def around(app: WSGIApplication) -> WSGIApplication:
        return Decide(
            app,
            pipeline,
            cookie_names=cookie_names,
            keep_client_authorization=jwt.keep_client_authorization,
            cache_control=settings.proxy.protected_cache_control,
            shorthand=shorthand,
        )

    routes[READY_PATH] = Readiness(keys, client, degraded=redis_health(fleet, keys), rules=rules)
    routes["/.ory/proxy/logout"] = LogoutEndpoint(
        client, cache, cookie_names, settings.proxy.default_redirect_url or public + "/", fleet
    )
    return around, routes


def build_pipeline(
    services: Services, upstreams: UpstreamRouter | None = None
) -> tuple[Pipeline, ShorthandIndex | None, RuleSource | None]:
    """Access rules when any are configured (with their source, which readiness
    watches), else `[[protect]]`/`[[public]]` as rules."""
    settings = services.settings
    status = settings.access_rules.no_match_status
    if settings.rule or settings.access_rules.repositories:
        if settings.protect or settings.public:
            # Which of the two would govern a path is not decided: refuse to guess.
            raise ConfigError(
                "[[protect]]/[[public]] cannot be combined with access rules ([[rule]],"
                " [access_rules] repositories): write the protected paths as rules"
            )
        registry = default_registry(services)
        check_upstream = (upstreams or IgnoredUpstreams()).validate

        def validate(rule: AccessRule) -> str:
            return registry.validate(rule) or check_upstream(rule)

        source = RuleSource(
            settings,
            validate=validate,
            on_swap=upstreams.retain if upstreams is not None else None,
        )
        return Pipeline(registry, source.current, no_match_status=status), None, source
    index = ShorthandIndex(settings)
    pipeline = Pipeline(shorthand_registry(services), lambda: index, trusted=True)
    return pipeline, index, None


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
