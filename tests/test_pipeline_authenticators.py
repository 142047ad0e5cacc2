"""cookie_session, bearer_token, anonymous, noop, unauthorized: in-process, fake Ory over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pipeline_app import PUBLIC_URL, client, registry, services
from pytest_httpserver import HTTPServer
from test_ory_client import IDENTITY_ID, UNAUTHORIZED, kratos_session
from werkzeug.test import Client

from ory_wsgi.pipeline.decision import Pipeline
from ory_wsgi.rules.matcher import Matcher
from ory_wsgi.rules.model import AccessRule, Handler, Match, RuleSet

COOKIE = "ory_kratos_session=secret-session"
METHODS = ("GET", "HEAD", "POST")


def rule(*authenticators: Handler, rule_id: str = "r") -> AccessRule:
    return AccessRule(
        id=rule_id,
        source="test",
        match=Match(METHODS, "<https?>://<[^/]+>/<.*>"),
        authenticators=authenticators,
        authorizer=Handler("allow"),
        mutators=(Handler("noop"),),
    )


def pipeline_for(ory: HTTPServer, *authenticators: Handler) -> Client:
    matcher = Matcher(RuleSet((rule(*authenticators),)))
    # Rules built in a test are trusted: their handlers need no [authenticators.*] table.
    return client(Pipeline(registry(services(ory.url_for("/"))), lambda: matcher, trusted=True))


def expect_session(ory: HTTPServer, session: dict[str, Any] | None = None) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(session or kratos_session())


def test_cookie_session_sets_subject_and_the_whole_session_as_extra(ory: HTTPServer) -> None:
    expect_session(ory)
    answer = pipeline_for(ory, Handler("cookie_session")).get("/x", headers={"Cookie": COOKIE})
    assert answer.status_code == 200
    assert answer.json == {
        "rule": "r",
        "subject": IDENTITY_ID,
        "authenticator": "cookie_session",
        "headers": {},
        "state": "allow",
    }


def test_one_whoami_carries_every_credential_as_kratos_expects(ory: HTTPServer) -> None:
    expect_session(ory)
    app = pipeline_for(ory, Handler("cookie_session"), Handler("bearer_token"))
    headers = {
        "Cookie": f"{COOKIE}; app_cookie=mine; ory_other=1",
        "Authorization": "Bearer tok",
        "X-Session-Token": "st",
    }
    assert app.get("/x", headers=headers).status_code == 200
    ((sent, _),) = ory.log
    # Only the session cookie travels to Ory (ory_wsgi.ory.cookies).
    assert sent.headers["Cookie"] == "ory_kratos_session=secret-session"
    assert sent.headers["Authorization"] == "Bearer tok"
    assert sent.headers["X-Session-Token"] == "st"


def test_the_session_cache_answers_the_second_request(ory: HTTPServer) -> None:
    expect_session(ory)
    app = pipeline_for(ory, Handler("cookie_session"))
    for _ in range(3):
        assert app.get("/x", headers={"Cookie": COOKIE}).status_code == 200
    assert len(ory.log) == 1


@pytest.mark.parametrize(
    ("headers", "responsible"),
    [
        ({"Cookie": COOKIE}, "cookie_session"),
        ({"Authorization": "Bearer tok"}, "bearer_token"),
        ({"X-Session-Token": "st"}, "bearer_token"),
        ({"Cookie": "ory_kratos_session="}, ""),
        ({"Cookie": "other=1"}, ""),
        ({"Authorization": "Basic dTpw"}, ""),
        ({"Authorization": "Bearer "}, ""),
    ],
)
def test_which_session_authenticator_is_responsible(
    ory: HTTPServer, headers: dict[str, str], responsible: str
) -> None:
    expect_session(ory)
    for first, second in (("cookie_session", "bearer_token"), ("bearer_token", "cookie_session")):
        app = pipeline_for(
            ory, Handler(first), Handler(second), Handler("anonymous", {"subject": "guest"})
        )
        answer = app.get("/x", headers=headers)
        if responsible:
            assert answer.json is not None and answer.json["authenticator"] == responsible
        elif "Authorization" in headers:
            # anonymous is not responsible either: nobody is, 401.
            assert answer.status_code == 401
        else:
            assert answer.json is not None and answer.json["subject"] == "guest"


def test_cookie_session_only_lists_the_cookies_it_answers_for(ory: HTTPServer) -> None:
    expect_session(ory)
    app = pipeline_for(
        ory, Handler("cookie_session", {"only": ["ory_session_other"]}), Handler("noop")
    )
    answer = app.get("/x", headers={"Cookie": COOKIE})
    assert answer.json is not None and answer.json["authenticator"] == "noop"
    assert not ory.log


def test_refused_session_is_kratos_401_byte_for_byte(ory: HTTPServer) -> None:
    ory.expect_request("/sessions/whoami").respond_with_json(UNAUTHORIZED, status=401)
    answer = pipeline_for(ory, Handler("cookie_session"), Handler("noop")).get(
        "/x", headers={"Cookie": COOKIE, "Accept": "application/json"}
    )
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(answer.get_data()) == UNAUTHORIZED
    assert answer.get_data() == json.dumps(UNAUTHORIZED, separators=(",", ":")).encode()


def test_an_inactive_session_is_refused_like_none(ory: HTTPServer) -> None:
    expect_session(ory, kratos_session(active=False))
    answer = pipeline_for(ory, Handler("bearer_token")).get(
        "/x", headers={"Authorization": "Bearer t"}
    )
    assert answer.status_code == 401


def test_ory_down_is_503_with_retry_after(ory: HTTPServer) -> None:
    ory.expect_request("/sessions/whoami").respond_with_data("boom", status=502)
    answer = pipeline_for(ory, Handler("cookie_session")).get("/x", headers={"Cookie": COOKIE})
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.json is not None and answer.json["error"]["code"] == 503


def test_ory_rate_limiting_is_passed_on_with_its_retry_after(ory: HTTPServer) -> None:
    ory.expect_request("/sessions/whoami").respond_with_data(
        "", status=429, headers={"Retry-After": "7"}
    )
    answer = pipeline_for(ory, Handler("cookie_session")).get("/x", headers={"Cookie": COOKIE})
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"


@pytest.mark.parametrize("failure", [(502, {}), (429, {"Retry-After": "3"}), (401, {})])
def test_optional_goes_on_to_the_next_authenticator(
    ory: HTTPServer, failure: tuple[int, dict[str, str]]
) -> None:
    status, headers = failure
    ory.expect_request("/sessions/whoami").respond_with_data("{}", status=status, headers=headers)
    app = pipeline_for(ory, Handler("cookie_session", {"optional": True}), Handler("noop"))
    answer = app.get("/x", headers={"Cookie": COOKIE})
    assert answer.status_code == 200
    assert answer.json is not None and answer.json["authenticator"] == "noop"
    assert answer.json["subject"] == ""


def aal2_required() -> dict[str, Any]:
    return {
        "error": {
            "id": "session_aal2_required",
            "code": 403,
            "status": "Forbidden",
            "message": "Session does not fulfill the requested Authenticator Assurance Level",
        },
        "redirect_browser_to": "https://ory.example/self-service/login/browser?aal=aal2",
    }


def test_required_aal_below_sends_a_browser_to_the_login_flow(ory: HTTPServer) -> None:
    expect_session(ory)
    app = pipeline_for(ory, Handler("cookie_session", {"required_aal": "aal2"}))
    answer = app.get("/admin/x?y=1", headers={"Cookie": COOKIE, "Accept": "text/html"})
    assert answer.status_code == 303
    assert answer.headers["Location"] == (
        f"{PUBLIC_URL}/.ory/self-service/login/browser?aal=aal2&return_to="
        "https%3A%2F%2Fapp.example.com%2Fadmin%2Fx%3Fy%3D1"
    )
    assert answer.get_data() == b""


@pytest.mark.parametrize("source", ["required_aal", "kratos"])
def test_step_up_for_an_api_client_is_403_with_redirect_browser_to(
    ory: HTTPServer, source: str
) -> None:
    if source == "kratos":
        ory.expect_request("/sessions/whoami").respond_with_json(aal2_required(), status=403)
        config: dict[str, Any] = {}
    else:
        expect_session(ory)
        config = {"required_aal": "aal2"}
    app = pipeline_for(ory, Handler("cookie_session", config))
    answer = app.post("/admin", headers={"Cookie": COOKIE, "Accept": "text/html"})
    assert answer.status_code == 403
    assert answer.headers["Ory-Error-Id"] == "session_aal2_required"
    body = answer.json
    assert body is not None and body["error"]["id"] == "session_aal2_required"
    assert body["redirect_browser_to"].startswith(
        f"{PUBLIC_URL}/.ory/self-service/login/browser?aal=aal2&"
    )


def test_subject_from_and_extra_from_are_dotted_paths(ory: HTTPServer) -> None:
    expect_session(ory)
    app = pipeline_for(
        ory,
        Handler(
            "cookie_session", {"subject_from": "identity.traits.email", "extra_from": "identity"}
        ),
    )
    answer = app.get("/x", headers={"Cookie": COOKIE})
    assert answer.json is not None and answer.json["subject"] == "ada@example.com"


def test_a_session_without_the_subject_path_fails_closed(ory: HTTPServer) -> None:
    expect_session(ory)
    app = pipeline_for(ory, Handler("cookie_session", {"subject_from": "identity.nothing"}))
    assert app.get("/x", headers={"Cookie": COOKIE}).status_code == 500


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer x"}, {"Authorization": "Basic dTpw"}, {"Authorization": ""}],
)
def test_anonymous_is_not_responsible_when_authorization_is_present(
    ory: HTTPServer, headers: dict[str, str]
) -> None:
    app = pipeline_for(ory, Handler("anonymous"))
    assert app.get("/x").json == {
        "rule": "r",
        "subject": "anonymous",
        "authenticator": "anonymous",
        "headers": {},
        "state": "allow",
    }
    assert app.get("/x", headers=headers).status_code == 401


def test_noop_and_unauthorized(ory: HTTPServer) -> None:
    answer = pipeline_for(ory, Handler("noop")).get("/x", headers={"Authorization": "Bearer x"})
    assert answer.json is not None and (answer.json["subject"], answer.json["authenticator"]) == (
        "",
        "noop",
    )
    refused = pipeline_for(ory, Handler("unauthorized"), Handler("noop")).get("/x")
    assert refused.status_code == 401
    assert not ory.log
