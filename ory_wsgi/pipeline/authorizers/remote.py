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
is refused with 413 without reading it, as the proxy refuses it. The same
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
from collections.abc import MutableMapping
from typing import Any

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
        self.max_body = services.settings.proxy.max_body_size or DEFAULT_MAX_BODY

    def prepare(self, config: Config, where: str) -> RemoteCheck:
        known_keys(config, KEYS, where)
        return prepare_check(config, where, self._endpoints, max_delay=0.5)

    def authorize(self, request: RequestFacts, session: AuthSession, prepared: RemoteCheck) -> None:
        body = take_body(request.environ, self.max_body, prepared.where)
        content_type = next(iter(request.headers.getlist("Content-Type")), "")
        run_check(prepared, request, session, template_context(session), body, content_type)


def take_body(environ: Any, limit: int, where: str) -> bytes:
    """The request body, at most `limit` bytes, left in `environ` to be read again."""
    if not isinstance(environ, MutableMapping):
        raise internal("The request body cannot be handed on")
    coding = environ.get("HTTP_TRANSFER_ENCODING")
    length = environ.get("CONTENT_LENGTH") or ""
    if coding is not None:
        if [c.strip().lower() for c in coding.split(",")] != ["chunked"] or length:
            raise _bad(where, "a Transfer-Encoding other than chunked alone")
        size = -1
    elif length:
        # isdigit alone lets `²` through, which int() refuses.
        if not (length.isascii() and length.isdigit()):
            raise _bad(where, "an invalid Content-Length")
        size = int(length)
        if size > limit:
            raise _too_large(where, limit)
    else:
        return b""
    stream = environ["wsgi.input"]
    parts: list[bytes] = []
    read = 0
    try:
        while size < 0 or read < size:
            data = stream.read(CHUNK if size < 0 else min(CHUNK, size - read))
            if not data:
                if size >= 0:
                    raise _bad(where, "a body shorter than its Content-Length")
                break
            read += len(data)
            if read > limit:
                raise _too_large(where, limit)
            parts.append(data)
    except (OSError, ValueError) as exc:
        log.warning("%s: the request body could not be read: %s", where, exc)
        raise DecisionError(400, "bad_request", "The request body could not be read.") from None
    body = b"".join(parts)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["wsgi.input_terminated"] = True
    return body


def _bad(where: str, what: str) -> DecisionError:
    log.warning("%s: bad_request: %s", where, what)
    return DecisionError(400, "bad_request", f"Malformed request: {what}.")


def _too_large(where: str, limit: int) -> DecisionError:
    log.warning("%s: body_too_large: more than %d bytes", where, limit)
    return DecisionError(
        413,
        "body_too_large",
        f"The request body is larger than {limit} bytes.",
        headers=[("Connection", "close")],
    )
