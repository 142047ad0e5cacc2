"""WebSockets through the proxy: a real echo app (websockets' sync server), real clients."""

from __future__ import annotations

import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import requests
from certs import TestCA
from joserfc import jwt
from ory_flows import PASSWORD, jwks
from servers import Gunicorn, ThreadedServer, free_port, log_records, proxy_gunicorn
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from ws_echo import EchoApp

from ory_wsgi import make_app
from ory_wsgi.testing import FakeKratos
from ory_wsgi.testing.server import FakeKratosServer
from ory_wsgi.upstream.websocket import accept_for

HANDSHAKE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoApp]:
    app = EchoApp()
    yield app
    app.stop()


def proxy_config(directory: Path, echo: EchoApp, ory: str, port: int, extra: str = "") -> Path:
    path = directory / f"ory-{port}.toml"
    path.write_text(
        f'[proxy]\nupstream = "{echo.url}"\npublic_url = "http://127.0.0.1:{port}"\n{extra}'
        f'[ory]\nsdk_url = "{ory}"\n[[protect]]\nprefix = "/private"\n'
    )
    return path


def start_gunicorn(
    directory: Path, echo: EchoApp, ory: str, *args: str, extra: str = "", threads: int = 4
) -> Gunicorn:
    port = free_port()
    config = proxy_config(directory, echo, ory, port, extra)
    return Gunicorn(
        f'ory_wsgi:make_app("{config}")', *args, threads=threads, cwd=directory, port=port
    )


@pytest.fixture(scope="module")
def proxy(
    echo: EchoApp, fake_ory_server: FakeKratosServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """The proxy under gunicorn (gthread, 4 threads) with Ory, `/private` protected."""
    server = start_gunicorn(tmp_path_factory.mktemp("ws"), echo, fake_ory_server.kratos.url)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def one_thread_proxy(
    echo: EchoApp, fake_ory_server: FakeKratosServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """A gthread worker with a single thread: it serves nothing else while a splice runs."""
    server = start_gunicorn(
        tmp_path_factory.mktemp("ws1"),
        echo,
        fake_ory_server.kratos.url,
        "--worker-class",
        "gthread",
        "--threads",
        "1",
        threads=1,
    )
    yield server
    server.stop()


def ws_url(server: Gunicorn | ThreadedServer | str, path: str) -> str:
    base = server if isinstance(server, str) else server.url
    return base.replace("http://", "ws://") + path


def unique(prefix: str = "/chat") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def open_ws(url: str, **kwargs: Any) -> ClientConnection:
    return connect(url, open_timeout=10, close_timeout=5, **kwargs)


def refusal(url: str, **kwargs: Any) -> Any:
    with pytest.raises(InvalidStatus) as refused:
        open_ws(url, **kwargs).close()
    return refused.value.response


def logged_in(fake_ory: FakeKratos, email: str = "ada@example.com") -> tuple[str, str]:
    """A new identity with a session: (identity id, Cookie header)."""
    identity = fake_ory.add_identity(email, PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    return identity["id"], fake_ory.session_cookie(token)


def alive(server: Gunicorn) -> int:
    return requests.get(f"{server.url}/.ory/proxy/health/alive", timeout=5).status_code


def test_logged_in_websocket_reaches_the_app_with_the_session_jwt(
    proxy: Gunicorn, echo: EchoApp, fake_ory: FakeKratos
) -> None:
    subject, cookie = logged_in(fake_ory)
    path = unique("/private/chat")
    with open_ws(ws_url(proxy, path), additional_headers={"Cookie": cookie}) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    (handshake,) = echo.seen(path)
    authorization = handshake.headers["Authorization"]
    assert authorization.startswith("Bearer ")
    token = jwt.decode(authorization[7:], jwks(proxy), algorithms=["ES256"])
    assert token.claims["sub"] == subject


def test_anonymous_websocket_on_a_protected_path_gets_401_and_never_reaches_the_app(
    proxy: Gunicorn, echo: EchoApp
) -> None:
    path = unique("/private/chat")
    response = refusal(ws_url(proxy, path))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert echo.seen(path) == []


def test_anonymous_browser_websocket_on_a_protected_path_is_sent_to_login(
    proxy: Gunicorn, echo: EchoApp
) -> None:
    path = unique("/private/chat")
    # By hand: websockets' client would follow the redirect itself.
    response = requests.get(
        f"{proxy.url}{path}",
        headers={**HANDSHAKE, "Accept": "text/html"},
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code == 303
    assert "/.ory/self-service/login/browser?return_to=" in response.headers["Location"]
    assert echo.seen(path) == []


def test_messages_echo_both_ways(proxy: Gunicorn) -> None:
    big = bytes(range(256)) * 800  # 200 kB: several reads and writes on each side
    with open_ws(ws_url(proxy, unique())) as ws:
        for message in ("one", "two", big, "three"):
            ws.send(message)
            assert ws.recv(timeout=5) == message


def test_what_the_app_sends_right_after_its_101_reaches_the_client(proxy: Gunicorn) -> None:
    with open_ws(ws_url(proxy, unique("/greet"))) as ws:
        assert ws.recv(timeout=5) == "hello"
        ws.send("and back")
        assert ws.recv(timeout=5) == "and back"


def test_client_authorization_never_reaches_the_app(proxy: Gunicorn, echo: EchoApp) -> None:
    path = unique()
    with open_ws(ws_url(proxy, path), additional_headers={"Authorization": "Bearer forged"}):
        pass
    (handshake,) = echo.seen(path)
    assert "Authorization" not in handshake.headers


def test_handshake_carries_forwarded_headers_and_the_clients_host(
    proxy: Gunicorn, echo: EchoApp
) -> None:
    path = unique()
    with open_ws(ws_url(proxy, path), additional_headers={"X-Forwarded-For": "6.6.6.6"}):
        pass
    (handshake,) = echo.seen(path)
    assert handshake.headers["Host"] == f"127.0.0.1:{proxy.port}"
    assert handshake.headers["X-Forwarded-For"] == "127.0.0.1"
    assert handshake.headers["X-Forwarded-Proto"] == "http"
    assert handshake.headers["Upgrade"] == "websocket"
    assert handshake.headers["Connection"] == "Upgrade"


def test_a_refused_upgrade_reaches_the_client_as_the_apps_answer(proxy: Gunicorn) -> None:
    response = refusal(ws_url(proxy, unique("/refuse")))
    assert response.status_code == 403
    assert response.body == b"the app says no\n"


def test_a_websocket_from_a_foreign_origin_is_refused(proxy: Gunicorn, echo: EchoApp) -> None:
    path = unique()
    response = refusal(ws_url(proxy, path), origin="https://evil.example")  # type: ignore[arg-type]
    assert response.status_code == 403
    assert echo.seen(path) == []


def test_a_websocket_from_the_public_origin_is_accepted(proxy: Gunicorn) -> None:
    origin = f"http://127.0.0.1:{proxy.port}"
    with open_ws(ws_url(proxy, unique()), origin=origin) as ws:  # type: ignore[arg-type]
        ws.send("same site")
        assert ws.recv(timeout=5) == "same site"


def test_a_websocket_is_logged_once_with_status_101(proxy: Gunicorn) -> None:
    path = unique()
    with open_ws(ws_url(proxy, path)) as ws:
        ws.send("x")
        ws.recv(timeout=5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [r for r in log_records(proxy.log()) if r.get("path") == path]
        if lines:
            break
        time.sleep(0.05)
    assert [line["status"] for line in lines] == [101]


def test_client_close_ends_the_splice_and_frees_the_worker_thread(
    one_thread_proxy: Gunicorn,
) -> None:
    with open_ws(ws_url(one_thread_proxy, unique())) as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
    assert alive(one_thread_proxy) == 200


def test_client_dropping_the_connection_ends_the_splice_and_frees_the_worker_thread(
    one_thread_proxy: Gunicorn,
) -> None:
    with open_ws(ws_url(one_thread_proxy, unique())) as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
        # No close frame: only the end of the TCP connection tells the proxy.
        ws.socket.shutdown(socket.SHUT_RDWR)
    assert alive(one_thread_proxy) == 200


def test_app_dropping_the_connection_ends_the_splice_and_frees_the_worker_thread(
    one_thread_proxy: Gunicorn,
) -> None:
    with open_ws(ws_url(one_thread_proxy, unique())) as ws:
        ws.send("drop")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert alive(one_thread_proxy) == 200


def test_app_close_ends_the_splice_and_frees_the_worker_thread(
    one_thread_proxy: Gunicorn,
) -> None:
    with open_ws(ws_url(one_thread_proxy, unique())) as ws:
        ws.send("bye")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert alive(one_thread_proxy) == 200


def test_an_idle_websocket_is_closed_after_the_read_timeout(
    echo: EchoApp, fake_ory_server: FakeKratosServer, tmp_path: Path
) -> None:
    server = start_gunicorn(
        tmp_path, echo, fake_ory_server.kratos.url, extra='read_timeout = "1s"\n'
    )
    try:
        with open_ws(ws_url(server, unique())) as ws:
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=15)
            assert 0.9 <= time.monotonic() - started < 10
        assert alive(server) == 200
    finally:
        server.stop()


def test_a_sync_worker_splices_too(
    echo: EchoApp, fake_ory_server: FakeKratosServer, tmp_path: Path
) -> None:
    server = start_gunicorn(tmp_path, echo, fake_ory_server.kratos.url, threads=1)
    try:
        with open_ws(ws_url(server, unique())) as ws:
            ws.send("sync")
            assert ws.recv(timeout=5) == "sync"
        assert alive(server) == 200
    finally:
        server.stop()


def test_sigterm_closes_open_websockets_without_waiting_for_the_graceful_timeout(
    echo: EchoApp, fake_ory_server: FakeKratosServer, tmp_path: Path
) -> None:
    server = start_gunicorn(
        tmp_path, echo, fake_ory_server.kratos.url, "-c", "python:ory_wsgi.gunicorn_conf"
    )
    try:
        with open_ws(ws_url(server, unique())) as ws:
            ws.send("x")
            assert ws.recv(timeout=5) == "x"
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=15)
            # The splice notices shutdown within a second; --graceful-timeout is 5 s.
            assert time.monotonic() - started < 4
        assert server.process.wait(10) == 0
    finally:
        server.stop()


def test_a_tls_server_splices_large_messages(
    echo: EchoApp, fake_ory_server: FakeKratosServer, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path)
    cert, key = ca.issue("proxy", "127.0.0.1")
    server = start_gunicorn(
        tmp_path, echo, fake_ory_server.kratos.url, "--certfile", str(cert), "--keyfile", str(key)
    )
    client_tls = ssl.create_default_context(cafile=str(ca.cert))
    big = bytes(range(256)) * 1000  # several TLS records each way
    try:
        url = f"wss://127.0.0.1:{server.port}{unique()}"
        with open_ws(url, ssl=client_tls) as ws:
            for message in (big, "small", big[::-1]):
                ws.send(message)
                assert ws.recv(timeout=5) == message
    finally:
        server.stop()


def test_the_dev_server_splices_and_ends_the_handler_thread_on_close(
    dev_proxy: Callable[..., ThreadedServer], echo: EchoApp
) -> None:
    server = dev_proxy(upstream=echo.url)
    before = threading.active_count()
    with open_ws(ws_url(server, unique())) as ws:
        for message in ("a", "b", "c"):
            ws.send(message)
            assert ws.recv(timeout=5) == message
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


def test_an_unreachable_app_gets_502(dev_proxy: Callable[..., ThreadedServer]) -> None:
    server = dev_proxy(upstream=f"http://127.0.0.1:{free_port()}")
    assert refusal(ws_url(server, "/chat")).status_code == 502


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def wsgiref_proxy(echo: EchoApp) -> Iterator[WSGIServer]:
    """The proxy under wsgiref, a server that does not hand out its sockets."""
    server = make_server("127.0.0.1", 0, make_app(upstream=echo.url), handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_server_without_a_raw_socket_answers_501(
    wsgiref_proxy: WSGIServer, echo: EchoApp
) -> None:
    path = unique()
    # By hand: wsgiref answers HTTP/1.0, which websockets' client does not read.
    response = requests.get(
        f"http://127.0.0.1:{wsgiref_proxy.server_port}{path}", headers=HANDSHAKE, timeout=5
    )
    assert response.status_code == 501
    assert "does not give applications its client socket" in response.json()["error"]["message"]
    assert echo.seen(path) == []


def test_the_accept_is_computed_as_rfc_6455_shows() -> None:
    assert accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


class FakeSwitch:
    """A raw upstream answering each handshake with a 101, then a frame of its own.

    The request path picks the Sec-WebSocket-Accept lines of the 101 (see
    ACCEPTS); `connections` counts the handshakes that reached it.
    """

    FRAME = b"\x81\x06leaked"

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(client,), daemon=True).start()

    def _answer(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(4096)
                if not data:
                    return
                head += data
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            key = next(v for k, v in fields.items() if k.lower() == "sec-websocket-key")
            accept = "".join(f"{line}\r\n" for line in ACCEPTS[path](key))
            client.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n" + accept.encode() + b"\r\n" + self.FRAME
            )
            time.sleep(2)

    def stop(self) -> None:
        self.listener.close()


OTHER_KEY = "AQIDBAUGBwgJCgsMDQ4PEA=="
ACCEPTS: dict[str, Callable[[str], list[str]]] = {
    "/right": lambda key: [f"Sec-WebSocket-Accept: {accept_for(key)}"],
    "/missing": lambda key: [],
    "/for-another-key": lambda key: [f"Sec-WebSocket-Accept: {accept_for(OTHER_KEY)}"],
    "/the-key-itself": lambda key: [f"Sec-WebSocket-Accept: {key}"],
    "/empty": lambda key: ["Sec-WebSocket-Accept: "],
    "/right-and-wrong": lambda key: [
        f"Sec-WebSocket-Accept: {accept_for(key)}",
        f"Sec-WebSocket-Accept: {accept_for(OTHER_KEY)}",
    ],
}


@pytest.fixture(scope="module")
def switch() -> Iterator[FakeSwitch]:
    server = FakeSwitch()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def switch_proxy(
    switch: FakeSwitch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    server = proxy_gunicorn(
        tmp_path_factory.mktemp("switch"),
        f'[proxy]\nupstream = "{switch.url}"\nread_timeout = "5s"\n',
    )
    yield server
    server.stop()


def raw_handshake(
    server: Gunicorn,
    path: str,
    key: str | None = HANDSHAKE["Sec-WebSocket-Key"],
    connection: str = "Upgrade",
) -> bytes:
    """What the proxy writes back to a handshake: until half a second passes without a byte."""
    headers = {**HANDSHAKE, "Host": f"127.0.0.1:{server.port}", "Connection": connection}
    if key is None:
        del headers["Sec-WebSocket-Key"]
    else:
        headers["Sec-WebSocket-Key"] = key
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request.encode() + b"\r\n")
        received = b""
        deadline = time.monotonic() + 15  # a worker still booting on a busy machine
        sock.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                if received:
                    break
                continue
            if not data:
                break
            received += data
    return received


def test_an_upgrade_accepted_with_the_right_key_is_spliced(
    switch_proxy: Gunicorn, switch: FakeSwitch
) -> None:
    answer = raw_handshake(switch_proxy, "/right")
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert answer.endswith(FakeSwitch.FRAME)


@pytest.mark.parametrize(
    "path", ["/missing", "/for-another-key", "/the-key-itself", "/empty", "/right-and-wrong"]
)
def test_a_101_without_the_right_accept_is_a_502_and_nothing_is_spliced(
    switch_proxy: Gunicorn, path: str
) -> None:
    answer = raw_handshake(switch_proxy, path)
    assert answer.startswith(b"HTTP/1.1 502 ")
    assert b"leaked" not in answer
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [
            line
            for line in switch_proxy.log().splitlines()
            if f"upstream_bad_handshake: WebSocket {path}:" in line
        ]
        if lines:
            break
        time.sleep(0.05)
    (line,) = lines
    assert "Sec-WebSocket-Accept" in line


@pytest.mark.parametrize(
    "key",
    [
        None,
        "",
        "abc",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZQ==, AQIDBAUGBwgJCgsMDQ4PEA==",
    ],
)
def test_a_handshake_without_a_valid_key_is_400_and_never_reaches_the_app(
    switch_proxy: Gunicorn, switch: FakeSwitch, key: str | None
) -> None:
    before = switch.connections
    answer = raw_handshake(switch_proxy, "/right", key=key)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Sec-WebSocket-Key" in answer
    assert switch.connections == before


def test_a_client_cannot_drop_the_key_the_accept_is_checked_against(
    switch_proxy: Gunicorn,
) -> None:
    # Naming the key in Connection would drop it as hop-by-hop; the key sent is ours to keep.
    answer = raw_handshake(switch_proxy, "/right", connection="Upgrade, Sec-WebSocket-Key")
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert f"Sec-WebSocket-Accept: {accept_for(HANDSHAKE['Sec-WebSocket-Key'])}".encode() in answer


def test_bytes_the_app_sends_with_its_101_in_one_write_reach_the_client(
    scripted: Callable[..., Any], dev_proxy: Callable[..., ThreadedServer]
) -> None:
    # The first frame arrives in the same segment as the 101, so http.client has
    # already buffered it while reading the head: the splice must send that
    # buffer (`response.fp`) before copying from the socket, or it is lost.
    key = HANDSHAKE["Sec-WebSocket-Key"]
    switch = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_for(key)}\r\n\r\n"
    ).encode()
    frame = b"\x81\x05hello"  # an unmasked text frame, server to client
    app = scripted(lambda connection, request: switch + frame)
    proxy = dev_proxy(upstream=app.url)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
        head = "".join(f"{name}: {value}\r\n" for name, value in HANDSHAKE.items())
        client.sendall(f"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode())
        received = b""
        while not received.endswith(frame) and len(received) < 4096:
            data = client.recv(4096)
            if not data:
                break
            received += data
    assert received.startswith(b"HTTP/1.1 101 ")
    assert received.split(b"\r\n\r\n", 1)[1] == frame
