"""Short answers the proxy gives itself: errors in Kratos' envelope, or HTML for browsers."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

from ory_wsgi.wsgi import StartResponse, WSGIEnvironment


def wants_html(environ: WSGIEnvironment) -> bool:
    """True when the client prefers text/html to JSON (a browser navigating)."""
    accept = environ.get("HTTP_ACCEPT", "")
    if "text/html" not in accept:
        return False
    return "application/json" not in accept or accept.index("text/html") < accept.index(
        "application/json"
    )


def error_envelope(status: int, message: str, reason: str = "", error_id: str = "") -> bytes:
    phrase = HTTPStatus(status).phrase
    error: dict[str, Any] = {}
    if error_id:
        error["id"] = error_id
    error["code"] = status
    error["status"] = phrase
    if reason:
        error["reason"] = reason
    error["message"] = message
    return json.dumps({"error": error}, separators=(",", ":")).encode()


def error_answer(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    status: int,
    message: str,
    *,
    error_id: str = "",
    headers: Sequence[tuple[str, str]] = (),
    force_json: bool = False,
) -> Iterable[bytes]:
    """A short error page, JSON or HTML by Accept; never a traceback."""
    phrase = HTTPStatus(status).phrase
    if not force_json and wants_html(environ):
        body = (
            f"<!doctype html><title>{status} {phrase}</title>"
            f"<h1>{status} {phrase}</h1><p>{html.escape(message)}</p>\n"
        ).encode()
        content_type = "text/html; charset=utf-8"
    else:
        body = error_envelope(status, message, error_id=error_id)
        content_type = "application/json"
    response_headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        *headers,
    ]
    if error_id:
        response_headers.append(("Ory-Error-Id", error_id))
    start_response(f"{status} {phrase}", response_headers)
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def json_answer(
    start_response: StartResponse,
    status: int,
    document: Any,
    headers: Sequence[tuple[str, str]] = (),
) -> Iterable[bytes]:
    body = json.dumps(document, separators=(",", ":")).encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers],
    )
    return [body]
