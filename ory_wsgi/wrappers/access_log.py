"""Request ids and the access log: one JSON line per request, the outermost layer.

    app = AccessLog(app)

A well-formed incoming `X-Request-Id` is kept, anything else is replaced by a
new one; either way the upstream and the client both see it. The line is
written when the response body is finished, so its status, size and timing
are the real ones. A response is logged as 499 only when the client really
went away: writing to it failed, or its request body stopped short. A body
the server stopped sending without an error (a followed redirect) keeps its
status; one the upstream broke off mid-body gets that failure's (502 or 504).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ory_wsgi.answers import error_envelope
from ory_wsgi.logs import direct_json_handler, json_line
from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("ory_wsgi.access")
errors = logging.getLogger("ory_wsgi")

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
INTERNAL_ERROR = "An internal server error occurred, please contact the system administrator"
QUIET_PATHS = frozenset({"/.ory/proxy/health/alive", "/.ory/proxy/health/ready"})


class AccessLog:
    """Give each request an id and log one line for it when it is done."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = environ.get("HTTP_X_REQUEST_ID", "")
        if not REQUEST_ID_RE.fullmatch(request_id):
            request_id = os.urandom(16).hex()
            environ["HTTP_X_REQUEST_ID"] = request_id
        environ["ory.request_id"] = request_id
        record = _Record(environ, started)

        def logged_start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            record.status = int(status[:3])
            # The upstream may echo the id itself: the client gets it once.
            headers = [item for item in headers if item[0].lower() != "x-request-id"]
            headers.append(("X-Request-Id", request_id))
            return start_response(status, headers, *exc)

        try:
            body = self.app(environ, logged_start_response)
        except Exception:
            errors.exception("internal_error: request %s", request_id)
            return record.internal_error(start_response, sys.exc_info())
        if environ.get("PATH_INFO") in QUIET_PATHS:
            return body
        return LoggedBody(body, record)


class _Record:
    __slots__ = ("environ", "size", "started", "status")

    def __init__(self, environ: WSGIEnvironment, started: float) -> None:
        self.environ = environ
        self.started = started
        self.status = 0
        self.size = 0

    def write(self, status: int) -> None:
        environ = self.environ
        if not log.isEnabledFor(logging.INFO):
            return
        fields: dict[str, Any] = {
            "request_id": environ["ory.request_id"],
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": status,
            "bytes": self.size,
            "duration_ms": round((time.perf_counter() - self.started) * 1000.0, 3),
            "client": environ.get("REMOTE_ADDR"),
        }
        upstream_ms = environ.get("ory.upstream_ms")
        if upstream_ms is not None:
            fields["upstream_ms"] = round(upstream_ms, 3)
        for key in ("decision", "subject", "error"):
            value = environ.get("ory." + key)
            if value:
                fields[key] = value
        handler = direct_json_handler(log)
        if handler is None:
            log.info("request", extra={"fields": fields})
        else:
            handler.write_line(json_line(time.time(), "info", log.name, "request", fields))

    def internal_error(self, start_response: StartResponse, exc_info: Any) -> Iterable[bytes]:
        body = error_envelope(500, INTERNAL_ERROR)
        self.status = 500
        self.size = len(body)
        start_response(
            "500 Internal Server Error",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("X-Request-Id", self.environ["ory.request_id"]),
            ],
            exc_info,
        )
        self.write(500)
        return [body]


class LoggedBody:
    """Counts the bytes the client was sent; logs the line on close."""

    def __init__(self, body: Iterable[bytes], record: _Record) -> None:
        self.body = body
        self.record = record
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        record = self.record
        try:
            for chunk in self.body:
                record.size += len(chunk)
                yield chunk
        except Exception as exc:
            # The body broke off on our side (the upstream stopped, say), not the client's.
            failed = getattr(exc, "status", None)
            record.status = failed if isinstance(failed, int) else 500
            self.finished = True
            raise
        self.finished = True

    def close(self) -> None:
        record = self.record
        failed = write_failed(self.finished)
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            record.write(status_sent(record.environ, record.status, failed))


# The 499 rule, shared with the metrics (ory_wsgi.metrics.MeasuredBody).
def write_failed(finished: bool) -> bool:
    """Whether close() runs because a write to the client failed; call it before closing.

    A failed write reaches close() with its error still in flight: gunicorn and
    werkzeug call close() from a `finally`. A server that stopped iterating for
    any other reason (the client had its redirect and dropped the rest) did not
    see the client abort.
    """
    return not finished and isinstance(sys.exc_info()[1], OSError)


def status_sent(environ: WSGIEnvironment, status: int, write_failed: bool) -> int:
    """The status to count: 499 when the client went away (a failed write, or a request
    body that stopped short), else the one it was answered with."""
    return 499 if write_failed or environ.get("ory.client_gone") else status
