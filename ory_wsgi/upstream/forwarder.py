"""The forwarder: a WSGI app that streams each request to one upstream.

    app = Forwarder("http://127.0.0.1:3000", public_url="https://app.example.com")
    app = Forwarder(Transport(parse_upstream("unix:/run/app.sock")), "https://app.example.com")

Connections are pooled (keep-alive, thread-safe, one pool per process) and
bodies stream both ways: request bodies are read from `wsgi.input` as the
upstream takes them, and response bytes are handed to the server as soon as
they arrive, undecoded. Nothing here follows redirects, keeps cookies, reads
proxy variables from the environment or adds headers of its own.
"""

from __future__ import annotations

import copy
import errno
import logging
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

from ory_wsgi.answers import error_answer
from ory_wsgi.body_deadline import BodyDeadline, BodyWatcher
from ory_wsgi.errors import BadRequest, BodyTooLarge, UpstreamBadResponse, UpstreamError
from ory_wsgi.headers import TrustedProxies, response_headers, upstream_headers
from ory_wsgi.upstream.pool import UpstreamPool, UpstreamResponse
from ory_wsgi.upstream.transport import Transport
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("ory_wsgi.forwarder")

CHUNK = 64 * 1024
NO_BODY_STATUSES = frozenset({204, 304})
# How a scheme-relative reference starts, as browsers read it (`\` is `/` for http(s)).
_SCHEME_RELATIVE = frozenset({"//", "/\\", "\\/", "\\\\"})
# Controls and space: never part of a request target.
_TARGET_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")


class ClientGone(Exception):
    """The client stopped sending its request body before the end."""


class ClientTimeout(ClientGone):
    """The client sent nothing more of its request body for `read_timeout` seconds."""


class BodyTooSlow(ClientTimeout):
    """The request body was not complete by its deadline (`body_timeout`, `body_min_rate`)."""


class UpstreamCut(ConnectionResetError):
    """The upstream's response stopped mid-body, after the client got the status line.

    Nothing can be answered any more, so the client's stream is cut: this is a
    ConnectionError on purpose, since gunicorn and werkzeug then drop the
    client connection without the final chunk (the client sees a truncated
    body, never a complete-looking one) and without a traceback; the
    forwarder has logged the one line that explains it.
    """

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(errno.ECONNRESET, f"{error.code}: {error}")
        self.status = error.status
        self.code = error.code


class Forwarder:
    """Forward every request to `upstream`, streaming, over pooled connections.

    `environ["ory.target"]` (the checked path and query), when set, is sent
    instead of the request target the client sent. `upstream` is a
    `Transport` (TLS settings, Unix sockets, its own timeouts) or an http(s)
    URL reached with the default TLS settings and `connect_timeout` /
    `read_timeout`.
    """

    def __init__(
        self,
        upstream: str | Transport,
        public_url: str,
        *,
        rewrite_host: bool = False,
        trusted_proxies: tuple[str, ...] = (),
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        max_body_size: int = 0,
        pool_size: int = 64,
        body_timeout: float = 20.0,
        body_min_rate: int = 500,
    ) -> None:
        if isinstance(upstream, str):
            upstream = Transport.for_url(
                upstream, connect_timeout=connect_timeout, read_timeout=read_timeout
            )
        self.transport = upstream
        self.pool = UpstreamPool(upstream, maxsize=pool_size)
        self.trusted = TrustedProxies(trusted_proxies)
        self.max_body_size = max_body_size
        self.read_timeout = upstream.read_timeout
        self.body_watcher = BodyWatcher(body_timeout, body_min_rate) if body_timeout else None
        self.public_url = public_url.rstrip("/")
        self._host_policy(rewrite_host)

    def with_rewrite_host(self, rewrite_host: bool) -> Forwarder:
        """This forwarder with the other Host policy, sharing its pool, transport and watcher.

        Two access rules to one upstream may differ in `preserve_host`: they
        keep one connection pool between them.
        """
        other = copy.copy(self)
        other._host_policy(rewrite_host)
        return other

    def _host_policy(self, rewrite_host: bool) -> None:
        target = self.transport.target
        self.upstream_host = target.host_header if rewrite_host else None
        # A Unix-socket app knows only the Host it is given: the client's one is
        # the public URL already, and `localhost` (rewrite_host) is rewritten.
        self.upstream_origins = () if target.is_unix and not rewrite_host else target.origins
        # The same origins written scheme-relative: `//host:port`.
        self.upstream_authorities = tuple({o.partition(":")[2] for o in self.upstream_origins})

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        method = environ["REQUEST_METHOD"]
        try:
            target = environ.get("ory.target") or request_target(environ)
            headers = upstream_headers(environ, self.trusted, self.upstream_host)
            self.adjust_request_headers(environ, headers)
            body, chunked = self._request_body(environ, headers)
        except BadRequest as exc:
            log.warning("bad_request: %s", exc)
            environ["ory.error"] = "bad_request"
            status = 501 if isinstance(exc, UnknownTransferCoding) else 400
            return error_answer(
                environ, start_response, status, str(exc), headers=[("Connection", "close")]
            )
        except BodyTooLarge:
            return self._too_large(environ, start_response)

        started = time.perf_counter()
        # gunicorn reads request bodies with no time limit: a client that sends its
        # headers and then nothing would hold this worker thread for as long as it likes.
        client = environ.get("gunicorn.socket") if body else None
        blocking = client.gettimeout() if client is not None else None
        deadline: BodyDeadline | None = None
        if self.body_watcher is not None and isinstance(body, SizedBody | ChunkedBody):
            sock = client or environ.get("werkzeug.socket")
            deadline = body.deadline = self.body_watcher.watch(sock)
        try:
            if client is not None:
                client.settimeout(self.read_timeout)
            response = self._send(method, target, body, headers, chunked)
            if response.status < 200:
                # Upgrade is hop-by-hop and never sent on from here (WebSockets go through
                # WebSocketSplice): a 101 is the upstream switching protocols unasked.
                response.close()
                raise UpstreamBadResponse(f"{response.status} {response.reason[:40]} unasked")
        except BadRequest as exc:
            log.warning("bad_request: %s", exc)
            environ["ory.error"] = "bad_request"
            return error_answer(environ, start_response, 400, str(exc))
        except BodyTooLarge:
            return self._too_large(environ, start_response)
        except BodyTooSlow:
            assert deadline is not None
            environ["ory.error"] = "body_timeout"
            log.warning(
                "body_timeout: %d bytes of the request body in %.1fs, too slow: %s %s",
                deadline.received_bytes,
                time.monotonic() - deadline.started,
                method,
                _path_only(target),
            )
            return error_answer(
                environ,
                start_response,
                408,
                "The request body arrived too slowly.",
                headers=[("Connection", "close")],
            )
        except ClientTimeout:
            environ["ory.error"] = "client_timeout"
            log.warning(
                "client_timeout: no request body for %gs: %s %s",
                self.read_timeout,
                method,
                _path_only(target),
            )
            return error_answer(
                environ,
                start_response,
                408,
                "The request body did not arrive in time.",
                headers=[("Connection", "close")],
            )
        except ClientGone:
            environ["ory.client_gone"] = True
            log.info("client_gone: the client stopped sending its request body")
            return error_answer(environ, start_response, 400, "Incomplete request body.")
        except UpstreamError as exc:
            log.error("%s: %s %s: %s", exc.code, method, _path_only(target), exc)
            environ["ory.error"] = exc.code
            if exc.status == 504:
                message = "The application did not answer in time."
            elif isinstance(exc, UpstreamBadResponse):
                message = "The application sent a response that cannot be passed on."
            else:
                message = "The application could not be reached."
            return error_answer(environ, start_response, exc.status, message)
        finally:
            if deadline is not None and self.body_watcher is not None:
                self.body_watcher.release(deadline)
            if client is not None:
                client.settimeout(blocking)
        environ["ory.upstream_ms"] = (time.perf_counter() - started) * 1000.0

        out_headers = response_headers(response.headers, self.rewrite_location)
        answer: Any = None
        if method == "HEAD" or response.status in NO_BODY_STATUSES:
            response.release()
        else:
            answer = UpstreamBody(response, environ, method, target)
        out_headers, answer = self.adjust_response(environ, out_headers, answer)
        start_response(f"{response.status} {response.reason}", out_headers)
        return [] if answer is None else answer

    def adjust_request_headers(self, environ: WSGIEnvironment, headers: dict[str, str]) -> None:
        """A subclass's chance to change what is sent upstream (the Ory route's headers)."""

    def adjust_response(
        self,
        environ: WSGIEnvironment,
        headers: list[tuple[str, str]],
        body: Iterable[bytes] | None,
    ) -> tuple[list[tuple[str, str]], Iterable[bytes] | None]:
        """A subclass's chance to rewrite the answer (the Ory route's cookies and bodies)."""
        return headers, body

    def rewrite_location(self, location: str) -> str:
        """A Location on the upstream's own origin points at the public URL instead.

        Absolute (`http://app:3000/x`) and scheme-relative (`//app:3000/x`,
        also spelt with backslashes, which browsers read as slashes) forms are
        rewritten; the rest of the value is kept byte for byte. Any other
        host is left alone.
        """
        lowered = location[:80].lower()
        if lowered[:2] in _SCHEME_RELATIVE:
            lowered = "//" + lowered[2:]
            candidates = self.upstream_authorities
        else:
            candidates = self.upstream_origins
        for origin in candidates:
            if lowered.startswith(origin):
                rest = location[len(origin) :]
                if not rest or rest[0] in "/?#":
                    return self.public_url + rest
        return location

    def _send(
        self,
        method: str,
        target: str,
        body: Any,
        headers: dict[str, str],
        chunked: bool,
    ) -> UpstreamResponse:
        return self.pool.request(method, target, headers, body, chunked=chunked)

    def _request_body(self, environ: WSGIEnvironment, headers: dict[str, str]) -> tuple[Any, bool]:
        length = environ.get("CONTENT_LENGTH")
        coding = environ.get("HTTP_TRANSFER_ENCODING")
        if coding is not None:
            _check_transfer_coding(coding, length)
            return ChunkedBody(environ["wsgi.input"], self.max_body_size), True
        if length:
            # isdigit alone lets `²` through, which int() refuses.
            if not (length.isascii() and length.isdigit()):
                raise BadRequest("invalid Content-Length")
            size = int(length)
            if self.max_body_size and size > self.max_body_size:
                raise BodyTooLarge()
            headers["Content-Length"] = str(size)
            return (SizedBody(environ["wsgi.input"], size) if size else b""), False
        return None, False

    def _too_large(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        log.warning("body_too_large: more than %d bytes", self.max_body_size)
        environ["ory.error"] = "body_too_large"
        return error_answer(
            environ,
            start_response,
            413,
            f"The request body is larger than {self.max_body_size} bytes.",
            headers=[("Connection", "close")],
        )


def request_target(environ: WSGIEnvironment) -> str:
    """The path and query as the client sent them (still percent-encoded)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw and not raw.startswith("/") and raw != "*":
        # absolute-form ("GET http://host/path"): keep only path and query.
        try:
            parts = urlsplit(raw)
        except ValueError:  # an unbalanced `[` in the authority
            raise BadRequest("invalid request target") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise BadRequest("the request target must be a path or an http(s) URL")
        raw = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not raw:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        raw = quote(path.encode("latin-1"), safe="/;=,@:!$&'()*+~")
        if environ.get("QUERY_STRING"):
            raw += "?" + environ["QUERY_STRING"]
    # Controls, spaces and non-ASCII: http.client could not even send them on.
    if not raw.isascii() or _TARGET_FORBIDDEN.search(raw):
        raise BadRequest("invalid characters in the request target")
    if "#" in raw:
        raw = raw.split("#", 1)[0]
    return str(raw)


class UnknownTransferCoding(BadRequest):
    """A request body in a transfer coding other than chunked: 501, as RFC 9112 §6.1 asks."""

    status = 501


def _check_transfer_coding(value: str, length: str | None) -> None:
    """Refuse a request Transfer-Encoding other than `chunked` alone, or one with a length.

    The server in front decoded the chunked framing at most: any other coding
    (`gzip, chunked`) would reach the app as bytes no header declares, and
    chunked not last, twice, or next to Content-Length is a framing an
    attacker chose to be read two ways.
    """
    codings = [coding.strip().lower() for coding in value.split(",")]
    if codings == ["chunked"]:
        if length:
            raise BadRequest("Transfer-Encoding together with Content-Length")
        return
    unknown = [coding for coding in codings if coding and coding != "chunked"]
    if unknown:
        raise UnknownTransferCoding(f"unsupported transfer coding {unknown[0][:40]!r}")
    raise BadRequest("chunked must be the one, last transfer coding")


def _path_only(target: str) -> str:
    """The target without its query, which may carry tokens: what error lines show."""
    return target.split("?", 1)[0]


def _read_client(stream: Any, amount: int, deadline: BodyDeadline | None) -> bytes:
    """Up to `amount` bytes of the request body; b"" at its end. Why a read failed decides
    the error: the body's deadline passed (the watcher cut it), no byte for
    `read_timeout`, or the client went."""
    if deadline is not None:
        amount = deadline.block(amount)
    try:
        data: bytes = stream.read(amount)
    except TimeoutError as exc:
        if deadline is not None and deadline.expired:
            raise BodyTooSlow() from exc
        raise ClientTimeout() from exc
    except Exception as exc:
        if deadline is not None and deadline.expired:
            raise BodyTooSlow() from exc
        raise ClientGone() from exc
    if deadline is not None:
        if deadline.expired:
            raise BodyTooSlow()
        deadline.received(len(data))
    return data


class SizedBody:
    """A file-like view of exactly `size` bytes of `wsgi.input`."""

    def __init__(self, stream: Any, size: int) -> None:
        self.stream = stream
        self.remaining = size
        self.deadline: BodyDeadline | None = None

    def read(self, amount: int = CHUNK) -> bytes:
        if self.remaining <= 0:
            return b""
        data = _read_client(self.stream, min(amount, self.remaining, CHUNK), self.deadline)
        if not data:
            raise ClientGone()
        self.remaining -= len(data)
        if self.remaining <= 0 and self.deadline is not None:
            self.deadline.complete()
        return data


class ChunkedBody:
    """The body of a chunked request, read to its end, counted against a limit."""

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.deadline: BodyDeadline | None = None

    def __iter__(self) -> Iterator[bytes]:
        total = 0
        while True:
            data = _read_client(self.stream, CHUNK, self.deadline)
            if not data:
                if self.deadline is not None:
                    self.deadline.complete()
                return
            total += len(data)
            if self.limit and total > self.limit:
                raise BodyTooLarge()
            yield data


class UpstreamBody:
    """The upstream's response body, handed on as it arrives.

    If the client goes away first, `close()` drops the upstream connection
    instead of returning it to the pool with unread bytes in it. If the
    upstream stops first (read timeout, connection lost), the client's stream
    is cut with `UpstreamCut`.
    """

    def __init__(
        self, response: UpstreamResponse, environ: WSGIEnvironment, method: str, target: str
    ) -> None:
        self.response = response
        self.environ = environ
        self.method = method
        self.target = target
        self.done = False

    def __iter__(self) -> Iterator[bytes]:
        read1 = self.response.read1
        sent = 0
        try:
            while True:
                data = read1(CHUNK)
                if not data:
                    break
                sent += len(data)
                yield data
        except UpstreamError as error:
            log.error(
                "%s: %s %s: the response stopped after %d bytes, the client's stream is cut: %s",
                error.code,
                self.method,
                _path_only(self.target),
                sent,
                error,
            )
            self.environ["ory.error"] = error.code
            raise UpstreamCut(error) from None
        self.done = True

    def close(self) -> None:
        if self.done:
            self.response.release()
        else:
            self.response.close()
