"""`oauth2_introspection`: an opaque OAuth2 access token, asked of Hydra (RFC 7662).

    [authenticators.oauth2_introspection]
    enabled = true
    config = { introspection_url = "http://hydra:4445/admin/oauth2/introspect",
               required_scope = ["photos.read"], scope_strategy = "wildcard",
               target_audience = ["photos-api"], trusted_issuers = ["https://auth.example.com/"],
               prefix = "ory_at_", cache = { ttl = "10s" } }

Responsible when the request carries a token where `token_from` says
(ory_wsgi.pipeline.token_from; default `Authorization: Bearer`) that starts
with `prefix` (default: any); otherwise the next authenticator is asked. The
token is posted as `token=...` to `introspection_url`, with the static
`introspection_request_headers` and, with `pre_authorization.enabled`, a
client-credentials token fetched at `pre_authorization.token_url`
(ory_wsgi.pipeline.client_credentials). The answer decides, as in Oathkeeper:
- `token_use` other than `access_token`: 403;
- `active` false, or `exp` passed, or no `sub`: 401 (`WWW-Authenticate: Bearer
  error="invalid_token"`);
- a `target_audience` entry missing from `aud` (a string or a list), an `iss`
  not in `trusted_issuers`, a `required_scope` the token's `scope` does not
  grant under `scope_strategy` (ory_wsgi.pipeline.scope): 403 (SPEC §16).
  With no strategy (or `none`) and a `required_scope`, the scopes are sent
  with the introspection and the server checks them (Oathkeeper does that).
- an answer that is not RFC 7662 (not JSON, `active` not a JSON boolean,
  fields of the wrong type, over 64 KiB), a 5xx, any status but 200, no
  answer within `retry` (`max_delay` per attempt, default 500ms; attempts
  until `give_up_after`, default 1s), or no pre-authorization token: 503
  with `Retry-After: 5` and one log line (closed, never allowed);
- 429: passed on with the server's `Retry-After` (and `X-RateLimit-*`).
The HTTP part (pooled connections per origin, retry, 429) is
ory_wsgi.pipeline.service_call's, shared with the other service-calling handlers.
A token longer than 4096 characters or with characters no bearer token has
is refused with 401 without asking anyone.
Subject = `sub`; extra = the answer's `ext` plus `username`, `client_id`,
`scope` and `aud`, as Oathkeeper builds it (`{{ .Extra.client_id }}`).

Answers are cached (`cache.enabled`, default true) per introspection URL, the
token (hashed: the cache may live outside the process later) and the scopes
sent: an active answer for `cache.ttl` (default 10s) but never past its
`exp`; an inactive one for at most 2 s. Failures are never cached. The cache
is single-flight (one introspection per token at a time); `cache.max_cost`
bounds its entries (Oathkeeper's ristretto cost is 1 per token). Cached
values are plain JSON-like dicts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.client_credentials import ClientCredentials, GrantFailed
from ory_wsgi.pipeline.decision_cache import DecisionCache
from ory_wsgi.pipeline.errors import DecisionError, NotResponsible
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import (
    boolean,
    known_keys,
    string,
    string_list,
    string_map,
)
from ory_wsgi.pipeline.header_values import header_name
from ory_wsgi.pipeline.scope import ScopeCheck, granted_scopes, missing_scope, scope_strategy
from ory_wsgi.pipeline.service_call import (
    Answer,
    Endpoint,
    Endpoints,
    Retry,
    parse_retry,
    post,
    rate_limited,
)
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.pipeline.token_from import TokenSource
from ory_wsgi.settings import parse_duration

log = logging.getLogger("ory_wsgi.pipeline")

Cached = dict[str, Any]

KEYS = (
    "introspection_url",
    "pre_authorization",
    "required_scope",
    "scope_strategy",
    "target_audience",
    "trusted_issuers",
    "token_from",
    "prefix",
    "introspection_request_headers",
    "preserve_host",
    "retry",
    "cache",
)
PRE_AUTH_KEYS = ("enabled", "client_id", "client_secret", "token_url", "scope", "audience")
DEFAULT_TTL = 10.0
INACTIVE_TTL = 2.0
DEFAULT_MAX_ENTRIES = 10000
DEFAULT_MAX_DELAY = 0.5
DEFAULT_GIVE_UP_AFTER = 1.0
MAX_TOKEN = 4096
FORM = "application/x-www-form-urlencoded"
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# The answer fields read, with the JSON types each may have (RFC 7662 §2.2).
STRINGS = ("sub", "client_id", "scope", "iss", "username", "token_type", "token_use")
NUMBERS = ("exp", "iat", "nbf")


@dataclass(frozen=True, slots=True)
class Prepared:
    where: str
    endpoint: Endpoint
    source: TokenSource
    prefix: str
    required: tuple[str, ...]
    check: ScopeCheck | None  # None: the introspection server checks `required`
    audience: tuple[str, ...]
    issuers: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    preserve_host: bool
    retry: Retry
    ttl: float  # 0: not cached
    grant: ClientCredentials | None


class OAuth2Introspection:
    name = "oauth2_introspection"

    def __init__(self, services: Services) -> None:
        max_entries = DEFAULT_MAX_ENTRIES
        table = services.settings.authenticators.get(self.name)
        cache = (table.config.get("cache") if table else None) or {}
        if isinstance(cache, Mapping) and isinstance(cache.get("max_cost"), int):
            max_entries = max(int(cache["max_cost"]), 1)
        self.cache: DecisionCache[Cached] = services.decision_cache(
            self.name, _lifetime, max_entries=max_entries
        )
        self._endpoints = Endpoints()
        self._grants: dict[tuple[str, ...], ClientCredentials] = {}
        self._grants_lock = threading.Lock()

    def prepare(self, config: Config, where: str) -> Prepared:
        known_keys(config, KEYS, where)
        retry = parse_retry(
            config, where, max_delay=DEFAULT_MAX_DELAY, give_up_after=DEFAULT_GIVE_UP_AFTER
        )
        url = string(config, "introspection_url", where)
        endpoint = self._endpoints.get(url, retry.max_delay, where, key="introspection_url")
        strategy = config.get("scope_strategy")
        required = string_list(config.get("required_scope"), f"{where} required_scope")
        check = scope_strategy(strategy, where)
        server_checks = strategy is None or str(strategy).lower() in ("", "none")
        headers = []
        for name, value in string_map(config, "introspection_request_headers", where).items():
            name = header_name(name, f"{where} introspection_request_headers")
            if not isinstance(value, str) or _CONTROL.search(value):
                raise ConfigError(f"{where}: introspection_request_headers.{name} must be one line")
            headers.append((name, value))
        cache = _table(config, "cache", ("enabled", "ttl", "max_cost"), where)
        ttl = parse_duration(cache.get("ttl", DEFAULT_TTL), f"{where} cache.ttl")
        if not boolean(cache, "enabled", f"{where} cache", default=True):
            ttl = 0.0
        if "max_cost" in cache and not isinstance(cache["max_cost"], int):
            raise ConfigError(f"{where}: cache.max_cost must be a whole number")
        return Prepared(
            where,
            endpoint,
            TokenSource.parse(config.get("token_from"), where),
            string(config, "prefix", where),
            required,
            None if server_checks and required else check,
            string_list(config.get("target_audience"), f"{where} target_audience"),
            string_list(config.get("trusted_issuers"), f"{where} trusted_issuers"),
            tuple(headers),
            boolean(config, "preserve_host", where),
            retry,
            ttl,
            self._grant(config, retry.max_delay, where),
        )

    def _grant(self, config: Config, timeout: float, where: str) -> ClientCredentials | None:
        pre = _table(config, "pre_authorization", PRE_AUTH_KEYS, where)
        if not boolean(pre, "enabled", f"{where} pre_authorization"):
            return None
        where = f"{where} pre_authorization"
        client_id = string(pre, "client_id", where)
        secret = string(pre, "client_secret", where)
        token_url = string(pre, "token_url", where)
        if not client_id or not secret:
            raise ConfigError(f"{where}: client_id and client_secret are required")
        scope = string_list(pre.get("scope"), f"{where} scope")
        audience = string(pre, "audience", where)
        key = (token_url, client_id, secret, audience, *scope)
        with self._grants_lock:
            grant = self._grants.get(key)
            if grant is None:
                endpoint = self._endpoints.get(token_url, timeout, where, key="token_url")
                grant = ClientCredentials(
                    endpoint, client_id, secret, scope=scope, audience=audience, where=where
                )
                self._grants[key] = grant
        return grant

    def authenticate(self, request: RequestFacts, session: AuthSession, prepared: Prepared) -> None:
        token = prepared.source.extract(request)
        if token is None or not token.startswith(prepared.prefix):
            raise NotResponsible
        where = prepared.where
        if len(token) > MAX_TOKEN or not token.isascii() or not token.isprintable() or " " in token:
            log.info("%s: refused a malformed token (%d characters) unasked", where, len(token))
            raise _unauthorized()
        sent_scope = " ".join(prepared.required) if prepared.check is None else ""
        fields = {"token": token}
        if sent_scope:
            fields["scope"] = sent_scope
        headers = dict(prepared.headers)
        if prepared.preserve_host:
            headers["X-Forwarded-Host"] = request.host

        def fetch() -> Cached:
            return self._introspect(prepared, fields, headers)

        if prepared.ttl > 0:
            digest = hashlib.sha256(token.encode()).hexdigest()
            key = (prepared.endpoint.url, digest, sent_scope, prepared.ttl)
            answer = self.cache.get(key, fetch)
        else:
            answer = fetch()
        outcome = answer["outcome"]
        if outcome == "rate_limited":
            raise DecisionError(
                429,
                "rate_limited",
                "Too many requests, try again later.",
                headers=[(name, value) for name, value in answer["headers"]],
            )
        if outcome == "error":
            raise DecisionError(
                503,
                "introspection_unavailable",
                "The token service is unavailable, try again shortly.",
                headers=[("Retry-After", "5")],
                reason=answer.get("reason", ""),
            )
        if outcome != "active":
            raise _refused(where, "the token is not active")
        self._judge(answer["answer"], prepared, session)

    def _judge(self, data: Cached, prepared: Prepared, session: AuthSession) -> None:
        where = prepared.where
        use = data.get("token_use", "")
        if use and use != "access_token":
            raise _forbidden(where, f"the token is not an access token but {use!r}")
        expires = data.get("exp")
        if expires is not None and expires <= time.time():
            raise _refused(where, "the token has expired")
        subject = data.get("sub", "")
        if not subject:
            raise _refused(where, "the token names no subject")
        audience = data.get("aud", [])
        for wanted in prepared.audience:
            if wanted not in audience:
                raise _forbidden(where, f"the token is not meant for the audience {wanted!r}")
        if prepared.issuers and data.get("iss") not in prepared.issuers:
            raise _forbidden(where, "the token's issuer is not trusted")
        if prepared.check is not None:
            missing = missing_scope(
                prepared.check, granted_scopes(data.get("scope", "")), prepared.required
            )
            if missing:
                raise _forbidden(where, f"the scope {missing!r} was not granted")
        # A copy: the cached answer serves other requests, whatever a later handler does.
        extra = copy.deepcopy(data["ext"]) if data.get("ext") else {}
        extra["username"] = data.get("username", "")
        extra["client_id"] = data.get("client_id", "")
        extra["scope"] = data.get("scope", "")
        if audience:
            extra["aud"] = list(audience)
        session.subject = subject
        session.extra = extra
        session.authenticator = self.name

    def _introspect(
        self, prepared: Prepared, fields: dict[str, str], headers: dict[str, str]
    ) -> Cached:
        sent = {**headers, "Content-Type": FORM, "Accept": "application/json"}
        body = urlencode(fields).encode()
        for attempt in (1, 2):
            if prepared.grant is not None:
                try:
                    sent["Authorization"] = prepared.grant.authorization(prepared.retry)
                except GrantFailed as exc:
                    return _failed(prepared, f"no pre-authorization token: {exc}")
            try:
                reply = post(
                    prepared.endpoint,
                    sent,
                    body,
                    where=prepared.where,
                    retry=prepared.retry,
                    read=True,
                )
            except DecisionError as exc:
                # post() logged the cause (unreachable, an unreadable or oversized answer).
                return {"outcome": "error", "reason": str(exc)}
            if reply.status == 401 and prepared.grant is not None and attempt == 1:
                # The pre-authorization token was revoked or expired early: fetch one more.
                prepared.grant.forget(sent["Authorization"].removeprefix("Bearer "))
                continue
            return _read(prepared, reply)
        return _failed(prepared, f"{prepared.endpoint.url} refused the pre-authorization token")


def _read(prepared: Prepared, reply: Answer) -> Cached:
    url = prepared.endpoint.url
    if reply.status == 429:
        # Kept as plain pairs: a cached value stays JSON-like (failures are not cached anyway).
        passed_on = rate_limited(reply, prepared.where, url).headers
        return {"outcome": "rate_limited", "headers": [[n, v] for n, v in passed_on]}
    if reply.status != 200:
        return _failed(prepared, f"{url} answered {reply.status}")
    try:
        decoded = json.loads(reply.body)
    except ValueError:
        decoded = None
    answer = _valid(decoded) if isinstance(decoded, dict) else None
    if answer is None:
        return _failed(prepared, f"{url} answered something that is not RFC 7662")
    if not answer["active"]:
        return {"outcome": "inactive", "ttl": min(prepared.ttl, INACTIVE_TTL)}
    return {"outcome": "active", "ttl": prepared.ttl, "answer": answer}


def _valid(decoded: dict[str, Any]) -> Cached | None:
    """The fields read from an RFC 7662 answer, each of its JSON type, or None."""
    active = decoded.get("active")
    if not isinstance(active, bool):
        return None
    answer: Cached = {"active": active}
    if not active:
        return answer
    for name in STRINGS:
        value = decoded.get(name)
        if value is not None and not isinstance(value, str):
            return None
        if value is not None:
            answer[name] = value
    for name in NUMBERS:
        value = decoded.get(name)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            return None
        if value is not None:
            answer[name] = value
    audience = decoded.get("aud")
    if isinstance(audience, str):
        answer["aud"] = [audience]
    elif isinstance(audience, list) and all(isinstance(a, str) for a in audience):
        answer["aud"] = audience
    elif audience is not None:
        return None
    ext = decoded.get("ext")
    if ext is not None and not isinstance(ext, dict):
        return None
    answer["ext"] = ext or {}
    return answer


def _lifetime(answer: Cached) -> float:
    """How long to keep an answer: its `ttl`, never past the token's `exp`; failures not at all."""
    ttl = float(answer.get("ttl", 0.0))
    expires = answer.get("answer", {}).get("exp")
    if expires is not None:
        ttl = min(ttl, float(expires) - time.time())
    return ttl


def _failed(prepared: Prepared, reason: str) -> Cached:
    log.error("%s: %s; refused with 503", prepared.where, reason)
    return {"outcome": "error", "reason": reason}


def _table(config: Config, key: str, known: tuple[str, ...], where: str) -> Mapping[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: {key} must be a table")
    known_keys(value, known, f"{where} {key}")
    return value


def _unauthorized() -> DecisionError:
    return DecisionError(
        401,
        "unauthorized",
        "The request could not be authorized",
        headers=[("WWW-Authenticate", 'Bearer error="invalid_token"')],
    )


def _refused(where: str, reason: str) -> DecisionError:
    log.info("%s: %s; refused with 401", where, reason)
    error = _unauthorized()
    error.reason = reason
    return error


def _forbidden(where: str, reason: str) -> DecisionError:
    log.info("%s: %s; refused with 403", where, reason)
    return DecisionError(403, "forbidden", "Access is denied.", reason=reason)
