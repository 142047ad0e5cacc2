"""`hydrator` mutator: an API of yours adds to the session (Oathkeeper's `hydrator`).

    mutators = [{handler = "hydrator", config = {
        api = { url = "http://profile:8080/hydrate",
                auth = { basic = { username = "oathkeeper", password = "secret" } },
                retry = { max_delay = "100ms", give_up_after = "1s" } },
        cache = { enabled = true, ttl = "1m" } }},
      {handler = "id_token", config = {claims = '{"plan": "{{ print .Extra.plan }}"}'}}]

Per request it POSTs the session as Oathkeeper's AuthenticationSession JSON:
`{"subject", "extra", "header": {name: [value]}, "match_context":
{"regexp_capture_groups", "url", "method"}}` (`url` as a string; the
request's own headers are not sent: they carry the client's cookies and
tokens). The answer (200, JSON, at most 64 KiB) is merged into the session:
its `extra` keys over the session's `extra`, its `header` (values a string or
a list, the first taken) into the headers for the upstream, so the mutators
after it see both (`{{ .Extra.plan }}` in an `id_token` claim). The answer
cannot change the subject: a different `subject` is refused.

Answers: 429 is passed on with its `Retry-After`; anything else that is not a
200 with such JSON (401 included: `api.auth` is wrong), or no answer before
`retry.give_up_after`: 503 with `Retry-After: 5` and one log line (closed).
A header name the answer sets must be one a rule may set (`header` mutator's
rules); a value with a control character is refused with 500.

Cache (`cache.enabled`, `cache.ttl` default 1m): Oathkeeper keys it on the
whole serialised request, so it seldom hits (#727). Here the key is the API
URL, the rule, the subject and the session: the Kratos session id, or for
other authenticators a digest of `extra` (a token's claims). So the API's
answer must depend on who is asking, not on the URL or method within the
rule; leave the cache off when it does. Cached values are JSON-like (`extra`,
`header`), kept in `services.decision_cache("hydrator")`, with single-flight;
failures are never cached.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ory_wsgi.errors import ConfigError
from ory_wsgi.pipeline.decision_cache import DecisionCache
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import (
    TOKEN_RE,
    boolean,
    canonical_header_name,
    known_keys,
    string,
)
from ory_wsgi.pipeline.header_values import REFUSED_NAMES, header_value
from ory_wsgi.pipeline.service_call import (
    Endpoint,
    Endpoints,
    Retry,
    parse_retry,
    post,
    rate_limited,
    unavailable,
)
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.settings import parse_duration

log = logging.getLogger("ory_wsgi.pipeline.mutators")

KEYS = ("api", "cache")
API_KEYS = ("url", "auth", "retry")
DEFAULT_TTL = 60.0
MAX_ANSWER = 64 * 1024

Hydrated = dict[str, Any]  # {"extra": {...}, "header": {...}, "ttl": seconds}: JSON-like


@dataclass(frozen=True, slots=True)
class PreparedHydrator:
    where: str
    endpoint: Endpoint
    retry: Retry
    ttl: float  # 0: no cache
    authorization: str = field(default="", repr=False)  # basic auth, never logged


class HydratorMutator:
    name = "hydrator"

    def __init__(self, services: Services) -> None:
        self._endpoints = Endpoints()
        self.cache: DecisionCache[Hydrated] = services.decision_cache(
            self.name, lambda hydrated: float(hydrated["ttl"])
        )

    def prepare(self, config: Config, where: str) -> PreparedHydrator:
        known_keys(config, KEYS, where)
        api = config.get("api")
        if not isinstance(api, Mapping):
            raise ConfigError(f'{where}: api must be a table like {{ url = "http://..." }}')
        known_keys(api, API_KEYS, f"{where} api")
        retry = parse_retry(api, f"{where} api", max_delay=0.1)
        endpoint = self._endpoints.get(
            string(api, "url", f"{where} api"), retry.max_delay, where, key="api.url"
        )
        cache = config.get("cache") or {}
        if not isinstance(cache, Mapping):
            raise ConfigError(
                f'{where}: cache must be a table like {{ enabled = true, ttl = "1m" }}'
            )
        known_keys(cache, ("enabled", "ttl"), f"{where} cache")
        ttl = 0.0
        if boolean(cache, "enabled", f"{where} cache"):
            ttl = parse_duration(cache.get("ttl") or DEFAULT_TTL, f"{where} cache.ttl")
            # Oathkeeper: a zero ttl means its default.
            ttl = ttl or DEFAULT_TTL
        return PreparedHydrator(where, endpoint, retry, ttl, _basic_auth(api, where))

    def mutate(self, request: RequestFacts, session: AuthSession, prepared: Any) -> None:
        assert isinstance(prepared, PreparedHydrator)
        if prepared.ttl > 0:
            key = (prepared.where, prepared.endpoint.url, session.subject, _session_key(session))
            hydrated = self.cache.get(key, lambda: self._hydrate(session, prepared))
        else:
            hydrated = self._hydrate(session, prepared)
        # A new dict: `extra` may be the cached Kratos session, shared by other requests.
        session.extra = {**session.extra, **hydrated["extra"]}
        for name, value in hydrated["header"].items():
            session.header[name] = header_value(value, name, prepared.where)

    def _hydrate(self, session: AuthSession, prepared: PreparedHydrator) -> Hydrated:
        match = session.match
        url = match.url
        document = {
            "subject": session.subject,
            "extra": session.extra,
            "header": {name: [value] for name, value in session.header.items()},
            "match_context": {
                "regexp_capture_groups": list(match.regexp_capture_groups),
                "url": f"{url.scheme}://{url.host}{url.escaped_path()}"
                + (f"?{url.raw_query}" if url.raw_query else ""),
                "method": match.method,
            },
        }
        body = json.dumps(document, separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if prepared.authorization:
            headers["Authorization"] = prepared.authorization
        where, endpoint = prepared.where, prepared.endpoint
        answer = post(
            endpoint,
            headers,
            body,
            where=where,
            retry=prepared.retry,
            read=True,
            max_answer=MAX_ANSWER,
            failed=_unavailable,
        )
        if answer.status == 429:
            raise rate_limited(answer, where, endpoint.url)
        if answer.status != 200:
            log.error("%s: %s answered %d; refused with 503", where, endpoint.url, answer.status)
            raise _unavailable()
        try:
            return _hydrated(json.loads(answer.body), session.subject, prepared.ttl)
        except ValueError as exc:
            log.error(
                "%s: %s answered a session that cannot be used: %s; refused with 503",
                where,
                endpoint.url,
                exc,
            )
            raise _unavailable() from None


def _hydrated(answer: Any, subject: str, ttl: float) -> Hydrated:
    """The parts of the answer that are merged; ValueError when it is not a session."""
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    if answer.get("subject", subject) != subject:
        raise ValueError("it names another subject")
    extra = answer.get("extra") or {}
    if not isinstance(extra, dict):
        raise ValueError("extra is not an object")
    header = answer.get("header") or {}
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    headers: dict[str, str] = {}
    for name, values in header.items():
        if not TOKEN_RE.match(name) or name.lower() in REFUSED_NAMES:
            raise ValueError(f"header {name[:40]!r} cannot be set")
        value = values[0] if isinstance(values, list) and values else values
        if not isinstance(value, str):
            raise ValueError(f"header {name[:40]!r} is not a string")
        headers[canonical_header_name(name)] = value
    return {"extra": extra, "header": headers, "ttl": ttl}


def _session_key(session: AuthSession) -> str:
    """Which session this is: Kratos' id, else a digest of what the authenticator found."""
    session_id = session.ory_session.get("id") if session.ory_session is not None else None
    if isinstance(session_id, str):
        return "kratos:" + session_id
    canonical = json.dumps(session.extra, sort_keys=True, separators=(",", ":"), default=str)
    return "extra:" + hashlib.sha256(canonical.encode()).hexdigest()


def _basic_auth(api: Mapping[str, Any], where: str) -> str:
    auth = api.get("auth")
    if auth is None:
        return ""
    if not isinstance(auth, Mapping):
        raise ConfigError(f"{where}: api.auth must be a table like {{ basic = {{ ... }} }}")
    known_keys(auth, ("basic",), f"{where} api.auth")
    basic = auth.get("basic")
    if not isinstance(basic, Mapping):
        raise ConfigError(f"{where}: api.auth.basic must be a table of username, password")
    known_keys(basic, ("username", "password"), f"{where} api.auth.basic")
    username, password = basic.get("username"), basic.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or ":" in username:
        # Neither value is echoed: the message may end up in a log.
        raise ConfigError(f"{where}: api.auth.basic needs a username (no ':') and a password")
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return f"Basic {token}"


def _unavailable() -> DecisionError:
    return unavailable(
        "hydrator_unavailable", "The session service is unavailable, try again shortly."
    )
