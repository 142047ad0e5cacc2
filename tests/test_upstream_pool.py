"""The upstream connection pool over real sockets: reuse, stale connections, timeouts, framing."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from servers import Gunicorn, ScriptedUpstream, ThreadedServer, free_port

from ory_wsgi.errors import (
    BadRequest,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamHeadersTooLarge,
    UpstreamTimeout,
)
from ory_wsgi.upstream.pool import MAX_HEADER_BYTES, MAX_HEADERS, UpstreamPool, UpstreamResponse

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


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
    with pytest.raises(UpstreamBadResponse) as failed:
        pool.request("GET", "/", {"Host": "a"})
    assert failed.value.status == 502
    assert failed.value.code == "upstream_bad_response"


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
    from ory_wsgi.upstream.transport import Transport

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


# -- response framing (RFC 9112 §6.3) ---------------------------------------------------

CHUNKED_BODY = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        b"Content-Length: 500\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: abc\r\nTransfer-Encoding: Chunked\r\n",
        b"Content-Length: 3\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n",
    ],
)
def test_transfer_encoding_with_content_length_is_read_as_chunked_and_the_length_dropped(
    scripted: Callable[..., ScriptedUpstream], framing: bytes
) -> None:
    server = scripted(lambda conn, req: b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n" + CHUNKED_BODY)
    pool = UpstreamPool(server.url)
    response = pool.request("GET", "/", {"Host": "a"})
    assert response.read() == b"hello world"
    assert [name for name, _ in response.headers if name.lower() == "content-length"] == []
    response.release()
    # Framed two ways: the connection is not trusted with a second answer.
    assert pool.idle == 0


@pytest.mark.parametrize(
    "lengths",
    [
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: 5, 6\r\n",
        b"Content-Length: 6,5\r\n",
        b"Content-Length: 5\r\nContent-Length: 5, 50\r\n",
    ],
)
def test_conflicting_content_lengths_are_a_bad_response(
    scripted: Callable[..., ScriptedUpstream], lengths: bytes
) -> None:
    server = scripted(lambda conn, req: b"HTTP/1.1 200 OK\r\n" + lengths + b"\r\nhello!")
    pool = UpstreamPool(server.url)
    with pytest.raises(UpstreamBadResponse) as failed:
        pool.request("GET", "/", {"Host": "a"})
    assert (failed.value.status, failed.value.code) == (502, "upstream_bad_response")
    assert pool.idle == 0


@pytest.mark.parametrize(
    "value", [b"abc", b"-1", b"+5", b"0x5", b"5.0", b"5 5", b"", b"1e3", b"\xd9\xa5", b"9" * 40]
)
def test_invalid_content_length_is_a_bad_response(
    scripted: Callable[..., ScriptedUpstream], value: bytes
) -> None:
    server = scripted(
        lambda conn, req: b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\nhello"
    )
    pool = UpstreamPool(server.url)
    with pytest.raises(UpstreamBadResponse) as failed:
        pool.request("GET", "/", {"Host": "a"})
    assert failed.value.code == "upstream_bad_response"


@pytest.mark.parametrize(
    "lengths",
    [
        b"Content-Length: 5\r\nContent-Length: 5\r\n",
        b"Content-Length: 5, 5\r\n",
        b"Content-Length: 5 ,5\r\nContent-Length: 5\r\n",
    ],
)
def test_identical_repeated_content_lengths_collapse_into_one(
    scripted: Callable[..., ScriptedUpstream], lengths: bytes
) -> None:
    server = scripted(
        lambda conn, req: b"HTTP/1.1 200 OK\r\n" + lengths + b"X-After: 1\r\n\r\nhello"
    )
    pool = UpstreamPool(server.url)
    response = pool.request("GET", "/", {"Host": "a"})
    assert response.headers == [("Content-Length", "5"), ("X-After", "1")]
    assert response.read() == b"hello"
    response.release()
    assert fetch(pool) == b"hello"
    assert server.connections == 1


@pytest.mark.parametrize(
    "coding",
    [b"gzip, chunked", b"chunked, gzip", b"gzip", b"chunked, chunked", b"identity", b"xchunked"],
)
def test_transfer_coding_other_than_chunked_alone_is_a_bad_response(
    scripted: Callable[..., ScriptedUpstream], coding: bytes
) -> None:
    server = scripted(
        lambda conn, req: (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n" + CHUNKED_BODY
        )
    )
    pool = UpstreamPool(server.url)
    with pytest.raises(UpstreamBadResponse):
        pool.request("GET", "/", {"Host": "a"})


def test_transfer_encoding_split_over_two_lines_is_read_as_its_list(
    scripted: Callable[..., ScriptedUpstream],
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
    server = scripted(lambda conn, req: answer + CHUNKED_BODY)
    pool = UpstreamPool(server.url)
    with pytest.raises(UpstreamBadResponse):
        pool.request("GET", "/", {"Host": "a"})


# -- interim answers --------------------------------------------------------------------

EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"


@pytest.mark.parametrize(
    "interim",
    [
        EARLY_HINTS,
        EARLY_HINTS + EARLY_HINTS,
        b"HTTP/1.1 100 Continue\r\n\r\n" + b"HTTP/1.1 102 Processing\r\n\r\n" + EARLY_HINTS,
        b"HTTP/1.1 199 Whatever\r\nX-Interim: 1\r\n\r\n",
    ],
)
def test_interim_answers_are_dropped_and_the_final_answer_is_read(
    scripted: Callable[..., ScriptedUpstream], interim: bytes
) -> None:
    answer = interim + b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Final: 1\r\n\r\nok"
    server = scripted(lambda conn, req: answer)
    pool = UpstreamPool(server.url)
    response = pool.request("GET", "/", {"Host": "a"})
    assert (response.status, response.headers) == (201, [("Content-Length", "2"), ("X-Final", "1")])
    assert response.read() == b"ok"
    response.release()
    assert fetch(pool) == b"ok"
    assert server.connections == 1


def test_endless_interim_answers_are_a_bad_response(
    scripted: Callable[..., ScriptedUpstream],
) -> None:
    server = scripted(lambda conn, req: EARLY_HINTS * 100 + OK)
    pool = UpstreamPool(server.url)
    with pytest.raises(UpstreamBadResponse):
        pool.request("GET", "/", {"Host": "a"})


# -- header limits ----------------------------------------------------------------------


@pytest.mark.parametrize("count", [101, 1000, MAX_HEADERS])
def test_many_response_headers_within_the_limits_are_read(
    scripted: Callable[..., ScriptedUpstream], count: int
) -> None:
    lines = b"".join(b"a:%d\r\n" % (i % 10) for i in range(count - 1))
    assert len(lines) < MAX_HEADER_BYTES
    server = scripted(
        lambda conn, req: b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 2\r\n\r\nok"
    )
    pool = UpstreamPool(server.url)
    response = pool.request("GET", "/", {"Host": "a"})
    assert len(response.headers) == count
    assert response.read() == b"ok"


@pytest.mark.parametrize(
    "lines",
    [
        b"a:1\r\n" * (MAX_HEADERS + 1),
        b"Set-Cookie: " + b"x" * 1000 + b"\r\n" * 1 + (b"X: " + b"y" * 1000 + b"\r\n") * 300,
        b"X-Huge: " + b"z" * 70000 + b"\r\n",
    ],
    ids=["lines", "bytes", "one_line"],
)
def test_response_headers_beyond_the_limits_are_their_own_error(
    scripted: Callable[..., ScriptedUpstream], lines: bytes
) -> None:
    server = scripted(
        lambda conn, req: b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 2\r\n\r\nok"
    )
    pool = UpstreamPool(server.url)
    with pytest.raises(UpstreamHeadersTooLarge) as failed:
        pool.request("GET", "/", {"Host": "a"})
    assert (failed.value.status, failed.value.code) == (502, "upstream_headers_too_large")


@pytest.mark.parametrize(
    "answer", [b"SSH-2.0-OpenSSH_9.6\r\n", b"HTTP/2 200\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n"]
)
def test_answer_that_is_not_http_1_is_a_bad_response(
    scripted: Callable[..., ScriptedUpstream], answer: bytes
) -> None:
    server = scripted(lambda conn, req: answer)
    pool = UpstreamPool(server.url)
    with pytest.raises(UpstreamBadResponse):
        pool.request("GET", "/", {"Host": "a"})
