"""ory_wsgi.OryMiddleware around a plain WSGI app on a real server, with the Kratos stand-in."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from ory_flows import PASSWORD, login
from recording import RecordingUpstream
from servers import Gunicorn, ThreadedServer, free_port
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from ory_wsgi import ConfigError, OryMiddleware, verify
from ory_wsgi.middleware import SPOOFABLE_KEYS, load_embedded_settings
from ory_wsgi.testing import FakeKratos
from ory_wsgi.testing.server import FakeKratosServer

PROTECT = [{"prefix": "/members"}, {"prefix": "/admin", "aal": "aal2"}]


def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The app: tells what it saw of the request and of Ory."""
    identity = environ.get("ory.identity")
    body = json.dumps(
        {
            "path": environ["PATH_INFO"],
            "identity": identity["id"] if identity else None,
            "session": environ.get("ory.session") is not None,
            "error": environ.get("ory.error"),
            "headers": sorted(key for key in environ if key.startswith("HTTP_")),
            "authorization": environ.get("HTTP_AUTHORIZATION"),
            "remote_user": environ.get("REMOTE_USER"),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def gunicorn_app(sdk_url: str, public_url: str) -> OryMiddleware:
    """echo in OryMiddleware, for gunicorn: `test_embedding_wsgi:gunicorn_app("<ory>", "<url>")`."""
    return OryMiddleware(echo, sdk_url=sdk_url, public_url=public_url, protect=PROTECT)


class LateApp:
    """Lets the server pick its port before the middleware (which needs the public URL) exists."""

    app: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self.app(environ, start_response)


Embed = Callable[..., ThreadedServer]


@pytest.fixture
def embed(fake_ory: FakeKratos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Embed]:
    """embed(**overrides) -> echo wrapped in OryMiddleware, served on a free port."""
    monkeypatch.chdir(tmp_path)  # a generated key set lands here
    started: list[ThreadedServer] = []

    def start(**overrides: Any) -> ThreadedServer:
        late = LateApp()
        server = ThreadedServer(late)
        started.append(server)
        fake_ory.allowed_return_urls = [server.url]
        overrides.setdefault("protect", PROTECT)
        late.app = OryMiddleware(echo, sdk_url=fake_ory.url, public_url=server.url, **overrides)
        return server

    yield start
    for server in started:
        server.stop()


def session_cookies(fake_ory: FakeKratos, aal: str = "aal1") -> dict[str, str]:
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"], aal=aal)
    return fake_ory.cookies(token)


def test_logged_in_request_gives_the_app_the_identity(embed: Embed, fake_ory: FakeKratos) -> None:
    server = embed()
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    seen = requests.get(f"{server.url}/members/page", cookies=fake_ory.cookies(token), timeout=5)
    assert seen.json()["identity"] == identity["id"]


def test_session_is_cached_between_requests(embed: Embed, fake_ory: FakeKratos) -> None:
    server = embed()
    cookies = session_cookies(fake_ory)
    for _ in range(3):
        requests.get(f"{server.url}/page", cookies=cookies, timeout=5)
    assert fake_ory.whoami_calls == 1


def test_anonymous_request_on_open_path_asks_ory_nothing(
    embed: Embed, fake_ory: FakeKratos
) -> None:
    server = embed()
    seen = requests.get(f"{server.url}/page", timeout=5).json()
    assert seen["identity"] is None and not seen["session"]
    assert fake_ory.whoami_calls == 0


def test_logged_out_api_call_on_protected_path_gets_401_json(embed: Embed) -> None:
    server = embed()
    answer = requests.get(
        f"{server.url}/members", headers={"Accept": "application/json"}, timeout=5
    )
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert answer.json()["error"]["code"] == 401


def test_logged_out_browser_is_sent_to_login_with_return_to_from_public_url(embed: Embed) -> None:
    server = embed()
    answer = requests.get(
        f"{server.url}/members/x?a=1",
        headers={"Accept": "text/html", "Host": "evil.example"},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 303
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        f"{server.url}/.ory/self-service/login/browser"
    )
    assert parse_qs(location.query)["return_to"] == [f"{server.url}/members/x?a=1"]


def test_aal1_session_on_aal2_path_gets_403(embed: Embed, fake_ory: FakeKratos) -> None:
    server = embed()
    cookies = session_cookies(fake_ory, aal="aal1")
    answer = requests.get(f"{server.url}/admin", cookies=cookies, timeout=5)
    assert answer.status_code == 403
    assert answer.json()["error"]["id"] == "session_aal2_required"


def test_aal2_required_by_ory_sends_browser_to_step_up(embed: Embed, fake_ory: FakeKratos) -> None:
    server = embed()
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    fake_ory.require_aal2(identity["id"])
    _, token = fake_ory.create_session(identity["id"], aal="aal1")
    answer = requests.get(
        f"{server.url}/members",
        cookies=fake_ory.cookies(token),
        headers={"Accept": "text/html"},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 303
    assert "aal=aal2" in answer.headers["Location"]


def test_ory_down_fails_closed_on_protected_path(embed: Embed, fake_ory: FakeKratos) -> None:
    server = embed()
    cookies = session_cookies(fake_ory)
    fake_ory.fail_whoami(500)
    answer = requests.get(f"{server.url}/members", cookies=cookies, timeout=10)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"]


def test_ory_down_leaves_open_path_anonymous(embed: Embed, fake_ory: FakeKratos) -> None:
    server = embed()
    cookies = session_cookies(fake_ory)
    fake_ory.fail_whoami(500)
    seen = requests.get(f"{server.url}/page", cookies=cookies, timeout=10).json()
    assert seen["identity"] is None
    assert seen["error"] == "ory_unavailable"


def test_spoofed_identity_headers_never_reach_the_app(embed: Embed, fake_ory: FakeKratos) -> None:
    server = embed()
    spoofed = {
        "Remote-User": "admin",
        "X-Remote-User": "admin",
        "X-Forwarded-User": "admin",
        "X-Auth-Request-Email": "admin@example.com",
        "X-Ory-Subject": "admin",
        "X-Ory-Identity": "{}",
        "Ory-Base-URL-Rewrite": "https://evil",
        "X-User": "admin",
    }
    seen = requests.get(f"{server.url}/page", headers=spoofed, timeout=5).json()
    names = {"HTTP_" + name.upper().replace("-", "_") for name in spoofed}
    assert not names & set(seen["headers"])
    assert {"HTTP_REMOTE_USER", "HTTP_X_REMOTE_USER", "HTTP_X_FORWARDED_USER"} <= SPOOFABLE_KEYS


def test_headers_named_in_strip_headers_are_removed_too(embed: Embed) -> None:
    server = embed(strip_headers=["X-Tenant-Admin"])
    seen = requests.get(f"{server.url}/page", headers={"X-Tenant-Admin": "1"}, timeout=5).json()
    assert "HTTP_X_TENANT_ADMIN" not in seen["headers"]


@pytest.mark.parametrize("path", ["/members", "/members/x", "/admin", "/open"])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_cors_preflight_is_answered_by_the_middleware_never_by_the_app(
    embed: Embed, fake_ory: FakeKratos, path: str, method: str
) -> None:
    server = embed()
    answer = requests.options(
        f"{server.url}{path}",
        headers={
            "Origin": server.url,
            "Access-Control-Request-Method": method,
            "Authorization": "Bearer forged",
        },
        timeout=5,
    )
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == server.url
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    assert answer.content == b""
    assert fake_ory.whoami_calls == 0


@pytest.mark.parametrize("origin", ["https://spa.example", "null", ""])
def test_cors_preflight_from_another_origin_is_refused_by_the_middleware(
    embed: Embed, origin: str
) -> None:
    server = embed()
    answer = requests.options(
        f"{server.url}/members",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert answer.status_code == 403
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert b'"path"' not in answer.content


def test_cors_preflight_follows_the_cors_settings(embed: Embed) -> None:
    server = embed(cors={"allowed_origins": ["https://*.example.com"], "max_age": "30s"})
    answer = requests.options(
        f"{server.url}/members",
        headers={"Origin": "https://spa.example.com", "Access-Control-Request-Method": "PUT"},
        timeout=5,
    )
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == "https://spa.example.com"
    assert answer.headers["Access-Control-Max-Age"] == "30"


@pytest.mark.parametrize("claimed", ["POST", "POST, GET", "GET,POST", "PUT , post"])
def test_a_method_override_list_cannot_dodge_a_method_limited_rule(
    embed: Embed, claimed: str
) -> None:
    server = embed(protect=[{"prefix": "/write", "methods": ["POST"]}])
    answer = requests.get(
        f"{server.url}/write",
        headers={"Accept": "application/json", "X-HTTP-Method-Override": claimed},
        timeout=5,
    )
    assert answer.status_code == 401


def test_plain_options_on_a_protected_path_is_gated(embed: Embed) -> None:
    server = embed()
    answer = requests.options(
        f"{server.url}/members", headers={"Accept": "application/json"}, timeout=5
    )
    assert answer.status_code == 401


def test_forged_authorization_never_reaches_the_app(embed: Embed) -> None:
    server = embed()
    seen = requests.get(
        f"{server.url}/page", headers={"Authorization": "Bearer forged"}, timeout=5
    ).json()
    assert seen["authorization"] is None


def test_jwt_is_off_by_default_and_no_key_file_is_written(
    embed: Embed, fake_ory: FakeKratos, tmp_path: Path
) -> None:
    server = embed()
    seen = requests.get(f"{server.url}/page", cookies=session_cookies(fake_ory), timeout=5).json()
    assert seen["session"] and seen["authorization"] is None
    assert not (tmp_path / ".ory-wsgi").exists()


def test_jwt_when_enabled_is_the_apps_authorization_and_verifies(
    embed: Embed, fake_ory: FakeKratos
) -> None:
    server = embed(jwt={"enabled": True})
    seen = requests.get(f"{server.url}/page", cookies=session_cookies(fake_ory), timeout=5).json()
    claims = verify(
        seen["authorization"], jwks_url=f"{server.url}/.ory/jwks.json", issuer=server.url
    )
    assert claims["sub"] == seen["identity"]


def test_checked_normalised_path_is_the_path_the_app_sees(
    embed: Embed, fake_ory: FakeKratos
) -> None:
    server = embed()
    cookies = session_cookies(fake_ory)
    seen = requests.get(f"{server.url}/x/%2E%2E//members/./a", cookies=cookies, timeout=5).json()
    assert seen["path"] == "/members/a"


def test_dot_segments_cannot_reach_a_protected_path_anonymously(embed: Embed) -> None:
    server = embed()
    answer = requests.get(f"{server.url}/x/%2E%2E/members", timeout=5)
    assert answer.status_code == 401


@pytest.mark.parametrize(
    "path", ["/members%0A", "/members%0d%0a", "/members%09/x", "/members%7f", "/admin%0B"]
)
def test_encoded_control_near_a_protected_path_is_refused_before_the_app(
    embed: Embed, path: str
) -> None:
    server = embed()
    answer = requests.get(f"{server.url}{path}", headers={"Accept": "application/json"}, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 400


@pytest.mark.parametrize(
    "target",
    [
        "/.ory/admin%2Fidentities",
        "/.ory/ADMIN%5Cidentities",
        "/.ory/admin;x/identities",
        "/.ory/..%2Fadmin/identities",
        "/.ory/..%2F..%2Fother",
        "/.ory/admin%252Fidentities",
        "/.ory/admin%0A",
    ],
)
def test_ory_bound_path_never_leaves_the_public_api_under_the_ory_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    monkeypatch.chdir(tmp_path)
    recorder = RecordingUpstream()
    ory = ThreadedServer(recorder)
    server = ThreadedServer(
        OryMiddleware(echo, sdk_url=f"{ory.url}/kratos", public_url="https://app.example.com")
    )
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        connection.request("GET", target, headers={"Accept": "application/json"})
        status = connection.getresponse().status
        connection.close()
    finally:
        server.stop()
        ory.stop()
    assert status in (400, 404)
    assert not recorder.seen


def test_browser_logs_in_through_the_embedded_ory_route(embed: Embed, fake_ory: FakeKratos) -> None:
    server = embed()
    browser = login(server, fake_ory)  # type: ignore[arg-type]
    seen = browser.get(f"{server.url}/members", timeout=5).json()
    assert fake_ory.identity(seen["identity"])["traits"]["email"] == "ada@example.com"


def test_login_endpoint_sends_browser_to_ory_with_local_next(embed: Embed) -> None:
    server = embed()
    answer = requests.get(
        f"{server.url}/.ory/proxy/login?next=/members/x%3Fa%3D1",
        headers={"Accept": "text/html"},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 303
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["return_to"] == [f"{server.url}/members/x?a=1"]


def test_login_endpoint_refuses_a_next_on_another_site(embed: Embed) -> None:
    server = embed()
    for next_url in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        answer = requests.get(
            f"{server.url}/.ory/proxy/login",
            params={"next": next_url},
            headers={"Accept": "text/html"},
            allow_redirects=False,
            timeout=5,
        )
        query = parse_qs(urlsplit(answer.headers["Location"]).query)
        assert query["return_to"] == [f"{server.url}/"], next_url


def test_login_endpoint_answers_api_clients_401(embed: Embed) -> None:
    server = embed()
    answer = requests.get(f"{server.url}/.ory/proxy/login?next=/members", timeout=5)
    assert answer.status_code == 401


def test_upstream_is_not_required_but_public_url_is(fake_ory: FakeKratos) -> None:
    OryMiddleware(echo, sdk_url=fake_ory.url, public_url="https://app.example.com")
    with pytest.raises(ConfigError, match="public_url"):
        OryMiddleware(echo, sdk_url=fake_ory.url)


def test_missing_ory_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sdk_url"):
        OryMiddleware(echo, public_url="https://app.example.com")


def test_jwt_enabled_in_the_toml_file_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "ory.toml"
    path.write_text("[jwt]\nenabled = true\n")
    assert load_embedded_settings(path, env={}).jwt.enabled
    path.write_text('[jwt]\nttl = "30s"\n')
    assert not load_embedded_settings(path, env={}).jwt.enabled


# -- the path judged is the path the app routes on: after SCRIPT_NAME, from the raw target --


@pytest.fixture(scope="module")
def embedded_gunicorn(
    fake_ory_server: FakeKratosServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """echo in OryMiddleware under gunicorn, which takes a client's SCRIPT_NAME header from
    its forwarded_allow_ips (loopback by default)."""
    port = free_port()
    server = Gunicorn(
        f'test_embedding_wsgi:gunicorn_app("{fake_ory_server.url}", "http://127.0.0.1:{port}")',
        port=port,
        cwd=tmp_path_factory.mktemp("embedded"),
    )
    # The port is the master's; the worker may still be importing this module.
    send(server, "/open", timeout=60)
    yield server
    server.stop()


def send(
    server: Gunicorn | ThreadedServer,
    target: str,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, bytes]:
    """One request with the request line exactly as given."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        connection.request("GET", target, headers={"Accept": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("target", "script_name", "status"),
    [
        ("/app/members", "/app", 401),
        ("/app/members/x", "/app", 401),
        ("/app/MEMBERS", "/app", 401),
        ("/a/b/members", "/a/b", 401),
        ("/app/admin", "/app", 401),
        ("/app/x/%2e%2e/members", "/app", 401),
        ("/members", "/mem", 400),
        ("/app/../members", "/app", 400),
        ("/app/..%2Fmembers", "/app", 400),
        ("/x%2Fy/members", "/x%2Fy", 400),
        ("/app;x/members", "/app", 400),
    ],
)
def test_a_client_script_name_cannot_move_the_judged_path(
    embedded_gunicorn: Gunicorn, target: str, script_name: str, status: int
) -> None:
    answer, body = send(embedded_gunicorn, target, {"SCRIPT_NAME": script_name})
    assert answer == status, body
    assert b'"path"' not in body  # echo never ran


def test_a_mount_point_that_takes_the_whole_path_leaves_the_app_its_root(
    embedded_gunicorn: Gunicorn,
) -> None:
    answer, body = send(embedded_gunicorn, "/members", {"SCRIPT_NAME": "/members"})
    assert answer == 200
    assert json.loads(body)["path"] == ""


def test_under_a_client_script_name_the_app_routes_the_judged_path_with_a_session(
    embedded_gunicorn: Gunicorn, fake_ory: FakeKratos
) -> None:
    cookies = session_cookies(fake_ory)
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    answer, body = send(
        embedded_gunicorn, "/app/./members//x", {"SCRIPT_NAME": "/app", "Cookie": cookie}
    )
    assert answer == 200
    assert json.loads(body)["path"] == "/members/x"


@pytest.fixture
def mounted(fake_ory: FakeKratos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """echo in OryMiddleware mounted at /app by werkzeug's DispatcherMiddleware; its URL."""
    monkeypatch.chdir(tmp_path)
    late = LateApp()
    server = ThreadedServer(late)
    public = f"{server.url}/app"
    fake_ory.allowed_return_urls = [server.url]
    late.app = DispatcherMiddleware(
        echo,
        {"/app": OryMiddleware(echo, sdk_url=fake_ory.url, public_url=server.url, protect=PROTECT)},
    )
    yield public
    server.stop()


@pytest.mark.parametrize(
    ("path", "status"),
    [("/members", 401), ("/members/x", 401), ("/x/%2E%2E/members", 401), ("/open", 200)],
)
def test_rules_of_a_mounted_app_are_relative_to_its_mount_point(
    mounted: str, path: str, status: int
) -> None:
    answer = requests.get(mounted + path, headers={"Accept": "application/json"}, timeout=5)
    assert answer.status_code == status
    if status == 200:
        assert answer.json()["path"] == path


def test_ory_route_of_a_mounted_app_is_under_its_mount_point(
    mounted: str, fake_ory: FakeKratos
) -> None:
    fake_ory.reset_counters()
    answer = requests.get(f"{mounted}/.ory/health/alive", timeout=5)
    assert answer.status_code == 200
    assert [entry.path for entry in fake_ory.request_log] == ["/health/alive"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [({}, "private, no-store"), ({"proxy": {"protected_cache_control": ""}}, None)],
)
def test_a_protected_response_without_cache_control_is_kept_out_of_caches(
    embed: Embed, fake_ory: FakeKratos, overrides: dict[str, Any], expected: str | None
) -> None:
    server = embed(**overrides)
    cookies = session_cookies(fake_ory)
    answer = requests.get(f"{server.url}/members", cookies=cookies, timeout=5)
    assert answer.status_code == 200 and answer.json()["identity"]
    assert answer.headers.get("Cache-Control") == expected
    assert (
        "Cache-Control"
        not in requests.get(f"{server.url}/page", cookies=cookies, timeout=5).headers
    )
