"""Forward-auth for gateways: `/.ory/proxy/decisions[/<path>]` answers 200, 401 or 403.

    app = Decisions(app, around, trusted_proxies=("10.0.0.0/8",))

nginx `auth_request`, Caddy `forward_auth` and Traefik `forwardAuth` ask
before they serve a request. The original request is rebuilt from
`X-Forwarded-Method/-Proto/-Host/-Uri` (believed only from
`trusted_proxies`; without them, the method of this request and the raw path
after `/decisions`, read as the proxy reads a path), then run through the
same session lookup, protection and JWT layers as proxied requests (`around`
wraps an app in them), ending in an app that allows; CORS preflights too,
with no exemption. Their answer is mapped onto what gateways understand:

- allowed: 200, the JWT in `Authorization`, the identity id in `X-Ory-Subject`;
- no session: 401 (a browser's login redirect becomes a 401 whose `Location`
  is the login URL, for the gateway to redirect to);
- anything else: 403 with `X-Ory-Error` (`session_aal2_required`,
  `ory_unavailable`, `rate_limited`, `bad_request`, `untrusted_proxy`,
  `internal_error`).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from ory_wsgi.answers import error_answer
from ory_wsgi.errors import BadRequest
from ory_wsgi.headers import TrustedProxies, client_host
from ory_wsgi.upstream.forwarder import request_target
from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("ory_wsgi.decisions")

DECISIONS_PATH = "/.ory/proxy/decisions"
Around = Callable[[WSGIApplication], WSGIApplication]

_METHOD_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$")
_EMPTY_INPUT = b""
# Which 403 a refusal of the stack becomes, by the status the stack answered.
_REFUSALS = {429: "rate_limited", 503: "ory_unavailable", 400: "bad_request"}
_NO_STORE = ("Cache-Control", "no-store")


class Decisions:
    """Answer `/.ory/proxy/decisions[/<path>]` here; pass every other request to `app`."""

    def __init__(
        self, app: WSGIApplication, around: Around, trusted_proxies: Sequence[str] = ()
    ) -> None:
        self.app = app
        self.stack = around(_allow)
        self.trusted = TrustedProxies(trusted_proxies)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # The raw target, as the proxy reads it: PATH_INFO is decoded (`%23` would
        # be a `#` there) and moved by SCRIPT_NAME.
        try:
            path, _, query = request_target(environ).partition("?")
        except BadRequest:
            return self.app(environ, start_response)
        if path != DECISIONS_PATH and not path.startswith(DECISIONS_PATH + "/"):
            return self.app(environ, start_response)
        try:
            original = self._original_request(environ, path[len(DECISIONS_PATH) :] or "/", query)
        except BadRequest as exc:
            code = "untrusted_proxy" if isinstance(exc, UntrustedProxy) else "bad_request"
            log.warning("decision refused, %s: %s", code, exc)
            return _refuse(environ, start_response, code, f"Malformed forward-auth request: {exc}.")
        # A CORS preflight is judged like any request: gateways answer preflights
        # themselves, and one they pass on must not reach a protected app anonymously.
        return self._decide(environ, original, start_response)

    def _original_request(
        self, environ: WSGIEnvironment, target: str, query: str
    ) -> WSGIEnvironment:
        """A copy of `environ` that looks like the request the gateway is asking about.

        `target` and `query` are what follows `/decisions` in the raw request
        target, used when no trusted `X-Forwarded-Uri` names the request.
        """
        original = dict(environ)
        method = environ.get("REQUEST_METHOD", "GET")
        forwarded_method = environ.get("HTTP_X_FORWARDED_METHOD")
        forwarded_uri = environ.get("HTTP_X_FORWARDED_URI")
        if environ.get("REMOTE_ADDR", "") in self.trusted:
            method = forwarded_method or method
            if forwarded_uri:
                target, _, query = forwarded_uri.partition("?")
            host = _first(environ.get("HTTP_X_FORWARDED_HOST"))
            if host:
                original["HTTP_HOST"] = client_host({"HTTP_HOST": host})
            proto = _first(environ.get("HTTP_X_FORWARDED_PROTO"))
            if proto:
                if proto not in ("http", "https"):
                    raise BadRequest(f"X-Forwarded-Proto is not http or https: {proto[:20]!r}")
                original["wsgi.url_scheme"] = proto
        elif forwarded_method or forwarded_uri:
            # Ignoring them would judge another path than the gateway asks about.
            raise UntrustedProxy(
                f"X-Forwarded-Method/-Uri from {environ.get('REMOTE_ADDR')}, which is not in "
                "[proxy] trusted_proxies"
            )
        if not _METHOD_RE.match(method):
            raise BadRequest("X-Forwarded-Method is not an HTTP method")
        if not target.startswith("/") or target.startswith("//"):
            raise BadRequest("X-Forwarded-Uri is not a path")
        raw = target + (f"?{query}" if query else "")
        original["REQUEST_METHOD"] = method.upper()
        original["RAW_URI"] = original["REQUEST_URI"] = raw
        original["PATH_INFO"] = unquote_to_bytes(target).decode("latin-1")
        original["SCRIPT_NAME"] = ""
        original["QUERY_STRING"] = query
        # The gateway keeps the body; the layers must not wait for one.
        original["CONTENT_LENGTH"] = "0"
        original["wsgi.input"] = io.BytesIO(_EMPTY_INPUT)
        original.pop("HTTP_TRANSFER_ENCODING", None)
        original.pop("wsgi.input_terminated", None)
        return original

    def _decide(
        self, environ: WSGIEnvironment, original: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        answer = _Answer()
        try:
            body = self.stack(original, answer.start_response)
            try:
                content = b"".join(body)
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
        except Exception:
            log.exception("internal_error: decision for request %s", environ.get("ory.request_id"))
            environ["ory.error"] = "internal_error"
            return _refuse(environ, start_response, "internal_error", "The decision failed.")
        for key in ("decision", "subject", "error"):
            value = original.get("ory." + key)
            if value:
                environ["ory." + key] = value
        status = answer.status
        if status == 200 or status == 401:
            start_response(answer.status_line, answer.headers)
            return [content]
        if 300 <= status < 400 and answer.header("Location"):
            # Gateways take only 200/401/403: the login redirect (a `redirect` error
            # handler's too, whatever its code) travels in Location.
            environ["ory.decision"] = "login"
            return error_answer(
                environ,
                start_response,
                401,
                "The request could not be authorized",
                headers=[("WWW-Authenticate", "Bearer"), *answer.named("Location")],
                force_json=True,
            )
        if status == 403:
            code = answer.header("Ory-Error-Id") or "forbidden"
            start_response(answer.status_line, [*answer.headers, ("X-Ory-Error", code)])
            return [content]
        code = _REFUSALS.get(status, "internal_error")
        return _refuse(
            environ,
            start_response,
            code,
            f"Refused: {code.replace('_', ' ')}.",
            answer.named("Retry-After"),
        )


class UntrustedProxy(BadRequest):
    """Forwarded headers from a peer that is not in `trusted_proxies`."""


class _Answer:
    """What the layer stack answered, kept for mapping instead of being sent."""

    __slots__ = ("headers", "status", "status_line")

    def __init__(self) -> None:
        self.status = 0
        self.status_line = ""
        self.headers: list[tuple[str, str]] = []

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        self.status_line = status
        self.status = int(status[:3])
        self.headers = headers
        return _no_write

    def named(self, name: str) -> list[tuple[str, str]]:
        lowered = name.lower()
        return [(key, value) for key, value in self.headers if key.lower() == lowered]

    def header(self, name: str) -> str:
        found = self.named(name)
        return found[0][1] if found else ""


def _no_write(data: bytes) -> object:
    raise RuntimeError("the decision stack must not use write()")


def _allow(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The end of the stack: reaching it means the request may pass."""
    headers = [("Content-Length", "0"), _NO_STORE]
    authorization = environ.get("ory.authorization")
    if authorization:
        headers.append(("Authorization", authorization))
    # The mutators' other headers (`header`, `cookie`): the gateway copies them upstream.
    headers.extend(environ.get("ory.upstream_headers", {}).items())
    subject = environ.get("ory.subject")
    if subject and environ.get("ory.session") is not None:
        headers.append(("X-Ory-Subject", subject))
    environ.setdefault("ory.decision", "allow")
    start_response("200 OK", headers)
    return []


def _refuse(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    code: str,
    message: str,
    headers: Sequence[tuple[str, str]] = (),
) -> Iterable[bytes]:
    environ["ory.decision"] = "deny"
    environ.setdefault("ory.error", code)
    return error_answer(
        environ,
        start_response,
        403,
        message,
        headers=[("X-Ory-Error", code), *headers],
        force_json=True,
    )


def _first(value: object) -> str:
    if not isinstance(value, str):
        return ""
    return value.split(",", 1)[0].strip()
