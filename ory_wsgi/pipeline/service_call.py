"""Calling a service from a handler: pooled connections, retry with a deadline, header
templates, and the answers every such handler gives (SPEC §16).

    endpoints = Endpoints()                                     # one per handler instance
    endpoint = endpoints.get(url, retry.max_delay, where)        # at load, once per rule
    headers = template_headers(config, where)                    # at load
    answer = post(endpoint, {...}, body, where=where, retry=retry, read=True)   # per request

Used by the `remote` and `remote_json` authorizers and the `hydrator` mutator
(`ory_permissions` takes only its pools from here: its answers are cached and
it keeps its own outcomes). What they share, decided once here:
- one `UpstreamPool` per origin and timeout per handler, built at load;
- `retry = {max_delay, give_up_after}`: `max_delay` bounds each attempt
  (connect and each read), a connection failure or timeout is tried again
  until `give_up_after` has passed, then the call fails;
- header templates: names checked at load (tokens; not the framing or
  hop-by-hop headers a value could turn into request smuggling), values
  rendered per request, an empty value not sent (Oathkeeper), a value with a
  control character refused with 500 and one log line, never sent;
- a 429 from the service is passed on with its `Retry-After` (and
  `X-RateLimit-*`), anything unusable is 503 with `Retry-After: 5` (closed).
The service's answer body is read only when asked for, and never past
`max_answer` bytes: a bigger answer is a failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ory_wsgi.errors import BadRequest, ConfigError, UpstreamError
from ory_wsgi.pipeline.errors import DecisionError, internal
from ory_wsgi.pipeline.handler_config import TOKEN_RE, known_keys, string_map
from ory_wsgi.pipeline.header_values import header_name, header_value, render
from ory_wsgi.rules.template import Template, TemplateContext, compile_template
from ory_wsgi.settings import parse_duration
from ory_wsgi.upstream.pool import UpstreamPool, UpstreamResponse

log = logging.getLogger("ory_wsgi.pipeline")

RETRY_PAUSE = 0.05  # between two attempts after a connection failure
MAX_ANSWER = 64 * 1024
# What a service's 429 hands on to the client besides its status.
RATE_LIMIT_HEADERS = (
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A service URL as the pool sends to it: `target` is path and query, `host` the Host."""

    url: str
    pool: UpstreamPool
    target: str
    host: str


@dataclass(frozen=True, slots=True)
class Retry:
    max_delay: float
    give_up_after: float


@dataclass(frozen=True, slots=True)
class Answer:
    """A service's status, headers and (when asked for) body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), "")


class Endpoints:
    """The pools of one handler: one per origin and timeout, shared by its rules."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, float], UpstreamPool] = {}
        self._lock = threading.Lock()

    def get(self, url: str, timeout: float, where: str, *, key: str = "url") -> Endpoint:
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ConfigError(f"{where}: {key} must be an http(s) URL, got {url!r}")
        if split.username is not None or split.password is not None:
            # Credentials in a URL end up in logs: they have their own config keys.
            raise ConfigError(f"{where}: {key} must not hold credentials")
        origin = f"{split.scheme}://{split.netloc}"
        with self._lock:
            pool = self._pools.get((origin, timeout))
            if pool is None:
                pool = UpstreamPool(
                    origin, connect_timeout=timeout, read_timeout=timeout, maxsize=16
                )
                self._pools[(origin, timeout)] = pool
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        return Endpoint(url, pool, target, split.netloc)


def parse_retry(
    config: Mapping[str, Any],
    where: str,
    *,
    max_delay: float = 0.1,
    give_up_after: float = 1.0,
) -> Retry:
    """`retry = {max_delay, give_up_after}` with the handler's defaults (Oathkeeper's)."""
    raw = config.get("retry") or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: retry must be a table of max_delay, give_up_after")
    known_keys(raw, ("max_delay", "give_up_after"), f"{where} retry")
    delay = parse_duration(raw.get("max_delay", max_delay), f"{where} retry.max_delay")
    give_up = parse_duration(
        raw.get("give_up_after", give_up_after), f"{where} retry.give_up_after"
    )
    if delay <= 0:
        raise ConfigError(f"{where}: retry.max_delay must be more than 0")
    return Retry(delay, give_up)


def template_headers(config: Mapping[str, Any], where: str) -> tuple[tuple[str, Template], ...]:
    """The `headers` table: checked names, compiled value templates."""
    headers = []
    for name, text in string_map(config, "headers", where).items():
        if not TOKEN_RE.match(name):
            raise ConfigError(f"{where}: headers: {name!r} is not a header name")
        canonical = header_name(name, f"{where} headers")
        if not isinstance(text, str):
            raise ConfigError(f"{where}: headers.{name} must be a string template")
        headers.append((canonical, compile_template(text, where=f"{where} headers.{name}")))
    return tuple(headers)


def render_headers(
    templates: Sequence[tuple[str, Template]],
    context: TemplateContext,
    where: str,
    into: dict[str, str],
) -> None:
    """Each template's value into `into`; an empty one is left out, as Oathkeeper does."""
    for name, template in templates:
        value = render(template, context, where)
        if value:
            into[name] = header_value(value, name, where)


def post(
    endpoint: Endpoint,
    headers: dict[str, str],
    body: bytes,
    *,
    where: str,
    retry: Retry,
    read: bool = False,
    max_answer: int = MAX_ANSWER,
    failed: Callable[[], DecisionError] | None = None,
) -> Answer:
    """POST `body`; the answer, or `failed()` (default: 503 `authorizer_unavailable`)
    when the service cannot be reached or its answer cannot be read.

    `headers` must not name Host or Content-Length (set here). A header that
    would split the request (a templated line break) is refused with 500.
    """
    headers = {"Host": endpoint.host, **headers, "Content-Length": str(len(body))}
    deadline = time.monotonic() + retry.give_up_after
    while True:
        try:
            response = endpoint.pool.request("POST", endpoint.target, headers, body)
            break
        except BadRequest as exc:
            log.error("%s: %s; refused", where, exc)
            raise internal("A header for the service could not be sent") from None
        except UpstreamError as exc:
            left = deadline - time.monotonic()
            if left > 0:
                time.sleep(min(RETRY_PAUSE, left))
                continue
            log.error("%s: %s is unreachable: %s; refused with 503", where, endpoint.url, exc)
            raise (failed or unavailable)() from None
    data = _body(response, max_answer if read else 0)
    if data is None:
        log.error(
            "%s: %s answered %d with a body that could not be read (or over %d bytes); "
            "refused with 503",
            where,
            endpoint.url,
            response.status,
            max_answer,
        )
        raise (failed or unavailable)()
    return Answer(response.status, response.headers, data)


def _body(response: UpstreamResponse, limit: int) -> bytes | None:
    """The body when `limit` is set (None past it, or when it breaks off); otherwise b"",
    a small body read to its end so the connection goes back to the pool."""
    cap = limit or MAX_ANSWER
    parts: list[bytes] = []
    read = 0
    try:
        while data := response.read1():
            read += len(data)
            if read > cap:
                response.close()
                return None if limit else b""
            if limit:
                parts.append(data)
    except UpstreamError:
        response.close()
        return None if limit else b""
    response.release()
    return b"".join(parts)


def rate_limited(answer: Answer, where: str, url: str) -> DecisionError:
    """The service's 429, handed on with its `Retry-After` (1 when it gave none)."""
    log.warning("%s: %s answered 429; passed on", where, url)
    kept = [(name, value) for name, value in answer.headers if name.lower() in RATE_LIMIT_HEADERS]
    if not any(name.lower() == "retry-after" for name, _ in kept):
        kept.insert(0, ("Retry-After", "1"))
    return DecisionError(429, "rate_limited", "Too many requests, try again later.", headers=kept)


def unavailable(error_id: str = "authorizer_unavailable", message: str = "") -> DecisionError:
    return DecisionError(
        503,
        error_id,
        message or "The authorization service is unavailable, try again shortly.",
        headers=[("Retry-After", "5")],
    )


def forward_headers(answer: Answer, names: Sequence[str], into: dict[str, str], where: str) -> None:
    """The answer's headers named in `forward_response_headers_to_upstream`, for the upstream.

    A listed header the answer lacks is set empty, as Oathkeeper does: the
    client's own header of that name must not reach the upstream as if the
    service had said it.
    """
    for name in names:
        into[name] = header_value(answer.header(name), name, where)
