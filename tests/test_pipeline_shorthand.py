"""[[protect]], [[public]] and no rules as access rules: PathRules' guarantees, decided anew."""

from __future__ import annotations

from typing import Any

import pytest
from pipeline_app import PUBLIC_URL, client, registry, services
from pytest_httpserver import HTTPServer
from test_ory_client import IDENTITY_ID, kratos_session
from werkzeug.test import Client

from ory_wsgi.pipeline.decision import Pipeline
from ory_wsgi.pipeline.shorthand import ProxyErrors, ShorthandIndex
from ory_wsgi.settings import load_settings

COOKIE = "ory_kratos_session=secret-session"
LOGIN = f"{PUBLIC_URL}/.ory/self-service/login/browser"


def shorthand(ory: HTTPServer, **overrides: Any) -> Client:
    settings = load_settings(
        env={}, overrides={"sdk_url": ory.url_for("/"), "jwt": {"enabled": False}, **overrides}
    )
    index = ShorthandIndex(settings)
    svc = services(ory.url_for("/"), settings)
    return client(Pipeline(registry(svc, {"ory_proxy": ProxyErrors}), lambda: index, trusted=True))


def test_no_rules_at_all_is_open_with_an_optional_session(ory: HTTPServer) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(kratos_session())
    web = shorthand(ory)
    anonymous = web.post("/anything")
    assert anonymous.status_code == 200
    assert anonymous.json == {
        "rule": "public",
        "subject": "",
        "authenticator": "noop",
        "headers": {},
        "state": "allow",
    }
    assert not ory.log
    known = web.get("/anything", headers={"Cookie": COOKIE})
    assert known.json is not None and known.json["subject"] == IDENTITY_ID


@pytest.mark.parametrize("status", [401, 429, 502])
def test_an_open_path_goes_on_anonymously_when_ory_cannot_say(ory: HTTPServer, status: int) -> None:
    ory.expect_request("/sessions/whoami").respond_with_data("{}", status=status)
    web = shorthand(ory, protect=[{"prefix": "/members"}])
    answer = web.get("/", headers={"Cookie": COOKIE, "Authorization": "Bearer stale"})
    assert answer.status_code == 200
    assert answer.json is not None and answer.json["subject"] == ""


def test_protected_without_a_session(ory: HTTPServer) -> None:
    web = shorthand(ory, protect=[{"prefix": "/members"}])
    api = web.get("/members/x", headers={"Accept": "application/json"})
    assert api.status_code == 401
    assert api.headers["WWW-Authenticate"] == "Bearer"
    assert api.json == {
        "error": {
            "code": 401,
            "status": "Unauthorized",
            "reason": "No valid session credentials found in the request.",
            "message": "The request could not be authorized",
        }
    }
    browser = web.get("/members/x?a=b", headers={"Accept": "text/html,application/xhtml+xml"})
    assert browser.status_code == 303
    assert browser.headers["Location"] == (
        f"{LOGIN}?return_to=https%3A%2F%2Fapp.example.com%2Fmembers%2Fx%3Fa%3Db"
    )
    assert browser.headers["Cache-Control"] == "no-store"
    # Not navigating: a form post or a JSON-first Accept gets the 401.
    assert web.post("/members/x", headers={"Accept": "text/html"}).status_code == 401
    json_first = web.get("/members/x", headers={"Accept": "application/json, text/html"})
    assert json_first.status_code == 401


def test_the_return_to_never_comes_from_host(ory: HTTPServer) -> None:
    web = shorthand(ory, protect=[{"prefix": "/"}])
    answer = web.get(
        "/p",
        headers={"Accept": "text/html", "Host": "evil.example", "X-Forwarded-Host": "evil.example"},
    )
    assert answer.status_code == 303
    assert "evil" not in answer.headers["Location"]


@pytest.mark.parametrize(
    ("method", "path", "headers", "protected"),
    [
        ("GET", "/members", {}, True),
        ("GET", "/members/", {}, True),
        ("GET", "/MEMBERS/x", {}, True),
        ("GET", "/Members/../members/x", {}, True),
        ("GET", "/membersx", {}, False),
        ("GET", "/members/signup", {}, False),
        ("GET", "/members/SIGNUP", {}, True),
        ("GET", "/members/signup/../x", {}, True),
        ("GET", "/members//x", {}, True),
        ("GET", "/members;x/y", {}, True),
        ("GET", "/%6Dembers/x", {}, True),
        ("GET", "/api/orders", {}, False),
        ("POST", "/api/orders", {}, True),
        ("GET", "/api/orders", {"X-HTTP-Method-Override": "POST"}, True),
        ("GET", "/api/orders", {"X-Method-Override": "post"}, True),
        ("GET", "/admin", {}, True),
        ("HEAD", "/admin", {}, True),
        ("POST", "/admin", {}, False),
    ],
)
def test_pathrules_guarantees_hold(
    ory: HTTPServer, method: str, path: str, headers: dict[str, str], protected: bool
) -> None:
    web = shorthand(
        ory,
        protect=[
            {"prefix": "/members"},
            {"prefix": "/api/orders", "methods": ["POST"]},
            {"glob": "/admin", "methods": ["GET"]},
        ],
        public=[{"prefix": "/members/signup"}],
    )
    answer = web.open(path, method=method, headers=headers)
    assert answer.status_code == (401 if protected else 200), (method, path, headers)


@pytest.mark.parametrize(
    "path",
    ["/members%2Fx", "/x/..%2Fmembers", "/members%00", "/%2e%2e%2fmembers", "/x%5c..%5cmembers"],
)
def test_suspicious_spellings_near_a_protected_area_are_400(ory: HTTPServer, path: str) -> None:
    web = shorthand(ory, protect=[{"prefix": "/members"}])
    assert web.get(path).status_code == 400
    assert web.get("/public%2Fx").status_code == 200


def test_aal_is_a_step_up(ory: HTTPServer) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(kratos_session())
    web = shorthand(ory, protect=[{"prefix": "/admin", "aal": "aal2"}, {"prefix": "/members"}])
    assert web.get("/members/x", headers={"Cookie": COOKIE}).status_code == 200
    browser = web.get("/admin", headers={"Cookie": COOKIE, "Accept": "text/html"})
    assert browser.status_code == 303
    assert browser.headers["Location"].startswith(f"{LOGIN}?aal=aal2&return_to=")
    api = web.get("/admin", headers={"Cookie": COOKIE})
    assert api.status_code == 403
    assert api.json is not None and api.json["error"]["id"] == "session_aal2_required"


def test_ory_down_on_a_protected_path_is_503(ory: HTTPServer) -> None:
    ory.expect_request("/sessions/whoami").respond_with_data("", status=500)
    web = shorthand(ory, protect=[{"prefix": "/members"}])
    answer = web.get("/members", headers={"Cookie": COOKIE})
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"


def test_the_shorthand_is_a_rule_set_explain_can_show(ory: HTTPServer) -> None:
    settings = load_settings(
        env={},
        overrides={
            "protect": [{"prefix": "/members", "aal": "aal2"}],
            "public": [{"glob": "/members/*.css"}],
        },
    )
    rules = ShorthandIndex(settings).rule_set
    assert [rule.id for rule in rules.rules] == ["protect-1", "public-1", "public"]
    assert rules.default_rule == "public"
    protect = rules.rules[0]
    assert [(h.handler, dict(h.config)) for h in protect.authenticators] == [
        ("cookie_session", {"required_aal": "aal2"}),
        ("bearer_token", {"required_aal": "aal2"}),
    ]
    assert protect.mutators[0].handler == "id_token"
