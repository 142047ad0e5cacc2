"""`jwt`: a JSON Web Token from another issuer, verified against its published keys (Oathkeeper).

    [authenticators.jwt]
    enabled = true
    config = { jwks_urls = ["https://issuer.example/.well-known/jwks.json"],
               trusted_issuers = ["https://issuer.example/"], target_audience = ["api"],
               required_scope = ["orders.read"], scope_strategy = "exact" }

Responsible when the token (`token_from`, default `Authorization: Bearer`) is a
JWS compact serialization (three base64url parts); any other token is left to
the next authenticator (`bearer_token`, `oauth2_introspection`), as in
Oathkeeper. A longer token than 16 KiB is refused before it is parsed. The
token is verified with joserfc:
- `alg` must be in `allowed_algorithms` (default the asymmetric ones: RS256/384/512,
  PS256/384/512, ES256/384/512, EdDSA, Ed25519). `none` is never accepted (listing it is
  a load error); HS256/384/512 only when listed, and only with an `oct` key of
  the key set: joserfc checks the key type against the algorithm, so a public
  key is never used as an HMAC secret.
- `kid` must name a key of this rule's `jwks_urls` (keys loaded for other rules
  are never looked at); `jku`, `x5u`, `jwk` and `x5c` headers are ignored, never
  fetched; a `crit` (or RFC 7797 `b64`) header is refused.
- `exp` is required, `exp`/`nbf`/`iat` are checked with `leeway` (default 10s),
  `sub` must be a non-empty string, `iss` one of `trusted_issuers` when given,
  and `aud` (a string or a list) must hold every `target_audience` entry.
- `required_scope`: every scope must be granted by `scp`, `scope` or `scopes`
  (a list or a space-separated string) under `scope_strategy` (exact,
  hierarchic, wildcard; required with `required_scope`).
Subject: `sub`; extra: the claims, the granted scopes as a list in `scp` (as
Oathkeeper). Answers: 401 (`WWW-Authenticate: Bearer error="invalid_token"`)
for a token that fails any check, 403 (`insufficient_scope`) when it lacks a
scope, 503 with `Retry-After` when no key set could be loaded yet (closed);
each refusal logs one line with the reason, never the token.

Keys (`ory_wsgi.pipeline.authenticators.jwks`): fetched once per worker and URL,
again every `jwks_ttl` (default 30s), at once for an unknown `kid` but at most
once per `jwks_min_refresh_interval` (default 5s); stale keys are served while a
fetch fails; `jwks_max_wait` (default 1s) bounds each fetch's connect and read.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from joserfc import jws
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import Key
from joserfc.jwt import ClaimsOption, JWTClaimsRegistry

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.authenticators.jwks import (
    JwksSource,
    JwksSources,
    KeysUnavailable,
    check_url,
)
from ory_wsgi.pipeline.errors import DecisionError, NotResponsible
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import known_keys, string_list
from ory_wsgi.pipeline.scope import (
    ScopeCheck,
    granted_scopes,
    missing_scope,
    scope_strategy,
)
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.pipeline.token_from import TokenSource
from ory_wsgi.settings import parse_duration

log = logging.getLogger("ory_wsgi.pipeline")

KEYS = (
    "jwks_urls",
    "trusted_issuers",
    "target_audience",
    "allowed_algorithms",
    "required_scope",
    "scope_strategy",
    "token_from",
    "jwks_ttl",
    "jwks_max_wait",
    "jwks_min_refresh_interval",
    "leeway",
)
ASYMMETRIC = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    # RFC 9864's name for EdDSA over Ed25519, which newer issuers write.
    "Ed25519",
)
KNOWN_ALGORITHMS = frozenset(jws.JWSRegistry.algorithms) - {"none"}
SCOPE_CLAIMS = ("scp", "scope", "scopes")
MAX_TOKEN_LENGTH = 16 * 1024
# Three base64url parts: the header and (for a JWT) the payload are never empty.
JWS_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
DEFAULT_TTL = 30.0
DEFAULT_MAX_WAIT = 1.0
DEFAULT_MIN_REFRESH = 5.0
DEFAULT_LEEWAY = 10.0


@dataclass(frozen=True, slots=True)
class JwtConfig:
    where: str
    sources: tuple[JwksSource, ...]
    algorithms: frozenset[str]
    registry: jws.JWSRegistry
    claims: JWTClaimsRegistry
    audience: tuple[str, ...]
    scopes: tuple[str, ...]
    scope_check: ScopeCheck
    token_from: TokenSource


class Jwt:
    name = "jwt"

    def __init__(self, services: Services) -> None:
        del services
        # Per worker: every rule naming a URL (with the same timings) shares its keys.
        self.sources = JwksSources()

    def prepare(self, config: Config, where: str) -> JwtConfig:
        known_keys(config, KEYS, where)
        urls = _strings(config, "jwks_urls", where)
        if not urls:
            raise ConfigError(f"{where}: jwks_urls must list at least one JWKS URL")
        ttl = parse_duration(config.get("jwks_ttl", DEFAULT_TTL), f"{where} jwks_ttl")
        max_wait = parse_duration(
            config.get("jwks_max_wait", DEFAULT_MAX_WAIT), f"{where} jwks_max_wait"
        )
        min_refresh = parse_duration(
            config.get("jwks_min_refresh_interval", DEFAULT_MIN_REFRESH),
            f"{where} jwks_min_refresh_interval",
        )
        if max_wait <= 0:
            raise ConfigError(f"{where}: jwks_max_wait must be more than 0")
        leeway = parse_duration(config.get("leeway", DEFAULT_LEEWAY), f"{where} leeway")
        sources = tuple(
            self.sources.get(
                check_url(url, where), ttl=ttl, max_wait=max_wait, min_refresh=min_refresh
            )
            for url in urls
        )
        algorithms = _algorithms(config.get("allowed_algorithms"), where)
        scopes = _strings(config, "required_scope", where)
        strategy = config.get("scope_strategy")
        if scopes and (strategy is None or strategy == "none"):
            raise ConfigError(
                f"{where}: required_scope needs a scope_strategy (exact, hierarchic, wildcard)"
            )
        issuers = _strings(config, "trusted_issuers", where)
        required: ClaimsOption = {"essential": True}
        claims = (
            JWTClaimsRegistry(
                leeway=int(leeway),
                exp=required,
                sub=required,
                iss={"essential": True, "values": list(issuers)},
            )
            if issuers
            else JWTClaimsRegistry(leeway=int(leeway), exp=required, sub=required)
        )
        # Unknown header members are allowed (issuers add their own); `crit` is refused below.
        registry = jws.JWSRegistry(algorithms=sorted(algorithms), strict_check_header=False)
        return JwtConfig(
            where=where,
            sources=sources,
            algorithms=algorithms,
            registry=registry,
            claims=claims,
            audience=_strings(config, "target_audience", where),
            scopes=scopes,
            scope_check=scope_strategy(strategy, where),
            token_from=TokenSource.parse(config.get("token_from"), where),
        )

    def authenticate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        config: JwtConfig = prepared
        token = config.token_from.extract(request)
        if token is None:
            raise NotResponsible
        if len(token) > MAX_TOKEN_LENGTH:
            if token.count(".") != 2:
                raise NotResponsible
            _refuse(config, f"the token is longer than {MAX_TOKEN_LENGTH} bytes")
        if not JWS_SHAPE.fullmatch(token):
            raise NotResponsible
        claims = self._verify(token, config)
        granted: tuple[str, ...] = ()
        for name in SCOPE_CLAIMS:
            if name in claims:
                granted = granted_scopes(claims.pop(name))
                break
        claims["scp"] = list(granted)
        missing = missing_scope(config.scope_check, granted, config.scopes)
        if missing:
            log.warning("%s: jwt refused: the token lacks the scope %r", config.where, missing)
            raise DecisionError(
                403,
                "forbidden",
                "The token does not grant the scope this request needs.",
                headers=[("WWW-Authenticate", 'Bearer error="insufficient_scope"')],
                reason=f"missing scope {missing!r}",
            )
        session.subject = claims["sub"]
        session.extra = claims
        session.authenticator = self.name

    def _verify(self, token: str, config: JwtConfig) -> dict[str, Any]:
        try:
            signed = jws.extract_compact(token.encode("ascii"), registry=config.registry)
        except JoseError as exc:
            _refuse(config, f"not a readable JWS ({exc.error})")
        header = signed.headers()
        if not isinstance(header, dict):
            # joserfc accepts any JSON that contains "alg", a string or a list too.
            _refuse(config, "the header is not a JSON object")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in config.algorithms:
            _refuse(config, f"the algorithm {str(alg)[:20]!r} is not allowed")
        if "crit" in header or "b64" in header:
            _refuse(config, "the token has critical header extensions")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            _refuse(config, "the token has no kid")
        key = self._key(config, kid, alg)
        try:
            valid = jws.validate_compact(signed, key, registry=config.registry)
        except JoseError as exc:
            _refuse(config, f"the key {kid[:100]!r} cannot verify it ({exc.error})")
        if not valid:
            _refuse(config, "the signature does not verify")
        try:
            claims = json.loads(signed.payload)
        except (ValueError, RecursionError):
            _refuse(config, "the payload is not JSON")
        if not isinstance(claims, dict):
            _refuse(config, "the payload is not a JSON object")
        try:
            config.claims.validate(claims)
        except ExpiredTokenError:
            _refuse(config, "the token has expired")
        except JoseError as exc:
            _refuse(config, exc.description or exc.error)
        if config.audience:
            audience = claims.get("aud")
            held = [audience] if isinstance(audience, str) else audience
            if not isinstance(held, list) or any(aud not in held for aud in config.audience):
                _refuse(config, "the token is not meant for this audience")
        return claims

    def _key(self, config: JwtConfig, kid: str, alg: str) -> Key:
        """The rule's key for `kid` usable with `alg`: looked up, then fetched again if unknown."""
        algorithm = config.registry.get_alg(alg)
        unavailable = mismatched = False
        for refresh in (False, True):
            for source in config.sources:
                try:
                    if refresh:
                        candidates = source.refresh_for(kid) if source.loaded else ()
                    else:
                        candidates = source.lookup(kid)
                except KeysUnavailable:
                    unavailable = True
                    continue
                for key in candidates:
                    try:
                        algorithm.check_key(key)
                    except JoseError:
                        mismatched = True
                        continue
                    return key
            if mismatched:
                # The kid is known: fetching again cannot turn its key into another type.
                break
        if unavailable:
            log.error("%s: jwt: no key set could be loaded; refused with 503", config.where)
            raise DecisionError(
                503,
                "jwks_unavailable",
                "The token's signing keys are unavailable, try again shortly.",
                headers=[("Retry-After", "5")],
            )
        if mismatched:
            _refuse(config, f"the key {kid[:100]!r} is not a key for {alg}")
        _refuse(config, f"no key {kid[:100]!r} in the rule's jwks_urls")


def _refuse(config: JwtConfig, reason: str) -> NoReturn:
    log.warning("%s: jwt refused: %s", config.where, reason)
    raise DecisionError(
        401,
        "unauthorized",
        "The request could not be authorized",
        headers=[("WWW-Authenticate", 'Bearer error="invalid_token"')],
        reason=reason,
    )


def _strings(config: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = string_list(config.get(key), f"{where} {key}")
    if any(not value for value in values):
        raise ConfigError(f"{where}: {key} cannot hold an empty string")
    return values


def _algorithms(raw: Any, where: str) -> frozenset[str]:
    if raw is None:
        return frozenset(ASYMMETRIC)
    names = string_list(raw, f"{where} allowed_algorithms")
    if not names:
        raise ConfigError(f"{where}: allowed_algorithms cannot be empty")
    for name in names:
        if name.lower() == "none":
            raise ConfigError(
                f"{where}: allowed_algorithms: 'none' (unsigned tokens) is never allowed"
            )
        if name not in KNOWN_ALGORITHMS:
            known = ", ".join(sorted(KNOWN_ALGORITHMS))
            raise ConfigError(f"{where}: allowed_algorithms: unknown {name!r} (known: {known})")
    return frozenset(names)
