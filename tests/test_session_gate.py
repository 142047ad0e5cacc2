"""SessionGate in-process: what `login_required` answers from what the Decide layer left."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ory_wsgi.pipeline.authenticators.session import KRATOS_UNAUTHORIZED
from ory_wsgi.session_gate import SessionGate

PUBLIC = "https://app.example.com"
BROWSER = {"REQUEST_METHOD": "GET", "HTTP_ACCEPT": "text/html", "ory.target": "/account?x=1"}
API = {"REQUEST_METHOD": "GET", "HTTP_ACCEPT": "application/json", "ory.target": "/account"}


def check(environ: dict[str, Any], aal: str = "") -> Any:
    environ = {"ory.session": None, **environ}
    return SessionGate(PUBLIC).check(environ, aal), environ


def header(answer: Any, name: str) -> str:
    return next(value for key, value in answer.headers if key.lower() == name.lower())


@pytest.mark.parametrize(
    ("session_aal", "needed"),
    [("aal1", ""), ("aal1", "aal1"), ("aal2", "aal2"), ("aal3", "aal2"), ("aal2", "")],
)
def test_a_good_enough_session_passes(session_aal: str, needed: str) -> None:
    session = {"authenticator_assurance_level": session_aal}
    answer, environ = check({**API, "ory.session": session}, needed)
    assert answer is None
    assert environ["ory.decision"] == "allow"


def test_no_session_api_client_gets_kratos_401_byte_for_byte() -> None:
    answer, environ = check(API)
    assert (answer.status, answer.body) == (401, KRATOS_UNAUTHORIZED)
    assert header(answer, "WWW-Authenticate") == "Bearer"
    assert environ["ory.decision"] == "login"


def test_no_session_browser_goes_to_login_with_return_to_from_the_public_url() -> None:
    answer, _ = check({**BROWSER, "HTTP_HOST": "evil.example"})
    assert answer.status == 303
    location = urlsplit(header(answer, "Location"))
    assert location.path == "/.ory/self-service/login/browser"
    assert parse_qs(location.query) == {"return_to": [f"{PUBLIC}/account?x=1"]}


@pytest.mark.parametrize("target", ["//evil.example/x", "http://evil.example/", "x"])
def test_return_to_never_names_another_origin(target: str) -> None:
    answer, _ = check({**BROWSER, "ory.target": target})
    query = parse_qs(urlsplit(header(answer, "Location")).query)
    assert query["return_to"] == [f"{PUBLIC}/"]


@pytest.mark.parametrize(
    "environ",
    [{"ory.session": {"authenticator_assurance_level": "aal1"}}, {"ory.aal_required": True}],
)
def test_a_low_session_gets_the_step_up(environ: dict[str, Any]) -> None:
    answer, state = check({**API, **environ}, "aal2")
    assert answer.status == 403
    body = json.loads(answer.body)
    assert body["error"]["id"] == "session_aal2_required"
    assert "aal=aal2" in body["redirect_browser_to"]
    assert state["ory.decision"] == "step_up"
    answer, _ = check({**BROWSER, **environ}, "aal2")
    assert answer.status == 303
    assert "aal=aal2&" in header(answer, "Location")


def test_ory_down_fails_closed_with_503() -> None:
    answer, environ = check({**API, "ory.error": "ory_unavailable"})
    assert answer.status == 503
    assert header(answer, "Retry-After") == "5"
    assert environ["ory.decision"] == "unavailable"


def test_ory_rate_limiting_is_429() -> None:
    answer, environ = check({**API, "ory.error": "rate_limited"})
    assert answer.status == 429
    assert header(answer, "Retry-After") == "1"
    assert environ["ory.decision"] == "rate_limited"


@pytest.mark.parametrize("method", ["OPTIONS", "POST", "DELETE", "HEAD"])
def test_no_method_is_exempt(method: str) -> None:
    answer, _ = check({**API, "REQUEST_METHOD": method})
    assert answer.status == 401
