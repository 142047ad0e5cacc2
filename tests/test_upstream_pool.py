"""The upstream connection pool over real sockets: reuse, stale connections, timeouts, framing."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from servers import Gunicorn, ThreadedServer, free_port

from ory_wsgi.errors import BadRequest, UpstreamError, UpstreamTimeout
from ory_wsgi.upstream_pool import UpstreamPool, UpstreamResponse

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
# (index of the connection, index of the request on it) -> the bytes to answer, or None to hang up.
Script = Callable[[int, int], bytes | None]


class ScriptedUpstream:
    """A raw HTTP/1.1 server answering bodiless requests as `script` says; counts connections."""

    def __init__(self, script: Script, delay: float = 0.0, hang_up: bool = False) -> None:
        self.script = script
        self.delay = delay
        self.hang_up = hang_up  # close the connection after each answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            index = self.connections
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock, index), daemon=True).start()

    def _serve(self, sock: socket.socket, index: int) -> None:
        with sock:
            buffer = b""
            request = 0
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buffer += data
                _, buffer = buffer.split(b"\r\n\r\n", 1)
                answer = self.script(index, request)
                request += 1
                if answer is None:
                    return
                time.sleep(self.delay)
                try:
                    sock.sendall(answer)
                except OSError:
                    return
                if self.hang_up:
                    return

    def stop(self) -> None:
        self.running = False
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedUpstream]]:
    started: list[ScriptedUpstream] = []

    def start(script: Script, delay: float = 0.0, hang_up: bool = False) -> ScriptedUpstream:
        server = ScriptedUpstream(script, delay, hang_up)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def fetch(pool: UpstreamPool, target: str = "/", method: str = "GET", **kwargs: Any) -> bytes:
    response = pool.request(method, target, {"Host": "app.example.com"}, **kwargs)
    body = response.read()
    response.release()
    return body


def echo(response: UpstreamResponse) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(response.read())
    response.release()
    return document


# -- reuse ------------------------------------------------------------------------------


def test_sequential_requests_share_one_connection(
    scripted: Callable[..., ScriptedUpstream],
) -> None:
    server = scripted(lambda conn, req: OK)
    pool = UpstreamPool(server.url)
    assert [fetch(pool) for _ in range(5)] == [b"ok"] * 5
    assert (server.connections, pool.opened, pool.idle) == (1, 1, 1)


def test_connection_answered_with_close_is_not_reused(
    scripted: Callable[..., ScriptedUpstream],
) -> None:
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    server = scripted(lambda conn, req: closing)
    pool = UpstreamPool(server.url)
    assert [fetch(pool) for _ in range(3)] == [b"ok"] * 3
    assert (server.connections, pool.idle) == (3, 0)


def test_body_left_unread_drops_the_connection(scripted: Callable[..., ScriptedUpstream]) -> None:
    long_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
    server = scripted(lambda conn, req: long_answer)
    pool = UpstreamPool(server.url)
    response = pool.request("GET", "/", {"Host": "a"})
    assert response.read1(4)
    response.close()
    assert fetch(pool) == b"0123456789"
    assert server.connections == 2


def test_content_length_body_read_with_read1_returns_the_connection(
    upstream_gunicorn: Gunicorn,
) -> None:
    pool = UpstreamPool(upstream_gunicorn.url)
    for _ in range(3):
        response = pool.request("GET", "/big?size=200000", {"Host": "a"})
        while response.read1(65536):
            pass
        response.release()
    assert (pool.opened, pool.idle) == (1, 1)


@pytest.mark.parametrize(("method", "target"), [("HEAD", "/hello"), ("GET", "/status?code=204")])
def test_bodiless_answer_is_complete_and_returns_the_connection(
    upstream_gunicorn: Gunicorn, method: str, target: str
) -> None:
    pool = UpstreamPool(upstream_gunicorn.url)
    for _ in range(2):
        response = pool.request(method, target, {"Host": "a"})
        assert response.read1(65536) == b""
        response.release()
    assert (pool.opened, pool.idle) == (1, 1)


def test_idle_connections_beyond_maxsize_are_closed(upstream_gunicorn: Gunicorn) -> None:
    pool = UpstreamPool(upstream_gunicorn.url, maxsize=2)
    held = [pool.request("GET", "/hello", {"Host": "a"}) for _ in range(5)]
    for response in held:
        response.read()
        response.release()
    assert (pool.opened, pool.idle) == (5, 2)


# -- stale connections --------------------------------------------------------------------


def test_connection_the_upstream_closed_while_idle_is_replaced(
    scripted: Callable[..., ScriptedUpstream],
) -> None:
    server = scripted(lambda conn, req: OK, hang_up=True)
    pool = UpstreamPool(server.url)
    fetch(pool)
    time.sleep(0.2)  # the server has hung up by now; the pool must notice before sending
    assert fetch(pool) == b"ok"
    assert server.connections == 2


def test_post_on_connection_closed_while_idle_goes_out_on_a_new_one(
    scripted: Callable[..., ScriptedUpstream],
) -> None:
    server = scripted(lambda conn, req: OK, hang_up=True)
    pool = UpstreamPool(server.url)
    fetch(pool)
    time.sleep(0.2)
    response = pool.request("POST", "/", {"Host": "a", "Content-Length": "1"}, b"x")
    assert response.read() == b"ok"
    assert server.connections == 2


def test_get_is_retried_once_when_reused_connection_hangs_up_unanswered(
    scripted: Callable[..., ScriptedUpstream],
) -> None:
    # The first connection answers once, then takes the next request and hangs up on it.
    server = scripted(lambda conn, req: OK if conn > 0 or req == 0 else None)
    pool = UpstreamPool(server.url)
    fetch(pool)
    assert fetch(pool) == b"ok"
    assert server.connections == 2


def test_post_is_not_retried_when_reused_connection_hangs_up_unanswered(
    scripted: Callable[..., ScriptedUpstream],
) -> None:
    server = scripted(lambda conn, req: OK if conn > 0 or req == 0 else None)
    pool = UpstreamPool(server.url)
    fetch(pool)
    with pytest.raises(UpstreamError) as failed:
        pool.request("POST", "/", {"Host": "a", "Content-Length": "1"}, b"x")
    assert failed.value.status == 502
    assert server.connections == 1


def test_get_is_not_retried_when_new_connection_hangs_up(
    scripted: Callable[..., ScriptedUpstream],
) -> None:
    server = scripted(lambda conn, req: None)
    pool = UpstreamPool(server.url)
    with pytest.raises(UpstreamError):
        pool.request("GET", "/", {"Host": "a"})
    assert server.connections == 1


# -- errors and timeouts ------------------------------------------------------------------


def test_refused_connection_is_upstream_error_not_timeout() -> None:
    pool = UpstreamPool(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamError) as failed:
        pool.request("GET", "/", {"Host": "a"})
    assert not isinstance(failed.value, UpstreamTimeout)
    assert failed.value.status == 502


def test_unresolvable_host_is_upstream_error_not_timeout() -> None:
    pool = UpstreamPool("http://no-such-host.invalid")
    with pytest.raises(UpstreamError) as failed:
        pool.request("GET", "/", {"Host": "a"})
    assert failed.value.status == 502


def test_connect_timeout_is_upstream_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    try:
        pool = UpstreamPool(f"http://127.0.0.1:{port}", connect_timeout=0.3, read_timeout=30)
        with pytest.raises(UpstreamTimeout) as failed:
            pool.request("GET", "/", {"Host": "a"})
        assert failed.value.status == 504
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_slow_answer_is_upstream_timeout_after_read_timeout(
    scripted: Callable[..., ScriptedUpstream],
) -> None:
    server = scripted(lambda conn, req: OK, delay=2.0)
    pool = UpstreamPool(server.url, connect_timeout=5, read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        pool.request("GET", "/", {"Host": "a"})
    assert time.monotonic() - started < 1.5


def test_body_cut_short_of_its_content_length_is_upstream_error(
    scripted: Callable[..., ScriptedUpstream],
) -> None:
    server = scripted(
        lambda conn, req: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", hang_up=True
    )
    pool = UpstreamPool(server.url)
    response = pool.request("GET", "/", {"Host": "a"})
    assert response.read1(1000) == b"short"
    with pytest.raises(UpstreamError):
        response.read1(1000)


# -- what goes out and what comes back --------------------------------------------------


def test_no_header_is_invented(upstream: ThreadedServer) -> None:
    pool = UpstreamPool(upstream.url)
    seen = echo(pool.request("GET", "/echo", {"Host": "app.example.com"}))
    assert seen["headers"] == {"Host": "app.example.com"}


def test_chunked_upload_is_framed_and_arrives_whole(upstream: ThreadedServer) -> None:
    chunks = [b"a" * 70000, b"", b"b" * 3, b"c" * 65536]
    pool = UpstreamPool(upstream.url)
    response = pool.request("POST", "/echo", {"Host": "a"}, iter(chunks), chunked=True)
    seen = echo(response)
    assert seen["headers"]["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in seen["headers"]
    assert (seen["size"], seen["sha256"]) == (
        sum(map(len, chunks)),
        hashlib.sha256(b"".join(chunks)).hexdigest(),
    )


def test_sized_upload_from_a_file_like_arrives_whole(upstream: ThreadedServer) -> None:
    class Reader:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def read(self, amount: int) -> bytes:
            part, self.data = self.data[:amount], self.data[amount:]
            return part

    data = bytes(range(256)) * 1000
    pool = UpstreamPool(upstream.url)
    headers = {"Host": "a", "Content-Length": str(len(data))}
    seen = echo(pool.request("PUT", "/echo", headers, Reader(data)))
    assert "Transfer-Encoding" not in seen["headers"]
    assert (seen["size"], seen["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


def test_repeated_response_headers_keep_their_order(upstream: ThreadedServer) -> None:
    pool = UpstreamPool(upstream.url)
    response = pool.request("GET", "/cookies", {"Host": "a"})
    names = [name for name, _ in response.headers if name in ("Set-Cookie", "X-Between")]
    cookies = [value[:3] for name, value in response.headers if name == "Set-Cookie"]
    response.read()
    response.release()
    assert names == ["Set-Cookie", "X-Between", "Set-Cookie", "Set-Cookie"]
    assert cookies == ["a=1", "b=2", "c=3"]


def test_threads_sharing_a_pool_each_get_their_own_answer(upstream_gunicorn: Gunicorn) -> None:
    pool = UpstreamPool(upstream_gunicorn.url, maxsize=8)

    def one(index: int) -> str:
        return str(echo(pool.request("GET", f"/echo?n={index}", {"Host": "a"}))["raw_uri"])

    with ThreadPoolExecutor(max_workers=12) as workers:
        answers = list(workers.map(one, range(240)))
    assert answers == [f"/echo?n={index}" for index in range(240)]
    assert pool.idle <= 8
    assert pool.opened <= 240 // 4, f"{pool.opened} connections for 240 requests"


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "a", "X-Evil": "1\r\nX-Injected: 1"},
        {"Host": "a", "X-Evil": "1\nX-Injected: 1"},
        {"Host": "a", "X-Evil": "nul\x00"},
        {"Host": "a", "X-Evil": "not latin-1 \u20ac"},
    ],
)
def test_header_that_would_split_the_request_is_refused_before_sending(
    scripted: Callable[..., ScriptedUpstream], headers: dict[str, str]
) -> None:
    server = scripted(lambda conn, req: OK)
    pool = UpstreamPool(server.url)
    with pytest.raises(BadRequest):
        pool.request("GET", "/", headers)
    assert server.connections == 0


@pytest.mark.parametrize(
    "header_line",
    [b"X-Folded: one\r\n two\r\n", b"No colon here\r\n", b"X-Bare: a\rb\r\n", b"Bad Name: x\r\n"],
)
def test_malformed_response_header_is_upstream_error(
    scripted: Callable[..., ScriptedUpstream], header_line: bytes
) -> None:
    answer = b"HTTP/1.1 200 OK\r\n" + header_line + b"Content-Length: 2\r\n\r\nok"
    server = scripted(lambda conn, req: answer)
    pool = UpstreamPool(server.url)
    with pytest.raises(UpstreamError) as failed:
        pool.request("GET", "/", {"Host": "a"})
    assert failed.value.status == 502


def test_chunked_answer_is_decoded_and_its_connection_reused(
    scripted: Callable[..., ScriptedUpstream],
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Spaced:   padded value  \r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    server = scripted(lambda conn, req: chunked)
    pool = UpstreamPool(server.url)
    response = pool.request("GET", "/", {"Host": "a"})
    assert ("X-Spaced", "padded value") in response.headers
    assert response.read() == b"abcde"
    response.release()
    assert fetch(pool) == b"abcde"
    assert server.connections == 1


def test_http_client_writes_and_reads_on_the_socket_the_transport_puts_in_it(
    upstream_gunicorn: Gunicorn,
) -> None:
    # Transport.connect sets HTTPConnection.sock itself, as http.client's own connect()
    # does; the attribute is not documented API, so pin what the pool and the
    # WebSocket splice rely on: it is used as given (no second connection) and closed.
    from ory_wsgi.transport import Transport

    connection = Transport.for_url(upstream_gunicorn.url).connect()
    sock = connection.sock
    assert sock is not None
    connection.putrequest("GET", "/echo/pinned", skip_host=True, skip_accept_encoding=True)
    connection.putheader("Host", "pinned.example")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["headers"]["Host"] == "pinned.example"
    assert connection.sock is sock
    connection.close()
    assert sock.fileno() == -1
