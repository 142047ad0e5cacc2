"""CORS for the configured origins: preflights answered here, before any auth.

    app = Cors(app, allowed_origins=["https://*.example.com"], public_url="https://example.com")

An allowed origin gets itself back in `Access-Control-Allow-Origin` with
credentials; any other origin gets no CORS headers at all (a preflight from
it is refused with 403 and never forwarded). The upstream's own allow
headers are removed so that a response never carries two.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from ory_wsgi.answers import error_answer
from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("ory_wsgi.cors")

ALLOW_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
DEFAULT_HEADERS = (
    "Accept",
    "Accept-Language",
    "Content-Language",
    "Content-Type",
    "Authorization",
    "Cookie",
    "X-Requested-With",
    "X-Session-Token",
    "X-CSRF-Token",
    "X-Request-Id",
)
EXPOSE_HEADERS = "Content-Length, Content-Type, X-Request-Id, Location, Retry-After"
_UPSTREAM_CORS = frozenset({"access-control-allow-origin", "access-control-allow-credentials"})
_LABEL = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"


class OriginPolicy:
    """Which origins may call with credentials: exact, one-label wildcard, or `*`."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.any = "*" in allowed
        self.exact = frozenset(
            origin.lower().rstrip("/") for origin in allowed if "*" not in origin
        )
        patterns = [
            _wildcard_pattern(origin) for origin in allowed if "*" in origin and origin != "*"
        ]
        self.pattern = re.compile("|".join(patterns)) if patterns else None
        if self.any:
            log.warning(
                'cors: allowed_origins contains "*": every origin may call with credentials'
            )

    def allows(self, origin: str) -> bool:
        lowered = origin.lower()
        if lowered in self.exact:
            return True
        if lowered == "null" or not _well_formed(lowered):
            return False
        if self.pattern is not None and self.pattern.fullmatch(lowered):
            return True
        return self.any


def _wildcard_pattern(origin: str) -> str:
    """`https://*.example.com` -> one DNS label in place of `*`, anchored by fullmatch."""
    scheme, _, host = origin.lower().rstrip("/").partition("://")
    return f"(?:{re.escape(scheme)}://" + re.escape(host).replace(r"\*", _LABEL) + ")"


def _well_formed(origin: str) -> bool:
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not parts.path
        and not parts.query
        and not parts.username
        and origin == f"{parts.scheme}://{parts.netloc}"
    )


class Cors:
    def __init__(
        self,
        app: WSGIApplication,
        allowed_origins: Sequence[str],
        public_url: str,
        additional_headers: Sequence[str] = (),
        max_age: float = 600.0,
    ) -> None:
        self.app = app
        origin = urlsplit(public_url)
        self.policy = OriginPolicy(list(allowed_origins) or [f"{origin.scheme}://{origin.netloc}"])
        headers = list(DEFAULT_HEADERS)
        headers += [h for h in additional_headers if h.lower() not in {d.lower() for d in headers}]
        self.preflight_headers = [
            ("Access-Control-Allow-Methods", ALLOW_METHODS),
            ("Access-Control-Allow-Headers", ", ".join(headers)),
            ("Access-Control-Max-Age", str(int(max_age))),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
            ("Content-Length", "0"),
        ]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        origin: str = environ.get("HTTP_ORIGIN", "")
        allowed = bool(origin) and self.policy.allows(origin)
        if (
            environ["REQUEST_METHOD"] == "OPTIONS"
            and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
        ):
            return self._preflight(environ, start_response, origin, allowed)

        def cors_start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            headers[:] = [(k, v) for k, v in headers if k.lower() not in _UPSTREAM_CORS]
            _add_vary(headers, "Origin")
            if allowed:
                headers.append(("Access-Control-Allow-Origin", origin))
                headers.append(("Access-Control-Allow-Credentials", "true"))
                headers.append(("Access-Control-Expose-Headers", EXPOSE_HEADERS))
            return start_response(status, headers, *exc)

        return self.app(environ, cors_start_response)

    def _preflight(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        origin: str,
        allowed: bool,
    ) -> Iterable[bytes]:
        environ["ory.decision"] = "preflight"
        if not allowed:
            log.info("cors: preflight from a refused origin %r", origin[:100])
            return error_answer(
                environ,
                start_response,
                403,
                "This origin is not allowed.",
                headers=[("Vary", "Origin")],
                force_json=True,
            )
        start_response(
            "204 No Content",
            [("Access-Control-Allow-Origin", origin), *self.preflight_headers],
        )
        return []


def _add_vary(headers: list[tuple[str, str]], value: str) -> None:
    for index, (name, existing) in enumerate(headers):
        if name.lower() == "vary":
            tokens = {t.strip().lower() for t in existing.split(",")}
            if value.lower() not in tokens and "*" not in tokens:
                headers[index] = (name, f"{existing}, {value}")
            return
    headers.append(("Vary", value))
