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

from ory_wsgi.errors import BadRequest, UpstreamError, UpstreamTimeout
from ory_wsgi.transport import Transport

BLOCKSIZE = 64 * 1024
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# What a kept-alive connection the upstream closed while idle fails with.
STALE_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_READABLE = select.POLLIN | select.POLLERR | select.POLLHUP
MAX_LINE = 65536
MAX_HEADERS = 100
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
    """http.client's response, with the header block parsed here instead of by email.parser.

    email.parser is a third of what a small proxied request costs in this
    module. Everything else (status line, body framing, chunked decoding,
    `will_close`) is http.client's own. A header line that is not
    `token: value` (obs-fold, a bare CR, NUL, no colon) is refused.
    """

    header_list: list[tuple[str, str]]

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            _read_header_lines(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        pairs = self.header_list = _read_header_lines(self.fp)
        message = http.client.HTTPMessage()
        for name, value in pairs:
            message.set_raw(name, value)
        self.headers = self.msg = message

        # From here on as http.client's begin(): framing and keep-alive.
        transfer_encoding = message.get("transfer-encoding")
        self.chunked = bool(transfer_encoding) and transfer_encoding.lower() == "chunked"
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = message.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if status in (204, 304) or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


def _read_header_lines(fp: Any) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return pairs
        if len(pairs) >= MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        match = _HEADER_LINE.fullmatch(line.decode("iso-8859-1"))
        if match is None:
            raise http.client.HTTPException(f"malformed header line {line[:80]!r}")
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
