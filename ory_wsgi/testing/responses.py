"""One request to the stand-in, the responses it answers with and Kratos' recurring errors."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from werkzeug.wrappers import Request, Response

from ory_wsgi.testing.documents import KratosError, go_json

SESSION_CACHE_CONTROL = "private, no-cache, no-store, must-revalidate"
JSON_TYPE = "application/json; charset=utf-8"
ERROR_JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"


def whoami_unauthorized() -> KratosError:
    return KratosError(401, reason="No valid session credentials found in the request.")


def session_inactive() -> KratosError:
    return KratosError(
        401,
        error_id="session_inactive",
        reason="No active session was found in this request.",
        message="request does not have a valid authentication session",
    )


def csrf_violation() -> KratosError:
    return KratosError(
        403,
        error_id="security_csrf_violation",
        reason=(
            "Please retry the flow and optionally clear your cookies. The request was rejected to"
            " protect you from Cross-Site-Request-Forgery (CSRF) which could cause account"
            " takeover, leaking personal information, and other serious security issues."
        ),
        details={"docs": "https://www.ory.sh/kratos/docs/debug/csrf"},
        message="the request was rejected to protect you from Cross-Site-Request-Forgery",
    )


class Call:
    """One request with what every handler needs: the base URL to emit and the client's wishes."""

    def __init__(self, request: Request, base: str) -> None:
        self.request = request
        self.base = base
        self.route_args: Mapping[str, Any] = {}

    @property
    def wants_json(self) -> bool:
        if self.request.mimetype == "application/json":
            return True
        accepted = self.request.accept_mimetypes.best_match(
            ["text/html", "application/json"], default="text/html"
        )
        return accepted == "application/json"

    @property
    def request_id(self) -> str:
        return self.request.headers.get("X-Request-ID", "")


class FlowRejected(Exception):
    """A submitted form was refused: the flow is shown again with these messages."""

    def __init__(self, message_id: int, text: str) -> None:
        super().__init__(text)
        self.message = {"id": message_id, "text": text, "type": "error"}


def redirect(location: str, method: str = "GET") -> Response:
    # Go's http.Redirect writes a small HTML body for GET and HEAD only.
    body = f'<a href="{escape(location)}">See Other</a>.\n\n' if method in ("GET", "HEAD") else ""
    response = Response(body, status=303, content_type=HTML_TYPE)
    response.headers["Location"] = location
    return response


def json_response(document: Any, status: int = 200) -> Response:
    return Response(go_json(document), status=status, content_type=JSON_TYPE)


def html_response(text: str, status: int = 200) -> Response:
    return Response(text, status=status, content_type=HTML_TYPE)
