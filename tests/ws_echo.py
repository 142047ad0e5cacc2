"""A real WebSocket app behind the proxy: websockets' sync server over TCP, TLS or a Unix socket."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path
from typing import Any

from websockets.http11 import Request
from websockets.sync.server import ServerConnection, serve, unix_serve


class EchoApp:
    """A WebSocket app: records every handshake, echoes messages, closes on "bye".

    `/refuse...` is answered 403 instead of 101; `/greet...` sends "hello" first;
    "drop" makes it drop the connection without a close frame. With `tls` it
    listens over TLS (url `https://...`); with `unix_path` on that Unix socket
    (url `unix:PATH`).
    """

    def __init__(self, tls: ssl.SSLContext | None = None, unix_path: Path | None = None) -> None:
        self.handshakes: list[Request] = []
        if unix_path is not None:
            self.server = unix_serve(self.handle, str(unix_path), process_request=self.check)
            self.url = f"unix:{unix_path}"
        else:
            self.server = serve(self.handle, "127.0.0.1", 0, ssl=tls, process_request=self.check)
            scheme = "https" if tls else "http"
            self.url = f"{scheme}://127.0.0.1:{self.server.socket.getsockname()[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def check(self, connection: ServerConnection, request: Request) -> Any:
        self.handshakes.append(request)
        if request.path.startswith("/refuse"):
            return connection.respond(403, "the app says no\n")
        return None

    def handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        if connection.request.path.startswith("/greet"):
            connection.send("hello")
        for message in connection:
            if message == "bye":
                return
            if message == "drop":  # gone without a close frame, as a crashed app would be
                connection.socket.shutdown(socket.SHUT_RDWR)
                return
            connection.send(message)

    def seen(self, path: str) -> list[Request]:
        return [request for request in self.handshakes if request.path == path]

    def stop(self) -> None:
        self.server.shutdown()
