"""Bypass attempts against a real proxy: the upstream must never get a protected path without a JWT.

Requests go out over raw sockets so that the path reaches the proxy exactly as
written (requests and urllib3 would normalise it first). The upstream records
every request it receives; after each attempt, each recorded path is read as
applications read paths (decoded once, dot segments resolved or not, `;params`
and trailing dots kept or dropped, case kept or folded), and any reading under
a protected area must have come with a valid JWT from the proxy's key set.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from app_readings import app_readings, served_as_protected, under
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from ory_flows import PASSWORD
from recording import RecordingUpstream, Seen
from servers import Gunicorn, ThreadedServer, log_records, proxy_gunicorn

from ory_wsgi.testing import FakeKratos
from ory_wsgi.testing.server import FakeKratosServer

PUBLIC = "https://app.example.com"
RULES = """
[[protect]]
prefix = "/members"
[[public]]
prefix = "/members/signup"
[[protect]]
glob = "/admin/**"
"""
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}


@pytest.fixture(scope="module")
def recorder() -> RecordingUpstream:
    return RecordingUpstream()


@pytest.fixture(scope="module")
def upstream(recorder: RecordingUpstream) -> Iterator[ThreadedServer]:
    server = ThreadedServer(recorder)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(
    fake_ory_server: FakeKratosServer,
    upstream: ThreadedServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gunicorn]:
    server = proxy_gunicorn(
        tmp_path_factory.mktemp("security"),
        f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "{PUBLIC}"\n'
        f'[ory]\nsdk_url = "{fake_ory_server.url}"\n{RULES}',
        threads=8,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keys(proxy: Gunicorn) -> KeySet:
    status, _, body = send_raw(proxy, "/.ory/jwks.json")
    assert status == 200
    return KeySet.import_key_set(json.loads(body))


def send_raw(
    proxy: Gunicorn,
    target: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request with the request line exactly as given; (status, headers, body)."""
    fields = {"Host": "app.example.com", **(headers or {}), "Connection": "close"}
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall((head + "\r\n").encode("latin-1"))
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return response.status, response.headers, response.read()


def protected_for_app(raw_uri: str) -> bool:
    """Whether some application would serve this path as a protected page."""
    return served_as_protected(
        raw_uri.split("?", 1)[0], ["/members", "/admin"], ["/members/signup"]
    )


def valid_jwt(authorization: str, keys: KeySet) -> bool:
    if not authorization.startswith("Bearer "):
        return False
    try:
        token = jwt.decode(authorization[7:], keys, algorithms=["ES256"])
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": PUBLIC}, exp={"essential": True}
        ).validate(token.claims)
    except (JoseError, ValueError):
        return False
    return True


def assert_nothing_protected_without_jwt(seen: list[Seen], keys: KeySet) -> None:
    for request in seen:
        if protected_for_app(request.raw_uri):
            assert valid_jwt(request.authorization, keys), request


ATTEMPTS = [
    "/members",
    "//members",
    "///members//x",
    "/./members",
    "/%2e/members",
    "/open/../members",
    "/open/../../members/x",
    "/open/%2e%2e/members",
    "/open/%2E%2E/members",
    "/open/.%2e/members",
    "/open/%2e./members",
    "/members%2fx",
    "/members%2Fx",
    "/open%2f..%2fmembers",
    "/open%2F..%2Fmembers",
    "/open/%252e%252e/members",
    "/open%252f..%252fmembers",
    "/members%252fx",
    "/open%25%32%66..%25%32%66members",
    "/open%5c..%5cmembers",
    "/open%5C..%5Cmembers",
    "/open\\..\\members",
    "/members\\x",
    "/members%00",
    "/members%00.html",
    "/open%00/../members",
    "/members%23",
    "/open%23/../members",
    "/members#fragment",
    "/open#/../members",
    "/members;jsessionid=0123456789",
    "/members;x=1/page",
    "/open;/../members",
    "/members.",
    "/members./x",
    "/members..",
    "/members%20",
    "/members%20/x",
    "/MEMBERS",
    "/Members/x",
    "/%6dembers",
    "/%6Dembers/x",
    "/open/%c0%ae%c0%ae/members",
    "/open%c0%af..%c0%afmembers",
    "/open/%e0%80%ae%e0%80%ae/members",
    "/open/%u002e%u002e/members",
    "/members%u002fx",
    "/%u006dembers",
    "/members%3f",
    "/members%3Fx=1",
    "/members%3b/x",
    "/members/signup/../x",
    "/members/signup/..;/x",
    "/members/signup/..%3b/x",
    "/members/signup/%2e%2e/x",
    "/members/signup%2f..%2fx",
    "/members/signup%2F..%2Fx",
    "/members/SIGNUP",
    "/members/Signup/x",
    "/members/signup.",
    "/members/signup;x",
    "/members/signup%20",
    "/members/signup%3b",
    "/members/..%3bx/open",
    "/admin",
    "/ADMIN/users",
    "/admin;/users",
    "/.ory/../members",
    "/.ory/%2e%2e/members",
    "/.ory%2f..%2fmembers",
    "http://evil.example/members",
    "http://app.example.com/members/x",
    "/members?a=/../open",
    "/open?/../members",
    "/members%0A",
    "/members%0a",
    "/members%0D%0A",
    "/members%0d",
    "/members%09",
    "/members%7F",
    "/members%1f/x",
    "/members%20%0A",
    "/members.%0A",
    "/Members%0A",
    "/%0Amembers",
    "/mem%0Abers",
    "/members%250A",
    "/members/signup%0A",
    "/members/signup%0a/../x",
    "/admin%0A",
    "/admin%0B/users",
]


@pytest.mark.parametrize("target", ATTEMPTS)
def test_bypass_attempt_never_reaches_a_protected_path_without_a_jwt(
    proxy: Gunicorn, recorder: RecordingUpstream, keys: KeySet, target: str
) -> None:
    count = len(recorder.seen)
    status, _, _ = send_raw(proxy, target, headers=JSON)
    seen = recorder.since(count)
    if status in (303, 400, 401):
        assert not seen, (target, seen)
    else:
        assert seen, (target, status)
    assert_nothing_protected_without_jwt(seen, keys)


@pytest.mark.parametrize("method", ["HEAD", "GET", "POST", "PUT", "DELETE", "PATCH", "TRACE"])
def test_no_method_dodges_a_rule_without_methods(
    proxy: Gunicorn, recorder: RecordingUpstream, keys: KeySet, method: str
) -> None:
    count = len(recorder.seen)
    status, _, _ = send_raw(proxy, "/members/x", method=method, headers=JSON)
    assert status == 401
    assert_nothing_protected_without_jwt(recorder.since(count), keys)


def test_lowercase_method_is_refused_or_gated(proxy: Gunicorn, recorder: RecordingUpstream) -> None:
    count = len(recorder.seen)
    status, _, _ = send_raw(proxy, "/members/x", method="get", headers=JSON)
    assert status in (400, 401)
    assert not recorder.since(count)


@pytest.mark.parametrize(
    "target", ["/members/x", "/open/../members/x", "/members;p=1/x", "/MEMBERS/x", "/%6dembers/x"]
)
def test_with_a_session_every_spelling_reaches_the_app_with_a_jwt(
    proxy: Gunicorn, recorder: RecordingUpstream, keys: KeySet, fake_ory: FakeKratos, target: str
) -> None:
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    count = len(recorder.seen)
    status, _, _ = send_raw(proxy, target, headers={**JSON, "X-Session-Token": token})
    assert status == 200
    seen = recorder.since(count)
    assert len(seen) == 1 and valid_jwt(seen[0].authorization, keys)


def test_a_forged_jwt_does_not_open_a_protected_path(
    proxy: Gunicorn, recorder: RecordingUpstream
) -> None:
    forged = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiJ9."
    count = len(recorder.seen)
    status, _, _ = send_raw(
        proxy, "/members", headers={**JSON, "Authorization": f"Bearer {forged}"}
    )
    assert status == 401
    assert not recorder.since(count)


def test_a_replayed_minted_jwt_does_not_open_a_protected_path(
    proxy: Gunicorn, recorder: RecordingUpstream, fake_ory: FakeKratos
) -> None:
    identity = fake_ory.add_identity("ada@example.com", PASSWORD)
    _, token = fake_ory.create_session(identity["id"])
    count = len(recorder.seen)
    send_raw(proxy, "/members", headers={**JSON, "X-Session-Token": token})
    minted = recorder.since(count)[0].authorization
    count = len(recorder.seen)
    status, _, _ = send_raw(proxy, "/members", headers={**JSON, "Authorization": minted})
    assert status == 401
    assert not recorder.since(count)


def login_redirect(location: str) -> str:
    """The return_to of a login redirect, checked to be on the public URL's login endpoint."""
    assert location.startswith(f"{PUBLIC}/.ory/self-service/login/browser?"), location
    return_to = parse_qs(urlsplit(location).query)["return_to"]
    assert len(return_to) == 1
    return return_to[0]


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example"},
        {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"},
        {"Forwarded": "host=evil.example;proto=http"},
        {"X-Original-Host": "evil.example", "X-Host": "evil.example"},
    ],
)
def test_host_headers_never_show_in_the_login_redirect(
    proxy: Gunicorn, headers: dict[str, str]
) -> None:
    status, answer, _ = send_raw(proxy, "/members/x?a=1", headers={**HTML, **headers})
    assert status == 303
    assert "evil" not in answer["Location"]
    assert login_redirect(answer["Location"]) == f"{PUBLIC}/members/x?a=1"


def test_absolute_form_request_line_never_shows_in_the_login_redirect(proxy: Gunicorn) -> None:
    status, answer, _ = send_raw(proxy, "http://evil.example/members/x", headers=HTML)
    assert status == 303
    assert "evil" not in answer["Location"]
    assert login_redirect(answer["Location"]) == f"{PUBLIC}/members/x"


@pytest.mark.parametrize(
    "target", ["/members//evil.example/x", "/members/@evil.example", "/members/x?@evil.example"]
)
def test_return_to_always_points_at_the_public_origin(proxy: Gunicorn, target: str) -> None:
    status, answer, _ = send_raw(proxy, target, headers=HTML)
    assert status == 303
    return_to = urlsplit(login_redirect(answer["Location"]))
    assert (return_to.scheme, return_to.netloc) == ("https", "app.example.com")


@pytest.mark.parametrize("header", ["X-Original-URL", "X-Rewrite-URL"])
def test_path_override_headers_are_ignored_and_not_forwarded(
    proxy: Gunicorn, recorder: RecordingUpstream, header: str
) -> None:
    count = len(recorder.seen)
    status, _, _ = send_raw(proxy, "/open", headers={**JSON, header: "/members/x"})
    assert status == 200
    seen = recorder.since(count)
    assert [s.raw_uri for s in seen] == ["/open"]
    assert "HTTP_" + header.upper().replace("-", "_") not in seen[0].headers


def test_a_protected_path_with_an_override_header_is_still_gated(
    proxy: Gunicorn, recorder: RecordingUpstream
) -> None:
    count = len(recorder.seen)
    status, _, _ = send_raw(proxy, "/members/x", headers={**JSON, "X-Original-URL": "/open"})
    assert status == 401
    assert not recorder.since(count)


def test_suspicious_spelling_inside_a_protected_area_is_a_400(proxy: Gunicorn) -> None:
    for target in (
        "/members%2fx",
        "/open%2f..%2fmembers",
        "/members%00",
        "/members%23",
        "/open%5c..%5cmembers",
        "/open%252f..%252fmembers",
        "/open/%c0%ae%c0%ae/members",
        "/members%0A",
        "/members%0d",
        "/members%7f/x",
        "/members/signup%0A",
    ):
        status, _, body = send_raw(proxy, target, headers=JSON)
        assert status == 400, target
        assert b'"code":400' in body


@pytest.mark.parametrize("target", ["/files/a%2Fb", "/files/a%0A", "/open%0d%0a"])
def test_suspicious_spelling_away_from_protected_areas_is_forwarded(
    proxy: Gunicorn, recorder: RecordingUpstream, target: str
) -> None:
    count = len(recorder.seen)
    status, _, _ = send_raw(proxy, target, headers=JSON)
    assert status == 200
    assert [s.raw_uri.upper() for s in recorder.since(count)] == [target.upper()]


def test_the_checked_path_is_the_forwarded_path(
    proxy: Gunicorn, recorder: RecordingUpstream
) -> None:
    count = len(recorder.seen)
    status, _, _ = send_raw(proxy, "//open/./a/../%62?q=%2e%2e", headers=JSON)
    assert status == 200
    [seen] = recorder.since(count)
    path, _, query = seen.raw_uri.partition("?")
    assert path == "/open/b"
    # The query is the client's (urllib3 upper-cases its escapes, which changes no reading).
    assert unquote(query) == "q=.."


@pytest.mark.parametrize(
    ("target", "script_name"),
    [
        ("/x/members", "/x"),
        ("/members", "/members"),
        ("/members/x", "/members"),
        ("/open/members", "/open"),
        ("/.ory/admin/identities", "/.ory"),
        ("/.ory/sessions/whoami", "/.ory"),
        ("/x/.ory/admin/identities", "/x"),
        ("/x/.ory/proxy/health/alive", "/x"),
    ],
)
def test_a_client_script_name_changes_nothing_in_proxy_mode(
    proxy: Gunicorn, recorder: RecordingUpstream, target: str, script_name: str
) -> None:
    outcomes = []
    for headers in ({}, {"SCRIPT_NAME": script_name}):
        count = len(recorder.seen)
        status, _, _ = send_raw(proxy, target, headers={**JSON, **headers})
        outcomes.append((status, [seen.raw_uri for seen in recorder.since(count)]))
    assert outcomes[0] == outcomes[1]
    status, forwarded = outcomes[1]
    assert forwarded in ([], [target])


def test_app_readings_model_sees_the_classic_tricks() -> None:
    assert protected_for_app("/open/..;/members")
    assert protected_for_app("/MEMBERS")
    assert protected_for_app("/members/signup/../x")
    assert protected_for_app("/members%00.html")
    assert protected_for_app("/members%0A")
    assert protected_for_app("/members%20%09/x")
    assert not protected_for_app("/members/signup/x")
    assert not protected_for_app("/membership")


# -- Ory-bound paths: they stay on Ory's public API, under the Ory URL's own path ------------

ORY_ATTEMPTS = [
    "/.ory/admin%2Fidentities",
    "/.ory/admin%2fidentities",
    "/.ory/ADMIN%2Fidentities",
    "/.ory/Admin%5Cidentities",
    "/.ory/admin%5cidentities",
    "/.ory/admin\\identities",
    "/.ory/admin%252Fidentities",
    "/.ory/admin%25%32%46identities",
    "/.ory/admin%u002fidentities",
    "/.ory/admin%00/identities",
    "/.ory/admin%0A",
    "/.ory/admin%09/identities",
    "/.ory/admin%7F/identities",
    "/.ory/admin",
    "/.ory/ADMIN/identities",
    "/.ory/%61dmin/identities",
    "/.ory/%41DMIN/identities",
    "/.ory/admin;x/identities",
    "/.ory/admin%3B/identities",
    "/.ory/admin./identities",
    "/.ory/admin%20/identities",
    "/.ory/x/../admin/identities",
    "/.ory/x/..;/admin/identities",
    "/.ory/..%2Fadmin/identities",
    "/.ory/..%2fadmin/identities",
    "/.ory/%2e%2e%2fadmin/identities",
    "/.ory/..%5Cadmin/identities",
    "/.ory/..%5c..%5cadmin",
    "/.ory/..%252Fadmin/identities",
    "/.ory/x/..%2F..%2Fadmin",
    "/.ory/..%2F..%2Fother",
    "/.ory/%2e%2e%2f%2e%2e%2fother",
    "/.ory/..%2Fkratos-admin/x",
    "/.ory/self-service/%2e%2e%2f%2e%2e%2f..%2fadmin",
    "/.ory/sessions%2F..%2F..%2Fadmin",
]


@pytest.fixture(scope="module")
def ory_recorder() -> RecordingUpstream:
    return RecordingUpstream()


@pytest.fixture(scope="module")
def recorded_ory(ory_recorder: RecordingUpstream) -> Iterator[ThreadedServer]:
    """Stands in for Ory mounted under a path: every request that reaches it is recorded."""
    server = ThreadedServer(ory_recorder)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ory_path_proxy(
    recorded_ory: ThreadedServer, upstream: ThreadedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    server = proxy_gunicorn(
        tmp_path_factory.mktemp("ory-path"),
        f'[proxy]\nupstream = "{upstream.url}"\npublic_url = "{PUBLIC}"\n'
        f'[ory]\nsdk_url = "{recorded_ory.url}/kratos"\napi_key = "secret-key"\n{RULES}',
        threads=8,
    )
    yield server
    server.stop()


def on_ory_public_api(raw_uri: str) -> bool:
    """Whether every reading of a path Ory received is under /kratos and off its admin API."""
    readings = app_readings(raw_uri.split("?", 1)[0])
    return all(
        under(reading, "/kratos") and not under(reading.lower(), "/kratos/admin")
        for reading in readings
    )


@pytest.mark.parametrize("target", ORY_ATTEMPTS)
def test_ory_bound_path_never_leaves_the_public_api_under_the_ory_path(
    ory_path_proxy: Gunicorn, ory_recorder: RecordingUpstream, target: str
) -> None:
    count = len(ory_recorder.seen)
    status, _, body = send_raw(
        ory_path_proxy, target, headers={**JSON, "Authorization": "Bearer client"}
    )
    seen = ory_recorder.since(count)
    assert all(on_ory_public_api(request.raw_uri) for request in seen), seen
    assert status in (400, 404), (target, status)
    assert not seen, target
    assert b"Traceback" not in body


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/.ory/self-service/login/browser?x=1", "/kratos/self-service/login/browser?x=1"),
        ("/.ory/x/../sessions/whoami", "/kratos/sessions/whoami"),
        ("/.ory/ui/%C3%A9t%C3%A9", "/kratos/ui/%C3%A9t%C3%A9"),
        ("/.ory/administrator", "/kratos/administrator"),
    ],
)
def test_ory_bound_path_on_the_public_api_is_forwarded_under_the_ory_path(
    ory_path_proxy: Gunicorn, ory_recorder: RecordingUpstream, target: str, expected: str
) -> None:
    count = len(ory_recorder.seen)
    status, _, _ = send_raw(ory_path_proxy, target, headers=JSON)
    assert status == 200
    assert [request.raw_uri for request in ory_recorder.since(count)] == [expected]


def test_ory_bound_request_carries_the_proxy_rewrite_headers_not_the_clients(
    ory_path_proxy: Gunicorn, ory_recorder: RecordingUpstream
) -> None:
    count = len(ory_recorder.seen)
    forged = {
        "Ory-Base-URL-Rewrite": "https://evil.example",
        "Ory-Base-URL-Rewrite-Token": "forged",
        "Ory-No-Custom-Domain-Redirect": "false",
    }
    status, _, _ = send_raw(ory_path_proxy, "/.ory/sessions/whoami", headers={**JSON, **forged})
    assert status == 200
    [request] = ory_recorder.since(count)
    sent = {
        key: request.headers.get(key)
        for key in (
            "HTTP_ORY_BASE_URL_REWRITE",
            "HTTP_ORY_BASE_URL_REWRITE_TOKEN",
            "HTTP_ORY_NO_CUSTOM_DOMAIN_REDIRECT",
        )
    }
    assert sent == {
        "HTTP_ORY_BASE_URL_REWRITE": PUBLIC.rstrip("/") + "/.ory",
        "HTTP_ORY_BASE_URL_REWRITE_TOKEN": "secret-key",
        "HTTP_ORY_NO_CUSTOM_DOMAIN_REDIRECT": "true",
    }


@pytest.mark.parametrize("target", ["/.ory/a%2Fb", "/.ory/a%5Cb", "/.ory/a%00b"])
def test_refused_ory_bound_path_is_logged_as_a_bad_request(proxy: Gunicorn, target: str) -> None:
    # An attack on the Ory route must be countable in the access log, by its error field.
    request_id = f"refused-{target.rsplit('%', 1)[1]}"
    status, _, _ = send_raw(proxy, target, headers={"X-Request-Id": request_id})
    assert status == 400
    deadline = time.monotonic() + 5
    while True:
        lines = [r for r in log_records(proxy.log()) if r.get("request_id") == request_id]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [(r["status"], r.get("error")) for r in lines] == [(400, "bad_request")]
