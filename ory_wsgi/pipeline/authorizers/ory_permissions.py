"""`ory_permissions`: ask Ory Permissions (Keto) whether the subject has a relation.

    [rule.authorizer]
    handler = "ory_permissions"
    config = { url = "http://keto:4466", namespace = "documents",
               object = "{{ index .MatchContext.RegexpCaptureGroups 0 }}",
               relation = "view", subject_id = "{{ .Subject }}", cache = { ttl = "5s" },
               api_key = "ory_pat_..." }

`namespace`, `object`, `relation` and `subject_id` are templates (docs/rules-templates.md)
over the session and the rule's capture groups, compiled at load; `subject_set =
{namespace, object, relation}` (templates too) replaces `subject_id`. Per request
the tuple is rendered and checked with `POST <url>/relation-tuples/check/openapi`:
- `{"allowed": true}`: allowed; `{"allowed": false}` (or 403): 403 forbidden;
- a tuple that renders an empty part: 403, without asking Keto;
- 429: passed on with Keto's `Retry-After`;
- unreachable, a timeout (`timeout`, default 2s), 5xx or any other answer:
  503 with `Retry-After: 5` and one log line (fail closed).
Answers (allowed and denied) are cached per URL and rendered tuple for
`cache.ttl` (default 5s; "0s" turns the cache off) in one cache per worker
(with Redis behind it under `[session_cache] backend = "redis"`), at most
`cache.max_entries` of them, with single-flight: concurrent requests for one
tuple make one call. Failures are never cached. Connections to each
Keto URL are pooled (one pool per URL per worker, built at load).
`api_key` (Ory Network's Permissions API wants a project API key) is sent as
`Authorization: Bearer <api_key>` to `url` and nowhere else, and never logged.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import astuple, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ory_wsgi.errors import ConfigError, UpstreamError
from ory_wsgi.pipeline.decision_cache import DecisionCache
from ory_wsgi.pipeline.errors import DecisionError
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import known_keys, string
from ory_wsgi.pipeline.header_values import render
from ory_wsgi.pipeline.mutators.context import template_context
from ory_wsgi.pipeline.service_call import Endpoint, Endpoints
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.rules.template import Template, compile_template
from ory_wsgi.settings import parse_duration

log = logging.getLogger("ory_wsgi.pipeline")

CHECK_PATH = "/relation-tuples/check/openapi"
DEFAULT_TTL = 5.0
DEFAULT_TIMEOUT = 2.0
MAX_ANSWER = 64 * 1024
PARTS = ("namespace", "object", "relation")
# RFC 6750's b64token: what may follow "Bearer " (no space, no control character).
TOKEN68_RE = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
KEYS = (*PARTS, "url", "subject_id", "subject_set", "cache", "timeout", "api_key")


@dataclass(frozen=True, slots=True)
class Answer:
    """What Keto said: `outcome` allowed, denied, rate_limited or error; kept `ttl` seconds."""

    outcome: str
    ttl: float = 0.0
    retry_after: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Prepared:
    where: str
    url: str
    endpoint: Endpoint
    parts: tuple[Template, Template, Template]
    subject_id: Template | None
    subject_set: tuple[Template, Template, Template] | None
    ttl: float
    authorization: str = field(default="", repr=False)  # never in a log line


class OryPermissions:
    name = "ory_permissions"

    def __init__(self, services: Services, max_entries: int = 10000) -> None:
        self._endpoints = Endpoints()
        self.cache: DecisionCache[Answer] = services.decision_cache(
            self.name,
            lambda answer: answer.ttl,
            max_entries=max_entries,
            # In Redis ([session_cache] backend = "redis") as [outcome, ttl, retry_after, reason].
            encode=astuple,
            decode=lambda s: Answer(str(s[0]), float(s[1]), str(s[2]), str(s[3])),
        )

    def prepare(self, config: Config, where: str) -> Prepared:
        known_keys(config, KEYS, where)
        url = string(config, "url", where).rstrip("/")
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname or split.query:
            raise ConfigError(f"{where}: url must be Keto's read API as http(s)://host[:port]")
        parts = _templates(config, PARTS, where)
        subject_id = config.get("subject_id")
        subject_set = config.get("subject_set")
        if (subject_id is None) == (subject_set is None):
            raise ConfigError(f"{where}: set exactly one of subject_id or subject_set")
        id_template = set_templates = None
        if subject_id is not None:
            id_template = _template(subject_id, f"{where} subject_id")
        else:
            if not isinstance(subject_set, Mapping):
                raise ConfigError(f"{where}: subject_set must be a table of {', '.join(PARTS)}")
            known_keys(subject_set, PARTS, f"{where} subject_set")
            set_templates = _templates(subject_set, PARTS, f"{where} subject_set")
        cache = config.get("cache") or {}
        if not isinstance(cache, Mapping):
            raise ConfigError(f'{where}: cache must be a table like {{ ttl = "5s" }}')
        known_keys(cache, ("ttl",), f"{where} cache")
        ttl = parse_duration(cache.get("ttl", DEFAULT_TTL), f"{where} cache.ttl")
        timeout = parse_duration(config.get("timeout", DEFAULT_TIMEOUT), f"{where} timeout")
        if timeout <= 0:
            raise ConfigError(f"{where}: timeout must be more than 0")
        api_key = config.get("api_key") or ""
        if not isinstance(api_key, str) or not TOKEN68_RE.match(api_key or "x"):
            # Not echoed: the message may end up in a log.
            raise ConfigError(f"{where}: api_key must be a token (ory_pat_...)")
        return Prepared(
            where,
            url,
            self._endpoints.get(url + CHECK_PATH, timeout, where),
            parts,
            id_template,
            set_templates,
            ttl,
            f"Bearer {api_key}" if api_key else "",
        )

    def authorize(self, request: RequestFacts, session: AuthSession, prepared: Prepared) -> None:
        context = template_context(session)
        where = prepared.where
        namespace, obj, relation = (render(t, context, where) for t in prepared.parts)
        body: dict[str, Any] = {"namespace": namespace, "object": obj, "relation": relation}
        subject: tuple[str, ...]
        if prepared.subject_id is not None:
            subject = (render(prepared.subject_id, context, where),)
            body["subject_id"] = subject[0]
        else:
            assert prepared.subject_set is not None
            subject = tuple(render(t, context, where) for t in prepared.subject_set)
            body["subject_set"] = dict(zip(PARTS, subject, strict=True))
        if not all((namespace, obj, relation, *subject)):
            # An empty part (no capture group, no subject) cannot be a permission.
            raise _forbidden("the relation tuple rendered an empty part")
        key = (prepared.url, namespace, obj, relation, *subject)
        answer = self.cache.get(key, lambda: self._check(prepared, body))
        if answer.outcome == "allowed":
            return
        if answer.outcome == "denied":
            raise _forbidden(f"{namespace}:{obj}#{relation} is not granted")
        if answer.outcome == "rate_limited":
            raise DecisionError(
                429,
                "rate_limited",
                "Too many requests, try again later.",
                headers=[("Retry-After", answer.retry_after or "1")],
            )
        raise DecisionError(
            503,
            "permissions_unavailable",
            "The permission service is unavailable, try again shortly.",
            headers=[("Retry-After", "5")],
            reason=answer.reason,
        )

    def _check(self, prepared: Prepared, body: dict[str, Any]) -> Answer:
        payload = json.dumps(body, separators=(",", ":")).encode()
        endpoint = prepared.endpoint
        headers = {
            "Host": endpoint.host,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Content-Length": str(len(payload)),
        }
        if prepared.authorization:
            headers["Authorization"] = prepared.authorization
        try:
            response = endpoint.pool.request("POST", endpoint.target, headers, payload)
            try:
                data = response.read() if response.status in (200, 403) else b""
            finally:
                # Gives a fully read connection back to the pool, drops any other.
                response.release()
        except UpstreamError as exc:
            return _failed(prepared, f"Keto at {prepared.url} is unreachable: {exc}")
        if response.status == 429:
            retry_after = next((v for k, v in response.headers if k.lower() == "retry-after"), "")
            log.warning("%s: Keto at %s answered 429; passed on", prepared.where, prepared.url)
            return Answer("rate_limited", retry_after=retry_after)
        if response.status in (200, 403):
            allowed = _allowed(data)
            if allowed is not None and (response.status == 200 or not allowed):
                return Answer("allowed" if allowed else "denied", prepared.ttl)
        return _failed(prepared, f"Keto at {prepared.url} answered {response.status}")


def _allowed(data: bytes) -> bool | None:
    if len(data) > MAX_ANSWER:
        return None
    try:
        decoded = json.loads(data)
    except ValueError:
        return None
    allowed = decoded.get("allowed") if isinstance(decoded, dict) else None
    return allowed if isinstance(allowed, bool) else None


def _failed(prepared: Prepared, reason: str) -> Answer:
    log.error("%s: %s; refused with 503", prepared.where, reason)
    return Answer("error", reason=reason)


def _forbidden(reason: str) -> DecisionError:
    return DecisionError(403, "forbidden", "Access is denied.", reason=reason)


def _template(raw: Any, where: str) -> Template:
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: must be a string template, got {raw!r}")
    return compile_template(raw, where=where)


def _templates(
    config: Mapping[str, Any], names: tuple[str, str, str], where: str
) -> tuple[Template, Template, Template]:
    compiled = []
    for name in names:
        raw = config.get(name)
        if raw is None or raw == "":
            raise ConfigError(f"{where}: {name} is required")
        compiled.append(_template(raw, f"{where} {name}"))
    return compiled[0], compiled[1], compiled[2]
