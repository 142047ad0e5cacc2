"""The application both proxies forward to in the benchmark: one short fixed answer.

    python bench/upstream.py PORT       # asyncio responder, ~10 us of CPU a request
    gunicorn upstream:app               # the same answer as a WSGI app

The asyncio responder is the default upstream of bench/run.py: it costs so
little that the CPU left on the machine goes to the proxies being compared,
not to the application behind them. It understands exactly what the
benchmark sends (requests without a body or with a Content-Length body, keep-alive
or `Connection: close`) and nothing more.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterable
from typing import Any

BODY = b"Hello from the upstream application.\n"
HEADERS = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Content-Length", str(len(BODY))),
    ("Cache-Control", "no-store"),
]
_HEAD = b"HTTP/1.1 200 OK\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in HEADERS)
KEEP_ALIVE_ANSWER = _HEAD + b"\r\n" + BODY
CLOSING_ANSWER = _HEAD + b"Connection: close\r\n\r\n" + BODY
UNSUPPORTED_ANSWER = (
    b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer every request with the same short body, whatever the path."""
    start_response("200 OK", list(HEADERS))
    return [BODY]


class FixedAnswer(asyncio.Protocol):
    """Answers each request on a connection with BODY, honouring keep-alive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.body_left = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while True:
            if self.body_left:
                skipped = min(self.body_left, len(self.buffer))
                self.body_left -= skipped
                self.buffer = self.buffer[skipped:]
                if self.body_left:
                    return
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            self.buffer = self.buffer[end + 4 :]
            request_line, _, header_block = head.partition(b"\r\n")
            headers = dict(
                (name.strip(), value.strip())
                for name, _, value in (line.partition(b":") for line in header_block.split(b"\r\n"))
            )
            if b"chunked" in headers.get(b"transfer-encoding", b""):
                self.transport.write(UNSUPPORTED_ANSWER)
                self.transport.close()
                return
            self.body_left = int(headers.get(b"content-length", b"0") or 0)
            if headers.get(b"connection") == b"close" or request_line.endswith(b"/1.0"):
                self.transport.write(CLOSING_ANSWER)
                self.transport.close()
                return
            self.transport.write(KEEP_ALIVE_ANSWER)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FixedAnswer, "127.0.0.1", port, reuse_port=True, backlog=1024)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
