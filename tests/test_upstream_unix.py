"""A Unix-socket upstream (`upstream = "unix:/run/app.sock"`), as gunicorn apps on one host run.

The app is tests/upstream_app.py under gunicorn `--bind unix:PATH`; the
WebSocket app is websockets' server on a Unix socket. Same pooling,
streaming, timeouts and error answers as over TCP.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import ProxyFactory
from servers import Gunicorn, wait_for_log
from websockets.sync.client import connect
from ws_echo import EchoApp

from ory_wsgi import make_app
from ory_wsgi.errors import ConfigError, UpstreamError
from ory_wsgi.upstream.pool import UpstreamPool
from ory_wsgi.upstream.transport import Transport, parse_upstream


@pytest.fixture(scope="module")
def sockets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short directory for sockets (a socket path is at most 107 bytes)."""
    return tmp_path_factory.mktemp("unix")


@pytest.fixture(scope="module")
def unix_app(sockets: Path) -> Iterator[str]:
    """The test app under gunicorn on a Unix socket: its `unix:` upstream."""
    path = sockets / "app.sock"
    server = Gunicorn("upstream_app:app", "--bind", f"unix:{path}", threads=8)
    yield f"unix:{path}"
    server.stop()


def config(upstream: str, extra: str = "", read_timeout: str = "2s") -> str:
    return (
        f'[proxy]\nupstream = "{upstream}"\npublic_url = "https://app.example.com"\n'
        f'read_timeout = "{read_timeout}"\n{extra}'
    )


def test_requests_reach_an_app_on_a_unix_socket_with_the_clients_host(
    start_proxy: ProxyFactory, unix_app: str
) -> None:
    proxy = start_proxy(config(unix_app))
    answer = requests.get(f"{proxy.url}/echo/x?q=1", timeout=10)
    assert answer.status_code == 200
    seen = answer.json()
    assert seen["raw_uri"] == "/echo/x?q=1"
    assert seen["headers"]["Host"] == f"127.0.0.1:{proxy.port}"
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"


def test_rewrite_host_sends_localhost_and_rewrites_its_locations(
    start_proxy: ProxyFactory, unix_app: str
) -> None:
    proxy = start_proxy(config(unix_app, "rewrite_host = true\n"))
    seen = requests.get(f"{proxy.url}/echo", timeout=10).json()
    assert seen["headers"]["Host"] == "localhost"
    assert seen["headers"]["X-Forwarded-Host"] == f"127.0.0.1:{proxy.port}"
    for location, expected in [
        ("http://localhost/after?x=1", "https://app.example.com/after?x=1"),
        ("http://localhost:80/a/", "https://app.example.com/a/"),
        ("http://localhost.evil.example/", "http://localhost.evil.example/"),
        ("https://elsewhere.example/", "https://elsewhere.example/"),
    ]:
        answer = requests.get(
            f"{proxy.url}/redirect", params={"to": location}, allow_redirects=False, timeout=10
        )
        assert answer.headers["Location"] == expected


def test_without_rewrite_host_no_location_is_taken_for_the_apps_own(
    start_proxy: ProxyFactory, unix_app: str
) -> None:
    # The app was given the client's Host: its absolute URLs are public ones already.
    proxy = start_proxy(config(unix_app))
    answer = requests.get(
        f"{proxy.url}/redirect",
        params={"to": "http://localhost/x"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.headers["Location"] == "http://localhost/x"


def test_events_and_big_bodies_stream_through_a_unix_socket(
    start_proxy: ProxyFactory, unix_app: str
) -> None:
    proxy = start_proxy(config(unix_app, read_timeout="5s"))
    with requests.get(f"{proxy.url}/sse?count=2&delay=2", stream=True, timeout=10) as events:
        started = time.monotonic()
        first = next(events.iter_content(chunk_size=None))
        assert first.startswith(b"data: event 0")
        assert time.monotonic() - started < 1.5, "the first event waited for the next one"
    size = 16 * 1024 * 1024 + 7
    digest = hashlib.sha256()
    with requests.get(
        f"{proxy.url}/big", params={"size": size, "length": 0}, stream=True, timeout=30
    ) as big:
        for part in big.iter_content(65536):
            digest.update(part)
    assert digest.hexdigest() == hashlib.sha256(b"x" * size).hexdigest()
    upload = b"u" * (5 * 1024 * 1024)
    echoed = requests.post(f"{proxy.url}/echo", data=iter([upload]), timeout=30).json()
    assert echoed["sha256"] == hashlib.sha256(upload).hexdigest()


def test_connections_to_a_unix_socket_are_pooled(unix_app: str) -> None:
    pool = UpstreamPool(Transport(parse_upstream(unix_app)))
    for index in range(5):
        response = pool.request("GET", f"/echo/{index}", {"Host": "app.example.com"})
        assert response.status == 200
        response.read()
        response.release()
    assert pool.opened == 1
    assert pool.idle == 1
    pool.close()


def test_a_missing_socket_is_a_502_with_a_log_line(
    start_proxy: ProxyFactory, sockets: Path
) -> None:
    missing = sockets / "nobody-here.sock"
    proxy = start_proxy(config(f"unix:{missing}"))
    answer = requests.get(f"{proxy.url}/page", headers={"Accept": "application/json"}, timeout=10)
    assert answer.status_code == 502
    assert "error" in answer.json()
    log = wait_for_log(proxy, "upstream_unreachable")
    assert f"upstream_unreachable: GET /page: connect to unix:{missing}: no such socket" in log


def test_a_socket_nobody_accepts_on_is_a_502(sockets: Path) -> None:
    path = sockets / "refusing.sock"
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(str(path))  # bound but not listening: connections are refused
    try:
        pool = UpstreamPool(Transport(parse_upstream(f"unix:{path}")))
        with pytest.raises(UpstreamError) as refused:
            pool.request("GET", "/", {"Host": "a"})
        assert refused.value.status == 502
        assert "refused" in str(refused.value).lower()
    finally:
        bound.close()


def test_an_app_too_slow_on_a_unix_socket_is_a_504(
    start_proxy: ProxyFactory, unix_app: str
) -> None:
    proxy = start_proxy(config(unix_app))
    started = time.monotonic()
    answer = requests.get(f"{proxy.url}/slow?delay=8", timeout=15)
    assert answer.status_code == 504
    assert time.monotonic() - started < 6  # read_timeout is 2 s; the app takes 8
    assert "upstream_timeout" in wait_for_log(proxy, "upstream_timeout")


def test_websockets_reach_an_app_on_a_unix_socket(start_proxy: ProxyFactory, sockets: Path) -> None:
    echo = EchoApp(unix_path=sockets / "ws.sock")
    try:
        proxy = start_proxy(config(echo.url))
        big = bytes(range(256)) * 1000
        with connect(proxy.url.replace("http://", "ws://") + "/greet", open_timeout=10) as ws:
            assert ws.recv(timeout=5) == "hello"
            for message in ("one", big, "two"):
                ws.send(message)
                assert ws.recv(timeout=5) == message
        (handshake,) = echo.seen("/greet")
        assert handshake.headers["Host"] == f"127.0.0.1:{proxy.port}"
    finally:
        echo.stop()


@pytest.mark.parametrize(
    ("upstream", "says"),
    [
        ("unix:", "not a Unix socket path"),
        ("unix://run/app.sock", "ambiguous Unix socket path"),
        ("http+unix://%2Frun%2Fapp.sock", "write a Unix-socket upstream as unix:/path/to.sock"),
        ("unix:/" + "d" * 120 + "/app.sock", "at most 107 bytes"),
        ("ftp://127.0.0.1", "not an http(s) URL"),
    ],
)
def test_a_bad_unix_upstream_stops_startup_with_one_line(upstream: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        make_app(upstream=upstream)
    assert "[proxy] upstream" in str(refused.value)
    assert says in str(refused.value)


def test_the_url_spelling_of_an_absolute_socket_path_is_the_same_socket(
    start_proxy: ProxyFactory, unix_app: str
) -> None:
    path = unix_app.removeprefix("unix:")
    proxy = start_proxy(config(f"unix://{path}"))
    assert requests.get(f"{proxy.url}/echo", timeout=10).status_code == 200
