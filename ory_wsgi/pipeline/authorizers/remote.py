"""`remote`: POST the request's own body to an API; its status decides (Oathkeeper's `remote`).

    [rule.authorizer]
    handler = "remote"
    config = { remote = "http://authz:8080/check",
               headers = { X-Subject = "{{ .Subject }}" },
               forward_response_headers_to_upstream = ["X-Tenant"],
               retry = { max_delay = "500ms", give_up_after = "1s" } }

The service gets the request body with the request's `Content-Type`, the
client's `Authorization` and the rendered `headers`; 200 allows (the
`forward_response_headers_to_upstream` headers go upstream), 403 denies, 429
is passed on with its `Retry-After`, anything else is 503 (closed); see
`ory_wsgi.pipeline.authorizers.remote_check`. `retry.max_delay` defaults to
500ms (each attempt), `give_up_after` to 1s, as in Oathkeeper.

The body. Oathkeeper tees the body into the authorizer and then upstream;
here it is read once, before the call, at most `[proxy] max_body_size` bytes
(1 MiB when that is 0, unlimited, since it is held in memory): a bigger body
is refused with 413 without reading it, as the proxy refuses it; a body
trickled in slower than `[proxy] body_timeout`/`body_min_rate` allow is 408,
as in the forwarder. The same
bytes are then handed on as a fresh `wsgi.input` (with its `Content-Length`,
the chunked framing decoded), so in proxy mode the upstream and in embedded
mode the application get exactly what was checked. A `Transfer-Encoding`
other than `chunked` alone, or next to a `Content-Length`, is 400. The
decisions endpoint has no body (nginx `auth_request`, Caddy `forward_auth`
and Traefik keep it): there the service gets an empty body, with the
`Content-Type` the gateway passed on.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import MutableMapping
from typing import Any

from ory_wsgi.body_deadline import BodyDeadline, BodyWatcher
from ory_wsgi.pipeline.authorizers.remote_check import RemoteCheck, prepare_check, run_check
from ory_wsgi.pipeline.errors import DecisionError, internal
from ory_wsgi.pipeline.handler import Config
from ory_wsgi.pipeline.handler_config import known_keys
from ory_wsgi.pipeline.mutators.context import template_context
from ory_wsgi.pipeline.service_call import Endpoints
from ory_wsgi.pipeline.services import Services
from ory_wsgi.pipeline.state import AuthSession, RequestFacts

log = logging.getLogger("ory_wsgi.pipeline")

KEYS = ("remote", "headers", "forward_response_headers_to_upstream", "retry")
DEFAULT_MAX_BODY = 1024 * 1024  # when [proxy] max_body_size is 0 (unlimited)
CHUNK = 64 * 1024


class Remote:
    name = "remote"

    def __init__(self, services: Services) -> None:
        self._endpoints = Endpoints()
        proxy = services.settings.proxy
        self.max_body = proxy.max_body_size or DEFAULT_MAX_BODY
        self.read_timeout = proxy.read_timeout
        self.watcher = (
            BodyWatcher(proxy.body_timeout, proxy.body_min_rate) if proxy.body_timeout else None
        )

    def prepare(self, config: Config, where: str) -> RemoteCheck:
        known_keys(config, KEYS, where)
        return prepare_check(config, where, self._endpoints, max_delay=0.5)

    def authorize(self, request: RequestFacts, session: AuthSession, prepared: RemoteCheck) -> None:
        body = self.take_body(request.environ, prepared.where)
        content_type = next(iter(request.headers.getlist("Content-Type")), "")
        run_check(prepared, request, session, template_context(session), body, content_type)

    def take_body(self, environ: Any, where: str) -> bytes:
        """The request body, at most `max_body` bytes, left in `environ` to be read again.

        Read under the proxy's body deadline (`[proxy] body_timeout`,
        `body_min_rate`, `read_timeout`), as the forwarder reads it: gunicorn
        itself puts no time limit on a body.
        """
        if not isinstance(environ, MutableMapping):
            raise internal("The request body cannot be handed on")
        size = _announced_size(environ, self.max_body, where)
        if size == 0:
            return b""
        client = environ.get("gunicorn.socket")
        blocking = client.gettimeout() if client is not None else None
        deadline = None
        if self.watcher is not None:
            deadline = self.watcher.watch(client or environ.get("werkzeug.socket"))
        try:
            if client is not None:
                client.settimeout(self.read_timeout)
            body = _read(environ["wsgi.input"], size, self.max_body, where, deadline)
        finally:
            if deadline is not None and self.watcher is not None:
                self.watcher.release(deadline)
            if client is not None:
                client.settimeout(blocking)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = True
        return body


def _announced_size(environ: MutableMapping[str, Any], limit: int, where: str) -> int:
    """The Content-Length (0: no body), or -1 for a chunked body; refuses what cannot pass."""
    coding = environ.get("HTTP_TRANSFER_ENCODING")
    length = environ.get("CONTENT_LENGTH") or ""
    if coding is not None:
        if [c.strip().lower() for c in coding.split(",")] != ["chunked"] or length:
            raise _bad(where, "a Transfer-Encoding other than chunked alone")
        return -1
    if not length:
        return 0
    # isdigit alone lets `²` through, which int() refuses.
    if not (length.isascii() and length.isdigit()):
        raise _bad(where, "an invalid Content-Length")
    size = int(length)
    if size > limit:
        raise _too_large(where, limit)
    return size


def _read(stream: Any, size: int, limit: int, where: str, deadline: BodyDeadline | None) -> bytes:
    parts: list[bytes] = []
    read = 0
    while size < 0 or read < size:
        amount = CHUNK if size < 0 else min(CHUNK, size - read)
        if deadline is not None:
            amount = deadline.block(amount)
        try:
            data = stream.read(amount)
        except Exception as exc:  # gunicorn's and werkzeug's own errors for a broken body
            if deadline is not None and deadline.expired:
                raise _too_slow(where, deadline) from None
            log.warning("%s: the request body could not be read: %s", where, exc)
            raise DecisionError(400, "bad_request", "The request body could not be read.") from None
        if deadline is not None:
            if deadline.expired:
                raise _too_slow(where, deadline)
            deadline.received(len(data))
        if not data:
            if size >= 0:
                raise _bad(where, "a body shorter than its Content-Length")
            break
        read += len(data)
        if read > limit:
            raise _too_large(where, limit)
        parts.append(data)
    return b"".join(parts)


def _too_slow(where: str, deadline: BodyDeadline) -> DecisionError:
    log.warning(
        "%s: body_timeout: %d bytes of the request body in %.1fs, too slow",
        where,
        deadline.received_bytes,
        time.monotonic() - deadline.started,
    )
    return DecisionError(
        408,
        "body_timeout",
        "The request body was not received in time.",
        headers=[("Connection", "close")],
    )


def _bad(where: str, what: str) -> DecisionError:
    log.warning("%s: bad_request: %s", where, what)
    # The body was left unread: this connection cannot carry another request.
    return DecisionError(
        400, "bad_request", f"Malformed request: {what}.", headers=[("Connection", "close")]
    )


def _too_large(where: str, limit: int) -> DecisionError:
    log.warning("%s: body_too_large: more than %d bytes", where, limit)
    return DecisionError(
        413,
        "body_too_large",
        f"The request body is larger than {limit} bytes.",
        headers=[("Connection", "close")],
    )
