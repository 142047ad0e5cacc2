"""WebSockets: an `Upgrade: websocket` request, once the auth layers ran, spliced to the upstream.

    app = WebSocketSplice(forwarder)  # the forwarder's upstream, TLS settings and timeouts

The handshake goes to the upstream on a connection of its own (opened by the
forwarder's `Transport`: TCP, TLS or a Unix socket), with the
forwarder's header policy (X-Forwarded-*, Host, the JWT as Authorization, no
client Authorization) plus `Connection: Upgrade` and `Upgrade: websocket`.
On 101 the answer is written to the client over the server's raw socket
(`gunicorn.socket`, `werkzeug.socket`) and bytes are copied both ways until
either side closes or nothing moves for `idle_timeout` seconds. Any other
answer is passed on as a normal response. Anything that is not a WebSocket
upgrade goes to the forwarder untouched.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import logging
import selectors
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from ory_wsgi.answers import error_answer
from ory_wsgi.errors import BadRequest, UpstreamError, UpstreamTimeout
from ory_wsgi.headers import response_headers, upstream_headers
from ory_wsgi.readiness import shutting_down
from ory_wsgi.upstream.forwarder import Forwarder, UpstreamCut, request_target
from ory_wsgi.upstream.transport import Transport
from ory_wsgi.wrappers.cors import OriginPolicy
from ory_wsgi.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("ory_wsgi.websocket")

CHUNK = 64 * 1024
# How often a quiet splice looks whether the worker is shutting down.
SHUTDOWN_POLL = 1.0
NO_BODY_STATUSES = frozenset({204, 304})
# RFC 6455 §1.3: the accept is base64(SHA-1(key + this GUID)).
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BAD_HANDSHAKE = "upstream_bad_handshake"


class SpliceEnded(ConnectionResetError):
    """The spliced connection is over; raised from the response iterator on purpose.

    The client's socket no longer speaks HTTP, so the server must not write
    a status line, a final chunk or a keep-alive response on it. gunicorn and
    werkzeug treat a ConnectionError from the body as a client gone: they
    write nothing more and close the connection, quietly (ECONNRESET is only
    logged at debug). `status` is what the access log records.
    """

    status = 101

    def __init__(self, reason: str) -> None:
        super().__init__(errno.ECONNRESET, f"websocket closed: {reason}")


def is_websocket_upgrade(environ: WSGIEnvironment) -> bool:
    """An HTTP/1.1 GET asking to switch to the WebSocket protocol (RFC 6455 §4.1)."""
    upgrade = environ.get("HTTP_UPGRADE")
    if not upgrade or environ.get("REQUEST_METHOD") != "GET":
        return False
    connection = environ.get("HTTP_CONNECTION", "")
    return "websocket" in _tokens(upgrade) and "upgrade" in _tokens(connection)


def websocket_origins(allowed_origins: Sequence[str], public_url: str) -> OriginPolicy | None:
    """The origins a browser may open a WebSocket from: the CORS ones, by default the public URL's.

    None means any origin (`"*"` among the allowed ones).
    """
    if "*" in allowed_origins:
        return None
    parts = urlsplit(public_url)
    return OriginPolicy(list(allowed_origins) or [f"{parts.scheme}://{parts.netloc}"])


class WebSocketSplice:
    """Splice WebSocket upgrades to the upstream; hand every other request to `forwarder`.

    `forwarder` supplies the header policy (trusted proxies, Host rewriting,
    its `adjust_request_headers` hook) and the Location rewriting of a
    non-101 answer. `origins`, when set, refuses a handshake whose `Origin`
    it does not allow (403): browsers send cookies on cross-site WebSocket
    handshakes and apply no CORS to them, so without this check any web page
    could talk to the app as its visitor. `upstream` defaults to the
    forwarder's `Transport` (a URL builds one with default TLS settings and
    `connect_timeout` / `read_timeout`); `idle_timeout` defaults to its
    read timeout.
    """

    def __init__(
        self,
        forwarder: Forwarder,
        upstream: str | Transport | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        idle_timeout: float | None = None,
        origins: OriginPolicy | None = None,
    ) -> None:
        if upstream is None:
            upstream = forwarder.transport
        elif isinstance(upstream, str):
            upstream = Transport.for_url(
                upstream, connect_timeout=connect_timeout, read_timeout=read_timeout
            )
        self.forwarder = forwarder
        self.transport = upstream
        self.read_timeout = upstream.read_timeout
        self.idle_timeout = upstream.read_timeout if idle_timeout is None else idle_timeout
        self.origins = origins

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        if not is_websocket_upgrade(environ):
            return self.forwarder(environ, start_response)
        origin = environ.get("HTTP_ORIGIN")
        if origin and self.origins is not None and not self.origins.allows(origin):
            log.warning("websocket_origin: refused a WebSocket from origin %.100s", origin)
            environ["ory.error"] = "forbidden_origin"
            return error_answer(
                environ, start_response, 403, "WebSocket connections from this origin are refused."
            )
        client = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
        if client is None or environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
            return self._no_raw_socket(environ, start_response)
        try:
            target = environ.get("ory.target") or request_target(environ)
            headers, accept = self._handshake_headers(environ)
        except BadRequest as exc:
            log.warning("bad_request: %s", exc)
            environ["ory.error"] = "bad_request"
            return error_answer(environ, start_response, 400, str(exc))

        started = time.perf_counter()
        try:
            connection = self.transport.connect()
            response = self._handshake(connection, target, headers)
        except UpstreamError as exc:
            log.error("%s: WebSocket %s: %s", exc.code, target.split("?", 1)[0], exc)
            environ["ory.error"] = exc.code
            message = (
                "The application did not answer in time."
                if exc.status == 504
                else "The application could not be reached."
            )
            return error_answer(environ, start_response, exc.status, message)
        environ["ory.upstream_ms"] = (time.perf_counter() - started) * 1000.0

        out_headers = response_headers(response.getheaders())
        if response.status != 101:
            return self._pass_on(environ, start_response, connection, response, out_headers)
        refused = self._bad_switch(response, accept)
        if refused:
            connection.close()
            log.error("%s: WebSocket %s: %s", BAD_HANDSHAKE, target.split("?", 1)[0], refused)
            environ["ory.error"] = BAD_HANDSHAKE
            return error_answer(
                environ, start_response, 502, "The application did not accept the WebSocket."
            )
        out_headers = [item for item in out_headers if item[0].lower() != "x-request-id"]
        request_id = environ.get("ory.request_id")
        if request_id:
            out_headers.append(("X-Request-Id", request_id))
        head = [f"HTTP/1.1 101 {response.reason or 'Switching Protocols'}"]
        head += ["Upgrade: websocket", "Connection: Upgrade"]
        head += [f"{name}: {value}" for name, value in out_headers]
        # Recorded for the access log and metrics; the server itself writes nothing.
        start_response("101 Switching Protocols", out_headers)
        return Splice(
            client,
            connection,
            response,
            ("\r\n".join(head) + "\r\n\r\n").encode("latin-1"),
            self.idle_timeout,
        )

    def _handshake_headers(self, environ: WSGIEnvironment) -> tuple[dict[str, str], str]:
        """The headers of the handshake sent upstream, and the Sec-WebSocket-Accept it must get."""
        if environ.get("CONTENT_LENGTH", "0") not in ("", "0") or environ.get(
            "HTTP_TRANSFER_ENCODING"
        ):
            raise BadRequest("a WebSocket handshake has no body")
        key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
        if not _valid_key(key):
            raise BadRequest("a WebSocket handshake needs a Sec-WebSocket-Key (16 bytes, base64)")
        forwarder = self.forwarder
        headers = upstream_headers(environ, forwarder.trusted, forwarder.upstream_host)
        forwarder.adjust_request_headers(environ, headers)
        # The key the accept is checked against is the one sent, whatever the
        # client's Connection header asked to drop.
        for name in [name for name in headers if name.lower() == "sec-websocket-key"]:
            del headers[name]
        headers["Sec-WebSocket-Key"] = key
        headers["Connection"] = "Upgrade"
        headers["Upgrade"] = "websocket"
        return headers, accept_for(key)

    @staticmethod
    def _bad_switch(response: http.client.HTTPResponse, accept: str) -> str:
        """Why a 101 from the upstream is not a WebSocket handshake for our key ("" if it is).

        Checked before a byte is spliced (RFC 6455 §4.1): a 101 for another
        protocol, or one whose accept was not computed from the key sent, is
        not the app accepting this WebSocket (a cache or a misrouted
        connection answering), and the client must not be handed its stream.
        """
        if "websocket" not in _tokens(response.getheader("Upgrade", "")):
            return "the application switched to another protocol"
        got = response.getheader("Sec-WebSocket-Accept")
        if got is None:
            return "the application's 101 has no Sec-WebSocket-Accept"
        if got.strip() != accept:
            return f"the application's 101 has a wrong Sec-WebSocket-Accept: {got[:60]!r}"
        return ""

    def _handshake(
        self, connection: http.client.HTTPConnection, target: str, headers: dict[str, str]
    ) -> http.client.HTTPResponse:
        try:
            connection.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders()
            return connection.getresponse()
        except TimeoutError as exc:
            connection.close()
            raise UpstreamTimeout(f"read: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise UpstreamError(str(exc)[:200] or type(exc).__name__) from None

    def _pass_on(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        headers: list[tuple[str, str]],
    ) -> Any:
        """The upstream refused the upgrade: its answer goes to the client as it is."""
        for index, (name, value) in enumerate(headers):
            if name.lower() == "location":
                headers[index] = (name, self.forwarder.rewrite_location(value))
        start_response(f"{response.status} {response.reason}", headers)
        if response.status in NO_BODY_STATUSES or response.status < 200:
            connection.close()
            return []
        return RefusalBody(connection, response)

    def _no_raw_socket(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        server = environ.get("SERVER_SOFTWARE") or "this server"
        protocol = environ.get("SERVER_PROTOCOL", "")
        why = (
            f"the request came over {protocol}, which has no Upgrade"
            if protocol != "HTTP/1.1"
            else f"{server} does not give applications its client socket"
        )
        log.warning("websocket_unsupported: %s", why)
        environ["ory.error"] = "websocket_unsupported"
        return error_answer(
            environ,
            start_response,
            501,
            f"WebSockets cannot be proxied here: {why}. Run the proxy under gunicorn "
            "with gthread workers, or with `ory-wsgi run`, and connect over HTTP/1.1.",
        )


class Splice:
    """The response iterator of an accepted upgrade: it runs the whole splice on first use.

    It yields nothing: it writes the 101 itself, copies bytes until the end,
    then raises `SpliceEnded` so that the server leaves the socket alone.
    """

    def __init__(
        self,
        client: socket.socket,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        head: bytes,
        idle_timeout: float,
    ) -> None:
        self.client = client
        self.connection = connection
        self.response = response
        self.head = head
        self.idle_timeout = idle_timeout
        self.started = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.started:
            raise StopIteration
        self.started = True
        upstream = self.connection.sock
        assert upstream is not None
        began = time.monotonic()
        try:
            self.client.settimeout(self.idle_timeout)
            self.client.sendall(self.head)
            early = _buffered(self.response, upstream)
            if early:
                self.client.sendall(early)
            upstream.settimeout(self.idle_timeout)
            reason = pump(self.client, upstream, self.idle_timeout)
        except OSError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self.close()
            # No more reads or writes on it; the server sees end-of-file and closes it.
            try:
                self.client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        log.debug("websocket closed after %.1fs: %s", time.monotonic() - began, reason)
        raise SpliceEnded(reason)

    def close(self) -> None:
        self.response.close()
        self.connection.close()


def pump(client: socket.socket, upstream: socket.socket, idle_timeout: float) -> str:
    """Copy bytes both ways until one side closes, both stay quiet too long, or shutdown."""
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        last_activity = time.monotonic()
        while True:
            if shutting_down():
                return "the worker is shutting down"
            wait = min(SHUTDOWN_POLL, last_activity + idle_timeout - time.monotonic())
            if wait <= 0:
                return f"nothing sent either way for {idle_timeout:g}s"
            events = selector.select(wait)
            for key, _ in events:
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                target: socket.socket = key.data
                data = source.recv(CHUNK)
                if not data:
                    return "closed by the client" if source is client else "closed by the app"
                target.sendall(data)
                if isinstance(source, ssl.SSLSocket):
                    # Decrypted bytes left inside the TLS object do not wake select().
                    while source.pending():
                        target.sendall(source.recv(CHUNK))
            if events:
                last_activity = time.monotonic()


def _buffered(response: http.client.HTTPResponse, upstream: socket.socket) -> bytes:
    """Bytes the upstream sent right behind its 101, already read into buffers, without waiting."""
    upstream.setblocking(False)
    try:
        data = response.fp.read1(CHUNK) or b""
    except (BlockingIOError, ssl.SSLWantReadError):
        data = b""
    finally:
        upstream.setblocking(True)
    if isinstance(upstream, ssl.SSLSocket):
        while upstream.pending():
            data += upstream.recv(CHUNK)
    return data


class RefusalBody:
    """The body of a non-101 answer to the handshake, handed on as it arrives."""

    def __init__(
        self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse
    ) -> None:
        self.connection = connection
        self.response = response

    def __iter__(self) -> Iterator[bytes]:
        try:
            while data := self.response.read1(CHUNK):
                yield data
        except TimeoutError as exc:
            raise UpstreamCut(UpstreamTimeout(str(exc))) from None
        except (OSError, http.client.HTTPException) as exc:
            raise UpstreamCut(UpstreamError(str(exc) or type(exc).__name__)) from None

    def close(self) -> None:
        self.response.close()
        self.connection.close()


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept that answers `key`."""
    # SHA-1 is what the protocol fixes; nothing here relies on it resisting collisions.
    digest = hashlib.sha1(key.encode("ascii") + WEBSOCKET_GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def _valid_key(key: str) -> bool:
    """16 bytes in base64 (RFC 6455 §4.1): what every client sends, and nothing else."""
    if len(key) != 24 or not key.isascii():
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}
