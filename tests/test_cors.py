"""CORS (SPEC §10) against a real gunicorn proxy: allowed origins, look-alikes, preflights."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import requests
from servers import Gunicorn, ThreadedServer, log_records
from upstream_app import app as upstream_wsgi

from ory_wsgi.testing import FakeKratos
from ory_wsgi.testing.server import FakeKratosServer

PUBLIC = "https://app.example.com"
SETTINGS = """
[cors]
allowed_origins = ["https://app.example.com", "https://*.partner.example.com"]
additional_headers = ["X-Custom-Token"]
max_age = "5m"
[[protect]]
prefix = "/members"
"""


class CountingUpstream:
    """The test upstream, counting the requests it gets."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with self.lock:
            self.count += 1
        answer: Iterable[bytes] = upstream_wsgi(environ, start_response)
        return answer


@pytest.fixture(scope="module")
def counter() -> CountingUpstream:
    return CountingUpstream()


@pytest.fixture(scope="module")
def upstream(counter: CountingUpstream) -> Iterator[ThreadedServer]:
    server = ThreadedServer(counter)
    yield server
    server.stop()


def start(directory: Any, upstream: ThreadedServer, ory_url: str, extra: str) -> Gunicorn:
    config = directory / "ory.toml"
    config.write_text(
        f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "{PUBLIC}"\n'
        f'[ory]\nsdk_url = "{ory_url}"\n{extra}'
    )
    return Gunicorn(f'ory_wsgi:make_app("{config}")', threads=8, cwd=directory)


@pytest.fixture(scope="module")
def proxy(
    fake_ory_server: FakeKratosServer,
    upstream: ThreadedServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gunicorn]:
    server = start(tmp_path_factory.mktemp("cors"), upstream, fake_ory_server.url, SETTINGS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def any_origin_proxy(
    fake_ory_server: FakeKratosServer,
    upstream: ThreadedServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gunicorn]:
    directory = tmp_path_factory.mktemp("cors-any")
    server = start(directory, upstream, fake_ory_server.url, '[cors]\nallowed_origins = ["*"]\n')
    yield server
    server.stop()


@pytest.fixture(scope="module")
def default_proxy(
    fake_ory_server: FakeKratosServer,
    upstream: ThreadedServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gunicorn]:
    server = start(tmp_path_factory.mktemp("cors-default"), upstream, fake_ory_server.url, "")
    yield server
    server.stop()


def preflight(proxy: Gunicorn, origin: str, path: str = "/api/items") -> requests.Response:
    return requests.options(
        f"{proxy.url}{path}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type, x-custom-token",
        },
        timeout=5,
    )


def vary(answer: requests.Response) -> set[str]:
    return {token.strip().lower() for token in answer.headers.get("Vary", "").split(",")}


def allow_origins(answer: requests.Response) -> list[str]:
    return [v for k, v in answer.raw.headers.items() if k.lower() == "access-control-allow-origin"]


@pytest.mark.parametrize("origin", ["https://app.example.com", "https://a.partner.example.com"])
def test_allowed_origin_gets_itself_back_with_credentials(proxy: Gunicorn, origin: str) -> None:
    answer = requests.get(f"{proxy.url}/api/items", headers={"Origin": origin}, timeout=5)
    assert answer.status_code == 200
    assert allow_origins(answer) == [origin]
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Access-Control-Expose-Headers" in answer.headers
    assert "origin" in vary(answer)


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com.evil",
        "https://app.example.com.evil.example",
        "https://evilapp.example.com",
        "https://evil-app.example.com",
        "https://app.example.co",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com@evil.example",
        "https://evil.example#@app.example.com",
        "https://app.example.com/",
        "https://app.example.com, https://evil.example",
        "null",
        "https://partner.example.com",
        "https://evilpartner.example.com",
        "https://a.b.partner.example.com",
        "https://a.partner.example.com.evil",
        "https://a.partner.example.com:444",
        "http://a.partner.example.com",
        "https://-.partner.example.com",
        "https://a_b.partner.example.com",
        "https://a.partner.example.comx",
    ],
)
def test_look_alike_origin_gets_no_cors_headers(proxy: Gunicorn, origin: str) -> None:
    answer = requests.get(f"{proxy.url}/api/items", headers={"Origin": origin}, timeout=5)
    assert answer.status_code == 200
    assert allow_origins(answer) == []
    assert "Access-Control-Allow-Credentials" not in answer.headers
    assert "origin" in vary(answer)


@pytest.mark.parametrize(
    "origin", ["https://app.example.com.evil", "null", "https://evilpartner.example.com"]
)
def test_look_alike_origin_preflight_is_refused(proxy: Gunicorn, origin: str) -> None:
    answer = preflight(proxy, origin)
    assert answer.status_code == 403
    assert allow_origins(answer) == []


def test_allowed_preflight_is_answered_with_every_header(proxy: Gunicorn) -> None:
    answer = preflight(proxy, "https://x.partner.example.com")
    assert answer.status_code == 204
    assert allow_origins(answer) == ["https://x.partner.example.com"]
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    assert "PUT" in answer.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "authorization", "x-custom-token"} <= allowed
    assert answer.headers["Access-Control-Max-Age"] == "300"
    assert "origin" in vary(answer)
    assert answer.content == b""


def test_allowed_preflight_never_reaches_the_upstream(
    proxy: Gunicorn, counter: CountingUpstream
) -> None:
    before = counter.count
    assert preflight(proxy, PUBLIC).status_code == 204
    assert counter.count == before


def test_refused_preflight_never_reaches_the_upstream(
    proxy: Gunicorn, counter: CountingUpstream
) -> None:
    before = counter.count
    assert preflight(proxy, "https://evil.example").status_code == 403
    assert counter.count == before


def test_preflight_without_origin_is_refused(proxy: Gunicorn, counter: CountingUpstream) -> None:
    before = counter.count
    answer = requests.options(
        f"{proxy.url}/api/items", headers={"Access-Control-Request-Method": "PUT"}, timeout=5
    )
    assert answer.status_code == 403
    assert counter.count == before


def test_preflight_to_a_protected_path_is_answered_before_auth(proxy: Gunicorn) -> None:
    answer = preflight(proxy, PUBLIC, "/members/x")
    assert answer.status_code == 204


def test_preflight_to_ory_is_answered_and_not_forwarded(
    proxy: Gunicorn, fake_ory: FakeKratos
) -> None:
    fake_ory.reset_counters()
    answer = preflight(proxy, PUBLIC, "/.ory/self-service/login/api")
    assert answer.status_code == 204
    assert not fake_ory.request_log


def test_plain_options_request_is_forwarded(proxy: Gunicorn, counter: CountingUpstream) -> None:
    before = counter.count
    answer = requests.options(f"{proxy.url}/api/items", headers={"Origin": PUBLIC}, timeout=5)
    assert answer.json()["method"] == "OPTIONS"
    assert allow_origins(answer) == [PUBLIC]
    assert counter.count == before + 1


def test_upstream_allow_origin_is_replaced_by_exactly_one(proxy: Gunicorn) -> None:
    answer = requests.get(f"{proxy.url}/own-cors", headers={"Origin": PUBLIC}, timeout=5)
    assert answer.json() == {"own_cors": True}
    assert allow_origins(answer) == [PUBLIC]
    credentials = [
        v for k, v in answer.raw.headers.items() if k.lower() == "access-control-allow-credentials"
    ]
    assert credentials == ["true"]


def test_upstream_allow_origin_is_removed_for_a_refused_origin(proxy: Gunicorn) -> None:
    answer = requests.get(
        f"{proxy.url}/own-cors", headers={"Origin": "https://evil.example"}, timeout=5
    )
    assert allow_origins(answer) == []
    assert "Access-Control-Allow-Credentials" not in answer.headers


def test_upstream_allow_origin_is_removed_without_an_origin(proxy: Gunicorn) -> None:
    answer = requests.get(f"{proxy.url}/own-cors", timeout=5)
    assert allow_origins(answer) == []


def test_vary_origin_joins_the_upstream_vary(proxy: Gunicorn) -> None:
    answer = requests.get(f"{proxy.url}/own-cors", headers={"Origin": PUBLIC}, timeout=5)
    varies = [v for k, v in answer.raw.headers.items() if k.lower() == "vary"]
    assert len(varies) == 1
    assert vary(answer) == {"accept-encoding", "origin"}


@pytest.mark.parametrize("path", ["/api/items", "/members/x", "/.ory/sessions/whoami"])
def test_vary_origin_is_on_every_response_without_an_origin(proxy: Gunicorn, path: str) -> None:
    answer = requests.get(f"{proxy.url}{path}", allow_redirects=False, timeout=5)
    assert "origin" in vary(answer)


def test_proxy_own_401_carries_cors_headers_for_an_allowed_origin(proxy: Gunicorn) -> None:
    answer = requests.get(
        f"{proxy.url}/members/x",
        headers={"Origin": PUBLIC, "Accept": "application/json"},
        timeout=5,
    )
    assert answer.status_code == 401
    assert allow_origins(answer) == [PUBLIC]


def test_default_allows_only_the_public_origin(default_proxy: Gunicorn) -> None:
    ours = requests.get(f"{default_proxy.url}/x", headers={"Origin": PUBLIC}, timeout=5)
    other = requests.get(
        f"{default_proxy.url}/x", headers={"Origin": "https://other.example"}, timeout=5
    )
    assert allow_origins(ours) == [PUBLIC]
    assert allow_origins(other) == []


def test_star_reflects_any_origin_with_credentials(any_origin_proxy: Gunicorn) -> None:
    origin = "https://anything.example:8080"
    answer = requests.get(f"{any_origin_proxy.url}/x", headers={"Origin": origin}, timeout=5)
    assert allow_origins(answer) == [origin]
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"


def test_star_never_answers_with_a_literal_star(any_origin_proxy: Gunicorn) -> None:
    answer = preflight(any_origin_proxy, "https://anything.example")
    assert answer.status_code == 204
    assert allow_origins(answer) == ["https://anything.example"]


def test_star_still_refuses_null(any_origin_proxy: Gunicorn) -> None:
    answer = requests.get(f"{any_origin_proxy.url}/x", headers={"Origin": "null"}, timeout=5)
    assert allow_origins(answer) == []


def test_star_logs_a_warning_at_startup(any_origin_proxy: Gunicorn) -> None:
    requests.get(f"{any_origin_proxy.url}/x", timeout=5)  # the worker has loaded the app
    warnings = [
        r
        for r in log_records(any_origin_proxy.log())
        if r.get("level") == "warning" and r.get("logger") == "ory_wsgi.cors"
    ]
    assert warnings and '"*"' in warnings[0]["msg"]


def test_no_star_no_warning(proxy: Gunicorn) -> None:
    requests.get(f"{proxy.url}/x", timeout=5)
    assert not [
        r
        for r in log_records(proxy.log())
        if r.get("logger") == "ory_wsgi.cors" and r.get("level") == "warning"
    ]
