"""Credentials extraction and the whoami/logout calls, against a fake Ory over HTTP."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from servers import free_port
from werkzeug import Request, Response

from ory_wsgi.ory.client import (
    Credentials,
    OryClient,
    OryUnavailable,
    extract_credentials,
    session_cookie_names,
)
from ory_wsgi.ory.cookies import MAX_CREDENTIAL_BYTES, ory_cookies

IDENTITY_ID = "9f1c6f2e-4a1b-4c1e-9a8e-0c6f4d8e2b11"
NAMES = frozenset({"ory_kratos_session"})
UNAUTHORIZED = {
    "error": {
        "code": 401,
        "status": "Unauthorized",
        "reason": "No valid session credentials found in the request.",
        "message": "The request could not be authorized",
    }
}


def rfc3339(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )


def kratos_session(*, active: bool = True, expires_in: float = 3600.0) -> dict[str, Any]:
    now = time.time()
    return {
        "id": "2f3b4a1c-0000-4000-8000-000000000001",
        "active": active,
        "expires_at": rfc3339(now + expires_in),
        "authenticated_at": rfc3339(now),
        "authenticator_assurance_level": "aal1",
        "authentication_methods": [
            {"method": "password", "aal": "aal1", "completed_at": rfc3339(now)}
        ],
        "issued_at": rfc3339(now),
        "identity": {
            "id": IDENTITY_ID,
            "schema_id": "default",
            "state": "active",
            "traits": {"email": "ada@example.com"},
        },
    }


def credentials(cookie: str = "ory_kratos_session=secret-session", **headers: str) -> Credentials:
    environ = {"HTTP_COOKIE": cookie, **{f"HTTP_{k.upper()}": v for k, v in headers.items()}}
    found = extract_credentials(environ, NAMES)
    assert found is not None
    return found


@pytest.fixture
def client(ory: HTTPServer) -> Iterator[OryClient]:
    ory_client = OryClient(ory.url_for("/"), timeout=1.0)
    yield ory_client
    ory_client.close()


def received(ory: HTTPServer) -> list[Request]:
    return [request for request, _ in ory.log]


# --- extract_credentials ----------------------------------------------------------


def test_request_without_ory_credentials_is_anonymous_without_lookup() -> None:
    environ = {"HTTP_COOKIE": "theme=dark; app_session=abc", "HTTP_AUTHORIZATION": "Basic eDp5"}
    assert extract_credentials(environ, NAMES) is None


def test_only_the_session_cookies_are_kept_for_whoami() -> None:
    found = credentials(
        "theme=dark; ory_kratos_session=s1; app_session=abc; ory_kratos_continuity=c; "
        "csrf_token_1a2b=x; __Host-ory_x=y"
    )
    assert found.cookie == "ory_kratos_session=s1"


def test_every_session_cookie_name_is_kept_each_once() -> None:
    names = NAMES | {"ory_session_happycat", "sid"}
    found = extract_credentials(
        {
            "HTTP_COOKIE": "sid=a; ory_kratos_session=b; sid=c; ory_session_happycat=d; "
            "ory_kratos_session=e; sidebar=f"
        },
        names,
    )
    assert found is not None
    # The first of each name is the one Kratos reads; the rest never travel.
    assert found.cookie == "sid=a; ory_kratos_session=b; ory_session_happycat=d"


@pytest.mark.parametrize(
    ("environ", "what"),
    [
        ({"HTTP_COOKIE": "ory_kratos_session=" + "a" * (MAX_CREDENTIAL_BYTES + 1)}, "cookie"),
        ({"HTTP_X_SESSION_TOKEN": "ory_st_" + "a" * MAX_CREDENTIAL_BYTES}, "X-Session-Token"),
        ({"HTTP_AUTHORIZATION": "Bearer " + "a" * (MAX_CREDENTIAL_BYTES + 1)}, "bearer"),
        (
            {"HTTP_COOKIE": "a=1; ory_kratos_session=" + "b" * 100_000 + "; c=2"},
            "cookie 'ory_kratos_session'",
        ),
    ],
)
def test_credential_too_large_is_no_credential_and_logged(
    environ: dict[str, str], what: str, caplog: pytest.LogCaptureFixture
) -> None:
    environ["ory.request_id"] = "req-big"
    with caplog.at_level(logging.WARNING, logger="ory_wsgi.ory"):
        assert extract_credentials(environ, NAMES) is None
    (record,) = [r for r in caplog.records if r.name == "ory_wsgi.ory"]
    message = record.getMessage()
    assert message.startswith("credential_too_large: ") and what in message
    assert "aaaa" not in message and "bbbb" not in message
    assert record.fields == {"error": "credential_too_large", "request_id": "req-big"}  # type: ignore[attr-defined]


def test_credential_of_the_limit_size_is_kept() -> None:
    value = "a" * MAX_CREDENTIAL_BYTES
    found = extract_credentials({"HTTP_COOKIE": f"ory_kratos_session={value}"}, NAMES)
    assert found is not None and found.cookie == f"ory_kratos_session={value}"


def test_token_of_the_limit_size_is_kept() -> None:
    token = "ory_st_" + "a" * (MAX_CREDENTIAL_BYTES - len("ory_st_"))
    found = extract_credentials({"HTTP_X_SESSION_TOKEN": token}, NAMES)
    assert found is not None and found.session_token == token


def test_too_large_cookie_beside_a_good_token_leaves_the_token() -> None:
    environ = {
        "HTTP_COOKIE": "ory_kratos_session=" + "a" * 10_000,
        "HTTP_X_SESSION_TOKEN": "ory_st_good",
    }
    found = extract_credentials(environ, NAMES)
    assert found is not None
    assert found.cookie == "" and found.session_token == "ory_st_good"


def test_app_cookie_too_large_is_ignored_without_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="ory_wsgi.ory"):
        found = credentials("big=" + "x" * 10_000 + "; ory_kratos_session=s")
    assert found.cookie == "ory_kratos_session=s"
    assert not [r for r in caplog.records if r.name == "ory_wsgi.ory"]


def test_ory_cookie_other_than_the_session_cookie_is_not_a_credential() -> None:
    assert extract_credentials({"HTTP_COOKIE": "ory_kratos_continuity=c"}, NAMES) is None


def test_empty_session_cookie_is_not_a_credential() -> None:
    assert extract_credentials({"HTTP_COOKIE": "ory_kratos_session=; a=b"}, NAMES) is None


def test_session_token_header_is_a_credential() -> None:
    found = extract_credentials({"HTTP_X_SESSION_TOKEN": "ory_st_abc"}, NAMES)
    assert found is not None and found.session_token == "ory_st_abc" and found.cookie == ""


def test_bearer_scheme_is_case_insensitive() -> None:
    found = extract_credentials({"HTTP_AUTHORIZATION": "bEaReR ory_st_abc"}, NAMES)
    assert found is not None and found.bearer == "ory_st_abc"


def test_bearer_without_token_is_not_a_credential() -> None:
    assert extract_credentials({"HTTP_AUTHORIZATION": "Bearer  "}, NAMES) is None


def test_configured_session_cookie_without_ory_prefix_is_kept() -> None:
    names = NAMES | {"my_session"}
    found = extract_credentials({"HTTP_COOKIE": "my_session=s; app=1"}, names)
    assert found is not None and found.cookie == "my_session=s"


def test_cache_key_is_a_digest_not_the_secret() -> None:
    found = credentials("ory_kratos_session=secret-session")
    assert len(found.cache_key) == 16 and b"secret" not in found.cache_key
    assert "secret" not in repr(found)


def test_cache_key_changes_with_any_credential_part() -> None:
    keys = {
        credentials("ory_kratos_session=a").cache_key,
        credentials("ory_kratos_session=b").cache_key,
        credentials("ory_kratos_session=a", authorization="Bearer t").cache_key,
        credentials("ory_kratos_session=a", x_session_token="t").cache_key,
    }
    assert len(keys) == 4


def test_cache_key_ignores_app_cookies() -> None:
    first = credentials("ory_kratos_session=a; theme=dark")
    second = credentials("theme=light; ory_kratos_session=a")
    assert first.cache_key == second.cache_key


def test_ory_network_cookie_name_drops_dashes_from_slug() -> None:
    names = session_cookie_names("https://x.example.com", project="happy-cat-42")
    assert names == {"ory_kratos_session", "ory_session_happycat42"}


def test_self_hosted_kratos_reads_only_its_own_session_cookie() -> None:
    for url in ("http://kratos:4433", "https://auth.example.com", "https://projects.oryapis.com"):
        assert session_cookie_names(url) == {"ory_kratos_session"}


def test_project_slug_wins_over_the_sdk_url() -> None:
    names = session_cookie_names("https://happy-cat.projects.oryapis.com", project="mine")
    assert names == {"ory_kratos_session", "ory_session_mine"}


def test_ory_network_cookie_name_comes_from_sdk_url_without_slug() -> None:
    names = session_cookie_names("https://happy-cat.projects.oryapis.com", session_cookie="sid")
    assert names == {"ory_kratos_session", "ory_session_happycat", "sid"}


# --- ory_cookies: what a request forwarded to /.ory/* carries ----------------------


def test_ory_bound_requests_keep_every_ory_cookie_in_order() -> None:
    header = (
        "theme=dark; ory_kratos_session=s; csrf_token_1a2b=c; app=1; "
        "__Host-ory_x=h; __Secure-ory_y=z; ory_kratos_continuity=k"
    )
    assert ory_cookies(header, NAMES) == (
        "ory_kratos_session=s; csrf_token_1a2b=c; __Host-ory_x=h; __Secure-ory_y=z; "
        "ory_kratos_continuity=k"
    )


def test_ory_bound_session_cookie_is_matched_on_the_whole_name() -> None:
    header = "sidebar=open; sid=s; sid_extra=1; sid2=2"
    assert ory_cookies(header, frozenset({"sid"})) == "sid=s"


def test_ory_bound_cookie_too_large_is_not_forwarded(caplog: pytest.LogCaptureFixture) -> None:
    header = "ory_kratos_session=s; csrf_token_1=" + "c" * (MAX_CREDENTIAL_BYTES + 1)
    with caplog.at_level(logging.WARNING, logger="ory_wsgi.ory"):
        assert ory_cookies(header, NAMES, "r") == "ory_kratos_session=s"
    assert any("credential_too_large" in r.getMessage() for r in caplog.records)


# --- whoami: what Ory receives ----------------------------------------------------


def test_whoami_sends_only_ory_cookies_request_id_and_accept(
    ory: HTTPServer, client: OryClient
) -> None:
    ory.expect_request("/sessions/whoami", method="GET").respond_with_json(kratos_session())
    found = credentials("app_session=xyz; ory_kratos_session=s1; theme=dark")
    client.whoami(found, "req-123")
    (request,) = received(ory)
    assert dict(request.headers) == {
        "Host": f"127.0.0.1:{ory.port}",
        "Accept": "application/json",
        "X-Request-Id": "req-123",
        "Cookie": "ory_kratos_session=s1",
    }


def test_whoami_sends_session_token_and_bearer(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(UNAUTHORIZED, status=401)
    found = extract_credentials(
        {"HTTP_X_SESSION_TOKEN": "ory_st_a", "HTTP_AUTHORIZATION": "bearer ory_st_b"}, NAMES
    )
    assert found is not None
    client.whoami(found, "r")
    (request,) = received(ory)
    assert request.headers["X-Session-Token"] == "ory_st_a"
    assert request.headers["Authorization"] == "Bearer ory_st_b"
    assert "Cookie" not in request.headers


def test_whoami_keeps_the_sdk_url_path(ory: HTTPServer) -> None:
    ory.expect_request("/kratos/sessions/whoami").respond_with_json(kratos_session())
    client = OryClient(ory.url_for("/kratos/"), timeout=1.0)
    assert client.whoami(credentials(), "r").outcome == "authenticated"


# --- whoami: how answers map ------------------------------------------------------


def test_active_session_is_authenticated(ory: HTTPServer, client: OryClient) -> None:
    session = kratos_session(expires_in=600)
    ory.expect_request("/sessions/whoami").respond_with_json(session)
    lookup = client.whoami(credentials(), "r")
    assert lookup.outcome == "authenticated" and lookup.authenticated
    assert lookup.subject == IDENTITY_ID
    assert lookup.session == session
    assert lookup.expires_at is not None and abs(lookup.expires_at - (time.time() + 600)) < 5


def test_inactive_session_is_anonymous(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(kratos_session(active=False))
    lookup = client.whoami(credentials(), "r")
    assert lookup.outcome == "anonymous" and lookup.session is None


def test_401_is_anonymous(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(UNAUTHORIZED, status=401)
    lookup = client.whoami(credentials(), "r")
    assert lookup.outcome == "anonymous" and lookup.error is None


def test_aal2_required_is_anonymous_with_redirect(ory: HTTPServer, client: OryClient) -> None:
    target = "https://ory.example.com/self-service/login/browser?aal=aal2"
    envelope = {
        "error": {
            "id": "session_aal2_required",
            "code": 403,
            "status": "Forbidden",
            "reason": "An active session was found but it does not fulfill the AAL.",
            "details": {"redirect_browser_to": target},
            "message": "The requested action was forbidden",
        },
        "redirect_browser_to": target,
    }
    ory.expect_request("/sessions/whoami").respond_with_json(
        envelope, status=403, headers={"Ory-Error-Id": "session_aal2_required"}
    )
    lookup = client.whoami(credentials(), "r")
    assert lookup.outcome == "aal2_required" and lookup.aal_required
    assert lookup.redirect_browser_to == target and lookup.session is None


def test_other_403_is_anonymous(ory: HTTPServer, client: OryClient) -> None:
    envelope = {"error": {"id": "security_csrf_violation", "code": 403, "message": "x"}}
    ory.expect_request("/sessions/whoami").respond_with_json(envelope, status=403)
    lookup = client.whoami(credentials(), "r")
    assert lookup.outcome == "anonymous" and lookup.error is None


@pytest.mark.parametrize("status", [400, 403, 404, 413, 422, 431])
def test_client_error_answer_is_anonymous_with_one_warning(
    ory: HTTPServer, client: OryClient, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    ory.expect_request("/sessions/whoami").respond_with_data("no", status=status)
    with caplog.at_level(logging.WARNING, logger="ory_wsgi.ory"):
        lookup = client.whoami(credentials(), "req-4")
    assert lookup.outcome == "anonymous" and lookup.error is None
    (record,) = [r for r in caplog.records if r.name == "ory_wsgi.ory"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("credentials_refused: ")
    assert str(status) in record.getMessage() and "secret-session" not in record.getMessage()


def test_429_is_rate_limited_with_retry_after(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "7"}
    )
    lookup = client.whoami(credentials(), "r")
    assert lookup.outcome == "rate_limited" and lookup.retry_after == "7"


def test_500_is_ory_unavailable_with_one_log_line(
    ory: HTTPServer, client: OryClient, caplog: pytest.LogCaptureFixture
) -> None:
    ory.expect_request("/sessions/whoami").respond_with_data("boom", status=500)
    with caplog.at_level(logging.ERROR, logger="ory_wsgi.ory"):
        lookup = client.whoami(credentials(), "req-9")
    assert lookup.outcome == "error" and lookup.error == "ory_unavailable"
    records = [r for r in caplog.records if r.name == "ory_wsgi.ory"]
    assert len(records) == 1 and "500" in records[0].getMessage()
    assert "secret-session" not in records[0].getMessage()


def test_garbage_json_is_ory_unavailable(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_data(
        "<html>maintenance</html>", content_type="application/json"
    )
    assert client.whoami(credentials(), "r").error == "ory_unavailable"


def test_session_without_identity_is_ory_unavailable(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json({"id": "s", "active": True})
    assert client.whoami(credentials(), "r").error == "ory_unavailable"


def test_slow_ory_times_out_within_the_budget(ory: HTTPServer) -> None:
    def slow(request: Request) -> Response:
        time.sleep(2.0)
        return Response("{}", content_type="application/json")

    ory.expect_request("/sessions/whoami").respond_with_handler(slow)
    client = OryClient(ory.url_for("/"), timeout=0.4)
    started = time.monotonic()
    lookup = client.whoami(credentials(), "r")
    assert lookup.error == "ory_unavailable"
    assert time.monotonic() - started < 1.5


def test_refused_port_is_ory_unavailable() -> None:
    client = OryClient(f"http://127.0.0.1:{free_port()}", timeout=1.0)
    started = time.monotonic()
    assert client.whoami(credentials(), "r").error == "ory_unavailable"
    assert time.monotonic() - started < 1.0


class ClosingServer:
    """Accepts connections; closes the first `closes` of them without answering."""

    def __init__(self, closes: int, answer: bytes = b"") -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.closes = closes
        self.answer = answer
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                self.connections += 1
                if self.connections > self.closes:
                    conn.sendall(self.answer)

    def stop(self) -> None:
        self.sock.close()


def test_connection_closed_without_answer_is_ory_unavailable() -> None:
    server = ClosingServer(closes=100)
    try:
        lookup = OryClient(server.url, timeout=1.0).whoami(credentials(), "r")
    finally:
        server.stop()
    assert lookup.error == "ory_unavailable"


def test_connection_closed_once_is_retried() -> None:
    answer = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    server = ClosingServer(closes=1, answer=answer)
    try:
        lookup = OryClient(server.url, timeout=1.0).whoami(credentials(), "r")
    finally:
        server.stop()
    assert lookup.outcome == "anonymous" and server.connections == 2


# --- back-off -----------------------------------------------------------------------


def test_ory_is_not_asked_during_back_off(ory: HTTPServer) -> None:
    ory.expect_request("/sessions/whoami").respond_with_data("down", status=503)
    client = OryClient(ory.url_for("/"), timeout=1.0, failure_threshold=3, backoff=30.0)
    for _ in range(3):
        client.whoami(credentials(), "r")
    started = time.monotonic()
    lookup = client.whoami(credentials(), "r")
    assert lookup.error == "ory_unavailable"
    assert len(received(ory)) == 3
    assert time.monotonic() - started < 0.1


def test_ory_is_asked_again_after_back_off(ory: HTTPServer) -> None:
    ory.expect_ordered_request("/sessions/whoami").respond_with_data("down", status=503)
    ory.expect_ordered_request("/sessions/whoami").respond_with_data("down", status=503)
    ory.expect_ordered_request("/sessions/whoami").respond_with_json(UNAUTHORIZED, status=401)
    client = OryClient(ory.url_for("/"), timeout=1.0, failure_threshold=2, backoff=0.2)
    client.whoami(credentials(), "r")
    client.whoami(credentials(), "r")
    time.sleep(0.5)
    assert client.whoami(credentials(), "r").outcome == "anonymous"
    assert len(received(ory)) == 3


@pytest.mark.parametrize("status", [400, 403, 404, 413, 431])
def test_client_error_answers_never_open_the_back_off(ory: HTTPServer, status: int) -> None:
    """A client sending what Ory refuses must not make Ory 'unavailable' for everyone."""

    def answer(request: Request) -> Response:
        if request.headers.get("X-Session-Token") == "ory_st_good":
            return Response(json.dumps(kratos_session()), content_type="application/json")
        return Response("refused", status=status)

    ory.expect_request("/sessions/whoami").respond_with_handler(answer)
    client = OryClient(ory.url_for("/"), timeout=1.0, failure_threshold=2, backoff=30.0)
    bad = extract_credentials({"HTTP_X_SESSION_TOKEN": "ory_st_%%malformed"}, NAMES)
    good = extract_credentials({"HTTP_X_SESSION_TOKEN": "ory_st_good"}, NAMES)
    assert bad is not None and good is not None
    for _ in range(10):
        assert client.whoami(bad, "attacker").outcome == "anonymous"
    assert client.whoami(good, "user").outcome == "authenticated"
    assert len(received(ory)) == 11


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_error_answers_open_the_back_off(ory: HTTPServer, status: int) -> None:
    ory.expect_request("/sessions/whoami").respond_with_data("down", status=status)
    client = OryClient(ory.url_for("/"), timeout=1.0, failure_threshold=2, backoff=30.0)
    for _ in range(4):
        assert client.whoami(credentials(), "r").error == "ory_unavailable"
    assert len(received(ory)) == 2


def test_answer_resets_the_failure_count(ory: HTTPServer) -> None:
    for status in (503, 503, 401, 503, 503):
        ory.expect_ordered_request("/sessions/whoami").respond_with_data("x", status=status)
    client = OryClient(ory.url_for("/"), timeout=1.0, failure_threshold=3, backoff=30.0)
    for _ in range(5):
        client.whoami(credentials(), "r")
    assert len(received(ory)) == 5


# --- logout --------------------------------------------------------------------------


def test_logout_url_is_fetched_with_only_ory_cookies(ory: HTTPServer, client: OryClient) -> None:
    url = ory.url_for("/self-service/logout?token=ory_lo_abc")
    ory.expect_request("/self-service/logout/browser").respond_with_json(
        {"logout_url": url, "logout_token": "ory_lo_abc"}
    )
    found = credentials("app=1; ory_kratos_session=s1", authorization="Bearer t")
    assert client.logout_url(found, "req-5") == url
    (request,) = received(ory)
    assert request.headers["Cookie"] == "ory_kratos_session=s1"
    assert request.headers["X-Request-Id"] == "req-5"
    assert "Authorization" not in request.headers


def test_logout_url_points_through_the_proxy(ory: HTTPServer) -> None:
    ory.expect_request("/self-service/logout/browser").respond_with_json(
        {"logout_url": ory.url_for("/self-service/logout?token=ory_lo_abc")}
    )
    client = OryClient(
        ory.url_for("/"), api_key="key-1", base_url_rewrite="https://app.example.com/.ory"
    )
    url = client.logout_url(credentials(), "r")
    assert url == "https://app.example.com/.ory/self-service/logout?token=ory_lo_abc"
    (request,) = received(ory)
    assert request.headers["Ory-Base-URL-Rewrite"] == "https://app.example.com/.ory"
    assert request.headers["Ory-Base-URL-Rewrite-Token"] == "key-1"


def test_logout_url_asks_ory_to_return_the_browser_to_the_given_url(
    ory: HTTPServer, client: OryClient
) -> None:
    url = ory.url_for("/self-service/logout?token=t&return_to=https%3A%2F%2Fapp.example.com%2F")
    ory.expect_request(
        "/self-service/logout/browser", query_string={"return_to": "https://app.example.com/"}
    ).respond_with_json({"logout_url": url})
    assert client.logout_url(credentials(), "r", "https://app.example.com/") == url
    (request,) = received(ory)
    assert request.query_string == b"return_to=https%3A%2F%2Fapp.example.com%2F"


def test_logout_return_to_refused_by_ory_is_dropped_with_a_warning(
    ory: HTTPServer, client: OryClient, caplog: pytest.LogCaptureFixture
) -> None:
    url = ory.url_for("/self-service/logout?token=t")

    def answer(request: Request) -> Response:
        if request.args.get("return_to"):
            body = {"error": {"id": "self_service_flow_return_to_forbidden", "code": 400}}
            return Response(json.dumps(body), status=400, content_type="application/json")
        return Response(json.dumps({"logout_url": url}), content_type="application/json")

    ory.expect_request("/self-service/logout/browser").respond_with_handler(answer)
    with caplog.at_level(logging.WARNING, logger="ory_wsgi.ory"):
        assert client.logout_url(credentials(), "r", "https://app.example.com/") == url
    assert [r.query_string for r in received(ory)] == [
        b"return_to=https%3A%2F%2Fapp.example.com%2F",
        b"",
    ]
    assert any("allowed_return_urls" in r.getMessage() for r in caplog.records)


def test_logout_url_is_none_without_session(ory: HTTPServer, client: OryClient) -> None:
    envelope = {"error": {"id": "session_inactive", "code": 401, "message": "x"}}
    ory.expect_request("/self-service/logout/browser").respond_with_json(envelope, status=401)
    assert client.logout_url(credentials(), "r") is None


def test_logout_url_without_cookie_asks_nothing(ory: HTTPServer, client: OryClient) -> None:
    found = extract_credentials({"HTTP_X_SESSION_TOKEN": "ory_st_a"}, NAMES)
    assert found is not None
    assert client.logout_url(found, "r") is None
    assert received(ory) == []


@pytest.mark.parametrize("status", [400, 403, 431])
def test_logout_refused_by_ory_raises_but_never_opens_the_back_off(
    ory: HTTPServer, status: int
) -> None:
    ory.expect_request("/self-service/logout/browser").respond_with_data("no", status=status)
    client = OryClient(ory.url_for("/"), timeout=1.0, failure_threshold=2, backoff=30.0)
    for _ in range(4):
        with pytest.raises(OryUnavailable):
            client.logout_url(credentials(), "r")
    assert len(received(ory)) == 4


def test_logout_url_raises_when_ory_fails(ory: HTTPServer, client: OryClient) -> None:
    ory.expect_request("/self-service/logout/browser").respond_with_data("boom", status=502)
    with pytest.raises(OryUnavailable):
        client.logout_url(credentials(), "r")
