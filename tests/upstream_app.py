"""The application the tests put behind the proxy: each path shows one behaviour."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

Environ = dict[str, Any]


def _json(
    start_response: Any,
    document: Any,
    status: str = "200 OK",
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = json.dumps(document).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *(headers or []),
        ],
    )
    return [body]


def _query(environ: Environ) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def echo(environ: Environ, start_response: Any) -> Iterable[bytes]:
    digest = hashlib.sha256()
    size = 0
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    remaining = int(length) if length else None
    if remaining is None and "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", ""):
        remaining = 0  # no body; werkzeug's raw input would block until the peer closes
    while remaining is None or remaining > 0:
        data = stream.read(65536 if remaining is None else min(65536, remaining))
        if not data:
            break
        size += len(data)
        digest.update(data)
        if remaining is not None:
            remaining -= len(data)
    headers = {
        k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["Content-Length"] = environ["CONTENT_LENGTH"]
    return _json(
        start_response,
        {
            "method": environ["REQUEST_METHOD"],
            "raw_uri": environ.get("RAW_URI") or environ.get("REQUEST_URI"),
            "headers": headers,
            "size": size,
            "sha256": digest.hexdigest(),
        },
    )


def sse(environ: Environ, start_response: Any) -> Iterator[bytes]:
    q = _query(environ)
    count, delay = int(q.get("count", "3")), float(q.get("delay", "0.5"))
    start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
    for index in range(count):
        yield f"data: event {index} at {time.time():.6f}\n\n".encode()
        time.sleep(delay)


def big(environ: Environ, start_response: Any) -> Iterator[bytes]:
    q = _query(environ)
    size = int(q.get("size", "1048576"))
    headers = [("Content-Type", "application/octet-stream")]
    if q.get("length", "1") == "1":
        headers.append(("Content-Length", str(size)))
    start_response("200 OK", headers)
    block = b"x" * 65536
    sent = 0
    while sent < size:
        part = block[: min(65536, size - sent)]
        sent += len(part)
        yield part


def slow(environ: Environ, start_response: Any) -> Iterable[bytes]:
    time.sleep(float(_query(environ).get("delay", "2")))
    return _json(start_response, {"slow": True})


def redirect(environ: Environ, start_response: Any) -> Iterable[bytes]:
    start_response("302 Found", [("Location", _query(environ)["to"]), ("Content-Length", "0")])
    return []


def cookies(environ: Environ, start_response: Any) -> Iterable[bytes]:
    return _json(
        start_response,
        {"ok": True},
        headers=[
            ("Set-Cookie", "a=1; Path=/; HttpOnly"),
            ("X-Between", "yes"),
            ("Set-Cookie", "b=2; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Path=/"),
            ("Set-Cookie", "c=3; Domain=app.example.com; SameSite=None; Secure"),
        ],
    )


def hop(environ: Environ, start_response: Any) -> Iterable[bytes]:
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", "2"),
            ("Connection", "X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authenticate", "Basic"),
            ("Trailer", "X-T"),
            ("Upgrade", "h2c"),
            ("X-Kept", "1"),
        ],
    )
    return [b"ok"]


def gzipped(environ: Environ, start_response: Any) -> Iterable[bytes]:
    body = gzip.compress(b"hello compressed world " * 100)
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", str(len(body))),
        ],
    )
    return [body]


def status(environ: Environ, start_response: Any) -> Iterable[bytes]:
    code = int(_query(environ).get("code", "200"))
    start_response(f"{code} Whatever", [("X-Status", str(code)), ("ETag", '"v1"')])
    return [] if code in (204, 304) else [b"body"]


def head_aware(environ: Environ, start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def stall(environ: Environ, start_response: Any) -> Iterator[bytes]:
    """Starts a body and then stops sending: a read timeout mid-stream."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first part\n"
    time.sleep(float(_query(environ).get("delay", "5")))
    yield b"late part\n"


def peer(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """The proxy's side of the connection, to count the connections it opens."""
    return _json(
        start_response,
        {"addr": environ.get("REMOTE_ADDR"), "port": str(environ.get("REMOTE_PORT"))},
    )


# /endless streams until its client leaves; how each stream ended, by token
# (only readable when this module serves in the test process).
ENDLESS_ENDINGS: dict[str, str] = {}


def endless(environ: Environ, start_response: Any) -> Iterator[bytes]:
    """Streams forever in small pieces; records when the proxy hangs up."""
    token = _query(environ).get("token", "")
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    ENDLESS_ENDINGS[token] = "streaming"
    try:
        while True:
            yield b"y" * 16384
            time.sleep(0.005)
    finally:
        ENDLESS_ENDINGS[token] = "closed"


def cut(environ: Environ, start_response: Any) -> Iterator[bytes]:
    """Promises a length and stops short: the upstream breaks the connection mid-body."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "1000")])
    yield b"only part of it\n"
    raise ConnectionAbortedError("the upstream gives up mid-body")


def request_id(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Answers with the X-Request-Id it was given, as many frameworks do."""
    start_response(
        "200 OK",
        [("X-Request-Id", environ.get("HTTP_X_REQUEST_ID", "")), ("Content-Length", "2")],
    )
    return [b"ok"]


ROUTES = {
    "/sse": sse,
    "/big": big,
    "/slow": slow,
    "/redirect": redirect,
    "/cookies": cookies,
    "/hop": hop,
    "/gzip": gzipped,
    "/status": status,
    "/hello": head_aware,
    "/stall": stall,
    "/peer": peer,
    "/endless": endless,
    "/cut": cut,
    "/request-id": request_id,
}


def app(environ: Environ, start_response: Any) -> Iterable[bytes]:
    handler = ROUTES.get(environ.get("PATH_INFO", ""), echo)
    return handler(environ, start_response)


def own_cors(environ: Environ, start_response: Any) -> Iterable[bytes]:
    """Sends its own CORS headers, as an application with a CORS plugin does."""
    return _json(
        start_response,
        {"own_cors": True},
        headers=[
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Accept-Encoding"),
        ],
    )


ROUTES["/own-cors"] = own_cors
