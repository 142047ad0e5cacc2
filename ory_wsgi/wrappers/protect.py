"""Enforce `[[protect]]`: a protected path is served only with a good enough session.

    app = Protect(app, public_url="https://app.example.com", cache_control="private, no-store")

Runs after the session lookup. Allowed: the response gets `cache_control`
(`[proxy] protected_cache_control`) when it has no Cache-Control. No
session: a browser navigating is sent to Ory's login (303, `return_to` =
this page); any other client gets 401 in Kratos' error envelope. Session
below the rule's `aal`: the same with `aal=aal2`, or 403. Ory unreachable:
503 with `Retry-After` (fail closed); Ory rate-limiting: 429 passed on.
The proxy and the embedded middleware answer CORS preflights before this
layer; the decisions endpoint judges them here like any other request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from ory_wsgi.answers import error_answer, wants_html
from ory_wsgi.paths import CompiledRule
from ory_wsgi.pipeline.authenticators.session import return_to_url
from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("ory_wsgi.protect")

AAL_RANK = {"aal0": 0, "aal1": 1, "aal2": 2, "aal3": 3}
# Kratos' own whoami 401, byte for byte, so that clients written for Kratos understand it.
UNAUTHORIZED = json.dumps(
    {
        "error": {
            "code": 401,
            "status": "Unauthorized",
            "reason": "No valid session credentials found in the request.",
            "message": "The request could not be authorized",
        }
    },
    separators=(",", ":"),
).encode()


class Protect:
    def __init__(self, app: WSGIApplication, public_url: str, cache_control: str = "") -> None:
        self.app = app
        self.public_url = public_url.rstrip("/")
        self.login_url = f"{self.public_url}/.ory/self-service/login/browser"
        self.cache_control = cache_control

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        rule: CompiledRule | None = environ.get("ory.rule")
        if rule is None:
            return self.app(environ, start_response)
        session = environ.get("ory.session")
        error = environ.get("ory.error")
        if session is not None:
            needed = rule.rule.aal
            have = session.get("authenticator_assurance_level", "aal1")
            if not needed or AAL_RANK.get(have, 0) >= AAL_RANK[needed]:
                environ["ory.decision"] = "allow"
                if self.cache_control:
                    start_response = self._uncached(start_response)
                return self.app(environ, start_response)
            return self._step_up(environ, start_response, needed)
        if error == "rate_limited":
            environ["ory.decision"] = "rate_limited"
            retry = environ.get("ory.retry_after") or "1"
            return error_answer(
                environ,
                start_response,
                429,
                "Too many requests, try again later.",
                headers=[("Retry-After", retry)],
            )
        if error:
            environ["ory.decision"] = "unavailable"
            log.error("ory_unavailable: refusing protected path %s", environ.get("ory.match_path"))
            return error_answer(
                environ,
                start_response,
                503,
                "The login service is unavailable, try again shortly.",
                headers=[("Retry-After", "5")],
            )
        if environ.get("ory.aal_required"):
            return self._step_up(environ, start_response, "aal2")
        environ["ory.decision"] = "login"
        if _navigating(environ):
            return self._redirect(environ, start_response, "")
        return _json(
            environ,
            start_response,
            "401 Unauthorized",
            UNAUTHORIZED,
            [("WWW-Authenticate", "Bearer")],
        )

    def _uncached(self, start_response: StartResponse) -> StartResponse:
        """`start_response` that gives a response without Cache-Control ours: a member
        page must not come back from the browser's cache after logout."""
        cache_control = self.cache_control

        def uncached(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            if not any(name.lower() == "cache-control" for name, _ in headers):
                headers.append(("Cache-Control", cache_control))
            return start_response(status, headers, *exc_info)

        return uncached

    def _step_up(
        self, environ: WSGIEnvironment, start_response: StartResponse, aal: str
    ) -> Iterable[bytes]:
        environ["ory.decision"] = "step_up"
        if _navigating(environ):
            return self._redirect(environ, start_response, aal)
        # Kratos' session_aal2_required, with where to go: SPAs send the browser there.
        target = self._login_location(environ, aal)
        error: dict[str, Any] = {
            "id": "session_aal2_required",
            "code": 403,
            "status": "Forbidden",
            "reason": f"This page needs a session with authenticator assurance level {aal}.",
            "details": {"redirect_browser_to": target},
            "message": "Session does not fulfill the requested Authenticator Assurance Level",
        }
        body = json.dumps({"error": error, "redirect_browser_to": target}, separators=(",", ":"))
        return _json(
            environ,
            start_response,
            "403 Forbidden",
            body.encode(),
            [("Ory-Error-Id", "session_aal2_required")],
        )

    def _login_location(self, environ: WSGIEnvironment, aal: str) -> str:
        return_to = quote(return_to_url(self.public_url, environ["ory.target"]), safe="")
        return f"{self.login_url}?" + (f"aal={aal}&" if aal else "") + f"return_to={return_to}"

    def _redirect(
        self, environ: WSGIEnvironment, start_response: StartResponse, aal: str
    ) -> Iterable[bytes]:
        start_response(
            "303 See Other",
            [
                ("Location", self._login_location(environ, aal)),
                ("Content-Length", "0"),
                ("Cache-Control", "no-store"),
            ],
        )
        return []


def _navigating(environ: WSGIEnvironment) -> bool:
    return environ.get("REQUEST_METHOD") in ("GET", "HEAD") and wants_html(environ)


def _json(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    status: str,
    body: bytes,
    headers: list[tuple[str, str]],
) -> Iterable[bytes]:
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *headers,
        ],
    )
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
