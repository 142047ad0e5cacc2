"""Serving on werkzeug's development server (`ory-wsgi run`, the demo): its quirks handled.

    app = OwnDateAndServer(build_app(settings))
    run_simple(host, port, app, request_handler=QuietRequestHandler, threaded=True)

werkzeug's server writes its own `Date` and `Server` headers on every answer (http.server's
`send_response`), so the copies the upstream sent would reach the client twice: the wrapper
drops them. It also logs a line per request, beside the proxy's own access log line: the
quiet handler leaves that one line alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from werkzeug.serving import WSGIRequestHandler

from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SERVER_OWNED = frozenset({"date", "server"})


class OwnDateAndServer:
    """Drops the `Date` and `Server` headers of an answer; the server in front writes its own."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def without_server_headers(
            status: str, headers: list[tuple[str, str]], *exc_info: Any
        ) -> Any:
            kept = [(name, value) for name, value in headers if name.lower() not in SERVER_OWNED]
            return start_response(status, kept, *exc_info)

        return self.app(environ, without_server_headers)


class QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's handler without its line per request (errors are still logged)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None
