"""The proxy with Ory: a real gunicorn proxy, the Kratos stand-in over HTTP, the test upstream."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from client_claims import CLIENT_IP_CLAIMS, IDENTITY_CLAIMS, claims_in
from joserfc import jwt
from ory_flows import PASSWORD, Start, bearer_of, jwks, login
from servers import Gunicorn, ThreadedServer, free_port
from upstream_app import app as upstream_wsgi

from ory_wsgi import OryMiddleware
from ory_wsgi.ory.cookies import MAX_CREDENTIAL_BYTES
from ory_wsgi.testing import FakeKratos

MODES = ("proxy", "decisions", "embedded")
MEMBERS = '[[protect]]\nprefix = "/members"\n'
PUBLIC = "https://app.example.com"


def test_anonymous_request_asks_ory_nothing_and_carries_no_authorization(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy()
    answer = requests.get(f"{proxy.url}/page", cookies={"app": "1"}, timeout=5)
    assert "Authorization" not in answer.json()["headers"]
    assert fake_ory.whoami_calls == 0


def test_a_forged_bearer_is_checked_with_ory_and_never_reaches_the_app(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy()
    answer = requests.get(
        f"{proxy.url}/page", headers={"Authorization": "Bearer forged"}, timeout=5
    )
    assert "Authorization" not in answer.json()["headers"]
    assert fake_ory.whoami_calls == 1


def test_browser_login_through_the_proxy_gives_the_app_a_verified_jwt(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy()
    browser = login(proxy, fake_ory)
    cookie = next(c for c in browser.cookies if c.name == "ory_kratos_session")
    assert cookie.domain in ("127.0.0.1", "127.0.0.1.local", "")  # host-only on the public host
    answer = browser.get(f"{proxy.url}/dashboard", timeout=5)
    token = jwt.decode(bearer_of(answer), jwks(proxy), algorithms=["ES256"])
    assert token.header["alg"] == "ES256" and token.header["typ"] == "JWT" and token.header["kid"]
    assert token.claims["iss"] == proxy.url
    assert token.claims["session"]["identity"]["traits"]["email"] == "ada@example.com"
    assert token.claims["sub"] == token.claims["session"]["identity"]["id"]
    assert fake_ory.whoami_calls == 1
    assert token.claims["exp"] - token.claims["iat"] == 60


def test_ory_bound_requests_strip_the_prefix_and_send_no_app_cookies(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy()
    fake_ory.reset_counters()
    requests.get(
        f"{proxy.url}/.ory/health/alive?x=1",
        cookies={"app_session": "secret", "ory_kratos_continuity": "c"},
        headers={"Ory-Base-URL-Rewrite": "https://evil"},
        timeout=5,
    )
    logged = fake_ory.request_log[-1]
    headers = {k.lower(): v for k, v in dict(logged.headers).items()}
    assert logged.path == "/health/alive"
    assert "app_session" not in headers.get("cookie", "")
    assert "ory_kratos_continuity=c" in headers.get("cookie", "")
    assert headers["ory-base-url-rewrite"] == f"{proxy.url}/.ory"
    assert headers["ory-no-custom-domain-redirect"] == "true"
    assert fake_ory.whoami_calls == 0


def test_ory_bound_requests_match_ory_cookies_on_the_whole_name(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy('session_cookie = "sid"\n')
    fake_ory.reset_counters()
    cookie = (
        "sidebar=open; sid=s; theme=dark; csrf_token_ab=c; ory_big="
        + "x" * 6000
        + "; __Host-ory_h=h; ory_kratos_session=k"
    )
    requests.get(f"{proxy.url}/.ory/health/alive", headers={"Cookie": cookie}, timeout=5)
    logged = fake_ory.request_log[-1]
    headers = {k.lower(): v for k, v in dict(logged.headers).items()}
    assert headers["cookie"] == "sid=s; csrf_token_ab=c; __Host-ory_h=h; ory_kratos_session=k"


def test_ory_admin_api_is_not_proxied(start_ory_proxy: Start) -> None:
    proxy = start_ory_proxy()
    for path in ("/.ory/admin/identities", "/.ory/ADMIN", "/.ory/x/../admin/identities"):
        assert requests.get(f"{proxy.url}{path}", timeout=5).status_code == 404, path


def test_dot_segments_leave_the_ory_prefix_to_the_app(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy()
    fake_ory.reset_counters()
    answer = requests.get(f"{proxy.url}/.ory/%2e%2e/page", timeout=5)
    assert answer.json()["method"] == "GET"  # the test upstream's echo, not Ory
    assert not fake_ory.request_log


def test_multi_worker_tokens_verify_against_jwks_from_any_worker(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy(workers=4, threads=2)
    documents = {requests.get(f"{proxy.url}/.ory/jwks.json", timeout=5).content for _ in range(40)}
    assert len(documents) == 1
    identity = fake_ory.add_identity("bob@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    keys = jwks(proxy)
    subjects = set()
    for _ in range(40):
        answer = requests.get(f"{proxy.url}/x", headers={"X-Session-Token": token}, timeout=5)
        subjects.add(jwt.decode(bearer_of(answer), keys, algorithms=["ES256"]).claims["sub"])
    assert subjects == {identity["id"]}


def test_a_restart_keeps_the_keys(start_ory_proxy: Start) -> None:
    first = start_ory_proxy(workers=2)
    before = requests.get(f"{first.url}/.ory/jwks.json", timeout=5).content
    first.stop()
    second = start_ory_proxy(workers=2, port=first.port)
    assert requests.get(f"{second.url}/.ory/jwks.json", timeout=5).content == before


def test_a_minted_token_replayed_by_a_client_never_reaches_the_app(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy()
    identity = fake_ory.add_identity("eve@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    minted = bearer_of(
        requests.get(f"{proxy.url}/x", headers={"X-Session-Token": token}, timeout=5)
    )
    replay = requests.get(
        f"{proxy.url}/x", headers={"Authorization": f"Bearer {minted}"}, timeout=5
    )
    assert "Authorization" not in replay.json()["headers"]


def test_fifty_requests_of_one_session_ask_ory_once(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy(workers=1)
    identity = fake_ory.add_identity("joe@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    with requests.Session() as client:
        for _ in range(50):
            client.get(f"{proxy.url}/x", headers={"X-Session-Token": token}, timeout=5)
    assert fake_ory.whoami_calls == 1


def test_thirty_concurrent_first_requests_ask_ory_once(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy(workers=1, threads=32)
    identity = fake_ory.add_identity("max@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    fake_ory.whoami_delay = 0.5

    def fetch(_: int) -> Any:
        return requests.get(f"{proxy.url}/x", headers={"X-Session-Token": token}, timeout=10)

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(fetch, range(30)))
    assert all(a.json()["headers"]["Authorization"].startswith("Bearer ") for a in answers)
    assert fake_ory.whoami_calls == 1


def test_ory_down_on_an_open_path_goes_on_anonymously(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy()
    fake_ory.fail_whoami(500)
    answer = requests.get(f"{proxy.url}/open", headers={"X-Session-Token": "ory_st_x"}, timeout=5)
    assert answer.status_code == 200
    assert "Authorization" not in answer.json()["headers"]


def test_logout_link_ends_the_session(start_ory_proxy: Start, fake_ory: FakeKratos) -> None:
    proxy = start_ory_proxy()
    browser = login(proxy, fake_ory)
    assert bearer_of(browser.get(f"{proxy.url}/x", timeout=5))
    out = browser.get(f"{proxy.url}/.ory/proxy/logout", allow_redirects=False, timeout=5)
    assert out.status_code == 303
    assert out.headers["Location"].startswith(f"{proxy.url}/.ory/self-service/logout?token=")
    browser.get(out.headers["Location"], timeout=5)
    assert "ory_kratos_session" not in browser.cookies
    assert "Authorization" not in browser.get(f"{proxy.url}/x", timeout=5).json()["headers"]


def test_logout_without_default_redirect_url_lands_on_the_public_root(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy()
    browser = login(proxy, fake_ory)
    landed = browser.get(f"{proxy.url}/.ory/proxy/logout", timeout=5)
    assert landed.url == f"{proxy.url}/"
    assert landed.json()["raw_uri"] == "/"  # the app's page, not Ory's welcome page
    assert "ory_kratos_session" not in browser.cookies


def test_logout_lands_on_default_redirect_url(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer, fake_ory: FakeKratos
) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    target = f"{public}/dashboard?from=logout"
    fake_ory.allowed_return_urls = [public]
    proxy = start_proxy(
        f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "{public}"\n'
        f'default_redirect_url = "{target}"\n[ory]\nsdk_url = "{fake_ory.url}"\n',
        port=port,
    )
    browser = login(proxy, fake_ory)
    landed = browser.get(f"{proxy.url}/.ory/proxy/logout", timeout=5)
    assert landed.url == target
    assert "ory_kratos_session" not in browser.cookies


def test_logout_still_ends_the_session_when_ory_refuses_the_return_url(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy()
    browser = login(proxy, fake_ory)
    fake_ory.allowed_return_urls = ["https://elsewhere.example.com"]
    out = browser.get(f"{proxy.url}/.ory/proxy/logout", allow_redirects=False, timeout=5)
    assert out.status_code == 303
    assert "return_to" not in out.headers["Location"]
    browser.get(out.headers["Location"], timeout=5)
    assert "ory_kratos_session" not in browser.cookies
    assert "Authorization" not in browser.get(f"{proxy.url}/x", timeout=5).json()["headers"]


def test_no_jwt_setting_strips_authorization_and_mints_nothing(
    start_ory_proxy: Start, fake_ory: FakeKratos
) -> None:
    proxy = start_ory_proxy("[jwt]\nenabled = false\n")
    identity = fake_ory.add_identity("nj@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    answer = requests.get(f"{proxy.url}/x", headers={"X-Session-Token": token}, timeout=5)
    assert "Authorization" not in answer.json()["headers"]
    assert requests.get(f"{proxy.url}/.ory/proxy/jwks.json", timeout=5).status_code == 404


# --- a client cannot make Ory "unavailable" for everyone ----------------------------


Serve = Callable[..., str]


@pytest.fixture
def serve(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer, fake_ory: FakeKratos
) -> Iterator[Serve]:
    """serve(mode, trusted=False) -> the base URL under which `/members` (protected) is judged.

    proxy: the proxy under gunicorn; decisions: its forward-auth endpoint;
    embedded: the test upstream's app in OryMiddleware. `trusted`: loopback
    is in `[proxy] trusted_proxies`.
    """
    servers: list[ThreadedServer] = []

    def url(mode: str, trusted: bool = False) -> str:
        trusted_proxies = ["127.0.0.0/8"] if trusted else []
        if mode == "embedded":
            app = OryMiddleware(
                upstream_wsgi,
                sdk_url=fake_ory.url,
                public_url=PUBLIC,
                protect=[{"prefix": "/members"}],
                trusted_proxies=trusted_proxies,
            )
            servers.append(ThreadedServer(app))
            return servers[-1].url
        proxy = start_proxy(
            f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "{PUBLIC}"\n'
            f"trusted_proxies = {json.dumps(trusted_proxies)}\n"
            f'[ory]\nsdk_url = "{fake_ory.url}"\n[decisions]\nenabled = true\n{MEMBERS}'
        )
        return proxy.url + ("/.ory/proxy/decisions" if mode == "decisions" else "")

    yield url
    for server in servers:
        server.stop()


@pytest.mark.parametrize("mode", MODES)
def test_credentials_ory_refuses_never_make_ory_unavailable_for_others(
    mode: str, serve: Serve, fake_ory: FakeKratos
) -> None:
    url = serve(mode) + "/members"
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    for status in (400, 403, 404, 413, 431):
        fake_ory.fail_whoami(status, times=3)
        for attempt in range(3):
            forged = {"X-Session-Token": f"ory_st_%%{status}-{attempt}", "Accept": "*/*"}
            refused = requests.get(url, headers=forged, allow_redirects=False, timeout=5)
            assert refused.status_code == 401, (status, refused.text)
    calls = fake_ory.whoami_calls
    assert calls == 15
    answer = requests.get(url, headers={"X-Session-Token": token}, timeout=5)
    assert answer.status_code == 200, answer.text
    assert fake_ory.whoami_calls == calls + 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "forged",
    [
        {"Cookie": "ory_kratos_session=" + "a" * 6000},
        {"Cookie": "; ".join(f"ory_kratos_session=s{n}" for n in range(600))[:8000]},
        {"X-Session-Token": "ory_st_" + "a" * 6000},
        {"Authorization": "Bearer " + "a" * 8000},
    ],
    ids=["huge-cookie", "many-cookies", "huge-token", "huge-bearer"],
)
def test_oversized_credentials_never_reach_ory(
    mode: str, forged: dict[str, str], serve: Serve, fake_ory: FakeKratos
) -> None:
    url = serve(mode) + "/members"
    fake_ory.reset_counters()
    answer = requests.get(url, headers={**forged, "Accept": "*/*"}, timeout=5)
    assert answer.status_code == 401
    for logged in fake_ory.request_log:
        sizes = [len(value) for _, value in logged.headers.items()]
        assert max(sizes) < MAX_CREDENTIAL_BYTES + 64, logged.path


# --- client claims of identity and address ----------------------------------------


@pytest.mark.parametrize("mode", ["proxy", "embedded"])
@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
def test_client_claims_reach_the_app_only_as_trust_allows(
    mode: str, trusted: bool, serve: Serve, fake_ory: FakeKratos
) -> None:
    base = serve(mode, trusted)
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    expected = {name.lower() for name in CLIENT_IP_CLAIMS} if trusted else set()
    for path, credentials in (("/page", {}), ("/members", {"X-Session-Token": token})):
        sent = {**IDENTITY_CLAIMS, **CLIENT_IP_CLAIMS, **credentials, "X-Kept": "1"}
        answer = requests.get(base + path, headers=sent, timeout=5)
        assert answer.status_code == 200, answer.text
        seen = answer.json()["headers"]
        assert claims_in(seen) == expected, path
        assert {name.lower() for name in seen} >= {"x-kept"}


@pytest.mark.parametrize("mode", MODES)
def test_client_claims_never_reach_ory(mode: str, serve: Serve, fake_ory: FakeKratos) -> None:
    base = serve(mode)
    root = base.removesuffix("/.ory/proxy/decisions")
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    fake_ory.reset_counters()
    claims = {**IDENTITY_CLAIMS, **CLIENT_IP_CLAIMS}
    judged = requests.get(
        base + "/members", headers={**claims, "X-Session-Token": token}, timeout=5
    )
    assert judged.status_code == 200
    requests.get(root + "/.ory/health/alive", headers=claims, timeout=5)
    paths = [logged.path for logged in fake_ory.request_log]
    assert paths == ["/sessions/whoami", "/health/alive"]
    for logged in fake_ory.request_log:
        assert claims_in(logged.headers) == set(), logged.path


@pytest.mark.parametrize("mode", ["proxy", "embedded"])
def test_client_ip_claims_from_a_trusted_peer_reach_ory_flows(
    mode: str, serve: Serve, fake_ory: FakeKratos
) -> None:
    root = serve(mode, True)
    fake_ory.reset_counters()
    sent = {**IDENTITY_CLAIMS, **CLIENT_IP_CLAIMS}
    requests.get(root + "/.ory/health/alive", headers=sent, timeout=5)
    (logged,) = fake_ory.request_log
    assert claims_in(logged.headers) == {name.lower() for name in CLIENT_IP_CLAIMS}
