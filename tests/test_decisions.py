"""Forward-auth decisions: the proxy under gunicorn asked as gateways ask, with the Ory stand-in."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc import jwt
from ory_flows import PASSWORD, jwks
from servers import Gunicorn, ThreadedServer

from ory_wsgi import make_app
from ory_wsgi.errors import ConfigError
from ory_wsgi.testing import FakeKratos

PUBLIC = "https://gateway.example.com"
DECISIONS = "/.ory/proxy/decisions"
PROTECT = '[[protect]]\nprefix = "/members"\n[[protect]]\nprefix = "/api"\nmethods = ["POST"]\n'


def config(
    upstream: ThreadedServer,
    fake_ory: FakeKratos,
    *,
    enabled: bool = True,
    trusted: str = '["127.0.0.1/32"]',
) -> str:
    return (
        f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "{PUBLIC}"\n'
        f"trusted_proxies = {trusted}\n"
        f'[ory]\nsdk_url = "{fake_ory.url}"\n'
        f"[decisions]\nenabled = {'true' if enabled else 'false'}\n{PROTECT}"
    )


@pytest.fixture
def gateway_proxy(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer, fake_ory: FakeKratos
) -> Gunicorn:
    return start_proxy(config(upstream, fake_ory))


def ask(
    proxy: Gunicorn,
    uri: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
) -> requests.Response:
    """Ask as nginx's auth_request does: a GET carrying the original request in X-Forwarded-*."""
    forwarded = {
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "gateway.example.com",
        "X-Forwarded-Uri": uri,
        "Accept": "application/json",
    }
    return requests.get(
        proxy.url + DECISIONS,
        headers={**forwarded, **(headers or {})},
        cookies=cookies,
        allow_redirects=False,
        timeout=5,
    )


def logged_in(fake_ory: FakeKratos, aal2_required: bool = False) -> tuple[str, dict[str, str]]:
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    if aal2_required:
        fake_ory.require_aal2(identity["id"])
    _, token = fake_ory.create_session(identity["id"])
    return str(identity["id"]), fake_ory.cookies(token)


def test_decisions_are_not_served_unless_enabled(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer, fake_ory: FakeKratos
) -> None:
    proxy = start_proxy(config(upstream, fake_ory, enabled=False))
    assert ask(proxy, "/members").status_code == 404


def test_session_on_protected_path_gets_200_with_a_verified_jwt_and_the_subject(
    gateway_proxy: Gunicorn, fake_ory: FakeKratos
) -> None:
    identity_id, cookies = logged_in(fake_ory)
    answer = ask(gateway_proxy, "/members/profile", cookies=cookies)
    assert answer.status_code == 200
    assert answer.headers["X-Ory-Subject"] == identity_id
    scheme, _, token = answer.headers["Authorization"].partition(" ")
    claims = jwt.decode(token, jwks(gateway_proxy), algorithms=["ES256"]).claims
    assert scheme == "Bearer" and claims["sub"] == identity_id and claims["iss"] == PUBLIC


def test_api_client_without_session_on_protected_path_gets_401(gateway_proxy: Gunicorn) -> None:
    answer = ask(gateway_proxy, "/members/profile")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_browser_without_session_gets_401_carrying_the_login_url_never_a_redirect(
    gateway_proxy: Gunicorn,
) -> None:
    answer = ask(gateway_proxy, "/members/profile?tab=1", headers={"Accept": "text/html"})
    assert answer.status_code == 401
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        f"{PUBLIC}/.ory/self-service/login/browser"
    )
    assert parse_qs(location.query)["return_to"] == [f"{PUBLIC}/members/profile?tab=1"]


def test_ory_down_on_protected_path_gets_403_ory_unavailable(
    gateway_proxy: Gunicorn, fake_ory: FakeKratos
) -> None:
    _, cookies = logged_in(fake_ory)
    fake_ory.fail_whoami(500)
    answer = ask(gateway_proxy, "/members", cookies=cookies)
    assert answer.status_code == 403
    assert answer.headers["X-Ory-Error"] == "ory_unavailable"


def test_ory_rate_limiting_gets_403_rate_limited_with_retry_after(
    gateway_proxy: Gunicorn, fake_ory: FakeKratos
) -> None:
    _, cookies = logged_in(fake_ory)
    fake_ory.fail_whoami(429, retry_after="7")
    answer = ask(gateway_proxy, "/members", cookies=cookies)
    assert (answer.status_code, answer.headers["X-Ory-Error"]) == (403, "rate_limited")
    assert answer.headers["Retry-After"] == "7"


def test_session_below_aal2_gets_403_session_aal2_required(
    gateway_proxy: Gunicorn, fake_ory: FakeKratos
) -> None:
    _, cookies = logged_in(fake_ory, aal2_required=True)
    answer = ask(gateway_proxy, "/members", cookies=cookies)
    assert (answer.status_code, answer.headers["X-Ory-Error"]) == (403, "session_aal2_required")


def test_anonymous_request_on_open_path_gets_200_without_authorization(
    gateway_proxy: Gunicorn, fake_ory: FakeKratos
) -> None:
    answer = ask(gateway_proxy, "/", headers={"Authorization": "Bearer forged"})
    assert answer.status_code == 200
    assert "Authorization" not in answer.headers and "X-Ory-Subject" not in answer.headers


def test_forwarded_method_selects_the_rule(gateway_proxy: Gunicorn) -> None:
    assert ask(gateway_proxy, "/api/orders", method="GET").status_code == 200
    assert ask(gateway_proxy, "/api/orders", method="POST").status_code == 401


@pytest.mark.parametrize("claimed", ["POST", "POST, GET", "GET,POST", "PUT , post"])
def test_a_method_override_list_cannot_dodge_a_method_limited_rule(
    gateway_proxy: Gunicorn, claimed: str
) -> None:
    answer = ask(gateway_proxy, "/api/orders", headers={"X-HTTP-Method-Override": claimed})
    assert answer.status_code == 401


def test_forwarded_headers_from_an_untrusted_peer_are_refused(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer, fake_ory: FakeKratos
) -> None:
    proxy = start_proxy(config(upstream, fake_ory, trusted="[]"))
    answer = ask(proxy, "/")
    assert (answer.status_code, answer.headers["X-Ory-Error"]) == (403, "untrusted_proxy")


@pytest.mark.parametrize(
    ("path", "method"), [("/api/orders", "POST"), ("/open", "POST"), ("/members", "GET")]
)
def test_a_forwarded_method_alone_from_an_untrusted_peer_is_refused(
    suffix_proxy: Gunicorn, path: str, method: str
) -> None:
    answer = requests.get(
        f"{suffix_proxy.url}{DECISIONS}{path}",
        headers={"X-Forwarded-Method": method, "Accept": "application/json"},
        timeout=5,
    )
    assert (answer.status_code, answer.headers["X-Ory-Error"]) == (403, "untrusted_proxy")


def test_path_after_decisions_is_judged_when_no_uri_is_forwarded(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer, fake_ory: FakeKratos
) -> None:
    proxy = start_proxy(config(upstream, fake_ory, trusted="[]"))
    assert requests.get(f"{proxy.url}{DECISIONS}/members/x", timeout=5).status_code == 401
    assert requests.get(f"{proxy.url}{DECISIONS}/open", timeout=5).status_code == 200


@pytest.fixture
def suffix_proxy(
    start_proxy: Callable[..., Gunicorn], upstream: ThreadedServer, fake_ory: FakeKratos
) -> Gunicorn:
    """Decisions asked by the path after `/decisions` (no trusted gateway)."""
    return start_proxy(config(upstream, fake_ory, trusted="[]"))


def raw_status(proxy: Gunicorn, target: str, headers: dict[str, str] | None = None) -> int:
    """The status of one GET whose request line is exactly `target`."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        connection.request("GET", target, headers={"Accept": "application/json", **(headers or {})})
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("suffix", "status"),
    [
        ("/open%23/../members", 403),
        ("/open%23x", 200),
        ("/open%3F/../members", 401),
        ("/open%3f/%2e%2e/members/x", 401),
        ("/open%2F..%2Fmembers", 403),
        ("/members%2Fx", 403),
        ("/open%00/../members", 403),
        ("/members%0A", 403),
        ("/open?/../members", 200),
        ("/members?x=%2F", 401),
    ],
)
def test_path_after_decisions_is_read_raw_as_the_proxy_reads_a_path(
    suffix_proxy: Gunicorn, suffix: str, status: int
) -> None:
    assert raw_status(suffix_proxy, DECISIONS + suffix) == status


def test_path_after_decisions_is_read_as_the_proxy_reads_the_same_path(
    suffix_proxy: Gunicorn,
) -> None:
    mapping = {200: 200, 401: 401, 303: 401, 400: 403}
    for suffix in ("/open%23/../members", "/open%3F/../members", "/members;x/y", "/MEMBERS"):
        assert (
            raw_status(suffix_proxy, DECISIONS + suffix)
            == mapping[raw_status(suffix_proxy, suffix)]
        ), suffix


def test_a_client_script_name_does_not_move_the_decisions_endpoint(
    suffix_proxy: Gunicorn,
) -> None:
    # Without SCRIPT_NAME this goes to the app (200); with it, still the app, not a decision.
    headers = {"SCRIPT_NAME": "/x"}
    assert raw_status(suffix_proxy, f"/x{DECISIONS}/members", headers) == 200
    assert raw_status(suffix_proxy, f"{DECISIONS}/members", {"SCRIPT_NAME": "/.ory"}) == 401


def test_encoded_slash_in_a_protected_area_gets_403_bad_request(gateway_proxy: Gunicorn) -> None:
    answer = ask(gateway_proxy, "/members%2Fsecret")
    assert (answer.status_code, answer.headers["X-Ory-Error"]) == (403, "bad_request")


@pytest.mark.parametrize(
    "uri", ["/members%0A", "/members%0d%0a", "/members%09/x", "/members%7F", "/%0Amembers"]
)
def test_encoded_control_near_a_protected_path_gets_403_bad_request(
    gateway_proxy: Gunicorn, uri: str
) -> None:
    answer = ask(gateway_proxy, uri)
    assert (answer.status_code, answer.headers["X-Ory-Error"]) == (403, "bad_request")


def test_forwarded_uri_that_is_not_a_path_gets_403_bad_request(gateway_proxy: Gunicorn) -> None:
    answer = ask(gateway_proxy, "//evil.example/members")
    assert (answer.status_code, answer.headers["X-Ory-Error"]) == (403, "bad_request")


@pytest.mark.parametrize("requested", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("uri", ["/members", "/members/x"])
def test_cors_preflight_on_a_protected_path_is_judged_like_any_request(
    gateway_proxy: Gunicorn, requested: str, uri: str
) -> None:
    answer = ask(
        gateway_proxy,
        uri,
        method="OPTIONS",
        headers={"Access-Control-Request-Method": requested, "Origin": PUBLIC},
    )
    assert answer.status_code == 401


def test_cors_preflight_with_a_session_or_on_an_open_path_is_allowed(
    gateway_proxy: Gunicorn, fake_ory: FakeKratos
) -> None:
    preflight = {"Access-Control-Request-Method": "GET", "Origin": PUBLIC}
    assert ask(gateway_proxy, "/open", method="OPTIONS", headers=preflight).status_code == 200
    _, cookies = logged_in(fake_ory)
    answer = ask(gateway_proxy, "/members", method="OPTIONS", headers=preflight, cookies=cookies)
    assert answer.status_code == 200


def test_a_name_that_only_starts_like_decisions_is_not_answered_by_them(
    gateway_proxy: Gunicorn,
) -> None:
    answer = requests.get(f"{gateway_proxy.url}{DECISIONS}x/members", timeout=5)
    assert answer.status_code == 404


def test_decisions_share_the_session_cache_with_the_proxy(
    gateway_proxy: Gunicorn, fake_ory: FakeKratos
) -> None:
    _, cookies = logged_in(fake_ory)
    assert requests.get(f"{gateway_proxy.url}/members", cookies=cookies, timeout=5).ok
    assert ask(gateway_proxy, "/members", cookies=cookies).status_code == 200
    assert fake_ory.whoami_calls == 1


def test_decisions_without_ory_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\[decisions\] enabled needs Ory"):
        make_app(upstream="http://127.0.0.1:9", decisions={"enabled": True})
