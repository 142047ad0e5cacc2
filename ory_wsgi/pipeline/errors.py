"""One error type that renders itself, for every refusal the pipeline makes.

    raise DecisionError(401, "unauthorized", "The request could not be authorized",
                        headers=[("WWW-Authenticate", "Bearer")])

Shaped like werkzeug's HTTPException: it carries its status and headers and is a
WSGI app (`error(environ, start_response)`), answering Kratos' error envelope in
JSON, or a short HTML page to a browser (by `Accept`), never a traceback.
`error_id` is the snake-cased kind that error handlers' `when.error` clauses,
logs (`ory.error`) and the decisions endpoint's `X-Ory-Error` use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from ory_wsgi.answers import error_answer
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

# Error kinds by status, as Oathkeeper's `when.error` names them.
KINDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    429: "too_many_requests",
    500: "internal_server_error",
    503: "service_unavailable",
}


class DecisionError(Exception):
    """A refusal: `status`, `error_id`, a short `message`, extra `headers`, optional `body`.

    `body` (bytes), when set, is sent as it is with `content_type` (Kratos' own
    401 body, a 303 with no body); otherwise the envelope is built from `message`.
    `kind` is the `when.error` name (by status unless given). `reason` and
    `details` say more than the message; only the `json` error handler's
    `verbose` mode shows them to the client.
    """

    def __init__(
        self,
        status: int,
        error_id: str,
        message: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        content_type: str = "application/json",
        kind: str = "",
        force_json: bool = False,
        reason: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{error_id}: {message}")
        self.status = status
        self.error_id = error_id
        self.message = message
        self.headers = list(headers)
        self.body = body
        self.content_type = content_type
        self.kind = kind or KINDS.get(status, error_id)
        self.force_json = force_json
        self.reason = reason
        self.details = dict(details) if details else {}

    def header(self, name: str) -> str:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return ""

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ.setdefault("ory.error", self.error_id)
        if self.body is None:
            return error_answer(
                environ,
                start_response,
                self.status,
                self.message,
                headers=self.headers,
                force_json=self.force_json,
            )
        headers = [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.body))),
            ("Cache-Control", "no-store"),
            *self.headers,
        ]
        start_response(f"{self.status} {HTTPStatus(self.status).phrase}", headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [self.body]


class NotResponsible(Exception):
    """An authenticator that does not apply to this request (no credential of its kind)."""


def internal(message: str) -> DecisionError:
    """A rule that failed validation or a handler that broke: 500, closed."""
    return DecisionError(500, "internal_server_error", message)
