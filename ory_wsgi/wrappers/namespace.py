"""The proxy namespace `/.ory/proxy/*`: answered here, never forwarded.

app = ProxyNamespace(app)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ory_wsgi.answers import error_answer, json_answer
from ory_wsgi.paths import EMBEDDED_KEY
from ory_wsgi.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PREFIX = "/.ory/proxy/"
Handler = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]


def alive(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    return json_answer(start_response, 200, {"status": "ok"}, [("Cache-Control", "no-store")])


class ProxyNamespace:
    """Route `/.ory/proxy/<name>` to its handler; anything else there is a 404."""

    def __init__(self, app: WSGIApplication, routes: dict[str, Handler] | None = None) -> None:
        self.app = app
        self.routes: dict[str, Handler] = {"/.ory/proxy/health/alive": alive}
        self.routes.update(routes or {})

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not environ.get(EMBEDDED_KEY):
            # The proxy forwards the whole target: a SCRIPT_NAME split must not move it.
            path = environ.get("SCRIPT_NAME", "") + path
        handler = self.routes.get(path)
        if handler is not None:
            return handler(environ, start_response)
        if path.startswith(PREFIX):
            return error_answer(environ, start_response, 404, "No such proxy endpoint.")
        return self.app(environ, start_response)
