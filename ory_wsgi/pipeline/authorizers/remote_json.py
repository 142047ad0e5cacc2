"""`remote_json`: POST a templated JSON payload to an API; its status decides (Oathkeeper).

    [rule.authorizer]
    handler = "remote_json"
    config = { remote = "http://authz:8080/check",
               payload = '{"subject": "{{ .Subject }}", "path": "{{ .MatchContext.URL.Path }}"}',
               headers = { X-Api-Key = "secret" },
               forward_response_headers_to_upstream = ["X-Tenant"],
               retry = { max_delay = "100ms", give_up_after = "1s" } }

`payload` and the `headers` values are templates compiled at load (`payload`
with JSON escaping, so a session value cannot add keys); a payload that does
not render to JSON is refused with 500. Per request:
- 200: allowed; the response headers named in
  `forward_response_headers_to_upstream` are set on the upstream request;
- 403: 403 forbidden;
- 429: passed on with its `Retry-After`;
- anything else, or no answer: 503 with `Retry-After: 5` and one log line.
A connection failure or timeout (`retry.max_delay`, each attempt) is retried
until `retry.give_up_after` has passed. Connections are pooled per URL.
Nothing is cached: the payload may hold anything of the request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ory_wsgi.errors import BadRequest, ConfigError, UpstreamError
from ory_wsgi.pipeline.errors import DecisionError, internal
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import (
    TOKEN_RE,
    canonical_header_name,
    known_keys,
    string,
    string_list,
    string_map,
)
from ory_wsgi.pipeline.mutators.context import template_context
from ory_wsgi.pipeline.mutators.header import render
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts
from ory_wsgi.rules.template import Template, compile_template
from ory_wsgi.settings import parse_duration
from ory_wsgi.upstream.pool import UpstreamPool, UpstreamResponse

log = logging.getLogger("ory_wsgi.pipeline")

KEYS = ("remote", "payload", "headers", "forward_response_headers_to_upstream", "retry")
DEFAULT_MAX_DELAY = 0.1
DEFAULT_GIVE_UP_AFTER = 1.0
RETRY_PAUSE = 0.05
MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class Prepared:
    where: str
    remote: str
    pool: UpstreamPool
    target: str
    host: str
    payload: Template
    headers: tuple[tuple[str, Template], ...]
    forward: tuple[str, ...]
    give_up_after: float


class RemoteJson:
    name = "remote_json"

    def __init__(self, services: Services) -> None:
        del services
        self._pools: dict[tuple[str, float], UpstreamPool] = {}
        self._pools_lock = threading.Lock()

    def prepare(self, config: Config, where: str) -> Prepared:
        known_keys(config, KEYS, where)
        remote = string(config, "remote", where)
        split = urlsplit(remote)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ConfigError(f"{where}: remote must be an http(s) URL, got {remote!r}")
        payload = config.get("payload")
        if not isinstance(payload, str) or not payload:
            raise ConfigError(f"{where}: payload must be a JSON template (a string)")
        headers = []
        for name, text in string_map(config, "headers", where).items():
            if not TOKEN_RE.match(name):
                raise ConfigError(f"{where}: headers: {name!r} is not a header name")
            if not isinstance(text, str):
                raise ConfigError(f"{where}: headers.{name} must be a string template")
            headers.append(
                (canonical_header_name(name), compile_template(text, where=f"{where} {name}"))
            )
        forward = string_list(
            config.get("forward_response_headers_to_upstream"),
            f"{where} forward_response_headers_to_upstream",
        )
        retry = config.get("retry") or {}
        if not isinstance(retry, Mapping):
            raise ConfigError(f"{where}: retry must be a table of max_delay, give_up_after")
        known_keys(retry, ("max_delay", "give_up_after"), f"{where} retry")
        max_delay = parse_duration(
            retry.get("max_delay", DEFAULT_MAX_DELAY), f"{where} retry.max_delay"
        )
        give_up_after = parse_duration(
            retry.get("give_up_after", DEFAULT_GIVE_UP_AFTER), f"{where} retry.give_up_after"
        )
        if max_delay <= 0:
            raise ConfigError(f"{where}: retry.max_delay must be more than 0")
        origin = f"{split.scheme}://{split.netloc}"
        with self._pools_lock:
            pool = self._pools.get((origin, max_delay))
            if pool is None:
                pool = UpstreamPool(
                    origin, connect_timeout=max_delay, read_timeout=max_delay, maxsize=16
                )
                self._pools[(origin, max_delay)] = pool
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        return Prepared(
            where,
            remote,
            pool,
            target,
            split.netloc,
            compile_template(payload, where=f"{where} payload", json=True),
            tuple(headers),
            tuple(canonical_header_name(name) for name in forward),
            give_up_after,
        )

    def authorize(self, request: RequestFacts, session: AuthSession, prepared: Prepared) -> None:
        context = template_context(session)
        where = prepared.where
        payload = render(prepared.payload, context, where)
        try:
            json.loads(payload)
        except ValueError as exc:
            log.error("%s: the payload did not render to JSON (%s); refused", where, exc)
            raise internal("The authorizer's payload is not JSON") from None
        body = payload.encode()
        headers = {
            "Host": prepared.host,
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        }
        for name, template in prepared.headers:
            headers[name] = render(template, context, where)
        deadline = time.monotonic() + prepared.give_up_after
        while True:
            try:
                response = prepared.pool.request("POST", prepared.target, headers, body)
                break
            except BadRequest as exc:
                # A header template rendered a line break (from session data): never sent.
                log.error("%s: %s; refused", where, exc)
                raise internal("A header of the authorizer could not be sent") from None
            except UpstreamError as exc:
                left = deadline - time.monotonic()
                if left > 0:
                    time.sleep(min(RETRY_PAUSE, left))
                    continue
                log.error(
                    "%s: %s is unreachable: %s; refused with 503", where, prepared.remote, exc
                )
                raise _unavailable() from None
        _discard(response)
        answered = {name.lower(): value for name, value in response.headers}
        if response.status == 200:
            for name in prepared.forward:
                value = answered.get(name.lower())
                if value is not None:
                    session.header[name] = value
            return
        if response.status == 403:
            raise DecisionError(403, "forbidden", "Access is denied.")
        if response.status == 429:
            raise DecisionError(
                429,
                "rate_limited",
                "Too many requests, try again later.",
                headers=[("Retry-After", answered.get("retry-after") or "1")],
            )
        log.error("%s: %s answered %d; refused with 503", where, prepared.remote, response.status)
        raise _unavailable()


def _discard(response: UpstreamResponse) -> None:
    """Read a small body to its end so the connection goes back to the pool; drop a big one."""
    read = 0
    try:
        while read <= MAX_BODY and (data := response.read1()):
            read += len(data)
    except UpstreamError:
        pass  # the status and headers are what decide; release() drops the connection
    finally:
        response.release()


def _unavailable() -> DecisionError:
    return DecisionError(
        503,
        "authorizer_unavailable",
        "The authorization service is unavailable, try again shortly.",
        headers=[("Retry-After", "5")],
    )
