"""The local Ory stand-in (ory_wsgi.testing) over HTTP, through its own fixture `fake_ory`."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from typing import Any

import pytest
import requests
from servers import ROOT, free_port, wait_for_port

from ory_wsgi.testing import FakeKratos, serve
from ory_wsgi.testing.store import token_from_cookie

PASSWORD = "correct horse battery"
UNAUTHORIZED_BODY = (
    b'{"error":{"code":401,"status":"Unauthorized","reason":"No valid session credentials found'
    b' in the request.","message":"The request could not be authorized"}}\n'
)
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
SESSION_KEYS = [
    "id",
    "active",
    "expires_at",
    "authenticated_at",
    "authenticator_assurance_level",
    "authentication_methods",
    "issued_at",
    "identity",
    "devices",
]
IDENTITY_KEYS = [
    "id",
    "schema_id",
    "schema_url",
    "state",
    "traits",
    "verifiable_addresses",
    "recovery_addresses",
    "metadata_public",
    "created_at",
    "updated_at",
    "organization_id",
]
SESSION_COOKIE = re.compile(
    r"ory_kratos_session=[A-Za-z0-9_-]+; Path=/;"
    r" Expires=\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT; Max-Age=\d+; HttpOnly; SameSite=Lax"
)


class FormParser(HTMLParser):
    """The first form of a page: its action and the fields a browser would submit."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}
        self.buttons: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "form" and not self.action:
            self.action = attributes.get("action", "")
        elif tag == "input":
            self.fields[attributes["name"]] = attributes.get("value", "")
        elif tag == "button":
            self.buttons.append((attributes["name"], attributes.get("value", "")))


def parse_form(html: str) -> FormParser:
    parser = FormParser()
    parser.feed(html)
    return parser


def whoami(kratos: FakeKratos, **kwargs: Any) -> requests.Response:
    return requests.get(f"{kratos.url}/sessions/whoami", timeout=10, **kwargs)


def start_browser_flow(
    browser: requests.Session, kratos: FakeKratos, kind: str, query: str = ""
) -> FormParser:
    started = browser.get(
        f"{kratos.url}/self-service/{kind}/browser{query}", allow_redirects=False, timeout=10
    )
    assert started.status_code == 303
    page = browser.get(started.headers["Location"], timeout=10)
    assert page.status_code == 200
    return parse_form(page.text)


def submit(browser: requests.Session, form: FormParser, **values: str) -> requests.Response:
    data = {**form.fields, **values}
    name, value = form.buttons[0]
    data[name] = value
    return browser.post(form.action, data=data, allow_redirects=False, timeout=10)


def log_in(
    browser: requests.Session, kratos: FakeKratos, email: str, query: str = ""
) -> requests.Response:
    form = start_browser_flow(browser, kratos, "login", query)
    return submit(browser, form, identifier=email, password=PASSWORD)


@pytest.fixture
def ada(fake_ory: FakeKratos) -> dict[str, Any]:
    return fake_ory.add_identity("ada@example.com", PASSWORD)


# ----- whoami -----


def test_whoami_accepts_session_token_header(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    _, token = fake_ory.create_session(ada["id"])
    answer = whoami(fake_ory, headers={"X-Session-Token": token})
    assert answer.status_code == 200
    assert answer.json()["identity"]["id"] == ada["id"]


def test_whoami_accepts_session_cookie(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    issued = fake_ory.create_session(ada["id"])
    answer = whoami(fake_ory, cookies={"ory_kratos_session": issued.cookie})
    assert answer.status_code == 200
    assert answer.json()["id"] == issued.session["id"]


def test_whoami_accepts_bearer_with_any_scheme_case(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    _, token = fake_ory.create_session(ada["id"])
    answer = whoami(fake_ory, headers={"Authorization": f"bEaReR {token}"})
    assert answer.status_code == 200


def test_session_token_header_wins_over_cookie(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    _, token = fake_ory.create_session(ada["id"])
    answer = whoami(
        fake_ory,
        headers={"X-Session-Token": "ory_st_" + "x" * 32, "Cookie": fake_ory.session_cookie(token)},
    )
    assert answer.status_code == 401


def test_cookie_wins_over_bearer(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    grace = fake_ory.add_identity("grace@example.com", PASSWORD)
    _, ada_token = fake_ory.create_session(ada["id"])
    _, grace_token = fake_ory.create_session(grace["id"])
    answer = whoami(
        fake_ory,
        headers={
            "Cookie": fake_ory.session_cookie(ada_token),
            "Authorization": f"Bearer {grace_token}",
        },
    )
    assert answer.json()["identity"]["id"] == ada["id"]


def test_undecodable_session_cookie_counts_as_absent(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    _, token = fake_ory.create_session(ada["id"])
    answer = whoami(
        fake_ory,
        headers={"Cookie": "ory_kratos_session=%%%not-ours", "Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200


def test_other_cookies_carry_no_session(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    issued = fake_ory.create_session(ada["id"])
    answer = whoami(fake_ory, cookies={"session": issued.cookie, "token": issued.token})
    assert answer.status_code == 401


def test_whoami_session_keys_follow_kratos_order(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    _, token = fake_ory.create_session(ada["id"])
    document = whoami(fake_ory, headers={"X-Session-Token": token}).json()
    assert list(document) == SESSION_KEYS
    assert list(document["identity"]) == IDENTITY_KEYS
    assert list(document["authentication_methods"][0]) == ["method", "aal", "completed_at"]
    assert list(document["devices"][0]) == ["id", "ip_address", "user_agent", "location"]


def test_whoami_times_are_rfc3339_utc(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    _, token = fake_ory.create_session(ada["id"])
    document = whoami(fake_ory, headers={"X-Session-Token": token}).json()
    times = [document[k] for k in ("expires_at", "authenticated_at", "issued_at")]
    times += [document["identity"]["created_at"], document["identity"]["updated_at"]]
    assert all(RFC3339_UTC.fullmatch(t) for t in times), times


def test_whoami_identity_has_no_credentials_and_schema_url_is_base64url(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    _, token = fake_ory.create_session(ada["id"])
    identity = whoami(fake_ory, headers={"X-Session-Token": token}).json()["identity"]
    assert "credentials" not in identity and "metadata_admin" not in identity
    assert identity["schema_url"] == f"{fake_ory.url}/schemas/ZGVmYXVsdA"
    assert identity["metadata_public"] is None and identity["organization_id"] is None


def test_whoami_headers(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    _, token = fake_ory.create_session(ada["id"])
    answer = whoami(fake_ory, headers={"X-Session-Token": token})
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    assert answer.headers["X-Kratos-Authenticated-Identity-Id"] == ada["id"]
    assert answer.headers["Cache-Control"] == "private, no-cache, no-store, must-revalidate"


def test_whoami_without_credentials_answers_exact_401_envelope(fake_ory: FakeKratos) -> None:
    answer = whoami(fake_ory)
    assert answer.status_code == 401
    assert answer.content == UNAUTHORIZED_BODY
    assert answer.headers["Content-Type"] == "application/json"


def test_whoami_401_carries_request_id_after_status(fake_ory: FakeKratos) -> None:
    answer = whoami(fake_ory, headers={"X-Request-ID": "req-42"})
    assert answer.content.startswith(
        b'{"error":{"code":401,"status":"Unauthorized","request":"req-42","reason":'
    )


def test_whoami_unknown_token_answers_401(fake_ory: FakeKratos) -> None:
    answer = whoami(fake_ory, headers={"X-Session-Token": "ory_st_" + "a" * 32})
    assert answer.content == UNAUTHORIZED_BODY


def test_expired_session_answers_401(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    session, token = fake_ory.create_session(ada["id"])
    fake_ory.expire_session(session["id"])
    assert whoami(fake_ory, headers={"X-Session-Token": token}).content == UNAUTHORIZED_BODY


def test_session_of_inactive_identity_answers_401(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    _, token = fake_ory.create_session(ada["id"])
    fake_ory.deactivate_identity(ada["id"])
    assert whoami(fake_ory, headers={"X-Session-Token": token}).status_code == 401


def test_aal1_session_with_second_factor_answers_403(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    fake_ory.require_aal2(ada["id"])
    _, token = fake_ory.create_session(ada["id"])
    answer = whoami(fake_ory, headers={"X-Session-Token": token})
    target = f"{fake_ory.url}/self-service/login/browser?aal=aal2"
    assert answer.status_code == 403
    assert answer.headers["Ory-Error-Id"] == "session_aal2_required"
    document = answer.json()
    assert list(document) == ["error", "redirect_browser_to"]
    assert document["redirect_browser_to"] == target
    assert list(document["error"]) == ["id", "code", "status", "reason", "details", "message"]
    assert document["error"]["details"] == {"redirect_browser_to": target}


def test_aal2_session_passes_whoami(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    fake_ory.require_aal2(ada["id"])
    _, token = fake_ory.create_session(ada["id"], aal="aal2")
    answer = whoami(fake_ory, headers={"X-Session-Token": token})
    assert answer.json()["authenticator_assurance_level"] == "aal2"


def test_unknown_tokenize_template_is_400(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    _, token = fake_ory.create_session(ada["id"])
    answer = whoami(fake_ory, headers={"X-Session-Token": token}, params={"tokenize_as": "nope"})
    assert answer.status_code == 400


# ----- browser login -----


def test_login_browser_redirects_to_ui_with_csrf_cookie(fake_ory: FakeKratos) -> None:
    answer = requests.get(
        f"{fake_ory.url}/self-service/login/browser", allow_redirects=False, timeout=10
    )
    csrf_name = "csrf_token_" + hashlib.sha256(fake_ory.url.encode()).hexdigest()
    assert answer.status_code == 303
    assert re.fullmatch(
        re.escape(f"{fake_ory.url}/ui/login?flow=") + "[0-9a-f-]{36}", answer.headers["Location"]
    )
    assert re.fullmatch(
        re.escape(csrf_name) + r"=[\w-]+; Path=/; Expires=[^;]+; Max-Age=31536000; HttpOnly;"
        r" SameSite=Lax",
        answer.headers["Set-Cookie"],
    )


def test_browser_login_by_following_the_form(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    fake_ory.allowed_return_urls = ["http://app.example.com/"]
    browser = requests.Session()
    answer = log_in(
        browser, fake_ory, "ADA@example.com", "?return_to=http%3A%2F%2Fapp.example.com%2Fmembers"
    )
    assert answer.status_code == 303
    assert answer.headers["Location"] == "http://app.example.com/members"
    session = browser.get(f"{fake_ory.url}/sessions/whoami", timeout=10).json()
    assert session["identity"]["id"] == ada["id"]
    assert session["authentication_methods"][0]["method"] == "password"


def test_login_form_posts_to_ui_action(fake_ory: FakeKratos) -> None:
    browser = requests.Session()
    form = start_browser_flow(browser, fake_ory, "login")
    assert re.fullmatch(
        re.escape(f"{fake_ory.url}/self-service/login?flow=") + "[0-9a-f-]{36}", form.action
    )
    assert set(form.fields) == {"csrf_token", "identifier", "password"}
    assert form.buttons == [("method", "password")]


def test_session_cookie_attributes_in_go_order(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    answer = log_in(requests.Session(), fake_ory, "ada@example.com")
    assert SESSION_COOKIE.fullmatch(answer.headers["Set-Cookie"])
    max_age = re.search(r"Max-Age=(\d+)", answer.headers["Set-Cookie"])
    assert max_age is not None and 86000 < int(max_age[1]) <= 86400


def test_secure_cookies_adds_secure_before_samesite(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    fake_ory.secure_cookies = True
    answer = requests.get(
        f"{fake_ory.url}/self-service/login/browser", allow_redirects=False, timeout=10
    )
    assert answer.headers["Set-Cookie"].endswith("; HttpOnly; Secure; SameSite=Lax")


def test_login_without_return_to_goes_to_welcome(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    answer = log_in(requests.Session(), fake_ory, "ada@example.com")
    assert answer.headers["Location"] == f"{fake_ory.url}/ui/welcome"


def test_wrong_password_shows_the_form_again_with_a_message(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    browser = requests.Session()
    form = start_browser_flow(browser, fake_ory, "login")
    answer = submit(browser, form, identifier="ada@example.com", password="wrong")
    assert answer.status_code == 303
    assert answer.headers["Location"] == form.action.replace("/self-service/login", "/ui/login")
    assert "Set-Cookie" not in answer.headers
    page = browser.get(answer.headers["Location"], timeout=10).text
    assert 'data-id="4000006"' in page
    assert parse_form(page).fields["identifier"] == "ada@example.com"


def test_login_post_without_csrf_cookie_goes_to_error_ui(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    browser = requests.Session()
    form = start_browser_flow(browser, fake_ory, "login")
    browser.cookies.clear()
    answer = submit(browser, form, identifier="ada@example.com", password=PASSWORD)
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith(f"{fake_ory.url}/ui/error?id=")
    error_id = answer.headers["Location"].rsplit("=", 1)[1]
    stored = requests.get(
        f"{fake_ory.url}/self-service/errors", params={"id": error_id}, timeout=10
    ).json()
    assert stored["error"]["id"] == "security_csrf_violation"


def test_json_client_gets_the_login_flow(fake_ory: FakeKratos) -> None:
    answer = requests.get(
        f"{fake_ory.url}/self-service/login/browser",
        headers={"Accept": "application/json"},
        timeout=10,
    )
    flow = answer.json()
    assert answer.status_code == 200
    assert flow["type"] == "browser"
    assert flow["ui"]["action"] == f"{fake_ory.url}/self-service/login?flow={flow['id']}"
    assert flow["requested_aal"] == "aal1"
    assert answer.headers["Set-Cookie"].startswith("csrf_token_")


def test_login_flow_can_be_fetched_by_id(fake_ory: FakeKratos) -> None:
    flow = requests.get(
        f"{fake_ory.url}/self-service/login/api", headers={"Accept": "application/json"}, timeout=10
    ).json()
    fetched = requests.get(
        f"{fake_ory.url}/self-service/login/flows", params={"id": flow["id"]}, timeout=10
    ).json()
    assert fetched["id"] == flow["id"]
    assert fetched["ui"]["action"] == flow["ui"]["action"]


def test_unknown_flow_id_answers_404_envelope(fake_ory: FakeKratos) -> None:
    answer = requests.get(
        f"{fake_ory.url}/self-service/login/flows", params={"id": "nope"}, timeout=10
    )
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == "The requested resource could not be found"


def test_api_login_returns_session_token(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    flow = requests.get(f"{fake_ory.url}/self-service/login/api", timeout=10).json()
    answer = requests.post(
        flow["ui"]["action"],
        json={"method": "password", "identifier": "ada@example.com", "password": PASSWORD},
        timeout=10,
    )
    token = answer.json()["session_token"]
    assert token.startswith("ory_st_") and len(token) == 39
    assert whoami(fake_ory, headers={"X-Session-Token": token}).status_code == 200


def test_logged_in_browser_starting_login_goes_to_return_to(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    fake_ory.allowed_return_urls = ["http://app.example.com"]
    browser = requests.Session()
    log_in(browser, fake_ory, "ada@example.com")
    answer = browser.get(
        f"{fake_ory.url}/self-service/login/browser",
        params={"return_to": "http://app.example.com/x"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 303
    assert answer.headers["Location"] == "http://app.example.com/x"


def test_logged_in_json_client_gets_session_already_available(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    _, token = fake_ory.create_session(ada["id"])
    answer = requests.get(
        f"{fake_ory.url}/self-service/login/browser",
        headers={"Accept": "application/json", "Cookie": fake_ory.session_cookie(token)},
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["id"] == "session_already_available"


def test_refused_return_to_is_400_for_json_clients(fake_ory: FakeKratos) -> None:
    fake_ory.allowed_return_urls = ["https://*.example.com/app"]
    answer = requests.get(
        f"{fake_ory.url}/self-service/login/browser",
        params={"return_to": "https://evil.test/app"},
        headers={"Accept": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.headers["Ory-Error-Id"] == "self_service_flow_return_to_forbidden"
    assert answer.headers["Content-Type"] == "application/json"


def test_return_to_matches_wildcard_host_and_path_prefix(fake_ory: FakeKratos) -> None:
    fake_ory.allowed_return_urls = ["https://*.example.com/app"]
    flow = requests.get(
        f"{fake_ory.url}/self-service/login/api",
        params={"return_to": "HTTPS://Shop.Example.com/app/cart"},
        timeout=10,
    ).json()
    assert flow["return_to"] == "HTTPS://Shop.Example.com/app/cart"


def test_return_to_without_allow_list_is_ignored(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    answer = log_in(
        requests.Session(), fake_ory, "ada@example.com", "?return_to=https%3A%2F%2Fevil.test%2F"
    )
    assert answer.headers["Location"] == f"{fake_ory.url}/ui/welcome"


def test_aal2_without_session_is_401_session_aal1_required(fake_ory: FakeKratos) -> None:
    answer = requests.get(
        f"{fake_ory.url}/self-service/login/api", params={"aal": "aal2"}, timeout=10
    )
    assert answer.status_code == 401
    assert answer.json()["error"]["id"] == "session_aal1_required"


def test_second_factor_login_upgrades_the_session(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    fake_ory.require_aal2(ada["id"], totp_code="424242")
    browser = requests.Session()
    first = log_in(browser, fake_ory, "ada@example.com")
    assert first.headers["Location"] == f"{fake_ory.url}/self-service/login/browser?aal=aal2"
    form = start_browser_flow(browser, fake_ory, "login", "?aal=aal2")
    assert "totp_code" in form.fields
    submit(browser, form, totp_code="424242")
    session = browser.get(f"{fake_ory.url}/sessions/whoami", timeout=10).json()
    assert session["authenticator_assurance_level"] == "aal2"


def test_login_ui_without_flow_redirects_relatively(fake_ory: FakeKratos) -> None:
    answer = requests.get(
        f"{fake_ory.url}/ui/login", params={"return_to": "/x"}, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 303
    assert answer.headers["Location"] == "../self-service/login/browser?return_to=%2Fx"


# ----- registration -----


def test_registration_creates_identity_and_logs_in(fake_ory: FakeKratos) -> None:
    browser = requests.Session()
    form = start_browser_flow(browser, fake_ory, "registration")
    assert set(form.fields) == {"csrf_token", "traits.email", "password"}
    answer = submit(browser, form, **{"traits.email": "new@example.com", "password": PASSWORD})
    assert answer.status_code == 303
    assert SESSION_COOKIE.fullmatch(answer.headers["Set-Cookie"])
    session = browser.get(f"{fake_ory.url}/sessions/whoami", timeout=10).json()
    assert session["identity"]["traits"] == {"email": "new@example.com"}


def test_registration_refuses_a_taken_email(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    browser = requests.Session()
    form = start_browser_flow(browser, fake_ory, "registration")
    answer = submit(browser, form, **{"traits.email": "ada@example.com", "password": PASSWORD})
    page = browser.get(answer.headers["Location"], timeout=10).text
    assert 'data-id="4000007"' in page


# ----- logout -----


def test_logout_browser_returns_logout_url_and_token(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    _, token = fake_ory.create_session(ada["id"])
    answer = requests.get(
        f"{fake_ory.url}/self-service/logout/browser",
        headers={"Cookie": fake_ory.session_cookie(token)},
        timeout=10,
    )
    document = answer.json()
    assert answer.status_code == 200
    assert list(document) == ["logout_url", "logout_token"]
    assert document["logout_token"].startswith("ory_lo_")
    assert document["logout_url"] == (
        f"{fake_ory.url}/self-service/logout?token={document['logout_token']}"
    )


def test_logout_browser_without_session_is_401_session_inactive(fake_ory: FakeKratos) -> None:
    answer = requests.get(f"{fake_ory.url}/self-service/logout/browser", timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"]["id"] == "session_inactive"


def test_logout_clears_cookie_and_ends_session(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    fake_ory.allowed_return_urls = ["http://app.example.com"]
    _, token = fake_ory.create_session(ada["id"])
    step_one = requests.get(
        f"{fake_ory.url}/self-service/logout/browser",
        params={"return_to": "http://app.example.com/bye"},
        headers={"Cookie": fake_ory.session_cookie(token)},
        timeout=10,
    ).json()
    answer = requests.get(step_one["logout_url"], allow_redirects=False, timeout=10)
    assert answer.status_code == 303
    assert answer.headers["Location"] == "http://app.example.com/bye"
    assert answer.headers["Set-Cookie"] == (
        "ory_kratos_session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=0;"
        " HttpOnly; SameSite=Lax"
    )
    assert whoami(fake_ory, headers={"X-Session-Token": token}).status_code == 401


def test_logout_token_works_once(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    _, token = fake_ory.create_session(ada["id"])
    step_one = requests.get(
        f"{fake_ory.url}/self-service/logout/browser",
        headers={"X-Session-Token": token},
        timeout=10,
    ).json()
    requests.get(step_one["logout_url"], allow_redirects=False, timeout=10)
    again = requests.get(step_one["logout_url"], headers={"Accept": "application/json"}, timeout=10)
    assert again.status_code == 401


# ----- base URL rewrite -----


REWRITE = {"Ory-Base-URL-Rewrite": "https://app.example.com/.ory"}


def test_base_url_rewrite_moves_login_redirect_and_csrf_cookie(fake_ory: FakeKratos) -> None:
    answer = requests.get(
        f"{fake_ory.url}/self-service/login/browser",
        headers=REWRITE,
        allow_redirects=False,
        timeout=10,
    )
    csrf_name = "csrf_token_" + hashlib.sha256(b"https://app.example.com/.ory").hexdigest()
    assert answer.headers["Location"].startswith("https://app.example.com/.ory/ui/login?flow=")
    assert answer.headers["Set-Cookie"].startswith(csrf_name + "=")


def test_base_url_rewrite_moves_ui_action_and_logout_url(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    flow = requests.get(
        f"{fake_ory.url}/self-service/login/api", headers=REWRITE, timeout=10
    ).json()
    _, token = fake_ory.create_session(ada["id"])
    logout = requests.get(
        f"{fake_ory.url}/self-service/logout/browser",
        headers={**REWRITE, "X-Session-Token": token},
        timeout=10,
    ).json()
    assert flow["ui"]["action"].startswith("https://app.example.com/.ory/self-service/login?flow=")
    assert logout["logout_url"].startswith("https://app.example.com/.ory/self-service/logout?")


def test_base_url_rewrite_moves_schema_url(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    _, token = fake_ory.create_session(ada["id"])
    session = whoami(fake_ory, headers={**REWRITE, "X-Session-Token": token}).json()
    assert session["identity"]["schema_url"] == "https://app.example.com/.ory/schemas/ZGVmYXVsdA"


def test_base_url_rewrite_needs_the_token_when_one_is_set(fake_ory: FakeKratos) -> None:
    fake_ory.rewrite_token = "ory_pat_secret"
    refused = requests.get(
        f"{fake_ory.url}/self-service/login/browser",
        headers=REWRITE,
        allow_redirects=False,
        timeout=10,
    )
    accepted = requests.get(
        f"{fake_ory.url}/self-service/login/browser",
        headers={**REWRITE, "Ory-Base-URL-Rewrite-Token": "ory_pat_secret"},
        allow_redirects=False,
        timeout=10,
    )
    assert refused.headers["Location"].startswith(f"{fake_ory.url}/ui/login")
    assert accepted.headers["Location"].startswith("https://app.example.com/.ory/ui/login")


# ----- counters, request log, faults -----


def test_whoami_calls_are_counted_by_credential(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    _, token = fake_ory.create_session(ada["id"])
    whoami(fake_ory, headers={"X-Session-Token": token})
    whoami(fake_ory, headers={"Authorization": f"Bearer {token}"})
    whoami(fake_ory)
    assert fake_ory.whoami_calls == 3
    assert fake_ory.whoami_calls_by_kind == {"token": 1, "bearer": 1, "none": 1}
    assert fake_ory.whoami_calls_for(token) == 2


def test_reset_counters_zeroes_them(fake_ory: FakeKratos) -> None:
    whoami(fake_ory)
    fake_ory.reset_counters()
    assert fake_ory.whoami_calls == 0
    assert fake_ory.request_log == []


def test_request_log_keeps_path_query_and_headers(fake_ory: FakeKratos) -> None:
    whoami(fake_ory, headers={"X-Request-ID": "r1"}, params={"a": "1"})
    entry = fake_ory.request_log[-1]
    assert (entry.method, entry.path, entry.query) == ("GET", "/sessions/whoami", "a=1")
    assert entry.headers["X-Request-Id"] == "r1"


def test_fail_next_fails_one_whoami_only(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    _, token = fake_ory.create_session(ada["id"])
    fake_ory.fail_next(503)
    first = whoami(fake_ory, headers={"X-Session-Token": token})
    second = whoami(fake_ory, headers={"X-Session-Token": token})
    assert first.status_code == 503
    assert first.json()["error"]["code"] == 503
    assert second.status_code == 200


def test_fail_whoami_lasts_until_heal(fake_ory: FakeKratos) -> None:
    fake_ory.fail_whoami(429, retry_after="7")
    statuses = [whoami(fake_ory).status_code for _ in range(3)]
    limited = whoami(fake_ory)
    fake_ory.heal()
    assert statuses == [429, 429, 429]
    assert limited.headers["Retry-After"] == "7"
    assert whoami(fake_ory).status_code == 401


def test_garbled_whoami_is_not_json(fake_ory: FakeKratos) -> None:
    fake_ory.garble_whoami(times=1)
    answer = whoami(fake_ory)
    assert answer.status_code == 200
    with pytest.raises(ValueError):
        answer.json()


def test_dropped_whoami_closes_the_connection(fake_ory: FakeKratos) -> None:
    fake_ory.drop_whoami(times=1)
    with pytest.raises(requests.ConnectionError):
        whoami(fake_ory)
    assert whoami(fake_ory).status_code == 401


def test_whoami_delay_slows_the_answer(fake_ory: FakeKratos) -> None:
    fake_ory.whoami_delay = 0.3
    started = time.monotonic()
    whoami(fake_ory)
    assert time.monotonic() - started >= 0.3


def test_reset_forgets_everything_and_restores_settings(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    _, token = fake_ory.create_session(ada["id"])
    fake_ory.allowed_return_urls = ["https://x.test"]
    fake_ory.secure_cookies = True
    fake_ory.reset()
    assert whoami(fake_ory, headers={"X-Session-Token": token}).status_code == 401
    assert fake_ory.allowed_return_urls == [] and fake_ory.secure_cookies is False


# ----- running it -----


def test_serve_runs_a_private_instance_on_a_free_port() -> None:
    with serve(session_lifespan=60) as server:
        identity = server.kratos.add_identity("x@example.com", PASSWORD)
        _, token = server.kratos.create_session(identity["id"])
        answer = requests.get(
            f"{server.url}/sessions/whoami", headers={"X-Session-Token": token}, timeout=10
        )
    assert server.kratos.url == server.url
    assert answer.json()["identity"]["id"] == identity["id"]


def test_module_runs_standalone_with_identities() -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ory_wsgi.testing",
            "--port",
            str(port),
            "--identity",
            f"ada@example.com:{PASSWORD}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process=process)
        flow = requests.get(f"http://127.0.0.1:{port}/self-service/login/api", timeout=10).json()
        answer = requests.post(
            flow["ui"]["action"],
            json={"method": "password", "identifier": "ada@example.com", "password": PASSWORD},
            timeout=10,
        )
    finally:
        process.terminate()
        process.wait(10)
    assert answer.status_code == 200
    assert flow["ui"]["action"].startswith(f"http://127.0.0.1:{port}/self-service/login?flow=")


def test_logout_for_json_client_is_204(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    _, token = fake_ory.create_session(ada["id"])
    step_one = requests.get(
        f"{fake_ory.url}/self-service/logout/browser",
        headers={"X-Session-Token": token},
        timeout=10,
    ).json()
    answer = requests.get(
        step_one["logout_url"], headers={"Accept": "application/json"}, timeout=10
    )
    assert answer.status_code == 204
    assert "Content-Type" not in answer.headers


# ----- settings, recovery and verification in a browser -----


def test_browser_settings_page_saves_a_changed_email(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    browser = requests.Session()
    log_in(browser, fake_ory, "ada@example.com")
    form = start_browser_flow(browser, fake_ory, "settings")
    assert form.fields["traits.email"] == "ada@example.com"
    assert [value for _, value in form.buttons] == ["profile", "password"]
    saved = submit(browser, form, **{"traits.email": "ada@lovelace.org"})
    assert saved.status_code == 303
    page = browser.get(saved.headers["Location"], timeout=10)
    assert "Your changes have been saved!" in page.text
    assert fake_ory.identity(ada["id"])["traits"]["email"] == "ada@lovelace.org"


def test_browser_settings_without_a_session_goes_to_login(fake_ory: FakeKratos) -> None:
    answer = requests.get(
        f"{fake_ory.url}/self-service/settings/browser", allow_redirects=False, timeout=10
    )
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"{fake_ory.url}/self-service/login/browser"


def test_browser_recovery_mails_a_code_and_signs_in(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    browser = requests.Session()
    form = start_browser_flow(browser, fake_ory, "recovery")
    sent = submit(browser, form, email="ada@example.com")
    page = browser.get(sent.headers["Location"], timeout=10)
    assert "recovery code has been sent" in page.text and 'name="code"' in page.text
    mailbox = requests.get(f"{fake_ory.url}/ui/mail", timeout=10).text
    code = fake_ory.last_code("ada@example.com")
    assert f"<code>{code}</code>" in mailbox
    recovered = submit(browser, parse_form(page.text), code=code)
    assert recovered.status_code == 303
    assert recovered.headers["Location"].startswith(f"{fake_ory.url}/ui/settings?flow=")
    settings = browser.get(recovered.headers["Location"], timeout=10)
    assert "You successfully recovered your account" in settings.text
    assert whoami(fake_ory, cookies=browser.cookies).status_code == 200


def test_recovery_mails_nothing_to_an_unknown_address(fake_ory: FakeKratos) -> None:
    browser = requests.Session()
    form = start_browser_flow(browser, fake_ory, "recovery")
    assert submit(browser, form, email="nobody@example.com").status_code == 303
    assert fake_ory.outbox == []


def test_browser_verification_marks_the_address_verified(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    browser = requests.Session()
    form = start_browser_flow(browser, fake_ory, "verification")
    sent = submit(browser, form, email="ada@example.com")
    page = browser.get(sent.headers["Location"], timeout=10)
    wrong = submit(browser, parse_form(page.text), code="000000x")
    assert "invalid or has already been used" in browser.get(wrong.headers["Location"]).text
    done = submit(browser, parse_form(page.text), code=fake_ory.last_code("ada@example.com"))
    page = browser.get(done.headers["Location"], timeout=10)
    assert "You successfully verified your email address." in page.text
    assert fake_ory.identity(ada["id"])["verifiable_addresses"][0]["verified"] is True


def test_revoking_one_of_my_sessions(fake_ory: FakeKratos, ada: dict[str, Any]) -> None:
    _, mine = fake_ory.create_session(ada["id"])
    other, _ = fake_ory.create_session(ada["id"])
    headers = {"X-Session-Token": mine}
    url = f"{fake_ory.url}/sessions"
    assert requests.delete(f"{url}/{other['id']}", headers=headers, timeout=10).status_code == 204
    assert requests.get(url, headers=headers, timeout=10).json() == []
    current = fake_ory.session(mine)["id"]
    assert requests.delete(f"{url}/{current}", headers=headers, timeout=10).status_code == 400
    assert requests.get(url, timeout=10).status_code == 401


def test_a_code_is_used_up_after_five_wrong_guesses(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    browser = requests.Session()
    form = start_browser_flow(browser, fake_ory, "recovery")
    page = browser.get(submit(browser, form, email="ada@example.com").headers["Location"])
    code_form = parse_form(page.text)
    right = fake_ory.last_code("ada@example.com")
    for guess in range(5):
        submit(browser, code_form, code=f"{(int(right) + 1 + guess) % 10**6:06d}")
    refused = submit(browser, code_form, code=right)
    assert "invalid or has already been used" in browser.get(refused.headers["Location"]).text
    assert whoami(fake_ory, cookies=browser.cookies).status_code == 401


def test_browser_password_change_after_an_old_sign_in_asks_to_log_in_again(
    fake_ory: FakeKratos, ada: dict[str, Any]
) -> None:
    browser = requests.Session()
    log_in(browser, fake_ory, "ada@example.com")
    form = start_browser_flow(browser, fake_ory, "settings")
    token = token_from_cookie(browser.cookies["ory_kratos_session"])
    assert token is not None
    fake_ory.age_session(token, 3600)
    data = {**form.fields, "password": "a new passphrase", "method": "password"}
    answer = browser.post(form.action, data=data, allow_redirects=False, timeout=10)
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith(
        f"{fake_ory.url}/self-service/login/browser?refresh=true&return_to="
    )
    assert fake_ory.identity(ada["id"])["traits"]["email"] == "ada@example.com"
    assert log_in(requests.Session(), fake_ory, "ada@example.com").status_code == 303
