"""Protection (SPEC §9) against a real gunicorn proxy, the Kratos stand-in and the test upstream."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from joserfc import jwt
from ory_flows import PASSWORD, Start, bearer_of, jwks, login
from servers import Gunicorn, ThreadedServer, free_port, wait_for_port

from ory_wsgi import ConfigError, make_app
from ory_wsgi.testing import FakeKratos
from ory_wsgi.testing.server import FakeKratosServer

RULES = """
[[protect]]
prefix = "/members"
[[public]]
prefix = "/members/signup"
[[protect]]
glob = "/admin/**"
[[protect]]
regex = "^/api/v\\\\d+/me"
[[protect]]
prefix = "/write"
methods = ["POST"]
[[protect]]
prefix = "/reports"
methods = ["GET"]
[[protect]]
prefix = "/secure"
aal = "aal2"
"""

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def proxy(
    fake_ory_server: FakeKratosServer,
    upstream: ThreadedServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gunicorn]:
    """One proxy with the rules above for the tests that leave Ory healthy."""
    directory = tmp_path_factory.mktemp("protection")
    port = free_port()
    config = directory / "ory.toml"
    config.write_text(
        f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "http://127.0.0.1:{port}"\n'
        f'[ory]\nsdk_url = "{fake_ory_server.url}"\n{RULES}'
    )
    server = Gunicorn(f'ory_wsgi:make_app("{config}")', threads=8, cwd=directory, port=port)
    yield server
    server.stop()


def session_token(fake_ory: FakeKratos, email: str = "ada@example.com", aal: str = "aal1") -> str:
    identity = fake_ory.add_identity(email, PASSWORD)
    return fake_ory.create_session(identity["id"], aal=aal)[1]


def login_location(proxy: Gunicorn, target: str, aal: str = "") -> str:
    step_up = f"aal={aal}&" if aal else ""
    return_to = quote(proxy.url + target, safe="")
    return f"{proxy.url}/.ory/self-service/login/browser?{step_up}return_to={return_to}"


def reached_upstream(answer: requests.Response) -> bool:
    """The test upstream echoes the request as JSON with a `raw_uri`."""
    try:
        return "raw_uri" in answer.json()
    except ValueError:
        return False


def test_browser_navigation_without_session_is_sent_to_login(proxy: Gunicorn) -> None:
    answer = requests.get(f"{proxy.url}/members/x", headers=HTML, allow_redirects=False, timeout=5)
    assert answer.status_code == 303
    assert answer.headers["Location"] == login_location(proxy, "/members/x")
    assert answer.content == b""


def test_return_to_keeps_the_query_and_is_url_encoded(proxy: Gunicorn) -> None:
    target = "/members/page?a=1&b=two%20words&next=%2Fx"
    answer = requests.get(f"{proxy.url}{target}", headers=HTML, allow_redirects=False, timeout=5)
    location = answer.headers["Location"]
    assert location == login_location(proxy, target)
    assert parse_qs(urlsplit(location).query)["return_to"] == [proxy.url + target]


def test_head_navigation_is_sent_to_login_too(proxy: Gunicorn) -> None:
    answer = requests.head(f"{proxy.url}/members", headers=HTML, timeout=5)
    assert answer.status_code == 303
    assert answer.headers["Location"] == login_location(proxy, "/members")


def test_api_request_without_session_gets_401_in_kratos_envelope(proxy: Gunicorn) -> None:
    answer = requests.get(f"{proxy.url}/members/x", headers=JSON, timeout=5)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == {
        "error": {
            "code": 401,
            "status": "Unauthorized",
            "reason": "No valid session credentials found in the request.",
            "message": "The request could not be authorized",
        }
    }


def test_browser_post_without_session_gets_401_not_a_redirect(proxy: Gunicorn) -> None:
    answer = requests.post(f"{proxy.url}/members/x", headers=HTML, data=b"a=1", timeout=5)
    assert answer.status_code == 401
    assert "Location" not in answer.headers


def test_session_passes_with_a_jwt_that_verifies(proxy: Gunicorn, fake_ory: FakeKratos) -> None:
    token = session_token(fake_ory)
    answer = requests.get(f"{proxy.url}/members/x", headers={"X-Session-Token": token}, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["raw_uri"] == "/members/x"
    claims = jwt.decode(bearer_of(answer), jwks(proxy), algorithms=["ES256"]).claims
    assert claims["session"]["identity"]["traits"]["email"] == "ada@example.com"


def test_browser_cookie_session_passes(proxy: Gunicorn, fake_ory: FakeKratos) -> None:
    browser = login(proxy, fake_ory)
    answer = browser.get(f"{proxy.url}/members", headers=HTML, allow_redirects=False, timeout=5)
    assert answer.status_code == 200
    assert bearer_of(answer)


def test_login_redirect_comes_back_to_the_page_with_a_session(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy(RULES)
    fake_ory.add_identity("bo@example.com", PASSWORD)
    browser = requests.Session()
    page = browser.get(f"{proxy.url}/members/page?tab=2", headers=HTML, timeout=10)
    assert page.url.startswith(f"{proxy.url}/.ory/ui/login?flow=")
    action = page.text.split('action="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    csrf = page.text.split('name="csrf_token"', 1)[1].split('value="', 1)[1].split('"', 1)[0]
    form = {
        "csrf_token": csrf,
        "identifier": "bo@example.com",
        "password": PASSWORD,
        "method": "password",
    }
    done = browser.post(action, data=form, headers=HTML, timeout=10)
    assert done.url == f"{proxy.url}/members/page?tab=2"
    assert done.json()["raw_uri"] == "/members/page?tab=2"
    assert bearer_of(done)


def test_second_factor_identity_on_aal1_session_is_sent_to_step_up(
    proxy: Gunicorn, fake_ory: FakeKratos
) -> None:
    identity = fake_ory.add_identity("mfa@example.com", PASSWORD)
    fake_ory.require_aal2(identity["id"])
    _, token = fake_ory.create_session(identity["id"], aal="aal1")
    answer = requests.get(
        f"{proxy.url}/members/x",
        headers={**HTML, "X-Session-Token": token},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 303
    assert answer.headers["Location"] == login_location(proxy, "/members/x", aal="aal2")


def test_second_factor_identity_on_aal1_session_gets_403_json(
    proxy: Gunicorn, fake_ory: FakeKratos
) -> None:
    identity = fake_ory.add_identity("mfa@example.com", PASSWORD)
    fake_ory.require_aal2(identity["id"])
    _, token = fake_ory.create_session(identity["id"], aal="aal1")
    answer = requests.get(
        f"{proxy.url}/members/x", headers={**JSON, "X-Session-Token": token}, timeout=5
    )
    assert answer.status_code == 403
    assert answer.headers["Ory-Error-Id"] == "session_aal2_required"
    document = answer.json()
    assert document["error"]["id"] == "session_aal2_required"
    step_up = login_location(proxy, "/members/x", aal="aal2")
    assert document["redirect_browser_to"] == step_up
    assert document["error"]["details"]["redirect_browser_to"] == step_up


def test_aal_rule_sends_an_aal1_session_to_step_up(proxy: Gunicorn, fake_ory: FakeKratos) -> None:
    token = session_token(fake_ory)
    answer = requests.get(
        f"{proxy.url}/secure/vault",
        headers={**HTML, "X-Session-Token": token},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 303
    assert answer.headers["Location"] == login_location(proxy, "/secure/vault", aal="aal2")


def test_aal_rule_refuses_an_aal1_api_session_with_403(
    proxy: Gunicorn, fake_ory: FakeKratos
) -> None:
    token = session_token(fake_ory)
    answer = requests.get(
        f"{proxy.url}/secure/vault", headers={**JSON, "X-Session-Token": token}, timeout=5
    )
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == 403
    assert not reached_upstream(answer)


def test_aal_rule_lets_an_aal2_session_through(proxy: Gunicorn, fake_ory: FakeKratos) -> None:
    token = session_token(fake_ory, aal="aal2")
    answer = requests.get(
        f"{proxy.url}/secure/vault", headers={"X-Session-Token": token}, timeout=5
    )
    assert answer.status_code == 200
    assert bearer_of(answer)


def test_ory_down_on_a_protected_path_is_503_with_retry_after(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy(RULES)
    fake_ory.fail_whoami(500)
    answer = requests.get(
        f"{proxy.url}/members/x", headers={**JSON, "X-Session-Token": "ory_st_x"}, timeout=10
    )
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) > 0
    assert not reached_upstream(answer)


def test_ory_down_leaves_open_paths_served(start_ory_proxy: Start, fake_ory: FakeKratos) -> None:
    proxy = start_ory_proxy(RULES)
    fake_ory.fail_whoami(500)
    answer = requests.get(f"{proxy.url}/open", headers={"X-Session-Token": "ory_st_x"}, timeout=10)
    assert answer.status_code == 200
    assert "Authorization" not in answer.json()["headers"]


def test_ory_rate_limiting_is_passed_on_with_retry_after(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy(RULES)
    fake_ory.fail_whoami(429, retry_after="7")
    answer = requests.get(
        f"{proxy.url}/members/x", headers={**JSON, "X-Session-Token": "ory_st_y"}, timeout=10
    )
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"


def test_method_limited_rule_leaves_other_methods_open(proxy: Gunicorn) -> None:
    assert requests.get(f"{proxy.url}/write", headers=JSON, timeout=5).status_code == 200
    assert requests.post(f"{proxy.url}/write", headers=JSON, timeout=5).status_code == 401


def test_get_limited_rule_covers_head(proxy: Gunicorn) -> None:
    assert requests.head(f"{proxy.url}/reports", headers=JSON, timeout=5).status_code == 401
    assert requests.post(f"{proxy.url}/reports", headers=JSON, timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-HTTP-Method-Override", "POST"),
        ("X-HTTP-Method-Override", "POST, GET"),
        ("X-HTTP-Method-Override", "GET,POST"),
        ("X-HTTP-Method-Override", "get , post"),
        ("X-HTTP-Method", "PUT, POST"),
        ("X-Method-Override", ", POST"),
    ],
)
def test_method_override_header_cannot_dodge_a_method_limited_rule(
    proxy: Gunicorn, name: str, value: str
) -> None:
    answer = requests.get(f"{proxy.url}/write", headers={**JSON, name: value}, timeout=5)
    assert answer.status_code == 401


def test_repeated_method_override_headers_all_count(proxy: Gunicorn) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    try:
        connection.putrequest("GET", "/write")
        connection.putheader("Accept", "application/json")
        connection.putheader("X-HTTP-Method-Override", "GET")
        connection.putheader("X-HTTP-Method-Override", "POST")
        connection.endheaders()
        assert connection.getresponse().status == 401
    finally:
        connection.close()


def test_method_override_naming_only_open_methods_leaves_the_rule_alone(proxy: Gunicorn) -> None:
    answer = requests.get(
        f"{proxy.url}/write", headers={**JSON, "X-HTTP-Method-Override": "GET, PUT"}, timeout=5
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [("/admin", 401), ("/admin/users/7", 401), ("/administrator", 200), ("/adminx/y", 200)],
)
def test_glob_rule(proxy: Gunicorn, path: str, status: int) -> None:
    assert requests.get(f"{proxy.url}{path}", headers=JSON, timeout=5).status_code == status


@pytest.mark.parametrize(
    ("path", "status"), [("/api/v1/me", 401), ("/api/v22/me/x", 401), ("/api/v1/you", 200)]
)
def test_regex_rule(proxy: Gunicorn, path: str, status: int) -> None:
    assert requests.get(f"{proxy.url}{path}", headers=JSON, timeout=5).status_code == status


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/members/signup", 200),
        ("/members/signup/step2", 200),
        ("/members/signupx", 401),
        ("/members/signup/../profile", 401),
    ],
)
def test_public_exception_is_the_most_specific_match(
    proxy: Gunicorn, path: str, status: int
) -> None:
    assert requests.get(f"{proxy.url}{path}", headers=JSON, timeout=5).status_code == status


def test_prefix_matches_on_segment_boundaries_only(proxy: Gunicorn) -> None:
    answer = requests.get(f"{proxy.url}/membership", headers=JSON, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["raw_uri"] == "/membership"


def test_cors_preflight_on_a_protected_path_is_never_gated(proxy: Gunicorn) -> None:
    answer = requests.options(
        f"{proxy.url}/members/x",
        headers={"Origin": proxy.url, "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == proxy.url


def test_protect_path_prefix_flag_of_run_protects(
    upstream: ThreadedServer, fake_ory: FakeKratos, tmp_path: Path
) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "ory_wsgi.cli",
        "run",
        upstream.url,
        "--port",
        str(port),
        "--no-reload",
        "--sdk-url",
        fake_ory.url,
        "--protect-path-prefix",
        "/members",
        "--protect-path-prefix",
        "/admin",
    ]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    try:
        wait_for_port(port, process=process)
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/members/x", headers=JSON, timeout=5).status_code == 401
        assert requests.get(f"{base}/admin", headers=JSON, timeout=5).status_code == 401
        assert requests.get(f"{base}/open", headers=JSON, timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(10)


def test_a_protected_response_without_cache_control_is_kept_out_of_caches(
    proxy: Gunicorn, fake_ory: FakeKratos
) -> None:
    token = session_token(fake_ory)
    answer = requests.get(
        f"{proxy.url}/members/x", headers={**JSON, "X-Session-Token": token}, timeout=5
    )
    assert answer.status_code == 200 and reached_upstream(answer)
    assert answer.headers["Cache-Control"] == "private, no-store"


def test_an_open_response_gets_no_cache_control(proxy: Gunicorn, fake_ory: FakeKratos) -> None:
    token = session_token(fake_ory)
    answer = requests.get(
        f"{proxy.url}/open", headers={**JSON, "X-Session-Token": token}, timeout=5
    )
    assert answer.status_code == 200 and reached_upstream(answer)
    assert "Cache-Control" not in answer.headers


@pytest.mark.parametrize(
    ("setting", "members", "sse"),
    [
        ('protected_cache_control = "no-cache"', "no-cache", "no-cache"),
        ('protected_cache_control = ""', None, "no-cache"),
        ("", "private, no-store", "no-cache"),
    ],
)
def test_protected_cache_control_is_configurable_and_never_replaces_the_apps(
    start_proxy: Callable[..., Gunicorn],
    upstream: ThreadedServer,
    fake_ory: FakeKratos,
    setting: str,
    members: str | None,
    sse: str,
) -> None:
    proxy = start_proxy(
        f'[proxy]\nupstream = "{upstream.url}"\n{setting}\n'
        f'[ory]\nsdk_url = "{fake_ory.url}"\n'
        '[[protect]]\nprefix = "/members"\n[[protect]]\nprefix = "/sse"\n'
    )
    headers = {**JSON, "X-Session-Token": session_token(fake_ory)}
    answer = requests.get(f"{proxy.url}/members", headers=headers, timeout=5)
    assert answer.status_code == 200
    assert answer.headers.get("Cache-Control") == members
    answer = requests.get(f"{proxy.url}/sse?count=1&delay=0", headers=headers, timeout=5)
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == sse


@pytest.mark.parametrize("value", ["private\r\nSet-Cookie: x=1", "no-store\x0bprivate", "a\x00b"])
def test_protected_cache_control_must_be_one_header_line(value: str) -> None:
    with pytest.raises(ConfigError, match="protected_cache_control"):
        make_app(upstream="http://127.0.0.1:9", protected_cache_control=value)
