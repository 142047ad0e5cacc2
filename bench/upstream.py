"""The application the proxies forward to in the benchmark: one short fixed answer.

    python bench/upstream.py PORT [UNIX_PATH]  # asyncio responder, ~10 us of CPU a request,
                                               # on a Unix socket too when given one
    gunicorn upstream:app               # the same answer as a WSGI app, plus the
                                        # routes of --memory and soak.py (below)

The asyncio responder is the default upstream of bench/run.py: it costs so
little that the CPU left on the machine goes to the proxies being compared,
not to the application behind them. It understands exactly what the
benchmark sends (requests without a body or with a Content-Length body, keep-alive
or `Connection: close`) and nothing more.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

BODY = b"Hello from the upstream application.\n"
BLOCK = 64 * 1024
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
    """The short answer for any path but these, which the memory checks and the soak use.

    `/big?size=N` streams N bytes (with Content-Length); `/upload` reads the
    request body to its end (sized or chunked) and answers its size;
    `/slow?delay=S` answers after S seconds.
    """
    path = environ.get("PATH_INFO", "")
    if path == "/big":
        return _big(int(_query(environ).get("size", "1048576")), start_response)
    if path == "/upload":
        return _upload(environ, start_response)
    if path == "/slow":
        time.sleep(float(_query(environ).get("delay", "1")))
    start_response("200 OK", list(HEADERS))
    return [BODY]


def _query(environ: dict[str, Any]) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _big(size: int, start_response: Callable[..., Any]) -> Iterator[bytes]:
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
    )
    block = b"x" * BLOCK
    while size > 0:
        part = block if size >= BLOCK else block[:size]
        size -= len(part)
        yield part


def _upload(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    remaining = int(length) if length else None
    size = 0
    while remaining is None or remaining > 0:
        data = stream.read(BLOCK if remaining is None else min(BLOCK, remaining))
        if not data:
            break
        size += len(data)
        if remaining is not None:
            remaining -= len(data)
    body = f"{size}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


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


async def serve(port: int, unix_path: str | None = None) -> None:
    """Answer on 127.0.0.1:`port`, and on the Unix socket `unix_path` too when given."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FixedAnswer, "127.0.0.1", port, reuse_port=True, backlog=1024)
    if unix_path:
        await loop.create_unix_server(FixedAnswer, unix_path, backlog=1024)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
