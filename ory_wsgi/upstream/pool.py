"""Keep-alive connections to one upstream: a bounded, thread-safe pool of http.client connections.

    pool = UpstreamPool("http://127.0.0.1:3000", connect_timeout=5, read_timeout=120)
    pool = UpstreamPool(Transport(parse_upstream("unix:/run/app.sock"), read_timeout=120))
    response = pool.request("GET", "/path", {"Host": "app.example.com"})

A thin layer on `http.client` with no urllib3 on the hot path: `Transport`
(transport.py) opens the connections (TCP, TLS or a Unix socket),
http.client reads status lines and frames bodies; the request
head is written here in one piece and the response headers parsed here
without email.parser. It invents no header (no Host, Accept-Encoding or
User-Agent of its own), maps every transport failure to `UpstreamError`
(502) or `UpstreamTimeout` (504), and takes a connection back only once its
response was read to the end.
"""

from __future__ import annotations

import http.client
import re
import select
import threading
from typing import Any

from ory_wsgi.errors import (
    BadRequest,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamHeadersTooLarge,
    UpstreamTimeout,
)
from ory_wsgi.upstream.transport import Transport

BLOCKSIZE = 64 * 1024
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# What a kept-alive connection the upstream closed while idle fails with.
STALE_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_READABLE = select.POLLIN | select.POLLERR | select.POLLHUP
MAX_LINE = 65536
# How many header lines, and how many bytes of them, an answer may carry: gunicorn accepts
# up to 32768 request fields at most (limit_request_fields), and operators raise nginx's
# proxy_buffer_size (the whole response header; 4-8 KiB by default) to 16-256 KiB.
MAX_HEADERS = 32768
MAX_HEADER_BYTES = 256 * 1024
# Interim answers (100, 102, 103) skipped before the final one; more is an upstream loop.
MAX_INTERIM = 16
_DIGITS = re.compile(r"[0-9]{1,18}")
# name ":" OWS value OWS: a token name; no CR, LF or NUL in the value; no obs-fold.
_HEADER_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n\x00]*?)[ \t]*\r?\n")

RequestBody = Any  # bytes, a file-like with read(), or an iterable of chunks


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]


def _is_dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read has been closed (or spoken out of turn)."""
    sock = connection.sock
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, _READABLE)
    return bool(poller.poll(0))


class UpstreamPool:
    """Pooled connections to one upstream, at most `maxsize` of them kept idle.

    `upstream` is a `Transport` (how to reach it, TLS settings included) or
    an http(s) URL, reached with the default TLS settings.

    Busy connections are not capped (a burst opens more); the surplus is
    closed when it comes back. Idle connections are reused newest first, so
    the ones left idle longest are the ones the upstream times out.
    """

    def __init__(
        self,
        upstream: str | Transport,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        maxsize: int = 64,
    ) -> None:
        if isinstance(upstream, str):
            upstream = Transport.for_url(
                upstream, connect_timeout=connect_timeout, read_timeout=read_timeout
            )
        self.transport = upstream
        self.maxsize = maxsize
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self.opened = 0  # connections opened so far, for tests and the soak run

    @property
    def idle(self) -> int:
        """How many connections wait in the pool now."""
        return len(self._idle)

    def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: RequestBody = None,
        *,
        chunked: bool = False,
    ) -> UpstreamResponse:
        """Send one request and read the status line and headers of its answer.

        `headers` go out as given, in order (with `Transfer-Encoding: chunked`
        added when `chunked`); `body` is bytes, a file-like (read in blocks,
        with the Content-Length the caller set) or an iterable of chunks
        (`chunked=True`). A bodiless idempotent request that fails on a reused
        connection the upstream had closed is sent once more on a new one.
        Raises `BadRequest` for a header that would split the request.
        """
        head = request_head(method, target, headers, chunked)
        retry = body is None and method in IDEMPOTENT
        while True:
            connection, reused = self._connection()
            try:
                sock = connection.sock
                assert sock is not None
                if body is None:
                    sock.sendall(head)
                else:
                    _send_body(sock, head, body, chunked)
                raw = LeanHTTPResponse(sock, method=method)
                raw.begin()
            except STALE_ERRORS as exc:
                connection.close()
                if reused and retry:
                    retry = False
                    continue
                raise UpstreamError(_reason(exc)) from None
            except TimeoutError as exc:
                connection.close()
                raise UpstreamTimeout(_reason(exc)) from None
            except UpstreamError:
                connection.close()
                raise
            except (http.client.BadStatusLine, http.client.LineTooLong) as exc:
                # The app was reached and answered something that is not HTTP/1.x.
                connection.close()
                raise UpstreamBadResponse(_reason(exc)) from None
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                raise UpstreamError(self.transport.explain(_reason(exc), exc)) from None
            except BaseException:
                # The client's body failed (ClientGone, BodyTooLarge): the request is half sent.
                connection.close()
                raise
            return UpstreamResponse(self, connection, raw)

    def close(self) -> None:
        """Close the idle connections (busy ones close when their response is done)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect(), False
            if not _is_dropped(connection):
                return connection, True
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        connection = self.transport.connect()
        self.opened += 1
        return connection

    def _put_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.maxsize:
                self._idle.append(connection)
                return
        connection.close()


def request_head(method: str, target: str, headers: dict[str, str], chunked: bool) -> bytes:
    """The request line and headers as bytes, refusing CR, LF or NUL anywhere in them."""
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    for name, value in headers.items():
        lines.append(f"{name}: {value}\r\n")
    if chunked:
        lines.append("Transfer-Encoding: chunked\r\n")
    lines.append("\r\n")
    text = "".join(lines)
    # Each line brings exactly one CR and one LF: any other would split the request.
    count = len(lines)
    if text.count("\n") != count or text.count("\r") != count or "\x00" in text:
        raise BadRequest("a header or the request target holds a line break or NUL")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise BadRequest("a header holds a character that is not Latin-1") from None


def _send_body(sock: Any, head: bytes, body: RequestBody, chunked: bool) -> None:
    if isinstance(body, bytes | bytearray):
        if len(body) <= BLOCKSIZE:
            sock.sendall(head + body)
        else:
            sock.sendall(head)
            sock.sendall(body)
        return
    sock.sendall(head)
    if hasattr(body, "read"):
        while data := body.read(BLOCKSIZE):
            sock.sendall(data)
        return
    for chunk in body:
        if not chunk:
            continue  # an empty chunk would end a chunked body early
        if chunked:
            sock.sendall(b"%X\r\n%b\r\n" % (len(chunk), chunk))
        else:
            sock.sendall(chunk)
    if chunked:
        sock.sendall(b"0\r\n\r\n")


class LeanHTTPResponse(http.client.HTTPResponse):
    """http.client's response, with the header block parsed and its framing checked here.

    email.parser is a third of what a small proxied request costs in this
    module, so the header block is parsed here; body reading and chunked
    decoding stay http.client's own. What a proxy must not pass on is
    refused with `UpstreamBadResponse` (502), as RFC 9112 §6.3 asks:

    - a header line that is not `token: value` (obs-fold, a bare CR, NUL, no colon);
    - a Transfer-Encoding other than `chunked` alone (the proxy could not
      decode it, and the client would get coded bytes no header declares);
    - a Content-Length that is not digits, or several that disagree
      (`5, 6`, or two lines); identical repeats are collapsed into one;
    - Transfer-Encoding together with Content-Length: the body is read as
      chunked, the Content-Length dropped, the connection not reused;
    - more than `MAX_HEADERS` lines or `MAX_HEADER_BYTES` bytes of headers
      (`UpstreamHeadersTooLarge`).

    Interim answers (100 Continue, 102, 103 Early Hints) are read and dropped:
    WSGI has no way to send them, and one must never stand in for the final
    answer. 101 Switching Protocols is a final answer.
    """

    header_list: list[tuple[str, str]]

    def begin(self) -> None:
        if self.headers is not None:
            return
        interim = 0
        while True:
            version, status, reason = self._read_status()
            if status >= 200 or status == http.client.SWITCHING_PROTOCOLS:
                break
            interim += 1
            if interim > MAX_INTERIM:
                raise UpstreamBadResponse(f"more than {MAX_INTERIM} interim (1xx) answers")
            _read_header_lines(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise UpstreamBadResponse(f"unknown protocol version {version[:20]!r}")
        pairs = self.header_list = _read_header_lines(self.fp)
        message = http.client.HTTPMessage()
        codings: list[str] | None = None
        lengths: list[str] | None = None
        for name, value in pairs:
            message.set_raw(name, value)
            # Only the two framing headers matter here: skip lower() for every other name.
            if len(name) == 14 or len(name) == 17:
                lowered = name.lower()
                if lowered == "content-length":
                    lengths = (lengths or []) + value.split(",")
                elif lowered == "transfer-encoding":
                    codings = (codings or []) + value.split(",")
        self.headers = self.msg = message

        self.chunk_left = None
        self.chunked = False
        self.length = None
        self.will_close = self._check_close()
        if codings is not None:
            coding = ",".join(c.strip() for c in codings if c.strip()).lower()
            if coding != "chunked":
                raise UpstreamBadResponse(f"unsupported transfer coding {coding[:40]!r}")
            self.chunked = True
            if lengths is not None or self.version == 10:
                # Framing two ways at once: trust neither for the next answer on this connection.
                self.will_close = True
                if lengths is not None:
                    self.header_list = [
                        pair for pair in pairs if pair[0].lower() != "content-length"
                    ]
        elif lengths is not None:
            self.length = _content_length(lengths)
            if len(lengths) > 1:
                self.header_list = _one_content_length(pairs, self.length)
        if status in (204, 304) or status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


def _content_length(values: list[str]) -> int:
    """The one length all the Content-Length values agree on; `UpstreamBadResponse` if none."""
    lengths = set()
    for value in values:
        text = value.strip(" \t")
        if not _DIGITS.fullmatch(text):
            raise UpstreamBadResponse(f"invalid Content-Length {text[:40]!r}")
        lengths.add(int(text))
    if len(lengths) != 1:
        raise UpstreamBadResponse(f"conflicting Content-Lengths {sorted(lengths)[:4]}")
    return lengths.pop()


def _one_content_length(pairs: list[tuple[str, str]], length: int) -> list[tuple[str, str]]:
    """The headers with repeated, identical Content-Lengths collapsed into the first one."""
    kept: list[tuple[str, str]] = []
    seen = False
    for name, value in pairs:
        if name.lower() == "content-length":
            if seen:
                continue
            seen = True
            value = str(length)
        kept.append((name, value))
    return kept


def _read_header_lines(fp: Any) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    budget = MAX_HEADER_BYTES
    while True:
        limit = min(MAX_LINE, budget)
        line = fp.readline(limit + 1)
        if line in (b"\r\n", b"\n", b""):
            return pairs
        if len(line) > limit:
            raise UpstreamHeadersTooLarge(
                f"response headers over {MAX_HEADER_BYTES} bytes, or a line over {MAX_LINE}"
            )
        budget -= len(line)
        if len(pairs) >= MAX_HEADERS:
            raise UpstreamHeadersTooLarge(f"more than {MAX_HEADERS} response header lines")
        match = _HEADER_LINE.fullmatch(line.decode("iso-8859-1"))
        if match is None:
            raise UpstreamBadResponse(f"malformed header line {line[:80]!r}")
        pairs.append((match[1], match[2]))


class UpstreamResponse:
    """The status and headers of an upstream answer, and its body as it arrives.

    `headers` keeps repeated names in the order they came. Read the body with
    `read1` until it returns b""; then `release()` gives the connection back.
    `close()` drops the connection instead (a body not read to its end).
    """

    __slots__ = ("_connection", "_pool", "complete", "headers", "raw", "reason", "status")

    def __init__(
        self,
        pool: UpstreamPool,
        connection: http.client.HTTPConnection,
        raw: LeanHTTPResponse,
    ) -> None:
        self._pool: UpstreamPool | None = pool
        self._connection: http.client.HTTPConnection | None = connection
        self.raw = raw
        self.status: int = raw.status
        self.reason: str = raw.reason
        self.headers: list[tuple[str, str]] = raw.header_list
        # HEAD, 204, 304 and 1xx carry no body: begin() set their length to 0.
        self.complete = raw.length == 0

    def read1(self, amount: int = BLOCKSIZE) -> bytes:
        """Up to `amount` bytes, as soon as any arrive, undecoded; b"" at the end of the body.

        A body that stops short (the upstream closed, or sent a broken
        chunk) raises `UpstreamError`; no byte for `read_timeout`, `UpstreamTimeout`.
        """
        raw = self.raw
        if self.complete:
            return b""
        try:
            data = raw.read1(amount)
        except TimeoutError as exc:
            raise UpstreamTimeout(_reason(exc)) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise UpstreamError(_reason(exc)) from None
        if data:
            # read1 never ends a Content-Length body itself: mark it done on the last byte.
            if raw.length == 0:
                self.complete = True
            return data
        if raw.length:
            raise UpstreamError(
                f"the upstream closed the connection with {raw.length} bytes of the body unsent"
            )
        self.complete = True
        return b""

    def read(self) -> bytes:
        """The rest of the body (for small answers the caller wants whole)."""
        parts = []
        while data := self.read1():
            parts.append(data)
        return b"".join(parts)

    def release(self) -> None:
        """Give the connection back when the body was read to its end, else drop it."""
        connection, pool = self._connection, self._pool
        if connection is None or pool is None:
            return
        self._connection = self._pool = None
        raw = self.raw
        if self.complete and not raw.will_close and self.status >= 200:
            # The response's buffered reader is done with the socket: drop it, keep the socket.
            raw.close()
            pool._put_back(connection)
        else:
            raw.close()
            connection.close()

    def close(self) -> None:
        """Drop the connection, whatever is left unread in it."""
        connection = self._connection
        self._connection = self._pool = None
        self.raw.close()
        if connection is not None:
            connection.close()
