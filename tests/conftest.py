"""Fixtures that start real servers: the test upstream, and the proxy under gunicorn."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ory_flows import Start
from pytest_httpserver import HTTPServer
from servers import (
    Gunicorn,
    RedisServer,
    Script,
    ScriptedUpstream,
    ThreadedServer,
    free_port,
    proxy_gunicorn,
)
from upstream_app import app as upstream_wsgi

from ory_wsgi import make_app
from ory_wsgi.testing import FakeKratos


@pytest.fixture(scope="session")
def upstream() -> Iterator[ThreadedServer]:
    """The test application (tests/upstream_app.py) on a werkzeug server."""
    server = ThreadedServer(upstream_wsgi)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def upstream_gunicorn() -> Iterator[Gunicorn]:
    """The test application under gunicorn, in its own process."""
    server = Gunicorn("upstream_app:app", threads=8)
    yield server
    server.stop()


ProxyFactory = Callable[..., Gunicorn]


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[ProxyFactory]:
    """Start the proxy under gunicorn with a TOML config: start_proxy(toml_text, **kwargs)."""
    started: list[Gunicorn] = []

    def start(config: str, *args: str, **kwargs: Any) -> Gunicorn:
        server = proxy_gunicorn(tmp_path, config, *args, name=f"ory-{len(started)}.toml", **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def proxy(
    upstream_gunicorn: Gunicorn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """One shared proxy (2 gthread workers) in front of the gunicorn upstream."""
    server = proxy_gunicorn(
        tmp_path_factory.mktemp("proxy"),
        f'[proxy]\nupstream = "{upstream_gunicorn.url}"\n'
        'public_url = "https://app.example.com"\nread_timeout = "3s"\n',
        workers=2,
    )
    yield server
    server.stop()


@pytest.fixture
def dev_proxy() -> Iterator[Callable[..., ThreadedServer]]:
    """Start the proxy in this process under werkzeug's threaded server: dev_proxy(**overrides).

    The keyword arguments go to `make_app` (TOML key names).
    """
    started: list[ThreadedServer] = []

    def start(**overrides: Any) -> ThreadedServer:
        server = ThreadedServer(make_app(**overrides), poll_interval=0.05)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_ory_proxy(
    tmp_path: Path, upstream: ThreadedServer, fake_ory: FakeKratos
) -> Iterator[Start]:
    """start(extra_toml="", workers=1, threads=8) -> a proxy in front of `upstream` with Ory."""
    started: list[Gunicorn] = []

    def start(
        extra: str = "", workers: int = 1, threads: int = 8, port: int | None = None
    ) -> Gunicorn:
        port = port or free_port()
        public = f"http://127.0.0.1:{port}"
        fake_ory.allowed_return_urls = [public]
        server = proxy_gunicorn(
            tmp_path,
            f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "{public}"\n'
            f'[ory]\nsdk_url = "{fake_ory.url}"\n{extra}',
            workers=workers,
            threads=threads,
            port=port,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def ory_server() -> Iterator[HTTPServer]:
    """A scripted fake Ory (pytest-httpserver), threaded for concurrent lookups; one per
    module, so a request still in flight from another module's test cannot be counted."""
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ory(ory_server: HTTPServer) -> Iterator[HTTPServer]:
    """`ory_server` with no expectations left from another test."""
    ory_server.clear()
    yield ory_server
    ory_server.clear()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedUpstream]]:
    """scripted(script, delay=0, hang_up=False) -> a raw upstream answering as `script` says."""
    started: list[ScriptedUpstream] = []

    def start(script: Script, delay: float = 0.0, hang_up: bool = False) -> ScriptedUpstream:
        server = ScriptedUpstream(script, delay, hang_up)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real, empty redis-server for this test on a free port: `.url`, `.stop()`, `.start()`."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def fleet_redis(redis_server: RedisServer) -> dict[str, Any]:
    """The `[session_cache]` settings that name the fleet's Redis: `redis_server` here;
    test_fleet_cluster.py overrides this fixture with a Redis Cluster and reruns the fleet
    tests that take it."""
    return {"redis_url": redis_server.url}
