"""Running the stand-ins: a threaded werkzeug server in a background thread of this process.

`FakeKratosServer` serves the Kratos stand-in; `StandInServer` serves any other
stand-in's WSGI app (the Hydra one) the same way, so each stand-in needs no
server code of its own.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from ory_wsgi.testing.kratos import FakeKratos
from ory_wsgi.wsgi import WSGIApplication


class _QuietRequestHandler(WSGIRequestHandler):
    """Leaves the test or demo output alone: no line per request."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class FakeKratosServer:
    """A FakeKratos served on `host:port` (0 = a free port) until `stop()`; a context manager."""

    def __init__(
        self, kratos: FakeKratos, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True
    ) -> None:
        self.kratos = kratos
        self._server: BaseWSGIServer = make_server(
            host,
            port,
            kratos,
            threaded=True,
            request_handler=_QuietRequestHandler if quiet else None,
        )
        self.host = host
        self.port = int(self._server.server_port)
        url_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{url_host}:{self.port}"
        if kratos.base_url is None:
            kratos.base_url = self.url
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"fake-kratos-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FakeKratosServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class StandInServer:
    """`app` served on `host:port` (0 = a free port) until `stop()`; a context manager.

    `url` is `http://host:port`. Threaded, quiet, in a daemon thread named `name-port`.
    """

    def __init__(
        self, app: WSGIApplication, name: str, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.app = app
        self._server: BaseWSGIServer = make_server(
            host, port, app, threaded=True, request_handler=_QuietRequestHandler
        )
        self.host = host
        self.port = int(self._server.server_port)
        url_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{url_host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"{name}-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    kratos: FakeKratos | None = None,
    quiet: bool = True,
    **options: Any,
) -> FakeKratosServer:
    """Start a stand-in in a background thread; `options` go to FakeKratos when none is given.

    Without a `base_url`, the stand-in's base URL is the server's own URL (`.url`).
    """
    return FakeKratosServer(kratos or FakeKratos(**options), host, port, quiet=quiet)
